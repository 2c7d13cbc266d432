"""`python -m wanfit plan`: print the offload plan, or only ComfyUI's launch flags.

Start scripts run `python main.py $(python -m wanfit plan --print-args)`. Without a
GPU that torch can query, GPU_TIER (e.g. PROSUMER_24GB) names the card, as
hand-written start scripts do today. The flags are for one ComfyUI core: --core (a
checkout folder or a version), else the checkout at $COMFYUI_PATH, else ~/ComfyUI, else
the newest supported core (0.33.0), said on stderr.
"""

import argparse
from dataclasses import replace
import json
import logging
import os
import sys

from .. import core as cores
from ..errors import InvalidInputError, WanFitError
from ..plan import GPU_TIERS, MODEL_VARIANTS, device_for_tier, plan_from_options
from ..units import gib_to_bytes

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
    parser.add_argument("--system-ram-gb", "--ram-gb", dest="system_ram_gb", type=float, default=None,
                        help="plan for this much system RAM instead of this machine's (with --tier / GPU_TIER)")
    parser.add_argument("--reserve-vram-gb", type=float, default=None,
                        help="VRAM to leave to other processes (e.g. a local LLM server)")
    parser.add_argument("--weight-dtype", default=None, help="force the diffusion model dtype: fp16, bf16, fp8_scaled, ..., or a ComfyUI-native quantized "
                             "format: float8, int8, mxfp8, nvfp4 (default auto)")
    parser.add_argument("--text-encoder-device", default=None, choices=("cpu", "gpu"))
    parser.add_argument("--core", default=None, metavar="PATH_OR_VERSION",
                        help="the ComfyUI core to plan for: a checkout folder or a version such as 0.33.0 "
                             "(default: the checkout at $COMFYUI_PATH, else ~/ComfyUI, else the newest supported, "
                             f"{cores.format_version(cores.NEWEST_VERSION)})")
    parser.add_argument("--print-args", action="store_true", help="print only the ComfyUI launch flags, on one line")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def resolve_device(tier, ram_gb=None):
    """--tier, else the GPU torch sees, else GPU_TIER, else the CPU."""
    from ..device import probe_device, system_ram_bytes

    if ram_gb is not None and ram_gb <= 0:
        raise InvalidInputError("--system-ram-gb", ram_gb, "a positive number of GB")
    ram = gib_to_bytes(ram_gb) if ram_gb else None
    if tier:
        return device_for_tier(tier, ram or system_ram_bytes()[0])
    if os.environ.get("GPU_TIER") and not os.path.exists("/dev/nvidiactl"):
        return device_for_tier(os.environ["GPU_TIER"], ram or system_ram_bytes()[0])  # no NVIDIA driver: skip torch
    try:
        device = probe_device()
    except Exception as error:  # no torch, broken driver: fall back to GPU_TIER
        log.warning("cannot query the GPU (%s)", error)
        device = None
    if (device is None or not device.is_gpu) and os.environ.get("GPU_TIER"):
        return device_for_tier(os.environ["GPU_TIER"], ram or system_ram_bytes()[0])
    if device is None:
        raise WanFitError("no GPU could be queried and GPU_TIER is not set: pass --tier (one of "
                          + ", ".join(GPU_TIERS) + ")")
    return replace(device, total_ram_bytes=ram, free_ram_bytes=ram) if ram else device


def resolve_core(value):
    """--core, else the checkout at $COMFYUI_PATH / ~/ComfyUI, else the newest supported core (said on stderr)."""
    if value:
        return cores.core_from_argument(value)
    checkout = cores.default_checkout()
    if checkout is not None:
        return cores.core_from_checkout(checkout)
    core = cores.newest_core()
    print(f"wanfit plan: no ComfyUI checkout at $COMFYUI_PATH or ~/ComfyUI; planning for the newest supported "
          f"core, ComfyUI {core.version_text} (pass --core PATH_OR_VERSION to choose)", file=sys.stderr)
    return core


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        core = resolve_core(args.core)
        if core.note:
            print(f"wanfit plan: {core.note}", file=sys.stderr)
        device = resolve_device(args.tier, args.system_ram_gb)
        result = plan_from_options(lambda: device, args.model, args.width, args.height, args.frames, args.batch,
                                   cfg=not args.no_cfg, reserve_vram_gb=args.reserve_vram_gb or 0.0,
                                   weight_dtype=args.weight_dtype or "auto",
                                   text_encoder_device=args.text_encoder_device or "auto", core=core)
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
