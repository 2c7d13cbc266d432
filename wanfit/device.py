"""What the machine offers: GPU, VRAM, system RAM, versions, attention backends.

The planner consumes a `DeviceInfo`; tests build one by hand for any GPU tier.
Probing is lazy (torch is imported inside the function) so the CLI and the
package import stay fast.
"""

from dataclasses import asdict, dataclass, field
import importlib.metadata
import importlib.util
import os
import sys

from .units import format_gib


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda", "cpu", "mps", "xpu"
    name: str
    total_vram_bytes: int  # 0 for the CPU
    free_vram_bytes: int
    compute_capability: tuple = None  # (major, minor) on CUDA, else None
    total_ram_bytes: int = 0
    free_ram_bytes: int = 0
    torch_version: str = ""
    cuda_version: str = ""
    comfyui_version: str = ""
    attention_backends: dict = field(default_factory=dict)  # name -> version or "" if absent

    @property
    def is_gpu(self):
        return self.kind != "cpu"

    def as_dict(self):
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        return data

    def summary(self):
        lines = []
        if self.is_gpu:
            cc = ".".join(str(p) for p in self.compute_capability) if self.compute_capability else "n/a"
            lines.append(f"Device: {self.name} ({self.kind}, compute capability {cc})")
            lines.append(f"VRAM: {format_gib(self.free_vram_bytes)} free of {format_gib(self.total_vram_bytes)}")
        else:
            lines.append(f"Device: CPU only ({self.name}); no GPU is available to PyTorch, "
                         "so models run on the CPU (slow, but it works).")
        lines.append(f"System RAM: {format_gib(self.free_ram_bytes)} free of {format_gib(self.total_ram_bytes)}")
        lines.append(f"torch {self.torch_version or 'n/a'}, CUDA {self.cuda_version or 'none'}, "
                     f"ComfyUI {self.comfyui_version or 'unknown'}")
        backends = ", ".join(f"{name} {version}" if version else f"{name} (absent)"
                             for name, version in self.attention_backends.items())
        lines.append(f"Attention backends: {backends}")
        return "\n".join(lines)


def system_ram_bytes():
    """(total, available) system RAM; psutil when present, else /proc/meminfo."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except ImportError:
        values = {}
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
        return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))


def package_version(distribution):
    """Installed version of a distribution without importing it ('' when absent)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def attention_backends():
    """Which attention kernels are importable; sageattention is not imported (it pulls in triton)."""
    import torch

    backends = {"pytorch_sdpa": torch.__version__}
    sage_version = package_version("sageattention")
    if not sage_version and importlib.util.find_spec("sageattention") is not None:
        sage_version = "unknown version"
    backends["sageattention"] = sage_version
    backends["sageattn3"] = "installed" if importlib.util.find_spec("sageattn3") is not None else ""
    backends["triton"] = package_version("triton")
    return backends


def comfyui_version():
    module = sys.modules.get("comfyui_version")
    if module is None:
        try:
            import comfyui_version as module
        except ImportError:
            return ""
    return getattr(module, "__version__", "")


def probe_device(torch_device=None, count_own_allocations_as_free=False):
    """Read the device PyTorch (or ComfyUI, when given its torch_device) will use.

    Inside ComfyUI, VRAM this process already holds (loaded models, the allocator's cache)
    can be freed by ComfyUI itself, so the planner must not mistake it for another process's:
    count_own_allocations_as_free adds it back to the free figure.
    """
    import torch

    total_ram, free_ram = system_ram_bytes()
    common = dict(
        total_ram_bytes=total_ram,
        free_ram_bytes=free_ram,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda or "",
        comfyui_version=comfyui_version(),
        attention_backends=attention_backends(),
    )
    if torch_device is None:
        torch_device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch_device = torch.device(torch_device)
    if torch_device.type == "cuda":
        index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
        free_vram, total_vram = torch.cuda.mem_get_info(index)
        if count_own_allocations_as_free:
            free_vram = min(total_vram, free_vram + torch.cuda.memory_reserved(index))
        return DeviceInfo(
            kind="cuda",
            name=torch.cuda.get_device_name(index),
            total_vram_bytes=int(total_vram),
            free_vram_bytes=int(free_vram),
            compute_capability=tuple(torch.cuda.get_device_capability(index)),
            **common,
        )
    cpu_name = os.uname().machine if hasattr(os, "uname") else "cpu"
    return DeviceInfo(kind="cpu", name=f"{cpu_name}, {os.cpu_count()} cores", total_vram_bytes=0,
                      free_vram_bytes=0, **common)


def probe_comfyui_device():
    """The device ComfyUI's model management chose (honours --cpu)."""
    import comfy.model_management as model_management

    return probe_device(model_management.get_torch_device(), count_own_allocations_as_free=True)
