"""How to get sageattention for this interpreter, torch and CUDA (the doctor command and the reasons print it)."""

import sys

from .probe import probe_capabilities


def pip_command():
    """The one command that installs PyPI's sageattention (1.x, Triton) into *this* interpreter."""
    return f"{sys.executable} -m pip install sageattention"


def install_hint(caps=None):
    """How to get sageattention for this interpreter, torch and CUDA (multi-line)."""
    if caps is None:
        caps = probe_capabilities()
    torch_version = caps.torch_version or "?"
    cuda = caps.torch_cuda_version
    lines = [
        "SageAttention 1.x (PyPI, Triton kernels, sm80+ GPUs, needs triton):",
        f"  {pip_command()}",
        "  (on Windows install triton-windows first: "
        f"{sys.executable} -m pip install triton-windows)",
        "SageAttention 2.x (CUDA kernels: FP8 PV on sm89/sm90/sm120, fastest) is built from source:",
        "  git clone https://github.com/thu-ml/SageAttention",
        f"  cd SageAttention && {sys.executable} -m pip install . --no-build-isolation",
    ]
    if cuda:
        arch = (f"{caps.compute_capability[0]}.{caps.compute_capability[1]}" if caps.compute_capability
                else "<your GPU's compute capability, e.g. 8.9>")
        lines.append(f"  build needs nvcc {cuda} (the CUDA torch {torch_version} was built with) and a C++ "
                     f"compiler; TORCH_CUDA_ARCH_LIST=\"{arch}\" MAX_JOBS=4 shortens the build")
    else:
        lines.append(f"  torch {torch_version} here is a CPU build: install a CUDA build of torch first; "
                     "sageattention never runs on the CPU")
    lines += [
        "SageAttention3 (FP4, Blackwell only; python>=3.13, torch>=2.8, CUDA>=12.8):",
        f"  cd SageAttention/sageattention3_blackwell && {sys.executable} -m pip install . --no-build-isolation",
        "Restart ComfyUI after installing.",
    ]
    return "\n".join(lines)
