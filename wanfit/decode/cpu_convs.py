"""Which CPU conv backend each conv call takes (oneDNN or PyTorch's native im2col), and its memory layout.

The choice is per call, by the smaller transient (conv_uses_native); wanfit.decode.tiling.conv_transient_elems
models the same choice. cpu_conv_backend applies it to a whole decoder while a decode runs.
"""

import contextlib
import math
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core_protocol import padding_added_by_forward


def conv_uses_native(conv, x, padded=False):
    """CPU: run this conv call on PyTorch's native im2col path rather than oneDNN?

    Why: oneDNN reorders the weight on every call, a transient as large as the weight (108 MB
    for Wan 2.2's 1024-channel convs) whatever the input size; the native path's transient is
    its column buffer (in channels x kernel x output pixels). Take the smaller one
    (also the faster one there: 77 vs 167 ms at 12x12, 307 vs 440 ms at 24x24, 1024 channels,
    measured with one output frame). The model in wanfit.decode.tiling.conv_transient_elems assumes this choice.
    padded: x is the fused path's padded buffer (cache frames and zero border included), not the
    input WAN's CausalConv3d.forward pads itself.
    """
    return _native_for_shape(conv, x.shape, padded)


def _native_for_shape(conv, shape, padded=True):
    return _output_positions(conv, shape, padded) <= conv.weight.shape[0]


def _output_positions(conv, shape, padded):
    """Output pixels (x frames x batch) of a conv call: what the im2col buffer scales with."""
    sizes = list(shape[2:])
    if hasattr(conv, "_padding") and not padded:  # a causal conv: its forward() pads before the conv
        pairs = padding_added_by_forward(conv)[-len(sizes):]
        sizes = [size + sum(pair) for size, pair in zip(sizes, pairs)]
    positions = shape[0]
    for size, kernel, stride, padding, dilation in zip(sizes, conv.kernel_size, conv.stride, conv.padding,
                                                       conv.dilation):
        positions *= max(0, (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1)
    return positions


@contextlib.contextmanager
def cpu_conv_backend(decoder, enabled=True):
    """Apply conv_uses_native to every conv of the decoder while the block runs (CPU decodes)."""
    if not enabled:
        yield
        return
    initial = torch.backends.mkldnn.enabled

    def choose(conv, args):
        torch.backends.mkldnn.enabled = initial and not conv_uses_native(conv, args[0])

    def restore(conv, args, output):
        torch.backends.mkldnn.enabled = initial

    handles = []
    for sub in decoder.modules():
        if isinstance(sub, (nn.Conv2d, nn.Conv3d)):
            handles.append(sub.register_forward_pre_hook(choose))
            handles.append(sub.register_forward_hook(restore))
    _cpu_convs.onednn = initial  # the fused path calls forward() directly, past the hooks (_conv_unpadded)
    _cpu_convs.converted = []  # convs whose weight _keep_weight_channels_last stored channels-last
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for conv in _cpu_convs.converted:
            conv.weight.data = conv.weight.data.contiguous()
        _cpu_convs.onednn = None
        _cpu_convs.converted = None
        torch.backends.mkldnn.enabled = initial


_cpu_convs = threading.local()  # .onednn: mkldnn's setting while cpu_conv_backend is active, else None


def _conv_input_memory_format(conv, buf_shape):
    """Channels-last where a CPU conv runs on oneDNN and its weight is smaller than its input.

    Why: oneDNN convolves a channels-last input as it is, where a plain one costs a reorder copy
    of the whole input (and of the output back) per call; but PyTorch first copies the weight to
    channels-last. So take the layout whose extra copy is smaller: Wan 2.1's wide full-resolution
    crops go channels-last, Wan 2.2's 1024-channel convs on small crops stay plain (a channels-last
    input there cost +100 MB per call, docs/benchmarks.md). Once a conv ran channels-last its weight
    stays so for the decode (_keep_weight_channels_last), and then every oneDNN call of it is.
    """
    onednn = getattr(_cpu_convs, "onednn", None)
    if onednn and not _native_for_shape(conv, buf_shape) and (
            conv.weight.numel() < math.prod(buf_shape) or _is_channels_last(conv.weight)):
        return torch.channels_last_3d
    return torch.contiguous_format


def _is_channels_last(tensor):
    return tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d) and not tensor.is_contiguous()


def _keep_weight_channels_last(conv):
    """Store this conv's weight channels-last until cpu_conv_backend exits (then plain again).

    Why: PyTorch copies a plain weight to channels-last on every call with a channels-last input
    (a weight-sized allocation and pass per call: 4 MB for Wan 2.1's 192-channel convs, ~800 calls
    per decode); a layout change only, so the values are the same.
    """
    converted = getattr(_cpu_convs, "converted", None)
    weight = conv.weight
    if converted is None or weight.device.type != "cpu" or _is_channels_last(weight):
        return
    converted.append(conv)
    weight.data = weight.data.contiguous(memory_format=torch.channels_last_3d)


def _conv_unpadded(conv, buf):
    """CausalConv3d.forward after its padding step (its parent's forward: ComfyUI's cast-aware conv),
    on the CPU conv path cpu_conv_backend would pick (forward() bypasses its hooks)."""
    onednn = getattr(_cpu_convs, "onednn", None)
    if onednn is None:
        return super(type(conv), conv).forward(buf)
    native = conv_uses_native(conv, buf, padded=True)
    if onednn and not native and _is_channels_last(buf):
        _keep_weight_channels_last(conv)
    return _on_cpu_conv_path(native, super(type(conv), conv).forward, buf)


def _on_cpu_conv_path(native, run, *args):
    """run(*args) with oneDNN off for a native-path call, then mkldnn's setting as cpu_conv_backend found it."""
    onednn = _cpu_convs.onednn
    torch.backends.mkldnn.enabled = onednn and not native
    try:
        return run(*args)
    finally:
        torch.backends.mkldnn.enabled = onednn


def _conv2d(x, weight, bias):
    """F.conv2d on the CPU conv path cpu_conv_backend would pick for it."""
    onednn = getattr(_cpu_convs, "onednn", None)
    if onednn is None:
        return F.conv2d(x, weight, bias)
    positions = x.shape[0] * (x.shape[-2] - weight.shape[-2] + 1) * (x.shape[-1] - weight.shape[-1] + 1)
    return _on_cpu_conv_path(positions <= weight.shape[0], F.conv2d, x, weight, bias)
