"""The shipped workflows against the live server: valid, UI twin of API, and running end to end."""

import copy
import json
from pathlib import Path

import pytest

from tests.host.video import probe_video
from wanfit.workflows import (DYNAMIC_COMBO, load_api_workflow, substitute_files, ui_to_api, validate_api_workflow,
                              workflow_names)
from tests.fixtures.workflows import FIXTURE_FOR, for_tiny_fixtures
from workflows.build import TEMPLATE_NAMES, UMT5, build

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = workflow_names()
GENERATING = [name for name in NAMES if name != "decode_saved_latent"]

MODEL_FILE_INPUTS = {("WanFitLoadDiffusionModel", "model_name"), ("WanFitLoadA14BExperts", "high_noise_model"),
                     ("WanFitSwitchToLowNoiseExpert", "low_noise_model"),
                     ("WanFitLoadA14BExperts", "low_noise_model"), ("WanFitLoadTextEncoder", "clip_name"),
                     ("WanFitLoadVAE", "vae_name"), ("LoraLoaderModelOnly", "lora_name"), ("LoadImage", "image"),
                     ("WanFitLoadSavedLatent", "latent")}


def official_file(class_type, input_name, value):
    if (class_type, input_name) == ("WanFitLoadSavedLatent", "latent"):
        return value.startswith("latents/wanfit_") and value.endswith(".latent")
    return (class_type, input_name) in MODEL_FILE_INPUTS and (value in FIXTURE_FOR or value in (UMT5, "example.png"))


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_is_valid_for_the_live_server(object_info, name):
    problems = validate_api_workflow(load_api_workflow(name), object_info, file_inputs_ok=official_file)
    assert problems == [], "\n".join(problems)


def save_video_nests_codec(object_info):
    """0.33's SaveVideo is a V3 node whose format is a dynamic combo with the codec inside it."""
    return object_info["SaveVideo"]["input"]["required"]["format"][0] == DYNAMIC_COMBO


def as_this_core_names_it(api_workflow, object_info):
    """The same choices under this core's input names (0.33: SaveVideo's codec is 'format.codec')."""
    adapted = copy.deepcopy(api_workflow)
    if save_video_nests_codec(object_info):
        for node in adapted.values():
            if node["class_type"] == "SaveVideo" and "codec" in node["inputs"]:
                node["inputs"]["format.codec"] = node["inputs"].pop("codec")
    return adapted


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_converts_to_its_api_twin(object_info, name):
    ui = json.loads((REPO_ROOT / "workflows/ui" / f"{name}.json").read_text())
    assert ui_to_api(ui, object_info) == as_this_core_names_it(load_api_workflow(name), object_info)
    example = json.loads((REPO_ROOT / "example_workflows" / f"{TEMPLATE_NAMES[name]}.json").read_text())
    assert example == ui
    assert (REPO_ROOT / "example_workflows" / f"{TEMPLATE_NAMES[name]}.jpg").is_file(), "template browser thumbnail"
    loaders = [node for node in ui["nodes"] if node["type"].startswith("WanFitLoad") and node["type"] != "WanFitLoadSavedLatent"]
    assert loaders and all(node["properties"]["models"] for node in loaders)
    assert all(node["properties"]["cnr_id"] for node in ui["nodes"] if node["type"] != "MarkdownNote")
    note = next(node for node in ui["nodes"] if node["type"] == "MarkdownNote")
    assert "huggingface.co" in note["widgets_values"][0]


def core_nodes_left_out(workflow):
    """A UI workflow without ComfyUI's own nodes, whose inputs and outputs grow from core to core
    (0.33: SaveVideo's format/codec dynamic combo and video output, CreateVideo's extra widget,
    SaveLatent's output). API files and WanFit's own nodes must match exactly."""
    if "nodes" in workflow:
        workflow["nodes"] = [node for node in workflow["nodes"] if node["type"].startswith("WanFit")]
    return workflow


def json_differences(committed, built, path=""):
    """Where two JSON values differ, as 'path: committed != built' lines."""
    if isinstance(committed, dict) and isinstance(built, dict):
        return [line for key in sorted(set(committed) | set(built), key=str)
                for line in json_differences(committed.get(key), built.get(key), f"{path}/{key}")]
    if isinstance(committed, list) and isinstance(built, list) and len(committed) == len(built):
        return [line for index, (a, b) in enumerate(zip(committed, built))
                for line in json_differences(a, b, f"{path}[{index}]")]
    return [] if committed == built else [f"{path}: {committed!r} != {built!r}"]


def test_committed_workflows_are_what_the_builder_makes(object_info, tmp_path):
    """The files are built against the oldest supported core (0.3.64), whose layout every newer
    front end loads; on a newer core the build may differ only in ComfyUI's own nodes."""
    build(object_info, out_root=tmp_path)
    nested = save_video_nests_codec(object_info)
    compared = 0
    for folder in ("workflows/api", "workflows/ui", "example_workflows"):
        for built in sorted((tmp_path / folder).glob("*.json")):  # thumbnails are images: not compared
            committed = REPO_ROOT / folder / built.name
            assert committed.exists(), f"{folder}/{built.name} is not committed: run workflows/build_with_test_server.py"
            if not nested:
                assert committed.read_text() == built.read_text(), (
                    f"{folder}/{built.name} is out of date: run workflows/build_with_test_server.py")
            else:
                differences = json_differences(core_nodes_left_out(json.loads(committed.read_text())),
                                               core_nodes_left_out(json.loads(built.read_text())))
                assert differences == [], f"{folder}/{built.name} differs beyond ComfyUI's own nodes: {differences[:10]}"
            compared += 1
    assert compared == 3 * len(NAMES) + 1, compared  # + workflows/api/inputs.json


@pytest.mark.parametrize("name", GENERATING)
def test_api_workflow_runs_end_to_end_on_tiny_models(client, server, tmp_path, name):
    workflow, spec = for_tiny_fixtures(name, server.work_dir / "input")
    entry = client.run(workflow, timeout_s=600)
    videos = client.output_files(entry, spec["video_node"])
    assert len(videos) == 1 and videos[0]["filename"].endswith(".mp4")
    video = probe_video(client.download(videos[0], tmp_path))
    assert (video["frames"], video["width"], video["height"]) == (5, 64, 64)
    assert video["fps"] == pytest.approx(spec["fps"])
    latents = client.output_files(entry, spec["latent_node"])
    assert len(latents) == 1 and latents[0]["filename"].endswith(".latent"), "the latent is saved before decoding"


@pytest.mark.parametrize("name", GENERATING)
def test_a_shipped_workflow_with_a_missing_model_is_refused_whole_with_the_loaders_message(client, name):
    """The official files are not on this server: /prompt must refuse the graph (so the editor shows the
    loader's message), never run the plan alone around the broken loader and report success."""
    from wanfit.remote.client import PromptRejectedError

    history_before = set(client.get_json("/history"))
    with pytest.raises(PromptRejectedError) as rejection:
        client.queue_prompt(load_api_workflow(name))
    assert "Model file missing" in str(rejection.value)
    assert "python -m wanfit models --download" in str(rejection.value)
    assert client.get_json("/queue")["queue_pending"] == []
    assert set(client.get_json("/history")) == history_before, "nothing of the graph ran"


def _save_decoded_frames_as_png(workflow, prefix):
    """Add ComfyUI's SaveImage (lossless PNG) on the WanFit decode's IMAGE output; returns its node id."""
    decode_node = next(node_id for node_id, node in workflow.items() if node["class_type"] == "WanFitVAEDecode")
    workflow["990"] = {"class_type": "SaveImage", "inputs": {"images": [decode_node, 0], "filename_prefix": prefix}}
    return "990"


def _png_frames(client, entry, node_id, destination):
    import numpy as np
    from PIL import Image

    destination.mkdir(parents=True, exist_ok=True)
    return [np.asarray(Image.open(client.download(ref, destination))) for ref in client.output_files(entry, node_id)]


def test_a_saved_latent_decodes_again_to_the_same_video(client, server, tmp_path):
    """The shipped workflows save the latent before decoding; decode_saved_latent redoes only the decode.

    The decoded frames are compared losslessly (PNG): the mp4 encoder is not bit-reproducible run to run
    (measured: identical IMAGE frames, mp4 frames differing by up to 67/255 on the noise-like output of the
    random-weight fixtures), so the videos are compared on frame count, size and rate only."""
    workflow, spec = for_tiny_fixtures("ti2v_5b_t2v", server.work_dir / "input")
    for node_id, input_name in spec["fields"]["seed"]:
        workflow[node_id]["inputs"][input_name] = 777
    first_png = _save_decoded_frames_as_png(workflow, "test_redecode_first")
    entry = client.run(workflow, timeout_s=600)
    first = probe_video(client.download(client.output_files(entry, spec["video_node"])[0], tmp_path / "first"))
    first_frames = _png_frames(client, entry, first_png, tmp_path / "first_png")
    latent = client.output_files(entry, spec["latent_node"])[0]
    latent_name = f"{latent['subfolder']}/{latent['filename']}" if latent["subfolder"] else latent["filename"]

    decode = substitute_files(load_api_workflow("decode_saved_latent"), FIXTURE_FOR)
    decode["10"]["inputs"]["latent"] = latent_name
    decode["71"]["inputs"]["filename_prefix"] = "video/test_redecode"
    again_png = _save_decoded_frames_as_png(decode, "test_redecode_again")
    entry = client.run(decode, timeout_s=600)
    again = probe_video(client.download(client.output_files(entry, "71")[0], tmp_path / "again"))
    again_frames = _png_frames(client, entry, again_png, tmp_path / "again_png")
    assert (again["frames"], again["width"], again["height"], again["fps"]) == (
        first["frames"], first["width"], first["height"], first["fps"])
    assert len(first_frames) == len(again_frames) == first["frames"] == 5
    for n, (frame_first, frame_again) in enumerate(zip(first_frames, again_frames)):
        assert (frame_first == frame_again).all(), f"re-decoded frame {n} differs from the first decode"


def test_the_lean_forward_gives_the_same_frames_as_the_cores_own_blocks(client, server, tmp_path):
    """Issue 16's acceptance on a shipped workflow: its WanFit Lean Forward nodes (one per A14B expert;
    this one also carries the lightx2v LoRAs and the I2V conditioning) set to off, then on; the decoded
    frames, saved losslessly, differ by at most 1/255."""
    import numpy as np

    name = "a14b_i2v_lightx2v"
    frames = {}
    for mode in ("off", "on"):
        workflow, spec = for_tiny_fixtures(name, server.work_dir / "input", filename_prefix=f"video/test_lean_{mode}")
        lean_nodes = [node_id for node_id, node in workflow.items() if node["class_type"] == "WanFitLeanForward"]
        assert len(lean_nodes) == 2, f"{name}: expected a lean forward node per expert, found {lean_nodes}"
        for node_id in lean_nodes:
            workflow[node_id]["inputs"]["mode"] = mode
        png = _save_decoded_frames_as_png(workflow, f"test_lean_{mode}")
        client.free()
        entry = client.run(workflow, timeout_s=600)
        for node_id in lean_nodes:
            report = entry["outputs"][node_id]["text"][0]
            expected = "Lean forward on 2 blocks" if mode == "on" else "Lean forward off"
            assert report.startswith(expected), f"node {node_id} ({mode}): {report}"
        frames[mode] = np.stack(_png_frames(client, entry, png, tmp_path / mode)).astype(np.int16)
    client.free()
    assert frames["off"].shape == frames["on"].shape == (5, 64, 64, 3), (frames["off"].shape, frames["on"].shape)
    assert frames["off"].std() > 1, "flat frames: the comparison would prove nothing"
    largest = int(np.abs(frames["on"] - frames["off"]).max())
    print(f"{name}: lean vs stock, largest decoded-frame difference {largest}/255")
    assert largest <= 1, f"lean vs stock frames differ by up to {largest}/255, expected <= 1/255"


def test_a14b_hand_over_releases_the_high_noise_expert_and_the_next_run_reloads_it(client, server, tmp_path):
    """On this 24 GB machine the plan drops the high-noise expert before the low-noise one loads."""
    for run, seed in enumerate((11, 12)):
        workflow, spec = for_tiny_fixtures("a14b_t2v", server.work_dir / "input")
        for node_id, input_name in spec["fields"]["seed"]:
            workflow[node_id]["inputs"][input_name] = seed
        entry = client.run(workflow, timeout_s=600)
        if run == 0:  # the second run reuses the plan (same inputs): a core may report no output for it
            assert "Drop: text encoder after encode, high-noise expert before low" in entry["outputs"]["10"]["text"][0]
        hand_over = entry["outputs"]["44"]["text"][0]
        assert "released the high-noise expert" in hand_over, hand_over
        assert "loaded wanfit_tiny_t2v_low_noise_14B.safetensors" in hand_over
        video = probe_video(client.download(client.output_files(entry, spec["video_node"])[0], tmp_path / str(run)))
        assert video["frames"] == 5
