"""Sage-attention patcher: the fastest attention kernel the card supports, verified, with an honest fallback.

One module per job:
  kernels       the sageattention entry points WanFit knows (KERNELS) and loading one in one convention
  probe         what decides the backend here: CUDA, compute capability, installed packages
  selection     a mode -> a kernel or SDPA with the reason (pure), then import and verify (resolve_attention)
  verification  a loaded kernel against fp32 SDPA at a WAN shape, once per process
  install       how to get sageattention for this interpreter (doctor, reasons)
  override      the callable ComfyUI calls per attention: the kernel, or ComfyUI's own attention
  patching      the override set on a clone of the model (per model, reversible)

WanFit sets transformer_options["optimized_attention_override"] on a *clone* of the model, so patching
is per model (each A14B expert separately) and reversible; the worst case is ComfyUI's own behaviour.
Nothing heavy is imported here: sageattention (and triton behind it) only when a kernel is resolved.
"""

from .install import install_hint, pip_command
from .kernels import KERNELS, SDPA, KernelSpec, load_kernel
from .override import AttentionOverride, AttentionStats, build_report, make_attention_override
from .patching import OVERRIDE_KEY, find_override, patch_model_attention
from .probe import AttentionCapabilities, probe_capabilities
from .selection import MODES, Selection, resolve_attention, select_kernel
from .verification import verify_kernel

__all__ = ["AttentionCapabilities", "AttentionOverride", "AttentionStats", "KERNELS", "KernelSpec", "MODES",
           "OVERRIDE_KEY", "SDPA", "Selection", "build_report", "find_override", "install_hint", "load_kernel",
           "make_attention_override", "patch_model_attention", "pip_command", "probe_capabilities",
           "resolve_attention", "select_kernel", "verify_kernel"]
