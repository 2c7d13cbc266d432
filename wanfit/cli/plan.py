"""`python -m wanfit plan`: print the offload plan, or only ComfyUI's launch flags.

Start scripts run `python main.py $(python -m wanfit plan --print-args)`. Without a
GPU that torch can query, GPU_TIER (e.g. PROSUMER_24GB) names the card, as
hand-written start scripts do today.
"""

import argparse
import json
import logging
import os
import sys

from ..errors import WanFitError
from ..plan import GPU_TIERS, MODEL_VARIANTS, device_for_tier
from ..plan_options import plan_from_options

log = logging.getLogger("wanfit")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m wanfit plan", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ti2v_5b", choices=MODEL_VARIANTS, help="model variant (default ti2v_5b)")
    parser.add_argument("--width", type=int, default=None, help="video width (default 1280)")
    parser.add_argument("--height", type=int, default=None, help="video height (default 704 for 5B, 720 for A14B)")
    parser.add_argument("--frames", type=int, default=None, help="frames, 4n+1 (default 121 for 5B, 81 for A14B)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-cfg", action="store_true", help="cfg 1.0 (e.g. a distill LoRA): one pass per step")
    parser.add_argument("--tier", default=None, help="plan for a named tier instead of this GPU: " + ", ".join(GPU_TIERS))
    parser.add_argument("--reserve-vram-gb", type=float, default=None,
                        help="VRAM to leave to other processes (e.g. a local LLM server)")
    parser.add_argument("--weight-dtype", default=None, help="force the diffusion model dtype (fp16, bf16, fp8_scaled, ...)")
    parser.add_argument("--text-encoder-device", default=None, choices=("cpu", "gpu"))
    parser.add_argument("--print-args", action="store_true", help="print only the ComfyUI launch flags, on one line")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def resolve_device(tier):
    """--tier, else the GPU torch sees, else GPU_TIER, else the CPU."""
    from ..device import probe_device, system_ram_bytes

    if tier:
        return device_for_tier(tier, system_ram_bytes()[0])
    if os.environ.get("GPU_TIER") and not os.path.exists("/dev/nvidiactl"):
        return device_for_tier(os.environ["GPU_TIER"], system_ram_bytes()[0])  # no NVIDIA driver: skip importing torch
    try:
        device = probe_device()
    except Exception as error:  # no torch, broken driver: fall back to GPU_TIER
        log.warning("cannot query the GPU (%s)", error)
        device = None
    if (device is None or not device.is_gpu) and os.environ.get("GPU_TIER"):
        return device_for_tier(os.environ["GPU_TIER"], system_ram_bytes()[0])
    if device is None:
        raise WanFitError("no GPU could be queried and GPU_TIER is not set: pass --tier (one of "
                          + ", ".join(GPU_TIERS) + ")")
    return device


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.tier)
        result = plan_from_options(lambda: device, args.model, args.width, args.height, args.frames, args.batch,
                                   cfg=not args.no_cfg, reserve_vram_gb=args.reserve_vram_gb or 0.0,
                                   weight_dtype=args.weight_dtype or "auto",
                                   text_encoder_device=args.text_encoder_device or "auto")
    except WanFitError as error:
        print(f"wanfit plan: {error}", file=sys.stderr)
        return 2
    if args.print_args:
        print(" ".join(result.launch_args))
    elif args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(result.summary())
        print("Why:")
        for reason in result.reasons:
            print(f"  - {reason}")
        if result.launch_env:
            print("Environment: " + " ".join(f"{k}={v}" for k, v in result.launch_env.items()))
    return 0
