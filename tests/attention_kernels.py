"""Stand-in attention kernels in sageattention's calling convention, for tests on machines without a GPU.

kernel(q, k, v, tensor_layout="HND"|"NHD", is_causal=False): the reference computes exact attention in
float64, the NaN kernel returns garbage; neither is a copy of ComfyUI (tests/host compares the override
with ComfyUI's own attention_pytorch)."""

import math

import torch


class ReferenceKernel:
    """softmax(QK^T / sqrt(d)) V in sageattention's convention; records each call's layout, dtype and shapes."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        assert tensor_layout in ("HND", "NHD")
        assert q.dtype == k.dtype == v.dtype
        self.calls.append((tensor_layout, q.dtype, tuple(q.shape), tuple(k.shape)))
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if is_causal:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        out = (scores.softmax(dim=-1) @ v.double()).to(q.dtype)
        return out.transpose(1, 2) if tensor_layout == "NHD" else out


class NanKernel:
    """A kernel that computes NaN, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        self.calls += 1
        return torch.full_like(q, float("nan"))


def make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float32, seed=0):
    """q, k, v in ComfyUI's two call layouts: (B, H, N, D) with skip_reshape, else (B, N, H*D)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(length):
        shape = (batch, heads, length, head_dim) if skip_reshape else (batch, length, heads * head_dim)
        return torch.randn(shape, generator=generator).to(dtype)

    return rand(q_len), rand(k_len), rand(k_len)
