"""A tiny WAN transformer whose block linears are in one of ComfyUI's native quantized formats, on the
quantized-matmul path, built in-process with the running core's own code (0.33.0 and later).

The weights are quantized by the core's own `QuantizedTensor.from_float` and loaded through its own
`mixed_precision_ops` layer loader (the `.comfy_quant` encoding), with no format disabled: what
`comfy.ops.pick_operations` builds on a card that computes every format natively (fp8 from sm89,
nvfp4 and mxfp8 from sm100). On the CPU this is the only way to run the quantized matmul path, since
the core's `supports_*_compute` probes answer False there; comfy_kitchen's eager backend computes it.
Used by tests/host/test_lean_forward_formats.py and bench/lean_forward_formats.py.
"""

import inspect
import json

import torch

BLOCK_LINEAR = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
DIM, HEADS, LAYERS = 128, 2, 2  # the FFN is 2 * dim wide
# Formats whose layouts take inputs in multiples of 256 (their weights in groups of 256): a model this wide.
WIDE_FORMATS = {"convrot_w4a4": 256, "asym_w4a8_int8": 256}


def core_formats():
    """The quantized formats this core knows (its own QUANT_ALGOS), or () for a core without them."""
    try:
        from comfy.quant_ops import QUANT_ALGOS
    except ImportError:
        return ()
    return tuple(QUANT_ALGOS)


def _float_model(dtype, seed, dim=DIM):
    import comfy.ldm.wan.model as wan
    import comfy.ops

    model = wan.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=dim, ffn_dim=2 * dim, freq_dim=256,
                         text_dim=4096, out_dim=16, num_heads=HEADS, num_layers=LAYERS, device="cpu", dtype=dtype,
                         operations=comfy.ops.disable_weight_init)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter.shape[-1] if parameter.ndim > 1 else 1
            values = torch.randn(parameter.shape, generator=generator) / fan_in ** 0.5
            if parameter.ndim == 1:
                values = 1 + 0.1 * values
            parameter.copy_(values.to(parameter.dtype))
    return model


def quantized_state(quantized, prefix):
    """The state-dict entries of one quantized weight, as the core's own layer state_dict writes them (releases
    before comfy_kitchen, 0.3.76-0.5.x, have fp8 only and write its data and scale themselves)."""
    if hasattr(quantized, "state_dict"):
        return quantized.state_dict(prefix + "weight")
    return {prefix + "weight": quantized._qdata, prefix + "weight_scale": quantized._layout_params["scale"]}


def quantize_block_linears(state, fmt, num_layers, input_scale=False, comfy_quant=True, device=None):
    """`state` (a WAN state dict with the checkpoint's keys) with every block linear's weight replaced by the core's
    own `QuantizedTensor.from_float` of it in `fmt`, in place; returned.

    comfy_quant=True adds each layer's `.comfy_quant` entry, as the core's loader makes from a file's
    `_quantization_metadata` header, so comfy.sd loads the state dict as it would load such a file. `device`: where
    the quantizing runs (a GPU quantizes a 5B model in seconds); the entries come back to the weight's device."""
    from comfy.quant_ops import QUANT_ALGOS, QuantizedTensor

    layout = QUANT_ALGOS[fmt]["comfy_tensor_layout"]
    for index in range(num_layers):
        for name in BLOCK_LINEAR:
            prefix = f"blocks.{index}.{name}."
            weight = state.pop(prefix + "weight")
            quantized = QuantizedTensor.from_float(weight.to(device or weight.device), layout)
            state.update({key: value.to(weight.device) for key, value in quantized_state(quantized, prefix).items()})
            if comfy_quant:
                state[prefix + "comfy_quant"] = torch.tensor(list(json.dumps({"format": fmt}).encode()),
                                                             dtype=torch.uint8)
            if input_scale:
                state[prefix + "input_scale"] = torch.tensor(0.01, dtype=torch.float32)
    return state


def quantized_wan(fmt, dtype, seed=0, input_scale=False, dequantized=False):
    """The core's WanModel (dim 128, 2 blocks) with every block linear stored in `fmt`, computed in `dtype`.

    input_scale=True stores a per-layer `input_scale` as a calibrated file does (nvfp4 and fp8 take it).
    dequantized=True builds what a card without the format's compute runs: full_precision_mm, each layer
    dequantized to `dtype` by the core's own cast as it runs."""
    import comfy.ldm.wan.model as wan
    import comfy.ops

    by_layer = "layer_quant_config" in inspect.signature(comfy.ops.mixed_precision_ops).parameters  # 0.3.76
    dim = WIDE_FORMATS.get(fmt, DIM)
    state = quantize_block_linears(_float_model(dtype, seed, dim).state_dict(), fmt, LAYERS, input_scale=input_scale,
                                   comfy_quant=not by_layer)
    if by_layer:  # the layers' formats go to the ops, not into the state dict
        layers = {f"blocks.{index}.{name}": {"format": fmt} for index in range(LAYERS) for name in BLOCK_LINEAR}
        operations = comfy.ops.mixed_precision_ops(layers, dtype, full_precision_mm=dequantized)
    else:  # no format disabled (the default), or every layer dequantized
        operations = comfy.ops.mixed_precision_ops({}, dtype, full_precision_mm=dequantized)
    model = wan.WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=dim, ffn_dim=2 * dim, freq_dim=256,
                         text_dim=4096, out_dim=16, num_heads=HEADS, num_layers=LAYERS, device="cpu", dtype=dtype,
                         operations=operations)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{fmt}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.eval().requires_grad_(False)


def inputs(dtype, frames=3, height=24, width=40, seed=1, fmt=None):
    """(x, timestep, context) for one forward: 3 x 12 x 20 = 720 tokens; 240 (one frame) for a WIDE_FORMATS model,
    whose layers comfy-kitchen's CPU backend computes about 5x slower."""
    frames = 1 if fmt in WIDE_FORMATS else frames
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, height, width, generator=generator).to(dtype)
    context = torch.randn(1, 512, 4096, generator=generator).to(dtype)
    return x, torch.tensor([600.0]), context


def relative_difference(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()
