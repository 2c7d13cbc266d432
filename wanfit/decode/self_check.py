"""Check the tiled decode against the running core's own decode, on the user's VAE, before it runs.

Why: the tiled decode replays the core's WAN decoders (padding, causal caches: core_protocol), and
the core changes them between releases. A version table cannot know a release nobody tested, so
before the first tiled decode of a (core, VAE class, dtype, device) in a process, a small latent is
decoded both ways on the user's own module: at a forced 2x2 exact grid by WanFit, whole by the core's
VAE.decode. Equal within DECODE_TOLERANCE: the tiled decode runs (with the protocol that matched).
Otherwise the caller runs the core's own decode (mode auto) or refuses (mode on), saying which core,
which check and how far apart.
"""

from dataclasses import dataclass
import logging
import math

import torch

from ..errors import WanFitError
from .core_protocol import candidate_protocols, running_core_version

log = logging.getLogger("wanfit")

DECODE_TOLERANCE = 1e-3  # max |WanFit - core| on images in [0, 1]
CHECK_GRID = (2, 2)
# latent channels -> (frames, height, width) of the check's latent: two latent frames exercise the causal
# caches across a temporal upsample; 2x2 tiles then cut every layer's input
CHECK_LATENTS = {16: (2, 4, 4), 48: (2, 2, 2)}


class ReplayMismatchError(WanFitError):
    """The tiled decode does not reproduce this core's own decode (mode on refuses to run it)."""


@dataclass(frozen=True)
class DecodeCheck:
    key: tuple  # (core, VAE class, dtype, device)
    passed: bool
    max_difference: float  # the best candidate's max |WanFit - core| (inf when no candidate ran)
    detail: str
    protocol: object = None  # the core_protocol.CoreProtocol that matched

    def describe(self):
        core, vae_class, dtype, device = self.key
        what = f"ComfyUI {core}, {vae_class}, {dtype} on {device}"
        if self.passed:
            return (f"tiled decode checked against the core's own VAE decode ({what}): max difference "
                    f"{self.max_difference:.2g} <= {DECODE_TOLERANCE:g} at {CHECK_GRID[0]}x{CHECK_GRID[1]} tiles, "
                    f"{protocol_name(self.protocol)}")
        return f"tiled decode check against the core's own VAE decode failed ({what}): {self.detail}"


_CHECKS = {}


def cached_checks():
    return dict(_CHECKS)


def check_key(vae, module):
    return (running_core_version(), f"{type(module).__module__.rsplit('.', 1)[-1]}.{type(module).__qualname__}",
            str(vae.vae_dtype).replace("torch.", ""), str(torch.device(vae.device)))


def check_tiled_decode(vae, module, decode_tiled):
    """The cached DecodeCheck for this VAE; runs it on first use. Never raises.

    decode_tiled(latent, protocol) -> images like vae.decode's (the caller's own tiled path at CHECK_GRID).
    """
    key = check_key(vae, module)
    if key in _CHECKS:
        return _CHECKS[key]
    channels = module.conv2.in_channels
    frames, height, width = CHECK_LATENTS.get(channels, (2, 8, 8))
    generator = torch.Generator().manual_seed(2026)
    latent = torch.randn(1, channels, frames, height, width, generator=generator) * 0.5
    tried = []
    try:
        with torch.inference_mode():  # as ComfyUI runs nodes; its VAE.decode does not set it everywhere
            check = _compare(vae, module, latent, decode_tiled, key, tried)
    except Exception as error:  # noqa: BLE001 - the check itself failing (an OOM on a tiny card, a new API)
        check = DecodeCheck(key, False, math.inf, f"the check itself raised {type(error).__name__}: "
                                                   f"{str(error)[:300]}")
    _CHECKS[key] = check
    (log.info if check.passed else log.warning)("WanFit %s", check.describe())
    return check


def _compare(vae, module, latent, decode_tiled, key, tried):
    """The first candidate protocol whose tiles reproduce vae.decode(latent), as a DecodeCheck."""
    best = math.inf
    core = vae.decode(latent).float().cpu()
    candidates = candidate_protocols(module)
    if not candidates:
        tried.append("its decoder's structure matches no padding convention WanFit knows")
    for protocol in candidates:
        try:
            ours = decode_tiled(latent, protocol).float().cpu().reshape(core.shape)
        except Exception as error:  # noqa: BLE001 - a candidate that cannot run this decoder
            tried.append(f"{protocol_name(protocol)}: raised {type(error).__name__}: {str(error)[:200]}")
            continue
        difference = (ours - core).abs().max().item()
        difference = difference if math.isfinite(difference) else math.inf
        best = min(best, difference)
        if difference <= DECODE_TOLERANCE:
            return DecodeCheck(key, True, difference, f"{protocol_name(protocol)} matched", protocol)
        tried.append(f"{protocol_name(protocol)}: max difference {difference:.3g} > {DECODE_TOLERANCE:g}")
    return DecodeCheck(key, False, best, "; ".join(tried) or "no candidate ran")


def protocol_name(protocol):
    space = "convs pad space themselves" if protocol.conv_pads_space else "padding before each conv"
    cache = "layers keep two frames" if protocol.layers_keep_two_frames else "two frames restored per layer"
    return f"replay as ComfyUI {protocol.core} ({space}, {cache})"
