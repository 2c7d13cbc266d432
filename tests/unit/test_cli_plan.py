"""`python -m wanfit plan` as start scripts run it (subprocess, cwd = the repository)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, gpu_tier=None):
    env = dict(os.environ)
    env.pop("GPU_TIER", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CLI must fall back to GPU_TIER / --tier, never a real GPU
    if gpu_tier:
        env["GPU_TIER"] = gpu_tier
    return subprocess.run([sys.executable, "-m", "wanfit", "plan", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_print_args_is_one_line_of_flags_from_gpu_tier():
    result = run("--model", "t2v_a14b", "--width", "832", "--height", "480", "--print-args", gpu_tier="CONSUMER_8GB")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    flags = lines[0].split()
    assert flags[0] == "--reserve-vram" and float(flags[1]) > 0
    assert "--async-offload" in flags


def test_json_from_tier_option():
    result = run("--tier", "DATACENTER_80GB", "--model", "ti2v_5b", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tier"] == "DATACENTER_80GB" and data["model_variant"] == "ti2v_5b"
    assert data["predicted_peak_vram_bytes"] > 0


def test_human_summary_with_reserve():
    result = run("--tier", "PROSUMER_24GB", "--reserve-vram-gb", "6", gpu_tier=None)
    assert result.returncode == 0, result.stderr
    assert "Predicted peak VRAM" in result.stdout and "--reserve-vram 6" in result.stdout


def test_bad_frames_is_a_clean_error_with_exit_2():
    result = run("--tier", "PROSUMER_24GB", "--frames", "80")
    assert result.returncode == 2
    assert "frames=80" in result.stderr and "Traceback" not in result.stderr


def test_refusal_is_a_clean_error_with_exit_2():
    result = run("--model", "t2v_a14b", "--width", "1920", "--height", "1088", "--frames", "161", gpu_tier="CONSUMER_8GB")
    assert result.returncode == 2
    assert "does not fit" in result.stderr and "Traceback" not in result.stderr


def test_unknown_gpu_tier_names_the_variable():
    result = run("--print-args", gpu_tier="HUGE_9000GB")
    assert result.returncode == 2
    assert "GPU_TIER" in result.stderr and "Traceback" not in result.stderr
