"""What a GGUF file says about itself, from its header alone (standard library only).

WanFit does not load GGUF files (ComfyUI-GGUF's Unet Loader does), but `python -m wanfit models
--check-file` must tell a WAN GGUF (general.architecture "wan", as ComfyUI-GGUF's tools/convert.py writes
it) from any other and say what its tensors are stored as, and the planner sizes a .gguf `model_file` from
its tensors' types and shapes. Layout: the GGUF spec (ggml's docs/gguf.md), versions 2 and 3,
little-endian: magic, version, tensor count, key/value count, the key/value pairs, one info record per
tensor, then the data section (aligned to general.alignment) the offsets point into.
"""

from dataclasses import dataclass
import os
import stat
import struct

from .errors import DOWNLOAD_HINT, ModelFileError

GGUF_MAGIC = b"GGUF"
GGUF_DEFAULT_ALIGNMENT = 32  # general.alignment when the file does not say
WAN_GGUF_ARCHITECTURES = ("wan",)  # ComfyUI-GGUF's ModelWan.arch; its loader's IMG_ARCH_LIST holds it
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
# key/value types (enum gguf_type): fixed sizes; 8 = string, 9 = array
SCALAR_VALUE_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING_VALUE, ARRAY_VALUE = 8, 9


def ggml_tensor_bytes(type_name, shape):
    """Bytes of a tensor of `shape` stored as GGML type `type_name` (rows are whole blocks)."""
    block, size = GGML_TYPE_SIZES[type_name]
    count = 1
    for extent in shape:
        count *= extent
    return -(-count // block) * size


class GGUFFileError(ModelFileError):
    """A .gguf file whose header cannot be read as one: the message names the file and the fix."""

    def __init__(self, path, message):
        super().__init__(path, f"{message}. Fix: download it again ({DOWNLOAD_HINT}).")


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
    def is_wan(self):
        return self.architecture in WAN_GGUF_ARCHITECTURES

    @property
    def tensor_count(self):
        return len(self.tensors)

    @property
    def tensor_bytes(self):
        return sum(tensor.bytes for tensor in self.tensors.values())

    def type_counts(self):
        """{GGML type name: tensors stored in it}, most used first."""
        counts = {}
        for tensor in self.tensors.values():
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def types_text(self):
        """e.g. "Q8_0 26, F32 43" (most used first)."""
        return ", ".join(f"{name} {count}" for name, count in self.type_counts().items())


class GGUFHeaderReader:
    """Reads a GGUF header field by field, refusing a truncated or damaged one by the file's name."""

    def __init__(self, handle, path, limit=MAX_GGUF_HEADER_BYTES):
        self.handle, self.path, self.limit, self.read_bytes = handle, path, limit, 0

    def take(self, size, what):
        self.read_bytes += size
        if self.read_bytes > self.limit:
            raise GGUFFileError(self.path, f"GGUF header is damaged: {self.path} runs past {self.limit} header "
                                           f"bytes while reading its {what}, more than any real WAN GGUF has")
        data = self.handle.read(size)
        if len(data) != size:
            raise GGUFFileError(self.path, f"GGUF header is truncated: {self.path} ends inside its header ({what}). "
                                           "This is an interrupted download or copy")
        return data

    def unpack(self, fmt, what):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what):
        value = self.unpack("Q", what)
        if value > MAX_GGUF_COUNT:
            raise GGUFFileError(self.path, f"GGUF header is damaged: {self.path} declares {value} {what} (at most "
                                           f"{MAX_GGUF_COUNT} are plausible)")
        return value

    def string(self, what):
        size = self.unpack("Q", what)
        if size > MAX_GGUF_STRING_BYTES:
            raise GGUFFileError(self.path, f"GGUF header is damaged: {self.path} declares a {size}-byte {what}")
        raw = self.take(size, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFFileError(self.path, f"GGUF header is damaged: {self.path} has a {what} that is not UTF-8 "
                                           "text") from None

    def value(self, value_type, key, depth=0):
        if value_type in SCALAR_VALUE_FORMATS:
            return self.unpack(SCALAR_VALUE_FORMATS[value_type], f"value of {key}")
        if value_type == STRING_VALUE:
            return self.string(f"value of {key}")
        if value_type == ARRAY_VALUE and depth == 0:
            item_type = self.unpack("I", f"array type of {key}")
            return [self.value(item_type, key, depth + 1) for _ in range(self.count(f"items of {key}"))]
        raise GGUFFileError(self.path, f"GGUF header is damaged: {self.path} has key {key} of value type "
                                       f"{value_type}, which GGUF does not define")


def is_gguf_file(path):
    """A .gguf name, or a regular file that starts with the GGUF magic (never opens a FIFO or device: the
    safetensors reader then refuses it by name)."""
    if str(path).lower().endswith(".gguf"):
        return True
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def read_gguf_file(path, require_data=True):
    """The GGUFFile of `path`: GGUF v2/v3 header, key/values and tensor infos; with `require_data`, checked
    against the file's size (a header-only look, as `--check-file` takes, skips that)."""
    try:
        file_stat = os.stat(path)
        if not stat.S_ISREG(file_stat.st_mode):
            raise GGUFFileError(path, f"Not a model file: {path} is not a regular file (a folder, pipe or device)")
        size = file_stat.st_size
        handle = open(path, "rb")
    except OSError as error:
        raise GGUFFileError(path, f"Cannot read {path}: {error.strerror or error}") from None
    with handle:
        reader = GGUFHeaderReader(handle, path)
        magic = handle.read(4)
        reader.read_bytes = len(GGUF_MAGIC)
        if magic != GGUF_MAGIC:
            raise GGUFFileError(path, f"Not a GGUF file: {path} starts with {magic!r}, not b'GGUF'")
        version = reader.unpack("I", "version")
        if version not in (2, 3):
            raise GGUFFileError(path, f"GGUF header is damaged or too old: {path} is GGUF version {version}; "
                                      "ComfyUI-GGUF reads versions 2 and 3")
        tensor_count = reader.count("tensors")
        keys = {}
        for _ in range(reader.count("metadata keys")):
            key = reader.string("metadata key")
            keys[key] = reader.value(reader.unpack("I", f"type of {key}"), key)
        tensors = {}
        for _ in range(tensor_count):
            name = reader.string("tensor name")
            tensors[name] = read_tensor_info(reader, name)
        alignment = keys.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFFileError(path, f"GGUF header is damaged: {path} has general.alignment {alignment!r}")
        data_start = -(-reader.read_bytes // alignment) * alignment
    data_end = max((tensor.offset + tensor.bytes for tensor in tensors.values()), default=0)
    if require_data and data_start + data_end > size:
        raise GGUFFileError(path, f"GGUF file is truncated: {path} is {size} bytes but its tensors need "
                                  f"{data_start + data_end}: it is truncated (an interrupted download or copy)")
    architecture = keys.get("general.architecture")
    file_type = keys.get("general.file_type")
    return GGUFFile(str(path), version, architecture if isinstance(architecture, str) else None,
                    file_type if isinstance(file_type, int) else None, tensors, size)


def read_tensor_info(reader, name):
    """The GGUFTensor of one tensor info record (after its name), refused when its shape and type disagree."""
    path = reader.path
    dims = reader.unpack("I", f"dimension count of {name}")
    if dims > MAX_GGUF_DIMS:
        raise GGUFFileError(path, f"GGUF header is damaged: {path} gives tensor {name} {dims} dimensions")
    shape = tuple(reversed(struct.unpack(f"<{dims}Q", reader.take(8 * dims, f"shape of {name}"))))
    type_number = reader.unpack("I", f"type of {name}")
    offset = reader.unpack("Q", f"offset of {name}")
    if type_number not in GGML_TYPES:
        raise GGUFFileError(path, f"GGUF header is damaged or too new: {path} stores tensor {name} as GGML type "
                                  f"{type_number}, which this reader does not know")
    type_name, block, _ = GGML_TYPES[type_number]
    if shape and shape[-1] % block:
        raise GGUFFileError(path, f"GGUF header is damaged: {path} stores tensor {name} {list(shape)} as "
                                  f"{type_name}, whose blocks of {block} values do not divide its rows")
    return GGUFTensor(type_name, shape, offset)
