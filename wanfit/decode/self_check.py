"""Check the tiled decode against the running core's own decode, on the user's VAE, before it runs.

Why: the tiled decode replays the core's WAN decoders (padding, causal caches: core_protocol), and
the core changes them between releases. A version table cannot know a release nobody tested, so
before the first tiled decode of a (core, VAE class, dtype, device) in a process, a small latent is
decoded both ways on the user's own module: at a forced 2x2 exact grid by WanFit, whole by the core's
VAE.decode. Equal within DECODE_TOLERANCE: the tiled decode runs (with the protocol that matched).
Otherwise the caller runs the core's own decode (mode auto) or refuses (mode on), saying which core,
which check and how far apart. The cache, the result type and that policy are wanfit.replay_check's,
shared with the lean forward.
"""

import math

import torch

from .. import replay_check
from .core_protocol import candidate_protocols

DECODE_TOLERANCE = 1e-3  # max |WanFit - core| on images in [0, 1]
CHECK_GRID = (2, 2)
# latent channels -> (frames, height, width) of the check's latent: two latent frames exercise the causal
# caches across a temporal upsample; 2x2 tiles then cut every layer's input
CHECK_LATENTS = {16: (2, 4, 4), 48: (2, 2, 2)}
REPLAY = "tiled decode"  # the replay's name in replay_check keys and reports
AGAINST = "the core's own VAE decode"
CORE_PATH = "ComfyUI's own VAE decode"  # what mode auto runs where the check failed


def check_subject(vae, module):
    """(key without the core, report text): the VAE class, dtype and device."""
    vae_class = f"{type(module).__module__.rsplit('.', 1)[-1]}.{type(module).__qualname__}"
    dtype, device = str(vae.vae_dtype).replace("torch.", ""), str(torch.device(vae.device))
    return (vae_class, dtype, device), f"{vae_class}, {dtype} on {device}"


def check_tiled_decode(vae, module, decode_tiled):
    """The process's replay_check.ReplayCheck for this VAE (its `matched` the CoreProtocol that reproduced
    the core's decode); runs it on first use. Never raises.

    decode_tiled(latent, protocol) -> images like vae.decode's (the caller's own tiled path at CHECK_GRID).
    """
    key, subject = check_subject(vae, module)

    def compare():
        channels = module.conv2.in_channels
        frames, height, width = CHECK_LATENTS.get(channels, (2, 8, 8))
        generator = torch.Generator().manual_seed(2026)
        latent = torch.randn(1, channels, frames, height, width, generator=generator) * 0.5
        with torch.inference_mode():  # as ComfyUI runs nodes; its VAE.decode does not set it everywhere
            return compare_candidates(vae, module, latent, decode_tiled)

    return replay_check.check_once(REPLAY, AGAINST, subject, key, DECODE_TOLERANCE, compare)


def compare_candidates(vae, module, latent, decode_tiled):
    """(difference, detail, protocol) of the first candidate protocol whose tiles reproduce vae.decode(latent);
    the best difference and what each candidate gave when none does."""
    best, tried = math.inf, []
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
            return difference, (f"max difference {difference:.2g} <= {DECODE_TOLERANCE:g} at {CHECK_GRID[0]}x"
                                f"{CHECK_GRID[1]} tiles, {protocol_name(protocol)}"), protocol
        tried.append(f"{protocol_name(protocol)}: max difference {difference:.3g} > {DECODE_TOLERANCE:g}")
    return best, "; ".join(tried) or "no candidate ran", None


def protocol_name(protocol):
    space = "convs pad space themselves" if protocol.conv_pads_space else "padding before each conv"
    cache = "layers keep two frames" if protocol.layers_keep_two_frames else "two frames restored per layer"
    return f"replay as ComfyUI {protocol.core} ({space}, {cache})"
