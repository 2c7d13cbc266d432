"""WAN GGUF files as ComfyUI-GGUF loads them: the quantizations the planner names, what each stores a block
linear as, and the tensor table of a .gguf file read from its header (standard library only).

ComfyUI-GGUF's `UnetLoaderGGUF` keeps every tensor as the file stores it (a GGMLTensor) and its GGMLOps
dequantize each layer to the compute dtype on every call; its GGUFModelPatcher is a plain ModelPatcher,
so ComfyUI's dynamic VRAM does not place these weights: partial loading does, on every core.

How a WAN GGUF is made (city96/ComfyUI-GGUF tools): convert.py keeps 1-D tensors, tensors of at most 1024
values and every `.modulation` in F32, the other weights in F16 (BF16 from a bf16 source), and sets the 5-D
`patch_embedding.weight` aside for fix_5d_tensors.py (F32); then its patched llama-quantize (tools/lcpp.patch,
LLM_ARCH_WAN) quantizes only the 2-D weights inside the blocks (not modulation, patch, text or time
embeddings, time projection, head), with the mixes of `img_tensor_get_type`: the Q*_K_M files keep the
attention v weights (".v.weight") and the FFN down projection (".ffn.2.weight") in a larger type.
"""

from dataclasses import dataclass
import os
import stat
import struct

from ..errors import WanFitError

GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32  # general.alignment when the file does not say
# ggml's enum ggml_type: number -> (name, elements per block, bytes per block); kept equal to the `gguf`
# package's GGML_QUANT_SIZES by a unit test where that package is installed.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}
GGML_TYPE_SIZES = {name: (block, size) for name, block, size in GGML_TYPES.values()}
# Far above a real WAN GGUF (about 1100 tensors, 30 keys, names under 128 bytes): a damaged count fails fast.
MAX_GGUF_COUNT = 1_000_000
MAX_GGUF_STRING_BYTES = 1 << 20
MAX_GGUF_DIMS = 8  # ggml has 4; ComfyUI-GGUF's fix_5d_tensors.py writes the 5-D patch embedding
MAX_GGUF_HEADER_BYTES = 64 * 1024 * 1024  # what this reader parses at most (a WAN GGUF's is about 100 KB)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFQuant:
    """One GGUF quantization the plan can be told (weight_dtype gguf_<name>): what llama-quantize (ComfyUI-GGUF's
    patch) stores each block linear as."""

    name: str  # the plan's weight_dtype, e.g. "gguf_q4_k_m"
    file_type: str  # llama-quantize's name, e.g. "Q4_K_M"
    block_type: str  # the GGML type of most block linears
    v_type: str = None  # attention v weights (".v.weight"), when the mix differs
    v_first: int = 0  # only the first v_first v weights get v_type (Q4_K_S: 4, Q3_K_M: 2); 0: all of them
    v_later_type: str = None  # the v weights after the first v_first (None: block_type)
    ffn_down_type: str = None  # ".ffn.2.weight", when the mix differs

    def mix_text(self):
        """'Q4_K (attention v Q6_K, FFN down Q6_K)', or the one type."""
        parts = []
        if self.v_type:
            first = f"the first {self.v_first} " if self.v_first else ""
            later = f", later ones {self.v_later_type}" if self.v_later_type else ""
            parts.append(f"{first}attention v {self.v_type}{later}")
        if self.ffn_down_type:
            parts.append(f"FFN down {self.ffn_down_type}")
        return self.block_type + (f" ({', '.join(parts)})" if parts else "")

    def linear_type(self, layer, v_index):
        """The GGML type of block linear `layer` ("blocks.3.self_attn.v"); v_index counts v weights before it."""
        if layer.endswith(".v") and self.v_type:
            if not self.v_first or v_index < self.v_first:
                return self.v_type
            return self.v_later_type or self.block_type
        if layer.endswith(".ffn.2") and self.ffn_down_type:
            return self.ffn_down_type
        return self.block_type


GGUF_QUANTS = {quant.name: quant for quant in (
    GGUFQuant("gguf_f16", "F16", "F16"),
    GGUFQuant("gguf_bf16", "BF16", "BF16"),
    GGUFQuant("gguf_q8_0", "Q8_0", "Q8_0"),
    GGUFQuant("gguf_q6_k", "Q6_K", "Q6_K"),
    GGUFQuant("gguf_q5_k_m", "Q5_K_M", "Q5_K", v_type="Q6_K", ffn_down_type="Q6_K"),
    GGUFQuant("gguf_q5_k_s", "Q5_K_S", "Q5_K"),
    GGUFQuant("gguf_q5_1", "Q5_1", "Q5_1"),
    GGUFQuant("gguf_q5_0", "Q5_0", "Q5_0", ffn_down_type="Q5_1"),
    GGUFQuant("gguf_q4_k_m", "Q4_K_M", "Q4_K", v_type="Q6_K", ffn_down_type="Q6_K"),
    GGUFQuant("gguf_q4_k_s", "Q4_K_S", "Q4_K", v_type="Q5_K", v_first=4, ffn_down_type="Q5_K"),
    GGUFQuant("gguf_q4_1", "Q4_1", "Q4_1"),
    GGUFQuant("gguf_q4_0", "Q4_0", "Q4_0", ffn_down_type="Q4_1"),
    GGUFQuant("gguf_q3_k_m", "Q3_K_M", "Q3_K", v_type="Q5_K", v_first=2, v_later_type="Q4_K", ffn_down_type="Q4_K"),
    GGUFQuant("gguf_q3_k_s", "Q3_K_S", "Q3_K"),
    GGUFQuant("gguf_q2_k", "Q2_K", "Q2_K", v_type="Q3_K"),
)}


def ggml_tensor_bytes(type_name, shape):
    """Bytes of a tensor of `shape` stored as GGML type `type_name` (rows are whole blocks)."""
    block, size = GGML_TYPE_SIZES[type_name]
    count = 1
    for extent in shape:
        count *= extent
    return -(-count // block) * size


def block_linear_bytes(quant, out_features, in_features, layer, v_index):
    """Bytes of one block linear in `quant` (a GGUFQuant): llama-quantize's type, or F16 where the input width is not
    a whole number of the type's blocks (its fallback)."""
    type_name = quant.linear_type(layer, v_index)
    if in_features % GGML_TYPE_SIZES[type_name][0]:
        type_name = "F16"
    return ggml_tensor_bytes(type_name, (out_features, in_features))


# --- a .gguf file's tensor table, from its header ----------------------------------------------------------------


@dataclass(frozen=True)
class GGUFTensor:
    type_name: str  # GGML type, e.g. "Q4_K"
    shape: tuple  # as torch reads it (GGUF stores the dims fastest first: reversed)
    offset: int  # from the start of the data section

    @property
    def bytes(self):
        return ggml_tensor_bytes(self.type_name, self.shape)


@dataclass(frozen=True)
class GGUFFile:
    """What a .gguf file's header declares: its architecture, file type and tensors."""

    path: str
    version: int
    architecture: str  # general.architecture; None when the file has no such key
    file_type: int  # general.file_type (llama.cpp's LlamaFileType number); None when absent
    tensors: dict  # name -> GGUFTensor
    file_size_bytes: int

    @property
    def tensor_bytes(self):
        return sum(tensor.bytes for tensor in self.tensors.values())

    def type_counts(self):
        """{GGML type name: tensors stored in it}, most used first."""
        counts = {}
        for tensor in self.tensors.values():
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


class GGUFFileError(WanFitError):
    """A .gguf file that cannot be read as one: the message names the file and the fix."""

    def __init__(self, path, reason):
        self.path = str(path)
        super().__init__(f"Cannot plan from {path}: {reason}. Fix: pick the WAN 2.2 .gguf file ComfyUI-GGUF's Unet "
                         f"Loader (GGUF) loads, or download it again if it is damaged.")


class _HeaderReader:
    def __init__(self, handle, path, limit):
        self.handle, self.path, self.limit, self.read_bytes = handle, path, limit, 0

    def take(self, size, what):
        self.read_bytes += size
        if self.read_bytes > self.limit:
            raise GGUFFileError(self.path, f"its header runs past {self.limit} bytes while reading its {what}, more "
                                           "than any real WAN GGUF has (it is damaged or not a model)")
        data = self.handle.read(size)
        if len(data) != size:
            raise GGUFFileError(self.path, f"the file ends inside its header ({what}): it is truncated")
        return data

    def unpack(self, fmt, what):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what):
        value = self.unpack("Q", what)
        if value > MAX_GGUF_COUNT:
            raise GGUFFileError(self.path, f"its header declares {value} {what}, at most {MAX_GGUF_COUNT} are "
                                           "plausible (it is damaged)")
        return value

    def string(self, what):
        size = self.unpack("Q", what)
        if size > MAX_GGUF_STRING_BYTES:
            raise GGUFFileError(self.path, f"its header declares a {size}-byte {what} (it is damaged)")
        raw = self.take(size, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFFileError(self.path, f"its {what} is not UTF-8 text (it is damaged)") from None

    def value(self, value_type, key, depth=0):
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type], f"value of {key}")
        if value_type == _STRING:
            return self.string(f"value of {key}")
        if value_type == _ARRAY and depth == 0:
            item_type = self.unpack("I", f"array type of {key}")
            return [self.value(item_type, key, depth + 1) for _ in range(self.count(f"items of {key}"))]
        raise GGUFFileError(self.path, f"its key {key} has value type {value_type}, which GGUF does not define "
                                       "(it is damaged)")


def read_gguf_file(path):
    """The GGUFFile of `path`: GGUF v2/v3 header, key/values and tensor infos, checked against the file's size."""
    try:
        file_stat = os.stat(path)
        if not stat.S_ISREG(file_stat.st_mode):
            raise GGUFFileError(path, "it is not a regular file (a folder, pipe or device)")
        size = file_stat.st_size
        handle = open(path, "rb")
    except OSError as error:
        raise GGUFFileError(path, f"it cannot be read ({error.strerror or error})") from None
    with handle:
        reader = _HeaderReader(handle, path, MAX_GGUF_HEADER_BYTES)
        magic = handle.read(4)
        reader.read_bytes = 4
        if magic != GGUF_MAGIC:
            raise GGUFFileError(path, f"it starts with {magic!r}, not b'GGUF', so it is no GGUF file")
        version = reader.unpack("I", "version")
        if version not in (2, 3):
            raise GGUFFileError(path, f"it is GGUF version {version}; ComfyUI-GGUF reads versions 2 and 3")
        tensor_count = reader.count("tensors")
        keys = {}
        for _ in range(reader.count("metadata keys")):
            key = reader.string("metadata key")
            keys[key] = reader.value(reader.unpack("I", f"type of {key}"), key)
        tensors = {}
        for _ in range(tensor_count):
            name = reader.string("tensor name")
            dims = reader.unpack("I", f"dimension count of {name}")
            if dims > MAX_GGUF_DIMS:
                raise GGUFFileError(path, f"tensor {name} has {dims} dimensions (it is damaged)")
            shape = tuple(reversed(struct.unpack(f"<{dims}Q", reader.take(8 * dims, f"shape of {name}"))))
            type_number = reader.unpack("I", f"type of {name}")
            offset = reader.unpack("Q", f"offset of {name}")
            if type_number not in GGML_TYPES:
                raise GGUFFileError(path, f"tensor {name} is stored as GGML type {type_number}, which this reader "
                                          "does not know")
            type_name = GGML_TYPES[type_number][0]
            block = GGML_TYPE_SIZES[type_name][0]
            if shape and shape[-1] % block:
                raise GGUFFileError(path, f"tensor {name} {list(shape)} is stored as {type_name}, whose blocks of "
                                          f"{block} values do not divide its rows (it is damaged)")
            tensors[name] = GGUFTensor(type_name, shape, offset)
        alignment = keys.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFFileError(path, f"its general.alignment is {alignment!r} (it is damaged)")
        data_start = -(-reader.read_bytes // alignment) * alignment
    data_end = max((tensor.offset + tensor.bytes for tensor in tensors.values()), default=0)
    if data_start + data_end > size:
        raise GGUFFileError(path, f"it is {size} bytes but its tensors need {data_start + data_end}: it is truncated "
                                  "(an interrupted download or copy)")
    architecture = keys.get("general.architecture")
    file_type = keys.get("general.file_type")
    return GGUFFile(str(path), version, architecture if isinstance(architecture, str) else None,
                    file_type if isinstance(file_type, int) else None, tensors, size)
