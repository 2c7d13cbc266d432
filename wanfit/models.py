"""Which WAN 2.2 file is this? Answered from the safetensors header alone, before anything loads.

A wrong file (an SD1.5 checkpoint, the Wan 2.1 VAE for TI2V-5B, a T2V expert paired with an
I2V expert) should be refused in milliseconds with a message that names the file and the fix,
not after ComfyUI has spent a minute and 28 GB of RAM loading it. The rules mirror ComfyUI
v0.3.64 (comfy/model_detection.py at `head.modulation`, comfy/sd.py VAE and text-encoder
detection), so what we accept is what ComfyUI will load.

The manifest of official files (names, folders, URLs, certain checksums) lives in
manifest.json next to this module; see ARCHITECTURE notes in docs/loaders_results.md.
"""

from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
import re
import stat
import struct

from .errors import WanFitError

SAFETENSORS_LENGTH_PREFIX_BYTES = 8
# The safetensors reference implementation refuses headers above 100 MB; a bigger length
# prefix means the file is not safetensors at all (a zip .ckpt, a pickle, an HTML page).
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
# The most header WanFit parses. The check runs inside ComfyUI's /prompt validation, on the
# server's event loop, so parse time is time the whole server stands still: a 99 MB header
# (1.7 M entries) took 32 s and 1.1 GB. Real headers are small: a WAN 2.2 A14B expert's is
# about 100 KB, umt5-xxl's and the VAEs' less; the most a real file adds is trainer metadata
# in a LoRA's __metadata__ (dataset tag counts), a few MB at most. 16 MiB is over 100 times a
# model's header. A header at the cap (170,000 entries) is parsed and checked in ~3 s and
# ~150 MB on a busy 2-core machine, against 32 s and 1.1 GB for that 99 MB one.
WANFIT_MAX_HEADER_BYTES = 16 * 1024 * 1024

# Every dtype tag safetensors 0.8 knows -> bits per element (the sub-byte float formats included),
# so a tag it would refuse at load is refused here, with the file's name.
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
DOWNLOAD_HINT = "run `python -m wanfit models` to list the official files and `--download NAME` to fetch one"

# safetensors dtype tag -> (torch dtype name, bytes per element)
SAFETENSORS_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}

WAN_HEAD_DIM = 128  # ComfyUI: num_heads = dim // 128
UMT5_XXL_VOCAB = 256384
T5_XXL_VOCAB = 32128

VARIANT_TITLES = {
    "ti2v_5b": "WAN 2.2 TI2V-5B",
    "t2v_a14b": "WAN 2.2 T2V-A14B expert",
    "i2v_a14b": "WAN 2.2 I2V-A14B expert",
    "wan22_vae": "Wan 2.2 VAE (z=48, 16x16 spatial)",
    "wan21_vae": "Wan 2.1 VAE (z=16, 8x8 spatial)",
    "umt5_xxl": "umt5-xxl text encoder",
    "wan_lora": "WAN LoRA",
}

# Which VAE file each diffusion variant needs (file names from the manifest).
VAE_FOR_MODEL = {"ti2v_5b": "wan22_vae", "t2v_a14b": "wan21_vae", "i2v_a14b": "wan21_vae"}
VAE_FILE_FOR_VARIANT = {"wan22_vae": "wan2.2_vae.safetensors", "wan21_vae": "wan_2.1_vae.safetensors"}
EXPERT_FILES = {
    "t2v_a14b": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    "i2v_a14b": ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"),
}


class ModelFileError(WanFitError):
    """The file is missing, empty, truncated or not safetensors: nothing could be read from it."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(message)


class ModelMismatchError(WanFitError):
    """The file is readable but is the wrong model for this slot (wrong kind, variant, VAE or pair)."""

    def __init__(self, message, paths=()):
        self.paths = [str(p) for p in paths]
        super().__init__(message)


class MissingModelError(ModelFileError):
    """A model the workflow needs is not in the ComfyUI models folder."""

    def __init__(self, path, message, folder, url):
        self.folder = folder
        self.url = url
        super().__init__(path, message)


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors tag, e.g. "F16", "F8_E4M3"
    shape: tuple
    data_offsets: tuple  # (begin, end) relative to the end of the header

    @property
    def numel(self):
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    path: str
    file_size_bytes: int
    header_size_bytes: int
    tensors: dict  # name -> TensorEntry
    metadata: dict


@dataclass
class WanDims:
    dim: int = None
    layers: int = None
    in_dim: int = None
    out_dim: int = None
    ffn_dim: int = None
    heads: int = None
    z_dim: int = None  # VAEs only
    lora_rank: int = None  # LoRAs only

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ModelInfo:
    """What a file is, from its header: enough for the loaders and the planner to decide."""

    path: str
    kind: str  # diffusion_model | vae | text_encoder | lora | unknown
    variant: str  # ti2v_5b | t2v_a14b | i2v_a14b | wan22_vae | wan21_vae | umt5_xxl | wan_lora | unsupported | unknown
    looks_like: str  # one phrase for messages: "a WAN 2.2 I2V-A14B expert", "a Stable Diffusion UNet checkpoint"
    dims: WanDims = field(default_factory=WanDims)
    dtype_param_counts: dict = field(default_factory=dict)  # torch dtype name -> parameters stored in it
    weight_dtype: str = None  # dominant dtype by parameter count (comfy.utils.weight_dtype)
    fp8_scaled: bool = False  # ComfyUI "scaled_fp8" marker key present
    scaled_fp8_dtype: str = None  # what ComfyUI would set model_config.scaled_fp8 to
    has_scale_weight_keys: bool = False
    parameter_count: int = 0
    key_prefix: str = ""
    size_class: str = None  # "5B" | "14B" | "1.3B" | "tiny" | "other"
    tensor_bytes: int = 0
    notes: list = field(default_factory=list)

    @property
    def dtypes(self):
        return sorted(self.dtype_param_counts, key=self.dtype_param_counts.get, reverse=True)

    @property
    def precision_label(self):
        if self.fp8_scaled:
            return "fp8 scaled"
        return self.weight_dtype

    @property
    def title(self):
        return VARIANT_TITLES.get(self.variant, self.looks_like)

    def as_dict(self):
        return {
            "path": self.path, "kind": self.kind, "variant": self.variant, "looks_like": self.looks_like,
            "dims": self.dims.as_dict(), "dtype_param_counts": dict(self.dtype_param_counts),
            "weight_dtype": self.weight_dtype, "fp8_scaled": self.fp8_scaled,
            "scaled_fp8_dtype": self.scaled_fp8_dtype, "parameter_count": self.parameter_count,
            "key_prefix": self.key_prefix, "size_class": self.size_class, "tensor_bytes": self.tensor_bytes,
            "notes": list(self.notes),
        }


@dataclass
class ExpertPair:
    high: ModelInfo
    low: ModelInfo
    task: str  # t2v_a14b | i2v_a14b
    roles: str  # human sentence saying which file is which and why we think so


# ---------------------------------------------------------------------------------------------
# Header reading


def read_safetensors_header(path):
    """Read the 8-byte length and the JSON header only, so a 28 GB file is checked in microseconds.

    Also proves the file is complete and consistent the way safetensors will when it loads it
    (tensors packed back to back from offset 0, sizes matching dtype x shape, no bytes after the
    last tensor), so a damaged file is refused here with its name rather than later with a
    SafetensorError that names no file. Reads at most WANFIT_MAX_HEADER_BYTES and never opens
    anything but a regular file (a FIFO would block the server on open).
    """
    path = Path(path)
    try:
        file_stat = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise not_a_regular_file_error(path) from None
        raise ModelFileError(path, f"Model file not found: {path}. Expected a .safetensors file at that path. "
                                   f"Fix: check the file name and folder, or {DOWNLOAD_HINT}.") from None
    except OSError as error:
        raise ModelFileError(path, f"Cannot read model file {path}: {error.strerror or error}. Fix: check that "
                                   f"the file and its folder are readable by the user running ComfyUI.") from None
    if stat.S_ISDIR(file_stat.st_mode):
        raise ModelFileError(path, f"{path} is a folder, not a model file. Expected a .safetensors file. "
                                   f"Fix: pick the .safetensors file inside it.")
    if not stat.S_ISREG(file_stat.st_mode):
        raise not_a_regular_file_error(path)
    file_size_bytes = file_stat.st_size
    if file_size_bytes == 0:
        raise ModelFileError(path, f"Model file is empty (0 bytes): {path}. Expected a safetensors file of "
                                   f"hundreds of MB to tens of GB; an empty file is usually a failed download or "
                                   f"copy. Fix: delete it and download it again ({DOWNLOAD_HINT}).")
    with _open_regular_file(path) as handle:
        prefix = handle.read(SAFETENSORS_LENGTH_PREFIX_BYTES)
        if len(prefix) < SAFETENSORS_LENGTH_PREFIX_BYTES:
            raise ModelFileError(path, _not_safetensors_message(path, prefix, f"only {file_size_bytes} bytes long"))
        (header_size_bytes,) = struct.unpack("<Q", prefix)
        first_header_byte = handle.read(1)
        handle.seek(SAFETENSORS_LENGTH_PREFIX_BYTES)
        # A real header is a JSON object; checking its first byte tells a zip/pickle/HTML file
        # (whose first 8 bytes read as a plausible length) from a truncated safetensors file.
        if header_size_bytes == 0 or header_size_bytes > SAFETENSORS_MAX_HEADER_BYTES or \
                first_header_byte not in (b"{", b""):
            raise ModelFileError(path, _not_safetensors_message(path, prefix, "its first 8 bytes are not a "
                                                                              "safetensors header length"))
        if header_size_bytes > WANFIT_MAX_HEADER_BYTES:
            raise ModelFileError(path, (
                f"Safetensors header too large: {path} declares a {header_size_bytes / 2**20:.1f} MiB header, and "
                f"WanFit reads at most {WANFIT_MAX_HEADER_BYTES // 2**20} MiB (a WAN 2.2 model's header is about "
                f"100 KB), so it did not read it. This is not a WAN 2.2 model file, or it is damaged. Fix: pick the "
                f"right file, or delete it and download it again ({DOWNLOAD_HINT})."))
        if SAFETENSORS_LENGTH_PREFIX_BYTES + header_size_bytes > file_size_bytes:
            raise ModelFileError(path, _truncated_message(path, file_size_bytes,
                                                          SAFETENSORS_LENGTH_PREFIX_BYTES + header_size_bytes,
                                                          "the header alone"))
        raw_header = handle.read(header_size_bytes)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        reason = "it is nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ModelFileError(path, _not_safetensors_message(path, prefix, f"its header is not valid safetensors "
                                                                          f"JSON ({reason})")) from None
    if not isinstance(header, dict):
        raise ModelFileError(path, _not_safetensors_message(path, prefix, "its header is not valid safetensors "
                                                                          "JSON (header is not a JSON object)"))
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(path, _invalid_header_message(path, "its __metadata__ is not a map of strings"))
    tensors = {name: _tensor_entry(path, name, entry) for name, entry in header.items()}
    data_end_bytes = _check_data_layout(path, tensors)
    expected_size_bytes = SAFETENSORS_LENGTH_PREFIX_BYTES + header_size_bytes + data_end_bytes
    if expected_size_bytes > file_size_bytes:
        raise ModelFileError(path, _truncated_message(path, file_size_bytes, expected_size_bytes, "its tensors"))
    if expected_size_bytes < file_size_bytes:
        raise ModelFileError(path, _invalid_header_message(
            path, f"it has {file_size_bytes - expected_size_bytes} bytes after the last tensor's data: the file is "
                  f"{file_size_bytes} bytes but its header accounts for {expected_size_bytes}; safetensors refuses "
                  f"such a file at load"))
    return SafetensorsHeader(str(path), file_size_bytes, header_size_bytes, tensors, metadata)


def _open_regular_file(path):
    """Open for reading without blocking (a FIFO swapped in after the stat would block a plain open),
    then check again on the open file that it is a regular one."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise ModelFileError(path, f"Cannot read model file {path}: {error.strerror or error}. Fix: check that "
                                   f"the file and its folder are readable by the user running ComfyUI.") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise not_a_regular_file_error(path)
    return os.fdopen(descriptor, "rb")


def _is_shape(value):
    return type(value) is list and set(map(type, value)) <= {int} and min(value, default=0) >= 0


def _tensor_entry(path, name, entry):
    """One header entry, checked for the types safetensors requires (type(x) is int: JSON true is no count).

    Written for speed: a header at the size cap holds some 300,000 entries, checked on the event loop."""
    if type(entry) is not dict:
        raise ModelFileError(path, _invalid_header_message(path, f"tensor {_short(name)} is described by "
                                                                 f"{type(entry).__name__}, not an object"))
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if type(dtype) is not str or dtype not in SAFETENSORS_DTYPE_BITS:
        raise ModelFileError(path, _invalid_header_message(
            path, f"tensor {_short(name)} has dtype {_short(dtype)}, which safetensors does not know "
                  f"(it knows {', '.join(SAFETENSORS_DTYPE_BITS)})"))
    if not _is_shape(shape):
        raise ModelFileError(path, _invalid_header_message(
            path, f"tensor {_short(name)} has shape {_short(shape)}, not a list of whole numbers >= 0"))
    if not (_is_shape(offsets) and len(offsets) == 2):
        raise ModelFileError(path, _invalid_header_message(
            path, f"tensor {_short(name)} has data_offsets {_short(offsets)}, not [begin, end] in bytes"))
    return TensorEntry(dtype, tuple(shape), tuple(offsets))


def _check_data_layout(path, tensors):
    """safetensors' own rule: sorted by offset, the tensors tile the data region from byte 0 with no
    gap or overlap, and each spans exactly dtype bits x elements. Returns where the data ends."""
    data_end_bytes = 0
    for name, entry in sorted(tensors.items(), key=lambda item: item[1].data_offsets):
        begin, end = entry.data_offsets
        if end < begin:
            raise ModelFileError(path, _invalid_header_message(
                path, f"tensor {_short(name)} runs backwards (data_offsets [{begin}, {end}])"))
        if begin != data_end_bytes:
            where = "overlaps the tensor before it" if begin < data_end_bytes else "leaves a gap before it"
            raise ModelFileError(path, _invalid_header_message(
                path, f"tensor {_short(name)} starts at byte {begin} of the data but the tensors before it end at "
                      f"byte {data_end_bytes}: it {where}"))
        bits = entry.numel * SAFETENSORS_DTYPE_BITS[entry.dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise ModelFileError(path, _invalid_header_message(
                path, f"tensor {_short(name)} ({entry.dtype} {list(entry.shape)}) needs {bits / 8:g} bytes but its "
                      f"data_offsets [{begin}, {end}] span {end - begin}"))
        data_end_bytes = end
    return data_end_bytes


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _invalid_header_message(path, reason):
    return (f"Damaged safetensors file: {path} ({reason}). ComfyUI would fail on it only when loading, with an "
            f"error that does not name the file. Fix: delete it and download it again ({DOWNLOAD_HINT}); if a "
            f"tool wrote it, save or convert it again.")


def describe_special_file(path):
    """What a path that is not a regular file is, found with stat alone (never by opening it): 'a FIFO
    (named pipe)', 'a symbolic link to /dev/zero, a character device', ... or None for a regular file."""
    path = Path(path)
    try:
        link_stat = os.lstat(path)
    except OSError:
        return None
    link = ""
    if stat.S_ISLNK(link_stat.st_mode):
        target = os.readlink(path)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return f"a symbolic link to {target}, which does not exist"
        link = f"a symbolic link to {target}, which is "
    else:
        mode = link_stat.st_mode
    for test, kind in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return None if kind is None else link + kind
    return link + "not a regular file"


def special_file_in(folders, name):
    """The first folder/name that exists but is no regular file, or None. ComfyUI's get_full_path skips
    such entries (a FIFO, a link to /dev/zero, a dangling link) although its file list shows them, so
    without this they read as 'missing'. Only stat is used: opening a FIFO would block."""
    relative = os.path.relpath(os.path.join(os.sep, name), os.sep)  # as folder_paths does: stays inside
    for folder in folders:
        candidate = os.path.join(folder, relative)
        if os.path.lexists(candidate) and describe_special_file(candidate):
            return candidate
    return None


def not_a_regular_file_error(path):
    what = describe_special_file(path) or "not a regular file"
    return ModelFileError(path, f"Not a model file: {path} is {what}. A model must be a regular .safetensors file "
                                f"(or a symbolic link to one); WanFit does not read devices, pipes or sockets. "
                                f"Fix: replace it with the model file itself ({DOWNLOAD_HINT}).")


def _truncated_message(path, actual_bytes, expected_bytes, what):
    return (f"Model file is truncated: {path} is {actual_bytes} bytes but {what} need {expected_bytes} bytes "
            f"({actual_bytes / max(expected_bytes, 1):.0%} present). This is an interrupted download or copy. "
            f"Fix: delete it and download it again; `python -m wanfit models --download NAME` resumes and "
            f"verifies downloads.")


def _not_safetensors_message(path, prefix, reason):
    if prefix.startswith(b"PK"):
        looks = "a zip archive (a PyTorch .ckpt/.pt/.pth checkpoint)"
    elif prefix[:1] == b"\x80":
        looks = "a Python pickle (a PyTorch .ckpt/.pt/.pth checkpoint)"
    elif prefix.lstrip()[:1] == b"<":
        looks = "an HTML/XML page (often a login or error page saved instead of the model)"
    elif prefix.startswith(b"GGUF"):
        looks = "a GGUF file (needs the ComfyUI-GGUF loader, not WanFit's loaders)"
    else:
        looks = "not a safetensors file"
    return (f"Not a safetensors file: {path} ({reason}; it looks like {looks}). Expected a .safetensors model "
            f"file. Fix: download the .safetensors version of the model ({DOWNLOAD_HINT}).")


# ---------------------------------------------------------------------------------------------
# Detection


def _find_prefix(tensors, marker):
    """The key prefix in front of `marker` ('' or 'model.diffusion_model.' ...), or None if absent."""
    if marker in tensors:
        return ""
    for name in tensors:
        if name.endswith("." + marker):
            return name[: -len(marker)]
    return None


def _count_blocks(tensors, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for name in tensors for m in [pattern.match(name)] if m}
    return max(indices) + 1 if indices else 0


def _size_class(dim):
    if dim is None:
        return None
    if dim <= 512:
        return "tiny"
    return {1536: "1.3B", 3072: "5B", 5120: "14B"}.get(dim, "other")


def _dtype_summary(tensors):
    counts = {}
    tensor_bytes = 0
    for entry in tensors.values():
        name = SAFETENSORS_DTYPES.get(entry.dtype, (entry.dtype.lower(), 1))[0]
        counts[name] = counts.get(name, 0) + entry.numel
        tensor_bytes += entry.data_offsets[1] - entry.data_offsets[0]
    return counts, tensor_bytes


# (key fragment, what the file looks like) for files that are not WAN 2.2 at all.
FOREIGN_FINGERPRINTS = (
    ("input_blocks.", "a Stable Diffusion 1.x/2.x/SDXL UNet checkpoint (input_blocks/middle_block/output_blocks keys)"),
    ("double_blocks.", "a Flux / HunyuanVideo diffusion model (double_blocks keys)"),
    ("joint_blocks.", "a Stable Diffusion 3 MMDiT (joint_blocks keys)"),
    ("transformer_blocks.", "a diffusers-format transformer (transformer_blocks keys), not a ComfyUI single file"),
    ("text_model.encoder.layers.", "a CLIP text encoder"),
    ("vision_model.encoder.layers.", "a CLIP vision encoder"),
    ("encoder.down.0.", "a Stable Diffusion / Flux image VAE (encoder.down keys)"),
    ("model.layers.0.", "an LLM text encoder (Llama/Qwen/Gemma keys)"),
)


def detect_variant(path_or_header):
    """Classify a file by key names and shapes, the way ComfyUI does, without reading tensor data.

    Detection is by keys and channel counts (in_dim/out_dim/z_dim), never by size, so the tiny
    dim-128 test fixtures detect exactly like the 14B originals; size_class reports the size.
    """
    header = path_or_header if isinstance(path_or_header, SafetensorsHeader) else read_safetensors_header(path_or_header)
    tensors = header.tensors
    counts, tensor_bytes = _dtype_summary(tensors)
    info = ModelInfo(path=header.path, kind="unknown", variant="unknown", looks_like="an unrecognised model file",
                     dtype_param_counts=counts, tensor_bytes=tensor_bytes,
                     parameter_count=sum(e.numel for e in tensors.values()))
    if counts:
        info.weight_dtype = max(counts, key=counts.get)
    scaled_key = next((n for n in tensors if n == "scaled_fp8" or n.endswith(".scaled_fp8")), None)
    if scaled_key is not None:
        info.fp8_scaled = True
        marker_dtype = SAFETENSORS_DTYPES.get(tensors[scaled_key].dtype, (tensors[scaled_key].dtype,))[0]
        # ComfyUI: a float32 marker means e4m3fn; otherwise the marker's own dtype.
        info.scaled_fp8_dtype = "float8_e4m3fn" if marker_dtype == "float32" else marker_dtype
    info.has_scale_weight_keys = any(n.endswith("scale_weight") for n in tensors)

    if not tensors:
        info.looks_like = "an empty safetensors file (no tensors)"
        return info
    for detector in (_detect_diffusion_model, _detect_vae, _detect_text_encoder, _detect_lora):
        if detector(tensors, info):
            return info
    for fragment, looks_like in FOREIGN_FINGERPRINTS:
        if any(fragment in name for name in tensors):
            info.looks_like = looks_like
            break
    return info


def _detect_diffusion_model(tensors, info):
    prefix = _find_prefix(tensors, "head.modulation")
    if prefix is None or prefix + "patch_embedding.weight" not in tensors:
        return False
    info.kind = "diffusion_model"
    info.key_prefix = prefix
    dim = tensors[prefix + "head.modulation"].shape[-1]
    ffn_key = prefix + "blocks.0.ffn.0.weight"
    info.dims = WanDims(
        dim=dim, heads=dim // WAN_HEAD_DIM,
        out_dim=tensors[prefix + "head.head.weight"].shape[0] // 4 if prefix + "head.head.weight" in tensors else None,
        in_dim=tensors[prefix + "patch_embedding.weight"].shape[1],
        ffn_dim=tensors[ffn_key].shape[0] if ffn_key in tensors else None,
        layers=_count_blocks(tensors, prefix + "blocks."),
    )
    info.size_class = _size_class(dim)
    has = lambda key: prefix + key in tensors  # noqa: E731
    special = (("vace_patch_embedding.weight", "a WAN VACE model"),
               ("control_adapter.conv.weight", "a WAN Fun camera-control model"),
               ("casual_audio_encoder.encoder.final_linear.weight", "a WAN 2.2 S2V (speech-to-video) model"),
               ("audio_proj.audio_proj_glob_1.layer.bias", "a HuMo model"),
               ("face_adapter.fuser_blocks.0.k_norm.weight", "a WAN 2.2 Animate model"))
    for key, looks_like in special:
        if has(key):
            info.variant, info.looks_like = "unsupported", looks_like
            return True
    if has("img_emb.proj.0.bias"):
        # Wan 2.1 I2V/FLF2V carry a CLIP-vision image embedding; the WAN 2.2 A14B I2V experts do not.
        info.variant = "unsupported"
        info.looks_like = ("a Wan 2.1 image-to-video model (it has img_emb CLIP-vision keys; WAN 2.2 A14B I2V "
                           "experts have none)")
        return True
    in_dim, out_dim = info.dims.in_dim, info.dims.out_dim
    if out_dim == 48 or in_dim == 48:
        info.variant = "ti2v_5b"
    elif in_dim == 16:
        info.variant = "t2v_a14b"
    elif in_dim == 36:
        info.variant = "i2v_a14b"
    else:
        info.variant = "unsupported"
        info.looks_like = f"a WAN-family diffusion model with in_dim {in_dim}, which no WAN 2.2 variant uses"
        return True
    info.looks_like = "a " + VARIANT_TITLES[info.variant]
    if info.variant != "ti2v_5b" and info.size_class == "1.3B":
        info.notes.append("dim 1536 is the Wan 2.1 T2V-1.3B size; a WAN 2.2 A14B expert has dim 5120")
    if info.variant == "t2v_a14b" and info.size_class == "14B":
        info.notes.append("a Wan 2.1 T2V-14B file has the same keys and shapes; only the file name tells them apart")
    return True


def _detect_vae(tensors, info):
    prefix = _find_prefix(tensors, "decoder.middle.0.residual.0.gamma")
    if prefix is None:
        return False
    info.kind = "vae"
    info.key_prefix = prefix
    # comfy/sd.py: this key exists only in the Wan 2.2 VAE's decoder.
    is_wan22 = prefix + "decoder.upsamples.0.upsamples.0.residual.2.weight" in tensors
    info.variant = "wan22_vae" if is_wan22 else "wan21_vae"
    conv2 = tensors.get(prefix + "conv2.weight")
    info.dims = WanDims(z_dim=conv2.shape[0] if conv2 is not None else (48 if is_wan22 else 16))
    info.looks_like = "the " + VARIANT_TITLES[info.variant]
    return True


def _detect_text_encoder(tensors, info):
    marker = "encoder.block.23.layer.1.DenseReluDense.wi_1.weight"
    prefix = _find_prefix(tensors, marker)
    if prefix is None:
        if _find_prefix(tensors, "encoder.block.23.layer.1.DenseReluDense.wi.weight") is not None:
            info.kind, info.variant = "text_encoder", "unsupported"
            info.looks_like = "an original T5 v1.0 XXL text encoder (Cosmos)"
            return True
        return False
    info.kind = "text_encoder"
    info.key_prefix = prefix
    d_model = tensors[prefix + marker].shape[-1]
    shared = tensors.get(prefix + "shared.weight")
    vocab = shared.shape[0] if shared is not None else None
    info.dims = WanDims(dim=d_model, layers=_count_blocks(tensors, prefix + "encoder.block."))
    # umt5 keeps a relative-attention bias in every block (comfy/text_encoders/t5.py); T5 only in block 0.
    per_block_bias = prefix + "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in tensors
    if d_model == 4096 and (per_block_bias or vocab == UMT5_XXL_VOCAB):
        info.variant, info.looks_like = "umt5_xxl", "the umt5-xxl text encoder"
    elif d_model == 4096:
        info.variant = "unsupported"
        info.looks_like = f"a T5-XXL text encoder (Flux/SD3/LTXV; vocab {vocab or 'unknown'}), not umt5-xxl"
    else:
        info.variant = "unsupported"
        info.looks_like = f"a T5-family text encoder with width {d_model} (not umt5-xxl, which is 4096)"
    return True


LORA_KEY_FRAGMENTS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")


def _detect_lora(tensors, info):
    lora_keys = [n for n in tensors if any(f in n for f in LORA_KEY_FRAGMENTS)]
    if not lora_keys:
        return False
    info.kind = "lora"
    down = next((n for n in lora_keys if ("lora_down" in n or "lora_A" in n or "lora.down" in n)
                 and len(tensors[n].shape) == 2), None)
    if down is not None:
        rank, in_features = tensors[down].shape
        info.dims = WanDims(dim=in_features, lora_rank=rank)
        info.size_class = _size_class(in_features)
    wan_like = any(re.search(r"blocks[._]\d+[._](self_attn|cross_attn|ffn)", n) for n in lora_keys)
    info.variant = "wan_lora" if wan_like else "unknown"
    info.looks_like = "a WAN LoRA" if wan_like else "a LoRA for a non-WAN model"
    return True


# ---------------------------------------------------------------------------------------------
# Checks used by the loader nodes


def check_diffusion_model(path, expected_variant=None):
    """The node's gate before comfy.sd.load_diffusion_model: refuse anything that is not WAN 2.2."""
    info = detect_variant(path)
    wan22 = ("ti2v_5b", "t2v_a14b", "i2v_a14b")
    if info.kind != "diffusion_model" or info.variant not in wan22:
        raise ModelMismatchError(
            f"Not a WAN 2.2 model: {path} looks like {info.looks_like}. Expected a WAN 2.2 diffusion model "
            f"(TI2V-5B, or a T2V-A14B / I2V-A14B high- or low-noise expert) in models/diffusion_models, e.g. "
            f"wan2.2_ti2v_5B_fp16.safetensors. Fix: pick a WAN 2.2 diffusion model file; {DOWNLOAD_HINT}.",
            [path])
    if expected_variant is not None and info.variant != expected_variant:
        raise ModelMismatchError(
            f"Wrong WAN 2.2 model: {path} is {info.looks_like} ({info.variant}), but this slot expects "
            f"{_article(VARIANT_TITLES.get(expected_variant, expected_variant))} ({expected_variant}). "
            f"Fix: {_variant_fix(expected_variant)}", [path])
    return info


def check_expert_pair(high_path, low_path):
    """Both A14B experts must be the same task and architecture, two different files, in the right slots."""
    if _same_file(high_path, low_path):
        raise ModelMismatchError(
            f"The same file was given as both A14B experts: high-noise = {high_path}, low-noise = {low_path}. "
            f"A14B needs two different files: the high-noise expert (…_high_noise_14B…) for the early steps "
            f"and the low-noise expert (…_low_noise_14B…) for the late steps. Fix: set the low-noise input to "
            f"the matching low-noise file, e.g. {EXPERT_FILES['t2v_a14b'][1]} or {EXPERT_FILES['i2v_a14b'][1]}.",
            [high_path, low_path])
    infos = {}
    for slot, path in (("high-noise", high_path), ("low-noise", low_path)):
        info = check_diffusion_model(path)
        if info.variant == "ti2v_5b":
            raise ModelMismatchError(
                f"TI2V-5B is a single model, not an A14B expert: {path} was given as the {slot} expert. "
                f"Fix: load it with WanFit Load Diffusion Model, or give this node a T2V-A14B or I2V-A14B "
                f"high-noise/low-noise pair.", [high_path, low_path])
        infos[slot] = info
    high, low = infos["high-noise"], infos["low-noise"]
    if high.variant != low.variant:
        fix_files = EXPERT_FILES[high.variant]
        raise ModelMismatchError(
            f"The A14B experts are for different tasks: high-noise {high_path} is {high.looks_like} "
            f"(in_dim {high.dims.in_dim}), low-noise {low_path} is {low.looks_like} (in_dim {low.dims.in_dim}). "
            f"Both experts must be T2V, or both I2V. Fix: for {VARIANT_TITLES[high.variant]}s use "
            f"{fix_files[0]} with {fix_files[1]}.", [high_path, low_path])
    if high.dims.as_dict() != low.dims.as_dict():
        raise ModelMismatchError(
            f"The A14B experts have different architectures: high-noise {high_path} has {high.dims.as_dict()}, "
            f"low-noise {low_path} has {low.dims.as_dict()}. Fix: use the high- and low-noise files of the same "
            f"release, e.g. {EXPERT_FILES[high.variant][0]} with {EXPERT_FILES[high.variant][1]}.",
            [high_path, low_path])
    high_hint, low_hint = noise_level_hint(high_path), noise_level_hint(low_path)
    if high_hint == "low" or low_hint == "high":
        raise ModelMismatchError(
            f"The A14B experts look swapped: the high-noise input is {high_path} (name says "
            f"{high_hint or 'nothing'}-noise) and the low-noise input is {low_path} (name says "
            f"{low_hint or 'nothing'}-noise). Fix: put the …high_noise… file in high_noise_model and the "
            f"…low_noise… file in low_noise_model.", [high_path, low_path])
    roles = (f"high-noise expert: {Path(high_path).name} ("
             + ("file name says high-noise" if high_hint else "no high/low hint in the name; trusted by slot")
             + f"); low-noise expert: {Path(low_path).name} ("
             + ("file name says low-noise" if low_hint else "no high/low hint in the name; trusted by slot") + ")")
    return ExpertPair(high=high, low=low, task=high.variant, roles=roles)


def noise_level_hint(path):
    """'high' / 'low' when the file name says which expert it is, else None."""
    name = Path(path).name.lower()
    found = set(re.findall(r"(?<![a-z])(high|low)(?=[_\-. ]?noise|[_\-.]|$)", name))
    return found.pop() if len(found) == 1 else None


def check_vae_for_model(vae_path, model_variant, model_path=None):
    """TI2V-5B decodes 48-channel latents (Wan 2.2 VAE), A14B 16-channel ones (Wan 2.1 VAE)."""
    if isinstance(model_variant, ModelInfo):
        model_path = model_path or model_variant.path
        model_variant = model_variant.variant
    if model_variant not in VAE_FOR_MODEL:
        raise ModelMismatchError(f"Unknown WAN 2.2 model variant {model_variant!r} for the VAE check. Expected one "
                                 f"of {sorted(VAE_FOR_MODEL)}. Fix: pass the variant detect_variant() reported.",
                                 [vae_path])
    info = detect_variant(vae_path)
    wanted = VAE_FOR_MODEL[model_variant]
    model_label = f"{model_path} ({VARIANT_TITLES[model_variant]})" if model_path else VARIANT_TITLES[model_variant]
    if info.kind != "vae":
        raise ModelMismatchError(
            f"Not a WAN VAE: {vae_path} looks like {info.looks_like}. The model {model_label} needs the "
            f"{VARIANT_TITLES[wanted]}. Fix: load {VAE_FILE_FOR_VARIANT[wanted]} from models/vae "
            f"({_url_phrase(VAE_FILE_FOR_VARIANT[wanted])}).", [vae_path])
    if info.variant != wanted:
        raise ModelMismatchError(
            f"Wrong VAE for this model: {vae_path} is the {VARIANT_TITLES[info.variant]}, but the model "
            f"{model_label} needs the {VARIANT_TITLES[wanted]}. Fix: load {VAE_FILE_FOR_VARIANT[wanted]} from "
            f"models/vae instead ({_url_phrase(VAE_FILE_FOR_VARIANT[wanted])}).",
            [vae_path] + ([model_path] if model_path else []))
    return info


def check_text_encoder(path):
    """WAN conditions on umt5-xxl (4096 wide, 256384 tokens); a Flux T5-XXL or CLIP gives garbage or fails late."""
    info = detect_variant(path)
    if info.kind != "text_encoder" or info.variant != "umt5_xxl":
        raise ModelMismatchError(
            f"Not the umt5-xxl text encoder: {path} looks like {info.looks_like}. WAN 2.2 needs umt5-xxl in "
            f"models/text_encoders. Fix: load umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16.safetensors) "
            f"instead ({_url_phrase('umt5_xxl_fp8_e4m3fn_scaled.safetensors')}).", [path])
    return info


def _same_file(path_a, path_b):
    try:
        return os.path.samefile(path_a, path_b)
    except OSError:
        return os.path.realpath(path_a) == os.path.realpath(path_b)


def _article(text):
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def _variant_fix(variant):
    if variant == "ti2v_5b":
        return "load wan2.2_ti2v_5B_fp16.safetensors from models/diffusion_models."
    if variant in EXPERT_FILES:
        return f"load {EXPERT_FILES[variant][0]} / {EXPERT_FILES[variant][1]} from models/diffusion_models."
    return DOWNLOAD_HINT + "."


# ---------------------------------------------------------------------------------------------
# Manifest


_manifest_cache = None


def load_manifest(path=None):
    """The official files as data (manifest.json), so URLs and checksums change without code changes."""
    global _manifest_cache
    if path is not None:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    if _manifest_cache is None:
        _manifest_cache = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    return _manifest_cache


def manifest_entry(filename, manifest=None):
    manifest = manifest or load_manifest()
    return next((f for f in manifest["files"] if f["filename"] == filename or f["id"] == filename), None)


def _url_phrase(filename):
    entry = manifest_entry(filename)
    if entry and entry.get("url"):
        return f"download: {entry['url']}"
    return DOWNLOAD_HINT


def missing_model_error(name, folder, models_dir=None):
    """The error a loader raises when a selected file is absent: where it belongs and where to get it."""
    entry = manifest_entry(name)
    folder = folder or (entry or {}).get("folder", "diffusion_models")
    where = Path(models_dir) / folder if models_dir else Path("ComfyUI") / "models" / folder
    if entry and entry.get("url"):
        source = f"Download it from {entry['url']} into {where}, or run `python -m wanfit models --download {name}`."
        url = entry["url"]
    elif entry:
        source = f"No download URL is recorded for it in WanFit's manifest; copy it into {where}."
        url = None
    else:
        source = f"It is not one of the official WAN 2.2 files WanFit knows; copy it into {where}."
        url = None
    message = (f"Model file missing: {name} is not in {where}. Expected it in the ComfyUI models folder "
               f"'{folder}' (or a subfolder). Fix: {source} Then refresh the browser (press R) so the loader lists it.")
    return MissingModelError(where / name, message, folder=folder, url=url)


# ComfyUI-Manager's model-list.json entry fields (stable since 2023: name, type, base, save_path,
# description, reference, filename, url; newer entries add size as a "14.3GB" string).
MANAGER_TYPES = {"diffusion_models": "diffusion_model", "text_encoders": "clip", "vae": "VAE", "loras": "lora"}


def manager_model_list(manifest=None):
    """The manifest in ComfyUI-Manager's model-list.json format, for its 'Install Models' dialog."""
    manifest = manifest or load_manifest()
    models = []
    for entry in manifest["files"]:
        if not entry.get("url"):
            continue
        item = {
            "name": entry["title"],
            "type": MANAGER_TYPES.get(entry["folder"], entry["folder"]),
            "base": "Wan2.2" if "2.1" not in entry["filename"] else "Wan2.1",
            "save_path": entry["folder"],
            "description": entry["description"],
            "reference": entry.get("reference") or entry["url"].split("/resolve/")[0],
            "filename": entry["filename"],
            "url": entry["url"],
        }
        if entry.get("approx_size_gb"):
            item["size"] = f"{entry['approx_size_gb']}GB"
        models.append(item)
    return {"models": models}
