"""`python -m wanfit plan` as start scripts run it (subprocess, cwd = the repository)."""

import json
import os
import subprocess
import sys

import pytest

from tests.fake_checkout import fake_checkout, parser_source

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, gpu_tier=None, comfyui_path=None, home=None):
    env = dict(os.environ)
    env.pop("GPU_TIER", None)
    env.pop("COMFYUI_PATH", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CLI must fall back to GPU_TIER / --tier, never a real GPU
    if gpu_tier:
        env["GPU_TIER"] = gpu_tier
    if comfyui_path:
        env["COMFYUI_PATH"] = str(comfyui_path)
    if home:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "wanfit", "plan", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def plan_checkout(root, version):
    flags = ["--reserve-vram", "--lowvram", "--async-offload", "--cache-none", "--cpu", "--disable-smart-memory"]
    return fake_checkout(root, version, parser_source(flags))


@pytest.mark.parametrize("core, expected", [
    ("0.3.64", "--reserve-vram 0.5 --async-offload --lowvram"),
    ("0.33.0", "--reserve-vram 0.5"),
])
def test_print_args_is_one_line_of_flags_from_gpu_tier_for_the_core(core, expected):
    result = run("--model", "t2v_a14b", "--width", "832", "--height", "480", "--print-args", "--core", core,
                 gpu_tier="CONSUMER_8GB")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    flags = lines[0].split()
    assert flags[0] == "--reserve-vram" and float(flags[1]) > 0
    # the 8 GB card streams most of the expert: how depends on the core (cache flags depend on this machine's RAM)
    assert lines[0].startswith(expected), lines[0]
    if core == "0.33.0":
        assert not {"--lowvram", "--novram", "--highvram", "--gpu-only", "--async-offload"} & set(flags)


def test_default_core_is_the_checkout_at_comfyui_path(tmp_path):
    checkout = plan_checkout(tmp_path / "ComfyUI", "0.3.64")
    result = run("--tier", "CONSUMER_8GB", "--model", "t2v_a14b", "--width", "832", "--height", "480", "--json",
                 comfyui_path=checkout)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["core_version"] == "0.3.64" and data["core_source"] == f"checkout {checkout.resolve()}"
    assert "--lowvram" in data["launch_args"]


def test_without_a_checkout_the_newest_core_is_planned_and_said_on_stderr_only(tmp_path):
    result = run("--tier", "PROSUMER_24GB", "--print-args", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--reserve-vram") and len(result.stdout.strip().splitlines()) == 1
    assert "newest supported core, ComfyUI 0.33.0" in result.stderr


def test_unknown_core_path_is_a_clean_error_naming_it(tmp_path):
    result = run("--tier", "PROSUMER_24GB", "--print-args", "--core", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert str(tmp_path) in result.stderr and "not a ComfyUI checkout" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("core", ["0.3.12", "old"])
def test_core_older_than_the_minimum_names_it(tmp_path, core):
    value = core if core != "old" else str(plan_checkout(tmp_path / "ComfyUI", "0.3.40"))
    result = run("--tier", "PROSUMER_24GB", "--print-args", "--core", value)
    assert result.returncode == 2 and result.stdout == ""
    assert "0.3.64" in result.stderr and "Traceback" not in result.stderr


def test_an_untested_version_plans_as_the_nearest_older_and_says_so():
    result = run("--tier", "PROSUMER_24GB", "--print-args", "--core", "0.45.1")
    assert result.returncode == 0
    assert "planned with the flags of 0.33.0" in result.stderr


def test_json_from_tier_option():
    result = run("--tier", "DATACENTER_80GB", "--model", "ti2v_5b", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tier"] == "DATACENTER_80GB" and data["model_variant"] == "ti2v_5b"
    assert data["predicted_peak_vram_bytes"] > 0


def test_human_summary_with_reserve():
    result = run("--tier", "PROSUMER_24GB", "--reserve-vram-gb", "6", "--core", "0.33.0", gpu_tier=None)
    assert result.returncode == 0, result.stderr
    assert "Predicted peak VRAM" in result.stdout and "--reserve-vram 6" in result.stdout
    assert "ComfyUI 0.33.0: dynamic VRAM (comfy-aimdo)" in result.stdout


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
