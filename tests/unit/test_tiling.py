"""Tile planning (wanfit.decode.tiling): pure arithmetic, no torch."""

from dataclasses import replace

from hypothesis import given, settings, strategies as st
import pytest

from wanfit.decode import tiling
from wanfit.decode.tiling import DecoderSpec, LayerSpec, axis_regions, stem_peak_bytes, tile_peak_bytes

# The Wan 2.1 decoder tail after its latent-resolution blocks, as the engine describes it
# (3 res blocks = radius 2 each, upsample = scale 2 radius 1, head radius 1); channels 384/192/96.
WAN21_TAIL = DecoderSpec(name="wan2.1", layers=(
    LayerSpec(2, 1, 768, 384 * 2, 1.0),
    *[LayerSpec(1, 2, 2 * 576, 384 * 2, 8.0)] * 3,
    LayerSpec(2, 1, 0, 384 * 4, 1.0),
    *[LayerSpec(1, 2, 2 * 384, 192 * 4, 2.0)] * 3,
    LayerSpec(2, 1, 0, 192 * 4, 0.5),
    *[LayerSpec(1, 2, 2 * 192, 96 * 4, 0.5)] * 3,
    LayerSpec(1, 1, 2 * 96, 96 * 4, 0.1),
), activation_factor=5.0, stem_elems_per_latent_px=5000.0)


@pytest.mark.parametrize("size, parts, expected", [
    (32, 1, [(0, 32)]),
    (32, 2, [(0, 16), (16, 32)]),
    (12, 5, [(0, 2), (2, 5), (5, 7), (7, 10), (10, 12)]),
    (7, 7, [(i, i + 1) for i in range(7)]),
])
def test_split_evenly(size, parts, expected):
    assert tiling.split_evenly(size, parts) == expected


def test_receptive_radius():
    assert WAN21_TAIL.receptive_radius_latent == pytest.approx(0.5 + 3 + 0.25 + 1.5 + 0.125 + 0.75 + 0.125)
    assert WAN21_TAIL.total_scale == 8


@pytest.mark.parametrize("core, size", [((0, 32), 32), ((0, 16), 32), ((16, 32), 32), ((10, 20), 32), ((5, 6), 12)])
def test_exact_regions_chain_and_cover_the_receptive_field(core, size):
    regions = tiling.axis_regions(core, size, WAN21_TAIL.layers)
    assert regions.output == regions.core_out == (core[0] * 8, core[1] * 8)
    scale = 1
    for i, (layer, (in_a, in_b, out_a, out_b)) in enumerate(zip(WAN21_TAIL.layers, regions.layer_regions)):
        assert 0 <= in_a < in_b <= size * scale, f"layer {i}: input crop outside the image"
        scale *= layer.scale
        # what the layer computes covers what it must deliver, grown by its radius where not at a border
        assert layer.scale * in_a <= max(0, out_a - layer.radius) or in_a == 0
        assert layer.scale * in_b >= min(size * scale, out_b + layer.radius)
        if i + 1 < len(regions.layer_regions):
            assert regions.layer_regions[i + 1][0:2] == (out_a, out_b), f"layer {i + 1} does not read layer {i}'s crop"
    # the first crop: core grown by the whole receptive radius (rounded out), clipped at the borders
    first = regions.layer_regions[0]
    halo = WAN21_TAIL.receptive_radius_latent
    assert first[0] <= max(0, core[0] - halo) + 1e-9 and first[1] >= min(size, core[1] + halo) - 1e-9


def test_capped_regions_stay_in_the_cap_box():
    regions = tiling.axis_regions((10, 20), 32, WAN21_TAIL.layers, halo_cap=2)
    assert regions.output == (8 * 8, 22 * 8)
    scale = 1
    for layer, (in_a, in_b, _, _) in zip(WAN21_TAIL.layers, regions.layer_regions):
        assert 8 * scale <= in_a and in_b <= 22 * scale
        scale *= layer.scale


def test_everything_fits_one_tile():
    plan, minimum = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40)
    assert plan.tile_count == 1 and plan.exact
    assert plan.relative_cost == pytest.approx(1.0, abs=0.01)
    assert minimum < plan.predicted_peak_bytes


def test_smaller_budgets_give_more_tiles_and_more_cost():
    full = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40)[0].predicted_peak_bytes
    previous = None
    for fraction in (1.0, 0.75, 0.5, 0.25):
        plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), int(full * fraction))
        assert plan is not None, f"nothing fits {fraction:.0%} of the untiled peak"
        assert plan.predicted_peak_bytes <= full * fraction
        if previous is not None:
            assert plan.tile_count >= previous.tile_count
            assert plan.relative_cost >= previous.relative_cost - 1e-9
        previous = plan


def test_below_minimum_returns_none_and_the_minimum():
    plan, minimum = tiling.plan_tiles(WAN21_TAIL, (32, 32), 1000)
    assert plan is None and minimum > 1000
    plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), minimum)
    assert plan is not None and plan.predicted_peak_bytes == minimum


def test_exact_is_preferred_to_capped_when_both_fit():
    plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40, halo_caps=(None, 2))
    assert plan.exact and plan.halo_cap_latent_px is None


def test_fixed_bytes_count_against_the_budget():
    without, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40)
    plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40, fixed_bytes=123)
    assert plan.predicted_peak_bytes == without.predicted_peak_bytes + 123
    tight, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), without.predicted_peak_bytes + 100, fixed_bytes=123)
    assert tight.tile_count > 1, "the fixed bytes must push the plan to smaller tiles"


@settings(max_examples=40, deadline=None)
@given(h=st.integers(2, 90), w=st.integers(2, 160), fraction=st.floats(0.05, 1.5))
def test_any_plan_respects_its_budget(h, w, fraction):
    full = tiling.plan_tiles(WAN21_TAIL, (h, w), 2**50)[0].predicted_peak_bytes
    budget = int(full * fraction)
    plan, minimum = tiling.plan_tiles(WAN21_TAIL, (h, w), budget)
    if plan is None:
        assert minimum > budget
    else:
        assert plan.predicted_peak_bytes <= budget
        cores_h = [row.core for row in plan.rows]
        assert cores_h[0][0] == 0 and cores_h[-1][1] == h
        assert all(a[1] == b[0] for a, b in zip(cores_h, cores_h[1:])), "row cores must tile the latent"


@pytest.mark.parametrize("ramp", [8, 16])
def test_feather_weights_sum_to_one_across_a_seam(ramp):
    size, seam = 256, 128
    left = tiling.feather_weights((0, seam + ramp), (0, seam), size, ramp)
    right = tiling.feather_weights((seam - ramp, size), (seam, size), size, ramp)
    total = [0.0] * size
    for pos, weight in zip(range(0, seam + ramp), left):
        total[pos] += weight
    for pos, weight in zip(range(seam - ramp, size), right):
        total[pos] += weight
    assert all(t == pytest.approx(1.0) for t in total)
    assert left[0] == 1.0 and right[-1] == 1.0, "no ramp at the image border"


def test_conv_transients_count_at_the_worst_layer_only():
    with_convs = DecoderSpec(name="t", layers=tuple(
        LayerSpec(1, 1, 10, 8, 1.0, convs=(64 * 64 * 27,)) for _ in range(3)), activation_factor=2.0)
    without = DecoderSpec(name="t", layers=with_convs.layers, activation_factor=2.0, conv_transients=False)
    row = axis_regions((0, 4), 4, with_convs.layers)
    col = axis_regions((0, 4), 4, with_convs.layers)
    # the weight's reorder, whatever the crop, and only one layer's transient at a time
    assert tile_peak_bytes(with_convs, row, col, 4) - tile_peak_bytes(without, row, col, 4) == 4 * 64 * 64 * 27


def test_a_deeper_stem_holds_its_layers_whole_frame():
    up = LayerSpec(2, 1, 100, 50, 1.0)
    block = LayerSpec(1, 2, 200, 40, 1.0)
    shallow = DecoderSpec(name="t", layers=(up, block, up, block), stem_elems_per_latent_px=300.0,
                          stem_act_elems_per_latent_px=10.0, activation_factor=3.0)
    deep = DecoderSpec(name="t", layers=(up, block), stem_elems_per_latent_px=300.0,
                       stem_act_elems_per_latent_px=10.0, activation_factor=3.0, stem_layers=(up, block))
    assert deep.stem_scale == 2 and shallow.stem_scale == 1
    # every cache of the stem layers is held (whole frame), plus the worst single working term
    caches = 100 * 8 * 8 + 200 * 16 * 16
    working = max(3.0 * 10 * 64, 3.0 * 50 * 64 * 4, 3.0 * 40 * 256)
    expected = 4 * ((300.0 - 30.0) * 64 + caches + working)
    assert stem_peak_bytes(deep, (8, 8), 4, True) == int(expected)
    assert stem_peak_bytes(shallow, (8, 8), 4, True) == int(4 * 300.0 * 64)


def test_a_layer_with_a_counted_working_set_is_not_scaled_by_the_activation_factor():
    counted = tiling.LayerSpec(scale=2, radius=1, held_elems_per_px=100.0)
    estimated = tiling.LayerSpec(scale=2, radius=1, act_elems_per_px=100.0)
    spec = lambda layer: tiling.DecoderSpec(name="t", layers=(layer,), activation_factor=5.0, conv_transients=False)
    row = col = tiling.axis_regions((0, 4), 4, (counted,))
    area_out = 8 * 8
    assert tiling.tile_peak_bytes(spec(counted), row, col, 4) == 4 * 100 * area_out
    assert tiling.tile_peak_bytes(spec(estimated), row, col, 4) == 4 * 5 * 100 * area_out


# ---------------------------------------------------------------- what the report says about exactness

def _capped_plan(**fields):
    plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40, halo_caps=(2,))
    assert not plan.exact and plan.halo_cap_latent_px == 2
    return replace(plan, **fields)


def test_an_exact_plan_does_not_claim_approximation():
    plan, _ = tiling.plan_tiles(WAN21_TAIL, (32, 32), 2**40)
    assert plan.exact
    assert "APPROXIMATE" not in plan.describe() and plan.approximation_note() == ""
    assert "exact halo" in plan.describe()


def test_an_approximate_plan_says_so_and_names_the_exact_budget_in_whole_mb():
    exact_budget = 181 * 2**20 + 1  # one byte over 181 MB: the report must round up, or 181 MB would fall short
    text = _capped_plan(exact_budget_bytes=exact_budget).describe()
    assert text.startswith("APPROXIMATE: ")
    assert "halo capped at 2 latent px" in text and "tiles blended" in text and "differ from VAE Decode" in text
    assert "the budget is too small for exact halos: exact needs a budget of at least 182 MB" in text
    assert "overlap" not in text


def test_an_approximate_plan_from_an_overlap_names_the_overlap():
    text = _capped_plan(exact_budget_bytes=64 * 2**20, overlap_set=True).describe()
    assert text.startswith("APPROXIMATE: ")
    assert "the overlap setting caps the halo: exact needs overlap 0 and a budget of at least 64 MB" in text
