"""The offload planner: device + model variant + job size -> a Plan, before anything loads.

A pure function of its inputs (same inputs, same plan); torch-free. It simulates what the
ComfyUI core it plans for (wanfit.core: 0.3.64 or 0.33.0) will hold in VRAM and RAM in each
phase (text encode, sampling, VAE decode), picks the fastest configuration that fits, and
otherwise refuses with what would fit. One module per job:

- catalogue: model variants, named GPUs, GPU_TIER names (device_for_tier)
- footprint: what WAN 2.2 occupies (weights, activations, sampler state, overheads)
- formats: ComfyUI's native quantized formats: which cards compute them, which cores load them, the suggestion
- types: Job, Overrides, PlanRequest, Plan, PlanDoesNotFitError, plan_field (a field of a Plan or its dict)
- validation: the inputs, checked field by field
- memory_manager: dynamic VRAM, partial loading or the CPU
- search: the candidates, simulated phase by phase (a typed Evaluation each)
- launch: ComfyUI's launch flags and environment
- build: the Plan of the chosen candidate, with its reasons
- refusal: what would fit instead
- planner: plan()
- options: node widgets, query parameters and CLI flags -> plan()
- runtime: what a plan changes in a running ComfyUI, and what needs a restart
"""

from .catalogue import GPU_TIERS, MODEL_VARIANTS, cpu_device, device_for_gpu, device_for_tier, tier_for_vram
from .options import plan_from_options, plan_from_query
from .planner import plan
from .runtime import apply_runtime_settings
from .types import Job, Overrides, Plan, PlanDoesNotFitError, plan_field

__all__ = ["GPU_TIERS", "MODEL_VARIANTS", "Job", "Overrides", "Plan", "PlanDoesNotFitError", "apply_runtime_settings",
           "cpu_device", "device_for_gpu", "device_for_tier", "plan", "plan_field", "plan_from_options",
           "plan_from_query", "tier_for_vram"]
