"""WanFit loaders inside real /prompt graphs: same latents as the stock loaders, and clear refusals."""

import json
import os
import shutil
import struct
import time

import pytest
import torch

from tests.host import graphs
from tests.host.latents import load_saved_latent
from tests.model_files import sd15_unet, write_safetensors
from wanfit.remote.client import PromptFailedError, PromptRejectedError

FULL_LOAD_TIER = "DATACENTER_80GB"  # TI2V-5B and an A14B expert stay fully resident, 16-bit weights


def plan_node(model_variant, width=64, height=64, frames=5):
    return {"class_type": "WanFitOffloadPlan", "inputs": {
        "model_variant": model_variant, "width": width, "height": height, "frames": frames, "batch": 1, "cfg": True,
        "mode": FULL_LOAD_TIER, "reserve_vram_gb": 0.0, "weight_dtype": "auto", "text_encoder_device": "auto"}}


def with_save_latent(graph, sampler_id):
    """Replace decoding with SaveLatent of the sampler's output: the comparison is on latents."""
    graph = {key: value for key, value in graph.items()
             if value["class_type"] not in ("VAEDecode", "CreateVideo", "SaveVideo")}
    graph["90"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0], "filename_prefix": "latents/l"}}
    return graph


def latents_of(client, stock, wanfit, tmp_path):
    """The SaveLatent output of a stock graph and of its WanFit twin, each on a freshly emptied server."""
    client.free()
    expected = load_saved_latent(client, client.run(stock), "90", tmp_path / "stock")
    client.free()
    entry = client.run(wanfit)
    return expected, load_saved_latent(client, entry, "90", tmp_path / "wanfit"), entry


def test_ti2v_5b_loaders_with_full_load_plan_match_stock_loaders_bit_for_bit(client, tmp_path):
    stock = with_save_latent(graphs.ti2v_5b_stock(), "7")
    wanfit = dict(stock)
    wanfit["50"] = plan_node("ti2v_5b")
    wanfit["1"] = {"class_type": "WanFitLoadDiffusionModel", "inputs": {
        "model_name": graphs.TI2V_5B, "weight_dtype": "auto", "plan": ["50", 0]}}
    wanfit["2"] = {"class_type": "WanFitLoadVAE", "inputs": {"vae_name": graphs.VAE_22, "model": ["1", 0],
                                                             "plan": ["50", 0]}}
    expected, got, entry = latents_of(client, stock, wanfit, tmp_path)
    assert torch.equal(got, expected), f"max abs diff {(got - expected).abs().max()}"
    assert "WAN 2.2 TI2V-5B" in entry["outputs"]["1"]["text"][0]
    assert "checked for ti2v_5b" in entry["outputs"]["2"]["text"][0]


def test_a14b_expert_pair_node_matches_two_stock_loaders(client, tmp_path):
    stock = with_save_latent(graphs.a14b_t2v_stock(), "10")
    wanfit = dict(stock)
    wanfit["1"] = {"class_type": "WanFitLoadA14BExperts", "inputs": {
        "high_noise_model": graphs.T2V_HIGH, "low_noise_model": graphs.T2V_LOW, "weight_dtype": "default"}}
    del wanfit["2"]
    wanfit["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 1], "shift": 8.0}}
    expected, got, entry = latents_of(client, stock, wanfit, tmp_path)
    assert torch.equal(got, expected), f"max abs diff {(got - expected).abs().max()}"
    report = entry["outputs"]["1"]["text"][0]
    assert graphs.T2V_HIGH in report and graphs.T2V_LOW in report and "high" in report


def test_a14b_pair_follows_an_fp8_plan(client, tmp_path):
    """On a machine with 24 GB of RAM the plan keeps 14B experts in fp8; the loader casts the fp16 files."""
    graph = with_save_latent(graphs.a14b_t2v_stock(), "10")
    graph["50"] = plan_node("t2v_a14b")
    graph["1"] = {"class_type": "WanFitLoadA14BExperts", "inputs": {
        "high_noise_model": graphs.T2V_HIGH, "low_noise_model": graphs.T2V_LOW, "weight_dtype": "auto",
        "plan": ["50", 0]}}
    del graph["2"]
    graph["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 1], "shift": 8.0}}
    entry = client.run(graph)
    assert "weights are cast to fp8_e4m3fn at load" in entry["outputs"]["1"]["text"][0]
    latent = load_saved_latent(client, entry, "90", tmp_path / "fp8")
    assert torch.isfinite(latent).all() and latent.std() > 0


INFO_OUTPUT = {"WanFitLoadDiffusionModel": 1, "WanFitLoadA14BExperts": 2, "WanFitLoadTextEncoder": 1,
               "WanFitLoadVAE": 1}


def loader_graph(class_type, **inputs):
    """The loader and an output node showing its info (a graph needs an output to be validated)."""
    return {"1": {"class_type": class_type, "inputs": inputs},
            "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", INFO_OUTPUT[class_type]]}}}


def diffusion_loader(name):
    return loader_graph("WanFitLoadDiffusionModel", model_name=name, weight_dtype="auto")


def rejected_text(client, graph):
    with pytest.raises(PromptRejectedError) as rejection:
        client.queue_prompt(graph)
    return str(rejection.value)


def test_missing_file_names_the_folder_and_the_download(client):
    text = rejected_text(client, diffusion_loader("wan2.2_ti2v_5B_fp16.safetensors"))
    assert "Model file missing: wan2.2_ti2v_5B_fp16.safetensors is not in" in text
    assert "diffusion_models" in text and "huggingface.co" in text
    assert "python -m wanfit models --download wan2.2_ti2v_5B_fp16.safetensors" in text


def test_empty_file_is_refused(server, client):
    (server.scratch_models / "diffusion_models" / "empty.safetensors").write_bytes(b"")
    text = rejected_text(client, diffusion_loader("empty.safetensors"))
    assert "Model file is empty (0 bytes)" in text and "empty.safetensors" in text
    assert "download it again" in text


def test_truncated_file_is_refused(server, fixtures, client):
    source = fixtures["diffusion_models"][graphs.TI2V_5B]
    target = server.scratch_models / "diffusion_models" / "truncated_5B.safetensors"
    data = source.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    text = rejected_text(client, diffusion_loader("truncated_5B.safetensors"))
    assert "Model file is truncated" in text and "truncated_5B.safetensors" in text
    assert "interrupted download or copy" in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")
@pytest.mark.parametrize("name, make, says", [
    ("pipe.safetensors", os.mkfifo if hasattr(os, "mkfifo") else None, "is a FIFO (named pipe)"),
    ("zero.safetensors", lambda path: os.symlink("/dev/zero", path),
     "is a symbolic link to /dev/zero, which is a character device"),
])
def test_a_fifo_or_device_in_the_models_folder_is_named_for_what_it_is(server, client, name, make, says):
    """ComfyUI lists such an entry but its get_full_path skips it; it used to be reported as missing."""
    path = server.scratch_models / "diffusion_models" / name
    make(path)
    try:
        text = rejected_text(client, diffusion_loader(name))
    finally:
        path.unlink()
    assert f"Not a model file: {path} {says}" in text and "Fix:" in text
    assert "Model file missing" not in text
    assert client.get_json("/queue")["queue_running"] == []  # the server still answers


def write_header(path, raw_header, data_bytes):
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw_header)) + raw_header)
        handle.truncate(8 + len(raw_header) + data_bytes)
    return path


def test_overlapping_tensors_are_refused_at_prompt_naming_the_file(server, client):
    """safetensors would refuse it only at load, with "invalid offset for tensor" and no file name."""
    header = {"patch_embedding.weight": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
              "head.modulation": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]}}
    path = write_header(server.scratch_models / "diffusion_models" / "overlap.safetensors",
                        json.dumps(header).encode(), 12)
    try:
        text = rejected_text(client, diffusion_loader("overlap.safetensors"))
    finally:
        path.unlink()
    assert f"Damaged safetensors file: {path}" in text and "overlaps the tensor before it" in text


def test_a_huge_header_is_refused_at_prompt_without_stalling_the_server(server, client):
    """A 99 MB header froze the server for 32 s while it was parsed; the length prefix is enough."""
    path = write_header(server.scratch_models / "diffusion_models" / "huge_header.safetensors",
                        b'{"a":', 99_000_000)  # sparse; the prefix says 99 MB of header follow
    with open(path, "r+b") as handle:
        handle.write(struct.pack("<Q", 99_000_000))
    try:
        started = time.monotonic()
        text = rejected_text(client, diffusion_loader("huge_header.safetensors"))
        seconds = time.monotonic() - started
    finally:
        path.unlink()
    assert f"Safetensors header too large: {path}" in text and "Fix:" in text
    assert seconds < 5, f"/prompt took {seconds:.1f} s to refuse it"


def test_an_sd15_checkpoint_is_not_a_wan_model(server, client):
    write_safetensors(server.scratch_models / "diffusion_models" / "sd15.safetensors", sd15_unet())
    text = rejected_text(client, diffusion_loader("sd15.safetensors"))
    assert "Not a WAN 2.2 model" in text and "sd15.safetensors" in text
    assert "Stable Diffusion" in text


def test_t2v_expert_with_i2v_expert_is_refused(client):
    text = rejected_text(client, loader_graph("WanFitLoadA14BExperts", high_noise_model=graphs.T2V_HIGH,
                                              low_noise_model=graphs.I2V_LOW, weight_dtype="auto"))
    assert "The A14B experts are for different tasks" in text
    assert graphs.T2V_HIGH in text and graphs.I2V_LOW in text


def test_same_file_as_both_experts_is_refused(client):
    text = rejected_text(client, loader_graph("WanFitLoadA14BExperts", high_noise_model=graphs.T2V_HIGH,
                                              low_noise_model=graphs.T2V_HIGH, weight_dtype="auto"))
    assert "The same file was given as both A14B experts" in text


def vae_for_model_graph(model_name, vae_name):
    return {"1": {"class_type": "WanFitLoadDiffusionModel", "inputs": {"model_name": model_name,
                                                                     "weight_dtype": "auto"}},
            "2": {"class_type": "WanFitLoadVAE", "inputs": {"vae_name": vae_name, "model": ["1", 0]}},
            "99": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}}


@pytest.mark.parametrize("model_name, vae_name, needs", [
    (graphs.TI2V_5B, graphs.VAE_21, "needs the Wan 2.2 VAE"),
    (graphs.T2V_HIGH, graphs.VAE_22, "needs the Wan 2.1 VAE"),
])
def test_wrong_vae_for_the_model_is_refused(client, model_name, vae_name, needs):
    with pytest.raises(PromptFailedError) as failure:
        client.run(vae_for_model_graph(model_name, vae_name))
    text = str(failure.value)
    assert "Wrong VAE for this model" in text and vae_name in text and needs in text


def test_a_diffusion_model_is_not_a_text_encoder(server, fixtures, client):
    shutil.copy(fixtures["diffusion_models"][graphs.TI2V_5B], server.scratch_models / "text_encoders" / "dit.safetensors")
    text = rejected_text(client, loader_graph("WanFitLoadTextEncoder", clip_name="dit.safetensors", device="auto"))
    assert "Not the umt5-xxl text encoder" in text and "dit.safetensors" in text


def test_refused_files_are_refused_before_anything_runs(client):
    """Header checks run in /prompt validation: a refused graph is never queued, so nothing was loaded."""
    history_before = set(client.get_json("/history"))
    for _ in range(3):
        rejected_text(client, loader_graph("WanFitLoadA14BExperts", high_noise_model=graphs.T2V_HIGH,
                                           low_noise_model=graphs.I2V_LOW, weight_dtype="auto"))
    queue = client.get_json("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert set(client.get_json("/history")) == history_before
