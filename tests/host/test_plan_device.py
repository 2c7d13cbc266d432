"""WanFit Offload Plan plans for the device connected to its `device` input instead of probing its own."""


def plan_graph(device=None):
    graph = {"1": {"class_type": "WanFitOffloadPlan", "inputs": {
        "model_variant": "ti2v_5b", "width": 96, "height": 64, "frames": 5, "batch": 1, "cfg": True, "mode": "auto",
        "reserve_vram_gb": 0.0, "weight_dtype": "auto", "text_encoder_device": "auto"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    if device is not None:
        graph["3"] = {"class_type": "WanFitTestDevice", "inputs": device}
        graph["1"]["inputs"]["device"] = ["3", 0]
    return graph


def test_a_plan_fed_a_device_plans_for_that_device(client):
    probed = client.run(plan_graph(), timeout_s=60)["outputs"]["1"]["wanfit_plan"][0]
    entry = client.run(plan_graph({"name": "stand-in CPU with 3 TB", "ram_gb": 3072}), timeout_s=60)
    fed = entry["outputs"]["1"]["wanfit_plan"][0]
    assert fed["device_name"] == "stand-in CPU with 3 TB", fed
    assert fed["system_ram_bytes"] == 3072 << 30, fed
    assert "on stand-in CPU with 3 TB [CPU]" in entry["outputs"]["1"]["text"][0]
    assert probed["device_name"] != fed["device_name"] and probed["system_ram_bytes"] != 3072 << 30, probed


def test_device_info_feeds_the_plan(client):
    graph = plan_graph()
    graph["3"] = {"class_type": "WanFitDeviceInfo", "inputs": {}}
    graph["1"]["inputs"]["device"] = ["3", 1]
    entry = client.run(graph, timeout_s=60)
    plan = entry["outputs"]["1"]["wanfit_plan"][0]
    summary = entry["outputs"]["3"]["text"][0]
    assert plan["tier"] == "CPU" and f"({plan['device_name']})" in summary, (plan["device_name"], summary)
