"""Header-only detection vs a full load, on a generated >= 1 GB WAN-layout safetensors file.

Why: the loaders refuse a wrong file before ComfyUI loads it; that is only worth doing if the
check costs nothing next to the load. The file (random fp16 weights with the A14B I2V expert key
layout at dim 2048) is written to a temp folder outside the repository and deleted afterwards.

Usage: python bench/header_detection.py [--gib 1.2] [--repeats 5]
"""

import argparse
from pathlib import Path
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from wanfit.models import detect_variant  # noqa: E402


def build_state_dict(target_bytes, dim=2048, ffn_dim=8192):
    """WAN key layout (i2v expert: in_dim 36, out_dim 16), as many blocks as reach target_bytes in fp16."""
    generator = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float32).to(torch.float16)  # noqa: E731
    state = {"patch_embedding.weight": rand(dim, 36, 1, 2, 2), "patch_embedding.bias": rand(dim),
             "text_embedding.0.weight": rand(dim, 4096), "time_embedding.0.weight": rand(dim, 256),
             "head.modulation": rand(1, 2, dim), "head.head.weight": rand(16 * 4, dim)}
    block_bytes = 2 * (4 * dim * dim + 2 * dim * ffn_dim)
    for index in range(max(1, -(-target_bytes // block_bytes))):
        for name in ("q", "k", "v", "o"):
            state[f"blocks.{index}.self_attn.{name}.weight"] = rand(dim, dim)
        state[f"blocks.{index}.ffn.0.weight"] = rand(ffn_dim, dim)
        state[f"blocks.{index}.ffn.2.weight"] = rand(dim, ffn_dim)
        state[f"blocks.{index}.modulation"] = rand(1, 6, dim)
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.2, help="file size to generate (GiB, at least 1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="wanfit_bench_"))
    try:
        path = folder / "wan_i2v_layout.safetensors"
        save_file(build_state_dict(int(max(args.gib, 1.0) * 1024**3)), str(path))
        del_size_bytes = path.stat().st_size
        detect_s = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            info = detect_variant(path)
            detect_s.append(time.perf_counter() - started)
        load_s = []
        for _ in range(max(1, args.repeats // 2)):
            started = time.perf_counter()
            # load_file memory-maps lazily; copying every tensor reads all bytes, as ComfyUI does when it
            # moves the state dict into the model's parameters
            state = {name: tensor.clone() for name, tensor in load_file(str(path)).items()}
            checksum = sum(float(t.view(-1)[-1]) for t in state.values())
            load_s.append(time.perf_counter() - started)
            del state
        best_detect_s, best_load_s = min(detect_s), min(load_s)
        print(f"file: {del_size_bytes / 1024**3:.2f} GiB, {info.parameter_count / 1e6:.0f} M parameters, "
              f"detected {info.kind}/{info.variant} dims={info.dims.as_dict()} (checksum {checksum:.1f})")
        print(f"detect_variant (header only): best {best_detect_s * 1000:.2f} ms, median "
              f"{sorted(detect_s)[len(detect_s) // 2] * 1000:.2f} ms over {len(detect_s)} runs")
        print(f"safetensors.torch.load_file + copy (full load, warm page cache): best {best_load_s:.3f} s over {len(load_s)} runs")
        print(f"ratio full load / header detection: {best_load_s / best_detect_s:,.0f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
