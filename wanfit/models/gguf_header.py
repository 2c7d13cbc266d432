"""What a GGUF file says about itself, from its header alone (standard library only).

WanFit does not load GGUF files (ComfyUI-GGUF's Unet Loader does), but `python -m wanfit models
--check-file` must tell a WAN GGUF (general.architecture "wan", as ComfyUI-GGUF's tools/convert.py
writes it) from any other and say what its tensors are stored as. Layout: the GGUF spec (ggml's
docs/gguf.md), versions 2 and 3, little-endian: magic, version, tensor count, key/value count, the
key/value pairs, then one info record per tensor.
"""

from collections import Counter
from dataclasses import dataclass
import struct

from .errors import DOWNLOAD_HINT, ModelFileError

GGUF_MAGIC = b"GGUF"
WAN_GGUF_ARCHITECTURES = ("wan",)  # ComfyUI-GGUF's ModelWan.arch; its loader's IMG_ARCH_LIST holds it
# Far above any real file (a WAN 14B GGUF has about 1100 tensors and 30 keys): a damaged count fails fast.
MAX_COUNT = 1_000_000
MAX_STRING_BYTES = 1 << 20
# GGML tensor type numbers -> names (ggml.h, enum ggml_type); the others print as "type <n>".
GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
                   10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 30: "BF16"}
# key/value types (enum gguf_type): fixed sizes; 8 = string, 9 = array
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    architecture: str | None  # general.architecture; None when the file has no such key
    tensor_types: dict  # GGML type name -> how many tensors are stored in it
    tensor_count: int

    @property
    def is_wan(self):
        return self.architecture in WAN_GGUF_ARCHITECTURES

    @property
    def types_text(self):
        """e.g. "Q8_0 26, F32 43" (most used first)."""
        return ", ".join(f"{name} {count}" for name, count in sorted(self.tensor_types.items(),
                                                                      key=lambda item: (-item[1], item[0])))


class _Reader:
    def __init__(self, handle, path):
        self.handle, self.path = handle, path

    def take(self, size, what):
        data = self.handle.read(size)
        if len(data) != size:
            raise ModelFileError(self.path, f"GGUF header is truncated: {self.path} ends inside its {what}. "
                                            f"This is an interrupted download or copy. Fix: download it again.")
        return data

    def unpack(self, fmt, what):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what):
        value = self.unpack("Q", what)
        if value > MAX_COUNT:
            raise ModelFileError(self.path, f"GGUF header is damaged: {self.path} declares {value} {what} (at most "
                                            f"{MAX_COUNT} are plausible). Fix: download it again ({DOWNLOAD_HINT}).")
        return value

    def string(self, what):
        size = self.unpack("Q", what)
        if size > MAX_STRING_BYTES:
            raise ModelFileError(self.path, f"GGUF header is damaged: {self.path} declares a {size}-byte {what}. "
                                            f"Fix: download it again ({DOWNLOAD_HINT}).")
        return self.take(size, what).decode("utf-8", errors="replace")

    def value(self, value_type, key):
        if value_type in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[value_type], f"value of {key}")
        if value_type == _STRING:
            return self.string(f"value of {key}")
        if value_type == _ARRAY:
            item_type = self.unpack("I", f"array type of {key}")
            return [self.value(item_type, key) for _ in range(self.count(f"items of {key}"))]
        raise ModelFileError(self.path, f"GGUF header is damaged: {self.path} has key {key} of unknown type "
                                        f"{value_type}. Fix: download it again ({DOWNLOAD_HINT}).")


def read_gguf_header(path):
    """GGUFHeader of `path`; ModelFileError naming the file when it is not a readable GGUF v2/v3 header."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ModelFileError(path, f"Cannot read {path}: {error.strerror or error}. Fix: check the path.") from None
    with handle:
        reader = _Reader(handle, path)
        magic = handle.read(4)
        if magic != GGUF_MAGIC:
            raise ModelFileError(path, f"Not a GGUF file: {path} starts with {magic!r}, not b'GGUF'. Fix: download "
                                       f"the model again ({DOWNLOAD_HINT}).")
        version = reader.unpack("I", "version")
        if version not in (2, 3):
            raise ModelFileError(path, f"GGUF header is damaged or too old: {path} is GGUF version {version}; "
                                       f"ComfyUI-GGUF reads versions 2 and 3. Fix: download it again "
                                       f"({DOWNLOAD_HINT}).")
        tensor_count = reader.count("tensors")
        architecture = None
        for _ in range(reader.count("metadata keys")):
            key = reader.string("metadata key")
            value = reader.value(reader.unpack("I", f"type of {key}"), key)
            if key == "general.architecture" and isinstance(value, str):
                architecture = value
        types = Counter()
        for _ in range(tensor_count):
            name = reader.string("tensor name")
            dims = reader.unpack("I", f"dimension count of {name}")
            if dims > 8:
                raise ModelFileError(path, f"GGUF header is damaged: {path} gives tensor {name} {dims} "
                                           f"dimensions. Fix: download it again ({DOWNLOAD_HINT}).")
            reader.take(8 * dims, f"shape of {name}")
            ggml_type = reader.unpack("I", f"type of {name}")
            reader.take(8, f"offset of {name}")
            types[GGML_TYPE_NAMES.get(ggml_type, f"type {ggml_type}")] += 1
    return GGUFHeader(version=version, architecture=architecture, tensor_types=dict(types),
                      tensor_count=tensor_count)
