"""What a WAN VAE decode needs within a budget, torch-free: the plan search and the exact-halo budget.

The decode (wanfit.decode) plans over the layouts it reads off a loaded VAE; the offload plan
(wanfit.plan) has no VAE loaded, so it plans over static layouts built here from the fixed
architectures ComfyUI builds (comfy/sd.py: Wan 2.1 VAE dim 96, z 16; Wan 2.2 VAE decoder dim 256,
z 48; both dim_mult (1, 2, 4, 4), 2 residual blocks, temporal upsamples (True, True, False)). A
static layout gives the same tiling.DecoderSpec as wanfit.decode.layout.Layout reads from the
module (tests/unit/test_vae_decode.py and tests/host/test_param_counts.py check this).

Exact or approximate: the search prefers exact halos (the tiles equal the untiled decode); only
when no exact tiling fits the budget does it cap the halo and blend tiles (approximate). Such a
plan carries the smallest budget that makes the decode exact for the same latent
(exact_budget_bytes), found with the same search.
"""

from dataclasses import dataclass, replace
import functools
import math

from . import tiling

# --- VAE weights ------------------------------------------------------------------

# Counted on ComfyUI's comfy.ldm.wan.vae2_2.WanVAE / vae.WanVAE with the ddconfig
# from comfy/sd.py (meta device): encoder + decoder + 1x1 convs.
VAE_PARAM_COUNTS = {
    "wan2.2": 704_688_668,  # z=48, 16x16 spatial, 4x temporal; used by TI2V-5B
    "wan2.1": 126_892_531,  # z=16, 8x8 spatial, 4x temporal; used by the A14B experts
}
VAE_WEIGHT_DTYPE_BYTES = 2  # files are bf16/fp16; ComfyUI decodes in bf16 where supported

# What a GPU adds to the measured (CPU) untiled figure: cuDNN workspaces, allocator rounding; until a lent
# GPU measures it with torch.cuda.max_memory_allocated.
GPU_DECODE_MARGIN = 1.25


def vae_weight_bytes(vae_name, upcast_to_fp32=False):
    """The VAE's weights in memory (fp32 on the CPU, where ComfyUI upcasts them)."""
    return VAE_PARAM_COUNTS[vae_name] * (4 if upcast_to_fp32 else VAE_WEIGHT_DTYPE_BYTES)


# The halo caps (latent px) the search falls back to when no exact tiling fits, widest first.
APPROXIMATE_HALO_CAPS = (4, 2, 1)


# --- the CPU allocator -----------------------------------------------------------

# A CPU decode's RSS runs above its live tensors: glibc keeps freed tensors in its heap, where
# fragmentation holds them (bench/vae_decode_memory.py workers, docs/benchmarks.md "CPU heap": RSS /
# predicted 1.29-1.44 for Wan 2.1 and 1.34-1.72 for Wan 2.2, +126-160 MB, under glibc's dynamic mmap
# threshold), and every CPU process holds ~30 MB of oneDNN and thread workspace. So on the CPU:
# peak = predicted x CPU_PEAK_FACTOR + CPU_EXTRA_BYTES.
CPU_WORKSPACE_BYTES = 32 * 2**20
CPU_PEAK_FACTOR = 1.45
CPU_EXTRA_BYTES = 64 * 2**20 + CPU_WORKSPACE_BYTES

# Blended (halo-capped) tiles differ in size tile by tile, and under glibc's dynamic mmap threshold that
# fragments the heap past any factor: Wan 2.1 2x16x16 at 162.49 MB (6x8 tiles, cap 2) peaked at 348-391 MB
# of RSS, malloc_trim after every tile included, while its live tensors peaked at 87 MB (the same decode
# with the threshold fixed at 1 MiB). So a tiled decode on the CPU fixes the threshold once per process:
# tensors of 1 MiB and more are then returned to the system when freed and RSS follows the live tensors
# (docs/benchmarks.md, "VAE decode: approximate"). A threshold the user set (MALLOC_MMAP_THRESHOLD_) is kept.
CPU_MMAP_THRESHOLD_BYTES = 2**20
CPU_TRIM_THRESHOLD_BYTES = 128 * 2**10
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=1)
def follow_live_tensors_on_cpu():
    """Fix glibc's mmap and trim thresholds (process-wide, once) so a CPU decode's RSS stays within its
    budget; returns whether they were set (False off glibc or where the user chose a threshold)."""
    import ctypes
    import logging
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    done = mallopt(_M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD_BYTES) == 1 and \
        mallopt(_M_TRIM_THRESHOLD, CPU_TRIM_THRESHOLD_BYTES) == 1
    if done:
        logging.getLogger("wanfit").info(
            "CPU VAE decode: glibc now returns freed blocks of 1 MiB or more at once (mmap threshold fixed), "
            "so memory use follows the decode's budget")
    return done


# --- the untiled decode --------------------------------------------------------

# The VAE's own (untiled) decode is used when its measured need (times this margin) fits the budget.
UNTILED_MARGIN = 1.0

SPATIAL_SCALE = {"wan2.1": 8, "wan2.2": 16}


def untiled_decode_bytes(kind, latent_shape, dtype_bytes, device_type):
    """What the VAE's own decode needs (tiling.UNTILED_BYTES_PER_OUTPUT_PX, measured RSS, fp32 CPU)."""
    batch, _, _, h, w = latent_shape
    scale = SPATIAL_SCALE.get(kind, 8)
    per_px = tiling.UNTILED_BYTES_PER_OUTPUT_PX.get(kind, max(tiling.UNTILED_BYTES_PER_OUTPUT_PX.values()))
    gpu_margin = GPU_DECODE_MARGIN if device_type != "cpu" else 1.0  # cuDNN workspaces, allocator rounding
    return int(per_px * batch * h * w * scale * scale * dtype_bytes / 4 * UNTILED_MARGIN * gpu_margin)


# --- static layouts of the two WAN VAE decoders ----------------------------------


@dataclass(frozen=True)
class WanVaeConfig:
    """A WAN VAE decoder's fixed architecture (the ddconfig comfy/sd.py builds it with)."""

    kind: str  # "wan2.1" or "wan2.2"
    dim: int  # decoder base width
    z_dim: int
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_upsample: tuple = (True, True, False)


WAN_VAE_CONFIGS = {
    "wan2.1": WanVaeConfig("wan2.1", dim=96, z_dim=16),
    "wan2.2": WanVaeConfig("wan2.2", dim=256, z_dim=48),  # vae2_2.WanVAE's dec_dim
}


class StemStorage:
    """Frame counts and stored stem bytes of a layout (this module's StaticLayout and wanfit.decode.layout.Layout)."""

    def frames_out(self, latent_frames):
        return 1 + self.temporal_factor * (latent_frames - 1)

    def stored_bytes(self, latent_shape, dtype_bytes):
        """The stem's output kept for every frame until the last tile is done."""
        batch, _, frames, h, w = latent_shape
        stem_frames = 1 + self.stem_temporal_factor * (frames - 1)
        return batch * stem_frames * self.stored_channels_per_frame * h * w * self.stem_scale ** 2 * dtype_bytes


@dataclass(frozen=True)
class StaticLayout(StemStorage):
    """What the plan search needs of a decode layout (wanfit.decode.layout.Layout has the same fields)."""

    kind: str
    cut: int
    spec: object  # tiling.DecoderSpec
    stem_scale: int
    stem_temporal_factor: int
    temporal_factor: int
    stored_channels_per_frame: int
    z_dim: int
    cut_count: int


def _resblock_spec(c_in, c_out, frames):
    macs = (c_in * c_out + c_out * c_out) * 27 + (c_in * c_out if c_in != c_out else 0)
    convs = (c_out * c_in * 27, c_out * c_out * 27)
    return tiling.LayerSpec(scale=1, radius=2, cache_elems_per_px=2 * (c_in + c_out), act_elems_per_px=max(c_in, c_out),
                            macs_per_px=macs * frames, convs=convs)


def _upsample_spec(cin, cout, temporal, frames):
    """A fused upsample (nearest 2x + 3x3 conv as four 2x2 phase convs; 3-D: its time conv first)."""
    cache, act_frames, convs = 0, 1, []
    macs = cin * cout * 4
    if temporal:
        time_in, time_out = cin, 2 * cin
        cache = 2 * time_in + 2 * cout * 4
        macs += time_in * time_out * 3 / 8
        convs.append(time_out * time_in * 3)
        frames *= 2
        act_frames = 2
    phase_weight = cout * cin * 4
    convs.append(2 * phase_weight)
    held = (cin * (1 + act_frames + 1) + (2 * cin if act_frames == 2 else 0)) / 4 + cout * (act_frames + 0.25)
    spec = tiling.LayerSpec(scale=2, radius=1, cache_elems_per_px=cache, act_elems_per_px=0, held_elems_per_px=held,
                            macs_per_px=macs * frames, convs=tuple(convs))
    return spec, frames


def static_layout(config, cut=0, activation_factor=None):
    """The StaticLayout of a WAN VAE decoder at a stem cut, from its config alone (no module, no torch).

    Mirrors wanfit.decode.layout.Layout on ComfyUI's Decoder3d (vae.py: residual blocks then a
    Resample per stage, the Resample halving the channels; vae2_2.py: one Up_ResidualBlock per stage,
    its Resample keeping them, then a 2x2 unpatchify)."""
    if isinstance(config, str):
        config = WAN_VAE_CONFIGS[config]
    wan22 = config.kind == "wan2.2"
    dims = [config.dim * u for u in (config.dim_mult[-1], *reversed(config.dim_mult))]
    stages = len(config.dim_mult)
    layers = []  # LayerSpec, in order
    marks = []  # per layer: (is a spatial upsample, channels entering it, input channels of its open block or 0)
    temporal_ups = set()  # layer indices of the temporal upsamples
    frames, temporal_factor = 1, 1
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        up = i != stages - 1
        temporal = up and i < len(config.temporal_upsample) and config.temporal_upsample[i]
        block_in = in_dim if wan22 else 0
        if not wan22 and i in (1, 2, 3):
            in_dim //= 2
        c = in_dim
        for _ in range(config.num_res_blocks + 1):
            layers.append(_resblock_spec(c, out_dim, frames))
            marks.append((False, c, 0))
            c = out_dim
        if up:
            cout = out_dim if wan22 else out_dim // 2
            spec, frames = _upsample_spec(out_dim, cout, temporal, frames)
            if temporal:
                temporal_factor *= 2
                temporal_ups.add(len(layers))
            layers.append(spec)
            marks.append((True, out_dim, block_in))
    out_dim = dims[-1]
    head_out = 12 if wan22 else 3
    layers.append(tiling.LayerSpec(scale=1, radius=1, cache_elems_per_px=2 * out_dim, act_elems_per_px=out_dim,
                                   macs_per_px=out_dim * head_out * 27 * frames,
                                   convs=(head_out * out_dim * 27,)))
    marks.append((False, 0, 0))
    if wan22:  # 2x2 unpatchify of the head's 12 channels
        layers.append(tiling.LayerSpec(scale=2, radius=0, act_elems_per_px=3))
        marks.append((False, 0, 0))

    upsamples = [n for n, mark in enumerate(marks) if mark[0]]
    if not 0 <= cut < len(upsamples):
        raise ValueError(f"stem cut {cut} out of range: this decoder has {len(upsamples)} upsamples")
    first_tail = upsamples[cut]
    _, cut_channels, block_channels = marks[first_tail]
    first_up = upsamples[0]
    latent_layers = layers[:first_up]
    stem_layers = tuple(layers[first_up:first_tail])
    stem_scale = math.prod(spec.scale for spec in stem_layers)
    stem_temporal = 2 ** sum(1 for n in temporal_ups if n < first_tail)
    if activation_factor is None:
        activation_factor = tiling.ACTIVATION_FACTOR.get(config.kind, tiling.DEFAULT_ACTIVATION_FACTOR)
    c0 = dims[0]
    stem_cache = 2 * (config.z_dim + 4 * c0) + sum(spec.cache_elems_per_px for spec in latent_layers)
    latent_convs = tuple(conv for spec in latent_layers for conv in spec.convs)
    # conv1, then the middle: residual block, attention (to_qkv, proj: 1x1), residual block
    resblock_convs = (c0 * c0 * 27, c0 * c0 * 27)
    latent_convs += (c0 * config.z_dim * 27, *resblock_convs, 3 * c0 * c0, c0 * c0,
                     *resblock_convs)
    spec = tiling.DecoderSpec(
        name=config.kind, layers=tuple(layers[first_tail:]), activation_factor=activation_factor,
        stem_elems_per_latent_px=stem_cache + activation_factor * c0, stem_act_elems_per_latent_px=c0,
        temporal_factor=temporal_factor, stem_layers=stem_layers, stem_convs=latent_convs)
    return StaticLayout(kind=config.kind, cut=cut, spec=spec, stem_scale=stem_scale, stem_temporal_factor=stem_temporal,
                        temporal_factor=temporal_factor, stored_channels_per_frame=cut_channels + block_channels,
                        z_dim=config.z_dim, cut_count=len(upsamples))


def static_layouts(kind, stem_cuts=None, activation_factor=None):
    """One StaticLayout per stem depth of a WAN VAE ("wan2.1" or "wan2.2"), as the decode plans with."""
    first = static_layout(kind, 0, activation_factor)
    cuts = range(first.cut_count) if stem_cuts is None else sorted(set(stem_cuts))
    return [first if cut == 0 else static_layout(kind, cut, activation_factor) for cut in cuts]


def latent_shape_for(kind, width, height, frames, batch=1):
    """The latent (batch, channels, T, h, w) a width x height x frames video of this VAE decodes from."""
    scale = SPATIAL_SCALE[kind]
    return (batch, WAN_VAE_CONFIGS[kind].z_dim, (frames - 1) // 4 + 1, height // scale, width // scale)


# --- the plan search -------------------------------------------------------------


def _output_bytes(layout, latent_shape):
    batch, _, frames, h, w = latent_shape
    scale = layout.spec.total_scale * layout.stem_scale
    return batch * 3 * layout.frames_out(frames) * h * w * scale * scale * 4


def _candidates(layouts, latent_shape, dtype_bytes, device_type, same_device, overlap):
    """(layout, fixed bytes, spec, tile grid size, halo caps, blend bytes per output px) the search tries."""
    batch, _, _, h, w = latent_shape
    out_bytes = _output_bytes(layouts[0], latent_shape)
    for layout in layouts if overlap is None else layouts[:1]:
        stored = layout.stored_bytes(latent_shape, dtype_bytes)
        if layout.cut and not same_device and stored > out_bytes:
            continue  # a deeper stem's storage would outgrow the video itself in the output device's memory
        fixed = out_bytes + stored if same_device else 0
        if overlap is not None:
            caps = (int(overlap),)
        else:
            caps = (None, *APPROXIMATE_HALO_CAPS) if layout.cut == 0 else (None,)
        spec = layout.spec if device_type == "cpu" else replace(layout.spec, conv_transients=False)
        tiles_hw = (h * layout.stem_scale, w * layout.stem_scale)
        yield layout, fixed, spec, tiles_hw, caps, _blend_bytes_per_output_px(layout, latent_shape, same_device)


def _blend_bytes_per_output_px(layout, latent_shape, same_device):
    """A blended tile's frames (float32, every output frame) and its weights, per output px: held on the
    decode device when the video lives there (tiles.TileRunner buffers a blended tile until it is done)."""
    batch, _, frames, _, _ = latent_shape
    return (batch * 3 * layout.frames_out(frames) * 4 + 4) if same_device else 0


def _allocator_terms(device_type):
    """(factor, extra bytes): a plan's peak = predicted x factor + extra (the CPU allocator's overhead)."""
    return (CPU_PEAK_FACTOR, CPU_EXTRA_BYTES) if device_type == "cpu" else (1.0, 0)


def search_plan(layouts, latent_shape, budget_bytes, dtype_bytes, device_type, same_device, overlap=None,
                allow_untiled=True):
    """The fastest plan that fits: untiled, else the best (stem depth, tiling).

    Returns (tiling.TilePlan or None, the smallest budget any plan needs). An approximate plan
    (halo capped) carries exact_budget_bytes: the smallest budget whose plan is exact.
    """
    batch, _, _, h, w = latent_shape
    first = layouts[0]
    if allow_untiled and overlap is None:
        need = untiled_decode_bytes(first.kind, latent_shape, dtype_bytes, device_type)
        if need <= budget_bytes:
            whole, _ = tiling.plan_tiles(first.spec, (h, w), 2**62, dtype_bytes=dtype_bytes * batch)
            return replace(whole, untiled=True, predicted_peak_bytes=need), need
    best, best_rank, minimum = None, None, None
    factor, extra = _allocator_terms(device_type)
    for layout, fixed, spec, tiles_hw, caps, blend in _candidates(layouts, latent_shape, dtype_bytes, device_type,
                                                                  same_device, overlap):
        inner = (budget_bytes - extra) / factor
        # a batch decodes its samples together, so every per-pixel figure scales with it
        plan, smallest = tiling.plan_tiles(spec, tiles_hw, max(inner, 0), dtype_bytes=dtype_bytes * batch,
                                           fixed_bytes=fixed, halo_caps=caps, blend_bytes_per_output_px=blend)
        if smallest is not None:
            smallest = _smallest_fitting_budget(smallest, factor, extra)
            minimum = smallest if minimum is None else min(minimum, smallest)
        if plan is None:
            continue
        # seamless first, then fastest; a deeper stem only where it saves at least 1% of the compute
        rank = (not plan.exact, round(plan.relative_cost, 2), layout.cut, plan.predicted_peak_bytes)
        if best is None or rank < best_rank:
            best, best_rank = replace(plan, predicted_peak_bytes=int(plan.predicted_peak_bytes * factor) + extra,
                                      stem_cut=layout.cut), rank
    if best is not None and not best.exact:
        best = replace(best, overlap_set=overlap is not None,
                       exact_budget_bytes=exact_budget_bytes(layouts, latent_shape, dtype_bytes, device_type,
                                                             same_device, allow_untiled))
    return best, minimum


def _smallest_fitting_budget(peak, factor, extra):
    """The smallest whole budget b for which search_plan lets a tiling of this peak fit ((b - extra) / factor >= peak)."""
    def fits(budget):
        return peak <= max((budget - extra) / factor, 0)

    budget = math.ceil(peak * factor) + extra
    while fits(budget - 1):
        budget -= 1
    while not fits(budget):
        budget += 1
    return budget


def exact_budget_bytes(layouts, latent_shape, dtype_bytes, device_type, same_device, allow_untiled=True):
    """The smallest budget (bytes) at which search_plan (no overlap set) returns an exact plan for this latent."""
    batch = latent_shape[0]
    best = untiled_decode_bytes(layouts[0].kind, latent_shape, dtype_bytes, device_type) if allow_untiled else None
    factor, extra = _allocator_terms(device_type)
    for _, fixed, spec, tiles_hw, _, _ in _candidates(layouts, latent_shape, dtype_bytes, device_type, same_device,
                                                      None):
        _, smallest = tiling.plan_tiles(spec, tiles_hw, -1, dtype_bytes=dtype_bytes * batch, fixed_bytes=fixed,
                                        halo_caps=(None,))
        if smallest is None:
            continue
        budget = _smallest_fitting_budget(smallest, factor, extra)
        best = budget if best is None else min(best, budget)
    return best


@dataclass(frozen=True)
class DecodeOutlook:
    """What a decode of a job at a budget will be: exact or approximate, and the budget that makes it exact."""

    kind: str
    latent_shape: tuple
    budget_bytes: int
    fits: bool  # some plan fits the budget at all
    exact: bool
    untiled: bool
    tiles: int
    halo_cap_latent_px: object  # None when exact
    exact_budget_bytes: int  # the smallest budget with an exact plan
    minimum_budget_bytes: int  # the smallest budget with any plan
    predicted_peak_bytes: int = 0  # the plan's predicted peak at this budget (0 when nothing fits)

    def describe(self):
        exact_at = math.ceil(self.exact_budget_bytes / 2**20)
        if not self.fits:
            return (f"does not fit: the smallest tile needs {math.ceil(self.minimum_budget_bytes / 2**20)} MB, "
                    f"exact halos {exact_at} MB")
        if self.untiled:
            return f"exact (untiled: the VAE's own decode fits; exact down to a budget of {exact_at} MB)"
        tiles = f"{self.tiles} tile{'s' if self.tiles != 1 else ''}"
        if self.exact:
            return f"exact (tiles with exact halos; exact down to a budget of {exact_at} MB)"
        return (f"APPROXIMATE ({tiles}, halo capped at {self.halo_cap_latent_px} latent px, tiles blended: seams may "
                f"differ from VAE Decode by {tiling.APPROXIMATE_SEAM_ERROR}); exact needs a budget of at least "
                f"{exact_at} MB")


def decode_outlook(kind, latent_shape, budget_bytes, dtype_bytes, device_type, same_device=None):
    """Plan the decode of a latent at a budget from the VAE's static layouts, as the WanFit VAE Decode node will.

    same_device: the output video lives on the decode device (a CPU decode); default: device_type == "cpu"."""
    if same_device is None:
        same_device = device_type == "cpu"
    layouts = static_layouts(kind)
    plan, minimum = search_plan(layouts, latent_shape, budget_bytes, dtype_bytes, device_type, same_device)
    exact_at = (plan.exact_budget_bytes if plan is not None and not plan.exact else
                exact_budget_bytes(layouts, latent_shape, dtype_bytes, device_type, same_device))
    return DecodeOutlook(kind=kind, latent_shape=tuple(latent_shape), budget_bytes=int(budget_bytes),
                         fits=plan is not None, exact=plan is not None and plan.exact,
                         untiled=plan is not None and plan.untiled, tiles=plan.tile_count if plan is not None else 0,
                         halo_cap_latent_px=plan.halo_cap_latent_px if plan is not None else None,
                         exact_budget_bytes=int(exact_at), minimum_budget_bytes=int(minimum or 0),
                         predicted_peak_bytes=plan.predicted_peak_bytes if plan is not None else 0)


def _job_terms(kind, width, height, frames, batch, device_type):
    """(latent shape, dtype bytes) of a job as the node decodes it: 16-bit on a GPU, fp32 on the CPU."""
    return latent_shape_for(kind, width, height, frames, batch), 4 if device_type == "cpu" else 2


@functools.lru_cache(maxsize=1024)
def job_decode_outlook(kind, width, height, frames, batch, budget_bytes, device_type):
    """decode_outlook of a width x height x frames job at a budget: what the offload plan says of the decode
    (on a GPU the frames go to RAM; on the CPU the video shares the memory). Cached: the plan asks per candidate."""
    latent, dtype_bytes = _job_terms(kind, width, height, frames, batch, device_type)
    return decode_outlook(kind, latent, int(budget_bytes), dtype_bytes, device_type)


@functools.lru_cache(maxsize=1024)
def job_exact_budget_bytes(kind, width, height, frames, batch, device_type):
    """The smallest budget at which the node decodes this job exactly: what the plan gives the decode on the CPU."""
    latent, dtype_bytes = _job_terms(kind, width, height, frames, batch, device_type)
    return exact_budget_bytes(static_layouts(kind), latent, dtype_bytes, device_type, device_type == "cpu")


# --- the node's budget ------------------------------------------------------------


def auto_budget_bytes(vae, plan, model_management):
    """WanFit VAE Decode's budget when budget_mb is 0: free memory on the VAE's device minus the plan's reserve
    (the plan's own decode budget when that is smaller).

    Free memory as the core's VAE.decode counts it: from 0.33 the patcher's get_free_memory, which adds
    what dynamic VRAM (comfy-aimdo) can evict from other models' weights on demand; 0.3.64 has only
    model_management.get_free_memory. vae: comfy.sd.VAE; plan: a wanfit.plan.Plan, its dict, or None."""
    from ..plan.types import plan_field  # the planner imports this module: read the plan at call time

    patcher_free = getattr(getattr(vae, "patcher", None), "get_free_memory", None)
    free = patcher_free(vae.device) if patcher_free is not None else model_management.get_free_memory(vae.device)
    on_gpu = vae.device.type != "cpu"
    reserve = plan_field(plan, "reserve_vram_bytes", 0) if on_gpu else 0
    budget = free - reserve
    planned = plan_field(plan, "vae_decode_budget_bytes")
    if planned and on_gpu:
        budget = min(budget, planned) if budget > 0 else planned
    return max(int(budget), 0)
