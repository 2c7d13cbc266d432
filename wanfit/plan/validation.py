"""The planner's inputs checked before any arithmetic: each refusal names the field, what it expects and the fix."""

import math

from .. import core as cores
from ..choices import PLAN_INPUT_LIMITS
from ..errors import InvalidInputError
from ..units import format_gib, gib
from . import footprint
from .catalogue import MODEL_VARIANTS, VARIANTS
from .formats import check_core_loads
from .types import Overrides, PlanRequest


def validate_variant(model_variant):
    """The Variant a model_variant name (any case, - or _) stands for."""
    key = str(model_variant).strip().lower().replace("-", "_")
    if key not in VARIANTS:
        raise InvalidInputError("model_variant", model_variant, "one of " + ", ".join(MODEL_VARIANTS),
                                "ti2v_5b for the 5B model (Wan 2.2 VAE), t2v_a14b / i2v_a14b for the expert pair")
    return VARIANTS[key]


def _positive_int(name, value):
    """A whole number from 1 up to the input's limit; an absurd one (10**300) is refused before any arithmetic."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(name, value, "a positive whole number")
    highest = PLAN_INPUT_LIMITS[name][1]
    if value > highest:
        raise InvalidInputError(name, value, f"at most {highest}", f"use {highest} or less")


def validate_job(job, variant):
    for name in ("width", "height"):
        value = getattr(job, name)
        _positive_int(name, value)
        if value % variant.size_multiple:
            lower = max(variant.size_multiple, value // variant.size_multiple * variant.size_multiple)
            raise InvalidInputError(name, value, f"a multiple of {variant.size_multiple} for {variant.label}",
                                    f"use {lower} or {lower + variant.size_multiple}")
    _positive_int("frames", job.frames)
    if (job.frames - 1) % 4:
        lower = (job.frames - 1) // 4 * 4 + 1
        raise InvalidInputError("frames", job.frames, "4n+1 (1, 5, ..., 81, ..., 121): the VAE packs 4 frames per latent frame",
                                f"use {lower} or {lower + 4}")
    _positive_int("batch", job.batch)


def validate_overrides(overrides, device):
    if overrides.weight_dtype is not None and overrides.weight_dtype not in footprint.WEIGHT_DTYPES:
        raise InvalidInputError("weight_dtype", overrides.weight_dtype, "one of " + ", ".join(footprint.WEIGHT_DTYPES))
    if overrides.text_encoder_device not in (None, "cpu", "gpu"):
        raise InvalidInputError("text_encoder_device", overrides.text_encoder_device, "cpu, gpu or unset (auto)")
    reserve = overrides.reserve_vram_bytes
    if reserve is not None:
        if isinstance(reserve, bool) or not isinstance(reserve, (int, float)) or not math.isfinite(reserve):
            raise InvalidInputError("reserve_vram_gb", reserve, "a finite number of GB (reserve_vram_bytes: bytes)")
        if reserve < 0:
            raise InvalidInputError("reserve_vram_gb", gib(reserve), "0 or more")
        if device.is_gpu and reserve >= device.total_vram_bytes:
            raise InvalidInputError("reserve_vram_gb", round(gib(reserve), 2),
                                    f"less than the card's total VRAM ({format_gib(device.total_vram_bytes)})",
                                    "reserve only what the other process (e.g. an LLM server) really holds")


def plan_request(device, model_variant, job, overrides=None, system_ram_bytes=None, core=None):
    """The checked PlanRequest for plan()'s arguments (None core: the newest supported one)."""
    core = core or cores.newest_core()
    if not isinstance(core, cores.Core):
        raise InvalidInputError("core", core, "a wanfit.core.Core (core_from_version / core_from_checkout / running_core)")
    variant = validate_variant(model_variant)
    validate_job(job, variant)
    overrides = overrides or Overrides()
    ram_bytes = device.total_ram_bytes if system_ram_bytes is None else system_ram_bytes
    if isinstance(ram_bytes, bool) or not isinstance(ram_bytes, int) or ram_bytes <= 0:
        raise InvalidInputError("system_ram_bytes", ram_bytes, "the machine's total RAM in bytes (> 0)")
    if device.is_gpu and device.total_vram_bytes <= 0:
        raise InvalidInputError("total_vram_bytes", device.total_vram_bytes, f"> 0 for GPU {device.name!r}",
                                "check nvidia-smi and CUDA_VISIBLE_DEVICES, set GPU_TIER, or run ComfyUI with --cpu")
    validate_overrides(overrides, device)
    check_core_loads(overrides.weight_dtype, core)
    return PlanRequest(device, variant, job, overrides, ram_bytes, core)
