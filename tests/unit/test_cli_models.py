"""`python -m wanfit models`: listing, --check, --download (from 127.0.0.1), --manager-json, exit codes."""

import copy
import hashlib
import json

import pytest

import wanfit.cli.models as cli_models
from wanfit.cli.models import main
from wanfit.models import load_manifest
from tests.misbehaving_server import FileServer
from tests.gguf_files import gguf_header_bytes
from tests.model_files import quantize, sd15_unet, t5_encoder, wan_dit, wan_vae, write_safetensors


@pytest.fixture
def models_dir(tmp_path):
    """A ComfyUI models folder holding the complete TI2V-5B set (tiny headers under official names)."""
    root = tmp_path / "models"
    write_safetensors(root / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors", wan_dit(48, 48))
    write_safetensors(root / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", t5_encoder(fp8_scaled=True))
    write_safetensors(root / "vae" / "wan2.2_vae.safetensors", wan_vae(True))
    return root


def test_lists_ready_and_missing_per_workflow(models_dir, capsys):
    assert main(["--models-dir", str(models_dir)]) == 0
    out = capsys.readouterr().out
    assert "ti2v_5b_t2v: TI2V-5B text-to-video [ready]" in out
    assert "a14b_i2v: A14B I2V (high + low noise experts) [3 missing]" in out
    assert ("missing  high_noise_expert  diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors "
            "(or wan2.2_i2v_high_noise_14B_fp16.safetensors) - ~14.3 GB, https://huggingface.co/Comfy-Org/") in out
    assert "ok       vae                vae/wan2.2_vae.safetensors" in out


def test_legacy_folder_and_subfolder_are_found(models_dir, capsys):
    write_safetensors(models_dir / "unet" / "wan" / "wan2.2_t2v_high_noise_14B_fp16.safetensors", wan_dit(16, 16))
    assert main(["--models-dir", str(models_dir), "--workflow", "a14b_t2v", "--check"]) == 0
    assert "unet/wan/wan2.2_t2v_high_noise_14B_fp16.safetensors  (header ok)" in capsys.readouterr().out


def test_check_flags_a_wrong_file_under_an_official_name(models_dir, capsys):
    write_safetensors(models_dir / "vae" / "wan2.2_vae.safetensors", sd15_unet())
    assert main(["--models-dir", str(models_dir), "--workflow", "ti2v_5b_t2v", "--check"]) == 2
    captured = capsys.readouterr()
    assert "BAD      vae" in captured.out and "looks like a Stable Diffusion 1.x/2.x/SDXL UNet" in captured.out
    assert "1 problem(s) found" in captured.err


def test_check_flags_a_truncated_file(models_dir, capsys):
    write_safetensors(models_dir / "vae" / "wan2.2_vae.safetensors", wan_vae(True), drop_tail_bytes=10)
    assert main(["--models-dir", str(models_dir), "--workflow", "ti2v_5b_i2v", "--check"]) == 2
    assert "Model file is truncated:" in capsys.readouterr().out


def test_without_check_headers_are_not_read(models_dir, capsys):
    (models_dir / "vae" / "wan2.2_vae.safetensors").write_bytes(b"")
    assert main(["--models-dir", str(models_dir), "--workflow", "ti2v_5b_t2v"]) == 0


@pytest.mark.parametrize("argv,stderr", [
    (["--models-dir", "/nonexistent/models"], "error: ComfyUI models folder not found: /nonexistent/models."),
    (["--workflow", "a14b_s2v"], "error: --workflow 'a14b_s2v' is unknown. Expected one of: ti2v_5b_t2v"),
    (["--download", "flux1-dev.safetensors"], "error: --download 'flux1-dev.safetensors': not a file or workflow"),
])
def test_usage_errors_exit_2_with_a_clean_message(models_dir, capsys, argv, stderr):
    if "--models-dir" not in argv:
        argv = ["--models-dir", str(models_dir)] + argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(stderr) and "Traceback" not in err


def test_default_models_dir_follows_comfyui_path(monkeypatch, tmp_path):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    assert cli_models.default_models_dir() == tmp_path / "models"


def safetensors_bytes(tmp_path, tensors):
    return write_safetensors(tmp_path / "served.safetensors", tensors).read_bytes()


@pytest.fixture
def local_manifest(tmp_path):
    """The real manifest with the Wan 2.1 VAE (a tiny file with its real header) served from 127.0.0.1."""
    payload = safetensors_bytes(tmp_path, wan_vae(False))
    server = FileServer(payload)
    manifest = copy.deepcopy(load_manifest())
    entry = next(f for f in manifest["files"] if f["filename"] == "wan_2.1_vae.safetensors")
    entry.update(url=server.url, sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    yield server, entry, manifest
    server.close()


def test_download_fetches_resumes_and_verifies(models_dir, local_manifest, capsys):
    server, entry, manifest = local_manifest
    server.drop_after_bytes = 1000
    argv = ["--models-dir", str(models_dir), "--workflow", "a14b_t2v", "--download", "wan_2.1_vae.safetensors"]
    assert main(argv, manifest) == 2
    err = capsys.readouterr().err
    assert "error: Download of wan_2.1_vae.safetensors was interrupted at 1000 of" in err
    assert not (models_dir / "vae" / "wan_2.1_vae.safetensors").exists()
    assert main(argv, manifest) == 0
    out = capsys.readouterr().out
    size = len(server.payload)
    assert f"downloaded: {models_dir / 'vae' / 'wan_2.1_vae.safetensors'} ({size} bytes, sha256 verified)" in out
    assert server.requests[-1] == "bytes=1000-"
    assert (models_dir / "vae" / "wan_2.1_vae.safetensors").read_bytes() == server.payload
    assert main(argv, manifest) == 0 and "present, skipped: vae/wan_2.1_vae.safetensors" in capsys.readouterr().out


def test_download_wrong_checksum_exits_2(models_dir, local_manifest, capsys):
    _server, entry, manifest = local_manifest
    entry["sha256"] = "f" * 64
    assert main(["--models-dir", str(models_dir), "--download", "wan_2.1_vae.safetensors"], manifest) == 2
    assert "error: Checksum mismatch for wan_2.1_vae.safetensors: expected sha256 ffff" in capsys.readouterr().err
    assert not list((models_dir / "vae").glob("wan_2.1_vae*"))


def test_download_all_picks_missing_defaults_of_the_workflow(models_dir, local_manifest):
    _server, _entry, manifest = local_manifest
    names = cli_models.resolve_download_names("all", ["a14b_t2v"], models_dir, manifest)
    assert names == ["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                     "wan_2.1_vae.safetensors"]  # umt5 is already there


def test_manager_json(capsys, tmp_path):
    assert main(["--manager-json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert any(m["filename"] == "wan2.2_vae.safetensors" and m["save_path"] == "vae" for m in models)
    target = tmp_path / "model-list.json"
    assert main(["--manager-json", str(target)]) == 0
    assert json.loads(target.read_text())["models"] == models


LOGIN_PAGE = b"<html><body>Please log in</body></html>"


@pytest.mark.parametrize("served, expected", [
    (LOGIN_PAGE, "error: Download of wan_2.1_vae.safetensors refused: http://127.0.0.1:"),
    ("sd15", "it looks like a Stable Diffusion 1.x/2.x/SDXL UNet checkpoint"),
    ("wan22_vae", "it looks like the Wan 2.2 VAE (z=48, 16x16 spatial), but wan_2.1_vae.safetensors should be"),
], ids=["html login page", "another model", "the other WAN VAE"])
def test_download_without_a_reference_hash_needs_the_right_header(models_dir, local_manifest, tmp_path, capsys,
                                                                   served, expected):
    server, entry, manifest = local_manifest
    if served == "sd15":
        served = safetensors_bytes(tmp_path, sd15_unet())
    elif served == "wan22_vae":
        served = safetensors_bytes(tmp_path, wan_vae(True))
    server.payload = served
    entry.update(sha256=None, size_bytes=None)  # most manifest entries: the header check is the guard
    assert main(["--models-dir", str(models_dir), "--download", "wan_2.1_vae.safetensors"], manifest) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    if served == LOGIN_PAGE:  # refused from its first bytes, before any header check
        assert "answered with an HTML page (Content-Type: none) instead of the file. Nothing was saved." in err
    else:
        assert "error: Downloaded file is not the expected model: wan_2.1_vae.safetensors from http://127.0.0.1:" in err
        assert "The download was deleted, not installed." in err, err
    assert not list((models_dir / "vae").glob("wan_2.1_vae*")), "nothing under the final name, no partial"
    assert main(["--models-dir", str(models_dir), "--workflow", "a14b_t2v"], manifest) == 0
    assert "missing  vae" in capsys.readouterr().out


def test_download_reports_a_present_file_that_is_not_the_model(models_dir, local_manifest, capsys):
    (models_dir / "vae" / "wan_2.1_vae.safetensors").write_bytes(LOGIN_PAGE)  # left by an older downloader
    assert main(["--models-dir", str(models_dir), "--download", "wan_2.1_vae.safetensors"], local_manifest[2]) == 2
    err = capsys.readouterr().err
    assert "error: present but not the model: Not a safetensors file:" in err and "present, skipped" not in err
    assert (models_dir / "vae" / "wan_2.1_vae.safetensors").read_bytes() == LOGIN_PAGE, "never overwritten"


def test_manifest_sizes_and_hashes_are_well_formed():
    import re

    for entry in load_manifest()["files"]:
        assert entry["size_bytes"] is None or (isinstance(entry["size_bytes"], int) and entry["size_bytes"] > 10**6)
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), entry["filename"]


def test_check_file_describes_a_quantized_expert_and_what_loads_it(tmp_path, capsys):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "nvfp4")
    path = write_safetensors(tmp_path / "wan2.2_t2v_high_noise_14B_nvfp4.safetensors", tensors, metadata)
    assert main(["--check-file", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == ["kind: diffusion_model", "variant: t2v_a14b (WAN 2.2 T2V-A14B expert)",
                        "format: nvfp4, 20 of 20 block linears; the rest bf16"]
    assert out[4].startswith("size: 0.00 GB (") and out[4].endswith(" bytes of tensors)")
    import torch

    if torch.cuda.is_available():  # the card decides: sm100+ computes nvfp4
        assert out[5].startswith(("computes on this machine: native (", "computes on this machine: dequantized")), out
    else:
        assert out[5] == ("computes on this machine: dequantized per layer (the CPU has no nvfp4 compute: each layer "
                          "is dequantized to fp32 as it runs, the memory saving stays, the speed-up does not)")
    assert out[6] == ("loads with: WanFit Load Diffusion Model (TI2V-5B) / WanFit Load A14B Experts "
                      "(an A14B expert)")


def test_check_file_on_plain_files_prints_their_dtype(tmp_path, capsys):
    path = write_safetensors(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors", wan_dit(48, 48))
    assert main(["--check-file", str(path)]) == 0
    assert "variant: ti2v_5b (WAN 2.2 TI2V-5B)\nformat: float16\n" in capsys.readouterr().out
    assert main(["--check-file", str(write_safetensors(tmp_path / "vae.safetensors", wan_vae(True)))]) == 0
    assert "loads with: WanFit Load VAE" in capsys.readouterr().out


def test_check_file_refuses_metadata_that_disagrees_naming_the_layer(tmp_path, capsys):
    tensors, _ = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "int8_tensorwise")
    metadata = {"_quantization_metadata": json.dumps({"layers": {"blocks.9.ffn.0": {"format": "int8_tensorwise"}}})}
    path = write_safetensors(tmp_path / "bad.safetensors", tensors, metadata)
    assert main(["--check-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert "loads with" not in captured.out
    assert ("its quantization metadata disagrees with its tensors: layer blocks.9.ffn.0 is quantized as "
            "int8_tensorwise but the file has no blocks.9.ffn.0.weight.") in captured.err
    assert "Fix: quantize and save the model again" in captured.err


def test_check_file_refuses_the_wrong_kind_and_an_unreadable_header(tmp_path, capsys):
    assert main(["--check-file", str(write_safetensors(tmp_path / "sd.safetensors", sd15_unet()))]) == 2
    assert ("sd.safetensors looks like a Stable Diffusion 1.x/2.x/SDXL UNet checkpoint (input_blocks/middle_block/"
            "output_blocks keys), which no WanFit loader takes. Fix: pick a WAN 2.2 diffusion model") in \
        capsys.readouterr().err
    wan21 = write_safetensors(tmp_path / "wan2.1_i2v.safetensors", wan_dit(36, 16, img_emb=True))
    assert main(["--check-file", str(wan21)]) == 2
    assert "Not a WAN 2.2 model:" in capsys.readouterr().err
    junk = tmp_path / "page.safetensors"
    junk.write_bytes(b"<html>login</html>")
    assert main(["--check-file", str(junk)]) == 2
    assert "Not a safetensors file:" in capsys.readouterr().err


def test_check_file_names_comfyui_gguf_for_a_gguf(tmp_path, capsys):
    path = tmp_path / "wan2.2_t2v_high_noise_14B_Q4_K_M.gguf"
    path.write_bytes(gguf_header_bytes("wan", [("blocks.0.ffn.0.weight", (5120, 13824), 12),
                                               ("blocks.0.modulation", (5120, 6, 1), 0)]))
    assert main(["--check-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert "kind: GGUF model (general.architecture: wan)\nformat: GGUF v3, 2 tensors: F32 1, Q4_K 1" in captured.out
    assert ("loads with: ComfyUI-GGUF's Unet Loader (GGUF), which WanFit Switch To Low-Noise Expert also calls; "
            "WanFit's loaders refuse .gguf") in captured.out
    assert "Fix: load it with ComfyUI-GGUF's Unet Loader (GGUF)" in captured.err


@pytest.mark.parametrize("arch, named", [("llama", "'llama'"), ("flux", "'flux'"), (None, "missing")])
def test_check_file_refuses_a_gguf_of_another_architecture_naming_it(tmp_path, capsys, arch, named):
    path = tmp_path / "wan2.2_ti2v_5B-Q8_0.gguf"
    path.write_bytes(gguf_header_bytes(arch))
    assert main(["--check-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert (f"{path} is not a WAN GGUF: its general.architecture is {named}, not 'wan' (what ComfyUI-GGUF's "
            "tools/convert.py writes for a WAN 2.2 model). Fix: pick a WAN 2.2 GGUF") in captured.err
    assert "loads with" not in captured.out


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:40], "GGUF header is truncated: {path} ends inside its"),
    (lambda raw: raw[:4] + bytes([1, 0, 0, 0]) + raw[8:], "{path} is GGUF version 1; ComfyUI-GGUF reads versions 2 "
                                                          "and 3"),
    (lambda raw: raw[:8] + bytes([255] * 8) + raw[16:], "GGUF header is damaged: {path} declares 18446744073709551615 "
                                                        "tensors"),
    (lambda raw: b"<html>" + raw[6:], "Not a GGUF file: {path} starts with b'<htm', not b'GGUF'"),
])
def test_check_file_refuses_a_damaged_gguf_header_with_the_fix(tmp_path, capsys, damage, message):
    path = tmp_path / "wan2.2_ti2v_5B-Q8_0.gguf"
    path.write_bytes(damage(gguf_header_bytes("wan")))
    assert main(["--check-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "Fix: " in err


def test_check_file_refuses_a_gguf_the_shared_reader_cannot_trust(tmp_path, capsys):
    """The one GGUF reader (also the planner's): an unknown GGML type, rows its blocks cannot tile and a folder
    named .gguf are refused naming the file, with the fix; the refusal is a ModelFileError."""
    from wanfit.models import ModelFileError
    from wanfit.models.gguf_header import GGUFFileError

    assert issubclass(GGUFFileError, ModelFileError)
    unknown = tmp_path / "unknown.gguf"
    unknown.write_bytes(gguf_header_bytes("wan", [("blocks.0.ffn.0.weight", (128, 256), 99)]))
    untiled = tmp_path / "untiled.gguf"
    untiled.write_bytes(gguf_header_bytes("wan", [("blocks.0.ffn.0.weight", (100, 256), 12)]))
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    for path, message in ((unknown, f"{unknown} stores tensor blocks.0.ffn.0.weight as GGML type 99"),
                          (untiled, "as Q4_K, whose blocks of 256 values do not divide its rows"),
                          (folder, f"{folder} is not a regular file")):
        assert main(["--check-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Fix: download it again" in err, err
