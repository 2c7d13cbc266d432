"""What decides the attention backend on this machine: CUDA, the compute capability, the packages installed.

Package versions are read from their metadata, never by importing them (sageattention pulls in triton).
"""

from dataclasses import dataclass
import functools


@dataclass(frozen=True)
class AttentionCapabilities:
    """What decides the backend; built by `probe_capabilities`, or by hand in tests."""

    cuda_available: bool
    compute_capability: tuple = None  # (major, minor) or None
    device_name: str = "cpu"
    sage_version: str = ""  # "" when sageattention is not installed
    sage3_installed: bool = False
    triton_version: str = ""
    torch_version: str = ""
    torch_cuda_version: str = ""  # "" for a CPU build of torch
    bf16_supported: bool = False

    @property
    def arch(self):
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}" if self.compute_capability else "none"


@functools.lru_cache(maxsize=8)
def _probe_cached(device_key):
    import torch

    from ..device import attention_backends

    backends = attention_backends()
    common = dict(
        sage_version=backends.get("sageattention", ""),
        sage3_installed=bool(backends.get("sageattn3")),
        triton_version=backends.get("triton", ""),
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda or "",
    )
    if device_key.startswith("cuda") and torch.cuda.is_available():
        index = int(device_key.split(":")[1]) if ":" in device_key else torch.cuda.current_device()
        return AttentionCapabilities(
            cuda_available=True,
            compute_capability=tuple(torch.cuda.get_device_capability(index)),
            device_name=torch.cuda.get_device_name(index),
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
            **common,
        )
    return AttentionCapabilities(cuda_available=False, device_name=device_key.split(":")[0], **common)


def probe_capabilities(device=None, refresh=False):
    """Probe once per device (cached): package versions without importing them, CUDA, compute capability."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if refresh:
        _probe_cached.cache_clear()
    return _probe_cached(str(device))
