"""The callable ComfyUI calls for every attention of a patched model: the kernel, or ComfyUI's own attention.

ComfyUI (comfy/ldm/modules/attention.py, `wrap_attn`) calls
`transformer_options["optimized_attention_override"](func, q, k, v, heads, ...)` for every attention of a
model when that key is set, where `func` is the attention ComfyUI would have run. The override converts
each call shape into the kernel's convention and back; anything the kernel cannot take (masks, head dims,
a kernel error, NaN output) goes to `func`, so the worst case is ComfyUI's own behaviour.
"""

from collections import Counter
from dataclasses import dataclass, field
import logging
import sys

from .kernels import SDPA

log = logging.getLogger("wanfit")


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


def core_sdpa(func):
    """ComfyUI's own attention_pytorch, from the module of `func` (its attention_sage when ComfyUI was started
    with --use-sage-attention): the honest fallback and the NaN guard's recompute must be real SDPA."""
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    return getattr(module, "attention_pytorch", None) or func


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
            # ComfyUI started with --use-sage-attention: its "own" attention is sage too
            func = core_sdpa(func)
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
