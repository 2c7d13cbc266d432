"""The decode's memory model as the offload plan and the node read it (wanfit.decode.budget): pure arithmetic."""

from types import SimpleNamespace

import pytest

from wanfit.decode import budget

GIB = 2**30


class CoreMemory:
    """ComfyUI's model_management as the node hands it over: free memory of a device."""

    def __init__(self, free_bytes):
        self.free_bytes = free_bytes

    def get_free_memory(self, device):
        return self.free_bytes


def vae_on(device_type, patcher_free_bytes=None):
    patcher = None if patcher_free_bytes is None else SimpleNamespace(get_free_memory=lambda device: patcher_free_bytes)
    return SimpleNamespace(device=SimpleNamespace(type=device_type), patcher=patcher)


@pytest.mark.parametrize("device_type, patcher_free, plan, expected", [
    # no plan: the device's free memory
    ("cuda", None, None, 10 * GIB),
    # the plan's reserve comes off, and its decode budget caps what is left
    ("cuda", None, SimpleNamespace(reserve_vram_bytes=2 * GIB, vae_decode_budget_bytes=6 * GIB), 6 * GIB),
    ("cuda", None, SimpleNamespace(reserve_vram_bytes=2 * GIB, vae_decode_budget_bytes=9 * GIB), 8 * GIB),
    # 0.33's patcher counts what dynamic VRAM can evict: that figure wins over model_management's
    ("cuda", 12 * GIB, None, 12 * GIB),
    # on the CPU neither the reserve nor the plan's GPU budget applies
    ("cpu", None, SimpleNamespace(reserve_vram_bytes=2 * GIB, vae_decode_budget_bytes=1 * GIB), 10 * GIB),
])
def test_auto_budget_is_free_memory_less_the_plans_reserve_capped_by_its_budget(device_type, patcher_free, plan,
                                                                                 expected):
    assert budget.auto_budget_bytes(vae_on(device_type, patcher_free), plan, CoreMemory(10 * GIB)) == expected


def test_auto_budget_with_nothing_free_falls_back_to_the_plans_budget_and_never_goes_negative():
    plan = SimpleNamespace(reserve_vram_bytes=4 * GIB, vae_decode_budget_bytes=3 * GIB)
    assert budget.auto_budget_bytes(vae_on("cuda"), plan, CoreMemory(1 * GIB)) == 3 * GIB
    assert budget.auto_budget_bytes(vae_on("cuda"), None, CoreMemory(-5)) == 0


@pytest.mark.parametrize("variant, kind, width, height, frames", [
    ("ti2v_5b", "wan2.2", 64, 64, 9),  # `python -m wanfit demo` with the tiny models
    ("t2v_a14b", "wan2.1", 832, 480, 81),
])
def test_a_cpu_plans_decode_budget_is_what_the_decode_needs_so_the_decode_fits(variant, kind, width, height, frames):
    """One memory model: the offload plan gives a CPU decode the budget at which the decode's own search
    (the node's, the tiles') plans it exactly, and says so, instead of a one-tile figure the search rejects."""
    from wanfit.plan import Job, cpu_device, plan

    result = plan(cpu_device(64 * GIB), variant, Job(width, height, frames))
    latent = budget.latent_shape_for(kind, width, height, frames)
    outlook = budget.decode_outlook(kind, latent, result.vae_decode_budget_bytes, 4, "cpu")
    assert outlook.fits and outlook.exact, outlook.describe()
    assert result.vae_decode_budget_bytes == outlook.exact_budget_bytes
    assert "does not fit" not in result.vae_decode_outlook and result.vae_decode_outlook.startswith("exact"), \
        result.vae_decode_outlook


def test_a_gpu_plan_refuses_a_decode_only_below_the_decodes_own_smallest_budget():
    """The GPU plan's decode check is the decode's search: its VRAM phase is the planned decode's peak."""
    from wanfit.plan import Job, device_for_gpu, plan

    result = plan(device_for_gpu("RTX 4090"), "ti2v_5b", Job(1280, 704, 121))
    outlook = budget.job_decode_outlook("wan2.2", 1280, 704, 121, 1, result.vae_decode_budget_bytes, "cuda")
    assert outlook.fits and outlook.predicted_peak_bytes <= result.vae_decode_budget_bytes


@pytest.mark.parametrize("kind, latent", [("wan2.1", (1, 16, 2, 16, 16)), ("wan2.2", (1, 48, 2, 8, 8))])
def test_a_blended_plan_counts_its_tile_buffer_and_weight_map(kind, latent):
    """A capped-halo tile is held whole (every frame) until it is blended in, beside a weight map of the frame:
    with the video on the decode device (the CPU), the approximate plan's peak includes both."""
    layouts = budget.static_layouts(kind)
    exact = budget.exact_budget_bytes(layouts, latent, 4, "cpu", True)
    plan, _ = budget.search_plan(layouts, latent, exact - 1, 4, "cpu", True)
    assert plan is not None and not plan.exact
    height, width = (size * layouts[0].spec.total_scale for size in latent[3:])
    frames = layouts[0].frames_out(latent[2])
    tile = 3 * frames * 4 * max(r.output[1] - r.output[0] for r in plan.rows) * \
        max(c.output[1] - c.output[0] for c in plan.cols)
    assert plan.predicted_peak_bytes >= plan.fixed_bytes + 4 * height * width + tile


@pytest.mark.parametrize("device_type, same_device", [("cpu", True), ("cuda", False)])
@pytest.mark.parametrize("kind, latent", [("wan2.1", (1, 16, 2, 16, 16)), ("wan2.2", (1, 48, 3, 12, 12))])
def test_the_smallest_budget_the_search_names_plans_and_one_byte_less_does_not(kind, latent, device_type,
                                                                               same_device):
    """The minimum a refusal states (scaled by the CPU allocator's factor) is a budget that plans."""
    layouts = budget.static_layouts(kind)
    dtype_bytes = 4 if device_type == "cpu" else 2
    _, minimum = budget.search_plan(layouts, latent, 0, dtype_bytes, device_type, same_device)
    assert budget.search_plan(layouts, latent, minimum, dtype_bytes, device_type, same_device)[0] is not None
    assert budget.search_plan(layouts, latent, minimum - 1, dtype_bytes, device_type, same_device)[0] is None
