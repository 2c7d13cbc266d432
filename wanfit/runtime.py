"""What a plan can change in a running ComfyUI, and what needs a restart.

ComfyUI's modules are passed in (model_management, cli_args), so this stays importable
without ComfyUI and testable with plain objects.
"""

import logging

from .units import format_gib

log = logging.getLogger("wanfit")

# launch flag -> attribute of comfy.cli_args.args
FLAG_ATTRIBUTES = {"--lowvram": "lowvram", "--novram": "novram", "--async-offload": "async_offload",
                   "--disable-smart-memory": "disable_smart_memory", "--cache-none": "cache_none", "--cpu": "cpu"}


def apply_runtime_settings(plan, model_management, args):
    """Apply the plan's VRAM reserve now; list the launch flags ComfyUI was not started with.

    Returns human-readable lines for the node's summary.
    """
    lines = []
    if not plan.is_cpu:
        # only ever raised: a --reserve-vram the user launched with stays a floor
        current = getattr(model_management, "EXTRA_RESERVED_VRAM", 0)
        if plan.reserve_vram_bytes > current:
            model_management.EXTRA_RESERVED_VRAM = plan.reserve_vram_bytes
            lines.append(f"applied now: VRAM reserve {format_gib(current)} -> {format_gib(plan.reserve_vram_bytes)}")
            log.info("WanFit plan: EXTRA_RESERVED_VRAM %s -> %s", current, plan.reserve_vram_bytes)
    missing = [flag for flag in plan.launch_args
               if flag in FLAG_ATTRIBUTES and not getattr(args, FLAG_ATTRIBUTES[flag], False)]
    if missing:
        lines.append("needs a restart: start ComfyUI with " + " ".join(missing)
                     + " (python -m wanfit plan --print-args prints the full line)")
    return lines
