"""How the running ComfyUI core's WAN decoder pads and caches, one entry per supported core.

The tiled decode replays comfy/ldm/wan/vae.py (Wan 2.1) and vae2_2.py (Wan 2.2) layer by layer and
streams one frame at a time through them, so it depends on two core internals that changed:

- "0.3.64": CausalConv3d holds all its padding in `_padding` (w, w, h, h, 2t, 0), pads with F.pad and
  convolves with padding (0, 0, 0). Every layer caches the last two frames of its input, putting the
  previous chunk's last frame in front when a chunk has one frame (WanVAE.decode feeds one latent frame
  at a time).
- "0.33.0": CausalConv3d holds only the time padding in `_padding` (an int, 2t); the conv pads space
  itself (padding (0, h, w)). Wan 2.1's layers cache only the last two frames of the chunk:
  WanVAE.decode feeds 1, then 2 latent frames at a time and Decoder3d.run_up splits after each temporal
  upsample into pairs, so their caches always hold two frames there. Streamed one frame at a time, such
  a layer must get the previous frame put back in front of its cache entry (call_layer does this).
  Wan 2.2's layers (vae2_2.py) kept the 0.3.64 caching; only their CausalConv3d changed.

Other releases are told apart by structure where it shows (candidate_protocols) and by the check
against the core's own decode where it does not (wanfit.decode.self_check); a decoder no candidate
reproduces is never replayed: the node runs the core's own decode instead, or refuses (mode on).
"""

from dataclasses import dataclass

import torch

from ..core import running_core_version
from ..errors import WanFitError

SUPPORTED_CORES = ("0.3.64", "0.33.0")


class UnsupportedCoreError(WanFitError):
    """The core's WAN decoder has a structure the tiled decode does not know how to replay."""


@dataclass(frozen=True)
class CoreProtocol:
    """core: the ComfyUI version the protocol was read from. conv_pads_space: CausalConv3d's own conv
    pads height and width (0.33.0), else everything is padded before it (0.3.64). layers_keep_two_frames:
    a layer called on one frame keeps the previous frame in its cache entry itself (0.3.64, Wan 2.2);
    else call_layer restores it (0.33.0's Wan 2.1 layers)."""

    core: str
    conv_pads_space: bool
    layers_keep_two_frames: bool


PROTOCOLS = {
    "0.3.64": CoreProtocol("0.3.64", conv_pads_space=False, layers_keep_two_frames=True),
    "0.33.0 (Wan 2.1)": CoreProtocol("0.33.0", conv_pads_space=True, layers_keep_two_frames=False),
    "0.33.0 (Wan 2.2)": CoreProtocol("0.33.0", conv_pads_space=True, layers_keep_two_frames=True),
}


def _structure(module):
    decoder = module.decoder
    convs = [m for m in (module, *decoder.modules()) if hasattr(m, "_padding") and isinstance(m, torch.nn.Conv3d)]
    paddings = {type(conv._padding) for conv in convs}
    wan21_run_up = hasattr(decoder, "run_up")  # 0.33.0's Wan 2.1 Decoder3d streams pairs after each time upsample
    wan22 = any(hasattr(layer, "avg_shortcut") for layer in decoder.upsamples)
    return convs, paddings, wan21_run_up, wan22


def candidate_protocols(module):
    """The protocols a WanVAE's decoder may follow, most likely first; empty when none can fit its structure.

    Structure gives the padding convention (CausalConv3d's `_padding` a 6-tuple: all padding before the
    conv; an int: only time, the conv pads space). How a layer leaves its cache when fed one frame is
    not visible in the structure (0.16-era Wan 2.1 decoders have int padding and no run_up), so both
    caching conventions are candidates there; the check against the core's own decode
    (wanfit.decode.self_check) picks the one that reproduces it.
    """
    convs, paddings, wan21_run_up, wan22 = _structure(module)
    if not convs:
        return []
    if paddings == {tuple} and all(len(c._padding) == 6 and tuple(c.padding) == (0, 0, 0) for c in convs):
        return [PROTOCOLS["0.3.64"]]
    if paddings == {int} and all(c.padding[0] == 0 for c in convs):
        keeps = PROTOCOLS["0.33.0 (Wan 2.2)"]
        restores = PROTOCOLS["0.33.0 (Wan 2.1)"]
        return [restores, keeps] if wan21_run_up and not wan22 else [keeps, restores]
    return []


def protocol_of(module):
    """The most likely CoreProtocol for a WanVAE's decoder; UnsupportedCoreError when none fits its structure."""
    candidates = candidate_protocols(module)
    if candidates:
        return candidates[0]
    _, paddings, wan21_run_up, _ = _structure(module)
    raise UnsupportedCoreError(
        f"WanFit VAE Decode does not know the WAN VAE decoder of ComfyUI {running_core_version()}: its causal "
        f"convs pad as {sorted(p.__name__ for p in paddings) or 'nothing'}"
        f"{', with Decoder3d.run_up' if wan21_run_up else ''}; known conventions: those of ComfyUI "
        f"{', '.join(SUPPORTED_CORES)}. Fix: set the node's mode to auto (ComfyUI's own decode then runs) or use "
        "ComfyUI's VAE Decode (Tiled) node on this core; report the core version to ComfyUI-WanFit.")


def padding_in_buffer(conv):
    """(left, right, top, bottom, front) the fused path writes around a causal conv's input itself."""
    padding = conv._padding
    if isinstance(padding, int):  # 0.33.0: only time; the conv pads space (its padding is (0, h, w))
        return 0, 0, 0, 0, padding
    left, right, top, bottom, front, _ = padding  # 0.3.64: everything; the conv pads nothing
    return left, right, top, bottom, front


def padding_added_by_forward(conv):
    """((front, back) per dim: time, height, width) that CausalConv3d.forward adds before its conv."""
    padding = conv._padding
    if isinstance(padding, int):
        return (padding, 0), (0, 0), (0, 0)
    left, right, top, bottom, front, back = padding
    return (front, back), (top, bottom), (left, right)


def call_layer(protocol, layer, x, cache, idx, *args):
    """layer(x, cache, idx, *args), its cache entries left as a frame-by-frame stream needs them:
    the last two input frames (the previous one in front, or a zero frame after 'Rep').

    Why: on 0.33.0 a Wan 2.1 layer keeps only the last frames of the chunk it was given; fed one frame
    it would forget the frame before and zero-pad in its place, a different result than VAE.decode's.
    """
    if protocol.layers_keep_two_frames:
        return layer(x, cache, idx, *args)
    start = idx[0]
    before = list(cache)
    out = layer(x, cache, idx, *args)
    for i in range(start, idx[0]):
        entry, previous = cache[i], before[i]
        if not isinstance(entry, torch.Tensor):
            continue
        if entry.shape[2] < 2 and previous is not None:
            front = torch.zeros_like(entry) if isinstance(previous, str) else previous[:, :, -1:].to(entry.device)
            cache[i] = torch.cat([front, entry], dim=2)
        elif entry._is_view():
            cache[i] = entry.clone()  # not a view that keeps the whole (uncropped) input alive
    return out
