"""ComfyUI's VAE decode vs WanFit's, side by side in one run, one fresh process per case.

    python bench/vae_decode_compare.py --vae 2.1          # 17x256x256 output (latent 16x5x32x32)
    python bench/vae_decode_compare.py --vae 2.2          # 9x192x192 output (latent 48x3x12x12)
    python bench/vae_decode_compare.py --vae 2.2 --latent 3 16 16 --budgets 100 50
    python bench/vae_decode_compare.py --vae 2.1 --budgets-mb 264   # also WanFit at 264 MB

Cases: VAE.decode (untiled), VAE.decode_tiled at 128 px / 32 overlap and 64 px / 16 overlap
(whole time axis, as VAEDecodeTiled with a large temporal size), WanFit at budgets of
25/50/75/100% of the untiled decode's measured working memory, and WanFit with each tiled
case's measured peak as its budget (the equal-peak comparison). Prints seconds, working MB
(peak RSS minus RSS after loading), PSNR and max abs diff against the untiled decode (images
in [0, 1]), and the ratios. Random-weight fixtures; speed and memory do not depend on weights.
"""

import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_decode_memory import measure  # noqa: E402

DEFAULT_LATENTS = {"2.1": (5, 32, 32), "2.2": (3, 12, 12)}


def psnr_and_diff(path, reference):
    import torch

    out = torch.load(path)
    diff = (out - reference).abs()
    mse = diff.pow(2).mean().item()
    return (math.inf if mse == 0 else 10 * math.log10(1.0 / mse)), diff.max().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", choices=("2.1", "2.2"), required=True)
    parser.add_argument("--latent", type=int, nargs=3, metavar=("T", "H", "W"))
    parser.add_argument("--budgets", type=float, nargs="+", default=[100, 75, 50, 25],
                        help="WanFit budgets, percent of the untiled decode's working memory")
    parser.add_argument("--budgets-mb", type=float, nargs="*", default=[],
                        help="more WanFit budgets in MB (e.g. a tiled case's peak seen in another run)")
    parser.add_argument("--comfy-tiles", type=int, nargs="+", default=[128, 64], help="decode_tiled tile sizes (px)")
    parser.add_argument("--overlap", type=int, default=None, help="WanFit halo cap in latent px (default exact)")
    args = parser.parse_args()
    import torch

    latent = list(args.latent or DEFAULT_LATENTS[args.vae])
    tmp = tempfile.mkdtemp(prefix="wanfit_vae_bench_")
    base = {"vae": args.vae, "latent": latent}
    rows = []

    full = measure({**base, "method": "comfy_decode", "save": os.path.join(tmp, "full.pt")})
    reference = torch.load(full["saved"])
    rows.append(("ComfyUI VAE.decode (untiled)", full, math.inf, 0.0))
    print(f"# untiled: {full['seconds']:.1f} s, {full['working_bytes'] / 2**20:.0f} MB", flush=True)

    for tile in args.comfy_tiles:
        res = measure({**base, "method": "comfy_tiled", "tile": tile, "overlap": tile // 4,
                       "save": os.path.join(tmp, f"tiled{tile}.pt")})
        rows.append((f"ComfyUI decode_tiled {tile} px, overlap {tile // 4}", res, *psnr_and_diff(res["saved"], reference)))
        print(f"# tiled {tile}: {res['seconds']:.1f} s, {res['working_bytes'] / 2**20:.0f} MB", flush=True)

    budgets = [(f"{percent:.0f}%", full["working_bytes"] * percent / 100 / 2**20) for percent in args.budgets]
    budgets += [(f"= tiled {name.split()[2]} peak", res["working_bytes"] / 2**20)
                for name, res, _, _ in rows if name.startswith("ComfyUI decode_tiled")]
    budgets += [(f"{mb:.0f} MB", mb) for mb in args.budgets_mb]
    for label, budget_mb in budgets:
        percent = label.replace(" ", "_").replace("%", "").replace("=", "at")
        case = {**base, "method": "wanfit", "budget_mb": budget_mb, "save": os.path.join(tmp, f"wanfit{percent}.pt")}
        if args.overlap is not None:
            case["wanfit_overlap"] = args.overlap
        try:
            res = measure(case)
        except RuntimeError as error:
            print(f"# WanFit {label}: {str(error).splitlines()[-1]}", flush=True)
            continue
        res["budget_mb"] = budget_mb
        rows.append((f"WanFit {label} = {budget_mb:.0f} MB: {res['plan']}", res,
                     *psnr_and_diff(res["saved"], reference)))
        print(f"# WanFit {label}: {res['seconds']:.1f} s, {res['working_bytes'] / 2**20:.0f} MB", flush=True)

    frames = 1 + 4 * (latent[0] - 1)
    scale = 8 if args.vae == "2.1" else 16
    print(f"\nWan {args.vae} VAE, output {frames}x{latent[1] * scale}x{latent[2] * scale} "
          f"(latent {latent[0]}x{latent[1]}x{latent[2]}), CPU fp32, {torch.get_num_threads()} threads\n")
    print("| case | s | x untiled time | working MB | x untiled MB | peak / budget | PSNR dB | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, res, psnr, max_diff in rows:
        over = f"{res['working_bytes'] / (res['budget_mb'] * 2**20):.2f}" if "budget_mb" in res else "-"
        print(f"| {name} | {res['seconds']:.1f} | {res['seconds'] / full['seconds']:.2f} | "
              f"{res['working_bytes'] / 2**20:.0f} | {res['working_bytes'] / full['working_bytes']:.2f} | {over} | "
              f"{'inf' if psnr == math.inf else f'{psnr:.1f}'} | {max_diff:.2e} |")

    # equal-peak comparison: each ComfyUI tiled case against WanFit given that case's peak as its budget,
    # and against the fastest WanFit case that measured no more memory
    wanfit = [(name, res, psnr, md) for name, res, psnr, md in rows if name.startswith("WanFit")]
    for name, res, psnr, max_diff in rows:
        if not name.startswith("ComfyUI decode_tiled"):
            continue
        tag = f"= tiled {name.split()[2]} peak"
        same = [w for w in wanfit if tag in w[0]]
        fits = [w for w in wanfit if w[1]["working_bytes"] <= res["working_bytes"] * 1.02]
        for title, pick in (("budget = its peak", same[0] if same else None),
                            ("fastest at <= its peak", min(fits, key=lambda w: w[1]["seconds"]) if fits else None)):
            if pick is None:
                print(f"\n{name} ({res['working_bytes'] / 2**20:.0f} MB), {title}: no WanFit case")
                continue
            print(f"\n{name} ({res['working_bytes'] / 2**20:.0f} MB, {res['seconds']:.1f} s), {title}: "
                  f"{pick[0]}: {pick[1]['working_bytes'] / 2**20:.0f} MB "
                  f"({pick[1]['working_bytes'] / res['working_bytes']:.2f}x its peak), {pick[1]['seconds']:.1f} s = "
                  f"{res['seconds'] / pick[1]['seconds']:.2f}x faster, PSNR {pick[2]:.1f} vs {psnr:.1f} dB, "
                  f"max abs diff {pick[3]:.2e} vs {max_diff:.2e}")


if __name__ == "__main__":
    main()
