"""The RunPod start step's pure parts (wanfit/remote/worker.py); the whole step runs in tests/host/test_worker_start.py."""

import pytest

from wanfit.core import core_from_version
from wanfit.models import load_manifest
from wanfit.plan import device_for_tier
from wanfit.units import BYTES_PER_GIB
from wanfit.remote.worker import (FREE_SPACE_MARGIN_BYTES, WorkerStartError, check_free_space, download_estimate,
                           download_url, extra_model_paths_yaml, launch_plan, missing_files, model_variants,
                           parse_plan_size, parse_workflows, patch_start_script)
from wanfit.workflows import load_input_map

MANIFEST, INPUT_MAP = load_manifest(), load_input_map()


@pytest.mark.parametrize("text, expected", [
    ("ti2v_5b_t2v", ["ti2v_5b_t2v"]),
    (" a14b_t2v , ti2v_5b_t2v a14b_t2v", ["a14b_t2v", "ti2v_5b_t2v"]),
    ("a14b_t2v_lightx2v,decode_saved_latent", ["a14b_t2v_lightx2v", "decode_saved_latent"]),
    ("all", list(MANIFEST["workflows"])),
])
def test_workflow_names(text, expected):
    assert parse_workflows(text, MANIFEST, INPUT_MAP) == expected


@pytest.mark.parametrize("text, phrase", [
    ("", "WANFIT_WORKFLOWS is not set"),
    ("ti2v_5b_t2v,wan_magic", "unknown workflow(s): wan_magic"),
    ("decode_saved_latent", "names no workflow that loads a model"),
])
def test_bad_workflow_names(text, phrase):
    with pytest.raises(WorkerStartError, match=r"(?s).*" + phrase.replace("(", r"\(").replace(")", r"\)")):
        parse_workflows(text, MANIFEST, INPUT_MAP)


def test_plan_size():
    assert parse_plan_size("") is None
    assert parse_plan_size(" 832x480x81 ") == (832, 480, 81)
    with pytest.raises(WorkerStartError, match="WIDTHxHEIGHTxFRAMES"):
        parse_plan_size("832x480")


def test_the_most_demanding_model_decides_the_flags():
    """A14B (two experts, more RAM) over TI2V-5B when an endpoint serves both."""
    variants = model_variants(["ti2v_5b_t2v", "a14b_t2v", "decode_saved_latent"], INPUT_MAP)
    assert variants == ["ti2v_5b", "t2v_a14b"]
    plan = launch_plan(variants, device_for_tier("PROSUMER_24GB", 64 * BYTES_PER_GIB), core_from_version("0.3.64"))
    assert plan.model_variant == "t2v_a14b"


def test_a_job_size_that_does_not_fit_says_how_to_fix_it():
    with pytest.raises(WorkerStartError, match="WANFIT_PLAN_SIZE"):
        launch_plan(["t2v_a14b"], device_for_tier("CONSUMER_8GB", 64 * BYTES_PER_GIB), core_from_version("0.33.0"),
                    plan_size=(3840, 2160, 241))


START_SH = """#!/usr/bin/env bash
echo "worker-comfyui: Starting ComfyUI"
if [ "$SERVE_API_LOCALLY" == "true" ]; then
    python -u /comfyui/main.py --disable-auto-launch --listen --log-stdout &
else
    python -u /comfyui/main.py --disable-auto-launch --log-stdout &
fi
python -u /handler.py
"""


def test_flags_go_after_each_main_py_launch_and_the_environment_is_exported():
    patched = patch_start_script(START_SH, ["--reserve-vram", "0.5", "--output-directory", "/runpod volume/output"],
                                 {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    lines = patched.splitlines()
    assert lines[:2] == ["#!/usr/bin/env bash", "export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"]
    launches = [line.strip() for line in lines if "main.py" in line]
    assert launches == [
        "python -u /comfyui/main.py --reserve-vram 0.5 --output-directory '/runpod volume/output' "
        "--disable-auto-launch --listen --log-stdout &",
        "python -u /comfyui/main.py --reserve-vram 0.5 --output-directory '/runpod volume/output' "
        "--disable-auto-launch --log-stdout &"]
    assert "python -u /handler.py" in patched


def test_a_start_script_without_a_comfyui_launch_is_refused():
    with pytest.raises(WorkerStartError, match="base image changed"):
        patch_start_script("#!/bin/bash\nexec comfy launch\n", ["--reserve-vram", "0.5"])


def test_yaml_maps_the_four_model_folders_with_their_legacy_names():
    text = extra_model_paths_yaml("/runpod-volume")
    assert 'base_path: "/runpod-volume"' in text
    assert 'diffusion_models: "models/diffusion_models\\nmodels/unet"' in text
    assert 'text_encoders: "models/text_encoders\\nmodels/clip"' in text
    assert 'vae: "models/vae"' in text and 'loras: "models/loras"' in text


def test_free_space_is_checked_on_known_sizes_with_a_margin():
    rows = [({"filename": "a.safetensors"}, "http://x/a", 10 * BYTES_PER_GIB),
            ({"filename": "b.safetensors"}, "http://x/b", None)]  # unknown size: not counted
    assert check_free_space("/", rows, free_bytes=10 * BYTES_PER_GIB + FREE_SPACE_MARGIN_BYTES) == (
        10 * BYTES_PER_GIB, 10 * BYTES_PER_GIB + FREE_SPACE_MARGIN_BYTES)
    with pytest.raises(WorkerStartError, match=r"need 10.0 GB \(a.safetensors 10.0 GB\).*only 10.5 GB is free"):
        check_free_space("/", rows, free_bytes=int(10.5 * BYTES_PER_GIB))


def test_only_missing_files_are_fetched_and_legacy_folders_count(tmp_path):
    for relative in ("models/unet/wan2.2_t2v_high_noise_14B_fp16.safetensors", "models/vae/wan_2.1_vae.safetensors"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    names = [entry["filename"] for entry in missing_files(tmp_path, ["a14b_t2v", "decode_saved_latent"], MANIFEST)]
    assert names == ["wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"]


def test_a_mirror_url_keeps_the_folder_layout():
    entry = {"folder": "vae", "filename": "wan2.2_vae.safetensors", "url": "https://huggingface.co/x"}
    assert download_url(entry) == "https://huggingface.co/x"
    assert download_url(entry, "http://mirror:8000/wan/") == "http://mirror:8000/wan/vae/wan2.2_vae.safetensors"


def test_download_estimate_adds_known_sizes_and_lists_unknown_ones():
    manifest = {"files": [{"filename": "exact", "size_bytes": 6735906897, "approx_size_gb": 6.74},
                          {"filename": "approx", "size_bytes": None, "approx_size_gb": 14.3},
                          {"filename": "unknown", "size_bytes": None, "approx_size_gb": None}],
                "workflows": {"w": {"slots": [{"any_of": ["exact"]}, {"any_of": ["approx", "exact"]},
                                              {"any_of": ["unknown"]}]}}}
    assert download_estimate("w", manifest) == (6735906897 + int(14.3e9), ["unknown"])
