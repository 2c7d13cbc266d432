"""The sageattention kernels WanFit knows: what each accepts, and how to import it in one calling convention.

Every kernel is called as kernel(q, k, v, tensor_layout="HND"|"NHD", is_causal=False); the adapters here
give the ones that differ (HND-only sageattn3, fixed keyword arguments, an in-place smooth_k) that form.
sageattention (and triton behind it) is imported only when a kernel is loaded.
"""

from dataclasses import dataclass
import functools
import importlib

from ..device import package_version

SDPA = "sdpa"  # the selection's name for "no kernel: PyTorch SDPA (ComfyUI's own attention) runs"


@dataclass(frozen=True)
class KernelSpec:
    """One sageattention entry point and what it accepts."""

    name: str  # the mode name
    module: str  # python module to import
    function: str  # function in that module
    min_sage_major: int  # sageattention major version that ships it (sageattn3 is separate)
    archs: tuple  # compute capabilities (major, minor) it runs on; () = any sm80+
    max_head_dim: int = 128
    head_dims: tuple = ()  # exact head dims accepted; () = any up to max_head_dim
    layouts: tuple = ("HND", "NHD")
    fixed_kwargs: tuple = ()  # (name, value) pairs passed on every call
    mutates_k: bool = False  # smooth_k done in place: pass a copy so the fallback sees the real k
    description: str = ""

    def supports_arch(self, compute_capability):
        if compute_capability is None:
            return False
        if self.archs:
            return tuple(compute_capability) in self.archs
        return tuple(compute_capability) >= (8, 0)

    def supports_head_dim(self, head_dim):
        if self.head_dims:
            return head_dim in self.head_dims
        return 0 < head_dim <= self.max_head_dim


AMPERE_TO_HOPPER = ((8, 0), (8, 6), (8, 7), (8, 9), (9, 0))

KERNELS = {
    "sageattn": KernelSpec(
        "sageattn", "sageattention", "sageattn", 1, ((8, 0), (8, 6), (8, 9), (9, 0), (12, 0)),
        description="sageattention's own per-GPU dispatcher (2.x; 1.x is one Triton kernel)"),
    "qk_int8_pv_fp16_triton": KernelSpec(
        "qk_int8_pv_fp16_triton", "sageattention", "sageattn_qk_int8_pv_fp16_triton", 2, AMPERE_TO_HOPPER,
        description="INT8 QK, FP16 PV, Triton"),
    "qk_int8_pv_fp16_cuda": KernelSpec(
        "qk_int8_pv_fp16_cuda", "sageattention", "sageattn_qk_int8_pv_fp16_cuda", 2,
        AMPERE_TO_HOPPER + ((12, 0), (12, 1)), fixed_kwargs=(("pv_accum_dtype", "fp32"),),
        description="INT8 QK, FP16 PV with FP32 accumulation, CUDA"),
    "qk_int8_pv_fp8_cuda": KernelSpec(
        "qk_int8_pv_fp8_cuda", "sageattention", "sageattn_qk_int8_pv_fp8_cuda", 2,
        ((8, 9), (12, 0), (12, 1)), fixed_kwargs=(("pv_accum_dtype", "fp32+fp16"),),
        description="INT8 QK, FP8 PV, CUDA (Ada / consumer Blackwell)"),
    "qk_int8_pv_fp8_cuda_sm90": KernelSpec(
        "qk_int8_pv_fp8_cuda_sm90", "sageattention", "sageattn_qk_int8_pv_fp8_cuda_sm90", 2,
        ((9, 0),), fixed_kwargs=(("pv_accum_dtype", "fp32+fp32"),),
        description="INT8 QK, FP8 PV, CUDA (Hopper)"),
    "sageattn3": KernelSpec(
        "sageattn3", "sageattn3", "sageattn3_blackwell", 0, ((10, 0), (12, 0), (12, 1)),
        head_dims=(64, 128), layouts=("HND",), mutates_k=True,
        description="SageAttention3 FP4 (Blackwell)"),
}


def sage_major(version):
    """The major version of a sageattention version string (0 when unreadable): 1.x is Triton only."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _adapt_hnd_only(function, mutates_k):
    """Give an HND-only kernel (sageattn3) the common `tensor_layout` convention."""

    def kernel(q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mutates_k:
            k = k.clone()
        out = function(q.contiguous(), k.contiguous(), v.contiguous(), is_causal=is_causal, **kwargs)
        return out.transpose(1, 2) if tensor_layout == "NHD" else out

    return kernel


def load_kernel(kernel_name):
    """Import the kernel and return (callable in the common convention, spec); raises ImportError/AttributeError."""
    spec = KERNELS[kernel_name]
    if kernel_name == "sageattn" and sage_major(package_version("sageattention") or "2") < 2:
        spec = _sage1_spec()
    module = importlib.import_module(spec.module)
    function = getattr(module, spec.function)
    if spec.layouts == ("HND",):
        return _adapt_hnd_only(function, spec.mutates_k), spec
    if spec.fixed_kwargs or spec.mutates_k:
        fixed = dict(spec.fixed_kwargs)

        def kernel(q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
            if spec.mutates_k:
                k = k.clone()
            return function(q, k, v, tensor_layout=tensor_layout, is_causal=is_causal, **fixed, **kwargs)

        return kernel, spec
    return function, spec


def _sage1_spec():
    """sageattention 1.x smooths k in place and takes head dims 64/96/128 only."""
    base = KERNELS["sageattn"]
    return KernelSpec(base.name, base.module, base.function, 1, AMPERE_TO_HOPPER, head_dims=(64, 96, 128),
                      mutates_k=True,
                      description="sageattention 1.x Triton kernel")


@functools.lru_cache(maxsize=None)
def loaded_kernel(kernel_name):
    """load_kernel once per process: one callable per kernel, so its verification is cached with it."""
    return load_kernel(kernel_name)
