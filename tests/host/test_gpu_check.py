"""bench/gpu_check.py --cpu-tiny on this core: every case path runs, so the one-shot GPU run has been rehearsed.

A GPU may be lent for a single prepared call; the script must not fail there for a reason a CPU
run could have shown. Each case must give real numbers or say why a number is n/a, never an error.
"""

import json
import math
import os
from pathlib import Path
import re
import subprocess
import sys

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "gpu_check.py"

FORMATS_CASE = "formats_ti2v_5b_cap24"
FORMATS = ("float8_e4m3fn", "int8_tensorwise", "nvfp4", "mxfp8")
# On the CPU only int8 has compute (torch._int_mm): the core dequantizes the other formats as each layer runs.
CPU_NATIVE = {"float8_e4m3fn": False, "int8_tensorwise": True, "nvfp4": False, "mxfp8": False}

# case -> the numbers it must measure on the CPU (path of keys under "metrics")
EXPECTED = {
    "env": [("cpu_threads",)],
    "prepare_models": [("seconds",), ("ti2v_5b_builder_keys",), ("wan22_vae_builder_keys",)],
    "sample_ti2v_5b_cap24": [("sdpa", "s_per_step"), ("auto", "s_per_step"), ("lean", "s_per_step"),
                             ("lean_over_stock_s_per_step",)],
    "graph_comfyui_template_ti2v_5b_cap24": [("run", "s_per_step"), ("run", "prompt_seconds")],
    "graph_wanfit_ti2v_5b_cap24": [("run", "s_per_step"), ("run", "prompt_seconds")],
    "sample_ti2v_5b_cap24_dynamic_vram_off": [("sdpa", "s_per_step")],
    "sample_t2v_a14b_cap24": [("auto", "s_per_step")],
    "sample_t2v_a14b_cap24_lean_vs_stock": [("sdpa", "s_per_step"), ("lean", "s_per_step"),
                                            ("lean_over_stock_s_per_step",)],
    "decode_wan22_cap24": [("comfy", "seconds"), ("wanfit", "seconds"), ("wanfit_time_over_comfy",)],
    FORMATS_CASE: [("fp16", "s_per_step"), ("fp16", "lean_over_core_max_relative")]
    + [(fmt, key) for fmt in FORMATS for key in ("s_per_step", "s_per_step_over_fp16", "quantized_layers",
                                                  "layers_native", "layers_dequantized",
                                                  "lean_over_core_max_relative")],
    "sample_ti2v_5b_cap32": [("sdpa", "s_per_step"), ("auto", "s_per_step")],
    "sample_t2v_a14b_cap32": [("auto", "s_per_step")],
}


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, path + (key,))
    else:
        yield path, value


def _get(metrics, path):
    for key in path:
        metrics = metrics[key]
    return metrics


def test_cpu_tiny_runs_every_case_with_numbers_or_reasons(comfyui, fixtures, tmp_path):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, COMFYUI_PATH=str(comfyui))
    # generous deadline: the host tier shares 2 cores with other work; alone it takes about a minute
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu-tiny", "--out", str(out), "--deadline-s", "900"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"gpu_check.py exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    report = json.loads((out / "gpu_check.json").read_text())
    version = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (Path(comfyui) / "comfyui_version.py").read_text()).group(1)
    assert (report["mode"], report["core_version"]) == ("cpu-tiny", version)
    assert set(report["cases"]) == set(EXPECTED), f"cases: expected {sorted(EXPECTED)}, got {sorted(report['cases'])}"

    dynamic_core = report["dynamic_vram_core"]
    for name, case in report["cases"].items():
        assert not case.get("errors"), f"{name} errored:\n" + "\n".join(case["errors"])
        if name == "sample_ti2v_5b_cap24_dynamic_vram_off" and not dynamic_core:
            assert case["status"] == "n/a" and case["reason"].startswith("n/a"), f"{name}: {case}"
            continue
        if name == FORMATS_CASE and not case["info"]["core_quant_algos"]:  # 0.3.64: no comfy.quant_ops
            assert case["status"] == "skipped" and "QUANT_ALGOS" in case["reason"], f"{name}: {case}"
            continue
        assert case["status"] == "ok", f"{name}: status {case['status']!r} ({case.get('reason')})"
        for path, value in _leaves(case["metrics"]):
            where = f"{name}: metrics {'.'.join(path)}"
            if isinstance(value, str):
                assert value.startswith("n/a"), f"{where} = {value!r}: a number or an 'n/a ...' reason expected"
            else:
                assert isinstance(value, (bool, int, float)) and math.isfinite(value), f"{where} = {value!r}"
        for path in EXPECTED[name]:
            value = _get(case["metrics"], path)
            assert isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, \
                f"{name}: metrics {'.'.join(path)} = {value!r}, a measured number expected"
        for arm in ("sdpa", "auto", "lean", "run", "comfy", "wanfit"):
            if isinstance(case["metrics"].get(arm), dict):
                assert case["metrics"][arm]["oom"] is False, f"{name} {arm} ran out of memory on the CPU"
    # what only a GPU can show says so
    sample = report["cases"]["sample_ti2v_5b_cap24"]["metrics"]
    assert sample["sdpa"]["peak_torch_allocated_gib"].startswith("n/a on CPU")
    assert sample["sage_speedup_over_sdpa"].startswith("n/a on CPU")
    assert sample["lean_over_stock_peak_torch"].startswith("n/a on CPU")
    assert report["cases"]["sample_t2v_a14b_cap24_lean_vs_stock"]["info"]["lean_report"].startswith("Lean forward on")

    formats = report["cases"][FORMATS_CASE]
    if formats["status"] == "ok":
        for fmt in FORMATS:
            measured = formats["metrics"][fmt]
            # what the core did, read from its loaded layers, and the plan's verdict for the CPU agree
            assert measured["core_ran_natively"] is CPU_NATIVE[fmt] and measured["core_agrees_with_plan"] is True, \
                f"{fmt}: {measured}"
            assert measured["quantized_layers"] == measured["layers_native"] + measured["layers_dequantized"] > 0
            assert measured["lean_over_core_max_relative"] == 0, f"{fmt}: the lean forward differs from the core's"
            assert measured["measured_over_predicted"].startswith("n/a on CPU")

    table = (out / "gpu_check.md").read_text()
    assert f"ComfyUI {version}" in table, table[:500]
    for name in EXPECTED:
        assert f"| {name} |" in table, f"{name} missing from the markdown table"
