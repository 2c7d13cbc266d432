"""The lean forward against the core's own blocks on each native quantized format, fp32 / bf16 / fp16.

    COMFYUI_PATH=~/ComfyUI-0.33.0 python bench/lean_forward_formats.py [--formats nvfp4,mxfp8] [--chunk 97]

A tiny WAN model (dim 128, 2 blocks, 720 tokens; tests/quantized_wan.py) with its block linears quantized by
the core's own QuantizedTensor.from_float, on the quantized-matmul path (mixed_precision_ops with no format
disabled: what a card that computes the format natively runs). Per format and dtype it prints the max
|lean - core| / max |core| of the model's output, the lean block alone (no self-check, CHUNK-token chunks),
the self-check's verdict, and the seconds of one lean forward against the core's (CPU, tiny: a rough
share of the extra pass that layers with a per-call activation scale need).
"""

import argparse
import logging
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import torch  # noqa: E402

# before the core goes on sys.path: ComfyUI has a `tests` package of its own
from tests import quantized_wan  # noqa: E402
from activation_peak import import_core  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def timed(function, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--core-path", default=os.environ.get("COMFYUI_PATH", "~/ComfyUI-0.33.0"))
    parser.add_argument("--formats", default="float8_e4m3fn,int8_tensorwise,nvfp4,mxfp8")
    parser.add_argument("--chunk", type=int, default=97)
    arguments = parser.parse_args()
    import_core(arguments.core_path)
    # comfy_kitchen warns on every mxfp8 matmul that the CPU falls back to dequantizing: once is enough
    logging.getLogger("comfy_kitchen").setLevel(logging.ERROR)
    from wanfit import lean_forward, replay_check

    known = quantized_wan.core_formats()
    print(f"ComfyUI {lean_forward.replay_for_running_core().core}; formats it knows: {', '.join(known) or 'none'}")
    print(f"{'format':<22}{'dtype':<10}{'lean vs core':>14}{'self-check':>14}  {'lean s':>8}{'core s':>8}  verdict")
    for fmt in arguments.formats.split(","):
        variants = [(fmt, False)] + ([(fmt, True)] if fmt == "nvfp4" else [])
        for name, input_scale in variants:
            if name not in known:
                print(f"{name:<22}not in this core's QUANT_ALGOS")
                continue
            for dtype in DTYPES:
                model = quantized_wan.quantized_wan(name, dtype, input_scale=input_scale)
                x, t, context = quantized_wan.inputs(dtype)
                replay_check.forget_checks()
                with torch.inference_mode():
                    core_s, stock = timed(lambda: model(x, t, context, transformer_options={}))
                    options = lean_forward.lean_transformer_options(quantized_wan.LAYERS, chunk_tokens=arguments.chunk,
                                                                    checked=False)
                    lean_s, lean = timed(lambda: model(x, t, context, transformer_options=options))
                    checked = lean_forward.lean_transformer_options(quantized_wan.LAYERS, chunk_tokens=arguments.chunk,
                                                                    mode="auto")
                    model(x, t, context, transformer_options=checked)
                (check,) = replay_check.cached_checks(lean_forward.REPLAY)
                label = name + (" +input_scale" if input_scale else "")
                print(f"{label:<22}{str(dtype).replace('torch.', ''):<10}"
                      f"{quantized_wan.relative_difference(lean, stock):>14.3g}{check.difference:>14.3g}  "
                      f"{lean_s:>8.2f}{core_s:>8.2f}  {'passed' if check.passed else 'failed'} "
                      f"(tolerance {check.tolerance:.2g})", flush=True)


if __name__ == "__main__":
    main()
