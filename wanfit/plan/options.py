"""One way from user-facing options (node widgets, query parameters, CLI flags) to a Plan.

The node, the `GET /wanfit/plan` route and the CLI share it, so the same inputs give the
same plan and the same error texts wherever they come from.
"""

import math

from ..choices import PLAN_INPUT_LIMITS, PLAN_MODES, PLAN_TEXT_ENCODER_DEVICES, PLAN_WEIGHT_DTYPES
from ..errors import InvalidInputError
from ..units import gib_to_bytes
from .catalogue import GPU_TIERS, MODEL_VARIANTS, device_for_tier
from .formats import WEIGHT_DTYPE_ALIASES
from .planner import plan
from .types import Job, Overrides

# Official sizes (Wan2.2 configs): TI2V-5B 1280x704x121; A14B 1280x720x81.
DEFAULT_JOB = {"ti2v_5b": (1280, 704, 121), "t2v_a14b": (1280, 720, 81), "i2v_a14b": (1280, 720, 81)}


def plan_from_options(probe_device, model_variant="ti2v_5b", width=None, height=None, frames=None, batch=1, cfg=True,
                      mode="auto", reserve_vram_gb=0.0, weight_dtype="auto", text_encoder_device="auto", core=None):
    """Build the plan for `core` (a wanfit.core.Core; None: the newest supported core).

    `probe_device()` is always called (a tier keeps this machine's RAM) but a tier mode plans
    for that tier's card instead of this one.
    """
    if model_variant not in MODEL_VARIANTS:
        raise InvalidInputError("model_variant", model_variant, "one of " + ", ".join(MODEL_VARIANTS))
    if mode not in PLAN_MODES:
        raise InvalidInputError("mode", mode, "auto or a GPU tier: " + ", ".join(GPU_TIERS))
    weight_dtype = WEIGHT_DTYPE_ALIASES.get(weight_dtype, weight_dtype)
    if weight_dtype not in PLAN_WEIGHT_DTYPES:
        raise InvalidInputError("weight_dtype", weight_dtype, "one of " + ", ".join(PLAN_WEIGHT_DTYPES),
                                "int8, nvfp4, mxfp8 and float8 name ComfyUI's native quantized files; fp8_scaled "
                                "the *_fp8_scaled ones")
    if text_encoder_device not in PLAN_TEXT_ENCODER_DEVICES:
        raise InvalidInputError("text_encoder_device", text_encoder_device, "auto, cpu or gpu")
    _check_reserve_vram_gb(reserve_vram_gb)
    default_width, default_height, default_frames = DEFAULT_JOB[model_variant]
    job = Job(width=default_width if width is None else width, height=default_height if height is None else height,
              frames=default_frames if frames is None else frames, batch=batch, cfg=cfg)
    device = probe_device()
    if mode != "auto":
        device = device_for_tier(mode, device.total_ram_bytes)
    overrides = Overrides(reserve_vram_bytes=gib_to_bytes(reserve_vram_gb) if reserve_vram_gb else None,
                          weight_dtype=None if weight_dtype == "auto" else weight_dtype,
                          text_encoder_device=None if text_encoder_device == "auto" else text_encoder_device)
    return plan(device, model_variant, job, overrides, core=core)


def _check_reserve_vram_gb(reserve_vram_gb):
    """NaN passes ComfyUI's min/max widget check (every comparison with NaN is false) and a query
    string can say inf or 1e308; turned into bytes, they ended in "cannot convert float NaN to integer"
    or an OverflowError that named no field."""
    highest = PLAN_INPUT_LIMITS["reserve_vram_gb"][1]
    fix = "set the VRAM other processes hold, e.g. 6 for a local LLM server, or 0 for automatic"
    if isinstance(reserve_vram_gb, bool) or not isinstance(reserve_vram_gb, (int, float)):
        raise InvalidInputError("reserve_vram_gb", reserve_vram_gb, "a number of GB", fix)
    if not math.isfinite(reserve_vram_gb):
        raise InvalidInputError("reserve_vram_gb", reserve_vram_gb, f"a finite number of GB from 0 to {highest:g}", fix)
    if reserve_vram_gb < 0:
        raise InvalidInputError("reserve_vram_gb", reserve_vram_gb, "0 (automatic) or more GB", fix)
    if reserve_vram_gb > highest:
        raise InvalidInputError("reserve_vram_gb", reserve_vram_gb, f"at most {highest:g} GB", fix)


def _parse(params, name, kind, default):
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        if kind is bool:
            lowered = str(raw).strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes")
        return kind(raw)
    except ValueError:
        expected = {int: "a whole number", float: "a number", bool: "true or false"}[kind]
        raise InvalidInputError(name, raw, expected) from None


def plan_from_query(params, probe_device, core=None):
    """Query parameters of GET /wanfit/plan (strings) -> Plan for `core`; same names as the node inputs."""
    known = {"model_variant", "model", "width", "height", "frames", "batch", "cfg", "mode", "tier",
             "reserve_vram_gb", "weight_dtype", "text_encoder_device"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidInputError(unknown[0], params[unknown[0]], "one of the parameters " + ", ".join(sorted(known)))
    return plan_from_options(
        probe_device,
        model_variant=params.get("model_variant") or params.get("model") or "ti2v_5b",
        width=_parse(params, "width", int, None),
        height=_parse(params, "height", int, None),
        frames=_parse(params, "frames", int, None),
        batch=_parse(params, "batch", int, 1),
        cfg=_parse(params, "cfg", bool, True),
        mode=params.get("mode") or params.get("tier") or "auto",
        reserve_vram_gb=_parse(params, "reserve_vram_gb", float, 0.0),
        weight_dtype=params.get("weight_dtype") or "auto",
        text_encoder_device=params.get("text_encoder_device") or "auto",
        core=core,
    )
