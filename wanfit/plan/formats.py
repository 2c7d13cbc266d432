"""Which cards compute ComfyUI's native quantized formats, which cores load them, and which one to suggest.

Read from ComfyUI 0.33.0: comfy/ops.py `pick_operations` hands `mixed_precision_ops` the formats this card cannot
compute (`supports_fp8_compute`, `supports_nvfp4_compute`, `supports_mxfp8_compute` in comfy/model_management.py);
a layer in such a format is dequantized to the compute dtype each time it runs (`_full_precision_mm`): the memory
saving stays, the speed-up does not. int8_tensorwise is never in that list: its linear always runs comfy-kitchen's
`int8_linear` (cuBLASLt from sm75 when torch is built for CUDA 13+, otherwise the eager backend's
`torch._int_mm`, which PyTorch runs on int8 tensor cores, Turing sm75 and newer, and on the CPU).
The sizes are footprint.QUANTIZED_FORMATS.
"""

from dataclasses import dataclass, replace

from ..core import format_version
from ..errors import InvalidInputError
from ..units import format_gib
from .footprint import QUANTIZED_FORMATS
from .search import search


@dataclass(frozen=True)
class FormatSupport:
    """Where one format runs natively and since which ComfyUI release it loads."""

    name: str  # the plan's weight_dtype (a footprint.QUANTIZED_FORMATS key)
    native_from: tuple  # the lowest CUDA compute capability that computes it
    hardware: str  # in words, for the plan's reasons
    first_core: tuple  # the first release checked whose comfy/quant_ops.py QUANT_ALGOS has it
    speed_rank: int  # matmul throughput where native: lower is faster
    condition: str = ""  # what else ComfyUI checks before it computes the format natively


# First cores: `grep QUANT_ALGOS` over the releases 0.3.64 ... 0.33.0 of tests/matrix; the release before each
# (0.3.68, 0.5.0, 0.16.4, 0.25.0) lacks the format. mxfp8 is registered only when comfy-kitchen has MXFP8.
FORMAT_SUPPORT = {support.name: support for support in (
    FormatSupport("nvfp4", (10, 0), "fp4 tensor cores (Blackwell: sm100 datacenter, sm120 consumer)", (0, 8, 2), 0),
    FormatSupport("mxfp8", (10, 0), "MXFP8 tensor cores (Blackwell, sm100 and sm120)", (0, 18, 1), 1,
                  "torch 2.10 or newer, and a comfy-kitchen with MXFP8"),
    FormatSupport("float8", (8, 9), "fp8 tensor cores (Ada sm89, Hopper sm90, Blackwell)", (0, 3, 76), 1),
    FormatSupport("int8", (7, 5), "int8 tensor cores (Turing sm75 and newer)", (0, 28, 0), 1),
)}
# The QUANT_ALGOS keys, accepted as spellings of the plan's names (float8_e5m2 is not: 0.3.76 loads only e4m3fn).
WEIGHT_DTYPE_ALIASES = {"float8_e4m3fn": "float8", "int8_tensorwise": "int8"}
NATIVE = "native"
DEQUANTIZED = "dequantized per layer"


@dataclass(frozen=True)
class ComputePath:
    """How this device runs a format's matmuls: NATIVE or DEQUANTIZED, and why, in words."""

    format: str
    mode: str  # NATIVE or DEQUANTIZED
    why: str

    @property
    def native(self):
        return self.mode == NATIVE

    def describe(self):
        return f"{self.mode}: {self.why}"


def capability_text(capability):
    return f"sm{capability[0]}{capability[1]}" if capability else "no compute capability"


def compute_path(weight_dtype, device):
    """The ComputePath of a QUANTIZED_FORMATS name on `device` (None for any other dtype)."""
    support = FORMAT_SUPPORT.get(weight_dtype)
    if support is None:
        return None
    if not device.is_gpu:
        if weight_dtype == "int8":
            return ComputePath(weight_dtype, NATIVE, "int8 matmul on the CPU (torch._int_mm)")
        return ComputePath(weight_dtype, DEQUANTIZED,
                           f"the CPU has no {weight_dtype} compute: each layer is dequantized to fp32 as it runs, "
                           "the memory saving stays, the speed-up does not")
    capability = tuple(device.compute_capability or ())
    card = f"{device.name} ({capability_text(capability)})"
    if device.kind == "cuda" and capability >= support.native_from:
        condition = f"; ComfyUI also needs {support.condition}, else it dequantizes" if support.condition else ""
        return ComputePath(weight_dtype, NATIVE, f"{card} computes {weight_dtype} with {support.hardware}{condition}")
    return ComputePath(weight_dtype, DEQUANTIZED,
                       f"{card} lacks {support.hardware}, so ComfyUI dequantizes each layer to 16-bit as it runs: "
                       "the memory saving stays, the speed-up does not")


def check_core_loads(weight_dtype, core):
    """Refuse a format the planned core cannot load (its QUANT_ALGOS lacks it), naming the release that can."""
    support = FORMAT_SUPPORT.get(weight_dtype)
    if support is None or tuple(core.version) >= support.first_core:
        return
    first = format_version(support.first_core)
    raise InvalidInputError("weight_dtype", weight_dtype, f"a format ComfyUI {core.version_text} loads",
                            f"ComfyUI loads {weight_dtype} files from {first} on: update ComfyUI, or plan "
                            "fp8_scaled, fp16 or bf16 files")


@dataclass(frozen=True)
class FormatSuggestion:
    """A quantized format that keeps the whole diffusion model on the GPU where the chosen plan streams part of it."""

    weight_dtype: str
    model_weight_bytes: int
    compute: ComputePath
    model_label: str  # "expert" (A14B) or "model"
    chosen_dtype: str  # what the plan chose
    chosen_streamed_bytes: int  # what the chosen dtype streams each step

    def describe(self):
        return (f"{self.weight_dtype} would keep the whole {self.model_label} on the GPU "
                f"({format_gib(self.model_weight_bytes)}, nothing streamed; {self.chosen_dtype} streams "
                f"{format_gib(self.chosen_streamed_bytes)} each step), {self.compute.mode} on this card: with "
                f"{self.weight_dtype} files, plan weight_dtype {self.weight_dtype}")


def suggest_format(request, chosen):
    """For the plan's chosen search.Evaluation: the fastest QUANTIZED_FORMATS entry that plans fully resident on this
    card (native before dequantized, then the faster matmul, then the larger file, closer to 16-bit), or None. Only
    where the chosen plan streams weights on a GPU and the user left the dtype to the plan."""
    streamed = chosen.model_weight_bytes - chosen.resident_model_bytes
    if request.overrides.weight_dtype or not request.device.is_gpu or streamed <= 0:
        return None
    found = []
    for name, support in FORMAT_SUPPORT.items():
        if tuple(request.core.version) < support.first_core:
            continue
        fits = search(replace(request, overrides=replace(request.overrides, weight_dtype=name))).chosen
        if fits is not None and fits.resident_model_bytes >= fits.model_weight_bytes:
            path = compute_path(name, request.device)
            label = "expert" if request.variant.experts > 1 else "model"
            found.append(((not path.native, support.speed_rank, -fits.model_weight_bytes),
                          FormatSuggestion(name, fits.model_weight_bytes, path, label, chosen.candidate.weight_dtype,
                                           streamed)))
    return min(found, key=lambda item: item[0])[1] if found else None


def planned_format_bytes(config):
    """{name: bytes of one diffusion model} for every QUANTIZED_FORMATS name (the README's table)."""
    from .footprint import transformer_weight_bytes

    return {name: transformer_weight_bytes(config, name) for name in QUANTIZED_FORMATS}
