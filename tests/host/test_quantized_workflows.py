"""The shipped workflows on ComfyUI-quantized models (one format at a time): a video from TI2V-5B per format,
and the A14B lightx2v workflow (LoRAs on quantized experts, the expert switch) giving the same frames with the
lean forward off and on. The tiny fixtures' block linears are quantized by the running core's own
QuantizedTensor.from_float; 0.3.64 has no quantized formats (tests/host/test_quantized_loading.py: refused)."""

import numpy as np
import pytest

from tests.fixtures.workflows import for_tiny_fixtures
from tests.host import graphs
from tests.host.node_contract import core_version
from tests.host.test_workflows import _png_frames, _save_decoded_frames_as_png
from tests.host.video import probe_video
from tests.model_files import quantize_state_dict

FORMATS = ("float8_e4m3fn", "nvfp4", "mxfp8", "int8_tensorwise")
SOURCES = {"ti2v_5b": graphs.TI2V_5B, "high": graphs.T2V_HIGH, "low": graphs.T2V_LOW}
# A14B pairs: each format once, a mixed pair as people bring them
PAIRS = (("nvfp4", "int8_tensorwise"), ("mxfp8", "float8_e4m3fn"))


def quantized_name(role, fmt):
    return f"wanfit_tiny_{role}_{fmt}.safetensors"


@pytest.fixture(scope="module")
def quantized_models(comfyui, server, fixtures):
    if core_version(comfyui) == "0.3.64":
        pytest.skip("ComfyUI 0.3.64 loads no quantized format (refused at /prompt: test_quantized_loading.py)")
    import safetensors.torch

    from tests.comfy_import import import_comfy

    import_comfy(comfyui)
    for role, source in SOURCES.items():
        state_dict = safetensors.torch.load_file(str(fixtures["diffusion_models"][source]))
        for fmt in FORMATS:
            quantized, metadata = quantize_state_dict(state_dict, fmt)
            path = server.scratch_models / "diffusion_models" / quantized_name(role, fmt)
            safetensors.torch.save_file(quantized, str(path), metadata=metadata)


def with_models(workflow, names):
    """The workflow with its diffusion-model inputs set: {input name: file}."""
    for node in workflow.values():
        for input_name, file_name in names.items():
            if input_name in node["inputs"] and node["class_type"].startswith("WanFit"):
                node["inputs"][input_name] = file_name
    return workflow


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_ti2v_5b_workflow_makes_a_video_from_a_quantized_model(quantized_models, client, server, tmp_path, fmt):
    workflow, spec = for_tiny_fixtures("ti2v_5b_t2v", server.work_dir / "input",
                                       filename_prefix=f"video/test_{fmt}")
    with_models(workflow, {"model_name": quantized_name("ti2v_5b", fmt)})
    client.free()
    entry = client.run(workflow, timeout_s=600)
    loader = next(node_id for node_id, node in workflow.items() if node["class_type"] == "WanFitLoadDiffusionModel")
    report = entry["outputs"][loader]["text"][0]
    assert f"block linears stay {fmt}" in report and "loaded as stored" in report, report
    (video_ref,) = client.output_files(entry, spec["video_node"])
    video = probe_video(client.download(video_ref, tmp_path))
    assert (video["frames"], video["width"], video["height"]) == (5, 64, 64), video


@pytest.mark.parametrize("high, low", PAIRS, ids=[f"{high}-{low}" for high, low in PAIRS])
def test_the_a14b_lightx2v_workflow_gives_the_same_frames_lean_or_not(quantized_models, client, server, tmp_path,
                                                                       high, low):
    frames = {}
    for mode in ("off", "on"):
        workflow, _ = for_tiny_fixtures("a14b_t2v_lightx2v", server.work_dir / "input",
                                        filename_prefix=f"video/test_{high}_{low}_{mode}")
        with_models(workflow, {"model_name": quantized_name("high", high),
                               "low_noise_model": quantized_name("low", low)})
        lean_nodes = [node_id for node_id, node in workflow.items() if node["class_type"] == "WanFitLeanForward"]
        assert len(lean_nodes) == 2, lean_nodes
        for node_id in lean_nodes:
            workflow[node_id]["inputs"]["mode"] = mode
        png = _save_decoded_frames_as_png(workflow, f"test_{high}_{low}_{mode}")
        client.free()
        entry = client.run(workflow, timeout_s=600)
        reports = [entry["outputs"][node_id]["text"][0] for node_id in lean_nodes]
        for report in reports:
            assert report.startswith("Lean forward on" if mode == "on" else "Lean forward off"), report
        frames[mode] = np.stack(_png_frames(client, entry, png, tmp_path / mode)).astype(np.int16)
    client.free()
    assert frames["off"].shape == (5, 64, 64, 3) and frames["off"].std() > 1, frames["off"].shape
    largest = int(np.abs(frames["on"] - frames["off"]).max())
    assert largest == 0, f"{high}/{low}: lean vs stock frames differ by up to {largest}/255"
