"""WanFit Offload Plan node and GET /wanfit/plan through a real ComfyUI server."""

import json
import urllib.parse

import pytest

from wanfit.remote.client import PromptFailedError


def plan_graph(**inputs):
    defaults = dict(model_variant="ti2v_5b", width=1280, height=704, frames=121, batch=1, cfg=True, mode="auto",
                    reserve_vram_gb=0.0, weight_dtype="auto", text_encoder_device="auto")
    # the plan is not an output node: a core node shows its summary, as a graph's output would use it
    return {"1": {"class_type": "WanFitOffloadPlan", "inputs": {**defaults, **inputs}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}


def get_plan(client, **params):
    status, body = client._request("GET", "/wanfit/plan?" + urllib.parse.urlencode(params))
    return status, json.loads(body)


def test_plan_node_on_this_cpu_server_says_cpu_and_reaches_the_ui(client):
    entry = client.run(plan_graph(width=64, height=64, frames=5), timeout_s=60)
    summary = entry["outputs"]["1"]["text"][0]
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    assert summary.startswith("WanFit plan: TI2V-5B 64x64x5")
    assert "[CPU]" in summary and "CPU only" in summary
    assert plan["tier"] == "CPU" and plan["launch_args"] == ["--cpu"]
    assert any("no GPU is available" in reason for reason in plan["reasons"])


def test_plan_node_for_a_named_tier(client):
    entry = client.run(plan_graph(model_variant="t2v_a14b", width=832, height=480, frames=81,
                                  mode="PROSUMER_24GB"), timeout_s=60)
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    assert plan["tier"] == "PROSUMER_24GB"
    assert plan["predicted_peak_vram_bytes"] <= plan["total_vram_bytes"] - plan["reserve_vram_bytes"]
    assert "Predicted peak VRAM" in entry["outputs"]["1"]["text"][0]


def test_plan_node_refuses_what_cannot_fit_and_says_what_would(client):
    with pytest.raises(PromptFailedError) as failure:
        client.run(plan_graph(model_variant="t2v_a14b", width=1280, height=720, frames=161, mode="CONSUMER_8GB"))
    message = str(failure.value)
    assert "PlanDoesNotFitError" in message and "does not fit on" in message
    assert "What would fit: fewer frames: at most" in message


def test_plan_node_names_the_bad_field(client):
    with pytest.raises(PromptFailedError) as failure:
        client.run(plan_graph(width=64, height=64, frames=8))
    assert "frames=8 is invalid: expected 4n+1" in str(failure.value)


def test_http_route_returns_the_same_plan_as_the_node(client):
    # inputs no other test uses: ComfyUI reuses a cached node's result, and reports no output for it
    status, plan = get_plan(client, model_variant="t2v_a14b", width=832, height=480, frames=81, mode="PROSUMER_24GB",
                            reserve_vram_gb=1.5)
    assert status == 200, plan
    entry = client.run(plan_graph(model_variant="t2v_a14b", width=832, height=480, frames=81, mode="PROSUMER_24GB",
                                  reserve_vram_gb=1.5))
    summary = plan.pop("summary")  # the route adds the text the node shows
    assert plan == entry["outputs"]["1"]["wanfit_plan"][0]
    assert entry["outputs"]["1"]["text"][0].startswith(summary)


def test_http_route_on_this_machine_plans_for_the_cpu(client):
    status, plan = get_plan(client, width=64, height=64, frames=5)
    assert status == 200 and plan["tier"] == "CPU"


@pytest.mark.parametrize("params, field, text", [
    ({"frames": 8}, "frames", "expected 4n+1"),
    ({"width": 100}, "width", "expected a multiple of 32 for TI2V-5B"),
    ({"width": -64}, "width", "width=-64 is invalid"),
    ({"model_variant": "wan_1_3b"}, "model_variant", "one of ti2v_5b, t2v_a14b, i2v_a14b"),
    ({"frames": "many"}, "frames", "expected a whole number"),
    ({"mode": "PROSUMER_24GB", "reserve_vram_gb": 30}, "reserve_vram_gb", "reserve_vram_gb"),
    ({"colour": "red"}, "colour", "one of the parameters"),
    ({"reserve_vram_gb": "nan"}, "reserve_vram_gb", "reserve_vram_gb=nan is invalid: expected a finite number"),
    ({"reserve_vram_gb": "inf"}, "reserve_vram_gb", "reserve_vram_gb=inf is invalid: expected a finite number"),
    ({"reserve_vram_gb": "1e308"}, "reserve_vram_gb", "expected at most 256 GB"),
    ({"width": 10**300}, "width", "expected at most 8192"),
    ({"frames": 10**300}, "frames", "expected at most 1025"),
    ({"batch": 10**30}, "batch", "expected at most 64"),
])
def test_http_route_rejects_bad_input_naming_the_field(client, params, field, text):
    status, body = get_plan(client, **params)
    assert status == 400, body
    assert body["field"] == field
    assert text in body["error"]


def test_plan_node_refuses_a_reserve_that_is_not_a_number_naming_the_field(client):
    """NaN passes ComfyUI's own min/max check; it used to fail with "cannot convert float NaN to integer"."""
    with pytest.raises(PromptFailedError) as failure:
        client.run(plan_graph(width=64, height=64, frames=5, reserve_vram_gb=float("nan")), timeout_s=60)
    message = str(failure.value)
    assert "reserve_vram_gb=nan is invalid: expected a finite number of GB" in message
    assert "Fix:" in message and "cannot convert" not in message
    status, plan = get_plan(client, width=64, height=64, frames=5)
    assert status == 200, plan


def test_http_route_refusal_lists_suggestions(client):
    status, body = get_plan(client, model_variant="t2v_a14b", width=1280, height=720, frames=161, mode="CONSUMER_8GB")
    assert status == 422
    assert body["max_frames"] is not None and body["max_frames"] < 161
    assert any("fewer frames" in suggestion for suggestion in body["suggestions"])


def test_node_and_route_plan_for_the_running_core(client, comfyui):
    from wanfit.core import core_from_checkout

    core = core_from_checkout(comfyui)
    entry = client.run(plan_graph(model_variant="t2v_a14b", width=832, height=480, frames=81,
                                  mode="CONSUMER_8GB"), timeout_s=60)
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    status, routed = get_plan(client, model_variant="t2v_a14b", width=832, height=480, frames=81, mode="CONSUMER_8GB")
    routed.pop("summary")
    assert status == 200 and routed == plan
    assert plan["core_version"] == core.version_text and plan["core_source"] == "running process"
    # this server runs with --cpu, which keeps dynamic VRAM off even on a core that has it
    assert plan["memory_manager"] == "partial_loading"
    assert f"ComfyUI {core.version_text}: ComfyUI partial loading" in entry["outputs"]["1"]["text"][0]
    unknown = [flag for flag in plan["launch_args"] if flag.startswith("--") and flag not in core.flags]
    assert not unknown, f"the running ComfyUI {core.version_text} defines no {unknown}"
    if core.dynamic_vram:
        assert not {"--lowvram", "--novram", "--highvram", "--gpu-only"} & set(plan["launch_args"])


def test_cpu_plan_on_the_running_core_names_it(client, comfyui):
    from wanfit.core import core_from_checkout

    status, plan = get_plan(client, width=64, height=64, frames=5)
    assert status == 200
    assert plan["memory_manager"] == "cpu" and plan["core_version"] == core_from_checkout(comfyui).version_text


@pytest.mark.parametrize("params, status, says", [
    ({"width": "1008"}, 400, "width=1008 is invalid: expected a multiple of 32 for TI2V-5B"),
    ({"frames": "80"}, 400, "frames=80 is invalid: expected 4n+1"),
    ({"width": "nan"}, 400, "width"),
    ({"model_variant": "t2v_a14b", "frames": "961", "mode": "CONSUMER_8GB"}, 422, "does not fit"),
])
def test_the_editors_preview_route_answers_200_with_the_plans_own_answer_inside(client, params, status, says):
    """The editor asks /wanfit/plan/preview while widgets change: a browser logs every 4xx as a console
    error, so the outcome travels in the body; /wanfit/plan keeps its status codes for scripts."""
    status_code, body = client._request("GET", "/wanfit/plan/preview?" + urllib.parse.urlencode(params))
    preview = json.loads(body)
    assert status_code == 200
    assert preview["status"] == status and preview["fits"] is False and says in preview["error"]
    plain_status, plain = get_plan(client, **params)
    assert plain_status == status and plain["error"] == preview["error"]


def test_the_preview_of_a_plan_that_fits_carries_the_summary_the_node_shows(client):
    status_code, body = client._request("GET", "/wanfit/plan/preview?" + urllib.parse.urlencode(
        {"model_variant": "ti2v_5b", "width": 320, "height": 192, "frames": 9}))
    preview = json.loads(body)
    assert status_code == 200 and preview["status"] == 200 and preview["fits"] is True
    assert preview["summary"].startswith("WanFit plan: TI2V-5B 320x192x9")
    assert preview["predicted_peak_ram_bytes"] > 0


def test_the_plan_node_sizes_the_model_from_a_connected_file(client):
    """model_file names a diffusion model in the models folder: its header sizes the plan, and weight_dtype auto
    takes the file's format."""
    entry = client.run(plan_graph(width=96, height=64, frames=5, mode="CONSUMER_8GB",
                                  model_file="wanfit_tiny_ti2v_5B.safetensors"), timeout_s=60)
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    assert plan["model_file"].endswith("diffusion_models/wanfit_tiny_ti2v_5B.safetensors")
    assert plan["weight_dtype"] == "fp16" and plan["model_weight_bytes"] < 10 * 2**20
    assert plan["model_file_sizing"].startswith(f"sized from {plan['model_file']}: 0.0 GB, fp16 weights")
    assert f"sized from {plan['model_file']}: 0.0 GB, fp16 weights" in entry["outputs"]["1"]["text"][0]


def test_the_plan_node_refuses_a_model_file_of_another_variant_naming_the_fix(client):
    with pytest.raises(PromptFailedError) as failure:
        client.run(plan_graph(model_variant="t2v_a14b", width=96, height=64, frames=5, mode="CONSUMER_8GB",
                              model_file="wanfit_tiny_ti2v_5B.safetensors"))
    message = failure.value.execution_error["exception_message"]
    assert message.startswith("model_file='") and "ti2v_5B.safetensors' (" in message, message
    assert "Fix: it is a ti2v_5b file stored as fp16: plan model_variant ti2v_5b with weight_dtype fp16" in message


@pytest.mark.parametrize("name, says", [
    ("../../../../etc/passwd", "Model file missing: "),
    ("wanfit_damaged_header.safetensors", "wanfit_damaged_header.safetensors"),
])
def test_the_plan_node_refuses_a_bad_model_file_before_the_prompt_is_queued(client, server, name, says):
    from tests.host.test_loader_nodes import rejected_text

    damaged = server.scratch_models / "diffusion_models" / "wanfit_damaged_header.safetensors"
    damaged.write_bytes((10**9).to_bytes(8, "little") + b"{")  # a header length far past the file's end
    text = rejected_text(client, plan_graph(width=96, height=64, frames=5, model_file=name))
    assert says in text and "model_file" in text, text
