"""/object_info answers for every WanFit node what it answered before the nodes moved to the V3 schema.

tests/host/object_info_v1.json holds the answer of the V1 nodes on each core, cut to what saved workflows
and the front end rely on (tests/host/node_contract.py). Two differences are expected and named here:
WanFit Offload Plan's optional `device` input (fed by WanFit Device Info), and the hidden inputs a V3
output node is given (prompt, extra_pnginfo), which no workflow stores.
"""

import json

import pytest

from tests.host.node_contract import FIXTURE, LISTED_FILES, core_version, wanfit_contracts

ADDED_INPUTS = {"WanFitOffloadPlan": {"optional": {"device": ["WANFIT_DEVICE", {}],
                                                  "model_file": ["COMBO", {"default": "none", "options": LISTED_FILES}]}}}


@pytest.fixture(scope="module")
def recorded(comfyui):
    version = core_version(comfyui)
    answers = json.loads(FIXTURE.read_text(encoding="utf-8"))
    if version not in answers:
        pytest.fail(f"{FIXTURE.name} holds no answer for ComfyUI {version}, only {sorted(answers)}")
    return answers[version]


def expected_now(before):
    """The V1 answer with the inputs added since."""
    expected = json.loads(json.dumps(before))
    for section, inputs in ADDED_INPUTS.get(before["name"], {}).items():
        expected["input"].setdefault(section, {}).update(inputs)
        expected["input_order"].setdefault(section, []).extend(inputs)
    return expected


def test_the_same_nodes_are_served(object_info, recorded):
    assert sorted(wanfit_contracts(object_info)) == sorted(recorded)


@pytest.mark.parametrize("field", ["input", "input_order", "output", "output_name", "output_is_list", "output_node",
                                   "category", "display_name", "python_module", "deprecated", "experimental"])
def test_each_node_answers_as_before(object_info, recorded, field):
    now = wanfit_contracts(object_info)
    changed = {name: {"before": expected_now(before)[field], "now": now[name][field]}
               for name, before in recorded.items() if name in now and now[name][field] != expected_now(before)[field]}
    assert not changed, f"{field} changed: {json.dumps(changed, indent=1)}"


def test_hidden_inputs_are_kept(object_info, recorded):
    now = wanfit_contracts(object_info)
    lost = {name: sorted(set(before["hidden"]) - set(now[name]["hidden"])) for name, before in recorded.items()
            if set(before["hidden"]) - set(now[name]["hidden"])}
    assert not lost, f"hidden inputs the nodes no longer get: {lost}"


def test_the_plan_takes_a_device_and_a_model_file_after_its_widgets(object_info):
    """Both optional and last, so a saved workflow's widget values and an API prompt without them keep working."""
    info = object_info["WanFitOffloadPlan"]
    assert info["input"]["optional"]["device"][0] == "WANFIT_DEVICE"
    assert info["input_order"]["optional"] == ["device", "model_file"]
    model_file = info["input"]["optional"]["model_file"]
    options = model_file[0] if isinstance(model_file[0], list) else model_file[1]["options"]
    assert options[0] == "none" and "wanfit_tiny_ti2v_5B.safetensors" in options
    assert object_info["WanFitDeviceInfo"]["output"][1] == "WANFIT_DEVICE"
