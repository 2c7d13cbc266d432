"""Whether the running ComfyUI loads a file's quantized format, read from the core itself.

A format is loadable when the core's comfy/quant_ops.py lists it in QUANT_ALGOS (0.3.76 and later;
0.3.68 kept its one format, float8_e4m3fn, in comfy/ops.py QUANT_FORMAT_MIXINS; 0.3.64 has no
quant_ops.py and loads none). The table is read, never assumed from the version: mxfp8 is only there
when comfy-kitchen provides its layout. A core older than such a format would fail on the file while
loading it, after minutes; the loaders refuse it at queue time instead, naming the format and the fix.

From 0.8.2 the quantized layers are comfy-kitchen's: where it does not import, quant_ops keeps QUANT_ALGOS
but stubs QuantizedTensor, and every quantized file -- fp8_scaled too, which these cores read as
float8_e4m3fn -- fails while loading ("'NoneType' object has no attribute 'Params'", measured on 0.8.2).
"""

from dataclasses import dataclass

from .errors import DOWNLOAD_HINT, ModelMismatchError
from .quantization import QUANT_FORMATS, UNKNOWN_UNTIL_LOADED


@dataclass(frozen=True)
class CoreQuantSupport:
    """The quantized formats a ComfyUI core loads, and where that was read."""

    formats: frozenset
    reads_comfy_quant_tensors: bool  # per-layer .comfy_quant tensors (comfy.utils.detect_layer_quantization)
    source: str  # "comfy.quant_ops.QUANT_ALGOS", ... or why there is no table
    missing_kitchen: bool = False  # its quant_ops needs comfy-kitchen, which did not import: nothing quantized loads
    reads_fp8_scaled_as_float8: bool = False  # comfy.utils.convert_old_quants: fp8_scaled goes through quant_ops

    def describe(self):
        """'its comfy.quant_ops.QUANT_ALGOS lists float8_e4m3fn, nvfp4', or why it lists none."""
        if not self.formats:
            return f"it has {self.source}, so no quantized format"
        return f"its {self.source} lists {', '.join(sorted(self.formats))}"


def running_core_support():
    """The running core's support, or None when ComfyUI cannot be imported (the command line outside ComfyUI)."""
    try:
        import comfy.utils
    except ImportError:
        return None
    try:
        import comfy.quant_ops as quant_ops
    except ImportError:
        quant_ops = None
    import comfy.ops

    return support_of(quant_ops, comfy.ops, comfy.utils)


def support_of(quant_ops, ops, utils):
    """CoreQuantSupport from a core's modules: quant_ops (None when the file is missing), ops and utils."""
    reads_tensors = hasattr(utils, "detect_layer_quantization")
    algos = getattr(quant_ops, "QUANT_ALGOS", None)
    if algos is not None and kitchen_missing(quant_ops):
        return CoreQuantSupport(frozenset(), reads_tensors, "comfy.quant_ops without comfy-kitchen (its import failed)",
                                missing_kitchen=True, reads_fp8_scaled_as_float8=hasattr(utils, "convert_old_quants"))
    if algos is not None:
        return CoreQuantSupport(frozenset(algos), reads_tensors, "comfy.quant_ops.QUANT_ALGOS")
    mixins = getattr(ops, "QUANT_FORMAT_MIXINS", None)
    if mixins is not None:
        return CoreQuantSupport(frozenset(mixins), reads_tensors, "comfy.ops.QUANT_FORMAT_MIXINS")
    where = "a comfy/quant_ops.py without QUANT_ALGOS" if quant_ops is not None else "no comfy/quant_ops.py"
    return CoreQuantSupport(frozenset(), reads_tensors, where)


def kitchen_missing(quant_ops):
    """The core's quant_ops imports comfy-kitchen and the import failed: its flag says so, and its QuantizedTensor is
    then a stub without from_float."""
    if getattr(quant_ops, "_CK_AVAILABLE", None) is False:
        return True
    tensor_class = getattr(quant_ops, "QuantizedTensor", None)
    return tensor_class is not None and not hasattr(tensor_class, "from_float")


KITCHEN_FIX = ("install comfy-kitchen into ComfyUI's Python (pip install -r requirements.txt in the ComfyUI folder) "
               "and restart ComfyUI, or use the fp16 file of this model")


@dataclass(frozen=True)
class CoreVerdict:
    """Whether a file loads on a core: `reason` says why in a phrase, `fix` is set when it does not."""

    loads: bool
    reason: str
    fix: str = None


def core_verdict(info, support):
    """Whether this core loads the file described by `info` (a ModelInfo)."""
    quant = info.quantization
    if quant is not None and support.missing_kitchen and (quant.native or support.reads_fp8_scaled_as_float8):
        what = "its quantized layers" if quant.native else "fp8_scaled, which it reads as float8_e4m3fn,"
        return CoreVerdict(False, f"this core loads {what} through comfy-kitchen, which failed to import",
                           KITCHEN_FIX)
    if quant is None or not quant.native:
        return CoreVerdict(True, "no ComfyUI-quantized layers" if quant is None
                           else "legacy fp8_scaled, which every supported core loads")
    formats = [use.format for use in quant.formats]
    if UNKNOWN_UNTIL_LOADED in formats and not support.reads_comfy_quant_tensors:
        return CoreVerdict(False, "its layers are marked by .comfy_quant tensors, which this core does not read",
                           "files with .comfy_quant tensors need ComfyUI 0.5.0 or later: update ComfyUI, or use "
                           "the fp8_scaled or fp16 file of this model")
    missing = [name for name in formats if name != UNKNOWN_UNTIL_LOADED and name not in support.formats]
    if missing:
        first = max((QUANT_FORMATS[name].first_core for name in missing),
                    key=lambda version: tuple(int(part) for part in version.split(".")))
        return CoreVerdict(False, f"this core has no {' or '.join(missing)}: {support.describe()}",
                           f"{' and '.join(missing)} needs ComfyUI {first} or later: update ComfyUI, or use the "
                           f"fp8_scaled or fp16 file of this model")
    named = [name for name in formats if name != UNKNOWN_UNTIL_LOADED]
    return CoreVerdict(True, f"{', '.join(named) or 'the format its .comfy_quant tensors name'} "
                             f"in {support.source}")


def check_loads_on_core(info, support=None):
    """Refuse a file whose quantized format the running core lacks; support None reads the running core
    (nothing is refused when ComfyUI cannot be imported)."""
    support = support if support is not None else running_core_support()
    if support is None:
        return None
    verdict = core_verdict(info, support)
    if not verdict.loads:
        raise ModelMismatchError(
            f"This ComfyUI cannot load {info.path}: it is stored in ComfyUI's quantized format "
            f"({info.quantization.description}), but {verdict.reason}. ComfyUI would fail on it while loading. "
            f"Fix: {verdict.fix} ({DOWNLOAD_HINT}).", [info.path])
    return verdict
