"""Overhead of the WanFit attention override when it falls back (CPU, or no sage): patched / unpatched.

Side by side, interleaved repeats (ABBA order) of a WAN-shaped block of attention calls: one
self-attention over the video tokens and one cross-attention over 512 text tokens per block, the call
shapes WanSelfAttention / WanT2VCrossAttention make (q, k, v as (B, N, heads*128), heads=...).
The fallback is ComfyUI's own attention_pytorch ($COMFYUI_PATH), so only the override's own cost differs.

    python bench/attention_overhead.py [--tokens 1560] [--heads 2] [--blocks 4] [--repeats 15]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wanfit.attention import make_attention_override  # noqa: E402
from tests.comfy_import import import_comfy  # noqa: E402

import_comfy()  # $COMFYUI_PATH or ~/ComfyUI: the fallback is ComfyUI's own attention_pytorch
from comfy.ldm.modules.attention import attention_pytorch  # noqa: E402


def run_blocks(call, tensors, heads, blocks):
    q, k, v, context_k, context_v = tensors
    options = {"transformer_options": {}}
    for _ in range(blocks):
        call(q, k, v, heads, options)
        call(q, context_k, context_v, heads, options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1560, help="video tokens (1560 = one 480p latent frame)")
    parser.add_argument("--heads", type=int, default=2, help="heads of 128 (WAN: 24 for 5B, 40 for A14B)")
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=4, help="transformer blocks per timed sample")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved pairs of samples")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    width = args.heads * 128
    tensors = tuple(torch.randn(1, n, width, device=args.device)
                    for n in (args.tokens, args.tokens, args.tokens, args.text_tokens, args.text_tokens))
    override = make_attention_override(None, "sdpa", selection_reason="benchmark: fallback path")

    def unpatched(q, k, v, heads, options):
        return attention_pytorch(q, k, v, heads=heads, **options)

    def patched(q, k, v, heads, options):  # what comfy's wrap_attn does when the override is set
        return override(attention_pytorch, q, k, v, heads=heads, _inside_attn_wrapper=True, **options)

    def sample(call):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_blocks(call, tensors, args.heads, args.blocks)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for call in (unpatched, patched):  # warm-up
        sample(call)
    times = {"unpatched": [], "patched": []}
    for repeat in range(args.repeats):
        order = (("unpatched", unpatched), ("patched", patched))
        for name, call in (order if repeat % 2 == 0 else order[::-1]):
            times[name].append(sample(call))

    unpatched_s = statistics.median(times["unpatched"])
    patched_s = statistics.median(times["patched"])
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"workload: {args.blocks} blocks x (self-attention {args.tokens} tokens + cross-attention "
          f"{args.text_tokens} text tokens), {args.heads} heads x 128, {args.repeats} interleaved repeats")
    print(f"unpatched median {unpatched_s * 1000:.2f} ms, patched (fallback) median {patched_s * 1000:.2f} ms")
    print(f"ratio patched/unpatched: {patched_s / unpatched_s:.4f}")
    print(f"override counted {override.stats.total_calls} calls "
          f"(self {override.stats.self_attention_calls}, cross {override.stats.cross_attention_calls})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
