"""WanFit Offload Plan with a ComfyUI-native quantized format, through a real ComfyUI server (node and route)."""

import json
import urllib.parse

import pytest

from wanfit.remote.client import PromptFailedError


def plan_graph(**inputs):
    defaults = dict(model_variant="t2v_a14b", width=1280, height=720, frames=81, batch=1, cfg=True,
                    mode="PROSUMER_24GB", reserve_vram_gb=0.0, weight_dtype="nvfp4", text_encoder_device="auto")
    return {"1": {"class_type": "WanFitOffloadPlan", "inputs": {**defaults, **inputs}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}


def test_nvfp4_on_a_24_gb_ada_card_is_planned_dequantized_or_refused_by_an_old_core(client, comfyui):
    from wanfit.core import core_from_checkout

    core = core_from_checkout(comfyui)
    if core.version >= (0, 8, 2):
        entry = client.run(plan_graph(), timeout_s=60)
        plan = entry["outputs"]["1"]["wanfit_plan"][0]
        assert plan["weight_dtype"] == "nvfp4" and plan["weight_compute"] == "dequantized per layer"
        assert plan["resident_model_bytes"] == plan["model_weight_bytes"] == 8_379_455_168
        assert "Weights nvfp4 computed dequantized per layer on NVIDIA RTX 4090" in entry["outputs"]["1"]["text"][0]
    else:
        with pytest.raises(PromptFailedError) as failure:
            client.run(plan_graph(), timeout_s=60)
        assert f"weight_dtype='nvfp4' is invalid: expected a format ComfyUI {core.version_text} loads" in str(failure.value)
        assert "from 0.8.2 on" in str(failure.value)
        # read from the running core itself, not from a version table
        assert "(it has no comfy/quant_ops.py, so no quantized format)" in str(failure.value)


def test_route_plans_int8_where_the_core_loads_it(client, comfyui):
    from wanfit.core import core_from_checkout

    core = core_from_checkout(comfyui)
    query = urllib.parse.urlencode(dict(model_variant="ti2v_5b", mode="PROSUMER_32GB", weight_dtype="int8"))
    status, body = client._request("GET", "/wanfit/plan?" + query)
    answer = json.loads(body)
    if core.version >= (0, 28, 0):
        assert status == 200 and answer["weight_dtype"] == "int8" and answer["weight_compute"] == "native"
    else:
        assert status == 400 and "weight_dtype" in json.dumps(answer)


def test_the_node_plans_a_gguf_quantization_on_partial_loading(client):
    entry = client.run(plan_graph(weight_dtype="gguf_q4_k_m"), timeout_s=60)
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    assert plan["weight_dtype"] == "gguf_q4_k_m" and plan["memory_manager"] == "partial_loading"
    # the published T2V-A14B Q4_K_M expert's tensors (its file less its header)
    assert plan["model_weight_bytes"] == 9_650_022_528 and plan["weight_compute"] == "dequantized per layer"
    assert "GGUF: a GGUF Q4_K_M model: load it with ComfyUI-GGUF's Unet Loader (GGUF)" in entry["outputs"]["1"]["text"][0]
