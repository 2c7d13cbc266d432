"""Decode memory against the frame count: ComfyUI's estimate, ComfyUI's decode, WanFit's plan and decode.

    python bench/vae_decode_frames.py                       # Wan 2.2, 12x12 latent, 2/4/6 latent frames
    python bench/vae_decode_frames.py --vae 2.1 --latent-hw 32 32 --frames 2 5 --budget-mb 300

ComfyUI sizes VAE.decode with memory_used_decode (comfy/sd.py: Wan 2.1 7000, Wan 2.2 8000 bytes per
latent px x 64 / 256 output px per latent px x dtype bytes), the same whatever the frame count, and on
an OOM retries with fixed 256 px tiles (decode_tiled_3d, no progress bar: one tile when the video is
no wider than 256 px, so the retry saves nothing there). WanFit plans its tiles from measured constants
for the budget it is given; its peak stays at its plan whatever the frame count. One fresh process per case.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_decode_memory import SPATIAL, measure  # noqa: E402

COMFY_ESTIMATE_BYTES_PER_LATENT_PX = {"2.1": 7000 * 8 * 8, "2.2": 8000 * 16 * 16}  # comfy/sd.py, v0.3.64


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", choices=("2.1", "2.2"), default="2.2")
    parser.add_argument("--latent-hw", type=int, nargs=2, default=[12, 12])
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 6], help="latent frames")
    parser.add_argument("--budget-mb", type=float, default=400.0, help="WanFit's budget")
    args = parser.parse_args()
    h, w = args.latent_hw
    estimate = COMFY_ESTIMATE_BYTES_PER_LATENT_PX[args.vae] * h * w * 4 / 2**20
    out_px = f"{h * SPATIAL[args.vae]}x{w * SPATIAL[args.vae]}"
    print(f"Wan {args.vae} VAE, {out_px} output, CPU fp32; ComfyUI's OOM retry tile: 256 px "
          f"({'one tile: no saving' if max(h, w) * SPATIAL[args.vae] <= 256 else 'several tiles'})\n")
    print("| output frames | ComfyUI estimate MB | ComfyUI VAE.decode MB, s | "
          f"WanFit at {args.budget_mb:.0f} MB: plan | predicted MB | measured MB, s |")
    print("|---|---|---|---|---|---|")
    for frames in args.frames:
        base = {"vae": args.vae, "latent": [frames, h, w]}
        comfy = measure({**base, "method": "comfy_decode"})
        wanfit = measure({**base, "method": "wanfit", "budget_mb": args.budget_mb, "allow_untiled": False})
        print(f"| {1 + 4 * (frames - 1)} | {estimate:.0f} | {comfy['working_bytes'] / 2**20:.0f}, "
              f"{comfy['seconds']:.1f} | {wanfit['plan']} | {wanfit['predicted_bytes'] / 2**20:.0f} | "
              f"{wanfit['working_bytes'] / 2**20:.0f}, {wanfit['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
