"""Which attention backend a mode resolves to: a pure choice from the capabilities, then import and verify.

select_kernel is a pure function of (mode, capabilities); resolve_attention imports the chosen kernel and
verifies it on the GPU before trusting it, falling back to PyTorch SDPA with the reason at each step.
"""

from dataclasses import dataclass

from ..choices import ATTENTION_MODES
from .install import pip_command
from .kernels import KERNELS, SDPA, loaded_kernel, sage_major
from .probe import probe_capabilities
from .verification import verified

MODES = ATTENTION_MODES


@dataclass(frozen=True)
class Selection:
    """Which backend a mode resolves to on given capabilities, and why."""

    requested: str
    kernel_name: str  # a KERNELS key, or SDPA
    reason: str

    @property
    def uses_kernel(self):
        return self.kernel_name != SDPA


def _auto_kernel_name(caps):
    """The kernel auto picks for a GPU with sageattention >= 2, or None."""
    cc = tuple(caps.compute_capability)
    if cc in ((8, 9), (12, 0), (12, 1)):
        return "qk_int8_pv_fp8_cuda", f"{caps.arch}: INT8 QK + FP8 PV CUDA kernel is the fastest sage kernel here"
    if cc == (9, 0):
        return "qk_int8_pv_fp8_cuda_sm90", "sm90 (Hopper): the dedicated sm90 FP8 PV kernel"
    if cc in ((8, 0), (8, 6)):
        return "qk_int8_pv_fp16_cuda", f"{caps.arch}: INT8 QK + FP16 PV CUDA kernel (no FP8 tensor cores)"
    if (8, 0) <= cc < (9, 0):
        return "qk_int8_pv_fp16_triton", f"{caps.arch}: the portable Triton kernel (no CUDA kernel built for it)"
    return None, ""


def select_kernel(mode, caps):
    """Resolve a mode to a kernel or SDPA with a reason; a pure function of (mode, capabilities)."""
    if mode not in MODES:
        return Selection(mode, SDPA, f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "disabled":
        return Selection(mode, SDPA, "disabled: ComfyUI's own attention runs unchanged")
    if not caps.cuda_available:
        return Selection(mode, SDPA, f"no CUDA GPU ({caps.device_name}): sageattention kernels need an NVIDIA "
                                     "GPU with compute capability 8.0+, so PyTorch SDPA runs")
    if caps.compute_capability is None or tuple(caps.compute_capability) < (8, 0):
        return Selection(mode, SDPA, f"compute capability {caps.arch} is below sm80 (Ampere): "
                                     "no sageattention kernel supports it, so PyTorch SDPA runs")
    if mode == "sageattn3":
        spec = KERNELS[mode]
        if not caps.sage3_installed:
            return Selection(mode, SDPA, "sageattn3 is not installed (SageAttention3 is built from source, "
                                         "Blackwell only), so PyTorch SDPA runs")
        if not spec.supports_arch(caps.compute_capability):
            return Selection(mode, SDPA, f"sageattn3 needs a Blackwell GPU (sm100/sm120); this GPU is {caps.arch}")
        return Selection(mode, mode, f"sageattn3 requested; {caps.arch} supports it")
    if not caps.sage_version:
        return Selection(mode, SDPA, "sageattention is not installed, so PyTorch SDPA runs; install: "
                                     f"{pip_command()}")
    installed_major = sage_major(caps.sage_version)
    if mode == "auto":
        if installed_major < 2:
            if tuple(caps.compute_capability) < (10, 0):
                return Selection(mode, "sageattn", f"sageattention {caps.sage_version} ships only the Triton "
                                                   f"kernel; it runs on {caps.arch}")
            return Selection(mode, SDPA, f"sageattention {caps.sage_version} (Triton only) does not run on "
                                         f"{caps.arch}; build SageAttention 2.x from source")
        name, why = _auto_kernel_name(caps)
        if name is None:
            return Selection(mode, SDPA, f"sageattention {caps.sage_version} has no kernel for {caps.arch}"
                                         + ("; try mode sageattn3" if caps.sage3_installed else ""))
        return Selection(mode, name, why)
    spec = KERNELS[mode]
    if installed_major < spec.min_sage_major:
        return Selection(mode, SDPA, f"{mode} needs sageattention {spec.min_sage_major}.x; "
                                     f"{caps.sage_version} is installed (PyPI has only 1.x: build 2.x from source)")
    if mode == "sageattn" and installed_major < 2:
        if tuple(caps.compute_capability) >= (10, 0):
            return Selection(mode, SDPA, f"sageattention {caps.sage_version} (Triton only) does not run on "
                                         f"{caps.arch}")
        return Selection(mode, mode, f"sageattn requested; sageattention {caps.sage_version} Triton kernel "
                                     f"runs on {caps.arch}")
    if not spec.supports_arch(caps.compute_capability):
        archs = "/".join(f"sm{a}{b}" for a, b in spec.archs)
        return Selection(mode, SDPA, f"{mode} runs on {archs}; this GPU is {caps.arch}")
    return Selection(mode, mode, f"{mode} requested; {caps.arch} supports it")


def resolve_attention(mode="auto", caps=None, verify=True, verify_dtype=None, kernel_loader=None,
                      verify_device="cuda"):
    """Mode -> (kernel or None, kernel_spec or None, Selection): import and verify before trusting a kernel.

    kernel_loader(name) -> (kernel, spec) replaces kernels.loaded_kernel (a kernel that is not installed here);
    each kernel is verified once per process (verification.verified)."""
    if caps is None:
        caps = probe_capabilities()
    selection = select_kernel(mode, caps)
    if not selection.uses_kernel:
        return None, None, selection
    try:
        kernel, spec = (kernel_loader or loaded_kernel)(selection.kernel_name)
    except Exception as error:
        package = KERNELS[selection.kernel_name].module
        return None, None, Selection(mode, SDPA, f"{package} {caps.sage_version} is installed but "
                                                 f"{selection.kernel_name} failed to import "
                                                 f"({type(error).__name__}: {error}); PyTorch SDPA runs")
    if verify and caps.cuda_available:
        dtype_name = str(verify_dtype or "float16").replace("torch.", "")
        try:
            ok, _, why = verified(kernel, verify_device, dtype_name)
        except Exception as exc:
            ok, why = False, f"verification could not run ({type(exc).__name__}: {exc})"
        if not ok:
            return None, None, Selection(mode, SDPA, f"{selection.kernel_name} {why}; PyTorch SDPA runs")
        selection = Selection(mode, selection.kernel_name, f"{selection.reason}; {why}")
    return kernel, spec, selection
