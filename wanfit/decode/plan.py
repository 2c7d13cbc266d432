"""The decode plan: untiled or tiled, stem depth, CPU heap mode and tile grid, within a budget.

Peak memory comes from wanfit.decode.tiling's model of each layout; on the CPU the glibc heap mode is
part of the plan (its measured peak factor and time factor, CPU_HEAP_MODES). The search itself is
torch-free (wanfit.decode.budget), so the offload plan runs it on static layouts of the two VAEs.
"""

import ctypes
import sys

import torch

from .budget import (  # noqa: F401  (re-exported: wanfit.decode's names for them)
    CPU_HEAP_MODES, CPU_WORKSPACE_BYTES, UNTILED_MARGIN, CpuHeapMode, search_plan, untiled_decode_bytes)
from ..errors import InvalidInputError
from .layout import Layout


def plan_decode(module, latent_shape, budget_bytes, dtype=torch.float32, device="cpu", output_device="cpu",
                overlap=None, activation_factor=None, allow_untiled=True, stem_cuts=None):
    """The tile plan for a latent shape and budget, without decoding (for the node's preview and tests).

    overlap: None = exact halos (seamless); an int = cap the halo at that many latent pixels
    and blend tiles with feathered weights (cheaper, approximate). allow_untiled: when the
    VAE's own decode fits the budget, use it (it is the fastest path). stem_cuts: the stem depths
    the planner may choose from (None = all; benchmarks and tests pin one).
    """
    layouts = layouts_of(module, activation_factor, stem_cuts)
    return plan_for_layouts(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled)[0]


def layouts_of(module, activation_factor=None, stem_cuts=None, protocol=None):
    """One Layout per stem depth (the upsample the tiles start at); stem_cuts limits which."""
    first = Layout(module, activation_factor, protocol=protocol)
    cuts = range(first.cut_count) if stem_cuts is None else sorted(set(stem_cuts))
    if any(not 0 <= cut < first.cut_count for cut in cuts) or not cuts:
        raise InvalidInputError("stem_cuts", list(cuts), f"stem depths 0..{first.cut_count - 1}",
                                "leave it unset to let the planner choose")
    return [first if cut == 0 else Layout(module, activation_factor, cut, protocol) for cut in cuts]


def plan_for_layouts(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled=True):
    """The fastest plan that fits: untiled, else the best (stem depth, CPU heap mode, tiling); see
    wanfit.decode.budget.search_plan (an approximate plan carries the budget that makes it exact)."""
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    same_device = torch.device(output_device) == torch.device(device)
    return search_plan(layouts, latent_shape, budget_bytes, dtype_bytes, torch.device(device).type, same_device,
                       overlap, allow_untiled, modes=CPU_HEAP_MODES)


GLIBC_M_TRIM_THRESHOLD = -1


GLIBC_M_MMAP_THRESHOLD = -3


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
