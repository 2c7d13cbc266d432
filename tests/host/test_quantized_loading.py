"""Files in ComfyUI's native quantized formats through WanFit's loaders on a real server: on a core whose
QUANT_ALGOS has the format they load as stored and the report says what stays quantized; a core without it
refuses them at /prompt naming the file, the format and the fix; metadata that disagrees with the tensors
is refused naming the layer. The quantized fixtures are made with the core's own QuantizedTensor."""

import pytest
import torch

from tests.comfy_import import import_comfy
from tests.host import graphs
from tests.host.latents import load_saved_latent
from tests.host.node_contract import core_version
from tests.host.test_loader_nodes import plan_node, rejected_text, with_save_latent
from tests.model_files import quantize, quantize_state_dict, wan_dit, write_safetensors

NVFP4_5B = "wanfit_tiny_ti2v_5B_nvfp4.safetensors"
INT8_HIGH = "wanfit_tiny_t2v_high_noise_14B_int8.safetensors"
INT8_LOW = "wanfit_tiny_t2v_low_noise_14B_int8.safetensors"
SOURCES = {NVFP4_5B: (graphs.TI2V_5B, "nvfp4"), INT8_HIGH: (graphs.T2V_HIGH, "int8_tensorwise"),
           INT8_LOW: (graphs.T2V_LOW, "int8_tensorwise")}


@pytest.fixture(scope="module")
def comfy(comfyui):
    import_comfy(comfyui)
    import comfy.sd

    return comfy


@pytest.fixture(scope="module")
def newest_core(comfyui):
    if core_version(comfyui) == "0.3.64":
        pytest.skip("ComfyUI 0.3.64 has no comfy/quant_ops.py: it loads no quantized format (refused below)")


@pytest.fixture(scope="module")
def quantized_files(newest_core, comfy, server, fixtures):
    """The tiny fixtures with their block linears quantized by the running core, in the server's models folder."""
    import safetensors.torch

    paths = {}
    for name, (source, fmt) in SOURCES.items():
        state_dict, metadata = quantize_state_dict(
            safetensors.torch.load_file(str(fixtures["diffusion_models"][source])), fmt)
        paths[name] = server.scratch_models / "diffusion_models" / name
        safetensors.torch.save_file(state_dict, str(paths[name]), metadata=metadata)
    return paths


def test_an_nvfp4_ti2v_5b_loads_as_stored_and_says_so(quantized_files, client, tmp_path):
    graph = with_save_latent(graphs.ti2v_5b_stock(), "7")
    graph["1"] = {"class_type": "WanFitLoadDiffusionModel", "inputs": {"model_name": NVFP4_5B, "weight_dtype": "auto"}}
    client.free()
    entry = client.run(graph)
    assert entry["outputs"]["1"]["text"][0] == (
        f"{NVFP4_5B}: WAN 2.2 TI2V-5B (nvfp4 (ComfyUI quantized)); loaded as stored: 20 of 20 block linears stay "
        "nvfp4; the rest fp16 (unquantized linears in ComfyUI's compute dtype); no plan connected")
    latent = load_saved_latent(client, entry, "90", tmp_path / "nvfp4")
    assert torch.isfinite(latent).all() and latent.std() > 0


def test_an_int8_a14b_pair_with_an_fp8_plan_loads_as_stored_and_says_why(quantized_files, client, tmp_path):
    graph = with_save_latent(graphs.a14b_t2v_stock(), "10")
    graph["50"] = plan_node("t2v_a14b")
    graph["1"] = {"class_type": "WanFitLoadA14BExperts", "inputs": {
        "high_noise_model": INT8_HIGH, "low_noise_model": INT8_LOW, "weight_dtype": "auto", "plan": ["50", 0]}}
    del graph["2"]
    graph["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 1], "shift": 8.0}}
    client.free()
    entry = client.run(graph)
    assert entry["outputs"]["1"]["text"][0] == (
        f"high-noise expert: {INT8_HIGH} (file name says high-noise); low-noise expert: {INT8_LOW} (file name says "
        "low-noise); plan wants fp8_scaled, but the file is int8_tensorwise (ComfyUI quantized): loaded as stored: "
        "20 of 20 block linears stay int8_tensorwise; the rest fp16 (unquantized linears in ComfyUI's compute dtype); "
        "WanFit does not convert a quantized file "
        "(for fp8_scaled, load the fp8_scaled file)")
    latent = load_saved_latent(client, entry, "90", tmp_path / "int8")
    assert torch.isfinite(latent).all() and latent.std() > 0


@pytest.mark.parametrize("name, plan_dtype", [(NVFP4_5B, None), (INT8_LOW, "fp8_scaled")])
def test_the_loaders_choice_keeps_block_linears_quantized_and_the_rest_as_stored(quantized_files, comfy, name,
                                                                                 plan_dtype):
    """What the node asks ComfyUI for, loaded here in-process: no weight changes dtype at load."""
    from comfy.quant_ops import QuantizedTensor
    from wanfit.models import detect_variant
    from wanfit.models.load_options import choose_weight_dtype, diffusion_model_options

    info = detect_variant(quantized_files[name])
    plan = {"weight_dtype": plan_dtype} if plan_dtype else None
    chosen, _ = choose_weight_dtype("auto", plan, info.weight_dtype, info.fp8_scaled, info.quantization)
    model = comfy.sd.load_diffusion_model(str(quantized_files[name]), model_options=diffusion_model_options(chosen))
    block = model.model.diffusion_model.blocks[0]
    fmt = SOURCES[name][1]
    for linear in (block.self_attn.q, block.cross_attn.o, block.ffn[0], block.ffn[2]):
        assert isinstance(linear.weight, QuantizedTensor) and linear.quant_format == fmt
    assert block.modulation.dtype == torch.float16 and block.norm3.weight.dtype == torch.float16
    compute_dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    assert model.model.diffusion_model.text_embedding[0].weight.dtype == compute_dtype  # as the report says


def header_only_nvfp4(server, name):
    """The header of a TI2V-5B whose block linears are nvfp4 (data zero): refused before anything loads."""
    tensors, metadata = quantize(wan_dit(48, 48, dtype="F16", all_linears=True), "nvfp4")
    return write_safetensors(server.scratch_models / "diffusion_models" / name, tensors, metadata)


def test_a_core_without_the_format_refuses_it_at_prompt(comfyui, server, client):
    if core_version(comfyui) != "0.3.64":
        pytest.skip("the newest core loads every format")
    path = header_only_nvfp4(server, "wanfit_tiny_ti2v_5B_nvfp4_header.safetensors")
    history_before = set(client.get_json("/history"))
    text = rejected_text(client, {
        "1": {"class_type": "WanFitLoadDiffusionModel", "inputs": {"model_name": path.name, "weight_dtype": "auto"}},
        "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}})
    assert (f"This ComfyUI cannot load {path}: it is stored in ComfyUI's quantized format (nvfp4, 20 of 20 block "
            "linears; the rest fp16), but this core has no nvfp4: it has no comfy/quant_ops.py, so no quantized "
            "format. ComfyUI would fail on it while loading. Fix: nvfp4 needs ComfyUI 0.8.2 or later: update "
            "ComfyUI, or use the fp8_scaled or fp16 file of this model") in text
    queue = client.get_json("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert set(client.get_json("/history")) == history_before


def test_an_expert_pair_in_a_format_the_core_lacks_is_refused_at_prompt(comfyui, server, client):
    if core_version(comfyui) != "0.3.64":
        pytest.skip("the newest core loads every format")
    tensors, metadata = quantize(wan_dit(16, 16, dtype="F16", all_linears=True), "int8_tensorwise")
    high = write_safetensors(server.scratch_models / "diffusion_models" / "q_high_noise_14B_int8.safetensors",
                             tensors, metadata)
    low = write_safetensors(server.scratch_models / "diffusion_models" / "q_low_noise_14B_int8.safetensors",
                            tensors, metadata)
    text = rejected_text(client, {
        "1": {"class_type": "WanFitLoadA14BExperts", "inputs": {"high_noise_model": high.name,
                                                                "low_noise_model": low.name, "weight_dtype": "auto"}},
        "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}}})
    assert f"This ComfyUI cannot load {high}" in text and "this core has no int8_tensorwise" in text
    assert "Fix: int8_tensorwise needs ComfyUI 0.28.0 or later" in text


def test_metadata_that_disagrees_with_the_tensors_is_refused_naming_the_layer(server, client):
    tensors, metadata = quantize(wan_dit(48, 48, dtype="F16", all_linears=True), "nvfp4")
    tensors["blocks.1.ffn.0.weight"] = ("F16", (256, 128))  # declared nvfp4, stored 16-bit
    path = write_safetensors(server.scratch_models / "diffusion_models" / "disagrees_nvfp4.safetensors",
                             tensors, metadata)
    text = rejected_text(client, {
        "1": {"class_type": "WanFitLoadDiffusionModel", "inputs": {"model_name": path.name, "weight_dtype": "auto"}},
        "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}})
    assert (f"{path}: its quantization metadata disagrees with its tensors: layer blocks.1.ffn.0 is declared nvfp4, "
            "but its weight is stored as F16, which cannot hold nvfp4 (it needs U8). ComfyUI would fail on it while "
            "loading. Fix: quantize and save the model again") in text


def test_a_mixed_pair_reports_how_each_expert_loaded(quantized_files, client):
    """fp16 high-noise expert, int8 low-noise one: each is loaded its own way, and the report says both."""
    graph = {"1": {"class_type": "WanFitLoadA14BExperts", "inputs": {
        "high_noise_model": graphs.T2V_HIGH, "low_noise_model": INT8_LOW, "weight_dtype": "auto"}},
        "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}}}
    text = client.run(graph)["outputs"]["1"]["text"][0]
    assert text.endswith(
        "high-noise: weight dtype as stored (float16); no plan connected; low-noise: loaded as stored: 20 of 20 "
        "block linears stay int8_tensorwise; the rest fp16 (unquantized linears in ComfyUI's compute dtype); "
        "no plan connected")
