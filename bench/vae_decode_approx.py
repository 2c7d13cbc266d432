"""How far WanFit's approximate decode (halo capped, tiles blended) is from ComfyUI's VAE Decode.

    python bench/vae_decode_approx.py                          # both VAEs at their default small latents
    python bench/vae_decode_approx.py --vae 2.2 --latent 3 12 12 --cases --budgets-mb 160
    python bench/vae_decode_approx.py --vae 2.1 --cases largest exact   # also decode at the exact budget

The planner takes the approximate path only when no exact tiling fits the budget. By its memory
model that happens only for small frames (at real sizes the whole-frame stem sets the floor, and
the smallest budget that fits at all is already exact), so this runs on small latents, on the CPU
(fp32, the output video in the same memory), at the budgets the planner turns approximate at:

- largest: the exact budget the report names (wanfit.decode.budget) less one byte: the largest
  approximate plan (the planner keeps the widest halo cap that fits);
- smallest: the smallest budget any plan fits (the narrowest halo cap, the most tiles);
- exact (on request: its smallest exact tiles make it the slowest case): the named budget itself,
  the control (the report's claim that it decodes exactly);
- any --budgets-mb given.

Each case is a fresh process (bench/vae_decode_memory.py's worker); the reference is ComfyUI's own
VAE.decode (what VAE Decode runs) on the same latent. Differences are on images in [0, 1], given
in /255; PSNR over the whole video. Random-weight fixtures (tests/fixtures/generate.py).
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vae_decode_memory import LATENT_CHANNELS, SPATIAL, measure  # noqa: E402

from wanfit.decode import budget as decode_budget  # noqa: E402

DEFAULT_LATENTS = {"2.1": (2, 16, 16), "2.2": (2, 12, 12)}
KINDS = {"2.1": "wan2.1", "2.2": "wan2.2"}


def errors(path, reference):
    import torch

    diff = (torch.load(path) - reference).abs()
    mse = diff.pow(2).mean().item()
    return diff.max().item() * 255, diff.mean().item() * 255, math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def budgets_for(vae, latent, extra_mb, wanted):
    """(label, budget bytes) the planner is asked at: one byte under the exact budget, the smallest, the exact
    budget, extras."""
    kind = KINDS[vae]
    shape = (1, LATENT_CHANNELS[vae], *latent)
    layouts = decode_budget.static_layouts(kind)
    exact = decode_budget.exact_budget_bytes(layouts, shape, 4, "cpu", True)
    _, minimum = decode_budget.search_plan(layouts, shape, 0, 4, "cpu", True)
    cases = []
    if "largest" in wanted:
        cases.append(("exact - 1 byte", exact - 1))
    if "smallest" in wanted and minimum < exact - 1:
        cases.append(("smallest", minimum))
    if "exact" in wanted:
        cases.append(("exact budget", exact))
    cases += [(f"{mb:g} MB", int(mb * 2**20)) for mb in extra_mb]
    return cases, exact, minimum


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", choices=("2.1", "2.2"), action="append")
    parser.add_argument("--latent", type=int, nargs=3, metavar=("T", "H", "W"))
    parser.add_argument("--budgets-mb", type=float, nargs="*", default=[], help="more budgets in MB")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case (a loaded machine needs more)")
    parser.add_argument("--cases", nargs="*", choices=("largest", "smallest", "exact"), default=["largest", "smallest"],
                        help="which planner budgets to decode at (default: largest smallest)")
    args = parser.parse_args()
    import torch

    tmp = tempfile.mkdtemp(prefix="wanfit_vae_approx_")
    rows = []
    for vae in args.vae or ["2.1", "2.2"]:
        latent = list(args.latent or DEFAULT_LATENTS[vae])
        base = {"vae": vae, "latent": latent}
        full = measure({**base, "method": "comfy_decode", "save": os.path.join(tmp, f"full{vae}.pt")})
        reference = torch.load(full["saved"])
        print(f"# Wan {vae} {latent}: VAE.decode {full['seconds']:.1f} s", flush=True)
        cases, exact, minimum = budgets_for(vae, latent, args.budgets_mb, args.cases)
        print(f"# exact from {exact} bytes ({exact / 2**20:.2f} MB), smallest plan {minimum / 2**20:.2f} MB", flush=True)
        for label, budget in cases:
            save = os.path.join(tmp, f"wanfit{vae}_{budget}.pt")
            try:
                res = measure({**base, "method": "wanfit", "budget_bytes": budget, "save": save}, timeout=args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"# {label}: {str(error).splitlines()[-1]}", flush=True)
                continue
            max_diff, mean_diff, psnr = errors(res["saved"], reference)
            rows.append((vae, latent, label, budget, res, max_diff, mean_diff, psnr, full))
            print(f"# {label} = {budget} bytes: {res['plan']}; {res['seconds']:.1f} s, max {max_diff:.2f}/255",
                  flush=True)
            if res["exact"] == (budget < exact):
                print(f"# MISMATCH: the plan at {budget} bytes is {'exact' if res['exact'] else 'approximate'}, "
                      f"the exact budget is {exact}", flush=True)

    print(f"\nCPU fp32, {torch.get_num_threads()} threads; reference ComfyUI's VAE.decode; differences on [0, 1] images "
          "x 255\n")
    print("| VAE | latent (output) | budget | budget MB | tiles | halo cap | max \\|diff\\| /255 | mean \\|diff\\| /255 "
          "| PSNR dB | s (x VAE.decode) | working MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for vae, latent, label, budget, res, max_diff, mean_diff, psnr, full in rows:
        frames = 1 + 4 * (latent[0] - 1)
        scale = SPATIAL[vae]
        size = f"{latent[0]}x{latent[1]}x{latent[2]} ({frames}x{latent[1] * scale}x{latent[2] * scale})"
        grid = "x".join(str(n) for n in res.get("grid", [])) or "untiled"
        cap = "exact" if res["exact"] else f"{res['halo_cap']} latent px"
        print(f"| Wan {vae} | {size} | {label} | {budget / 2**20:.2f} | {grid} | {cap} | {max_diff:.2f} | "
              f"{mean_diff:.3f} | {'inf' if psnr == math.inf else f'{psnr:.1f}'} | "
              f"{res['seconds']:.1f} ({res['seconds'] / full['seconds']:.2f}) | {res['working_bytes'] / 2**20:.0f} |")


if __name__ == "__main__":
    main()
