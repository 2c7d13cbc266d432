"""Which decoder layers the tiles run, where the stem is cut, and what each layer costs.

Reads a ComfyUI WanVAE (comfy/ldm/wan/vae.py, vae2_2.py) by structure, not by class, and turns
its decoder into executable steps plus the wanfit.decode.tiling.LayerSpec list the tile planner uses
(scale, receptive radius for the halos, cache and activation elements per pixel, conv shapes).
"""

import math

import torch.nn as nn

from . import tiling
from .budget import StemStorage
from ..errors import WanFitError
from .core_protocol import candidate_protocols, protocol_of


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


def is_resblock(layer):
    """WAN's ResidualBlock, told by structure (it differs by class between cores)."""
    return hasattr(layer, "residual") and hasattr(layer, "shortcut")


def is_resample(layer):
    """WAN's Resample (an up- or downsample with its own cache protocol), told by structure."""
    return hasattr(layer, "mode") and hasattr(layer, "resample")


def _is_norm(module):
    return hasattr(module, "gamma") and hasattr(module, "scale") and getattr(module, "channel_first", True)


def fusable_norm_silu_conv(modules):
    """norm, SiLU, causal conv (, dropout p=0, ...) as WAN's ResidualBlock and head hold them."""
    return (len(modules) == 3 and _is_norm(modules[0]) and isinstance(modules[1], nn.SiLU)
            and isinstance(modules[2], nn.Conv3d) and hasattr(modules[2], "_padding"))


def upsample_fusable(layer):
    """WAN's Resample upsample: nearest(-exact) 2x, then a 3x3 conv with padding 1 (and for 3-D a time conv)."""
    if layer.mode not in ("upsample2d", "upsample3d"):
        return False
    parts = list(layer.resample)
    if len(parts) != 2 or not isinstance(parts[0], nn.Upsample) or not isinstance(parts[1], nn.Conv2d):
        return False
    up, conv = parts
    if getattr(conv, "weight_function", None) or getattr(conv, "bias_function", None):
        return False  # ComfyUI patches its weights on the fly (comfy.ops): leave the conv to its own forward
    scale = up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor, up.scale_factor)
    return (up.mode in ("nearest", "nearest-exact") and up.size is None and all(float(f) == 2.0 for f in scale)
            and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def require_protocol(layout):
    """The layout's protocol, or core_protocol's UnsupportedCoreError naming the decoder it does not know."""
    return layout.protocol or protocol_of(layout.module)


class Layout(StemStorage):
    """The decoder's tail as executable steps, with the matching tiling.LayerSpec list.

    cut: the upsample the tiles start at (0 = the first). Everything before it runs whole-frame
    in the stem and its output is stored for every frame; a deeper cut stores more but spares
    the tiles the halo recomputation of the stem's layers (wanfit.decode.tiling plans with both).
    """

    def __init__(self, module, activation_factor=None, cut=0, protocol=None):
        decoder = module.decoder
        self.module = module
        # the running core's padding and cache conventions (the self-check may pick another candidate);
        # None where no known convention fits: planning needs none, replaying refuses (require_protocol)
        candidates = candidate_protocols(module) if protocol is None else [protocol]
        self.protocol = candidates[0] if candidates else None
        self.kind = _vae_kind(module)
        self.patch = _patch_size(module)
        self.z_dim = module.conv2.in_channels
        self.stem_channels = decoder.conv1.out_channels
        self.cut = cut
        self.steps = []  # (kind, module or None, layer index or None)
        self.layers = []
        self.temporal_factor = 1
        # frames per latent frame at this depth (for the cost model); the tail streams them one at a
        # time (see _run_tail), so a layer's input is always one frame and a temporal upsample's output two.
        frames = 1
        channels = self.stem_channels
        self.channels_before = []  # channels of x entering each step (a block_start: the block's input)
        self.split_after = set()  # tail step indices after which the chunk is split into single frames
        split_pending = False  # a temporal upsample was added; split after the top-level layer holding it

        def add_layer(kind, layer, spec):
            self.steps.append((kind, layer, len(self.layers)))
            self.channels_before.append(channels)
            self.layers.append(spec)

        def add_module(layer):
            nonlocal frames, split_pending, channels
            if is_resblock(layer):
                conv_a, conv_b = [m for m in layer.residual if isinstance(m, nn.Conv3d)]
                c_in, c_out = conv_a.in_channels, conv_b.out_channels
                macs = (c_in * c_out + c_out * c_out) * 27 + (c_in * c_out if c_in != c_out else 0)
                convs = (c_out * c_in * 27, c_out * c_out * 27)
                add_layer("module", layer, tiling.LayerSpec(
                    scale=1, radius=_conv_radius(layer.residual), cache_elems_per_px=2 * (c_in + c_out),
                    act_elems_per_px=max(c_in, c_out), macs_per_px=macs * frames, convs=convs))
                channels = c_out
            elif is_resample(layer):
                if layer.mode not in ("upsample2d", "upsample3d", "none"):
                    raise WanFitError(f"decoder layer mode {layer.mode!r} is not a WAN decoder upsample")
                if layer.mode == "none":
                    add_layer("module", layer, tiling.LayerSpec(scale=1, radius=0))
                    return
                conv = layer.resample[1]
                fused = upsample_fusable(layer)
                cache = 0
                act_frames = 1
                # fused (_upsample_conv): four 2x2 phase convs on the small input, no upsampled copy
                macs = conv.in_channels * conv.out_channels * (4 if fused else 9)
                convs = []
                if layer.mode == "upsample3d":
                    # its time conv's cache, plus its two output frames, held while they stream on one by one
                    cache = 2 * layer.time_conv.in_channels + 2 * conv.out_channels * 4
                    time_in, time_out = layer.time_conv.in_channels, layer.time_conv.out_channels
                    macs += time_in * time_out * 3 / 8  # at input px, x2 frames
                    convs.append(time_out * time_in * 3)
                    frames *= 2
                    act_frames = 2
                    self.temporal_factor *= 2
                    split_pending = True
                held = 0
                if fused:
                    # per output phase and frame: its 2x2 kernel (held), then oneDNN's reorder of it (CPU)
                    phase_weight = conv.out_channels * conv.in_channels * 4
                    convs.append(2 * phase_weight)
                    # what _run_upsample holds, per output px (an input px is 4): the input, the time conv's
                    # two-frame output (3-D), a padded copy per frame, oneDNN's copy of a phase's input window,
                    # one phase's result and the output frames; counted, so no activation factor
                    cin, cout = conv.in_channels, conv.out_channels
                    held = (cin * (1 + act_frames + 1) + (2 * cin if act_frames == 2 else 0)) / 4 \
                        + cout * (act_frames + 0.25)
                    act = 0
                else:
                    convs.append(conv.out_channels * conv.in_channels * 9)
                    act = max(conv.in_channels, conv.out_channels) * act_frames
                add_layer("module", layer, tiling.LayerSpec(
                    scale=2, radius=_conv_radius(layer.resample), cache_elems_per_px=cache,
                    act_elems_per_px=act, held_elems_per_px=held, macs_per_px=macs * frames, convs=tuple(convs)))
                channels = conv.out_channels
            else:
                raise WanFitError(f"unexpected layer {type(layer).__name__} in the VAE decoder: not a WAN VAE")

        for layer in decoder.upsamples:
            if hasattr(layer, "avg_shortcut") and hasattr(layer, "upsamples"):  # Wan 2.2 Up_ResidualBlock
                self.steps.append(("block_start", layer, None))
                self.channels_before.append(channels)
                for inner in layer.upsamples:
                    add_module(inner)
                self.steps.append(("block_end", layer, None))
                self.channels_before.append(channels)
            else:
                add_module(layer)
            if split_pending:  # split at the top level only: a block's shortcut needs its whole input
                self.split_after.add(len(self.steps) - 1)
                split_pending = False

        head_conv = [m for m in decoder.head if isinstance(m, nn.Conv3d)][-1]
        add_layer("head", decoder.head, tiling.LayerSpec(
            scale=1, radius=_conv_radius(decoder.head), cache_elems_per_px=2 * head_conv.in_channels,
            act_elems_per_px=head_conv.in_channels,
            macs_per_px=head_conv.in_channels * head_conv.out_channels * 27 * frames,
            convs=(head_conv.out_channels * head_conv.in_channels * 27,)))
        if self.patch > 1:
            add_layer("unpatchify", None, tiling.LayerSpec(scale=self.patch, radius=0, act_elems_per_px=3))

        # Everything before the cut's upsample runs whole-frame in the stem. The first cut keeps the
        # stem at latent resolution (cheap to hold) and it carries half the receptive field, which
        # tiles would otherwise recompute; deeper cuts carry more of it.
        upsamples = [n for n, (kind, _, i) in enumerate(self.steps) if kind == "module" and self.layers[i].scale > 1]
        self.cut_count = len(upsamples)
        if not 0 <= cut < self.cut_count:
            raise WanFitError(f"stem cut {cut} out of range: this decoder has {self.cut_count} upsamples")
        cut_step = upsamples[cut]
        first_tail = self.steps[cut_step][2]
        if self.steps[cut_step - 1][0] == "block_start":
            cut_step -= 1  # a block that starts right at the cut belongs to the tail
        open_blocks = [n for n in range(cut_step) if self.steps[n][0] == "block_start"
                       and not any(self.steps[m][0] == "block_end" for m in range(n, cut_step))]
        self.block_open_at_cut = bool(open_blocks)
        cut_channels = self.channels_before[cut_step]
        block_channels = self.channels_before[open_blocks[-1]] if open_blocks else 0
        self.stem_steps = self.steps[:cut_step]
        self.steps = [(kind, layer, None if i is None else i - first_tail) for kind, layer, i in self.steps[cut_step:]]
        self.stem_split_after = {n for n in self.split_after if n < cut_step}
        self.split_after = {n - cut_step for n in self.split_after if n >= cut_step}
        first_up = next(i for i, spec in enumerate(self.layers) if spec.scale > 1)
        latent_layers = self.layers[:first_up]  # resblocks at latent resolution: their cost in the flat stem term
        stem_layers = tuple(self.layers[first_up:first_tail])
        self.layers = self.layers[first_tail:]
        self.stem_scale = math.prod(spec.scale for spec in stem_layers)
        self.stem_temporal_factor = 2 ** sum(1 for kind, layer, _ in self.stem_steps
                                             if kind == "module" and getattr(layer, "mode", "") == "upsample3d")

        if activation_factor is None:
            activation_factor = tiling.ACTIVATION_FACTOR.get(self.kind, tiling.DEFAULT_ACTIVATION_FACTOR)
        c0 = self.stem_channels
        stem_cache = 2 * (self.z_dim + 4 * c0) + sum(spec.cache_elems_per_px for spec in latent_layers)
        # conv1, the middle blocks and the latent-resolution layers, for their CPU conv transient
        latent_convs = tuple(conv for spec in latent_layers for conv in spec.convs)
        latent_convs += tuple(m.weight.numel() for m in (decoder.conv1, *decoder.middle.modules())
                              if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        # stored per output frame of the stem, per pixel at the cut's resolution
        self.stored_channels_per_frame = cut_channels + block_channels
        self.spec = tiling.DecoderSpec(
            name=self.kind, layers=tuple(self.layers), activation_factor=activation_factor,
            stem_elems_per_latent_px=stem_cache + activation_factor * c0, stem_act_elems_per_latent_px=c0,
            temporal_factor=self.temporal_factor, stem_layers=stem_layers, stem_convs=latent_convs)
        self.cache_len = sum(1 for m in decoder.modules() if isinstance(m, nn.Conv3d))


def decoder_spec(module, activation_factor=None):
    """The tiling.DecoderSpec of a WanVAE module (ComfyUI's VAE.first_stage_model)."""
    return Layout(module, activation_factor).spec
