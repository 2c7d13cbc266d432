"""Decode WAN VAE latents inside a memory budget, exactly, without splitting time.

Why this shape: the WAN decoders (ComfyUI comfy/ldm/wan/vae.py, vae2_2.py) are causal over
time: they decode one latent frame at a time and every temporal conv keeps the last two
frames of its input. Cutting time breaks that cache (ComfyUI's temporal tiles: max abs diff
1.0), so time stays whole and space is tiled instead:

1. stem, whole frame: conv2, conv1 and the middle blocks (the only attention) at latent
   resolution, for every latent frame, and, when the plan says so, the upsampling layers up
   to a deeper cut (a 2x or 4x latent-size stem: more stored per frame, no halo recomputation
   of those layers); its output is stored off the decode device;
2. tail, one spatial tile at a time, every latent frame in order with the tile's own causal
   cache: each layer's input is cropped to what the rest of the decoder needs (core plus the
   remaining receptive field), so full-resolution layers see the core plus a few pixels and the
   tile is bit-for-bit what the untiled decode gives there (float noise aside); after each
   temporal upsample the frames go on one at a time, so full-resolution layers hold one frame;
   residual blocks and the head write norm + SiLU straight into the conv's padded input
   (_padded_conv_input), and on the CPU each conv call takes the path with the smaller
   transient (conv_uses_native), with a channels-last input where oneDNN then skips a larger
   copy than it adds (_conv_input_memory_format; the weight then stays channels-last for the decode);
   upsamples run as four 2x2 phase convs on the small input (_run_upsample), and a tile's padded
   conv inputs share one scratch buffer (scratch_arena);
3. finished frames go to the output device at once (an exact tile's straight into the output
   video); an OOM retries that tile split in two, then on the CPU, keeping every finished tile.

Memory then depends on the tile area, not on the frame count. The tile grid comes from
wanfit.tiling with constants measured by bench/vae_decode_memory.py.
"""

import contextlib
import ctypes
from dataclasses import dataclass, replace
import logging
import math
import sys
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import tiling
from .memory import GPU_DECODE_MARGIN
from .errors import InvalidInputError, WanFitError

log = logging.getLogger("wanfit")

# Latent channels -> what users know the VAE as (messages name both sides of a mismatch).
VAE_NAMES = {16: "Wan 2.1 VAE (16 latent channels; T2V/I2V-A14B)", 48: "Wan 2.2 VAE (48 latent channels; TI2V-5B)"}


class DecodeOutOfMemoryError(WanFitError):
    """Even the CPU fallback ran out of memory."""


# ----------------------------------------------------------------------------- decoder layout

def _vae_kind(module):
    out_channels = module.decoder.head[-1].out_channels
    return "wan2.2" if out_channels == 12 else "wan2.1"


def _patch_size(module):
    return int(round(math.sqrt(module.decoder.head[-1].out_channels // 3)))


def _conv_radius(module):
    """Receptive radius of a module's spatial convs (3x3 -> 1 each), serial path only."""
    radius = 0
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Conv3d)):
            radius += (sub.kernel_size[-1] - 1) // 2 * sub.dilation[-1]
    return radius


def _is_resblock(layer):
    return hasattr(layer, "residual") and hasattr(layer, "shortcut")


def _is_resample(layer):
    return hasattr(layer, "mode") and hasattr(layer, "resample")


class _Layout:
    """The decoder's tail as executable steps, with the matching tiling.LayerSpec list.

    cut: the upsample the tiles start at (0 = the first). Everything before it runs whole-frame
    in the stem and its output is stored for every frame; a deeper cut stores more but spares
    the tiles the halo recomputation of the stem's layers (wanfit.tiling plans with both).
    """

    def __init__(self, module, activation_factor=None, cut=0):
        decoder = module.decoder
        self.module = module
        self.kind = _vae_kind(module)
        self.patch = _patch_size(module)
        self.z_dim = module.conv2.in_channels
        self.stem_channels = decoder.conv1.out_channels
        self.cut = cut
        self.steps = []  # (kind, module or None, layer index or None)
        self.layers = []
        self.temporal_factor = 1
        # frames per latent frame at this depth (for the cost model); the tail streams them one at a
        # time (see _run_tail), so a layer's input is always one frame and a temporal upsample's output two.
        frames = 1
        channels = self.stem_channels
        self.channels_before = []  # channels of x entering each step (a block_start: the block's input)
        self.split_after = set()  # tail step indices after which the chunk is split into single frames
        split_pending = False  # a temporal upsample was added; split after the top-level layer holding it

        def add_layer(kind, layer, spec):
            self.steps.append((kind, layer, len(self.layers)))
            self.channels_before.append(channels)
            self.layers.append(spec)

        def add_module(layer):
            nonlocal frames, split_pending, channels
            if _is_resblock(layer):
                conv_a, conv_b = [m for m in layer.residual if isinstance(m, nn.Conv3d)]
                c_in, c_out = conv_a.in_channels, conv_b.out_channels
                macs = (c_in * c_out + c_out * c_out) * 27 + (c_in * c_out if c_in != c_out else 0)
                convs = ((c_out * c_in * 27, c_in * 27), (c_out * c_out * 27, c_out * 27))
                add_layer("module", layer, tiling.LayerSpec(
                    scale=1, radius=_conv_radius(layer.residual), cache_elems_per_px=2 * (c_in + c_out),
                    act_elems_per_px=max(c_in, c_out), macs_per_px=macs * frames, convs=convs))
                channels = c_out
            elif _is_resample(layer):
                if layer.mode not in ("upsample2d", "upsample3d", "none"):
                    raise WanFitError(f"decoder layer mode {layer.mode!r} is not a WAN decoder upsample")
                if layer.mode == "none":
                    add_layer("module", layer, tiling.LayerSpec(scale=1, radius=0))
                    return
                conv = layer.resample[1]
                fused = _upsample_fusable(layer)
                cache = 0
                act_frames = 1
                # fused (_upsample_conv): four 2x2 phase convs on the small input, no upsampled copy
                macs = conv.in_channels * conv.out_channels * (4 if fused else 9)
                convs = []
                if layer.mode == "upsample3d":
                    # its time conv's cache, plus its two output frames, held while they stream on one by one
                    cache = 2 * layer.time_conv.in_channels + 2 * conv.out_channels * 4
                    time_in, time_out = layer.time_conv.in_channels, layer.time_conv.out_channels
                    macs += time_in * time_out * 3 / 8  # at input px, x2 frames
                    convs.append((time_out * time_in * 3, time_in * 3))
                    frames *= 2
                    act_frames = 2
                    self.temporal_factor *= 2
                    split_pending = True
                held = 0
                if fused:
                    # per output phase and frame: its 2x2 kernel (held), then oneDNN's reorder of it or the
                    # native path's column buffer (input channels x 4 per input px, counted per output px)
                    phase_weight = conv.out_channels * conv.in_channels * 4
                    convs.append((phase_weight, conv.in_channels * 4, phase_weight))
                    # what _run_upsample holds, per output px (an input px is 4): the input, the time conv's
                    # two-frame output (3-D), a padded copy per frame, oneDNN's copy of a phase's input window,
                    # one phase's result and the output frames; counted, so no activation factor
                    cin, cout = conv.in_channels, conv.out_channels
                    held = (cin * (1 + act_frames + 1) + (2 * cin if act_frames == 2 else 0)) / 4 \
                        + cout * (act_frames + 0.25)
                    act = 0
                else:
                    convs.append((conv.out_channels * conv.in_channels * 9, conv.in_channels * 9 * 4 * act_frames))
                    act = max(conv.in_channels, conv.out_channels) * act_frames
                add_layer("module", layer, tiling.LayerSpec(
                    scale=2, radius=_conv_radius(layer.resample), cache_elems_per_px=cache,
                    act_elems_per_px=act, held_elems_per_px=held, macs_per_px=macs * frames, convs=tuple(convs)))
                channels = conv.out_channels
            else:
                raise WanFitError(f"unexpected layer {type(layer).__name__} in the VAE decoder: not a WAN VAE")

        for layer in decoder.upsamples:
            if hasattr(layer, "avg_shortcut") and hasattr(layer, "upsamples"):  # Wan 2.2 Up_ResidualBlock
                self.steps.append(("block_start", layer, None))
                self.channels_before.append(channels)
                for inner in layer.upsamples:
                    add_module(inner)
                self.steps.append(("block_end", layer, None))
                self.channels_before.append(channels)
            else:
                add_module(layer)
            if split_pending:  # split at the top level only: a block's shortcut needs its whole input
                self.split_after.add(len(self.steps) - 1)
                split_pending = False

        head_conv = [m for m in decoder.head if isinstance(m, nn.Conv3d)][-1]
        add_layer("head", decoder.head, tiling.LayerSpec(
            scale=1, radius=_conv_radius(decoder.head), cache_elems_per_px=2 * head_conv.in_channels,
            act_elems_per_px=head_conv.in_channels,
            macs_per_px=head_conv.in_channels * head_conv.out_channels * 27 * frames,
            convs=((head_conv.out_channels * head_conv.in_channels * 27, head_conv.in_channels * 27),)))
        if self.patch > 1:
            add_layer("unpatchify", None, tiling.LayerSpec(scale=self.patch, radius=0, act_elems_per_px=3))

        # Everything before the cut's upsample runs whole-frame in the stem. The first cut keeps the
        # stem at latent resolution (cheap to hold) and it carries half the receptive field, which
        # tiles would otherwise recompute; deeper cuts carry more of it.
        upsamples = [n for n, (kind, _, i) in enumerate(self.steps) if kind == "module" and self.layers[i].scale > 1]
        self.cut_count = len(upsamples)
        if not 0 <= cut < self.cut_count:
            raise WanFitError(f"stem cut {cut} out of range: this decoder has {self.cut_count} upsamples")
        cut_step = upsamples[cut]
        first_tail = self.steps[cut_step][2]
        if self.steps[cut_step - 1][0] == "block_start":
            cut_step -= 1  # a block that starts right at the cut belongs to the tail
        open_blocks = [n for n in range(cut_step) if self.steps[n][0] == "block_start"
                       and not any(self.steps[m][0] == "block_end" for m in range(n, cut_step))]
        self.block_open_at_cut = bool(open_blocks)
        cut_channels = self.channels_before[cut_step]
        block_channels = self.channels_before[open_blocks[-1]] if open_blocks else 0
        self.stem_steps = self.steps[:cut_step]
        self.steps = [(kind, layer, None if i is None else i - first_tail) for kind, layer, i in self.steps[cut_step:]]
        self.stem_split_after = {n for n in self.split_after if n < cut_step}
        self.split_after = {n - cut_step for n in self.split_after if n >= cut_step}
        first_up = next(i for i, spec in enumerate(self.layers) if spec.scale > 1)
        latent_layers = self.layers[:first_up]  # resblocks at latent resolution: their cost in the flat stem term
        stem_layers = tuple(self.layers[first_up:first_tail])
        self.layers = self.layers[first_tail:]
        self.stem_scale = math.prod(spec.scale for spec in stem_layers)
        self.stem_temporal_factor = 2 ** sum(1 for kind, layer, _ in self.stem_steps
                                             if kind == "module" and getattr(layer, "mode", "") == "upsample3d")

        if activation_factor is None:
            activation_factor = tiling.ACTIVATION_FACTOR.get(self.kind, tiling.DEFAULT_ACTIVATION_FACTOR)
        c0 = self.stem_channels
        stem_cache = 2 * (self.z_dim + 4 * c0) + sum(spec.cache_elems_per_px for spec in latent_layers)
        # conv1, the middle blocks and the latent-resolution layers, for their CPU conv transient
        latent_convs = tuple(conv for spec in latent_layers for conv in spec.convs)
        latent_convs += tuple((m.weight.numel(), m.weight[0].numel()) for m in (decoder.conv1, *decoder.middle.modules())
                              if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        # stored per output frame of the stem, per pixel at the cut's resolution
        self.stored_channels_per_frame = cut_channels + block_channels
        self.spec = tiling.DecoderSpec(
            name=self.kind, layers=tuple(self.layers), activation_factor=activation_factor,
            stem_elems_per_latent_px=stem_cache + activation_factor * c0, stem_act_elems_per_latent_px=c0,
            temporal_factor=self.temporal_factor, stem_layers=stem_layers, stem_convs=latent_convs)
        self.cache_len = sum(1 for m in decoder.modules() if isinstance(m, nn.Conv3d))

    def frames_out(self, latent_frames):
        return 1 + self.temporal_factor * (latent_frames - 1)

    def stored_bytes(self, latent_shape, dtype_bytes):
        """The stem's output kept for every frame until the last tile is done."""
        batch, _, frames, h, w = latent_shape
        stem_frames = 1 + self.stem_temporal_factor * (frames - 1)
        return batch * stem_frames * self.stored_channels_per_frame * h * w * self.stem_scale ** 2 * dtype_bytes


# ----------------------------------------------------------------------------- execution

def _cached_conv(conv, x, cache, idx):
    """A causal conv with the WAN cache protocol (Decoder3d.forward's conv1/head logic)."""
    i = idx[0]
    cache_x = x[:, :, -2:].clone()
    if cache_x.shape[2] < 2 and cache[i] is not None:
        cache_x = torch.cat([cache[i][:, :, -1:].to(cache_x.device), cache_x], dim=2)
    x = conv(x, cache[i])
    cache[i] = cache_x
    idx[0] += 1
    return x


def _is_norm(module):
    return hasattr(module, "gamma") and hasattr(module, "scale") and getattr(module, "channel_first", True)


def _fusable(modules):
    """norm, SiLU, causal conv (, dropout p=0, ...) as WAN's ResidualBlock and head hold them."""
    return (len(modules) == 3 and _is_norm(modules[0]) and isinstance(modules[1], nn.SiLU)
            and isinstance(modules[2], nn.Conv3d) and hasattr(modules[2], "_padding"))


def _padded_conv_input(norm, conv, x, cache, idx):
    """conv's input as WAN's CausalConv3d builds it (cache frames, then the new ones, zero padded),
    in one buffer, with RMS norm + SiLU of x written straight into it; updates the cache entry.
    The buffer is the thread's scratch arena (_scratch_empty) when one is open: valid until the next call.

    Why: ComfyUI's path allocates the norm's three temporaries, the SiLU output, the cache
    concat and the padded copy: five full-size allocations more per conv, each a page-faulting
    mmap in the lean CPU heap and a pass over memory. Same operations in the same order, so the
    values match (division, scale, gamma as F.normalize(x) * scale * gamma).
    """
    i = idx[0]
    old = cache[i]
    batch, channels, frames, height, width = x.shape
    left, right, top, bottom, front, _ = conv._padding
    old_frames = old.shape[2] if (old is not None and front > 0) else 0
    pad_t = front - old_frames
    shape = (batch, channels, pad_t + old_frames + frames, top + height + bottom, left + width + right)
    memory_format = _conv_input_memory_format(conv, shape)
    buf = _scratch_empty(shape, x.dtype, x.device, memory_format)
    if pad_t:
        buf[:, :, :pad_t].zero_()
    for region in (buf[..., :top, :], buf[..., top + height:, :], buf[..., :left], buf[..., left + width:]):
        if region.numel():
            region.zero_()
    inner = buf[:, :, pad_t:, top:top + height, left:left + width]
    if old_frames:
        inner[:, :, :old_frames].copy_(old)
    new = inner[:, :, old_frames:]
    denom = x.norm(2, dim=1, keepdim=True).clamp_min(1e-12)  # F.normalize's eps
    torch.div(x, denom, out=new)
    del denom
    new.mul_(norm.scale).mul_(norm.gamma.to(new))
    if getattr(norm, "bias", None) is not None:
        new.add_(norm.bias.to(new))
    F.silu(new, inplace=True)
    # the cache protocol of ResidualBlock / Decoder3d: the last two input frames, the previous
    # chunk's last frame in front when the chunk has only one
    keep = min(2, frames) if (frames >= 2 or old is None) else 2
    kept = inner[:, :, inner.shape[2] - keep:]
    if old is not None and old.shape == kept.shape:
        # in place: in the lean CPU heap every new tensor is a fresh mmap whose pages fault in again
        cache[i] = old.copy_(kept)
    else:
        cache[i] = kept.clone()
    idx[0] += 1
    return buf


def _scratch_empty(shape, dtype, device, memory_format):
    """An uninitialised tensor in the thread's scratch arena (see scratch_arena), else a new one.

    Only one arena tensor is valid at a time: the next call hands out the same memory.
    """
    arena = getattr(_scratch, "arena", None)
    if arena is None or torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    numel = math.prod(shape)
    flat = arena.get("flat")
    if flat is None or flat.dtype != dtype or flat.numel() < numel:
        arena["flat"] = flat = None  # free the smaller one first
        arena["flat"] = flat = torch.empty(numel, dtype=dtype, device=device)
    strides = torch.empty(shape, device="meta", memory_format=memory_format).stride()
    return flat.as_strided(shape, strides)


@contextlib.contextmanager
def scratch_arena():
    """Reuse one CPU buffer for every padded conv input while the block runs (one tile, or the stem).

    Why: in the lean CPU heap every new tensor is a fresh mmap whose pages fault in again (about
    a third of a lean decode's time went to page faults); the padded conv inputs are the largest
    share and never live two at a time. Scoped to a tile so the stem's larger frames are not held.
    """
    previous = getattr(_scratch, "arena", None)
    _scratch.arena = {}
    try:
        yield
    finally:
        _scratch.arena = previous


_scratch = threading.local()  # .arena: {"flat": tensor} while scratch_arena is open


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


def _run_layer(layer, x, cache, idx):
    """A decoder layer; WAN's ResidualBlock and upsamples through the fused paths (_padded_conv_input,
    _run_upsample)."""
    if _is_resample(layer) and _upsample_fusable(layer):
        return _run_upsample(layer, x, cache, idx)
    if not _is_resblock(layer):
        return layer(x, cache, idx)
    parts = list(layer.residual)
    dropout_free = len(parts) == 7 and isinstance(parts[5], nn.Dropout) and (parts[5].p == 0 or not layer.training)
    if not (dropout_free and _fusable(parts[0:3]) and _fusable(parts[3:5] + parts[6:7])):
        return layer(x, cache, idx)
    buf = _padded_conv_input(parts[0], parts[2], x, cache, idx)
    h = _conv_unpadded(parts[2], buf)
    buf = None  # done with it: the second conv's input may take its place
    buf = _padded_conv_input(parts[3], parts[6], h, cache, idx)
    del h
    h = _conv_unpadded(parts[6], buf)
    del buf
    if isinstance(layer.shortcut, nn.Identity):
        return h.add_(x)
    return h.add_(layer.shortcut(x))


def _upsample_fusable(layer):
    """WAN's Resample upsample: nearest(-exact) 2x, then a 3x3 conv with padding 1 (and for 3-D a time conv)."""
    if layer.mode not in ("upsample2d", "upsample3d"):
        return False
    parts = list(layer.resample)
    if len(parts) != 2 or not isinstance(parts[0], nn.Upsample) or not isinstance(parts[1], nn.Conv2d):
        return False
    up, conv = parts
    if getattr(conv, "weight_function", None) or getattr(conv, "bias_function", None):
        return False  # ComfyUI patches its weights on the fly (comfy.ops): leave the conv to its own forward
    scale = up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor, up.scale_factor)
    return (up.mode in ("nearest", "nearest-exact") and up.size is None and all(float(f) == 2.0 for f in scale)
            and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


# A 3x3 kernel seen through a nearest 2x upsample: output row 2i+a reads input rows i-1+a and i+a,
# row 2i (a=0) with kernel rows (0 | 1+2), row 2i+1 (a=1) with (0+1 | 2). Same for columns.
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def _phase_weight(weight, a, b, dtype, device):
    """The 2x2 kernel of output phase (row parity a, column parity b), summed in float32."""
    out = torch.empty((*weight.shape[:2], 2, 2), dtype=torch.float32, device=weight.device)
    for r, rows in enumerate(_PHASE_TAPS[a]):
        for c, cols in enumerate(_PHASE_TAPS[b]):
            taps = [weight[:, :, i, j] for i in rows for j in cols]
            out[:, :, r, c] = taps[0]
            for tap in taps[1:]:
                out[:, :, r, c] += tap
    return out.to(device=device, dtype=dtype)


def _upsample_conv(conv, frames, out):
    """conv(nearest_2x(frame)) for each frame (N, C, h, w), written into out[:, :, n] (N, C_out, n, 2h, 2w),
    without the upsampled input.

    Why: nearest 2x followed by a 3x3 conv is four 2x2 convs on the small input, one per output
    phase (sub-pixel convolution): 4/9 of the multiply-adds, and no 4x-sized upsampled copy (for
    Wan 2.1's first tile layer, 384 channels x 2 frames: the largest tensor of a tile).
    """
    h, w = frames[0].shape[-2:]
    padded = [F.pad(frame, (1, 1, 1, 1)) for frame in frames]
    dtype, device = padded[0].dtype, padded[0].device
    bias = None if conv.bias is None else conv.bias.to(device=device, dtype=dtype)
    phases = out.unflatten(-1, (w, 2)).unflatten(-3, (h, 2))  # (N, C, frames, h, 2, w, 2)
    for a in (0, 1):
        for b in (0, 1):
            weight = _phase_weight(conv.weight, a, b, dtype, device)
            for n, frame in enumerate(padded):
                phases[:, :, n, :, a, :, b] = _conv2d(frame[..., a:a + h + 1, b:b + w + 1], weight, bias)
            del weight
    return out


def _conv2d(x, weight, bias):
    """F.conv2d on the CPU conv path cpu_conv_backend would pick for it."""
    onednn = getattr(_cpu_convs, "onednn", None)
    if onednn is None:
        return F.conv2d(x, weight, bias)
    positions = x.shape[0] * (x.shape[-2] - weight.shape[-2] + 1) * (x.shape[-1] - weight.shape[-1] + 1)
    return _on_cpu_conv_path(positions <= weight.shape[0], F.conv2d, x, weight, bias)


def _run_upsample(layer, x, cache, idx):
    """WAN's Resample.forward for upsample2d/3d (same cache protocol), the 2x conv done as _upsample_conv."""
    b, c, t, h, w = x.shape
    frames = [x[:, :, n] for n in range(t)]
    if layer.mode == "upsample3d" and cache is not None:
        i = idx[0]
        if cache[i] is None:
            cache[i] = "Rep"  # the first chunk's first frame is not doubled
            idx[0] += 1
        else:
            cache_x = x[:, :, -2:].clone()
            if cache_x.shape[2] < 2 and not isinstance(cache[i], str):
                cache_x = torch.cat([cache[i][:, :, -1:].to(cache_x.device), cache_x], dim=2)
            if cache_x.shape[2] < 2 and isinstance(cache[i], str):
                cache_x = torch.cat([torch.zeros_like(cache_x), cache_x], dim=2)
            doubled = layer.time_conv(x) if isinstance(cache[i], str) else layer.time_conv(x, cache[i])
            cache[i] = cache_x
            idx[0] += 1
            del x
            # WAN's reshape(b, 2, c, t, h, w) + stack on dim 3: frame 2n+k is channel block k of time step n
            frames = [doubled[:, k * c:(k + 1) * c, n] for n in range(t) for k in (0, 1)]
    conv = layer.resample[1]
    out = torch.empty((b, conv.out_channels, len(frames), 2 * h, 2 * w), dtype=frames[0].dtype,
                      device=frames[0].device)
    return _upsample_conv(conv, frames, out)


def _run_head(head, x, cache, idx):
    """The decoder head (norm, SiLU, causal conv) through the fused path when it has that shape."""
    parts = list(head)
    if _fusable(parts):
        buf = _padded_conv_input(parts[0], parts[2], x, cache, idx)
        del x
        return _conv_unpadded(parts[2], buf)
    for sub in parts:
        x = _cached_conv(sub, x, cache, idx) if isinstance(sub, nn.Conv3d) else sub(x)
    return x


def _unpatchify(x, patch):
    """einops 'b (c r q) f h w -> b c f (h q) (w r)' without einops."""
    b, c, f, h, w = x.shape
    c_out = c // (patch * patch)
    x = x.reshape(b, c_out, patch, patch, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c_out, f, h * patch, w * patch)


def _run_stem(layout, x_all, t, cache):
    """conv1, middle and the stem's layers for latent frame t, whole frame.

    Returns (output, input of the block still open at the cut or None, next cache index).
    """
    decoder = layout.module.decoder
    idx = [0]
    x = _cached_conv(decoder.conv1, x_all[:, :, t:t + 1], cache, idx)
    for layer in decoder.middle:
        x = layer(x, cache, idx) if _is_resblock(layer) else layer(x)
    x, block_input = _run_stem_steps(layout, x, None, 0, cache, idx, t == 0)
    return x, block_input, idx[0]


def _run_stem_steps(layout, x, block_input, first_step, cache, idx, first_chunk):
    """Stem steps first_step.. on whole frames; after a temporal upsample, one frame at a time (as the tail)."""
    steps = layout.stem_steps
    for n in range(first_step, len(steps)):
        kind, layer, _ = steps[n]
        if kind == "block_start":
            block_input = x
        elif kind == "block_end":
            if layer.avg_shortcut is not None:
                x = x + layer.avg_shortcut(block_input, first_chunk)
            block_input = None
        else:
            x = _run_layer(layer, x, cache, idx)
        if n in layout.stem_split_after and x.shape[2] > 1 and n + 1 < len(steps):
            start_idx = idx[0]
            outs = []
            for frame in range(x.shape[2]):
                idx[0] = start_idx
                outs.append(_run_stem_steps(layout, x[:, :, frame:frame + 1], None, n + 1, cache, idx, first_chunk))
            blocks = None if outs[0][1] is None else torch.cat([out[1] for out in outs], dim=2)
            return torch.cat([out[0] for out in outs], dim=2), blocks
    return x, block_input


def _run_tail(layout, x, block_x, row, col, cache, tail_start, first_chunk):
    """The upsampling tail on one tile crop, cropping every layer's output to what is still needed."""
    off_y, off_x = row.layer_regions[0][0], col.layer_regions[0][0]
    if x.shape[2] > 1 and (block_x is None or block_x.shape[2] == x.shape[2]):
        # a deeper stem hands over several frames per latent frame (its temporal upsamples): stream them
        # one at a time from the first tail layer on, as after each temporal upsample (every layer is
        # causal with its own cache, a Wan 2.2 block's shortcut maps frame to frames, so the result is
        # the same and the tile's first layer holds half)
        return torch.cat([
            _run_steps(layout, x[:, :, t:t + 1], None if block_x is None else (block_x[:, :, t:t + 1], off_y, off_x),
                       row, col, cache, [tail_start], first_chunk, 0, off_y, off_x)
            for t in range(x.shape[2])], dim=2)
    block_input = None if block_x is None else (block_x, off_y, off_x)
    return _run_steps(layout, x, block_input, row, col, cache, [tail_start], first_chunk, 0, off_y, off_x)


def _run_steps(layout, x, block_input, row, col, cache, idx, first_chunk, first_step, off_y, off_x):
    """Steps first_step.. of the tail. After a temporal upsample the frames go on one at a time.

    Why: every layer is causal over time with its own cache, so streaming single frames gives the
    same result as the whole chunk while the full-resolution layers hold one frame instead of four.
    """
    for n in range(first_step, len(layout.steps)):
        kind, layer, i = layout.steps[n]
        if kind == "block_start":
            block_input = (x, off_y, off_x)
            continue
        if kind == "block_end":
            x_in, in_y, in_x = block_input
            if layer.avg_shortcut is not None:
                factor = layer.avg_shortcut.factor_s
                shortcut = layer.avg_shortcut(x_in, first_chunk)
                dy, dx = off_y - in_y * factor, off_x - in_x * factor
                x = x + shortcut[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
                del shortcut
            block_input = x_in = None
        else:
            spec = layout.layers[i]
            ry, rx = row.layer_regions[i], col.layer_regions[i]
            if kind == "module":
                x = layer(x, cache, idx, first_chunk) if hasattr(layer, "avg_shortcut") else _run_layer(layer, x, cache, idx)
            elif kind == "head":
                x = _run_head(layer, x, cache, idx)
            elif kind == "unpatchify":
                x = _unpatchify(x, layout.patch)
            s = spec.scale
            x = x[..., ry[2] - s * ry[0]:ry[3] - s * ry[0], rx[2] - s * rx[0]:rx[3] - s * rx[0]]
            off_y, off_x = ry[2], rx[2]
        if n in layout.split_after and x.shape[2] > 1 and n + 1 < len(layout.steps):
            start_idx = idx[0]
            frames = []
            for t in range(x.shape[2]):
                idx[0] = start_idx
                frames.append(_run_steps(layout, x[:, :, t:t + 1], None, row, col, cache, idx, first_chunk,
                                         n + 1, off_y, off_x))
            return torch.cat(frames, dim=2)
    return x


def conv_uses_native(conv, x, padded=False):
    """CPU: run this conv call on PyTorch's native im2col path rather than oneDNN?

    Why: oneDNN reorders the weight on every call, a transient as large as the weight (108 MB
    for Wan 2.2's 1024-channel convs) whatever the input size; the native path's transient is
    its column buffer (in channels x kernel x output pixels). Take the smaller one
    (also the faster one there: 77 vs 167 ms at 12x12, 307 vs 440 ms at 24x24, 1024 channels,
    measured with one output frame). The model in wanfit.tiling.conv_transient_elems assumes this choice.
    padded: x is the fused path's padded buffer (cache frames and zero border included), not the
    input WAN's CausalConv3d.forward pads itself.
    """
    return _native_for_shape(conv, x.shape, padded)


def _native_for_shape(conv, shape, padded=True):
    return _output_positions(conv, shape, padded) <= conv.weight.shape[0]


def _output_positions(conv, shape, padded):
    """Output pixels (x frames x batch) of a conv call: what the im2col buffer scales with."""
    sizes = list(shape[2:])
    causal = getattr(conv, "_padding", None)
    if causal is not None and not padded:  # (w, w, h, h, t front, t back): forward() pads before the conv
        pairs = [causal[i:i + 2] for i in range(0, len(causal), 2)][::-1][-len(sizes):]
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


def _is_oom(error, oom_exceptions):
    if oom_exceptions and isinstance(error, tuple(oom_exceptions)):
        return True
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


class _TileRunner:
    """Runs tiles with the OOM ladder and commits each finished tile to the output."""

    def __init__(self, layout, stem_out, tail_start, output, weight_sum, device, dtype, halo_cap, progress):
        self.layout = layout
        self.stem_out = stem_out
        self.tail_start = tail_start
        self.output = output
        self.weight_sum = weight_sum
        self.device = device
        self.dtype = dtype
        self.halo_cap = halo_cap
        self.progress = progress
        self.latent_hw = stem_out[0][0].shape[-2:]
        self.on_cpu_fallback = 0

    def decode_tile(self, row, col, device, dtype):
        """All frames of one tile. Exact tiles go into the output frame by frame (returns None): a retry
        rewrites the same core, and a tile's frames are never held twice (for one tile on the CPU that
        would be a second copy of the video). Feathered tiles add up, so they are buffered until complete."""
        with scratch_arena():
            return self._decode_tile_frames(row, col, device, dtype)

    def _decode_tile_frames(self, row, col, device, dtype):
        cache = [None] * self.layout.cache_len
        chunks = []
        frame = 0
        ry, rx = row.layer_regions[0], col.layer_regions[0]
        for t, (x_full, block_full) in enumerate(self.stem_out):
            x = x_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            block_x = None
            if block_full is not None:
                block_x = block_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            x = _run_tail(self.layout, x, block_x, row, col, cache, self.tail_start, first_chunk=(t == 0))
            x = x.to(device=self.output.device, dtype=self.output.dtype)
            if self.weight_sum is None:
                self._commit_frames(row, col, x, frame)
            else:
                chunks.append(x)
            frame += x.shape[2]
            del x
            self.progress.step()
        del cache
        if frame != self.output.shape[2]:
            raise WanFitError(f"tile decoded {frame} frames, expected {self.output.shape[2]}: not a WAN decoder")
        if self.weight_sum is None:
            return None
        return torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0]

    def _commit_frames(self, row, col, chunk, frame):
        """Exact mode: the tile's core of these frames into the output (each tile owns its core)."""
        out = self.output
        if frame + chunk.shape[2] > out.shape[2]:
            raise WanFitError(f"tile decoded more than the {out.shape[2]} frames expected: not a WAN decoder")
        (y0, y1), (x0, x1) = row.core_out, col.core_out
        oy, ox = row.output[0], col.output[0]
        out[:, :, frame:frame + chunk.shape[2], y0:y1, x0:x1] = chunk[..., y0 - oy:y1 - oy, x0 - ox:x1 - ox]

    def commit(self, row, col, tile):
        """Feathered mode: blend a finished tile in (exact tiles were written frame by frame: tile is None)."""
        if tile is None:
            return
        out = self.output
        height, width = out.shape[-2:]
        ramp = self.halo_cap * (height // self.latent_hw[0])
        wy = torch.tensor(tiling.feather_weights(row.output, row.core_out, height, ramp), dtype=out.dtype)
        wx = torch.tensor(tiling.feather_weights(col.output, col.core_out, width, ramp), dtype=out.dtype)
        weights = (wy[:, None] * wx[None, :]).to(out.device)
        (y0, y1), (x0, x1) = row.output, col.output
        out[..., y0:y1, x0:x1] += tile * weights
        self.weight_sum[y0:y1, x0:x1] += weights

    def run(self, row, col, oom_exceptions, depth=0):
        """One tile; on OOM the same region split in two (twice at most), then on the CPU."""
        frames_before = self.progress.done
        try:
            tile = self.decode_tile(row, col, self.device, self.dtype)
        except Exception as error:  # noqa: BLE001 - only OOMs are handled, the rest re-raised
            if not _is_oom(error, oom_exceptions):
                raise
            del error
            self.progress.rewind(frames_before)
            _empty_device_cache(self.device)
            self._retry_smaller(row, col, oom_exceptions, depth)
            return
        self.commit(row, col, tile)

    def _retry_smaller(self, row, col, oom_exceptions, depth):
        (cy0, cy1), (cx0, cx1) = row.core, col.core
        spec, hw = self.layout.spec, self.latent_hw
        if depth < 2 and max(cy1 - cy0, cx1 - cx0) >= 2:
            if cy1 - cy0 >= cx1 - cx0:
                mid = (cy0 + cy1) // 2
                rows, cols = tiling.plan_for_cores(spec, hw, [(cy0, mid), (mid, cy1)], [(cx0, cx1)], self.halo_cap)
            else:
                mid = (cx0 + cx1) // 2
                rows, cols = tiling.plan_for_cores(spec, hw, [(cy0, cy1)], [(cx0, mid), (mid, cx1)], self.halo_cap)
            log.warning("VAE decode: out of memory on tile rows %s cols %s; retrying it as %d smaller tiles",
                        row.core, col.core, len(rows) * len(cols))
            self.progress.add(self.progress.per_tile * (len(rows) * len(cols) - 1))
            for sub_row in rows:
                for sub_col in cols:
                    self.run(sub_row, sub_col, oom_exceptions, depth + 1)
            return
        log.warning("VAE decode: out of memory on tile rows %s cols %s even when split; decoding it on the CPU",
                    row.core, col.core)
        self.commit(row, col, self._decode_on_cpu(row, col))

    def _decode_on_cpu(self, row, col):
        decoder = self.layout.module.decoder
        param = next(decoder.parameters())
        home_device, home_dtype = param.device, param.dtype
        cpu = torch.device("cpu")
        try:
            decoder.to(device=cpu, dtype=torch.float32)
            _empty_device_cache(self.device)
            try:
                return self.decode_tile(row, col, cpu, torch.float32)
            except Exception as error:  # noqa: BLE001
                if _is_oom(error, ()):
                    raise DecodeOutOfMemoryError(
                        "VAE decode ran out of memory even on the CPU for one tile. Fix: free system RAM "
                        "(close other programs) or decode fewer frames.") from None
                raise
        finally:
            decoder.to(device=home_device, dtype=home_dtype)
            self.on_cpu_fallback += 1


def _empty_device_cache(device):
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Progress:
    """Counts latent frames decoded (stem, then every tile) and reports (done, total)."""

    def __init__(self, total, callback):
        self.done = 0
        self.total = total
        self.per_tile = 0
        self.callback = callback

    def step(self):
        self.done += 1
        self._report()

    def rewind(self, done):
        self.done = done

    def add(self, steps):
        self.total += steps
        self._report()

    def _report(self):
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)


# ----------------------------------------------------------------------------- public API

def decoder_spec(module, activation_factor=None):
    """The tiling.DecoderSpec of a WanVAE module (ComfyUI's VAE.first_stage_model)."""
    return _Layout(module, activation_factor).spec


def validate_latent(latent, latent_channels, field="samples"):
    """Refuse latents this VAE cannot decode, with a message naming both sides and the fix."""
    if not isinstance(latent, torch.Tensor):
        raise InvalidInputError(field, type(latent).__name__, "a latent tensor", "connect a LATENT output")
    if latent.ndim == 4:
        latent = latent.unsqueeze(0)
    if latent.ndim != 5:
        raise InvalidInputError(field, f"shape {tuple(latent.shape)}",
                                "a video latent of shape (batch, channels, frames, height, width)",
                                "connect the sampler's LATENT output (WAN latents are 5-D)")
    if latent.numel() == 0:
        raise InvalidInputError(field, f"shape {tuple(latent.shape)}", "a non-empty latent",
                                "the latent is empty: check the frame count and size of the empty latent node")
    channels = latent.shape[1]
    if channels != latent_channels:
        given = VAE_NAMES.get(channels, f"a {channels}-channel latent")
        vae = VAE_NAMES.get(latent_channels, f"a VAE with {latent_channels} latent channels")
        raise InvalidInputError(
            field, f"{channels}-channel latent",
            f"{latent_channels} channels for the {vae}; this latent belongs to the {given}",
            "load the matching VAE: Wan 2.2 VAE (wan2.2_vae) for TI2V-5B, Wan 2.1 VAE (wan_2.1_vae) for A14B")
    return latent


def plan_decode(module, latent_shape, budget_bytes, dtype=torch.float32, device="cpu", output_device="cpu",
                overlap=None, activation_factor=None, allow_untiled=True, stem_cuts=None):
    """The tile plan for a latent shape and budget, without decoding (for the node's preview and tests).

    overlap: None = exact halos (seamless); an int = cap the halo at that many latent pixels
    and blend tiles with feathered weights (cheaper, approximate). allow_untiled: when the
    VAE's own decode fits the budget, use it (it is the fastest path). stem_cuts: the stem depths
    the planner may choose from (None = all; benchmarks and tests pin one).
    """
    layouts = _layouts(module, activation_factor, stem_cuts)
    return _plan(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled)[0]


# The VAE's own (untiled) decode is used when its measured need (times this margin) fits the budget.
UNTILED_MARGIN = 1.0


def untiled_decode_bytes(kind, latent_shape, dtype_bytes, device_type):
    """What the VAE's own decode needs (tiling.UNTILED_BYTES_PER_OUTPUT_PX, measured RSS, fp32 CPU)."""
    batch, _, _, h, w = latent_shape
    scale = 16 if kind == "wan2.2" else 8
    per_px = tiling.UNTILED_BYTES_PER_OUTPUT_PX.get(kind, max(tiling.UNTILED_BYTES_PER_OUTPUT_PX.values()))
    gpu_margin = GPU_DECODE_MARGIN if device_type != "cpu" else 1.0  # cuDNN workspaces, allocator rounding
    return int(per_px * batch * h * w * scale * scale * dtype_bytes / 4 * UNTILED_MARGIN * gpu_margin)


def _layouts(module, activation_factor=None, stem_cuts=None):
    """One _Layout per stem depth (the upsample the tiles start at); stem_cuts limits which."""
    first = _Layout(module, activation_factor)
    cuts = range(first.cut_count) if stem_cuts is None else sorted(set(stem_cuts))
    if any(not 0 <= cut < first.cut_count for cut in cuts) or not cuts:
        raise InvalidInputError("stem_cuts", list(cuts), f"stem depths 0..{first.cut_count - 1}",
                                "leave it unset to let the planner choose")
    return [first if cut == 0 else _Layout(module, activation_factor, cut) for cut in cuts]


def _plan(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled=True):
    """The fastest plan that fits: untiled, else the best (stem depth, CPU heap mode, tiling)."""
    batch, _, frames, h, w = latent_shape
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    device_type = torch.device(device).type
    first = layouts[0]
    if allow_untiled and overlap is None:
        need = untiled_decode_bytes(first.kind, latent_shape, dtype_bytes, device_type)
        if need <= budget_bytes:
            whole, _ = tiling.plan_tiles(first.spec, (h, w), 2**62, dtype_bytes=dtype_bytes * batch)
            return replace(whole, untiled=True, predicted_peak_bytes=need,
                           cpu_heap="heap" if device_type == "cpu" else ""), need
    same_device = torch.device(output_device) == torch.device(device)
    scale = first.spec.total_scale * first.stem_scale
    out_bytes = batch * 3 * first.frames_out(frames) * h * w * scale * scale * 4
    modes = CPU_HEAP_MODES if device_type == "cpu" else (None,)
    best, best_rank, minimum = None, None, None
    for layout in layouts if overlap is None else layouts[:1]:
        stored = layout.stored_bytes(latent_shape, dtype_bytes)
        if layout.cut and not same_device and stored > out_bytes:
            continue  # a deeper stem's storage would outgrow the video itself in the output device's memory
        fixed = out_bytes + stored + (out_bytes // 3 if overlap is not None else 0) if same_device else 0
        if overlap is not None:
            caps = (int(overlap),)
        else:
            caps = (None, 4, 2, 1) if layout.cut == 0 else (None,)
        spec = layout.spec if device_type == "cpu" else replace(layout.spec, conv_transients=False)
        tiles_hw = (h * layout.stem_scale, w * layout.stem_scale)
        for mode in modes:
            # CPU: the allocator mode is part of the plan (peak = predicted x factor + extra + workspace)
            factor, extra = (mode.peak_factor, mode.peak_extra_bytes + CPU_WORKSPACE_BYTES) if mode else (1.0, 0)
            inner = (budget_bytes - extra) / factor
            # a batch decodes its samples together, so every per-pixel figure scales with it
            plan, smallest = tiling.plan_tiles(spec, tiles_hw, max(inner, 0), dtype_bytes=dtype_bytes * batch,
                                               fixed_bytes=fixed, halo_caps=caps)
            if smallest is not None:
                smallest = int(smallest * factor) + extra
                minimum = smallest if minimum is None else min(minimum, smallest)
            if plan is None:
                continue
            time_factor = mode.time_factor if mode else 1.0
            # seamless first, then fastest; a deeper stem only where it saves at least 1% of the compute
            rank = (not plan.exact, round(plan.relative_cost * time_factor, 2), layout.cut, plan.predicted_peak_bytes)
            if best is None or rank < best_rank:
                best, best_rank = replace(plan, predicted_peak_bytes=int(plan.predicted_peak_bytes * factor) + extra,
                                          cpu_heap=mode.name if mode else "", stem_cut=layout.cut), rank
    return best, minimum


GLIBC_M_TRIM_THRESHOLD = -1
GLIBC_M_MMAP_THRESHOLD = -3


@dataclass(frozen=True)
class CpuHeapMode:
    """How glibc serves a CPU decode's tensors, and what that costs in memory and time.

    Why two modes: below its mmap threshold glibc keeps freed tensors in the heap, where
    fragmentation holds RSS well above the live tensors; above it, freed tensors go straight
    back to the OS (RSS = live tensors, as predicted) but every new tensor page-faults.
    peak = predicted x peak_factor + peak_extra_bytes; time = relative cost x time_factor.
    """

    name: str
    mmap_threshold: int
    trim_threshold: int
    peak_factor: float
    peak_extra_bytes: int
    time_factor: float


# Measured with bench/vae_decode_memory.py workers (docs/benchmarks.md, "CPU heap"): heap mode
# RSS/predicted 1.29-1.44 (Wan 2.1) and 1.34-1.72 (Wan 2.2, +126-160 MB); lean mode 0.97-1.14
# with 1.07-1.25x the time. Every CPU process also holds ~30 MB of oneDNN/thread workspace.
CPU_WORKSPACE_BYTES = 32 * 2**20
CPU_HEAP_MODES = (
    # glibc's own dynamic setting at its ceiling: the trim threshold follows at twice the mmap
    # threshold, else every free at the heap top is returned and page-faulted back in
    CpuHeapMode("heap", mmap_threshold=32 * 2**20, trim_threshold=64 * 2**20, peak_factor=1.45,
                peak_extra_bytes=64 * 2**20, time_factor=1.0),
    CpuHeapMode("lean", mmap_threshold=1 * 2**20, trim_threshold=128 * 2**10, peak_factor=1.0,
                peak_extra_bytes=0, time_factor=1.2),
)


def set_cpu_heap_mode(mode):
    """Apply a CpuHeapMode to this process's glibc (process-wide; Linux/glibc only, else a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(GLIBC_M_MMAP_THRESHOLD, mode.mmap_threshold)
                    and libc.mallopt(GLIBC_M_TRIM_THRESHOLD, mode.trim_threshold))
    except (OSError, AttributeError):
        return False


def decode_latent(module, latent, budget_bytes, device=None, dtype=None, output_device="cpu", overlap=None,
                  progress=None, free_models_for_decode=None, oom_exceptions=(), activation_factor=None,
                  on_plan=None, allow_untiled=True, stem_cuts=None):
    """Decode a WAN latent (B, C, T, h, w) with module (a WanVAE) within budget_bytes of working memory.

    Returns the raw decoder output (B, 3, frames, H, W), float32 on output_device, values in [-1, 1]
    (as WanVAE.decode). progress(done, total) is called per latent frame of every tile;
    free_models_for_decode(needed_bytes) is called once before decoding so the caller can unload
    other models (ComfyUI: comfy.model_management.load_models_gpu / free_memory); on_plan(plan)
    receives the tiling.TilePlan before decoding starts (the node reports it).
    """
    layouts = _layouts(module, activation_factor, stem_cuts)
    # one memory layout whatever the sampler handed over: the CPU convs round differently per layout,
    # and a saved latent (SaveLatent writes it contiguous) must decode to the same video again
    latent = validate_latent(latent, layouts[0].z_dim).contiguous()
    if budget_bytes is None or budget_bytes <= 0:
        raise InvalidInputError("budget", budget_bytes, "a positive number of bytes", "give a budget in MB or use auto")
    param = next(module.parameters())
    device = torch.device(device) if device is not None else param.device
    dtype = dtype or param.dtype
    output_device = torch.device(output_device)
    batch, _, frames, h, w = latent.shape

    plan, minimum = _plan(layouts, latent.shape, budget_bytes, dtype, device, output_device, overlap,
                          allow_untiled)
    layout = next((layout for layout in layouts if plan is not None and layout.cut == plan.stem_cut), layouts[0])
    if plan is None:
        raise InvalidInputError(
            "budget", f"{budget_bytes / 2**20:.0f} MB",
            f"at least {math.ceil(minimum / 2**20)} MB for the smallest tile of this {layout.kind} latent "
            f"({frames}x{h}x{w} latent)", "raise the budget (or auto), or free memory used by other models")
    log.info("VAE decode %s %s within %.0f MB: %s", layout.kind, tuple(latent.shape), budget_bytes / 2**20,
             plan.describe())
    if on_plan is not None:
        on_plan(plan)
    heap_mode = next((mode for mode in CPU_HEAP_MODES if mode.name == plan.cpu_heap), None)
    if heap_mode is not None:
        set_cpu_heap_mode(heap_mode)
    if free_models_for_decode is not None:
        free_models_for_decode(plan.predicted_peak_bytes)
    if plan.untiled:
        try:
            return _decode_untiled(module, latent, device, dtype, output_device, progress)
        except Exception as error:  # noqa: BLE001 - only OOMs are handled, the rest re-raised
            if not _is_oom(error, oom_exceptions):
                raise
        log.warning("VAE decode: out of memory in the untiled decode; decoding in tiles instead")
        _empty_device_cache(device)
        return decode_latent(module, latent, budget_bytes, device, dtype, output_device, overlap, progress,
                             None, oom_exceptions, activation_factor, on_plan, allow_untiled=False,
                             stem_cuts=stem_cuts)

    tiles = plan.tile_count
    counter = _Progress(frames * (1 + tiles), progress)
    counter.per_tile = frames
    scale = layout.spec.total_scale * layout.stem_scale
    output = torch.zeros((batch, 3, layout.frames_out(frames), h * scale, w * scale), dtype=torch.float32,
                         device=output_device)
    weight_sum = None if plan.exact else torch.zeros((h * scale, w * scale), dtype=torch.float32,
                                                     device=output_device)
    with torch.inference_mode(), cpu_conv_backend(module.decoder, enabled=device.type == "cpu"):
        stem_out, tail_start = _stem_all_frames(layout, latent, device, dtype, output_device, counter,
                                                oom_exceptions)
        runner = _TileRunner(layout, stem_out, tail_start, output, weight_sum, device, dtype,
                             plan.halo_cap_latent_px, counter)
        for row in plan.rows:
            for col in plan.cols:
                runner.run(row, col, oom_exceptions)
        del stem_out
        if weight_sum is not None:
            output /= weight_sum.clamp_min(1e-8)
    return output


def _decode_untiled(module, latent, device, dtype, output_device, progress):
    """The VAE's own decode (ComfyUI WanVAE.decode), as VAE.decode runs it."""
    if progress is not None:
        progress(0, 1)
    with torch.inference_mode():
        out = module.decode(latent.to(device=device, dtype=dtype)).to(device=output_device, dtype=torch.float32)
    if progress is not None:
        progress(1, 1)
    return out


def _stem_all_frames(layout, latent, device, dtype, storage_device, counter, oom_exceptions):
    """conv2 + conv1 + middle for every latent frame, kept on the storage (output) device."""
    module = layout.module
    stem_modules = [module.conv2, module.decoder.conv1, module.decoder.middle]
    stem_modules += [layer for kind, layer, _ in layout.stem_steps if kind == "module"]
    try:
        return _stem(layout, module, latent, device, dtype, storage_device, counter)
    except Exception as error:  # noqa: BLE001
        if not _is_oom(error, oom_exceptions):
            raise
    log.warning("VAE decode: out of memory in the whole-frame stem; running the stem on the CPU")
    _empty_device_cache(device)
    counter.rewind(0)
    home = next(module.parameters())
    home_device, home_dtype = home.device, home.dtype
    try:
        for part in stem_modules:
            part.to("cpu", torch.float32)
        return _stem(layout, module, latent, torch.device("cpu"), torch.float32, storage_device, counter)
    finally:
        for part in stem_modules:
            part.to(home_device, home_dtype)


def _stem(layout, module, latent, device, dtype, storage_device, counter):
    with scratch_arena():
        return _stem_frames(layout, module, latent, device, dtype, storage_device, counter)


def _stem_frames(layout, module, latent, device, dtype, storage_device, counter):
    x_all = module.conv2(latent.to(device=device, dtype=dtype))
    cache = [None] * layout.cache_len
    stem_out = []
    tail_start = 0
    for t in range(latent.shape[2]):
        x, block_input, tail_start = _run_stem(layout, x_all, t, cache)
        stem_out.append((x.to(storage_device), None if block_input is None else block_input.to(storage_device)))
        del x, block_input
        counter.step()
    return stem_out, tail_start


def decode_comfy_vae(vae, samples, budget_bytes, overlap=None, progress=None, free_models_for_decode=None,
                     oom_exceptions=(), activation_factor=None, on_plan=None, allow_untiled=True):
    """Drop-in for ComfyUI's VAE.decode on WAN VAEs: returns images (B, frames, H, W, 3) in [0, 1].

    vae is duck-typed: first_stage_model, latent_channels, device, vae_dtype, output_device,
    process_output (comfy.sd.VAE). The node reshapes to IMAGE (B*frames, H, W, 3) as VAEDecode does.
    """
    module = getattr(vae, "first_stage_model", None)
    if module is None or not hasattr(module, "decoder"):
        raise InvalidInputError("vae", type(module).__name__, "a Wan 2.1 or Wan 2.2 VAE",
                                "load wan2.2_vae (TI2V-5B) or wan_2.1_vae (A14B) with a VAE loader")
    validate_latent(samples, getattr(vae, "latent_channels", module.conv2.in_channels))
    raw = decode_latent(module, samples, budget_bytes, device=vae.device, dtype=vae.vae_dtype,
                        output_device=vae.output_device, overlap=overlap, progress=progress,
                        free_models_for_decode=free_models_for_decode, oom_exceptions=oom_exceptions,
                        activation_factor=activation_factor, on_plan=on_plan, allow_untiled=allow_untiled)
    return vae.process_output(raw).movedim(1, -1)
