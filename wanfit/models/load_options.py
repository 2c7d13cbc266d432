"""How a loader follows the plan: which weight dtype and devices to ask ComfyUI for.

The loading itself is ComfyUI's (comfy.sd); this only turns the plan, the user's choice and
what the file header says into the options ComfyUI's own loaders take.
"""

from ..plan.types import plan_field
from .quantization import short_dtype

_FP8_STORED = ("float8_e4m3fn", "float8_e5m2")
_SIXTEEN_BIT = {"fp16": "float16", "bf16": "bfloat16"}
# The plan's names for a stored format -> the formats of ComfyUI's QUANT_ALGOS that are that format.
_PLAN_FORMATS = {"fp8_scaled": ("float8_e4m3fn",), "fp8_e4m3fn": ("float8_e4m3fn",), "fp8_e5m2": ("float8_e5m2",),
                 "float8": ("float8_e4m3fn", "float8_e5m2"), "int8": ("int8_tensorwise",)}


def choose_weight_dtype(option, plan, stored_dtype, fp8_scaled=False, quantization=None):
    """-> (ComfyUI weight dtype: default | bf16 | fp16 | fp8_e4m3fn | fp8_e4m3fn_fast | fp8_e5m2, reason).

    'default' means: as stored, with ComfyUI choosing the compute dtype, which is exactly what the
    stock UNETLoader does; a plan asking for what the file already holds therefore changes nothing.
    `quantization` (ModelInfo.quantization) marks a file in ComfyUI's quantized format: see
    quantized_weight_dtype.
    """
    if quantization is not None and quantization.native:
        return quantized_weight_dtype(option, plan, quantization)
    if option != "auto":
        return option, f"weight dtype {option} (chosen on the node)"
    wanted = plan_field(plan, "weight_dtype")
    if wanted is None:
        return "default", f"weight dtype as stored ({'fp8 scaled' if fp8_scaled else stored_dtype}); no plan connected"
    stored_is_fp8 = fp8_scaled or stored_dtype in _FP8_STORED
    if wanted in ("fp8_scaled", "fp8_e4m3fn", "fp8_e5m2"):
        if stored_is_fp8:
            return "default", f"plan wants {wanted}; the file is already fp8, loaded as stored"
        target = "fp8_e5m2" if wanted == "fp8_e5m2" else "fp8_e4m3fn"
        return target, f"plan wants {wanted}: {stored_dtype} weights are cast to {target} at load"
    if wanted in _SIXTEEN_BIT:
        if stored_is_fp8:
            return "default", (f"plan wants {wanted} but the file is fp8: loaded as stored "
                               "(use the fp16 file for full precision)")
        if _SIXTEEN_BIT[wanted] == stored_dtype:
            return "default", f"plan wants {wanted}, as the file is stored"
        return wanted, f"plan wants {wanted}: {stored_dtype} weights are cast at load"
    return "default", f"plan wants {wanted}: loaded as stored"


def quantized_weight_dtype(option, plan, quantization):
    """A ComfyUI-quantized file loads as stored: its quantized layers stay quantized whatever the dtype
    (comfy/ops.py mixed_precision_ops), and the rest (modulation, norms) is asked for in its stored 16-bit
    dtype, which 'default' would not keep (ComfyUI then picks one per device: fp32 on the CPU); unquantized
    linears follow ComfyUI's compute dtype either way. WanFit never converts such a file: a plan asking for
    another format is told why not."""
    kept = quantization.kept_description
    rest = short_dtype(quantization.rest_dtype)
    as_stored = rest if rest in _SIXTEEN_BIT else "default"
    if option != "auto":
        if option == "default":
            return option, (f"weight dtype default (chosen on the node): {kept.rsplit('; the rest ', 1)[0]}; "
                            f"ComfyUI picks the dtype of the rest ({rest} in the file)")
        target = option.replace("_fast", "")
        rest_note = (f"the rest stays {rest}" if target == rest else f"the rest ({rest}) is cast to {target} at load"
                     ) + " (unquantized linears in ComfyUI's compute dtype)"
        return option, (f"weight dtype {option} (chosen on the node): {kept.rsplit('; the rest ', 1)[0]}; "
                        f"{rest_note}")
    wanted = plan_field(plan, "weight_dtype")
    label = quantization.main_format
    if wanted is None:
        return as_stored, f"loaded as stored: {kept}; no plan connected"
    if wanted == label or quantization.main_format in _PLAN_FORMATS.get(wanted, ()):
        return as_stored, f"plan wants {wanted}, as the file is stored: loaded as stored: {kept}"
    other = "the fp16 file" if wanted in _SIXTEEN_BIT else (
        "the fp8_scaled file" if wanted in _PLAN_FORMATS else f"a {wanted} file")
    return as_stored, (f"plan wants {wanted}, but the file is {label} (ComfyUI quantized): loaded as stored: {kept}; "
                       f"WanFit does not convert a quantized file (for {wanted}, load {other})")


def diffusion_model_options(weight_dtype):
    """UNETLoader's mapping (nodes.py) from its weight_dtype widget to load_diffusion_model options."""
    import torch

    options = {}
    if weight_dtype in ("fp8_e4m3fn", "fp8_e4m3fn_fast"):
        options["dtype"] = torch.float8_e4m3fn
        if weight_dtype == "fp8_e4m3fn_fast":
            options["fp8_optimizations"] = True
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    elif weight_dtype == "fp16":
        options["dtype"] = torch.float16
    elif weight_dtype == "bf16":
        options["dtype"] = torch.bfloat16
    return options


def choose_text_encoder_device(option, plan):
    """-> ('default' | 'cpu', reason); CLIPLoader's device widget has the same two values."""
    if option != "auto":
        return option, f"text encoder device {option} (chosen on the node)"
    wanted = plan_field(plan, "text_encoder_device")
    if wanted == "cpu":
        return "cpu", "plan puts umt5-xxl on the CPU (saves its VRAM for the diffusion model)"
    if wanted == "gpu":
        return "default", "plan puts umt5-xxl on the GPU"
    return "default", "ComfyUI decides where umt5-xxl runs; no plan connected"
