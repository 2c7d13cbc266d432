"""Decoder layers run through fused paths, with the WAN feature-cache protocol replayed exactly.

Residual blocks and the head write norm + SiLU straight into the conv's padded input
(_padded_conv_input); upsamples run as four 2x2 phase convs on the small input (_run_upsample).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core_protocol import call_layer, padding_in_buffer
from .layout import fusable_norm_silu_conv, is_resample, is_resblock, upsample_fusable


def cached_conv(conv, x, cache, idx):
    """A causal conv with the WAN cache protocol (Decoder3d.forward's conv1/head logic)."""
    i = idx[0]
    cache_x = x[:, :, -2:].clone()
    if cache_x.shape[2] < 2 and cache[i] is not None:
        cache_x = torch.cat([cache[i][:, :, -1:].to(cache_x.device), cache_x], dim=2)
    x = conv(x, cache[i])
    cache[i] = cache_x
    idx[0] += 1
    return x


def _padded_conv_input(norm, conv, x, cache, idx):
    """conv's input as WAN's CausalConv3d builds it (cache frames, then the new ones, zero padded),
    in one buffer, with RMS norm + SiLU of x written straight into it; updates the cache entry.

    Why: ComfyUI's path allocates the norm's three temporaries, the SiLU output, the cache
    concat and the padded copy: five full-size allocations more per conv, each a pass over memory. Same operations in the same order, so the
    values match (division, scale, gamma as F.normalize(x) * scale * gamma).
    """
    i = idx[0]
    old = cache[i]
    batch, channels, frames, height, width = x.shape
    left, right, top, bottom, front = padding_in_buffer(conv)  # the rest of the padding: the conv's own
    old_frames = old.shape[2] if (old is not None and front > 0) else 0
    pad_t = front - old_frames
    shape = (batch, channels, pad_t + old_frames + frames, top + height + bottom, left + width + right)
    buf = torch.empty(shape, dtype=x.dtype, device=x.device)
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
        cache[i] = old.copy_(kept)  # in place: no new allocation per frame
    else:
        cache[i] = kept.clone()
    idx[0] += 1
    return buf


def _conv_unpadded(conv, buf):
    """CausalConv3d.forward after its padding step: its parent's forward (ComfyUI's cast-aware conv)."""
    return super(type(conv), conv).forward(buf)


def run_layer(layer, x, cache, idx, protocol):
    """A decoder layer; WAN's ResidualBlock and upsamples through the fused paths (_padded_conv_input,
    _run_upsample), any other through its own forward under the core's cache protocol (core_protocol)."""
    if is_resample(layer) and upsample_fusable(layer):
        return _run_upsample(layer, x, cache, idx)
    if not is_resblock(layer):
        return call_layer(protocol, layer, x, cache, idx)
    parts = list(layer.residual)
    dropout_free = len(parts) == 7 and isinstance(parts[5], nn.Dropout) and (parts[5].p == 0 or not layer.training)
    if not (dropout_free and fusable_norm_silu_conv(parts[0:3]) and fusable_norm_silu_conv(parts[3:5] + parts[6:7])):
        return call_layer(protocol, layer, x, cache, idx)
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
                phases[:, :, n, :, a, :, b] = F.conv2d(frame[..., a:a + h + 1, b:b + w + 1], weight, bias)
            del weight
    return out


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


def run_head(head, x, cache, idx):
    """The decoder head (norm, SiLU, causal conv) through the fused path when it has that shape."""
    parts = list(head)
    if fusable_norm_silu_conv(parts):
        buf = _padded_conv_input(parts[0], parts[2], x, cache, idx)
        del x
        return _conv_unpadded(parts[2], buf)
    for sub in parts:
        x = cached_conv(sub, x, cache, idx) if isinstance(sub, nn.Conv3d) else sub(x)
    return x


def unpatchify(x, patch):
    """einops 'b (c r q) f h w -> b c f (h q) (w r)' without einops."""
    b, c, f, h, w = x.shape
    c_out = c // (patch * patch)
    x = x.reshape(b, c_out, patch, patch, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c_out, f, h * patch, w * patch)
