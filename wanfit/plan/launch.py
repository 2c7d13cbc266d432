"""ComfyUI's launch flags and environment for a plan: only flags the core's cli_args.py defines and that
change something on that core, each with the reason it is there."""

from dataclasses import dataclass

from ..core import Core
from ..errors import WanFitError
from ..units import BYTES_PER_GIB, format_gib, gib

CACHE_RAM_MARGIN_BYTES = 1 * BYTES_PER_GIB  # --cache-ram: free RAM kept above the next model's size
# Flags the plan never emits on a core that ships dynamic VRAM: --lowvram does nothing there, the
# others switch dynamic VRAM off (comfy/cli_args.py enables_dynamic_vram()).
NEVER_ON_DYNAMIC_VRAM_CORES = ("--lowvram", "--novram", "--highvram", "--gpu-only")
CUDA_ALLOCATOR_ENV = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


@dataclass(frozen=True)
class LaunchSituation:
    """What the flags of a GPU plan depend on."""

    core: Core
    memory_manager: str  # key of memory_manager.MEMORY_MANAGERS
    device_kind: str  # DeviceInfo.kind: "cuda" gets the allocator setting
    ram_bytes: int
    reserve_vram_bytes: int
    other_process_vram_bytes: int  # the part of the reserve held for other processes on the GPU
    streamed_model_bytes: int
    text_encoder_device: str  # "gpu" or "cpu"
    drops_models: bool  # the plan frees the text encoder (and maybe an expert) between phases
    next_model_bytes: int  # the model loaded after a drop


@dataclass(frozen=True)
class Launch:
    args: tuple
    env: dict
    reasons: tuple


def default_cache_ram_headroom_bytes(ram_bytes):
    """ComfyUI 0.33's RAM-pressure cache threshold without --cache-ram (main.py prompt_worker)."""
    return int(min(10.0, max(2.0, gib(ram_bytes) * 0.10)) * BYTES_PER_GIB)


def flag_gb_text(num_bytes):
    """A GB value as a flag takes it: 0.5, 10, 15.25."""
    return f"{num_bytes / BYTES_PER_GIB:.2f}".rstrip("0").rstrip(".")


def launch_flags(situation):
    """The Launch of a GPU plan (a CPU plan launches with --cpu alone)."""
    core, reserve, other = situation.core, situation.reserve_vram_bytes, situation.other_process_vram_bytes
    ram_bytes, streamed = situation.ram_bytes, situation.streamed_model_bytes
    args, reasons = ["--reserve-vram", flag_gb_text(reserve)], []
    if situation.memory_manager == "dynamic_vram":
        reasons.append(f"--reserve-vram {flag_gb_text(reserve)}: ComfyUI's reserve and comfy-aimdo's VRAM headroom at "
                       "once (main.py passes it to comfy_aimdo.control.init): dynamic VRAM keeps ComfyUI's own VRAM below "
                       f"total - {format_gib(reserve)} at all times, idle included")
        if other > 0:
            reasons.append(f"the {format_gib(other)} for other processes is in that reserve, so their share stays free "
                           "without --disable-smart-memory (which on dynamic VRAM would evict cached weights after "
                           "every run only to stream them in again)")
    else:
        reasons.append(f"--reserve-vram {flag_gb_text(reserve)}: partial loading leaves this much VRAM free when it "
                       "sizes the resident part")
        if streamed and not core.async_offload_default_on:
            args.append("--async-offload")
            reasons.append("--async-offload: copies the next streamed weights while the current layer computes")
        if streamed and situation.text_encoder_device == "cpu" and not core.dynamic_vram:
            args.append("--lowvram")
            reasons.append("--lowvram: ComfyUI's own text encoder loaders put umt5-xxl on the CPU too")
        if other > 0:
            args.append("--disable-smart-memory")
            reasons.append("--disable-smart-memory: hand VRAM back to the other process between runs")
    if situation.drops_models:
        _free_dropped_models(situation, args, reasons)
    unknown = [flag for flag in args if flag.startswith("--") and not core.has_flag(flag)]
    forbidden = [flag for flag in args if core.dynamic_vram and flag in NEVER_ON_DYNAMIC_VRAM_CORES]
    if unknown or forbidden:  # a planner bug, never a user error: fail loudly rather than emit a wrong line
        raise WanFitError(f"plan for ComfyUI {core.version_text} would emit {unknown + forbidden}, which that core "
                          "does not define or which fight its dynamic VRAM")
    env = dict(CUDA_ALLOCATOR_ENV) if situation.device_kind == "cuda" else {}
    return Launch(tuple(args), env, tuple(reasons))


def _free_dropped_models(situation, args, reasons):
    """Let ComfyUI's node cache free what the plan drops: --cache-ram where the core has it, else --cache-none."""
    core, ram_bytes = situation.core, situation.ram_bytes
    if not core.has_flag("--cache-ram"):
        args.append("--cache-none")
        reasons.append("--cache-none: ComfyUI's node cache must not hold the models the plan drops")
        return
    headroom = -(-(situation.next_model_bytes + CACHE_RAM_MARGIN_BYTES) // BYTES_PER_GIB) * BYTES_PER_GIB
    default_headroom = default_cache_ram_headroom_bytes(ram_bytes)
    if not core.ram_cache_default_on:  # 0.3.68-0.21: the classic cache is the default and holds every model
        args += ["--cache-ram", flag_gb_text(headroom)]
        reasons.append(f"--cache-ram {flag_gb_text(headroom)}: switches ComfyUI {core.version_text} from its default "
                       "classic cache (which would hold the models the plan drops) to its RAM-pressure cache, "
                       f"which frees cached models once free RAM falls below {format_gib(headroom)} (the next "
                       "model plus a margin) and keeps them cached while RAM allows, unlike --cache-none")
    elif headroom > default_headroom:
        args += ["--cache-ram", flag_gb_text(headroom)]
        reasons.append(f"--cache-ram {flag_gb_text(headroom)}: ComfyUI {core.version_text}'s RAM-pressure cache "
                       f"frees cached models once free RAM falls below {format_gib(headroom)} (the next model "
                       f"plus a margin; default {format_gib(default_headroom)}), "
                       "and keeps them cached while RAM allows, unlike --cache-none")
    else:
        reasons.append(f"ComfyUI {core.version_text}'s RAM-pressure cache (default threshold "
                       f"{format_gib(default_headroom)}) already frees models in time")
