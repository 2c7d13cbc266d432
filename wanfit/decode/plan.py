"""The decode plan: untiled or tiled, stem depth, CPU heap mode and tile grid, within a budget.

Peak memory comes from wanfit.tiling's model of each layout; on the CPU the glibc heap mode is
part of the plan (its measured peak factor and time factor, CPU_HEAP_MODES).
"""

import ctypes
from dataclasses import dataclass, replace
import sys

import torch

from .. import tiling
from ..errors import InvalidInputError
from ..memory import GPU_DECODE_MARGIN
from .layout import _Layout


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
