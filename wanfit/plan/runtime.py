"""What a plan can change in a running ComfyUI, and what needs a restart.

ComfyUI's modules are passed in (model_management, cli_args.args) with the running core
(wanfit.core.running_core()), so this stays importable without ComfyUI and testable with
plain objects.
"""

import logging

from ..units import BYTES_PER_GIB, format_gib

log = logging.getLogger("wanfit")


def _flag_values(launch_args):
    """('--reserve-vram', '0.5', '--async-offload') -> [('--reserve-vram', '0.5'), ('--async-offload', None)]."""
    pairs = []
    for item in launch_args:
        if item.startswith("--"):
            pairs.append([item, None])
        elif pairs:
            pairs[-1][1] = item
    return [tuple(pair) for pair in pairs]


def _attribute(flag):
    """argparse's dest for a flag: --disable-smart-memory -> disable_smart_memory."""
    return flag.lstrip("-").replace("-", "_")


def _already_set(args, flag, value):
    current = getattr(args, _attribute(flag), None)
    if value is None:
        return bool(current)
    if isinstance(current, (list, tuple)):  # --cache-ram GB [GB]
        current = current[0] if current else None
    try:
        return current is not None and float(current) >= float(value)
    except (TypeError, ValueError):
        return False


def apply_runtime_settings(plan, model_management, args, core=None):
    """Apply the plan's VRAM reserve now; list the launch flags the running ComfyUI lacks.

    `core` is the running core (wanfit.core.Core): only flags its parser defines can be asked
    for. On dynamic VRAM the reserve also sets comfy-aimdo's headroom, which only happens at
    launch, so there it goes on the restart list too. Returns lines for the node's summary.
    """
    lines = []
    dynamic_now = plan.memory_manager == "dynamic_vram"
    if not plan.is_cpu:
        # only ever raised: a --reserve-vram the user launched with stays a floor
        current = getattr(model_management, "EXTRA_RESERVED_VRAM", 0)
        if plan.reserve_vram_bytes > current:
            model_management.EXTRA_RESERVED_VRAM = plan.reserve_vram_bytes
            lines.append(f"applied now: VRAM reserve {format_gib(current)} -> {format_gib(plan.reserve_vram_bytes)}")
            log.info("WanFit plan: EXTRA_RESERVED_VRAM %s -> %s", current, plan.reserve_vram_bytes)
    missing, unknown = [], []
    for flag, value in _flag_values(plan.launch_args):
        if core is not None and not core.has_flag(flag):
            unknown.append(flag)
            continue
        if flag == "--reserve-vram":
            launched = getattr(args, "reserve_vram", None)
            if dynamic_now and (launched is None or launched * BYTES_PER_GIB < plan.reserve_vram_bytes):
                missing.append(f"{flag} {value}")  # comfy-aimdo reads its headroom at start-up only
            continue
        if not _already_set(args, flag, value):
            missing.append(flag if value is None else f"{flag} {value}")
    if missing:
        lines.append("needs a restart: start ComfyUI with " + " ".join(missing)
                     + " (python -m wanfit plan --print-args prints the full line)")
    if unknown:  # a plan made for another core
        lines.append(f"not for this ComfyUI ({core.version_text}): " + " ".join(unknown))
    return lines
