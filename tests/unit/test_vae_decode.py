"""The tiled WAN VAE decode against the untiled one, on small decoders with WAN's exact structure.

No ComfyUI here: MiniWanVAE re-creates comfy/ldm/wan/vae.py (Wan 2.1) and vae2_2.py (Wan 2.2)
decoders of ComfyUI 0.3.64 layer for layer (causal convs with the 2-frame cache, RMS norm over
channels, nearest-exact 2x upsample, temporal upsample with the 'Rep' first chunk, Wan 2.2's DupUp3D
shortcut and 2x2 unpatchify), narrow enough to decode in milliseconds; as_core_0_33 gives the same
weights 0.33.0's structure (its CausalConv3d, Wan 2.1's pairwise caches and run_up).
"""

import copy
import functools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from wanfit import decode
from wanfit.decode import budget as decode_budget, tiling
from wanfit.decode import api as decode_api, cpu_convs, fused_layers, layout as decode_layout
from wanfit.decode import core_protocol, plan as decode_plan, tiles as decode_tiles
from wanfit.errors import InvalidInputError

CACHE_T = 2
CORE_0_3_64 = core_protocol.PROTOCOLS["0.3.64"]


# ---------------------------------------------------------------- a WAN decoder, small

class CausalConv3d(nn.Conv3d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._padding = (self.padding[2], self.padding[2], self.padding[1], self.padding[1], 2 * self.padding[0], 0)
        self.padding = (0, 0, 0)

    def forward(self, x, cache_x=None, cache_list=None, cache_idx=None):
        if cache_list is not None:
            cache_x = cache_list[cache_idx]
            cache_list[cache_idx] = None
        padding = list(self._padding)
        if cache_x is not None and self._padding[4] > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            padding[4] -= cache_x.shape[2]
        return super().forward(F.pad(x, padding))


class RMSNorm(nn.Module):
    def __init__(self, dim, images=True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _cache_step(layer, x, feat_cache, feat_idx):
    idx = feat_idx[0]
    cache_x = x[:, :, -CACHE_T:].clone()
    if cache_x.shape[2] < 2 and feat_cache[idx] is not None:
        cache_x = torch.cat([feat_cache[idx][:, :, -1:], cache_x], dim=2)
    x = layer(x, cache_list=feat_cache, cache_idx=idx)
    feat_cache[idx] = cache_x
    feat_idx[0] += 1
    return x


class Resample(nn.Module):
    def __init__(self, dim, mode, halve):
        super().__init__()
        self.dim, self.mode = dim, mode
        out = dim // 2 if halve else dim
        self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                      nn.Conv2d(dim, out, 3, padding=1))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x, feat_cache=None, feat_idx=[0]):
        b, c, t, h, w = x.size()
        if self.mode == "upsample3d" and feat_cache is not None:
            idx = feat_idx[0]
            if feat_cache[idx] is None:
                feat_cache[idx] = "Rep"
                feat_idx[0] += 1
            else:
                cache_x = x[:, :, -CACHE_T:].clone()
                if cache_x.shape[2] < 2 and not isinstance(feat_cache[idx], str):
                    cache_x = torch.cat([feat_cache[idx][:, :, -1:], cache_x], dim=2)
                if cache_x.shape[2] < 2 and isinstance(feat_cache[idx], str):
                    cache_x = torch.cat([torch.zeros_like(cache_x), cache_x], dim=2)
                x = self.time_conv(x) if isinstance(feat_cache[idx], str) else self.time_conv(x, feat_cache[idx])
                feat_cache[idx] = cache_x
                feat_idx[0] += 1
                x = x.reshape(b, 2, c, t, h, w)
                x = torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, t * 2, h, w)
        t = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, x.shape[3], x.shape[4])
        x = self.resample(x)
        return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.residual = nn.Sequential(RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
                                      RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(0.0),
                                      CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x, feat_cache=None, feat_idx=[0]):
        old_x = x
        for layer in self.residual:
            x = _cache_step(layer, x, feat_cache, feat_idx) if isinstance(layer, CAUSAL_CONVS) else layer(x)
        return x + self.shortcut(old_x)


class AttentionBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        identity = x
        b, c, t, h, w = x.size()
        x = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        q, k, v = (m.flatten(2).transpose(1, 2).unsqueeze(1) for m in self.to_qkv(x).chunk(3, dim=1))
        x = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        x = self.proj(x).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return x + identity


class DupUp3D(nn.Module):
    def __init__(self, in_channels, out_channels, factor_t, factor_s=1):
        super().__init__()
        self.out_channels, self.factor_t, self.factor_s = out_channels, factor_t, factor_s
        self.repeats = out_channels * factor_t * factor_s * factor_s // in_channels

    def forward(self, x, first_chunk=False):
        x = x.repeat_interleave(self.repeats, dim=1)
        x = x.view(x.size(0), self.out_channels, self.factor_t, self.factor_s, self.factor_s, x.size(2), x.size(3),
                   x.size(4))
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).contiguous()
        x = x.view(x.size(0), self.out_channels, x.size(2) * self.factor_t, x.size(4) * self.factor_s,
                   x.size(6) * self.factor_s)
        return x[:, :, self.factor_t - 1:] if first_chunk else x


class UpResidualBlock(nn.Module):
    def __init__(self, in_dim, out_dim, mult, temporal, up):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2 if up else 1) if up else None
        blocks = []
        for _ in range(mult):
            blocks.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if up:
            blocks.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", halve=False))
        self.upsamples = nn.Sequential(*blocks)

    def forward(self, x, feat_cache=None, feat_idx=[0], first_chunk=False):
        x_main = x
        for module in self.upsamples:
            x_main = module(x_main, feat_cache, feat_idx)
        return x_main + self.avg_shortcut(x, first_chunk) if self.avg_shortcut is not None else x_main


class Decoder(nn.Module):
    """Decoder3d of vae.py (wan22=False) or vae2_2.py (wan22=True)."""

    def __init__(self, dim, z_dim, wan22, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal=(True, True, False)):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1]] + list(dim_mult[::-1])]
        self.wan22 = wan22
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        ups = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dim_mult) - 1
            if wan22:
                ups.append(UpResidualBlock(in_dim, out_dim, num_res_blocks + 1, i < len(temporal) and temporal[i], not last))
                continue
            if i in (1, 2, 3):
                in_dim //= 2
            for _ in range(num_res_blocks + 1):
                ups.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if not last:
                ups.append(Resample(out_dim, "upsample3d" if temporal[i] else "upsample2d", halve=True))
        self.upsamples = nn.Sequential(*ups)
        self.head = nn.Sequential(RMSNorm(out_dim, images=False), nn.SiLU(),
                                  CausalConv3d(out_dim, 12 if wan22 else 3, 3, padding=1))

    def forward(self, x, feat_cache, feat_idx, first_chunk=False):
        x = _cache_step(self.conv1, x, feat_cache, feat_idx)
        for layer in self.middle:
            x = layer(x, feat_cache, feat_idx) if isinstance(layer, ResidualBlock) else layer(x)
        for layer in self.upsamples:
            x = layer(x, feat_cache, feat_idx, first_chunk) if self.wan22 else layer(x, feat_cache, feat_idx)
        for layer in self.head:
            x = _cache_step(layer, x, feat_cache, feat_idx) if isinstance(layer, CAUSAL_CONVS) else layer(x)
        return x


class MiniWanVAE(nn.Module):
    """WanVAE.decode of vae.py / vae2_2.py: conv2, then the decoder one latent frame at a time."""

    def __init__(self, wan22, dim=8, z_dim=None, seed=0):
        super().__init__()
        z_dim = z_dim or (48 if wan22 else 16)
        self.wan22 = wan22
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder(dim, z_dim, wan22)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in self.named_parameters():
                if name.endswith("weight") and tensor.ndim > 1:
                    tensor.normal_(0, 0.7 / math.sqrt(tensor[0].numel()), generator=generator)
                elif name.endswith("bias"):
                    tensor.zero_()

    def decode(self, z):
        x = self.conv2(z)
        cache = [None] * sum(1 for m in self.decoder.modules() if isinstance(m, CAUSAL_CONVS))
        out = []
        for i in range(z.shape[2]):
            out.append(self.decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], first_chunk=(i == 0)))
        out = torch.cat(out, 2)
        if self.wan22:
            b, c, f, h, w = out.shape
            out = out.reshape(b, 3, 2, 2, f, h, w).permute(0, 1, 4, 5, 3, 6, 2).reshape(b, 3, f, h * 2, w * 2)
        return out


# ---------------------------------------------------------------- the same decoders as ComfyUI 0.33.0 holds them

class CausalConv3d033(nn.Conv3d):
    """0.33.0's CausalConv3d: only the time padding in _padding, the conv pads space; one uncached
    frame takes the truncated-kernel fast path (comfy.ops autopad="causal_zero")."""

    def forward(self, x, cache_x=None, cache_list=None, cache_idx=None):
        if cache_list is not None:
            cache_x = cache_list[cache_idx]
            cache_list[cache_idx] = None
        if cache_x is None and x.shape[2] == 1:
            return F.conv3d(x, self.weight[:, :, -1:], self.bias, self.stride, self.padding, self.dilation)
        if self._padding > 0:
            needed = self._padding - (0 if cache_x is None else cache_x.shape[2])
            parts = [torch.zeros_like(x[:, :, :1]).expand(-1, -1, max(needed, 0), -1, -1), cache_x, x]
            x = torch.cat([part for part in parts if part is not None and part.shape[2] > 0], dim=2)
        return nn.Conv3d.forward(self, x)


CAUSAL_CONVS = (CausalConv3d, CausalConv3d033)


class ResidualBlock033(ResidualBlock):
    """0.33.0's vae.py ResidualBlock: its cache is the chunk's last two frames, nothing put in front."""

    def forward(self, x, feat_cache=None, feat_idx=[0], final=False):
        old_x = x
        for layer in self.residual:
            if isinstance(layer, CAUSAL_CONVS) and feat_cache is not None:
                idx = feat_idx[0]
                cache_x = x[:, :, -CACHE_T:]
                x = layer(x, cache_list=feat_cache, cache_idx=idx)
                feat_cache[idx] = cache_x
                feat_idx[0] += 1
            else:
                x = layer(x)
        return x + self.shortcut(old_x)


class Resample033(Resample):
    """0.33.0's vae.py Resample (upsampling): the time conv caches the chunk's last two frames as they are."""

    def forward(self, x, feat_cache=None, feat_idx=[0], final=False):
        b, c, t, h, w = x.size()
        if self.mode == "upsample3d" and feat_cache is not None:
            idx = feat_idx[0]
            if feat_cache[idx] is None:
                feat_cache[idx] = "Rep"
                feat_idx[0] += 1
            else:
                cache_x = x[:, :, -CACHE_T:]
                x = self.time_conv(x) if feat_cache[idx] == "Rep" else self.time_conv(x, feat_cache[idx])
                feat_cache[idx] = cache_x
                feat_idx[0] += 1
                x = x.reshape(b, 2, c, t, h, w)
                x = torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, t * 2, h, w)
        t = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, x.shape[3], x.shape[4])
        x = self.resample(x)
        return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class Decoder033(Decoder):
    """0.33.0's vae.py Decoder3d: after a temporal upsample, the rest runs on pairs of frames (run_up)."""

    def run_up(self, layer_idx, x, feat_cache, feat_idx, out_chunks):
        if layer_idx >= len(self.upsamples):
            for layer in self.head:
                if isinstance(layer, CAUSAL_CONVS) and feat_cache is not None:
                    cache_x = x[:, :, -CACHE_T:]
                    x = layer(x, feat_cache[feat_idx[0]])
                    feat_cache[feat_idx[0]] = cache_x
                    feat_idx[0] += 1
                else:
                    x = layer(x)
            out_chunks.append(x)
            return
        layer = self.upsamples[layer_idx]
        x = layer(x, feat_cache, feat_idx) if feat_cache is not None else layer(x)
        if isinstance(layer, Resample) and layer.mode == "upsample3d" and x.shape[2] > 2:
            for frame in range(0, x.shape[2], 2):
                self.run_up(layer_idx + 1, x[:, :, frame:frame + 2], feat_cache, feat_idx.copy(), out_chunks)
            return
        self.run_up(layer_idx + 1, x, feat_cache, feat_idx, out_chunks)

    def forward(self, x, feat_cache=None, feat_idx=[0]):
        if feat_cache is not None:
            cache_x = x[:, :, -CACHE_T:]
            x = self.conv1(x, feat_cache[feat_idx[0]])
            feat_cache[feat_idx[0]] = cache_x
            feat_idx[0] += 1
        else:
            x = self.conv1(x)
        for layer in self.middle:
            x = layer(x, feat_cache, feat_idx) if isinstance(layer, ResidualBlock) and feat_cache is not None else layer(x)
        out_chunks = []
        self.run_up(0, x, feat_cache, feat_idx, out_chunks)
        return out_chunks


class MiniWanVAE033(MiniWanVAE):
    """0.33.0's vae.py WanVAE.decode: latent frame 0, then two latent frames per call."""

    def decode(self, z):
        x = self.conv2(z)
        iter_ = 1 + z.shape[2] // 2
        cache = None if iter_ == 1 else [None] * sum(1 for m in self.decoder.modules() if isinstance(m, CAUSAL_CONVS))
        out = []
        for i in range(iter_):
            chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 2 * (i - 1):1 + 2 * i]
            out += self.decoder(chunk, feat_cache=cache, feat_idx=[0])
        return torch.cat(out, 2)


def as_core_0_33(module):
    """The same weights in ComfyUI 0.33.0's structure: its CausalConv3d everywhere; for Wan 2.1 also the
    pairwise caches and run_up (vae2_2.py's own blocks kept 0.3.64's caching)."""
    module = copy.deepcopy(module)
    for sub in module.modules():
        if isinstance(sub, CausalConv3d):
            left, _, top, _, front, _ = sub._padding
            sub.__class__ = CausalConv3d033
            sub._padding, sub.padding = front, (0, top, left)
        elif not module.wan22 and type(sub) in (ResidualBlock, Resample):
            sub.__class__ = ResidualBlock033 if type(sub) is ResidualBlock else Resample033
    if not module.wan22:
        module.decoder.__class__ = Decoder033
        module.__class__ = MiniWanVAE033
    return module


@pytest.fixture(scope="module", params=["wan2.1", "wan2.2"])
def mini(request):
    torch.manual_seed(0)
    wan22 = request.param == "wan2.2"
    module = MiniWanVAE(wan22).eval()
    latent = torch.randn(1, 48 if wan22 else 16, 2, 6, 7)
    with torch.inference_mode():
        reference = module.decode(latent)
    return request.param, module, latent, reference


def _budget_for_tiles(module, latent, tiles, overlap=None):
    """The smallest budget whose plan (exact unless overlap) has at most `tiles` tiles (search over the planner)."""
    low, high = 1, 2**34
    while high - low > 1024:
        middle = (low + high) // 2
        plan = decode.plan_decode(module, latent.shape, middle, overlap=overlap)
        if plan is not None and plan.exact == (overlap is None) and plan.tile_count <= tiles:
            high = middle
        else:
            low = middle
    return high


# ---------------------------------------------------------------- exactness

def test_layout_matches_the_decoder(mini):
    kind, module, latent, reference = mini
    spec = decode.decoder_spec(module)
    assert spec.name == kind
    assert spec.total_scale * latent.shape[-1] == reference.shape[-1]
    # the stem runs the latent-resolution blocks (6 px); the tiles see 0.5 + 3 + 0.25 + 1.5 + 0.125 + 0.75 + 0.125
    assert spec.receptive_radius_latent == pytest.approx(6.25)


@pytest.mark.parametrize("tiles", [1, 2, 4, 9])
def test_tiled_decode_equals_untiled(mini, tiles):
    kind, module, latent, reference = mini
    budget = _budget_for_tiles(module, latent, tiles)
    plan = decode.plan_decode(module, latent.shape, budget)
    assert plan.exact and plan.tile_count <= tiles
    out = decode.decode_latent(module, latent, budget)
    assert out.shape == reference.shape, f"{kind}: expected {tuple(reference.shape)}, got {tuple(out.shape)}"
    diff = (out - reference).abs().max().item()
    assert diff < 1e-5, f"{kind} with {plan.describe()}: max abs diff {diff} vs the untiled decode"


def test_capped_halo_blends_without_holes(mini):
    kind, module, latent, reference = mini
    out = decode.decode_latent(module, latent, 2**40, overlap=1)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    small = _budget_for_tiles(module, latent, 4, overlap=2)
    assert decode.plan_decode(module, latent.shape, small, overlap=2).tile_count > 1
    out = decode.decode_latent(module, latent, small, overlap=2)
    assert torch.isfinite(out).all()
    # approximate near seams, but the same picture: well correlated with the exact decode
    correlation = torch.corrcoef(torch.stack([out.flatten(), reference.flatten()]))[0, 1].item()
    assert correlation > 0.9, f"{kind}: capped-halo decode correlates {correlation:.3f} with the exact one"


def test_memory_does_not_grow_with_frames(mini):
    kind, module, latent, _ = mini
    shape = list(latent.shape)
    peaks = []
    for frames in (2, 21, 81):
        shape[2] = frames
        plan = decode.plan_decode(module, shape, 2**40, device="cuda", output_device="cpu", allow_untiled=False)
        peaks.append(plan.predicted_peak_bytes)
    assert peaks[0] == peaks[1] == peaks[2], f"{kind}: predicted peak changed with the frame count: {peaks}"


# ---------------------------------------------------------------- inputs

def test_wrong_latent_channels_name_both_vaes():
    module = MiniWanVAE(wan22=True)
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, torch.zeros(1, 16, 2, 4, 4), 2**30)
    message = str(error.value)
    assert "Wan 2.2 VAE" in message and "Wan 2.1 VAE" in message, message
    module = MiniWanVAE(wan22=False)
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, torch.zeros(1, 48, 2, 4, 4), 2**30)
    assert "Wan 2.1 VAE" in str(error.value) and "Wan 2.2 VAE" in str(error.value), str(error.value)


@pytest.mark.parametrize("shape", [(1, 16, 0, 4, 4), (0, 16, 2, 4, 4), (1, 16, 2, 0, 4)])
def test_empty_latent_is_refused(shape):
    with pytest.raises(InvalidInputError, match="non-empty"):
        decode.decode_latent(MiniWanVAE(wan22=False), torch.zeros(shape), 2**30)


def test_flat_latent_is_refused():
    with pytest.raises(InvalidInputError, match="5-D"):
        decode.decode_latent(MiniWanVAE(wan22=False), torch.zeros(16, 4, 4), 2**30)


def test_budget_below_the_smallest_tile_states_the_minimum():
    module = MiniWanVAE(wan22=False)
    latent = torch.zeros(1, 16, 2, 8, 8)
    with pytest.raises(InvalidInputError) as error:
        decode.decode_latent(module, latent, 1024)
    message = str(error.value)
    assert "at least" in message and "MB" in message, message
    minimum_mb = int(message.split("at least ")[1].split(" MB")[0])
    assert decode.plan_decode(module, latent.shape, minimum_mb * 2**20) is not None


def test_non_positive_budget_is_refused():
    with pytest.raises(InvalidInputError, match="budget"):
        decode.decode_latent(MiniWanVAE(wan22=False), torch.zeros(1, 16, 2, 4, 4), 0)


# ---------------------------------------------------------------- progress, hooks, OOM ladder

def test_progress_reaches_total_and_never_goes_back(mini):
    kind, module, latent, _ = mini
    calls = []
    budget = _budget_for_tiles(module, latent, 4)
    decode.decode_latent(module, latent, budget, progress=lambda done, total: calls.append((done, total)))
    assert calls, "no progress reported"
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1], calls


def test_free_models_hook_gets_the_predicted_peak(mini):
    kind, module, latent, _ = mini
    asked = []
    budget = _budget_for_tiles(module, latent, 2)
    decode.decode_latent(module, latent, budget, free_models_for_decode=asked.append)
    plan = decode.plan_decode(module, latent.shape, budget)
    assert asked == [plan.predicted_peak_bytes]
    assert plan.predicted_peak_bytes <= budget


def test_oom_retries_smaller_tiles_and_keeps_the_result_exact(mini):
    kind, module, latent, reference = mini
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


def test_oom_everywhere_falls_back_to_the_cpu(mini):
    kind, module, latent, reference = mini
    module64 = MiniWanVAE(wan22=(kind == "wan2.2")).double()
    module64.load_state_dict(module.state_dict())

    def device_always_oom(step):
        if step.stage == "tile" and step.dtype == torch.float64:  # the "device": float64; the CPU fallback float32
            raise RuntimeError("CUDA error: out of memory")

    out = decode.decode_latent(module64, latent.double(), 2**40, allow_untiled=False, oom=device_always_oom)
    assert (out - reference).abs().max().item() < 1e-4
    assert next(module64.parameters()).dtype == torch.float64, "the decoder was not put back after the fallback"


def test_other_errors_are_not_swallowed(mini):
    kind, module, latent, _ = mini

    def broken(step):
        if step.stage == "tile":
            raise ValueError("a bug, not an OOM")

    with pytest.raises(ValueError, match="a bug"):
        decode.decode_latent(module, latent, 2**40, allow_untiled=False, oom=broken)


class FakeComfyVAE:
    """The attributes of comfy.sd.VAE that the engine uses (duck typing)."""

    def __init__(self, module, channels):
        self.first_stage_model = module
        self.latent_channels = channels
        self.device = torch.device("cpu")
        self.vae_dtype = torch.float32
        self.output_device = torch.device("cpu")

    @staticmethod
    def process_output(image):
        return torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)


def test_comfy_vae_output_matches_vae_decode_layout(mini):
    kind, module, latent, reference = mini
    vae = FakeComfyVAE(module, latent.shape[1])
    images = decode.decode_comfy_vae(vae, latent, 2**40)
    expected = FakeComfyVAE.process_output(reference).movedim(1, -1)
    assert images.shape == expected.shape and images.dtype == torch.float32
    assert (images - expected).abs().max().item() < 1e-5


def test_plan_picks_fewest_tiles_when_everything_fits(mini):
    kind, module, latent, _ = mini
    plan = decode.plan_decode(module, latent.shape, 2**40)
    assert plan.tile_count == 1 and plan.exact
    assert plan.relative_cost == pytest.approx(1.0, abs=0.05)


def test_planned_peak_never_exceeds_budget(mini):
    kind, module, latent, _ = mini
    full = decode.plan_decode(module, latent.shape, 2**40, allow_untiled=False).predicted_peak_bytes
    for fraction in (1.0, 0.75, 0.5, 0.25):
        plan = decode.plan_decode(module, latent.shape, int(full * fraction))
        if plan is not None:
            assert plan.predicted_peak_bytes <= full * fraction
        else:
            with pytest.raises(InvalidInputError, match="at least"):
                decode.decode_latent(module, latent, int(full * fraction))


# ---------------------------------------------------------------- frame streaming and the CPU heap

def test_frames_stream_one_at_a_time_after_each_temporal_upsample(mini):
    kind, module, _, _ = mini
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


def test_longer_latents_stream_exactly_through_the_caches(mini):
    kind, module, latent, _ = mini
    longer, reference = _four_latent_frames(module, latent, 3)
    for tiles in (1, 4):
        budget = _budget_for_tiles(module, longer, tiles)
        out = decode.decode_latent(module, longer, budget)
        assert out.shape == reference.shape
        diff = (out - reference).abs().max().item()
        assert diff < 1e-5, f"{kind}, {tiles} tiles, 4 latent frames: max abs diff {diff}"


def test_cpu_plans_name_the_heap_mode_and_gpu_plans_do_not(mini):
    kind, module, latent, _ = mini
    generous = decode.plan_decode(module, latent.shape, 2**40, allow_untiled=False)
    assert generous.cpu_heap == "heap", "with room to spare the faster heap mode is used"
    assert "heap CPU heap" in generous.describe()
    gpu = decode.plan_decode(module, latent.shape, 2**40, device="cuda", output_device="cpu",
                                 allow_untiled=False)
    assert gpu.cpu_heap == "" and "CPU heap" not in gpu.describe()


def test_tight_cpu_budgets_switch_to_the_lean_heap_and_still_fit(mini):
    kind, module, latent, _ = mini
    heap, lean = decode.CPU_HEAP_MODES
    one_tile = decode.plan_decode(module, latent.shape, 2**40, allow_untiled=False)
    # a budget that fits one tile only without the heap mode's allowance
    raw = (one_tile.predicted_peak_bytes - heap.peak_extra_bytes - decode.CPU_WORKSPACE_BYTES) / heap.peak_factor
    budget = int(raw + decode.CPU_WORKSPACE_BYTES) + 1
    plan = decode.plan_decode(module, latent.shape, budget)
    assert plan.cpu_heap == "lean" and plan.tile_count == 1
    assert plan.predicted_peak_bytes <= budget


def test_set_cpu_heap_mode_applies_on_linux():
    import sys

    applied = [decode.set_cpu_heap_mode(mode) for mode in decode.CPU_HEAP_MODES]
    assert applied == ([True, True] if sys.platform.startswith("linux") else [False, False])


# ---------------------------------------------------------------- the VAE's own decode when it fits

def test_a_budget_that_fits_the_untiled_decode_runs_the_vaes_own_decode(mini):
    kind, module, latent, reference = mini
    need = decode.untiled_decode_bytes(kind, latent.shape, 4, "cpu")
    plan = decode.plan_decode(module, latent.shape, need)
    assert plan.untiled and plan.tile_count == 1 and plan.predicted_peak_bytes == need
    assert "untiled" in plan.describe()
    assert not decode.plan_decode(module, latent.shape, need - 1).untiled
    assert not decode.plan_decode(module, latent.shape, need, overlap=2).untiled, "overlap asks for tiles"
    calls = []
    out = decode.decode_latent(module, latent, need, progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(out, reference), "the untiled path is the VAE's own decode: bit-identical"
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)


@pytest.mark.parametrize("tiled", [False, True])
def test_a_strided_latent_decodes_bit_identically_to_its_saved_copy(mini, tiled):
    """A sampler may hand over a non-contiguous latent; SaveLatent stores it contiguous. CPU convs round
    differently per memory layout (seen: uint8 frames differed), so both must reach the decoder alike."""
    kind, module, latent, _ = mini
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


def test_oom_in_the_untiled_decode_falls_back_to_tiles(mini):
    kind, module, latent, reference = mini
    need = decode.untiled_decode_bytes(kind, latent.shape, 4, "cpu")
    plans = []

    def untiled_oom(step):
        if step.stage == "untiled":
            raise RuntimeError("CUDA error: out of memory")

    out = decode.decode_latent(module, latent, need, on_plan=plans.append, oom=untiled_oom)
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
def test_deeper_stems_decode_exactly(mini, cut):
    kind, module, latent, reference = mini
    budget = _budget_for_tiles_at_cut(module, latent, cut, 4)
    plans = []
    out = decode.decode_latent(module, latent, budget, allow_untiled=False, stem_cuts=(cut,), on_plan=plans.append)
    plan = plans[0]
    assert plan.stem_cut == cut and plan.stem_scale == 2 ** cut and plan.tile_count > 1
    assert f"whole-frame stem to {plan.stem_scale}x" in plan.describe()
    assert out.shape == reference.shape
    diff = (out - reference).abs().max().item()
    assert diff < 1e-5, f"{kind}, {plan.describe()}: max abs diff {diff} vs the untiled decode"


def test_the_planner_takes_a_deeper_stem_when_it_saves_compute(mini):
    kind, module, latent, _ = mini
    picked = {}
    budget = 2**36
    while budget > 2**16:
        plan = decode.plan_decode(module, latent.shape, budget, allow_untiled=False)
        if plan is not None:
            picked.setdefault(plan.stem_cut, plan)
            if plan.stem_cut:
                # no plan held to the first stem depth is cheaper at this budget
                shallow = decode.plan_decode(module, latent.shape, budget, allow_untiled=False, stem_cuts=(0,))
                time = {mode.name: mode.time_factor for mode in decode.CPU_HEAP_MODES}
                assert (shallow is None or not shallow.exact or shallow.relative_cost * time[shallow.cpu_heap]
                        >= plan.relative_cost * time[plan.cpu_heap] - 0.005)
        budget = int(budget * 0.9)
    assert 0 in picked, f"{kind}: stem depths picked over the budget sweep: {sorted(picked)}"


def test_unknown_stem_depth_is_refused(mini):
    kind, module, latent, _ = mini
    with pytest.raises(InvalidInputError, match="stem_cuts"):
        decode.plan_decode(module, latent.shape, 2**30, stem_cuts=(7,))


def test_deeper_stem_stores_more_and_recomputes_less(mini):
    kind, module, latent, _ = mini
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


def test_longer_latents_decode_exactly_with_a_deeper_stem(mini):
    kind, module, latent, _ = mini
    longer, reference = _four_latent_frames(module, latent, 5)
    budget = _budget_for_tiles_at_cut(module, longer, 1, 4)
    out = decode.decode_latent(module, longer, budget, allow_untiled=False, stem_cuts=(1,))
    assert (out - reference).abs().max().item() < 1e-5


def test_conv_path_choice_follows_the_smaller_transient():
    big = CausalConv3d(1024, 1024, 3, padding=1)  # WAN's: forward() pads (2 cache/zero frames, 1 px border)
    assert decode.conv_uses_native(big, torch.empty(1, 1024, 1, 24, 24))  # 576 px: im2col 61 MB < weight 108 MB
    assert not decode.conv_uses_native(big, torch.empty(1, 1024, 1, 48, 48))  # 2304 px: weight is smaller
    # the fused path's buffer already holds the cache frames and the border: still 576 output px
    assert decode.conv_uses_native(big, torch.empty(1, 1024, 3, 26, 26), padded=True)
    assert not decode.conv_uses_native(big, torch.empty(1, 1024, 3, 50, 50), padded=True)
    small = CausalConv3d(96, 96, 3, padding=1)
    assert not decode.conv_uses_native(small, torch.empty(1, 96, 1, 64, 64))
    layer = tiling.LayerSpec(1, 2, convs=((1024 * 1024 * 27, 1024 * 27),))
    assert tiling.conv_transient_elems(layer, 24 * 24) == 1024 * 27 * 576
    assert tiling.conv_transient_elems(layer, 48 * 48) == 1024 * 1024 * 27


def test_cpu_conv_backend_restores_onednn_even_after_an_error(mini):
    kind, module, latent, _ = mini
    before = torch.backends.mkldnn.enabled
    seen = []
    conv = next(m for m in module.decoder.modules() if isinstance(m, nn.Conv3d))
    probe = conv.register_forward_hook(lambda *args: seen.append(torch.backends.mkldnn.enabled))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with decode.cpu_conv_backend(module.decoder):
                conv(torch.zeros(1, conv.in_channels, 1, 2, 2))  # 4 output px < its channels: native path
                raise RuntimeError("boom")
    finally:
        probe.remove()
    assert conv.out_channels > 4 and seen == [False]
    assert torch.backends.mkldnn.enabled == before


def test_fused_residual_block_and_head_match_the_modules_and_their_caches(mini):
    kind, module, _, _ = mini
    decoder = module.decoder
    block = next(m for m in decoder.modules() if isinstance(m, ResidualBlock) and not isinstance(m.shortcut, nn.Identity))
    same = next(m for m in decoder.modules() if isinstance(m, ResidualBlock) and isinstance(m.shortcut, nn.Identity))
    generator = torch.Generator().manual_seed(7)
    run_layer = functools.partial(fused_layers.run_layer, protocol=CORE_0_3_64)
    for layer, run in ((block, run_layer), (same, run_layer), (decoder.head, fused_layers.run_head)):
        channels = layer.residual[0].gamma.shape[0] if hasattr(layer, "residual") else layer[0].gamma.shape[0]
        ours, theirs = [None] * 4, [None] * 4
        # a first chunk of one frame (no cache yet), then one frame, then two frames, as the decoder feeds them
        for frames in (1, 1, 2, 1):
            x = torch.randn(1, channels, frames, 5, 6, generator=generator)
            idx_ours, idx_theirs = [0], [0]
            with torch.inference_mode():
                if layer is decoder.head:
                    expected = x
                    for sub in layer:
                        expected = _cache_step(sub, expected, theirs, idx_theirs) if isinstance(sub, CausalConv3d) else sub(expected)
                else:
                    expected = layer(x, theirs, idx_theirs)
                got = run(layer, x.clone(), ours, idx_ours)
            assert idx_ours == idx_theirs
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() < 1e-5
            for a, b in zip(ours, theirs):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a.shape == b.shape and (a - b).abs().max().item() < 1e-6


class _RecordingConv(nn.Conv3d):
    """Records whether oneDNN was enabled when the conv ran (the parent forward _conv_unpadded calls)."""

    def forward(self, x):
        self.onednn_seen.append(torch.backends.mkldnn.enabled)
        return super().forward(x)


class _CausalRecordingConv(_RecordingConv):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.onednn_seen = []
        self._padding = (1, 1, 1, 1, 2, 0)
        self.padding = (0, 0, 0)


def test_fused_convs_take_the_cpu_conv_path_too(mini):
    """The fused path calls the conv's parent forward(), which skips cpu_conv_backend's hooks."""
    kind, module, _, _ = mini
    conv = _CausalRecordingConv(64, 64, 3)
    before = torch.backends.mkldnn.enabled
    with torch.inference_mode(), decode.cpu_conv_backend(module.decoder):
        cpu_convs._conv_unpadded(conv, torch.zeros(1, 64, 3, 4, 4))  # 4 output px <= 64 channels: native
        cpu_convs._conv_unpadded(conv, torch.zeros(1, 64, 3, 20, 20))  # 324 px: oneDNN
        after_call = torch.backends.mkldnn.enabled
    cpu_convs._conv_unpadded(conv, torch.zeros(1, 64, 3, 4, 4))  # outside a CPU decode: left as it is
    assert conv.onednn_seen == [False, before, before] and after_call == before
    assert torch.backends.mkldnn.enabled == before


def test_channels_last_conv_input_only_where_the_weight_is_the_smaller_copy(mini):
    kind, module, _, _ = mini
    small = nn.Conv3d(96, 96, 3)  # Wan 2.1's full-resolution convs: 249k weight elements
    big = nn.Conv3d(1024, 1024, 3)  # Wan 2.2's widest: 28M weight elements, channels-last costs a weight copy
    wide_crop = (1, 96, 3, 100, 140)
    small_crop = (1, 1024, 3, 26, 26)
    cl, plain = torch.channels_last_3d, torch.contiguous_format
    with decode.cpu_conv_backend(module.decoder):
        onednn = torch.backends.mkldnn.enabled
        assert cpu_convs._conv_input_memory_format(small, wide_crop) == (cl if onednn else plain)
        assert cpu_convs._conv_input_memory_format(big, small_crop) == plain  # weight 28M > input 2M
        assert cpu_convs._conv_input_memory_format(small, (1, 96, 3, 4, 4)) == plain  # native path
    assert cpu_convs._conv_input_memory_format(small, wide_crop) == plain, "only inside a CPU decode"


@pytest.mark.parametrize("mode,halve", [("upsample3d", True), ("upsample2d", True), ("upsample3d", False)])
def test_fused_upsample_matches_the_module_and_its_cache(mode, halve):
    torch.manual_seed(3)
    layer = Resample(8, mode, halve).eval()
    generator = torch.Generator().manual_seed(5)
    ours, theirs = [None], [None]
    # first chunk ('Rep': its frame is not doubled), then single frames and a two-frame chunk, odd sizes
    for frames in (1, 1, 2, 1):
        x = torch.randn(1, 8, frames, 5, 7, generator=generator)
        idx_ours, idx_theirs = [0], [0]
        with torch.inference_mode():
            expected = layer(x, theirs, idx_theirs)
            got = fused_layers.run_layer(layer, x.clone(), ours, idx_ours, CORE_0_3_64)
        assert idx_ours == idx_theirs
        assert got.shape == expected.shape, f"{mode}: {tuple(got.shape)} vs {tuple(expected.shape)}"
        assert (got - expected).abs().max().item() < 1e-5
        assert type(ours[0]) is type(theirs[0])
        if isinstance(ours[0], torch.Tensor):
            assert torch.equal(ours[0], theirs[0])


def test_fused_upsample_never_builds_the_upsampled_input():
    """Its largest tensor is its output: the 4x-sized nearest-upsampled input (the tile's biggest
    tensor in ComfyUI's Resample) never exists."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(tensor, torch.Tensor):
                    LargestTensor.largest = max(LargestTensor.largest, tensor.numel())
            return out

    layer = Resample(32, "upsample2d", halve=True).eval()  # 32 -> 16 channels
    x = torch.randn(1, 32, 1, 10, 12)
    with torch.inference_mode():
        LargestTensor.largest = 0
        with LargestTensor():
            layer(x, [None], [0])
        theirs = LargestTensor.largest
        LargestTensor.largest = 0
        with LargestTensor():
            out = fused_layers.run_layer(layer, x, [None], [0], CORE_0_3_64)
        ours = LargestTensor.largest
    assert theirs == 32 * 20 * 24  # the upsampled input
    assert ours == out.numel() == 16 * 20 * 24


def test_padded_conv_inputs_share_one_arena_buffer_inside_a_tile():
    shape, cl = (1, 4, 3, 6, 6), torch.channels_last_3d
    with decode.scratch_arena():
        first = fused_layers._scratch_empty(shape, torch.float32, "cpu", torch.contiguous_format)
        second = fused_layers._scratch_empty((1, 4, 3, 5, 5), torch.float32, "cpu", cl)
        assert second.data_ptr() == first.data_ptr() and second.is_contiguous(memory_format=cl)
        bigger = fused_layers._scratch_empty((1, 8, 3, 6, 6), torch.float32, "cpu", torch.contiguous_format)
        assert bigger.shape == (1, 8, 3, 6, 6) and bigger.is_contiguous()
    outside = [fused_layers._scratch_empty(shape, torch.float32, "cpu", torch.contiguous_format) for _ in range(2)]
    assert outside[0].data_ptr() != outside[1].data_ptr()


def test_a_deeper_stems_frames_reach_the_tiles_one_at_a_time(mini):
    """Past the stem's temporal upsample each latent frame is two frames; the tile streams them singly,
    so its temporal upsamples hold one input frame's output, as the planner's model assumes."""
    kind, module, latent, reference = mini
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


def test_oom_part_way_through_a_tile_still_decodes_exactly(mini):
    """Exact tiles write each frame into the output as it is done; a retry after an OOM in a later
    frame rewrites the same core, so the video is still the untiled decode."""
    kind, module, latent, reference = mini
    state = {"failed": False}

    def oom_on_the_second_frame(step):
        if step.stage == "tile" and step.frame == 1 and not state["failed"]:
            state["failed"] = True
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    out = decode.decode_latent(module, latent, 2**40, allow_untiled=False, oom=oom_on_the_second_frame)
    assert state["failed"]
    assert (out - reference).abs().max().item() < 1e-5


def test_conv_weights_are_channels_last_only_during_a_cpu_decode(mini):
    kind, module, _, _ = mini
    conv = CausalConv3d(96, 96, 3, padding=1)
    before = conv.weight.detach().clone()
    buf = torch.randn(1, 96, 3, 100, 140).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        expected = F.conv3d(buf.contiguous(), before, conv.bias)
        with decode.cpu_conv_backend(module.decoder):
            got = cpu_convs._conv_unpadded(conv, buf)
            during = cpu_convs._is_channels_last(conv.weight)
    assert during == (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    assert conv.weight.is_contiguous() and torch.equal(conv.weight.detach(), before)
    assert (got - expected).abs().max().item() < 1e-4


# ---------------------------------------------------------------- one replay per ComfyUI core

def test_the_core_protocol_is_read_from_the_decoder_structure(mini):
    kind, module, _, _ = mini
    assert core_protocol.protocol_of(module) == CORE_0_3_64
    newer = core_protocol.protocol_of(as_core_0_33(module))
    assert newer.core == "0.33.0" and newer.conv_pads_space
    # 0.33.0 changed Wan 2.1's caches (pairs of frames); vae2_2.py kept the two-frame protocol
    assert newer.layers_keep_two_frames == (kind == "wan2.2")


@pytest.mark.parametrize("cut", [0, 2])
def test_tiled_decode_equals_the_0_33_decoders_own(mini, cut):
    """0.33.0's decoders, fed 1 then 2 latent frames per call and (Wan 2.1) pairs after each temporal
    upsample, give the untiled video; the tiles stream single frames through the same layers."""
    kind, module, latent, _ = mini
    newer = as_core_0_33(module).eval()
    longer, reference_0_3_64 = _four_latent_frames(module, latent, 5)
    with torch.inference_mode():
        reference = newer.decode(longer)
    assert (reference - reference_0_3_64).abs().max().item() < 1e-5, "the two cores' decoders disagree"
    budget = _budget_for_tiles_at_cut(newer, longer, cut, 4)
    plans = []
    out = decode.decode_latent(newer, longer, budget, allow_untiled=False, stem_cuts=(cut,), on_plan=plans.append)
    assert plans[0].tile_count > 1 and plans[0].stem_cut == cut
    diff = (out - reference).abs().max().item()
    assert diff < 1e-5, f"{kind} on the 0.33.0 structure, {plans[0].describe()}: max abs diff {diff}"


def test_a_decoder_of_an_unknown_core_is_refused_with_the_fix(mini):
    kind, module, latent, _ = mini
    unknown = as_core_0_33(module)
    for sub in unknown.modules():
        if isinstance(sub, CAUSAL_CONVS):
            sub._padding = [sub._padding]  # neither 0.3.64's tuple nor 0.33.0's int
    with pytest.raises(core_protocol.UnsupportedCoreError) as refused:
        decode.decode_latent(unknown, latent, 2**40, allow_untiled=False)
    message = str(refused.value)
    assert "ComfyUI unknown" in message and "0.3.64" in message and "0.33.0" in message, message
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


def test_below_the_exact_budget_the_plan_says_approximate_and_names_that_budget(mini):
    kind, module, _, _ = mini
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


def test_the_named_budget_decodes_exactly_and_one_byte_less_does_not(mini):
    kind, module, _, _ = mini
    latent, reference = _wide_latent(module, kind)
    named = _smallest_exact_budget(module, latent.shape)
    plans = []
    approximate = decode.decode_latent(module, latent, named - 1, on_plan=plans.append)  # what the node reports
    assert not plans[-1].exact and plans[-1].exact_budget_bytes == named and "APPROXIMATE" in plans[-1].describe()
    exact = decode.decode_latent(module, latent, plans[-1].exact_budget_bytes, on_plan=plans.append)
    assert plans[-1].exact and "APPROXIMATE" not in plans[-1].describe()
    assert (exact - reference).abs().max().item() < 1e-5, f"{kind}: the named budget must decode as VAE Decode does"
    assert (approximate - reference).abs().max().item() > 1e-3, f"{kind}: capped halos should show at the seams"


def test_an_overlap_set_on_the_node_says_it_is_what_caps_the_halo(mini):
    kind, module, _, _ = mini
    latent, _ = _wide_latent(module, kind)
    plan = decode.plan_decode(module, latent.shape, 2**40, overlap=1)
    assert not plan.exact and plan.overlap_set
    assert plan.exact_budget_bytes == _smallest_exact_budget(module, latent.shape)
    assert "the overlap setting caps the halo: exact needs overlap 0 and a budget" in plan.describe()


def _same_layout(read, static):
    for field in ("kind", "cut", "cut_count", "z_dim", "stem_scale", "stem_temporal_factor", "temporal_factor",
                  "stored_channels_per_frame", "spec"):
        assert getattr(read, field) == getattr(static, field), field


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_static_layouts_are_what_the_decode_reads_off_the_vae(mini, cut):
    """The offload plan sizes the decode from decode_budget's static layouts (no VAE loaded)."""
    kind, module, _, _ = mini
    small = decode_budget.WanVaeConfig(kind, dim=8, z_dim=48 if kind == "wan2.2" else 16)
    _same_layout(decode_layout.Layout(module, None, cut), decode_budget.static_layout(small, cut))
    with torch.device("meta"):  # the real architecture (ComfyUI's own modules: tests/host/test_param_counts.py)
        real = MiniWanVAE(kind == "wan2.2", dim=decode_budget.WAN_VAE_CONFIGS[kind].dim)
    _same_layout(decode_layout.Layout(real, None, cut), decode_budget.static_layout(kind, cut))


def test_the_static_plan_names_the_same_exact_budget_as_the_module_plan(mini):
    kind, _, _, _ = mini
    with torch.device("meta"):
        real = MiniWanVAE(kind == "wan2.2", dim=decode_budget.WAN_VAE_CONFIGS[kind].dim)
    # 9 frames of 192x192 (Wan 2.2) / 128x128 (Wan 2.1), between the smallest plan and the smallest exact one
    shape, budget = ((1, 48, 3, 12, 12), 160 * 2**20) if kind == "wan2.2" else ((1, 16, 3, 16, 16), 70 * 2**20)
    from_module = decode.plan_decode(real, shape, budget)
    outlook = decode_budget.decode_outlook(kind, shape, budget, 4, "cpu")
    assert not from_module.exact and not outlook.exact
    assert outlook.exact_budget_bytes == from_module.exact_budget_bytes
    assert outlook.describe().startswith("APPROXIMATE")
    assert f"at least {math.ceil(outlook.exact_budget_bytes / 2**20)} MB" in outlook.describe()
