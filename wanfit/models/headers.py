"""Safetensors headers, read and checked without reading a tensor, and paths that are no regular file.

A 28 GB file is checked in microseconds: the 8-byte length, the JSON header, and the layout rule
safetensors itself applies at load, so a damaged file is refused here with its name.
"""

from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import stat
import struct

from .errors import DOWNLOAD_HINT, ModelFileError

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


@dataclass(frozen=True)
class SafetensorsDtype:
    name: str  # torch's name where WanFit reports one ("float8_e4m3fn"), else the tag in lower case
    bits: int  # per element; the sub-byte float formats pack several elements a byte


def _dtypes(table):
    return {tag: SafetensorsDtype(name or tag.lower(), bits) for tag, (name, bits) in table.items()}


# Every dtype tag safetensors 0.8 knows, so a tag it would refuse at load is refused here, with the file's name.
SAFETENSORS_DTYPES = _dtypes({
    "F64": ("float64", 64), "F32": ("float32", 32), "F16": ("float16", 16), "BF16": ("bfloat16", 16),
    "F8_E4M3": ("float8_e4m3fn", 8), "F8_E5M2": ("float8_e5m2", 8), "F8_E8M0": (None, 8),
    "F8_E4M3FNUZ": (None, 8), "F8_E5M2FNUZ": (None, 8), "F6_E2M3": (None, 6), "F6_E3M2": (None, 6), "F4": (None, 4),
    "I64": ("int64", 64), "I32": ("int32", 32), "I16": ("int16", 16), "I8": ("int8", 8), "U8": ("uint8", 8),
    "U16": (None, 16), "U32": (None, 32), "U64": (None, 64), "C64": (None, 64), "BOOL": ("bool", 8),
})


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
    if type(dtype) is not str or dtype not in SAFETENSORS_DTYPES:
        raise ModelFileError(path, _invalid_header_message(
            path, f"tensor {_short(name)} has dtype {_short(dtype)}, which safetensors does not know "
                  f"(it knows {', '.join(SAFETENSORS_DTYPES)})"))
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
        bits = entry.numel * SAFETENSORS_DTYPES[entry.dtype].bits
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
