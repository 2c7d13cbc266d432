"""Tiny WAN 2.2 GGUF files, written with PyPI's `gguf` package the way ComfyUI-GGUF's tools write them.

ComfyUI-GGUF's tools/convert.py (arch "wan", from a bf16/fp32 source) keeps 1-D tensors, tensors of at
most 1024 values and every `.modulation` in F32 and stores the other weights in F16; its llama.cpp patch
then quantizes the 2-D weights (Q8_0 here); the 5-D `patch_embedding.weight` is set aside and added back
in F32 by tools/fix_5d_tensors.py, right after `patch_embedding.bias`. The tiny models are the host
tier's fixtures (tests/fixtures/generate.py), so a GGUF run can be compared with the safetensors one.

Files are cached under $WANFIT_FIXTURES_DIR/gguf-v<GGUF_FIXTURE_VERSION>/diffusion_models, outside the
repository like the other fixtures. Needs `gguf` (tests/host-requirements.txt) and numpy.
"""

import os
from pathlib import Path
import struct

from tests.fixtures.generate import default_cache_root

GGUF_FIXTURE_VERSION = 2  # bump whenever what is written changes
QUANTIZATION_THRESHOLD = 1024  # tools/convert.py: tensors this small stay F32
HIGH_PRECISION_KEYS = (".modulation",)  # ModelWan.keys_hiprec
MAX_TENSOR_DIMS = 4  # tools/convert.py: larger ones go through tools/fix_5d_tensors.py

# safetensors fixture -> GGUF name stem, as city96's files are named (<model>-<quant>.gguf)
GGUF_SOURCES = {
    "wanfit_tiny_ti2v_5B.safetensors": "wanfit_tiny_ti2v_5B",
    "wanfit_tiny_t2v_high_noise_14B.safetensors": "wanfit_tiny_t2v_high_noise_14B",
    "wanfit_tiny_t2v_low_noise_14B.safetensors": "wanfit_tiny_t2v_low_noise_14B",
}
QUANT_TYPES = ("Q8_0", "F16")


def gguf_dir(root=None):
    return Path(root or default_cache_root()) / f"gguf-v{GGUF_FIXTURE_VERSION}" / "diffusion_models"


def gguf_name(source, quant_type):
    return f"{GGUF_SOURCES[source]}-{quant_type}.gguf"


def tensor_type_for(key, shape, quant_type):
    """The GGML type tools/convert.py (then llama-quantize) gives a float32 source tensor of at most 4-D."""
    import gguf

    types = gguf.GGMLQuantizationType
    values = 1
    for extent in shape:
        values *= extent
    if len(shape) == 1 or values <= QUANTIZATION_THRESHOLD or any(k in key for k in HIGH_PRECISION_KEYS):
        return types.F32
    if quant_type == "Q8_0" and len(shape) == 2:
        return types.Q8_0
    return types.F16


def write_gguf(state_dict, path, quant_type, arch="wan"):
    """Write `state_dict` (torch tensors, WAN key names) as a GGUF file with 2-D weights in `quant_type`."""
    import gguf
    import torch

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type {quant_type!r}: expected one of {QUANT_TYPES}")
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant_type == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(file_type)
    # 5-D tensors: left out by the first pass (tools/convert.py), then added back in F32 after their bias
    # (tools/fix_5d_tensors.py, a second pass over the written file)
    set_aside = {key: tensor.detach().to(torch.float32).numpy() for key, tensor in state_dict.items()
                 if tensor.dim() > MAX_TENSOR_DIMS}
    five_d = set(set_aside)
    for key, tensor in state_dict.items():
        if key in five_d:
            continue
        data = tensor.detach().to(torch.float32).numpy()
        tensor_type = tensor_type_for(key, data.shape, quant_type)
        try:
            stored = gguf.quants.quantize(data, tensor_type)
        except (AttributeError, gguf.QuantError):
            tensor_type = gguf.GGMLQuantizationType.F16  # convert.py's fallback
            stored = gguf.quants.quantize(data, tensor_type)
        writer.add_tensor(key, stored, raw_dtype=tensor_type)
        companion = key.replace(".bias", ".weight")
        if companion in set_aside:
            writer.add_tensor(companion, set_aside.pop(companion), raw_dtype=gguf.GGMLQuantizationType.F32)
    for key, data in set_aside.items():
        writer.add_tensor(key, data, raw_dtype=gguf.GGMLQuantizationType.F32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer.write_header_to_file(path=partial)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, path)
    return path


def gguf_tensor_types(path):
    """{tensor name: GGML type name} as ComfyUI-GGUF's loader will read them."""
    import gguf

    return {tensor.name: tensor.tensor_type.name for tensor in gguf.GGUFReader(str(path)).tensors}


def ensure_gguf_fixtures(fixtures, root=None):
    """{(safetensors fixture name, quant type): GGUF path}, written from the host fixtures when missing."""
    import safetensors.torch

    paths = {}
    for source in GGUF_SOURCES:
        state_dict = None
        for quant_type in QUANT_TYPES:
            path = gguf_dir(root) / gguf_name(source, quant_type)
            if not path.exists():
                if state_dict is None:
                    state_dict = safetensors.torch.load_file(str(fixtures["diffusion_models"][source]))
                write_gguf(state_dict, path, quant_type)
            paths[source, quant_type] = path
    return paths


def gguf_header_bytes(arch="wan", tensors=(("blocks.0.ffn.0.weight", (128, 256), 8),), version=3):
    """A GGUF header written by hand (no `gguf` package): general.architecture (None: no such key) and one info
    record per (name, shape in GGUF order, GGML type number); the tensor data is left out."""
    def string(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    keys = [] if arch is None else [string("general.architecture") + struct.pack("<I", 8) + string(arch)]
    keys.append(string("general.quantization_version") + struct.pack("<II", 4, 2))
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(keys)) + b"".join(keys)
    offset = 0
    for name, shape, ggml_type in tensors:
        out += string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
        out += struct.pack("<IQ", ggml_type, offset)
        offset += 1024
    return out
