"""Safetensors files with the real WAN 2.2 key layout and shapes but sparse zero data.

Only the header is real, so even 14B-shaped files cost nothing on disk; used by the unit tests of
header detection and by the host tests that feed bad files to the loaders.
"""

import json
from pathlib import Path
import re
import struct

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U8": 1, "I8": 1}


def write_safetensors(path, tensors, metadata=None, drop_tail_bytes=0):
    """Write a valid safetensors file whose data region is a sparse run of zeros."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for extent in shape:
            size *= extent
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset - drop_tail_bytes)
    return path


def wan_dit(in_dim, out_dim, dim=128, ffn_dim=256, layers=2, prefix="", dtype="F16", fp8_scaled=False,
            img_emb=False, all_linears=False):
    """all_linears: every block linear a real WAN DiT has (q, k, v, o of self and cross attention), not only q."""
    weight = "F8_E4M3" if fp8_scaled else dtype
    t = {"patch_embedding.weight": (weight, (dim, in_dim, 1, 2, 2)), "patch_embedding.bias": (dtype, (dim,)),
         "text_embedding.0.weight": (weight, (dim, 4096)), "time_embedding.0.weight": (weight, (dim, 256)),
         "head.modulation": ("F32", (1, 2, dim)), "head.head.weight": (weight, (out_dim * 4, dim))}
    for i in range(layers):
        t[f"blocks.{i}.self_attn.q.weight"] = (weight, (dim, dim))
        if all_linears:
            for name in ("self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k", "cross_attn.v",
                         "cross_attn.o"):
                t[f"blocks.{i}.{name}.weight"] = (weight, (dim, dim))
        t[f"blocks.{i}.ffn.0.weight"] = (weight, (ffn_dim, dim))
        t[f"blocks.{i}.ffn.2.weight"] = (weight, (dim, ffn_dim))
        t[f"blocks.{i}.modulation"] = ("F32", (1, 6, dim))
        if fp8_scaled:
            t[f"blocks.{i}.self_attn.q.scale_weight"] = ("F32", (1,))
    if img_emb:
        t["img_emb.proj.0.bias"] = (dtype, (1280,))
    if fp8_scaled:
        t["scaled_fp8"] = ("F8_E4M3", (0,))
    return {prefix + k: v for k, v in t.items()}


# How ComfyUI (comfy/ops.py) stores each quantized format: weight dtype, whether two values share a byte,
# and the scales, each as (dtype, shape for an out x in layer).
QUANT_STORAGE = {
    "float8_e4m3fn": ("F8_E4M3", False, {"weight_scale": ("F32", lambda o, i: ())}),
    "float8_e5m2": ("F8_E5M2", False, {"weight_scale": ("F32", lambda o, i: ())}),
    "nvfp4": ("U8", True, {"weight_scale": ("F8_E4M3", lambda o, i: (o, i // 16)),
                           "weight_scale_2": ("F32", lambda o, i: ())}),
    "mxfp8": ("F8_E4M3", False, {"weight_scale": ("F8_E8M0", lambda o, i: (o, i // 32))}),
    "int8_tensorwise": ("I8", False, {"weight_scale": ("F32", lambda o, i: ())}),
    "convrot_w4a4": ("I8", False, {"weight_scale": ("F32", lambda o, i: (o,))}),
    "asym_w4a8_int8": ("I8", True, {"weight_s_rel": ("F8_E4M3", lambda o, i: (o, i // 16))}),
}


def quantize(tensors, fmt, encoding="metadata", layers=None):
    """(tensors, metadata) with the block linears (or `layers`) stored in ComfyUI's format `fmt`.

    encoding "metadata" writes `_quantization_metadata`; "comfy_quant" one `<layer>.comfy_quant` uint8
    tensor per layer holding its JSON, as comfy/ops.py saves it."""
    weight_dtype, packed, scales = QUANT_STORAGE[fmt]
    tensors = dict(tensors)
    if layers is None:
        layers = [n[:-len(".weight")] for n in tensors
                  if re.search(r"blocks\.\d+\.((self|cross)_attn\.[qkvo]|ffn\.[02])\.weight$", n)]
    for layer in layers:
        out_features, in_features = tensors[layer + ".weight"][1]
        tensors[layer + ".weight"] = (weight_dtype, (out_features, in_features // 2 if packed else in_features))
        for suffix, (dtype, shape) in scales.items():
            tensors[f"{layer}.{suffix}"] = (dtype, shape(out_features, in_features))
        if encoding == "comfy_quant":
            tensors[layer + ".comfy_quant"] = ("U8", (len(json.dumps({"format": fmt})),))
    if encoding == "comfy_quant":
        return tensors, None
    quant = {"format_version": "1.0", "layers": {layer: {"format": fmt} for layer in layers}}
    return tensors, {"_quantization_metadata": json.dumps(quant)}


def wan_vae(wan22):
    z = 48 if wan22 else 16
    t = {"decoder.middle.0.residual.0.gamma": ("F16", (384, 1, 1, 1)), "conv2.weight": ("F16", (z, z, 1, 1, 1)),
         "encoder.conv1.weight": ("F16", (96, 12 if wan22 else 3, 3, 3, 3))}
    if wan22:
        t["decoder.upsamples.0.upsamples.0.residual.2.weight"] = ("F16", (1024, 1024, 3, 3, 3))
    return t


def t5_encoder(vocab=256384, per_block_bias=True, dtype="F16", fp8_scaled=False):
    t = {"shared.weight": (dtype, (vocab, 4096)), "encoder.final_layer_norm.weight": (dtype, (4096,)),
         "encoder.block.23.layer.1.DenseReluDense.wi_1.weight": ("F8_E4M3" if fp8_scaled else dtype, (10240, 4096)),
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (dtype, (32, 64))}
    if per_block_bias:
        t["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = (dtype, (32, 64))
    if fp8_scaled:
        t["scaled_fp8"] = ("F32", (0,))
    return t


def sd15_unet():
    p = "model.diffusion_model."
    return {p + "input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)), p + "middle_block.0.in_layers.0.weight": ("F16", (1280,)),
            p + "output_blocks.0.0.in_layers.0.weight": ("F16", (2560,)), p + "out.2.weight": ("F16", (4, 320, 3, 3)),
            "first_stage_model.decoder.conv_in.weight": ("F16", (512, 4, 3, 3))}


def wan_lora(dim=5120, rank=64):
    return {f"diffusion_model.blocks.0.self_attn.q.lora_down.weight": ("BF16", (rank, dim)),
            f"diffusion_model.blocks.0.self_attn.q.lora_up.weight": ("BF16", (dim, rank))}


def quantize_state_dict(state_dict, fmt, encoding="metadata", layers=None):
    """(state_dict, metadata) of a real model with its block linears (or `layers`) quantized by the running
    core's own QuantizedTensor.from_float (comfy/quant_ops.py; its CPU backend makes every format), saved
    the way comfy/ops.py saves them. Needs ComfyUI importable (tests/comfy_import.py)."""
    import torch
    import comfy.quant_ops as quant_ops

    layout = quant_ops.QUANT_ALGOS[fmt]["comfy_tensor_layout"]
    if layers is None:
        layers = [name[:-len(".weight")] for name in state_dict
                  if re.search(r"blocks\.\d+\.((self|cross)_attn\.[qkvo]|ffn\.[02])\.weight$", name)]
    result = dict(state_dict)
    for layer in layers:
        weight = result.pop(layer + ".weight")
        quantized = quant_ops.QuantizedTensor.from_float(weight.to(torch.bfloat16), layout)
        result.update(quantized.state_dict(layer + ".weight"))
        if encoding == "comfy_quant":
            result[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)
    if encoding == "comfy_quant":
        return result, None
    quant = {"format_version": "1.0", "layers": {layer: {"format": fmt} for layer in layers}}
    return result, {"_quantization_metadata": json.dumps(quant)}
