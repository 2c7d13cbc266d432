"""Sage-attention patcher: the fastest attention kernel the card supports, verified, with an honest fallback.

ComfyUI (comfy/ldm/modules/attention.py, `wrap_attn`) calls
`transformer_options["optimized_attention_override"](func, q, k, v, heads, ...)`
for every attention of a model when that key is set, where `func` is the
attention ComfyUI would have run. WanFit sets that key on a *clone* of the
model, so patching is per model (each A14B expert separately) and reversible.

The override converts each ComfyUI call shape into the sageattention calling
convention `kernel(q, k, v, tensor_layout="HND"|"NHD", is_causal=False)` and
back; anything the kernel cannot take (masks, head dims, a kernel error, NaN
output) goes to `func`, so the worst case is ComfyUI's own behaviour.
Nothing heavy is imported at module level: sageattention (and triton behind it)
is imported only when a kernel is resolved.
"""

from collections import Counter
from dataclasses import dataclass, field
import functools
import importlib
import logging
import math
import sys

from .choices import ATTENTION_MODES
from .device import package_version

log = logging.getLogger("wanfit")

OVERRIDE_KEY = "optimized_attention_override"
SDPA = "sdpa"

MODES = ATTENTION_MODES

# Verification bounds (relative L1 error and cosine similarity against SDPA in fp32).
# SageAttention's own papers report relative L1 of a few 1e-2 and cosine > 0.999 for
# its 8-bit kernels; a broken build or an overflowing kernel is far outside these.
VERIFY_MAX_RELATIVE_L1 = 0.1
VERIFY_MIN_COSINE = 0.99


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


_AMPERE_TO_HOPPER = ((8, 0), (8, 6), (8, 7), (8, 9), (9, 0))

KERNELS = {
    "sageattn": KernelSpec(
        "sageattn", "sageattention", "sageattn", 1, ((8, 0), (8, 6), (8, 9), (9, 0), (12, 0)),
        description="sageattention's own per-GPU dispatcher (2.x; 1.x is one Triton kernel)"),
    "qk_int8_pv_fp16_triton": KernelSpec(
        "qk_int8_pv_fp16_triton", "sageattention", "sageattn_qk_int8_pv_fp16_triton", 2, _AMPERE_TO_HOPPER,
        description="INT8 QK, FP16 PV, Triton"),
    "qk_int8_pv_fp16_cuda": KernelSpec(
        "qk_int8_pv_fp16_cuda", "sageattention", "sageattn_qk_int8_pv_fp16_cuda", 2,
        _AMPERE_TO_HOPPER + ((12, 0), (12, 1)), fixed_kwargs=(("pv_accum_dtype", "fp32"),),
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


def _version_major(version):
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


# ---------------------------------------------------------------- capability probe

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

    from .device import attention_backends

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


# ---------------------------------------------------------------- selection

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
    sage_major = _version_major(caps.sage_version)
    if mode == "auto":
        if sage_major < 2:
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
    if sage_major < spec.min_sage_major:
        return Selection(mode, SDPA, f"{mode} needs sageattention {spec.min_sage_major}.x; "
                                     f"{caps.sage_version} is installed (PyPI has only 1.x: build 2.x from source)")
    if mode == "sageattn" and sage_major < 2:
        if tuple(caps.compute_capability) >= (10, 0):
            return Selection(mode, SDPA, f"sageattention {caps.sage_version} (Triton only) does not run on "
                                         f"{caps.arch}")
        return Selection(mode, mode, f"sageattn requested; sageattention {caps.sage_version} Triton kernel "
                                     f"runs on {caps.arch}")
    if not spec.supports_arch(caps.compute_capability):
        archs = "/".join(f"sm{a}{b}" for a, b in spec.archs)
        return Selection(mode, SDPA, f"{mode} runs on {archs}; this GPU is {caps.arch}")
    return Selection(mode, mode, f"{mode} requested; {caps.arch} supports it")


# ---------------------------------------------------------------- kernels

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
    if kernel_name == "sageattn" and _version_major(package_version("sageattention") or "2") < 2:
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
    return KernelSpec(base.name, base.module, base.function, 1, _AMPERE_TO_HOPPER, head_dims=(64, 96, 128),
                      mutates_k=True,
                      description="sageattention 1.x Triton kernel")


# ---------------------------------------------------------------- the override

@dataclass
class AttentionStats:
    """Per-override call counts, so a report can prove which path ran."""

    kernel_calls: int = 0
    fallback_calls: int = 0
    self_attention_calls: int = 0
    cross_attention_calls: int = 0
    nan_checks: int = 0
    fallback_reasons: Counter = field(default_factory=Counter)

    @property
    def total_calls(self):
        return self.kernel_calls + self.fallback_calls

    def as_dict(self):
        return dict(kernel_calls=self.kernel_calls, fallback_calls=self.fallback_calls,
                    self_attention_calls=self.self_attention_calls,
                    cross_attention_calls=self.cross_attention_calls, nan_checks=self.nan_checks,
                    fallback_reasons=dict(self.fallback_reasons))

    def reset(self):
        self.__init__()


def sdpa_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs):
    """PyTorch SDPA with ComfyUI's attention_pytorch call semantics (used when ComfyUI's own attention is sage)."""
    import torch.nn.functional as F

    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, dim_head = q.shape
        dim_head //= heads
        q, k, v = (t.reshape(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if not skip_output_reshape:
        out = out.transpose(1, 2).reshape(b, -1, heads * dim_head)
    return out


def default_cross_attention_detector(q_len, k_len, transformer_options):
    """WAN's text and image cross-attention have k length != q length; self-attention never does.

    An explicit hint wins: transformer_options["wanfit_attention_kind"] = "cross" / "self".
    """
    if transformer_options:
        hint = transformer_options.get("wanfit_attention_kind")
        if hint in ("cross", "self"):
            return hint == "cross"
    return k_len != q_len


class AttentionOverride:
    """Callable with ComfyUI's override signature: routes one attention call to the kernel or to `func`."""

    def __init__(self, kernel, kernel_name, keep_cross_attention_on_sdpa=False, nan_check_calls=8,
                 max_kernel_errors=3, kernel_spec=None, compute_dtype=None, requested="",
                 selection_reason="", cross_attention_detector=default_cross_attention_detector):
        self.kernel = kernel
        self.kernel_name = kernel_name if kernel is not None else SDPA
        self.kernel_spec = kernel_spec
        self.keep_cross_attention_on_sdpa = keep_cross_attention_on_sdpa
        self.nan_check_calls = nan_check_calls
        self.max_kernel_errors = max_kernel_errors
        self.compute_dtype = compute_dtype
        self.requested = requested or kernel_name
        self.selection_reason = selection_reason
        self.cross_attention_detector = cross_attention_detector
        self.stats = AttentionStats()
        self.disabled_reason = ""  # set when the guard or repeated errors switch to the fallback for good
        self.fallback_name = ""  # name of the function ComfyUI handed us, for the report
        self._kernel_errors = 0
        self._logged = set()

    # ModelPatcher.clone() deep-copies model_options (ComfyUI 0.3.64); sharing one override keeps the
    # counts and the guard's decision in one place for the patched model and all its later clones.
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    @property
    def active_kernel(self):
        return self.kernel is not None and not self.disabled_reason

    def _log_once(self, key, level, message):
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, message)

    def _fallback(self, func, reason, q, k, v, heads, mask, attn_precision, skip_reshape, skip_output_reshape,
                  kwargs):
        if getattr(func, "__name__", "") == "attention_sage":
            # ComfyUI started with --use-sage-attention: its "own" attention is sage too, so the honest
            # fallback (and the NaN guard's recompute) must be real SDPA.
            func = sdpa_attention
        self.stats.fallback_calls += 1
        self.stats.fallback_reasons[reason] += 1
        return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                    skip_output_reshape=skip_output_reshape, **kwargs)

    def __call__(self, func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        if not self.fallback_name:
            self.fallback_name = getattr(func, "__name__", "attention")
        q_len = q.shape[2] if skip_reshape else q.shape[1]
        k_len = k.shape[2] if skip_reshape else k.shape[1]
        is_cross = self.cross_attention_detector(q_len, k_len, kwargs.get("transformer_options"))
        if is_cross:
            self.stats.cross_attention_calls += 1
        else:
            self.stats.self_attention_calls += 1
        args = (q, k, v, heads, mask, attn_precision, skip_reshape, skip_output_reshape, kwargs)

        if self.kernel is None:
            return self._fallback(func, "no sage kernel selected", *args)
        if self.disabled_reason:
            return self._fallback(func, "kernel switched off", *args)
        if mask is not None:
            return self._fallback(func, "mask (sage kernels take no mask)", *args)
        if is_cross and self.keep_cross_attention_on_sdpa:
            return self._fallback(func, "cross-attention kept on SDPA", *args)
        head_dim = q.shape[-1] if skip_reshape else q.shape[-1] // heads
        if self.kernel_spec is not None and not self.kernel_spec.supports_head_dim(head_dim):
            return self._fallback(func, f"head_dim {head_dim} unsupported by {self.kernel_name}", *args)

        try:
            out = self._run_kernel(q, k, v, heads, head_dim, skip_reshape, skip_output_reshape)
        except Exception as error:  # a kernel failure must never end the run
            self._kernel_errors += 1
            self._log_once(("error", type(error).__name__), logging.WARNING,
                           f"WanFit attention: {self.kernel_name} failed ({type(error).__name__}: {error}); "
                           f"this call runs on {self.fallback_name}")
            if self._kernel_errors >= self.max_kernel_errors:
                self._switch_off(f"{self.kernel_name} raised {self._kernel_errors} times "
                                 f"(last: {type(error).__name__}: {error})")
            return self._fallback(func, f"kernel error: {type(error).__name__}", *args)

        if self.stats.nan_checks < self.nan_check_calls:
            self.stats.nan_checks += 1
            import torch

            if not bool(torch.isfinite(out).all()):
                reference = self._fallback(func, "NaN/Inf in kernel output (recomputed)", *args)
                # NaN already in q/k/v is the model's, not the kernel's: some SDPA builds (torch 2.14's
                # CPU flash kernel) turn a NaN query row into zeros, so a finite reference proves nothing
                inputs_finite = all(bool(torch.isfinite(t).all()) for t in (q, k, v))
                if inputs_finite and bool(torch.isfinite(reference).all()):
                    kind = "cross" if is_cross else "self"
                    self._switch_off(f"{self.kernel_name} returned NaN/Inf on check {self.stats.nan_checks} "
                                     f"({kind}-attention, q {tuple(q.shape)}); SDPA gave finite values")
                return reference
        self.stats.kernel_calls += 1
        return out

    def _switch_off(self, reason):
        self.disabled_reason = reason
        log.warning(f"WanFit attention: {reason}; switched this model to {self.fallback_name or 'SDPA'} "
                    "for the rest of the run")

    def _run_kernel(self, q, k, v, heads, head_dim, skip_reshape, skip_output_reshape):
        """Convert ComfyUI's layout to the kernel's, run it, convert back (mirrors attention_sage)."""
        import torch

        batch = q.shape[0]
        if skip_reshape:  # (B, H, N, D)
            layout = "HND"
        else:  # (B, N, H*D) -> (B, N, H, D)
            layout = "NHD"
            q, k, v = (t.reshape(batch, -1, heads, head_dim) for t in (q, k, v))
        out_dtype = q.dtype
        half_types = (torch.float16, torch.bfloat16)
        if out_dtype not in half_types or k.dtype != out_dtype or v.dtype != out_dtype:
            # sage kernels take fp16/bf16 only; bf16 keeps fp32's range (no overflow to inf)
            kernel_dtype = self.compute_dtype or (out_dtype if out_dtype in half_types else torch.bfloat16)
            q, k, v = (t.to(kernel_dtype) for t in (q, k, v))
        out = self.kernel(q, k, v, tensor_layout=layout, is_causal=False)
        if isinstance(out, tuple):  # return_lse variants
            out = out[0]
        if out.dtype != out_dtype:
            out = out.to(out_dtype)
        if layout == "HND":
            if not skip_output_reshape:
                out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        else:
            if skip_output_reshape:
                out = out.transpose(1, 2)
            else:
                out = out.reshape(batch, -1, heads * head_dim)
        return out

    def backend_description(self):
        fallback = f"ComfyUI {self.fallback_name}" if self.fallback_name else "ComfyUI's own attention"
        if self.kernel is None:
            return f"SDPA fallback ({fallback})"
        if self.disabled_reason:
            return f"SDPA fallback ({fallback}) after {self.kernel_name} was switched off"
        return f"sageattention {self.kernel_name}"

    def report(self):
        return build_report(self.requested, self.backend_description(),
                            self.disabled_reason or self.selection_reason, self.stats)


def make_attention_override(kernel, kernel_name, keep_cross_attention_on_sdpa=False, nan_check_calls=8, **options):
    """Build the callable ComfyUI calls as transformer_options["optimized_attention_override"].

    `kernel` follows sageattention's convention: kernel(q, k, v, tensor_layout="HND"|"NHD", is_causal=False).
    kernel=None makes a pass-through that only counts (the SDPA fallback, still provably in the path).
    """
    return AttentionOverride(kernel, kernel_name, keep_cross_attention_on_sdpa=keep_cross_attention_on_sdpa,
                             nan_check_calls=nan_check_calls, **options)


# ---------------------------------------------------------------- verification

def verify_kernel(kernel, device, dtype=None, heads=8, tokens=1560, head_dim=128, batch=1,
                  max_relative_l1=VERIFY_MAX_RELATIVE_L1, min_cosine=VERIFY_MIN_COSINE, seed=0):
    """Run `kernel` at a WAN-like shape (head dim 128) against fp32 SDPA: (ok, relative_l1_error, reason).

    A build that imports but computes garbage (wrong arch flags, a triton mismatch) shows up here,
    before it can turn a 20-minute run into a black video.
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, heads, tokens, head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    try:
        out = kernel(q, k.clone(), v, tensor_layout="HND", is_causal=False)
        if isinstance(out, tuple):
            out = out[0]
        out = out.float()
    except Exception as error:
        return False, math.inf, f"kernel raised {type(error).__name__}: {error}"
    if tuple(out.shape) != shape:
        return False, math.inf, f"kernel output shape {tuple(out.shape)}, expected {shape}"
    if not bool(torch.isfinite(out).all()):
        return False, math.inf, "kernel output has NaN/Inf"
    relative_l1 = float((out - reference).abs().sum() / reference.abs().sum().clamp_min(1e-12))
    cosine = float(F.cosine_similarity(out.flatten(), reference.flatten(), dim=0))
    detail = f"relative L1 error {relative_l1:.4f} (bound {max_relative_l1}), cosine {cosine:.5f} " \
             f"(bound {min_cosine}) at {heads} heads x {tokens} tokens x {head_dim}, {str(dtype).replace('torch.', '')}"
    if relative_l1 > max_relative_l1 or cosine < min_cosine:
        return False, relative_l1, "verification failed: " + detail
    return True, relative_l1, "verified: " + detail


@functools.lru_cache(maxsize=16)
def _verify_cached(kernel_name, device, dtype_name):
    import torch

    kernel, _ = load_kernel(kernel_name)
    return verify_kernel(kernel, device, getattr(torch, dtype_name))


# ---------------------------------------------------------------- report, install hint

def build_report(requested, backend, reason, stats=None):
    """Short multi-line STRING for the node output and logs."""
    lines = [
        f"attention mode requested: {requested}",
        f"backend: {backend}",
        f"reason: {reason}",
    ]
    if stats is not None:
        lines.append(f"calls: kernel {stats.kernel_calls}, fallback {stats.fallback_calls} "
                     f"(self-attention {stats.self_attention_calls}, cross-attention {stats.cross_attention_calls})")
        for why, count in stats.fallback_reasons.most_common(4):
            lines.append(f"  fallback {count}x: {why}")
    return "\n".join(lines)


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


# ---------------------------------------------------------------- resolving and patching

def _plan_value(plan, key):
    if plan is None:
        return None
    if isinstance(plan, dict):
        return plan.get(key)
    return getattr(plan, key, None)


def resolve_attention(mode="auto", caps=None, verify=True, verify_dtype=None, kernel_loader=None,
                      verify_device="cuda"):
    """Mode -> (kernel or None, kernel_spec or None, Selection): import and verify before trusting a kernel."""
    if caps is None:
        caps = probe_capabilities()
    selection = select_kernel(mode, caps)
    if not selection.uses_kernel:
        return None, None, selection
    loader = kernel_loader or load_kernel
    try:
        kernel, spec = loader(selection.kernel_name)
    except Exception as error:
        package = KERNELS[selection.kernel_name].module
        return None, None, Selection(mode, SDPA, f"{package} {caps.sage_version} is installed but "
                                                 f"{selection.kernel_name} failed to import "
                                                 f"({type(error).__name__}: {error}); PyTorch SDPA runs")
    if verify and caps.cuda_available:
        dtype_name = str(verify_dtype or "float16").replace("torch.", "")
        try:
            if kernel_loader is None:
                ok, error, why = _verify_cached(selection.kernel_name, verify_device, dtype_name)
            else:
                import torch

                ok, error, why = verify_kernel(kernel, verify_device, getattr(torch, dtype_name))
        except Exception as exc:
            ok, why = False, f"verification could not run ({type(exc).__name__}: {exc})"
        if not ok:
            return None, None, Selection(mode, SDPA, f"{selection.kernel_name} {why}; PyTorch SDPA runs")
        selection = Selection(mode, selection.kernel_name, f"{selection.reason}; {why}")
    return kernel, spec, selection


def find_override(model_patcher):
    """The WanFit override set on a patched model, or None (host tests read its stats)."""
    options = getattr(model_patcher, "model_options", {}) or {}
    override = options.get("transformer_options", {}).get(OVERRIDE_KEY)
    return override if isinstance(override, AttentionOverride) else None


def patch_model_attention(model_patcher, mode="auto", plan=None, keep_cross_attention_on_sdpa=None,
                          nan_check_calls=8, verify=True, caps=None, kernel_loader=None):
    """Return (patched clone, report STRING); the input model and its model_options stay untouched.

    Follows ComfyUI's own convention for changing transformer_options on a clone
    (comfy.model_patcher.set_model_options_patch_replace): copy the dict, set the key, assign it back,
    so a shallow-copying clone() never shares the nested dict with the original.
    """
    plan_mode = _plan_value(plan, "attention_backend")
    requested = mode
    if mode == "auto" and plan_mode in MODES and plan_mode != "auto":
        mode = plan_mode
    if keep_cross_attention_on_sdpa is None:
        keep_cross_attention_on_sdpa = bool(_plan_value(plan, "keep_cross_attention_on_sdpa") or False)

    clone = model_patcher.clone()
    model_options = dict(clone.model_options)
    transformer_options = dict(model_options.get("transformer_options", {}))

    if mode == "disabled":
        previous = transformer_options.get(OVERRIDE_KEY)
        if isinstance(previous, AttentionOverride):
            del transformer_options[OVERRIDE_KEY]
        model_options["transformer_options"] = transformer_options
        clone.model_options = model_options
        reason = "disabled: ComfyUI's own attention runs unchanged"
        if isinstance(previous, AttentionOverride):
            reason += " (an earlier WanFit attention patch was removed)"
        log.info(f"WanFit attention: {reason}")
        return clone, build_report(requested, "ComfyUI attention (unpatched)", reason)

    if caps is None:
        caps = probe_capabilities(_model_device(model_patcher))
    kernel, spec, selection = resolve_attention(mode, caps, verify=verify, verify_dtype=_model_dtype(model_patcher),
                                                kernel_loader=kernel_loader)
    reason = selection.reason
    if requested != mode:
        reason = f"plan chose {mode}; {reason}"
    override = make_attention_override(kernel, selection.kernel_name,
                                       keep_cross_attention_on_sdpa=keep_cross_attention_on_sdpa,
                                       nan_check_calls=nan_check_calls, kernel_spec=spec, requested=requested,
                                       selection_reason=reason)
    transformer_options[OVERRIDE_KEY] = override
    model_options["transformer_options"] = transformer_options
    clone.model_options = model_options
    if selection.uses_kernel:
        log.info(f"WanFit attention: {selection.kernel_name} ({reason})")
    else:
        log.info(f"WanFit attention: SDPA fallback ({reason})")
    return clone, override.report()


def _model_device(model_patcher):
    device = getattr(model_patcher, "load_device", None)
    return str(device) if device is not None else None


def _model_dtype(model_patcher):
    """fp16/bf16 name the kernel will see (fp32 models are cast to bf16 for the kernel)."""
    getter = getattr(model_patcher, "model_dtype", None)
    try:
        dtype = getter() if callable(getter) else None
    except Exception:
        dtype = None
    name = str(dtype).replace("torch.", "") if dtype is not None else ""
    return name if name in ("float16", "bfloat16") else "bfloat16" if name else None
