"""The tiled WAN VAE decode against the running core's own decoders (comfy/ldm/wan/vae.py, vae2_2.py).

In-process on each supported core: the core's WanVAE classes at their real structure, built narrow
(dim 8) with random weights, so every replayed layer, cache and padding is checked against the core's
own WanVAE.decode, not a copy of it.
"""

import copy
import math

import pytest
import torch

from tests.comfy_import import import_comfy
from wanfit import decode
from wanfit.decode import budget as decode_budget, core_protocol, fused_layers, layout as decode_layout
from wanfit.decode import plan as decode_plan, tiling
from wanfit.errors import InvalidInputError

KINDS = ("wan2.1", "wan2.2")


@pytest.fixture(scope="module")
def core_vaes(comfyui):
    """The running core's WAN VAE modules: {"wan2.1": comfy.ldm.wan.vae, "wan2.2": comfy.ldm.wan.vae2_2}."""
    import_comfy(comfyui)
    import comfy.ldm.wan.vae as vae21
    import comfy.ldm.wan.vae2_2 as vae22

    return {"wan2.1": vae21, "wan2.2": vae22}


def build_vae(core_vaes, kind, dim=8, seed=0, device=None):
    """The core's WanVAE of this kind with comfy/sd.py's structure at width dim; random weights (norm gains 1,
    conv weights N(0, 0.7/sqrt(fan_in)), zero biases) give finite, non-flat frames."""
    common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    with torch.device(device or "cpu"):
        if kind == "wan2.2":
            module = core_vaes[kind].WanVAE(dim=dim, dec_dim=dim, z_dim=48, **common)
        else:
            module = core_vaes[kind].WanVAE(dim=dim, z_dim=16, **common)
    if device == "meta":
        return module
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if name.endswith("gamma"):
                tensor.fill_(1.0)
            elif name.endswith("bias"):
                tensor.zero_()
            else:
                tensor.normal_(0, 0.7 / math.sqrt(tensor[0].numel()), generator=generator)
    return module.eval()


@pytest.fixture(scope="module", params=KINDS)
def small_vae(request, core_vaes):
    """(kind, the core's WanVAE, a 2x6x7 latent, the core's own decode of it)."""
    torch.manual_seed(0)
    module = build_vae(core_vaes, request.param)
    latent = torch.randn(1, 48 if request.param == "wan2.2" else 16, 2, 6, 7)
    with torch.inference_mode():
        reference = module.decode(latent)
    return request.param, module, latent, reference


def _budget_for_tiles(module, latent, tiles, overlap=None):
    """The smallest budget whose tiled plan (exact unless overlap) has at most `tiles` tiles (search over the
    planner; decode with allow_untiled=False: on a CPU the VAE's own decode fits below any tiling)."""
    low, high = 1, 2**34
    while high - low > 1024:
        middle = (low + high) // 2
        plan = decode.plan_decode(module, latent.shape, middle, overlap=overlap, allow_untiled=False)
        if plan is not None and plan.exact == (overlap is None) and plan.tile_count <= tiles:
            high = middle
        else:
            low = middle
    return high


# ---------------------------------------------------------------- exactness

def test_layout_matches_the_decoder(small_vae):
    kind, module, latent, reference = small_vae
    spec = decode.decoder_spec(module)
    assert spec.name == kind
    assert spec.total_scale * latent.shape[-1] == reference.shape[-1]
    # the stem runs the latent-resolution blocks (6 px); the tiles see 0.5 + 3 + 0.25 + 1.5 + 0.125 + 0.75 + 0.125
    assert spec.receptive_radius_latent == pytest.approx(6.25)


@pytest.mark.parametrize("tiles", [1, 2, 4, 9])
def test_tiled_decode_equals_untiled(small_vae, tiles):
    kind, module, latent, reference = small_vae
    budget = _budget_for_tiles(module, latent, tiles)
    plan = decode.plan_decode(module, latent.shape, budget, allow_untiled=False)
    assert plan.exact and plan.tile_count <= tiles and not plan.untiled
    out = decode.decode_latent(module, latent, budget, allow_untiled=False)
    assert out.shape == reference.shape, f"{kind}: expected {tuple(reference.shape)}, got {tuple(out.shape)}"
    diff = (out - reference).abs().max().item()
    assert diff < 1e-5, f"{kind} with {plan.describe()}: max abs diff {diff} vs the untiled decode"


def test_capped_halo_blends_without_holes(small_vae):
    kind, module, latent, reference = small_vae
    out = decode.decode_latent(module, latent, 2**40, overlap=1)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    small = _budget_for_tiles(module, latent, 4, overlap=2)
    assert decode.plan_decode(module, latent.shape, small, overlap=2).tile_count > 1
    out = decode.decode_latent(module, latent, small, overlap=2)
    assert torch.isfinite(out).all()
    # approximate near seams, but the same picture: well correlated with the exact decode
    correlation = torch.corrcoef(torch.stack([out.flatten(), reference.flatten()]))[0, 1].item()
    assert correlation > 0.9, f"{kind}: capped-halo decode correlates {correlation:.3f} with the exact one"


def test_memory_does_not_grow_with_frames(small_vae):
    kind, module, latent, _ = small_vae
    shape = list(latent.shape)
    peaks = []
    for frames in (2, 21, 81):
        shape[2] = frames
        plan = decode.plan_decode(module, shape, 2**40, device="cuda", output_device="cpu", allow_untiled=False)
        peaks.append(plan.predicted_peak_bytes)
    assert peaks[0] == peaks[1] == peaks[2], f"{kind}: predicted peak changed with the frame count: {peaks}"


# ---------------------------------------------------------------- inputs

def test_wrong_latent_channels_name_both_vaes(core_vaes):
    module = build_vae(core_vaes, "wan2.2")
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, torch.zeros(1, 16, 2, 4, 4), 2**30)
    message = str(error.value)
    assert "Wan 2.2 VAE" in message and "Wan 2.1 VAE" in message, message
    module = build_vae(core_vaes, "wan2.1")
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, torch.zeros(1, 48, 2, 4, 4), 2**30)
    assert "Wan 2.1 VAE" in str(error.value) and "Wan 2.2 VAE" in str(error.value), str(error.value)


@pytest.mark.parametrize("shape", [(1, 16, 0, 4, 4), (0, 16, 2, 4, 4), (1, 16, 2, 0, 4)])
def test_empty_latent_is_refused(core_vaes, shape):
    with pytest.raises(InvalidInputError, match="non-empty"):
        decode.decode_latent(build_vae(core_vaes, "wan2.1"), torch.zeros(shape), 2**30)


def test_flat_latent_is_refused(core_vaes):
    with pytest.raises(InvalidInputError, match="5-D"):
        decode.decode_latent(build_vae(core_vaes, "wan2.1"), torch.zeros(16, 4, 4), 2**30)


def test_budget_below_the_smallest_tile_states_the_minimum(core_vaes):
    module = build_vae(core_vaes, "wan2.1")
    latent = torch.zeros(1, 16, 2, 8, 8)
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, latent, 1024)
    message = str(error.value)
    assert "at least" in message and "MB" in message, message
    minimum_mb = int(message.split("at least ")[1].split(" MB")[0])
    assert decode.plan_decode(module, latent.shape, minimum_mb * 2**20) is not None


def test_non_positive_budget_is_refused(core_vaes):
    with pytest.raises(InvalidInputError, match="budget"):
        decode.decode_latent(build_vae(core_vaes, "wan2.1"), torch.zeros(1, 16, 2, 4, 4), 0)


# ---------------------------------------------------------------- progress, hooks, OOM ladder

def test_progress_reaches_total_and_never_goes_back(small_vae):
    kind, module, latent, _ = small_vae
    calls = []
    budget = _budget_for_tiles(module, latent, 4)
    decode.decode_latent(module, latent, budget, progress=lambda done, total: calls.append((done, total)),
                         allow_untiled=False)
    assert calls, "no progress reported"
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1], calls


def test_free_models_hook_gets_the_predicted_peak(small_vae):
    kind, module, latent, _ = small_vae
    asked = []
    budget = _budget_for_tiles(module, latent, 2)
    decode.decode_latent(module, latent, budget, free_models_for_decode=asked.append, allow_untiled=False)
    plan = decode.plan_decode(module, latent.shape, budget, allow_untiled=False)
    assert asked == [plan.predicted_peak_bytes]
    assert plan.predicted_peak_bytes <= budget


def test_oom_retries_smaller_tiles_and_keeps_the_result_exact(small_vae):
    kind, module, latent, reference = small_vae
    attempts = []

    def big_tiles_oom(step):
        if step.stage != "tile" or step.frame:
            return
        area = (step.rows[1] - step.rows[0]) * (step.cols[1] - step.cols[0])
        attempts.append(area)
        if area > 12:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    calls = []
    out = decode.decode_latent(module, latent, 2**40, progress=lambda d, t: calls.append((d, t)),
                               allow_untiled=False, oom=big_tiles_oom)
    assert attempts[0] == 42 and min(attempts) <= 12, attempts
    assert (out - reference).abs().max().item() < 1e-5
    assert calls[-1][0] == calls[-1][1]


def test_oom_everywhere_falls_back_to_the_cpu(small_vae):
    kind, module, latent, reference = small_vae
    module64 = copy.deepcopy(module).double()

    def device_always_oom(step):
        if step.stage == "tile" and step.dtype == torch.float64:  # the "device": float64; the CPU fallback float32
            raise RuntimeError("CUDA error: out of memory")

    out = decode.decode_latent(module64, latent.double(), 2**40, allow_untiled=False, oom=device_always_oom)
    assert (out - reference).abs().max().item() < 1e-4
    assert next(module64.parameters()).dtype == torch.float64, "the decoder was not put back after the fallback"


def test_other_errors_are_not_swallowed(small_vae):
    kind, module, latent, _ = small_vae

    def broken(step):
        if step.stage == "tile":
            raise ValueError("a bug, not an OOM")

    with pytest.raises(ValueError, match="a bug"):
        decode.decode_latent(module, latent, 2**40, allow_untiled=False, oom=broken)


def test_plan_picks_fewest_tiles_when_everything_fits(small_vae):
    kind, module, latent, _ = small_vae
    plan = decode.plan_decode(module, latent.shape, 2**40)
    assert plan.tile_count == 1 and plan.exact
    assert plan.relative_cost == pytest.approx(1.0, abs=0.05)


def test_planned_peak_never_exceeds_budget(small_vae):
    kind, module, latent, _ = small_vae
    full = decode.plan_decode(module, latent.shape, 2**40, allow_untiled=False).predicted_peak_bytes
    for fraction in (1.0, 0.75, 0.5, 0.25):
        plan = decode.plan_decode(module, latent.shape, int(full * fraction))
        if plan is not None:
            assert plan.predicted_peak_bytes <= full * fraction
        else:
            with pytest.raises(InvalidInputError, match="at least"):
                decode.decode_latent(module, latent, int(full * fraction))


# ---------------------------------------------------------------- frame streaming

def test_frames_stream_one_at_a_time_after_each_temporal_upsample(small_vae):
    kind, module, _, _ = small_vae
    layout = decode_layout.Layout(module)
    # Wan 2.1: after the two upsample3d layers; Wan 2.2: after the two blocks that end with one
    assert len(layout.split_after) == 2, f"{kind}: split points {sorted(layout.split_after)}"
    for n in layout.split_after:
        kind_n, layer, _ = layout.steps[n]
        assert kind_n == "block_end" or getattr(layer, "mode", None) == "upsample3d"
    # every layer's input is one frame, so only a temporal upsample's output holds two
    for step_kind, layer, i in layout.steps:
        if i is None:
            continue
        frames = 2 if getattr(layer, "mode", None) == "upsample3d" else 1
        spec = layout.layers[i]
        assert spec.act_elems_per_px % frames == 0


def _four_latent_frames(module, latent, seed):
    """A 4-latent-frame version of the fixture's latent and its untiled decode."""
    longer = torch.randn(latent.shape[0], latent.shape[1], 4, *latent.shape[-2:],
                         generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return longer, module.decode(longer)


def test_longer_latents_stream_exactly_through_the_caches(small_vae):
    kind, module, latent, _ = small_vae
    longer, reference = _four_latent_frames(module, latent, 3)
    for tiles in (1, 4):
        budget = _budget_for_tiles(module, longer, tiles)
        out = decode.decode_latent(module, longer, budget, allow_untiled=False)
        assert out.shape == reference.shape
        diff = (out - reference).abs().max().item()
        assert diff < 1e-5, f"{kind}, {tiles} tiles, 4 latent frames: max abs diff {diff}"


# ---------------------------------------------------------------- the VAE's own decode when it fits

def test_a_budget_that_fits_the_untiled_decode_runs_the_vaes_own_decode(small_vae):
    kind, module, latent, reference = small_vae
    need = decode.untiled_decode_bytes(kind, latent.shape, 4, "cpu")
    plan = decode.plan_decode(module, latent.shape, need)
    assert plan.untiled and plan.tile_count == 1 and plan.predicted_peak_bytes == need
    assert "untiled" in plan.describe()
    below = decode.plan_decode(module, latent.shape, need - 1)
    assert below is None or not below.untiled, "the untiled decode only where its need fits"
    capped = decode.plan_decode(module, latent.shape, need, overlap=2)
    assert capped is None or not capped.untiled, "overlap asks for tiles"
    calls = []
    out = decode.decode_latent(module, latent, need, progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(out, reference), "the untiled path is the VAE's own decode: bit-identical"
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)


@pytest.mark.parametrize("tiled", [False, True])
def test_a_strided_latent_decodes_bit_identically_to_its_saved_copy(small_vae, tiled):
    """A sampler may hand over a non-contiguous latent; SaveLatent stores it contiguous. CPU convs round
    differently per memory layout (seen: uint8 frames differed), so both must reach the decoder alike."""
    kind, module, latent, _ = small_vae
    strided = latent.transpose(3, 4).contiguous().transpose(3, 4)
    assert not strided.is_contiguous() and torch.equal(strided, latent)
    seen = []
    hook = module.conv2.register_forward_pre_hook(lambda conv, args: seen.append(args[0].is_contiguous()))
    budget = _budget_for_tiles(module, latent, 4) if tiled else 2**40
    try:
        outs = [decode.decode_latent(module, x, budget, allow_untiled=not tiled) for x in (strided, latent)]
    finally:
        hook.remove()
    assert seen == [True, True], f"{kind}: the decoder saw these latents contiguous: {seen}"
    assert torch.equal(outs[0], outs[1])


def test_oom_in_the_untiled_decode_falls_back_to_tiles(small_vae):
    kind, module, latent, reference = small_vae
    need = decode.untiled_decode_bytes(kind, latent.shape, 4, "cpu")
    # a budget where the VAE's own decode is planned first and tiles fit too (on a CPU they need more)
    budget = max(need, _budget_for_tiles(module, latent, 64))
    plans = []

    def untiled_oom(step):
        if step.stage == "untiled":
            raise RuntimeError("CUDA error: out of memory")

    out = decode.decode_latent(module, latent, budget, on_plan=plans.append, oom=untiled_oom)
    assert [plan.untiled for plan in plans] == [True, False]
    assert (out - reference).abs().max().item() < 1e-5


# ---------------------------------------------------------------- deeper whole-frame stems, CPU conv paths

def _budget_for_tiles_at_cut(module, latent, cut, tiles):
    """The smallest budget at which the planner, held to one stem depth, needs at most `tiles` tiles."""
    low, high = 1, 2**34
    while high - low > 1024:
        middle = (low + high) // 2
        plan = decode.plan_decode(module, latent.shape, middle, allow_untiled=False, stem_cuts=(cut,))
        if plan is not None and plan.exact and plan.tile_count <= tiles:
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize("cut", [1, 2])
def test_deeper_stems_decode_exactly(small_vae, cut):
    kind, module, latent, reference = small_vae
    budget = _budget_for_tiles_at_cut(module, latent, cut, 4)
    plans = []
    out = decode.decode_latent(module, latent, budget, allow_untiled=False, stem_cuts=(cut,), on_plan=plans.append)
    plan = plans[0]
    assert plan.stem_cut == cut and plan.stem_scale == 2 ** cut and plan.tile_count > 1
    assert f"whole-frame stem to {plan.stem_scale}x" in plan.describe()
    assert out.shape == reference.shape
    diff = (out - reference).abs().max().item()
    assert diff < 1e-5, f"{kind}, {plan.describe()}: max abs diff {diff} vs the untiled decode"


def test_the_planner_takes_a_deeper_stem_when_it_saves_compute(small_vae):
    kind, module, latent, _ = small_vae
    picked = {}
    budget = 2**36
    while budget > 2**16:
        plan = decode.plan_decode(module, latent.shape, budget, allow_untiled=False)
        if plan is not None:
            picked.setdefault(plan.stem_cut, plan)
            if plan.stem_cut:
                # no plan held to the first stem depth is cheaper at this budget
                shallow = decode.plan_decode(module, latent.shape, budget, allow_untiled=False, stem_cuts=(0,))
                assert shallow is None or not shallow.exact or shallow.relative_cost >= plan.relative_cost - 0.005
        budget = int(budget * 0.9)
    assert 0 in picked, f"{kind}: stem depths picked over the budget sweep: {sorted(picked)}"


def test_unknown_stem_depth_is_refused(small_vae):
    kind, module, latent, _ = small_vae
    with pytest.raises(InvalidInputError, match="stem_cuts"):
        decode.plan_decode(module, latent.shape, 2**30, stem_cuts=(7,))


def test_deeper_stem_stores_more_and_recomputes_less(small_vae):
    kind, module, latent, _ = small_vae
    layouts = decode_plan.layouts_of(module)
    assert [layout.cut for layout in layouts] == list(range(len(layouts))) and len(layouts) >= 2
    stored = [layout.stored_bytes(latent.shape, 4) for layout in layouts]
    assert stored == sorted(stored) and stored[0] < stored[1]
    assert [layout.stem_scale for layout in layouts] == [2 ** n for n in range(len(layouts))]
    # the same 2x2 split of the picture costs less compute when the tiles start deeper
    costs = []
    for layout in layouts[:2]:
        hw = (latent.shape[3] * layout.stem_scale, latent.shape[4] * layout.stem_scale)
        rows = tiling.plan_for_cores(layout.spec, hw, tiling.split_evenly(hw[0], 2), tiling.split_evenly(hw[1], 2))
        spans = [[sum(t.layer_regions[i][1] - t.layer_regions[i][0] for t in axis) * layer.scale
                  for i, layer in enumerate(layout.spec.layers)] for axis in rows]
        costs.append(tiling.relative_cost(layout.spec, spans[0], spans[1], 4, hw))
        assert len(rows[0]) == 2
    assert costs[1] < costs[0], f"{kind}: 2x2 tiles cost {costs} (cut 0, cut 1)"


def test_longer_latents_decode_exactly_with_a_deeper_stem(small_vae):
    kind, module, latent, _ = small_vae
    longer, reference = _four_latent_frames(module, latent, 5)
    budget = _budget_for_tiles_at_cut(module, longer, 1, 4)
    out = decode.decode_latent(module, longer, budget, allow_untiled=False, stem_cuts=(1,))
    assert (out - reference).abs().max().item() < 1e-5


def test_fused_upsample_never_builds_the_upsampled_input(small_vae):
    """Its largest tensor is its output: the 4x-sized nearest-upsampled input (the tile's biggest
    tensor in ComfyUI's Resample) never exists."""
    kind, module, _, _ = small_vae
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(tensor, torch.Tensor):
                    LargestTensor.largest = max(LargestTensor.largest, tensor.numel())
            return out

    layer = next(m for m in module.decoder.modules() if getattr(m, "mode", None) == "upsample2d")
    conv = layer.resample[1]
    x = torch.randn(1, conv.in_channels, 1, 10, 12)
    with torch.inference_mode():
        LargestTensor.largest = 0
        with LargestTensor():
            layer(x, [None], [0])
        theirs = LargestTensor.largest
        LargestTensor.largest = 0
        with LargestTensor():
            out = fused_layers.run_layer(layer, x, [None], [0], core_protocol.protocol_of(module))
        ours = LargestTensor.largest
    assert theirs >= conv.in_channels * 20 * 24, f"{kind}: the core's Resample builds the upsampled input"
    assert ours == out.numel() == conv.out_channels * 20 * 24, f"{kind}: largest tensor {ours}, output {out.numel()}"


def test_a_deeper_stems_frames_reach_the_tiles_one_at_a_time(small_vae):
    """Past the stem's temporal upsample each latent frame is two frames; the tile streams them singly,
    so its temporal upsamples hold one input frame's output, as the planner's model assumes."""
    kind, module, latent, reference = small_vae
    frames_seen = []
    time_convs = [m.time_conv for m in module.decoder.modules() if getattr(m, "mode", "") == "upsample3d"]
    hooks = [conv.register_forward_pre_hook(lambda conv, args: frames_seen.append(args[0].shape[2]))
             for conv in time_convs]
    budget = _budget_for_tiles_at_cut(module, latent, 1, 4)
    try:
        out = decode.decode_latent(module, latent, budget, allow_untiled=False, stem_cuts=(1,))
    finally:
        for hook in hooks:
            hook.remove()
    assert (out - reference).abs().max().item() < 1e-5
    assert frames_seen and max(frames_seen) == 1, f"{kind}: upsample inputs had {sorted(set(frames_seen))} frames"


def test_oom_part_way_through_a_tile_still_decodes_exactly(small_vae):
    """Exact tiles write each frame into the output as it is done; a retry after an OOM in a later
    frame rewrites the same core, so the video is still the untiled decode."""
    kind, module, latent, reference = small_vae
    state = {"failed": False}

    def oom_on_the_second_frame(step):
        if step.stage == "tile" and step.frame == 1 and not state["failed"]:
            state["failed"] = True
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    out = decode.decode_latent(module, latent, 2**40, allow_untiled=False, oom=oom_on_the_second_frame)
    assert state["failed"]
    assert (out - reference).abs().max().item() < 1e-5


# ---------------------------------------------------------------- one replay per ComfyUI core

def test_the_core_protocol_is_read_from_the_decoder_structure(small_vae):
    kind, module, _, _ = small_vae
    protocol = core_protocol.protocol_of(module)
    version = core_protocol.running_core_version()
    assert protocol.core == ("0.3.64" if version == "0.3.64" else "0.33.0"), (version, protocol)
    if protocol.core == "0.33.0":
        # 0.33.0 changed Wan 2.1's caches (pairs of frames); vae2_2.py kept the two-frame protocol
        assert protocol.conv_pads_space and protocol.layers_keep_two_frames == (kind == "wan2.2")


def test_a_decoder_of_an_unknown_core_is_refused_with_the_fix(small_vae):
    kind, module, latent, _ = small_vae
    unknown = copy.deepcopy(module)
    for sub in unknown.modules():
        if isinstance(sub, torch.nn.Conv3d) and hasattr(sub, "_padding"):
            sub._padding = [sub._padding]  # neither 0.3.64's tuple nor 0.33.0's int
    with pytest.raises(core_protocol.UnsupportedCoreError) as refused:
        decode.decode_latent(unknown, latent, 2**40, allow_untiled=False)
    message = str(refused.value)
    assert f"ComfyUI {core_protocol.running_core_version()}" in message, message
    assert "0.3.64" in message and "0.33.0" in message, message
    assert "Fix:" in message and "VAE Decode" in message, message


# ---------------------------------------------------------------- exact or approximate, and the budget that makes it exact

def _wide_latent(module, kind):
    """A 1x12x12 latent and its untiled decode: wide enough that capped-halo tilings fit below the smallest
    exact one (the fixture's 6x7 latent has none: there the smallest plan is already exact); one frame keeps
    the smallest exact tiling (up to 36 tiles) quick to decode."""
    latent = torch.randn(1, 48 if kind == "wan2.2" else 16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return latent, module.decode(latent)


def _smallest_exact_budget(module, shape):
    """The smallest budget whose plan is exact, searched over the planner itself (exactness only grows with the budget)."""
    low, high = 0, 2**40
    while high - low > 1:
        middle = (low + high) // 2
        plan = decode.plan_decode(module, shape, middle)
        low, high = (low, middle) if plan is not None and plan.exact else (middle, high)
    return high


def test_below_the_exact_budget_the_plan_says_approximate_and_names_that_budget(small_vae):
    kind, module, _, _ = small_vae
    latent, _ = _wide_latent(module, kind)
    exact_budget = _smallest_exact_budget(module, latent.shape)
    exact = decode.plan_decode(module, latent.shape, exact_budget)
    approximate = decode.plan_decode(module, latent.shape, exact_budget - 1)
    assert exact.exact and "APPROXIMATE" not in exact.describe() and exact.approximation_note() == ""
    assert approximate is not None and not approximate.exact, f"{kind}: one byte less must still fit, capped"
    assert approximate.exact_budget_bytes == exact_budget, "the plan must name the smallest exact budget"
    text = approximate.describe()
    assert text.startswith("APPROXIMATE: ") and f"halo capped at {approximate.halo_cap_latent_px} latent px" in text
    assert f"exact needs a budget of at least {math.ceil(exact_budget / 2**20)} MB" in text, text


def test_the_named_budget_decodes_exactly_and_one_byte_less_does_not(small_vae):
    kind, module, _, _ = small_vae
    latent, reference = _wide_latent(module, kind)
    named = _smallest_exact_budget(module, latent.shape)
    plans = []
    approximate = decode.decode_latent(module, latent, named - 1, on_plan=plans.append)  # what the node reports
    assert not plans[-1].exact and plans[-1].exact_budget_bytes == named and "APPROXIMATE" in plans[-1].describe()
    exact = decode.decode_latent(module, latent, plans[-1].exact_budget_bytes, on_plan=plans.append)
    assert plans[-1].exact and "APPROXIMATE" not in plans[-1].describe()
    assert (exact - reference).abs().max().item() < 1e-5, f"{kind}: the named budget must decode as VAE Decode does"
    assert (approximate - reference).abs().max().item() > 1e-3, f"{kind}: capped halos should show at the seams"


def test_an_overlap_set_on_the_node_says_it_is_what_caps_the_halo(small_vae):
    kind, module, _, _ = small_vae
    latent, _ = _wide_latent(module, kind)
    plan = decode.plan_decode(module, latent.shape, 2**40, overlap=1)
    assert not plan.exact and plan.overlap_set
    assert plan.exact_budget_bytes == _smallest_exact_budget(module, latent.shape)
    assert "the overlap setting caps the halo: exact needs overlap 0 and a budget" in plan.describe()


@pytest.mark.parametrize("kind", KINDS)
def test_the_static_plan_names_the_same_exact_budget_as_the_module_plan(core_vaes, kind):
    """The offload plan plans from static layouts (no VAE loaded); the node from the loaded module: one byte
    under the exact budget both plan approximately and name the same exact budget."""
    real = build_vae(core_vaes, kind, dim=decode_budget.WAN_VAE_CONFIGS[kind].dim, device="meta")
    # 9 frames of 192x192 (Wan 2.2) / 128x128 (Wan 2.1), between the smallest plan and the smallest exact one
    shape = (1, 48, 3, 12, 12) if kind == "wan2.2" else (1, 16, 3, 16, 16)
    budget = decode_budget.exact_budget_bytes(decode_budget.static_layouts(kind), shape, 4, "cpu", True) - 1
    from_module = decode.plan_decode(real, shape, budget)
    outlook = decode_budget.decode_outlook(kind, shape, budget, 4, "cpu")
    assert not from_module.exact and not outlook.exact
    assert outlook.exact_budget_bytes == from_module.exact_budget_bytes
    assert outlook.describe().startswith("APPROXIMATE")
    assert f"at least {math.ceil(outlook.exact_budget_bytes / 2**20)} MB" in outlook.describe()
