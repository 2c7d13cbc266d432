"""The decode plan of a loaded VAE: untiled or tiled, stem depth and tile grid, within a budget.

Peak memory comes from wanfit.decode.tiling's model of each layout; the search itself is torch-free
(wanfit.decode.budget.search_plan), so the offload plan runs the same search on static layouts.
"""

import torch

from ..errors import InvalidInputError
from .budget import search_plan
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
    return plan_for_layouts(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap,
                            allow_untiled)[0]


def layouts_of(module, activation_factor=None, stem_cuts=None, protocol=None):
    """One Layout per stem depth (the upsample the tiles start at); stem_cuts limits which."""
    first = Layout(module, activation_factor, protocol=protocol)
    cuts = range(first.cut_count) if stem_cuts is None else sorted(set(stem_cuts))
    if any(not 0 <= cut < first.cut_count for cut in cuts) or not cuts:
        raise InvalidInputError("stem_cuts", list(cuts), f"stem depths 0..{first.cut_count - 1}",
                                "leave it unset to let the planner choose")
    return [first if cut == 0 else Layout(module, activation_factor, cut, protocol) for cut in cuts]


def plan_for_layouts(layouts, latent_shape, budget_bytes, dtype, device, output_device, overlap, allow_untiled=True):
    """(the fastest plan that fits or None, the smallest budget any plan needs): budget.search_plan on
    the module's layouts (an approximate plan carries the budget that makes it exact)."""
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    same_device = torch.device(output_device) == torch.device(device)
    return search_plan(layouts, latent_shape, budget_bytes, dtype_bytes, torch.device(device).type, same_device,
                       overlap, allow_untiled)
