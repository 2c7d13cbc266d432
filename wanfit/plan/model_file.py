"""A diffusion model file sized from its header, so the plan holds what ComfyUI will hold, not a formula's guess.

A .safetensors file goes through the loaders' own gate (wanfit.models.check_diffusion_model: a damaged or
foreign header, or quantization metadata that disagrees with the tensors, is refused naming the file and the
fix); a .gguf file through wanfit.models.check_gguf_diffusion_model (the expert switch's gate). Only the
header is read: a 14 GB expert is sized in milliseconds.
"""

from ..errors import InvalidInputError
from ..models import check_diffusion_model, check_gguf_diffusion_model
from ..models.quantization import BLOCK_LINEAR, short_dtype
from ..models.gguf_header import is_gguf_file
from .gguf import GGUF_QUANTS
from .types import ModelFileSize

# The plan's names for what a safetensors diffusion model stores (its QUANT_ALGOS key or dominant dtype).
PLAN_NAME_OF_FORMAT = {"float8_e4m3fn": "float8", "float8_e5m2": "float8", "int8_tensorwise": "int8",
                       "mxfp8": "mxfp8", "nvfp4": "nvfp4"}
PLAN_NAME_OF_DTYPE = {"float16": "fp16", "bfloat16": "bf16", "float8_e4m3fn": "fp8_e4m3fn",
                      "float8_e5m2": "fp8_e5m2"}
SIXTEEN_BIT_TAGS = ("F16", "BF16")
GGUF_FILE_TYPES = {quant.file_type: quant.name for quant in GGUF_QUANTS.values()}
# llama.cpp's LlamaFileType numbers of those file types (general.file_type), as the gguf package defines them.
LLAMA_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
                    18: "Q6_K", 32: "BF16"}


def size_model_file(path):
    """The ModelFileSize of a WAN 2.2 diffusion model file (.safetensors or .gguf), refused with the fix when its
    header cannot be read, is no WAN 2.2 model, or stores a format the planner does not plan."""
    return _size_gguf(path) if is_gguf_file(path) else _size_safetensors(path)


def _size_safetensors(path):
    info = check_diffusion_model(path)
    quant = info.quantization
    if quant is not None and quant.native:
        name = PLAN_NAME_OF_FORMAT.get(quant.main_format)
        if name is None:
            raise InvalidInputError("model_file", str(path), "a file in a format the plan sizes: float8, int8, mxfp8 "
                                    "or nvfp4 (or fp8_scaled, fp16, bf16)",
                                    f"its block linears are {quant.main_format}; plan it with the weight_dtype "
                                    f"nearest in size, without model_file")
        uses = "; ".join(f"{use.format} {use.block_linears} of {quant.block_linears} block linears"
                         for use in quant.formats)
        description = f"{uses}; the rest {short_dtype(quant.rest_dtype)}"
    elif info.fp8_scaled:
        name, description = "fp8_scaled", f"fp8_scaled ({short_dtype(info.scaled_fp8_dtype)} block linears)"
    else:
        name = PLAN_NAME_OF_DTYPE.get(info.weight_dtype)
        if name is None:
            raise InvalidInputError("model_file", str(path), "a WAN 2.2 model stored as fp16, bf16, fp8 or a "
                                    "ComfyUI quantized format",
                                    f"it is stored as {info.weight_dtype}; use the fp16, bf16 or fp8_scaled file")
        description = f"{short_dtype(info.weight_dtype)} weights"
    stored, cpu = _safetensors_bytes(path, info)
    return ModelFileSize(str(path), "safetensors", info.variant, name, stored, cpu, description)


def _safetensors_bytes(path, info):
    """(bytes as stored, bytes under --cpu): ComfyUI builds the patch embedding in fp32 and, with --cpu, loads the
    16-bit tensors as fp32; quantized and fp8 tensors stay as stored."""
    from ..models.headers import read_safetensors_header

    tensors = read_safetensors_header(path).tensors
    stored = cpu = 0
    for name, entry in tensors.items():
        size = entry.data_offsets[1] - entry.data_offsets[0]
        if name.endswith(("scaled_fp8", ".comfy_quant")):
            continue
        if name[len(info.key_prefix):].startswith("patch_embedding.") and entry.dtype in SIXTEEN_BIT_TAGS:
            size *= 2
        stored += size
        cpu += size * 2 if entry.dtype in SIXTEEN_BIT_TAGS and not name[len(info.key_prefix):].startswith(
            "patch_embedding.") else size
    return stored, cpu


def _size_gguf(path):
    gguf_model = check_gguf_diffusion_model(path)
    gguf_file, info = gguf_model.file, gguf_model.info
    file_type = LLAMA_FILE_TYPES.get(gguf_file.file_type) or _file_type_from_tensors(gguf_file)
    name = GGUF_FILE_TYPES.get(file_type)
    if name is None:
        raise InvalidInputError("model_file", str(path), "a GGUF quantization the plan names: "
                                + ", ".join(GGUF_FILE_TYPES), f"its file type is {file_type}; plan the nearest "
                                "gguf_ weight_dtype without model_file")
    linears = sum(1 for key in gguf_file.tensors if key.endswith(".weight")
                  and BLOCK_LINEAR.search(key[:-len(".weight")]))
    types = ", ".join(f"{type_name} {count}" for type_name, count in gguf_file.type_counts().items())
    size = gguf_file.tensor_bytes
    return ModelFileSize(str(path), "gguf", info.variant, name, size, size,
                         f"GGUF {file_type}, {linears} block linears; tensors {types}")


def _file_type_from_tensors(gguf_file):
    """A GGUF without general.file_type: the type most block linears are stored in."""
    counts = {}
    for key, tensor in gguf_file.tensors.items():
        if key.endswith(".weight") and BLOCK_LINEAR.search(key[:-len(".weight")]):
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
    return max(counts, key=counts.get) if counts else "unknown"
