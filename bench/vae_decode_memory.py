"""Measure the WAN VAE decode's working memory per output pixel, one fresh process per case.

    python bench/vae_decode_memory.py            # both VAEs: untiled peak per output px + WanFit's activation factor
    python bench/vae_decode_memory.py --vae 2.1  # one VAE

Working memory = peak RSS during the decode minus the RSS once the VAE is loaded (what
ComfyUI's memory_used_decode estimates, and what a WanFit budget bounds). The peak is reset
with /proc/self/clear_refs (5) after loading, so loading's own peak does not count. On a
GPU the same split is torch.cuda.max_memory_allocated around the decode.

Also the worker for bench/vae_decode_compare.py: `--case JSON` runs one case and prints one
JSON line (seconds, working bytes, optional saved output).
"""

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

FIXTURES = os.path.join(os.environ.get("WANFIT_FIXTURES_DIR", os.path.expanduser("~/.cache/wanfit/fixtures")),
                        "v1", "vae")
VAE_FILES = {"2.1": "wanfit_random_wan_2.1_vae.safetensors", "2.2": "wanfit_random_wan2.2_vae.safetensors"}
LATENT_CHANNELS = {"2.1": 16, "2.2": 48}
SPATIAL = {"2.1": 8, "2.2": 16}


def _status_kib(field):
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def run_case(case):
    """In this process: load the VAE, reset the peak, decode as the case says, report."""
    from tests.comfy_import import import_comfy

    import_comfy()
    import comfy.sd
    import comfy.utils
    import torch

    torch.set_num_threads(int(case.get("threads", torch.get_num_threads())))
    vae_kind = case["vae"]
    sd = comfy.utils.load_torch_file(os.path.join(FIXTURES, VAE_FILES[vae_kind]))
    vae = comfy.sd.VAE(sd=sd)
    del sd
    frames, h, w = case["latent"]
    generator = torch.Generator().manual_seed(case.get("seed", 0))
    latent = torch.randn((1, LATENT_CHANNELS[vae_kind], frames, h, w), generator=generator)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline_kib = _status_kib("VmRSS")
    _reset_peak()

    method = case["method"]
    extra = {}
    guard = torch.inference_mode()  # as ComfyUI's executor runs every node (else autograd keeps every activation)
    guard.__enter__()
    start = time.perf_counter()
    if method == "comfy_decode":
        images = vae.decode(latent)
    elif method == "comfy_tiled":
        scale = SPATIAL[vae_kind]
        images = vae.decode_tiled(latent, tile_x=case["tile"] // scale, tile_y=case["tile"] // scale,
                                  overlap=case["overlap"] // scale, tile_t=case.get("tile_t", 999) // 4 or 2,
                                  overlap_t=1)
    elif method == "wanfit":
        from wanfit import decode

        if case.get("lean_heap"):  # the fit: glibc returns freed tensors at once, so RSS follows live tensors
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1 * 2**20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 128 * 2**10)  # M_TRIM_THRESHOLD

        budget = int(case["budget_bytes"]) if "budget_bytes" in case else int(case["budget_mb"] * 2**20)
        plan = decode.plan_decode(vae.first_stage_model, latent.shape, budget, dtype=vae.vae_dtype,
                                  device=vae.device, output_device=vae.output_device,
                                  overlap=case.get("wanfit_overlap"),
                                  activation_factor=case.get("activation_factor"),
                                  allow_untiled=case.get("allow_untiled", True))
        if plan is not None:
            extra = {"plan": plan.describe(), "predicted_bytes": plan.predicted_peak_bytes,
                     "tiles": plan.tile_count, "grid": [len(plan.rows), len(plan.cols)], "fixed_bytes": plan.fixed_bytes,
                     "exact": plan.exact, "halo_cap": plan.halo_cap_latent_px,
                     "exact_budget_bytes": plan.exact_budget_bytes}
            if case.get("terms"):
                from wanfit.decode import tiling

                spec = decode.decoder_spec(vae.first_stage_model, case.get("activation_factor"))
                row = max(plan.rows, key=lambda r: r.core[1] - r.core[0])
                col = max(plan.cols, key=lambda c: c.core[1] - c.core[0])
                extra["cache_elems"], extra["act_elems"] = tiling.tile_memory_terms(spec, row, col)
        images = decode.decode_comfy_vae(vae, latent, budget, overlap=case.get("wanfit_overlap"),
                                         activation_factor=case.get("activation_factor"),
                                         allow_untiled=case.get("allow_untiled", True))
    else:
        raise SystemExit(f"unknown method {method!r}")
    seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    guard.__exit__(None, None, None)
    result = {"seconds": seconds, "working_bytes": (peak_kib - baseline_kib) * 1024,
              "baseline_bytes": baseline_kib * 1024, "shape": list(images.shape), **extra}
    if case.get("save"):
        torch.save(images.contiguous(), case["save"])
        result["saved"] = case["save"]
    return result


def measure(case, timeout=900, env=None):
    """Run one case in a fresh Python process (peak memory must not carry over between cases)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", json.dumps(case)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case {case} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help="worker mode: one JSON case")
    parser.add_argument("--vae", choices=sorted(VAE_FILES), action="append")
    parser.add_argument("--skip-untiled", action="store_true", help="only WanFit's one-tile fit")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    # Sizes: the untiled working peak of one chunk is what grows with pixels; frames only add output.
    sizes = {"2.1": (5, 32, 32), "2.2": (3, 12, 12)}
    print("| VAE | latent | case | s | working MB | per output px (bytes) | fitted |")
    print("|---|---|---|---|---|---|---|")
    for vae_kind in args.vae or sorted(VAE_FILES):
        frames, h, w = sizes[vae_kind]
        out_px = (h * SPATIAL[vae_kind]) * (w * SPATIAL[vae_kind])
        if not args.skip_untiled:
            full = measure({"vae": vae_kind, "latent": [frames, h, w], "method": "comfy_decode"})
            print(f"| {vae_kind} | {frames}x{h}x{w} | VAE.decode | {full['seconds']:.1f} | "
                  f"{full['working_bytes'] / 2**20:.0f} | {full['working_bytes'] / out_px:.0f} | - |", flush=True)
        # WanFit with activation factor 1 in the lean heap (RSS follows the live tensors): the measured
        # peak, less the fixed bytes, the CPU workspace and the caches, over the largest activation.
        from wanfit.decode.budget import CPU_WORKSPACE_BYTES

        for budget_mb in (1e6,):
            case = {"vae": vae_kind, "latent": [frames, h, w], "method": "wanfit", "budget_mb": budget_mb,
                    "activation_factor": 1.0, "terms": True, "allow_untiled": False,
                    "lean_heap": True}
            res = measure(case)
            factor = ((res["working_bytes"] - res["fixed_bytes"] - CPU_WORKSPACE_BYTES - 4 * res["cache_elems"])
                      / (4 * res["act_elems"]))
            print(f"| {vae_kind} | {frames}x{h}x{w} | WanFit {res['plan']} | {res['seconds']:.1f} | "
                  f"{res['working_bytes'] / 2**20:.0f} | {res['working_bytes'] / out_px:.0f} | "
                  f"activation factor {factor:.2f} |", flush=True)


if __name__ == "__main__":
    main()
