"""Decode WAN VAE latents inside a memory budget, exactly, without splitting time.

Why this shape: the WAN decoders (ComfyUI comfy/ldm/wan/vae.py, vae2_2.py) are causal over
time: they decode one latent frame at a time and every temporal conv keeps the last two
frames of its input. Cutting time breaks that cache (ComfyUI's temporal tiles: max abs diff
1.0), so time stays whole and space is tiled instead:

1. stem, whole frame: conv2, conv1 and the middle blocks (the only attention) at latent
   resolution, for every latent frame; its output is small and stored off the decode device;
2. tail, one spatial tile at a time, every latent frame in order with the tile's own causal
   cache: each layer's input is cropped to what the rest of the decoder needs (core plus the
   remaining receptive field), so full-resolution layers see the core plus a few pixels and the
   tile is bit-for-bit what the untiled decode gives there (float noise aside); after each
   temporal upsample the frames go on one at a time, so full-resolution layers hold one frame;
3. finished tiles go to the output device at once; an OOM retries that tile split in two, then
   on the CPU, keeping every finished tile.

Memory then depends on the tile area, not on the frame count. The tile grid comes from
wanfit.tiling with constants measured by bench/vae_decode_memory.py.
"""

import ctypes
from dataclasses import dataclass, replace
import logging
import math
import sys

import torch
import torch.nn as nn

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
    """The decoder's tail as executable steps, with the matching tiling.LayerSpec list."""

    def __init__(self, module, activation_factor=None):
        decoder = module.decoder
        self.module = module
        self.kind = _vae_kind(module)
        self.patch = _patch_size(module)
        self.z_dim = module.conv2.in_channels
        self.stem_channels = decoder.conv1.out_channels
        self.steps = []  # (kind, module or None, layer index or None)
        self.layers = []
        self.temporal_factor = 1
        # frames per latent frame at this depth (for the cost model); the tail streams them one at a
        # time (see _run_tail), so a layer's input is always one frame and a temporal upsample's output two.
        frames = 1
        self.split_after = set()  # tail step indices after which the chunk is split into single frames
        split_pending = False  # a temporal upsample was added; split after the top-level layer holding it

        def add_layer(kind, layer, spec):
            self.steps.append((kind, layer, len(self.layers)))
            self.layers.append(spec)

        def add_module(layer):
            nonlocal frames, split_pending
            if _is_resblock(layer):
                conv_a, conv_b = [m for m in layer.residual if isinstance(m, nn.Conv3d)]
                c_in, c_out = conv_a.in_channels, conv_b.out_channels
                macs = (c_in * c_out + c_out * c_out) * 27 + (c_in * c_out if c_in != c_out else 0)
                add_layer("module", layer, tiling.LayerSpec(
                    scale=1, radius=_conv_radius(layer.residual), cache_elems_per_px=2 * (c_in + c_out),
                    act_elems_per_px=max(c_in, c_out), macs_per_px=macs * frames))
            elif _is_resample(layer):
                if layer.mode not in ("upsample2d", "upsample3d", "none"):
                    raise WanFitError(f"decoder layer mode {layer.mode!r} is not a WAN decoder upsample")
                if layer.mode == "none":
                    add_layer("module", layer, tiling.LayerSpec(scale=1, radius=0))
                    return
                conv = layer.resample[1]
                cache = 0
                act_frames = 1
                macs = conv.in_channels * conv.out_channels * 9
                if layer.mode == "upsample3d":
                    # its time conv's cache, plus its two output frames, held while they stream on one by one
                    cache = 2 * layer.time_conv.in_channels + 2 * conv.out_channels * 4
                    macs += layer.time_conv.in_channels * layer.time_conv.out_channels * 3 / 8  # at input px, x2 frames
                    frames *= 2
                    act_frames = 2
                    self.temporal_factor *= 2
                    split_pending = True
                add_layer("module", layer, tiling.LayerSpec(
                    scale=2, radius=_conv_radius(layer.resample), cache_elems_per_px=cache,
                    act_elems_per_px=max(conv.in_channels, conv.out_channels) * act_frames,
                    macs_per_px=macs * frames))
            else:
                raise WanFitError(f"unexpected layer {type(layer).__name__} in the VAE decoder: not a WAN VAE")

        for layer in decoder.upsamples:
            if hasattr(layer, "avg_shortcut") and hasattr(layer, "upsamples"):  # Wan 2.2 Up_ResidualBlock
                self.steps.append(("block_start", layer, None))
                for inner in layer.upsamples:
                    add_module(inner)
                self.steps.append(("block_end", layer, None))
            else:
                add_module(layer)
            if split_pending:  # split at the top level only: a block's shortcut needs its whole input
                self.split_after.add(len(self.steps) - 1)
                split_pending = False

        head_conv = [m for m in decoder.head if isinstance(m, nn.Conv3d)][-1]
        add_layer("head", decoder.head, tiling.LayerSpec(
            scale=1, radius=_conv_radius(decoder.head), cache_elems_per_px=2 * head_conv.in_channels,
            act_elems_per_px=head_conv.in_channels,
            macs_per_px=head_conv.in_channels * head_conv.out_channels * 27 * frames))
        if self.patch > 1:
            add_layer("unpatchify", None, tiling.LayerSpec(scale=self.patch, radius=0, act_elems_per_px=3))

        # Everything before the first upsample runs whole-frame in the stem: it is at latent resolution
        # (cheap to hold), and it carries half the receptive field, which tiles would otherwise recompute.
        first_up = next(i for i, spec in enumerate(self.layers) if spec.scale > 1)
        cut = next(n for n, step in enumerate(self.steps) if step[2] == first_up)
        if self.steps[cut - 1][0] == "block_start":
            cut -= 1  # a block that starts right at the cut belongs to the tail
        self.stem_steps = self.steps[:cut]
        self.steps = [(kind, layer, None if i is None else i - first_up) for kind, layer, i in self.steps[cut:]]
        self.split_after = {n - cut for n in self.split_after if n >= cut}
        stem_layers = self.layers[:first_up]
        self.layers = self.layers[first_up:]
        self.block_open_at_cut = sum(1 if k == "block_start" else -1 if k == "block_end" else 0
                                     for k, _, _ in self.stem_steps) > 0

        if activation_factor is None:
            activation_factor = tiling.ACTIVATION_FACTOR.get(self.kind, tiling.DEFAULT_ACTIVATION_FACTOR)
        c0 = self.stem_channels
        stem_cache = 2 * (self.z_dim + 4 * c0) + sum(spec.cache_elems_per_px for spec in stem_layers)
        self.stored_channels_per_frame = c0 * (2 if self.block_open_at_cut else 1)
        self.spec = tiling.DecoderSpec(
            name=self.kind, layers=tuple(self.layers), activation_factor=activation_factor,
            stem_elems_per_latent_px=stem_cache + activation_factor * c0,
            temporal_factor=self.temporal_factor)
        self.cache_len = sum(1 for m in decoder.modules() if isinstance(m, nn.Conv3d))

    def frames_out(self, latent_frames):
        return 1 + self.temporal_factor * (latent_frames - 1)


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


def _unpatchify(x, patch):
    """einops 'b (c r q) f h w -> b c f (h q) (w r)' without einops."""
    b, c, f, h, w = x.shape
    c_out = c // (patch * patch)
    x = x.reshape(b, c_out, patch, patch, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c_out, f, h * patch, w * patch)


def _run_stem(layout, x_all, t, cache):
    """conv1, middle and the latent-resolution blocks for latent frame t, whole frame.

    Returns (output, input of the block still open at the cut or None, next cache index).
    """
    decoder = layout.module.decoder
    idx = [0]
    x = _cached_conv(decoder.conv1, x_all[:, :, t:t + 1], cache, idx)
    for layer in decoder.middle:
        x = layer(x, cache, idx) if _is_resblock(layer) else layer(x)
    block_input = None
    for kind, layer, _ in layout.stem_steps:
        if kind == "block_start":
            block_input = x
        elif kind == "block_end":
            raise WanFitError("a decoder block ends before the first upsample: not a WAN decoder")
        else:
            x = layer(x, cache, idx)
    return x, block_input, idx[0]


def _run_tail(layout, x, block_x, row, col, cache, tail_start, first_chunk):
    """The upsampling tail on one tile crop, cropping every layer's output to what is still needed."""
    off_y, off_x = row.layer_regions[0][0], col.layer_regions[0][0]
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
                x = layer(x, cache, idx, first_chunk) if hasattr(layer, "avg_shortcut") else layer(x, cache, idx)
            elif kind == "head":
                for sub in layer:
                    x = _cached_conv(sub, x, cache, idx) if isinstance(sub, nn.Conv3d) else sub(x)
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
        """All frames of one tile, buffered on the output device until the tile is complete."""
        cache = [None] * self.layout.cache_len
        chunks = []
        ry, rx = row.layer_regions[0], col.layer_regions[0]
        for t, (x_full, block_full) in enumerate(self.stem_out):
            x = x_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            block_x = None
            if block_full is not None:
                block_x = block_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            x = _run_tail(self.layout, x, block_x, row, col, cache, self.tail_start, first_chunk=(t == 0))
            chunks.append(x.to(device=self.output.device, dtype=self.output.dtype))
            del x
            self.progress.step()
        del cache
        return torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0]

    def commit(self, row, col, tile):
        out = self.output
        if tile.shape[2] != out.shape[2]:
            raise WanFitError(f"tile decoded {tile.shape[2]} frames, expected {out.shape[2]}: not a WAN decoder")
        if self.weight_sum is None:  # exact: each tile owns its core
            (y0, y1), (x0, x1) = row.core_out, col.core_out
            oy, ox = row.output[0], col.output[0]
            out[..., y0:y1, x0:x1] = tile[..., y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            return
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
                overlap=None, activation_factor=None, allow_untiled=True):
    """The tile plan for a latent shape and budget, without decoding (for the node's preview and tests).

    overlap: None = exact halos (seamless); an int = cap the halo at that many latent pixels
    and blend tiles with feathered weights (cheaper, approximate). allow_untiled: when the
    VAE's own decode fits the budget, use it (it is the fastest path).
    """
    layout = _Layout(module, activation_factor)
    return _plan(layout, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled)[0]


# The VAE's own (untiled) decode is used when its measured need (times this margin) fits the budget.
UNTILED_MARGIN = 1.0


def untiled_decode_bytes(kind, latent_shape, dtype_bytes, device_type):
    """What the VAE's own decode needs (tiling.UNTILED_BYTES_PER_OUTPUT_PX, measured RSS, fp32 CPU)."""
    batch, _, _, h, w = latent_shape
    scale = 16 if kind == "wan2.2" else 8
    per_px = tiling.UNTILED_BYTES_PER_OUTPUT_PX.get(kind, max(tiling.UNTILED_BYTES_PER_OUTPUT_PX.values()))
    gpu_margin = GPU_DECODE_MARGIN if device_type != "cpu" else 1.0  # cuDNN workspaces, allocator rounding
    return int(per_px * batch * h * w * scale * scale * dtype_bytes / 4 * UNTILED_MARGIN * gpu_margin)


def _plan(layout, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled=True):
    batch, _, frames, h, w = latent_shape
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    scale = layout.spec.total_scale
    device_type = torch.device(device).type
    if allow_untiled and overlap is None:
        need = untiled_decode_bytes(layout.kind, latent_shape, dtype_bytes, device_type)
        if need <= budget_bytes:
            whole, _ = tiling.plan_tiles(layout.spec, (h, w), 2**62, dtype_bytes=dtype_bytes * batch)
            return replace(whole, untiled=True, predicted_peak_bytes=need,
                           cpu_heap="heap" if device_type == "cpu" else ""), need
    fixed = 0
    if torch.device(output_device) == torch.device(device):
        out_bytes = batch * 3 * layout.frames_out(frames) * h * w * scale * scale * 4
        stem_bytes = batch * frames * layout.stored_channels_per_frame * h * w * dtype_bytes
        fixed = out_bytes + stem_bytes + (out_bytes // 3 if overlap is not None else 0)
    caps = (None, 4, 2, 1) if overlap is None else (int(overlap),)
    if torch.device(device).type != "cpu":
        # a batch decodes its samples together, so every per-pixel figure scales with it
        return tiling.plan_tiles(layout.spec, (h, w), budget_bytes, dtype_bytes=dtype_bytes * batch,
                                 fixed_bytes=fixed, halo_caps=caps)
    # CPU: the allocator mode is part of the plan; take the fastest (mode, tiling) whose peak fits
    best, best_rank, minimum = None, None, None
    for mode in CPU_HEAP_MODES:
        def to_rss(predicted, mode=mode):
            return int(predicted * mode.peak_factor) + mode.peak_extra_bytes + CPU_WORKSPACE_BYTES
        inner = (budget_bytes - mode.peak_extra_bytes - CPU_WORKSPACE_BYTES) / mode.peak_factor
        plan, smallest = tiling.plan_tiles(layout.spec, (h, w), max(inner, 0), dtype_bytes=dtype_bytes * batch,
                                           fixed_bytes=fixed, halo_caps=caps)
        if smallest is not None:
            minimum = to_rss(smallest) if minimum is None else min(minimum, to_rss(smallest))
        if plan is None:
            continue
        rank = (not plan.exact, plan.relative_cost * mode.time_factor)  # seamless first, then fastest
        if best is None or rank < best_rank:
            best, best_rank = replace(plan, predicted_peak_bytes=to_rss(plan.predicted_peak_bytes),
                                      cpu_heap=mode.name), rank
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
                  on_plan=None, allow_untiled=True):
    """Decode a WAN latent (B, C, T, h, w) with module (a WanVAE) within budget_bytes of working memory.

    Returns the raw decoder output (B, 3, frames, H, W), float32 on output_device, values in [-1, 1]
    (as WanVAE.decode). progress(done, total) is called per latent frame of every tile;
    free_models_for_decode(needed_bytes) is called once before decoding so the caller can unload
    other models (ComfyUI: comfy.model_management.load_models_gpu / free_memory); on_plan(plan)
    receives the tiling.TilePlan before decoding starts (the node reports it).
    """
    layout = _Layout(module, activation_factor)
    latent = validate_latent(latent, layout.z_dim)
    if budget_bytes is None or budget_bytes <= 0:
        raise InvalidInputError("budget", budget_bytes, "a positive number of bytes", "give a budget in MB or use auto")
    param = next(module.parameters())
    device = torch.device(device) if device is not None else param.device
    dtype = dtype or param.dtype
    output_device = torch.device(output_device)
    batch, _, frames, h, w = latent.shape

    plan, minimum = _plan(layout, latent.shape, budget_bytes, dtype, device, output_device, overlap,
                          allow_untiled)
    if plan is None:
        raise InvalidInputError(
            "budget", f"{budget_bytes / 2**20:.0f} MB",
            f"at least {math.ceil(minimum / 2**20)} MB for the smallest tile of this {layout.kind} latent "
            f"({frames}x{h}x{w} latent)", "raise the budget (or auto), or free memory used by other models")
    log.info("VAE decode %s %s within %.0f MB: %s", layout.kind, tuple(latent.shape), budget_bytes / 2**20,
             plan.describe())
    if on_plan is not None:
        on_plan(plan)
    if plan.cpu_heap:
        set_cpu_heap_mode(next(mode for mode in CPU_HEAP_MODES if mode.name == plan.cpu_heap))
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
                             None, oom_exceptions, activation_factor, on_plan, allow_untiled=False)

    tiles = plan.tile_count
    counter = _Progress(frames * (1 + tiles), progress)
    counter.per_tile = frames
    scale = layout.spec.total_scale
    output = torch.zeros((batch, 3, layout.frames_out(frames), h * scale, w * scale), dtype=torch.float32,
                         device=output_device)
    weight_sum = None if plan.exact else torch.zeros((h * scale, w * scale), dtype=torch.float32,
                                                     device=output_device)
    with torch.inference_mode():
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
                     oom_exceptions=(), activation_factor=None, on_plan=None):
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
                        activation_factor=activation_factor, on_plan=on_plan)
    return vae.process_output(raw).movedim(1, -1)
