"""Lean vs stock WAN forward time on this machine, side by side: lean / stock, median of interleaved runs.

    COMFYUI_PATH=~/ComfyUI-0.33.0 python bench/lean_forward_speed.py [--dim 1536] [--blocks 8] [--tokens 8192]

The core's own WanModel (comfy/ldm/wan/model.py, comfy.ops.disable_weight_init, fp32 on the CPU;
random weights) runs one forward with its own blocks (stock) and one with WanFit's lean block
forward installed through patches_replace (lean), alternating ABBA, so drift on a shared machine
hits both alike. The output also checks that both give the same result.
"""

import argparse
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import torch  # noqa: E402

from activation_peak import build_model, core_version, import_core, version_tuple  # noqa: E402
from wanfit.plan import footprint as memory  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--core-path", default=os.environ.get("COMFYUI_PATH"))
    parser.add_argument("--dim", type=int, default=1536, help="hidden size (heads of 128)")
    parser.add_argument("--ffn-dim", type=int, default=8960, help="FFN width (8960: WAN 2.1 1.3B's)")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=8192, help="video tokens (a multiple of 1024)")
    parser.add_argument("--chunk-tokens", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="ABBA pairs (4 timed forwards each)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    options = parser.parse_args(argv)
    if not options.core_path:
        parser.error("no core: pass --core-path or set COMFYUI_PATH")
    if options.threads:
        torch.set_num_threads(options.threads)

    core_path = import_core(options.core_path)
    version = core_version(core_path)
    from wanfit.lean_forward import lean_transformer_options

    config = memory.WanTransformerConfig("speed", dim=options.dim, ffn_dim=options.ffn_dim, num_layers=options.blocks,
                                         num_heads=options.dim // 128, in_dim=16, out_dim=16)
    model = build_model(config, "cpu", torch.float32)
    # latent frames of 64 x 64 pixels = 32 x 32 tokens after the 2 x 2 patch embedding (1024 a frame)
    frames = options.tokens // 1024
    tokens = frames * 1024
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, frames, 64, 64, generator=generator)
    context = torch.randn(1, 512, config.text_dim, generator=generator)
    timestep = torch.tensor([500.0])
    chunk = options.chunk_tokens if options.chunk_tokens == "auto" else int(options.chunk_tokens)
    lean_options = lean_transformer_options(options.blocks, version_tuple(version), chunk, checked=False)

    def run(lean):
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(x, timestep, context, transformer_options=dict(lean_options) if lean else {})
        return time.perf_counter() - start, out

    _, stock_out = run(False)  # warm-up, and the reference
    _, lean_out = run(True)
    difference = ((lean_out - stock_out).abs().max() / stock_out.abs().max()).item()
    times = {False: [], True: []}
    for _ in range(options.repeats):
        for lean in (False, True, True, False):
            times[lean].append(run(lean)[0])
    ratios = [lean / stock for lean, stock in zip(times[True], times[False])]
    print(f"ComfyUI {version}, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU: dim {options.dim}, "
          f"ffn {options.ffn_dim}, {options.blocks} blocks, {tokens} tokens, chunks {chunk} "
          f"({-(-tokens // (memory.lean_auto_chunk_tokens(tokens) if chunk == 'auto' else chunk))} per pass)")
    print(f"stock median {statistics.median(times[False]):.2f} s, lean median {statistics.median(times[True]):.2f} s, "
          f"lean / stock median {statistics.median(ratios):.3f} (pairs: {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"max |lean - stock| / max |stock| = {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
