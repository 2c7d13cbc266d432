"""The stem (whole frames, every latent frame) and the tile runner (one spatial tile at a time).

The stem's output is stored off the decode device; each tile then runs the tail over every
latent frame with its own causal cache, cropping each layer to what the rest still needs, and
commits finished frames at once. An OOM retries that tile split in two, then on the CPU.
"""

from dataclasses import dataclass
import logging

import torch

from . import tiling
from .budget import follow_live_tensors_on_cpu
from ..errors import WanFitError
from .core_protocol import call_layer
from .fused_layers import cached_conv, run_head, run_layer, unpatchify
from .layout import is_resblock

log = logging.getLogger("wanfit")


class DecodeOutOfMemoryError(WanFitError):
    """Even the CPU fallback ran out of memory."""


@dataclass(frozen=True)
class DecodeStep:
    """One step the OOM ladder guards, as the `oom` hook of decode_tiles hears it (tests raise an OOM there).

    stage: "untiled" (the VAE's own decode), "stem" (one latent frame, whole frame) or "tile" (one latent
    frame of one tile);
    rows, cols: the tile's core in latent px (None for the stem); frame: the latent frame."""

    stage: str
    device: object
    dtype: object
    frame: int
    rows: tuple = None
    cols: tuple = None


def decode_tiles(layout, plan, latent, device, dtype, output_device, progress=None, oom_exceptions=(), oom=None):
    """Decode a latent with a tiled plan: the stem for every latent frame, then each tile over every frame.

    Returns the raw decoder output (B, 3, frames, H, W), float32 on output_device. oom(step), when given,
    is called before every DecodeStep: an error it raises is handled as one raised there (the tests' OOMs).
    """
    batch, _, frames, h, w = latent.shape
    if torch.device(device).type == "cpu":
        follow_live_tensors_on_cpu()
    counter = _Progress(frames * (1 + plan.tile_count), progress)
    counter.per_tile = frames
    scale = layout.spec.total_scale * layout.stem_scale
    output = torch.zeros((batch, 3, layout.frames_out(frames), h * scale, w * scale), dtype=torch.float32,
                         device=output_device)
    weight_sum = None if plan.exact else torch.zeros((h * scale, w * scale), dtype=torch.float32,
                                                     device=output_device)
    stem_out, tail_start = _stem_all_frames(layout, latent, device, dtype, output_device, counter, oom_exceptions,
                                            oom)
    runner = _TileRunner(layout, stem_out, tail_start, output, weight_sum, device, dtype, plan.halo_cap_latent_px,
                         counter, oom)
    for row in plan.rows:
        for col in plan.cols:
            runner.run(row, col, oom_exceptions)
    del stem_out, runner
    if weight_sum is not None:
        output /= weight_sum.clamp_min(1e-8)
    return output


def _run_stem(layout, x_all, t, cache):
    """conv1, middle and the stem's layers for latent frame t, whole frame.

    Returns (output, input of the block still open at the cut or None, next cache index).
    """
    decoder = layout.module.decoder
    idx = [0]
    x = cached_conv(decoder.conv1, x_all[:, :, t:t + 1], cache, idx)
    for layer in decoder.middle:
        x = call_layer(layout.protocol, layer, x, cache, idx) if is_resblock(layer) else layer(x)
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
            x = run_layer(layer, x, cache, idx, layout.protocol)
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
                if hasattr(layer, "avg_shortcut"):
                    x = call_layer(layout.protocol, layer, x, cache, idx, first_chunk)
                else:
                    x = run_layer(layer, x, cache, idx, layout.protocol)
            elif kind == "head":
                x = run_head(layer, x, cache, idx)
            elif kind == "unpatchify":
                x = unpatchify(x, layout.patch)
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


def is_oom(error, oom_exceptions):
    """An out-of-memory error of any device (the ladder's cue), or one of the caller's OOM types."""
    if oom_exceptions and isinstance(error, tuple(oom_exceptions)):
        return True
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


class _TileRunner:
    """Runs tiles with the OOM ladder and commits each finished tile to the output."""

    def __init__(self, layout, stem_out, tail_start, output, weight_sum, device, dtype, halo_cap, progress, oom):
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
        self.oom = oom

    def decode_tile(self, row, col, device, dtype):
        """All frames of one tile. Exact tiles go into the output frame by frame (returns None): a retry
        rewrites the same core, and a tile's frames are never held twice (for one tile on the CPU that
        would be a second copy of the video). Feathered tiles add up, so they are buffered until complete, in
        one buffer of the tile's region (what budget counts for a blended tile: no second copy when it is done)."""
        cache = [None] * self.layout.cache_len
        out = self.output
        blended = None
        if self.weight_sum is not None:
            (y0, y1), (x0, x1) = row.output, col.output
            blended = torch.empty((*out.shape[:3], y1 - y0, x1 - x0), dtype=out.dtype, device=out.device)
        frame = 0
        ry, rx = row.layer_regions[0], col.layer_regions[0]
        for t, (x_full, block_full) in enumerate(self.stem_out):
            if self.oom is not None:
                self.oom(DecodeStep("tile", torch.device(device), dtype, t, row.core, col.core))
            x = x_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            block_x = None
            if block_full is not None:
                block_x = block_full[..., ry[0]:ry[1], rx[0]:rx[1]].to(device=device, dtype=dtype)
            x = _run_tail(self.layout, x, block_x, row, col, cache, self.tail_start, first_chunk=(t == 0))
            x = x.to(device=out.device, dtype=out.dtype)
            if frame + x.shape[2] > out.shape[2]:
                raise WanFitError(f"tile decoded more than the {out.shape[2]} frames expected: not a WAN decoder")
            if blended is None:
                self._commit_frames(row, col, x, frame)
            else:
                blended[:, :, frame:frame + x.shape[2]] = x
            frame += x.shape[2]
            del x
            self.progress.step()
        del cache
        if frame != out.shape[2]:
            raise WanFitError(f"tile decoded {frame} frames, expected {out.shape[2]}: not a WAN decoder")
        return blended

    def _commit_frames(self, row, col, chunk, frame):
        """Exact mode: the tile's core of these frames into the output (each tile owns its core)."""
        out = self.output
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
        out[..., y0:y1, x0:x1] += tile.mul_(weights)  # in place: no feathered copy of the tile
        self.weight_sum[y0:y1, x0:x1] += weights

    def run(self, row, col, oom_exceptions, depth=0):
        """One tile; on OOM the same region split in two (twice at most), then on the CPU."""
        frames_before = self.progress.done
        try:
            tile = self.decode_tile(row, col, self.device, self.dtype)
        except Exception as error:  # noqa: BLE001 - only OOMs are handled, the rest re-raised
            if not is_oom(error, oom_exceptions):
                raise
            del error
            self.progress.rewind(frames_before)
            empty_device_cache(self.device)
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
        follow_live_tensors_on_cpu()
        try:
            decoder.to(device=cpu, dtype=torch.float32)
            empty_device_cache(self.device)
            try:
                return self.decode_tile(row, col, cpu, torch.float32)
            except Exception as error:  # noqa: BLE001
                if is_oom(error, ()):
                    raise DecodeOutOfMemoryError(
                        "VAE decode ran out of memory even on the CPU for one tile. Fix: free system RAM "
                        "(close other programs) or decode fewer frames.") from None
                raise
        finally:
            decoder.to(device=home_device, dtype=home_dtype)


def empty_device_cache(device):
    """Give the allocator's cached blocks back after an OOM, so the retry sees them free."""
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


def _stem_all_frames(layout, latent, device, dtype, storage_device, counter, oom_exceptions, oom):
    """conv2 + conv1 + middle for every latent frame, kept on the storage (output) device."""
    module = layout.module
    stem_modules = [module.conv2, module.decoder.conv1, module.decoder.middle]
    stem_modules += [layer for kind, layer, _ in layout.stem_steps if kind == "module"]
    try:
        return _stem(layout, module, latent, device, dtype, storage_device, counter, oom)
    except Exception as error:  # noqa: BLE001
        if not is_oom(error, oom_exceptions):
            raise
    log.warning("VAE decode: out of memory in the whole-frame stem; running the stem on the CPU")
    empty_device_cache(device)
    counter.rewind(0)
    home = next(module.parameters())
    home_device, home_dtype = home.device, home.dtype
    try:
        for part in stem_modules:
            part.to("cpu", torch.float32)
        return _stem(layout, module, latent, torch.device("cpu"), torch.float32, storage_device, counter, oom)
    finally:
        for part in stem_modules:
            part.to(home_device, home_dtype)


def _stem(layout, module, latent, device, dtype, storage_device, counter, oom):
    x_all = module.conv2(latent.to(device=device, dtype=dtype))
    cache = [None] * layout.cache_len
    stem_out = []
    tail_start = 0
    for t in range(latent.shape[2]):
        if oom is not None:
            oom(DecodeStep("stem", torch.device(device), dtype, t))
        x, block_input, tail_start = _run_stem(layout, x_all, t, cache)
        stem_out.append((x.to(storage_device), None if block_input is None else block_input.to(storage_device)))
        del x, block_input
        counter.step()
    return stem_out, tail_start
