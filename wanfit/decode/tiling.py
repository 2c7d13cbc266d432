"""Spatial tile planning for the WAN VAE decode: the largest tiles that fit a memory budget.

Pure functions over numbers (no torch), so the planner and the tests can use them anywhere.
The decode engine describes the decoder's upsampling tail as a list of LayerSpec (scale
factor, receptive radius, per-pixel cache/activation/MAC counts read off the weights); this
module turns a latent size and a budget into tile regions for every layer, a predicted peak
and a relative cost.

Why tiles carry a halo per layer: WAN's decoder is causal over time (a cache of the last
two frames per conv), so time is never split; space is. A tile's input crop is its core
grown by the receptive field of the layers still ahead, and every layer's output is cropped
back to what the rest needs, so full-resolution layers see only core plus a few pixels and
the result equals the untiled decode (exact mode). When even that does not fit, the halo is
capped and neighbouring tiles are blended with feathered weights (capped mode).
"""

from dataclasses import dataclass
import math

# A tile's working peak = its causal caches + at the worst layer ACTIVATION_FACTOR x its activation
# (conv temporaries, the residual kept alive, the padded conv input of 3 frames) + that layer's conv
# transient. Fitted per VAE by bench/vae_decode_memory.py (CPU, fp32, ComfyUI v0.3.64, one tile at
# 256x256 / 192x192, lean CPU heap, frames streamed, the fused norm/SiLU/padded-input path and fused
# upsample, CPU workspace subtracted: 5.89 for Wan 2.1, 7.88 for Wan 2.2, 2026-11-30); the values
# below carry a ~6% margin. See docs/benchmarks.md.
DEFAULT_ACTIVATION_FACTOR = 10.0
ACTIVATION_FACTOR = {"wan2.1": 6.25, "wan2.2": 8.4}
# Working bytes per output pixel of one frame of ComfyUI's VAE.decode (fp32, CPU, measured by
# bench/vae_decode_memory.py); it does not grow with the frame count.
UNTILED_BYTES_PER_OUTPUT_PX = {"wan2.1": 24_476, "wan2.2": 25_663}
MIN_CORE_LATENT_PX = 2  # smaller cores spend almost all their time on the halo
# What a capped-halo (approximate) decode differs from the untiled one by, as the report says it
# (bench/vae_decode_approx.py against ComfyUI's VAE Decode, docs/benchmarks.md "Approximate decode").
APPROXIMATE_SEAM_ERROR = "measured on random-weight VAEs: up to 30-99/255 at a pixel, PSNR 24-39 dB"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the decoder tail, as the planner sees it.

    scale: output pixels per input pixel along each spatial axis (1, or 2 for an upsample).
    radius: receptive-field radius at the output scale (one per 3x3 conv).
    cache_elems_per_px: causal-cache elements held per input pixel (2 frames x channels per cached conv).
    act_elems_per_px: elements of the layer's output per output pixel (channels x frames per chunk);
        the activation factor scales it into the layer's working memory.
    held_elems_per_px: instead, the elements the layer holds per output pixel, counted one by one
        (not scaled): for layers whose working set is known exactly (the fused upsample).
    macs_per_px: multiply-accumulates per output pixel and chunk (for the cost model only).
    convs: per conv, the elements one CPU call holds besides its input and output: its weight (oneDNN
        reorders it on every call), plus a kernel built for the call (the fused upsample's phase kernels).
    """

    scale: int
    radius: int
    cache_elems_per_px: float = 0.0
    act_elems_per_px: float = 0.0
    held_elems_per_px: float = 0.0
    macs_per_px: float = 0.0
    convs: tuple = ()


@dataclass(frozen=True)
class DecoderSpec:
    """What the planner needs to know about one VAE decoder."""

    name: str
    layers: tuple  # LayerSpec, in execution order
    activation_factor: float = DEFAULT_ACTIVATION_FACTOR
    stem_elems_per_latent_px: float = 0.0  # whole-frame stem (conv1 + middle) working elements per latent px
    stem_act_elems_per_latent_px: float = 0.0  # its activation (the part the activation factor multiplies)
    stem_attention: bool = True  # the stem holds a (h*w)^2 attention matrix when attention is not fused
    out_channels: int = 3
    temporal_factor: int = 4
    # upsampling layers run whole-frame in the stem before `layers` (a deeper stem: fewer halo
    # recomputations, more stored per frame); their output scale over the latent is stem_scale
    stem_layers: tuple = ()
    stem_convs: tuple = ()  # conv transients (elements) of the latent-resolution convs (conv1, middle)
    conv_transients: bool = True  # CPU: count each conv's weight-reorder transient

    @property
    def stem_scale(self):
        return math.prod(layer.scale for layer in self.stem_layers)

    @property
    def total_scale(self):
        return math.prod(layer.scale for layer in self.layers)

    @property
    def receptive_radius_latent(self):
        """How far (in latent pixels) one output pixel sees: the halo an exact tile needs."""
        radius, scale = 0.0, 1
        for layer in self.layers:
            scale *= layer.scale
            radius += layer.radius / scale
        return radius


@dataclass(frozen=True)
class AxisRegions:
    """One tile along one axis: its core (latent px) and the crop of every layer.

    layer_regions[i] = (in_start, in_stop, out_start, out_stop) at layer i's input/output scale;
    output = (start, stop) of the final output the tile delivers; core_out = its core at output scale.
    """

    core: tuple
    layer_regions: tuple
    output: tuple
    core_out: tuple


@dataclass(frozen=True)
class TilePlan:
    """The chosen tiling: rows x cols of cores, with predicted peak bytes and relative cost."""

    rows: tuple  # AxisRegions along height
    cols: tuple  # AxisRegions along width
    exact: bool
    halo_cap_latent_px: object  # None when exact
    predicted_peak_bytes: int
    tile_peak_bytes: int
    fixed_bytes: int
    relative_cost: float  # 1.0 = untiled
    untiled: bool = False  # the VAE's own decode fits: no tiling at all
    stem_cut: int = 0  # which upsample the tiles start at (0 = the first); the stem runs whole-frame before it
    stem_scale: int = 1  # resolution the tiles start at, in multiples of the latent
    # approximate plans (halo capped): the smallest budget whose plan is exact for the same latent (0 = not
    # worked out), and whether the caller capped the halo (an overlap) rather than the budget forcing it
    exact_budget_bytes: int = 0
    overlap_set: bool = False

    @property
    def tile_count(self):
        return len(self.rows) * len(self.cols)

    def describe(self):
        if self.untiled:
            return (f"untiled (the VAE's own decode fits the budget), predicted peak "
                    f"{self.predicted_peak_bytes / 2**20:.0f} MB, 1.00x untiled compute")
        mode = "exact halo" if self.exact else f"halo capped at {self.halo_cap_latent_px} latent px, feathered"
        stem = f", whole-frame stem to {self.stem_scale}x latent size" if self.stem_scale > 1 else ""
        text = (f"{len(self.rows)}x{len(self.cols)} tiles ({mode}{stem}), predicted peak "
                f"{self.predicted_peak_bytes / 2**20:.0f} MB, {self.relative_cost:.2f}x untiled compute")
        return text if self.exact else f"APPROXIMATE: {text}; {self.approximation_note()}"

    def approximation_note(self):
        """For a capped-halo plan: what it costs, why it was taken and the budget that makes it exact ("" when exact)."""
        if self.exact:
            return ""
        note = (f"tiles blended over a halo capped at {self.halo_cap_latent_px} latent px, so seams may differ from "
                f"VAE Decode ({APPROXIMATE_SEAM_ERROR}); ")
        if self.overlap_set:
            note += "the overlap setting caps the halo"
            needs = "overlap 0 and a budget"
        else:
            note += "the budget is too small for exact halos"
            needs = "a budget"
        if self.exact_budget_bytes:
            note += f": exact needs {needs} of at least {math.ceil(self.exact_budget_bytes / 2**20)} MB"
        return note


def split_evenly(size, parts):
    """Cut [0, size) into `parts` contiguous cores whose lengths differ by at most one."""
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def axis_regions(core, latent_size, layers, halo_cap=None):
    """Crops of every layer for one tile along one axis, worked backwards from its output.

    Exact mode (halo_cap None): each layer's input is what its output needs grown by its radius.
    Capped mode: every crop is also clamped to the core grown by halo_cap latent pixels, and the
    tile delivers core + halo_cap for feathered blending.
    """
    core_start, core_stop = core
    total_scale = math.prod(layer.scale for layer in layers)
    if halo_cap is None:
        out_start, out_stop = core_start * total_scale, core_stop * total_scale
    else:
        out_start = max(0, (core_start - halo_cap) * total_scale)
        out_stop = min(latent_size * total_scale, (core_stop + halo_cap) * total_scale)
    output = (out_start, out_stop)
    regions = []
    scale_out = total_scale
    for layer in reversed(layers):
        scale_in = scale_out // layer.scale
        size_in = latent_size * scale_in
        in_start = max(0, math.floor((out_start - layer.radius) / layer.scale))
        in_stop = min(size_in, math.ceil((out_stop + layer.radius) / layer.scale))
        if halo_cap is not None:
            in_start = max(in_start, (core_start - halo_cap) * scale_in)
            in_stop = min(in_stop, (core_stop + halo_cap) * scale_in)
        regions.append((in_start, in_stop, out_start, out_stop))
        out_start, out_stop, scale_out = in_start, in_stop, scale_in
    regions.reverse()
    return AxisRegions(core=(core_start, core_stop), layer_regions=tuple(regions), output=output,
                       core_out=(core_start * total_scale, core_stop * total_scale))


def conv_transient_elems(layer):
    """The largest per-call transient of a layer's convs on the CPU (elements): oneDNN reorders a conv's
    weight on every call (a 1024x1024x3x3x3 conv: +108 MB for any input), plus what the call holds besides."""
    return max(layer.convs, default=0.0)


def _layer_terms(spec, layers, regions):
    cache_elems = 0.0
    largest_activation = 0.0
    working = 0.0
    for layer, (ry, rx) in zip(layers, regions):
        area_in = (ry[1] - ry[0]) * (rx[1] - rx[0])
        cache_elems += layer.cache_elems_per_px * area_in
        # the layer computes on its whole input crop before the crop back, so scale^2 x the input area
        activation = layer.act_elems_per_px * area_in * layer.scale * layer.scale
        largest_activation = max(largest_activation, activation)
        transient = conv_transient_elems(layer) if spec.conv_transients else 0.0
        held = layer.held_elems_per_px * area_in * layer.scale * layer.scale
        working = max(working, spec.activation_factor * activation + transient, held + transient)
    return cache_elems, largest_activation, working


def tile_memory_terms(spec, row, col):
    """(causal-cache elements, largest single activation in elements) of one tile: the two memory terms."""
    cache_elems, largest_activation, _ = _layer_terms(spec, spec.layers, zip(row.layer_regions, col.layer_regions))
    return cache_elems, largest_activation


def tile_peak_bytes(spec, row, col, dtype_bytes):
    """Predicted working memory of one tile: its caches plus, at the worst layer, the activation factor x
    that layer's activation plus its conv transient."""
    cache_elems, _, working = _layer_terms(spec, spec.layers, zip(row.layer_regions, col.layer_regions))
    return int(dtype_bytes * (cache_elems + working))


def stem_peak_bytes(spec, latent_hw, dtype_bytes, fused_attention):
    """Whole-frame stem: conv1 + middle at latent resolution (small, except an unfused attention
    matrix), then the stem layers, whole frame (frames streamed after temporal upsamples, as in
    the tiles). Every cache is held throughout; the working terms come one layer at a time."""
    h, w = latent_hw
    latent_act = spec.activation_factor * spec.stem_act_elems_per_latent_px
    cache_elems = (spec.stem_elems_per_latent_px - latent_act) * h * w
    working = latent_act * h * w
    if spec.conv_transients and spec.stem_convs:
        working += conv_transient_elems(LayerSpec(1, 0, convs=spec.stem_convs))
    if spec.stem_layers:
        regions, scale = [], 1
        for layer in spec.stem_layers:
            regions.append(((0, h * scale), (0, w * scale)))
            scale *= layer.scale
        layer_caches, _, layer_working = _layer_terms(spec, spec.stem_layers, regions)
        cache_elems += layer_caches
        working = max(working, layer_working)
    peak = (cache_elems + working) * dtype_bytes
    if spec.stem_attention and not fused_attention:
        peak += (h * w) ** 2 * dtype_bytes * 2
    return int(peak)


def _axis_summary(latent_size, parts, layers, halo_cap):
    """Tiles along one axis, the widest of them, and the summed span of every layer's computed crop."""
    tiles = tuple(axis_regions(core, latent_size, layers, halo_cap) for core in split_evenly(latent_size, parts))
    widest = max(tiles, key=lambda t: sum(reg[1] - reg[0] for reg in t.layer_regions))
    spans = tuple(sum(t.layer_regions[i][1] - t.layer_regions[i][0] for t in tiles) * layer.scale
                  for i, layer in enumerate(layers))
    return tiles, widest, spans


def relative_cost(spec, row_spans, col_spans, tile_count, latent_hw):
    """Compute of a tiling relative to the untiled decode (MAC-weighted area of every layer crop).

    latent_hw is the size the tiles start at; whole-frame stem layers count once, untiled.
    """
    h, w = latent_hw
    tiled = untiled = 0.0
    stem_scale = spec.stem_scale
    scale = 1
    for layer in spec.stem_layers:
        scale *= layer.scale
        whole = layer.macs_per_px * (h // stem_scale * scale) * (w // stem_scale * scale)
        tiled += whole
        untiled += whole
    scale = 1
    for layer, height, width in zip(spec.layers, row_spans, col_spans):
        scale *= layer.scale
        tiled += layer.macs_per_px * height * width
        untiled += layer.macs_per_px * (h * scale) * (w * scale)
    # a fixed overhead per extra tile and chunk (kernel launches, crops, cache copies): ~ 2x2 latent px of work
    tiled += sum(layer.macs_per_px * 4 * spec.stem_scale ** 2 for layer in spec.layers) * (tile_count - 1)
    return tiled / untiled if untiled else 1.0


def _grid_options(latent_size, min_core):
    """Part counts along one axis worth trying: each distinct largest-core length once."""
    seen, options = set(), []
    for parts in range(1, max(1, latent_size // min_core) + 1):
        largest = math.ceil(latent_size / parts)
        if largest not in seen:
            seen.add(largest)
            options.append(parts)
    return options


def plan_tiles(spec, latent_hw, budget_bytes, dtype_bytes=4, fixed_bytes=0, fused_attention=True,
               halo_caps=(None, 4, 2, 1), min_core=MIN_CORE_LATENT_PX, blend_bytes_per_output_px=0):
    """The cheapest tiling whose predicted peak fits the budget; returns (plan or None, smallest peak possible).

    fixed_bytes: memory held through the whole decode on the same device (stored stem output,
    the output video when it lives on the decode device). Exact halos are preferred; capped
    halos (seams blended) only when no exact tiling fits. latent_hw is the size the tiles start
    at: the latent size times spec.stem_scale (cores, halo caps and min_core are in those pixels).
    blend_bytes_per_output_px: what a blended (capped-halo) tile holds on the decode device per output
    pixel of its region while it decodes (every frame, until it is blended in; 0 when the output lives
    elsewhere); a blended decode also holds a float32 weight map of the whole frame there.
    """
    h, w = latent_hw
    stem_scale = spec.stem_scale
    stem_bytes = stem_peak_bytes(spec, (h // stem_scale, w // stem_scale), dtype_bytes, fused_attention)
    minimum = None
    for halo_cap in halo_caps:
        rows_by_n = {n: _axis_summary(h, n, spec.layers, halo_cap) for n in _grid_options(h, min_core)}
        cols_by_n = {n: _axis_summary(w, n, spec.layers, halo_cap) for n in _grid_options(w, min_core)}
        best = None
        blend_map = 0 if halo_cap is None or not blend_bytes_per_output_px else 4 * h * w * spec.total_scale ** 2
        for rows_n, (rows, widest_row, row_spans) in rows_by_n.items():
            for cols_n, (cols, widest_col, col_spans) in cols_by_n.items():
                tile_peak = tile_peak_bytes(spec, widest_row, widest_col, dtype_bytes)
                if halo_cap is not None:
                    tile_peak += int(blend_bytes_per_output_px * _span(rows, "output") * _span(cols, "output"))
                peak = fixed_bytes + blend_map + max(tile_peak, stem_bytes)
                minimum = peak if minimum is None else min(minimum, peak)
                if peak > budget_bytes:
                    continue
                cost = relative_cost(spec, row_spans, col_spans, rows_n * cols_n, latent_hw)
                if best is None or (cost, rows_n * cols_n) < (best.relative_cost, best.tile_count):
                    best = TilePlan(rows=rows, cols=cols, exact=halo_cap is None, halo_cap_latent_px=halo_cap,
                                    predicted_peak_bytes=peak, tile_peak_bytes=tile_peak, fixed_bytes=fixed_bytes,
                                    relative_cost=cost, stem_scale=stem_scale)
        if best is not None:
            return best, minimum
    return None, minimum


def _span(tiles, field):
    """The widest of the tiles' `field` regions (start, stop) along one axis."""
    return max(getattr(tile, field)[1] - getattr(tile, field)[0] for tile in tiles)


def plan_for_cores(spec, latent_hw, row_cores, col_cores, halo_cap=None):
    """Regions for explicitly given cores (the OOM ladder splits one tile into smaller ones)."""
    rows = tuple(axis_regions(core, latent_hw[0], spec.layers, halo_cap) for core in row_cores)
    cols = tuple(axis_regions(core, latent_hw[1], spec.layers, halo_cap) for core in col_cores)
    return rows, cols


def feather_weights(region, core_out, full_size, ramp):
    """Per-pixel blend weights of one tile along one axis (a list of floats).

    Linear ramps over the 2*ramp pixels that straddle each interior core edge, so neighbouring
    tiles' weights sum to one there; no ramp at the image border.
    """
    start, stop = region
    weights = []
    for pos in range(start, stop):
        weight = 1.0
        if ramp > 0:
            if core_out[0] > 0:  # interior edge at the start
                weight = min(weight, max(0.0, (pos - (core_out[0] - ramp) + 0.5) / (2 * ramp)))
            if core_out[1] < full_size:  # interior edge at the stop
                weight = min(weight, max(0.0, ((core_out[1] + ramp) - pos - 0.5) / (2 * ramp)))
        weights.append(weight)
    return weights
