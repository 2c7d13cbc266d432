"""Which ComfyUI memory manager will place the weights: dynamic VRAM, partial loading, or none (CPU).

On either manager VRAM bounds activations and RAM bounds weights. ComfyUI partial loading
(0.3.64; 0.33 without dynamic VRAM) keeps a budget of the diffusion model on the GPU
(lowvram_model_memory) and casts the rest per layer from RAM. Dynamic VRAM (comfy-aimdo, 0.33 on
NVIDIA by default) maps the weights into a virtual address range and faults them in layer by layer:
VRAM keeps what activations leave free (lowest addresses first, i.e. the first blocks), the rest
streams from pinned RAM each step.
"""

from .. import core as cores
from ..units import BYTES_PER_GIB

MEMORY_MANAGERS = {
    "dynamic_vram": "dynamic VRAM (comfy-aimdo)",
    "partial_loading": "ComfyUI partial loading",
    "cpu": "CPU (no VRAM manager)",
}


def _is_nvidia(device):
    name = device.name.lower()
    return device.kind == "cuda" and not any(word in name for word in ("amd", "radeon", "instinct"))


def _torch_older_than(device, version):
    parsed = cores.parse_version(str(device.torch_version).split("+")[0]) if device.torch_version else None
    return parsed is not None and parsed[:2] < version


def memory_manager(core, device):
    """Which memory manager places the weights: (key of MEMORY_MANAGERS, why)."""
    if not device.is_gpu:
        return "cpu", "no GPU: every model runs from RAM"
    if not core.dynamic_vram:
        return "partial_loading", (f"ComfyUI {core.version_text} has no dynamic VRAM: ComfyUI partial loading keeps a "
                                   "budget of the diffusion model on the GPU and casts the rest from RAM per layer")
    if core.dynamic_vram_active is not None:
        if core.dynamic_vram_active:
            return "dynamic_vram", "the running ComfyUI has dynamic VRAM (comfy-aimdo) on"
        return "partial_loading", ("the running ComfyUI has dynamic VRAM off (a flag such as --disable-dynamic-vram, "
                                   "torch older than 2.8, no working comfy-aimdo, or not an NVIDIA GPU): "
                                   "ComfyUI partial loading places the weights")
    if not _is_nvidia(device):
        return "partial_loading", (f"ComfyUI {core.version_text} turns dynamic VRAM on by default only on NVIDIA: "
                                   "ComfyUI partial loading places the weights")
    if _torch_older_than(device, cores.DYNAMIC_VRAM_MIN_TORCH):
        return "partial_loading", (f"torch {device.torch_version} is older than 2.8, so ComfyUI {core.version_text} "
                                   "falls back from dynamic VRAM to partial loading")
    return "dynamic_vram", (f"ComfyUI {core.version_text} on an NVIDIA GPU runs dynamic VRAM (comfy-aimdo) by default "
                            "(torch 2.8 or newer)")


def pinned_ram_cap_bytes(ram_bytes):
    """ComfyUI 0.33's MAX_PINNED_MEMORY on Linux without swap (comfy/model_management.py)."""
    return int(max(ram_bytes * 0.40, min(ram_bytes * 0.90, ram_bytes - 4 * BYTES_PER_GIB, ram_bytes - 16 * BYTES_PER_GIB)))
