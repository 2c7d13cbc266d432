"""What the self-checks cost against a 4-step A14B run's sampling time, measured side by side on this machine.

    COMFYUI_PATH=~/ComfyUI-0.33.0 python bench/replay_check_cost.py [--reference-tokens 1024]

The lean forward checks itself once per process (per core, model class, dtype, device) by running one
WAN block both ways on CHECK_TOKENS tokens; the tiled decode checks itself once per VAE by decoding a
small latent both ways. Both are timed here at real size: an A14B block (dim 5120, FFN 13824, fp32 on
this CPU, random weights, the core's own WanModel) and the Wan 2.1 VAE at its real architecture (the
test fixture: random weights). The reference is the same block's forward at --reference-tokens tokens,
scaled LINEARLY to a 4-step A14B run at 832x480x81 (32,760 tokens, 40 blocks, 4 steps, cfg 1 as with
the lightx2v LoRAs): attention grows faster than linearly, so the real run is longer and the printed
share an upper bound.
"""

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import torch  # noqa: E402

from activation_peak import build_model, core_version, import_core  # noqa: E402
# before the core goes on sys.path: ComfyUI has a `tests` package of its own
from tests.fixtures.generate import ensure_fixtures  # noqa: E402
from wanfit.plan import footprint as memory  # noqa: E402

RUN_TOKENS = 32_760  # A14B 832x480x81: 21 latent frames x 30 x 52 tokens
RUN_BLOCKS = 40
RUN_STEPS = 4


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def lean_check_seconds(model, repeats):
    """The first forward of a lean model runs the check; later ones do not: the difference, median."""
    from wanfit import lean_forward, replay_check

    # 1 x 32 x 32 latent -> 1 x 16 x 16 = 256 tokens: the check runs on all of them (CHECK_TOKENS)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 1, 32, 32, generator=generator)
    context = torch.randn(1, 512, 4096, generator=generator)
    timestep = torch.tensor([500.0])
    costs = []
    for _ in range(repeats):
        replay_check.forget_checks()
        options = lean_forward.lean_transformer_options(len(model.blocks), mode="on")
        with torch.inference_mode():
            first, _ = timed(lambda: model(x, timestep, context, transformer_options=options))
            second, _ = timed(lambda: model(x, timestep, context, transformer_options=options))
        costs.append(first - second)
    (check,) = replay_check.cached_checks(lean_forward.REPLAY)
    return sorted(costs)[len(costs) // 2], check


def block_seconds(model, tokens, repeats):
    """One stock forward of the one-block model at `tokens` tokens (frames of 32 x 32 latent px = 256 tokens)."""
    frames = max(1, tokens // 256)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, frames, 32, 32, generator=generator)
    context = torch.randn(1, 512, 4096, generator=generator)
    timestep = torch.tensor([500.0])
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            times.append(timed(lambda: model(x, timestep, context, transformer_options={}))[0])
    return sorted(times)[len(times) // 2], frames * 256


def decode_check_seconds(core_path, repeats):
    import comfy.sd
    import comfy.utils

    from wanfit import replay_check
    from wanfit.decode import api

    files = ensure_fixtures(core_path)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(files["vae"]["wanfit_random_wan_2.1_vae.safetensors"])))
    costs = []
    for _ in range(repeats):
        replay_check.forget_checks()
        with torch.inference_mode():
            seconds, check = timed(lambda: api.check_against_core(vae))
        costs.append(seconds)
    return sorted(costs)[len(costs) // 2], check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core-path", default=os.environ.get("COMFYUI_PATH"))
    parser.add_argument("--reference-tokens", type=int, default=1024, help="tokens of the timed reference forward")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(argv)
    if not options.core_path:
        parser.error("no core: pass --core-path or set COMFYUI_PATH")
    core_path = import_core(options.core_path)
    version = core_version(core_path)
    expert = memory.T2V_A14B_EXPERT
    config = memory.WanTransformerConfig("a14b-one-block", dim=expert.dim, ffn_dim=expert.ffn_dim, num_layers=1,
                                         num_heads=expert.num_heads, in_dim=16, out_dim=16)
    model = build_model(config, "cpu", torch.float32)
    lean_cost, lean_check = lean_check_seconds(model, options.repeats)
    block, tokens = block_seconds(model, options.reference_tokens, options.repeats)
    run_lower_bound = block * (RUN_TOKENS / tokens) * RUN_BLOCKS * RUN_STEPS
    del model
    decode_cost, decode_check = decode_check_seconds(core_path, options.repeats)
    share = (lean_cost + decode_cost) / run_lower_bound
    print(f"ComfyUI {version}, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU")
    print(f"lean forward check (A14B block, {lean_check.detail}): {lean_cost:.2f} s")
    print(f"tiled decode check (Wan 2.1 VAE, {decode_check.describe()}): {decode_cost:.2f} s")
    print(f"A14B block forward at {tokens} tokens: {block:.2f} s -> 4-step A14B run at 832x480x81 (40 blocks, "
          f"{RUN_TOKENS} tokens, linear scaling: a lower bound) >= {run_lower_bound:.0f} s")
    print(f"checks / 4-step run <= {share * 100:.3f} % (lean {lean_cost / run_lower_bound * 100:.3f} %, "
          f"decode {decode_cost / run_lower_bound * 100:.3f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
