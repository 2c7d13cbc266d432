"""The test command fails fast, with directions, when a supported ComfyUI core is missing."""

import os
from pathlib import Path
import subprocess
import time

from tests.fake_checkout import fake_checkout

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_test_command(env_overrides, tmp_path, *args):
    env = {key: value for key, value in os.environ.items()
           if key not in ("COMFYUI_PATH", "WANFIT_COMFYUI_GGUF") and not key.startswith("WANFIT_CORE_")}
    env.update(HOME=str(tmp_path), **env_overrides)
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO_ROOT / "tests/run.sh"), *args], env=env, capture_output=True,
                            text=True, timeout=60)
    return result, time.monotonic() - started


def test_without_any_core_the_test_command_fails_fast_and_names_each_missing_core(tmp_path):
    result, seconds = run_test_command({}, tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"no ComfyUI 0.3.64 checkout found at {tmp_path}/ComfyUI-0.3.64" in result.stderr
    assert f"no ComfyUI 0.33.0 checkout found at {tmp_path}/ComfyUI-0.33.0" in result.stderr
    assert "WANFIT_CORE_0_33_0" in result.stderr and "git clone" in result.stderr
    assert seconds < 5, f"took {seconds:.1f} s; it must fail before installing anything"
    assert not (tmp_path / ".cache").exists(), "nothing may be installed when a core is missing"


def test_one_missing_core_is_named_and_the_present_one_is_not(tmp_path):
    fake_checkout(tmp_path / "ComfyUI-0.3.64", "0.3.64", main="")
    result, _ = run_test_command({}, tmp_path)
    assert result.returncode == 3
    assert "no ComfyUI 0.33.0 checkout found" in result.stderr
    assert "no ComfyUI 0.3.64" not in result.stderr
    assert not (tmp_path / ".cache").exists()


def test_a_checkout_of_another_version_is_refused_with_its_version(tmp_path):
    wrong = fake_checkout(tmp_path / "elsewhere", "0.3.60", main="")
    result, _ = run_test_command({"WANFIT_CORE_0_3_64": str(wrong)}, tmp_path, "--core", "0.3.64")
    assert result.returncode == 3
    assert f"{wrong} holds ComfyUI 0.3.60, not 0.3.64" in result.stderr
    assert not (tmp_path / ".cache").exists()


def test_an_unsupported_core_version_is_refused_with_the_supported_list(tmp_path):
    result, _ = run_test_command({}, tmp_path, "--core", "0.2.0")
    assert result.returncode == 2
    assert "supported: 0.3.64 0.33.0" in result.stderr


def matrix_releases():
    lines = (REPO_ROOT / "tests/matrix/releases.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def test_a_missing_matrix_release_stops_the_command_with_get_cores_directions(tmp_path):
    fake_checkout(tmp_path / "ComfyUI-0.3.64", "0.3.64", main="")
    fake_checkout(tmp_path / "ComfyUI-0.33.0", "0.33.0", main="")
    missing, *present = matrix_releases()
    for version in present:
        fake_checkout(tmp_path / f"ComfyUI-{version}", version, main="")
    result, seconds = run_test_command({}, tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"no ComfyUI {missing} checkout found at {tmp_path}/ComfyUI-{missing} (release matrix)" in result.stderr
    assert not [version for version in present if f"no ComfyUI {version} checkout" in result.stderr]
    assert "bash tests/matrix/get_cores.sh" in result.stderr and "WANFIT_CORE_" in result.stderr
    assert seconds < 5, f"took {seconds:.1f} s; it must fail before installing anything"
    assert not (tmp_path / ".cache").exists(), "nothing may be installed when a matrix release is missing"


def test_the_matrix_tier_refuses_a_core_whose_venv_it_does_not_use(tmp_path):
    fake_checkout(tmp_path / "ComfyUI-0.3.64", "0.3.64", main="")
    result, _ = run_test_command({}, tmp_path, "--core", "0.3.64", "tests/matrix")
    assert result.returncode == 2
    assert "runs with ComfyUI 0.33.0's venv" in result.stderr and "--core 0.33.0 tests/matrix" in result.stderr
    assert not (tmp_path / ".cache").exists()


def test_a_missing_comfyui_gguf_checkout_stops_the_host_tier_with_directions(tmp_path):
    fake_checkout(tmp_path / "ComfyUI-0.3.64", "0.3.64", main="")
    fake_checkout(tmp_path / "ComfyUI-0.33.0", "0.33.0", main="")
    for version in matrix_releases():
        fake_checkout(tmp_path / f"ComfyUI-{version}", version, main="")
    result, seconds = run_test_command({}, tmp_path, "--core", "0.33.0", "tests/host/test_gguf_downstream.py")
    assert result.returncode == 3, result.stderr
    assert f"no ComfyUI-GGUF checkout found at {tmp_path}/ComfyUI-GGUF" in result.stderr
    assert "WANFIT_COMFYUI_GGUF" in result.stderr
    assert "git clone https://github.com/city96/ComfyUI-GGUF ~/ComfyUI-GGUF" in result.stderr
    assert seconds < 5, f"took {seconds:.1f} s; it must fail before installing anything"
    assert not (tmp_path / ".cache").exists(), "nothing may be installed when ComfyUI-GGUF is missing"
