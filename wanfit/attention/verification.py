"""A loaded kernel run against fp32 SDPA at a WAN-like shape before it is trusted.

A build that imports but computes garbage (wrong arch flags, a triton mismatch) shows up here, before it
can turn a 20-minute run into a black video.
"""

import functools
import math

# Verification bounds (relative L1 error and cosine similarity against SDPA in fp32).
# SageAttention's own papers report relative L1 of a few 1e-2 and cosine > 0.999 for
# its 8-bit kernels; a broken build or an overflowing kernel is far outside these.
VERIFY_MAX_RELATIVE_L1 = 0.1
VERIFY_MIN_COSINE = 0.99


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
def verified(kernel, device, dtype_name):
    """verify_kernel once per (kernel, device, dtype) in a process: (ok, relative_l1_error, reason)."""
    import torch

    return verify_kernel(kernel, device, getattr(torch, dtype_name))
