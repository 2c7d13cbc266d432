"""plan(): check the inputs, search the candidates, build the Plan of the first that fits or refuse."""

import logging

from ..core import Core
from ..device import DeviceInfo
from ..units import format_gib
from .build import build_plan
from .formats import suggest_format
from .refusal import refusal
from .search import search
from .types import Job, Overrides, Plan
from .validation import plan_request

log = logging.getLogger("wanfit")


def plan(device: DeviceInfo, model_variant: str, job: Job, overrides: Overrides = None, system_ram_bytes=None,
         core: Core = None) -> Plan:
    """Choose dtype, placement, offload budget and launch flags for `job` on `device` under `core`.

    `core` (wanfit.core.Core) is the ComfyUI the plan is for; None plans for the newest supported
    core (0.33.0), which is what a fresh install runs. The node and the route pass the running
    core, the CLI the one at --core / $COMFYUI_PATH.
    """
    request = plan_request(device, model_variant, job, overrides, system_ram_bytes, core)
    result = search(request)
    if result.chosen is None:
        raise refusal(request, result.last_tried)
    suggestion = suggest_format(request, result.chosen)
    chosen = build_plan(request, result, suggestion=suggestion.describe() if suggestion else "")
    log.info("plan %s %dx%dx%d on %s, ComfyUI %s (%s): %s, resident %s, peak VRAM %s, RAM %s", chosen.model_variant,
             job.width, job.height, job.frames, device.name, chosen.core_version, chosen.memory_manager,
             chosen.weight_dtype, format_gib(chosen.resident_model_bytes), format_gib(chosen.predicted_peak_vram_bytes),
             format_gib(chosen.predicted_peak_ram_bytes))
    return chosen

