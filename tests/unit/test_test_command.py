"""The test command fails fast, with directions, when no ComfyUI checkout is found."""

import os
from pathlib import Path
import subprocess
import time

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_test_command(env_overrides, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "COMFYUI_PATH"}
    env.update(HOME=str(tmp_path), **env_overrides)
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO_ROOT / "tests/run.sh")], env=env, capture_output=True, text=True,
                            timeout=60)
    return result, time.monotonic() - started


def test_without_comfyui_the_test_command_fails_fast_and_says_how_to_get_it(tmp_path):
    result, seconds = run_test_command({}, tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"no ComfyUI checkout found at {tmp_path}/ComfyUI" in result.stderr
    assert "COMFYUI_PATH" in result.stderr and "git clone" in result.stderr
    assert seconds < 5, f"took {seconds:.1f} s; it must fail before installing anything"
    assert not (tmp_path / ".cache").exists(), "nothing may be installed when ComfyUI is missing"


def test_a_wrong_comfyui_path_is_named_in_the_error(tmp_path):
    not_comfy = tmp_path / "not-comfy"
    not_comfy.mkdir()
    result, _ = run_test_command({"COMFYUI_PATH": str(not_comfy)}, tmp_path)
    assert result.returncode == 3
    assert f"no ComfyUI checkout found at {not_comfy}" in result.stderr
