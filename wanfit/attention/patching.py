"""Per-model, reversible patching: the override set on a clone's transformer_options, never globally."""

import logging

from ..plan.types import plan_field
from .override import AttentionOverride, build_report, make_attention_override
from .probe import probe_capabilities
from .selection import MODES, resolve_attention

log = logging.getLogger("wanfit")

OVERRIDE_KEY = "optimized_attention_override"


def find_override(model_patcher):
    """The WanFit override set on a patched model, or None (host tests read its stats)."""
    options = getattr(model_patcher, "model_options", {}) or {}
    override = options.get("transformer_options", {}).get(OVERRIDE_KEY)
    return override if isinstance(override, AttentionOverride) else None


def patch_model_attention(model_patcher, mode="auto", plan=None, keep_cross_attention_on_sdpa=None,
                          nan_check_calls=8, verify=True, caps=None, kernel_loader=None):
    """Return (patched clone, report STRING); the input model and its model_options stay untouched.

    Follows ComfyUI's own convention for changing transformer_options on a clone
    (comfy.model_patcher.set_model_options_patch_replace): copy the dict, set the key, assign it back,
    so a shallow-copying clone() never shares the nested dict with the original.
    """
    plan_mode = plan_field(plan, "attention_backend")
    requested = mode
    if mode == "auto" and plan_mode in MODES and plan_mode != "auto":
        mode = plan_mode
    if keep_cross_attention_on_sdpa is None:
        keep_cross_attention_on_sdpa = bool(plan_field(plan, "keep_cross_attention_on_sdpa") or False)

    clone = model_patcher.clone()
    model_options = dict(clone.model_options)
    transformer_options = dict(model_options.get("transformer_options", {}))

    if mode == "disabled":
        previous = transformer_options.get(OVERRIDE_KEY)
        if isinstance(previous, AttentionOverride):
            del transformer_options[OVERRIDE_KEY]
        model_options["transformer_options"] = transformer_options
        clone.model_options = model_options
        reason = "disabled: ComfyUI's own attention runs unchanged"
        if isinstance(previous, AttentionOverride):
            reason += " (an earlier WanFit attention patch was removed)"
        log.info(f"WanFit attention: {reason}")
        return clone, build_report(requested, "ComfyUI attention (unpatched)", reason)

    if caps is None:
        caps = probe_capabilities(_model_device(model_patcher))
    kernel, spec, selection = resolve_attention(mode, caps, verify=verify, verify_dtype=_model_dtype(model_patcher),
                                                kernel_loader=kernel_loader)
    reason = selection.reason
    if requested != mode:
        reason = f"plan chose {mode}; {reason}"
    override = make_attention_override(kernel, selection.kernel_name,
                                       keep_cross_attention_on_sdpa=keep_cross_attention_on_sdpa,
                                       nan_check_calls=nan_check_calls, kernel_spec=spec, requested=requested,
                                       selection_reason=reason)
    transformer_options[OVERRIDE_KEY] = override
    model_options["transformer_options"] = transformer_options
    clone.model_options = model_options
    if selection.uses_kernel:
        log.info(f"WanFit attention: {selection.kernel_name} ({reason})")
    else:
        log.info(f"WanFit attention: SDPA fallback ({reason})")
    return clone, override.report()


def _model_device(model_patcher):
    device = getattr(model_patcher, "load_device", None)
    return str(device) if device is not None else None


def _model_dtype(model_patcher):
    """fp16/bf16 name the kernel will see (fp32 models are cast to bf16 for the kernel)."""
    getter = getattr(model_patcher, "model_dtype", None)
    try:
        dtype = getter() if callable(getter) else None
    except Exception:
        dtype = None
    name = str(dtype).replace("torch.", "") if dtype is not None else ""
    return name if name in ("float16", "bfloat16") else "bfloat16" if name else None
