"""WAN 2.2 GGUF models loaded by ComfyUI-GGUF's Unet Loader (GGUF), through WanFit's nodes, on a real server.

ComfyUI-GGUF (a checkout at $WANFIT_COMFYUI_GGUF, default ~/ComfyUI-GGUF; tests/run.sh stops with directions
when it is missing) is linked into this module's own server, next to WanFit. Its GGMLOps dequantize each
weight per call; WanFit Sage Attention, Lean Forward, the expert switch step, the expert release and the
tiled VAE decode must take such a model as they take a safetensors one, and lean on must equal lean off
exactly. The GGUF fixtures are the host tier's tiny models written as ComfyUI-GGUF's tools write them
(tests/gguf_files.py)."""

import json
import os
from pathlib import Path
import re

import pytest
import torch

from tests.fixtures.generate import fixture_dir
from tests.gguf_files import ensure_gguf_fixtures, gguf_name, gguf_tensor_types, write_gguf
from tests.host import graphs
from tests.host.latents import load_saved_latent
from tests.host.server import ComfyServer
from tests.host.test_loader_nodes import rejected_text
from tests.host.video import probe_video
from wanfit.remote.client import ComfyClient, PromptFailedError

REPO_ROOT = Path(__file__).resolve().parents[2]
GGUF_LINK_NAME = "ComfyUI-GGUF"
LATENT_NODE = "90"


def comfyui_gguf_checkout():
    return Path(os.environ.get("WANFIT_COMFYUI_GGUF") or Path.home() / "ComfyUI-GGUF").expanduser()


class ServerWithComfyUIGGUF(ComfyServer):
    """The test server with ComfyUI-GGUF linked in beside WanFit, and the GGUF fixtures in its models folder."""

    def __init__(self, *args, comfyui_gguf, gguf_files, **kwargs):
        super().__init__(*args, **kwargs)
        self.comfyui_gguf = comfyui_gguf
        self.gguf_files = gguf_files

    def _prepare(self):
        config = super()._prepare()
        link = self.work_dir / "custom_nodes" / GGUF_LINK_NAME
        if not link.exists():
            link.symlink_to(self.comfyui_gguf, target_is_directory=True)
        for path in self.gguf_files:
            target = self.scratch_models / "diffusion_models" / path.name
            if not target.exists():
                target.symlink_to(path)
        return config


@pytest.fixture(scope="module")
def comfyui_gguf():
    path = comfyui_gguf_checkout()
    if not (path / "nodes.py").is_file() or not (path / "loader.py").is_file():
        pytest.fail(f"No ComfyUI-GGUF checkout at {path}. Fix: git clone https://github.com/city96/ComfyUI-GGUF "
                    f"{path} (or set WANFIT_COMFYUI_GGUF to a checkout of it); tests/run.sh says the same.")
    return path


@pytest.fixture(scope="module")
def gguf_fixtures(fixtures):
    return ensure_gguf_fixtures(fixtures)


@pytest.fixture(scope="module")
def gguf_server(comfyui, comfyui_gguf, gguf_fixtures, tmp_path_factory):
    server = ServerWithComfyUIGGUF(comfyui, fixture_dir(), tmp_path_factory.mktemp("comfyui_gguf"),
                                   comfyui_gguf=comfyui_gguf, gguf_files=list(gguf_fixtures.values()))
    server.start()
    if server.custom_node_import_seconds(GGUF_LINK_NAME) is None:
        server.stop()
        pytest.fail(f"ComfyUI did not import ComfyUI-GGUF from {comfyui_gguf}:\n{server.log_tail()}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gguf_client(gguf_server):
    return ComfyClient(gguf_server.url, request_timeout_s=120)


def ti2v_graph(unet_name, lean_mode, prefix, nan_check_calls=8):
    """The TI2V-5B graph of the shipped workflow, its loader swapped for UnetLoaderGGUF (another nan_check_calls:
    Sage Attention and what follows it run again rather than come from ComfyUI's cache, so they report)."""
    graph = graphs.ti2v_5b_stock(prefix=prefix)
    graph["1"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": unet_name}}
    graph["20"] = {"class_type": "WanFitSageAttention", "inputs": {
        "model": ["1", 0], "mode": "auto", "keep_cross_attention_on_sdpa": False, "nan_check_calls": nan_check_calls}}
    graph["21"] = {"class_type": "WanFitLeanForward", "inputs": {"model": ["20", 0], "mode": lean_mode,
                                                                 "chunk_tokens": 0}}
    graph["5"]["inputs"]["model"] = ["21", 0]
    graph["41"] = {"class_type": "WanFitAttentionReport", "inputs": {
        "model": ["5", 0], "samples": ["7", 0], "reset_counts": True}}
    graph[LATENT_NODE] = {"class_type": "SaveLatent", "inputs": {"samples": ["41", 0],
                                                                 "filename_prefix": f"latents/{Path(prefix).name}"}}
    graph["8"] = {"class_type": "WanFitVAEDecode", "inputs": {"samples": ["41", 0], "vae": ["2", 0], "budget_mb": 0,
                                                             "overlap": 0, "mode": "auto"}}
    return graph


def ui_text(entry, node_id):
    return entry["outputs"][node_id]["text"][0]


def run_to_video(client, graph, tmp_path, name):
    entry = client.run(graph, timeout_s=600)
    videos = client.output_files(entry, "10")
    assert len(videos) == 1 and videos[0]["filename"].endswith(".mp4")
    video = probe_video(client.download(videos[0], tmp_path))
    latent = load_saved_latent(client, entry, LATENT_NODE, tmp_path / name)
    return entry, video, latent


@pytest.mark.parametrize("quant_type", ["Q8_0", "F16"])
def test_the_gguf_fixtures_are_laid_out_as_comfyui_gguf_writes_wan(gguf_fixtures, quant_type):
    """1-D tensors, small ones and .modulation in F32, the 5-D patch embedding in F32 right after its bias
    (tools/fix_5d_tensors.py), every other 2-D weight in the file's type; general.architecture 'wan'."""
    from wanfit.models.gguf_header import read_gguf_file

    path = gguf_fixtures[graphs.TI2V_5B, quant_type]
    types = gguf_tensor_types(path)
    names = list(types)
    assert names.index("patch_embedding.weight") == names.index("patch_embedding.bias") + 1
    assert types["patch_embedding.weight"] == types["blocks.0.modulation"] == types["head.modulation"] == "F32"
    assert types["blocks.0.norm3.weight"] == types["blocks.1.self_attn.q.bias"] == "F32"
    for name in ("blocks.0.self_attn.q.weight", "blocks.1.cross_attn.o.weight", "blocks.0.ffn.0.weight",
                 "text_embedding.0.weight", "head.head.weight"):
        assert types[name] == quant_type, name
    header = read_gguf_file(path)
    assert header.architecture == "wan" and header.type_counts() == {"F32": 43, quant_type: 26}


def without_video(graph):
    """The graph up to the saved latent (the decode and the video left out)."""
    for node_id in ("8", "9", "10"):
        del graph[node_id]
    return graph


@pytest.mark.parametrize("quant_type", ["Q8_0", "F16"])
def test_a_ti2v_5b_gguf_runs_through_wanfit_to_a_video_and_lean_equals_off(gguf_client, tmp_path, quant_type):
    name = gguf_name(graphs.TI2V_5B, quant_type)
    latents = {}
    for nan_check_calls, mode in enumerate(("off", "on", "auto"), start=8):
        gguf_client.free()
        graph = ti2v_graph(name, mode, f"video/gguf_{quant_type}_{mode}", nan_check_calls)
        if mode == "auto":
            entry = gguf_client.run(without_video(graph), timeout_s=600)
            latents[mode] = load_saved_latent(gguf_client, entry, LATENT_NODE, tmp_path / mode)
        else:
            entry, video, latents[mode] = run_to_video(gguf_client, graph, tmp_path, mode)
            assert (video["frames"], video["width"], video["height"]) == (5, 64, 64)
        attention, lean, after = ui_text(entry, "20"), ui_text(entry, "21"), ui_text(entry, "41")
        assert "backend: SDPA fallback" in attention  # the CPU: no sage kernel
        # the sampler's attention calls went through WanFit's override (the first lean run adds its check's)
        calls = re.search(r"calls: kernel 0, fallback (\d+) \(self-attention (\d+), cross-attention (\d+)\)", after)
        assert calls and int(calls[1]) >= 8 and calls[2] == calls[3], after
        if mode == "off":
            assert lean.startswith("Lean forward off") and "lean forward:" not in after
        else:
            assert "lean forward: 4 block calls lean, 0 on ComfyUI's own blocks" in after
            # the check quoted after sampling is the check of this model's layers (their GGUF tensor type)
            assert f"WanModel, float32 compute on {quant_type} weights, cpu" in after
    assert latents["off"].shape == (1, 48, 2, 4, 4)
    assert torch.isfinite(latents["off"]).all() and latents["off"].std() > 0
    assert torch.equal(latents["on"], latents["off"]) and torch.equal(latents["auto"], latents["off"])


def test_the_lean_forward_report_quotes_the_check_of_the_model_it_ran_on(gguf_client):
    """Q8_0 and F16 in one server, twice: a Lean Forward report quotes no check (the first time) or the check of
    its own model's layers, never the other model's. (Before the check key held the layers' formats, the F16
    report quoted the Q8_0 check.)"""
    reports = {}
    for chunk_tokens in (0, 4):  # another chunk size (of the 8 tokens): the node runs again, not from cache
        for quant_type in ("Q8_0", "F16"):
            gguf_client.free()
            graph = without_video(ti2v_graph(gguf_name(graphs.TI2V_5B, quant_type), "on", "video/unused"))
            graph["21"]["inputs"]["chunk_tokens"] = chunk_tokens
            graph[LATENT_NODE]["inputs"]["filename_prefix"] = f"latents/report_{quant_type}_{chunk_tokens}"
            reports[quant_type, chunk_tokens] = ui_text(gguf_client.run(graph, timeout_s=600), "21")
    for quant_type, other in (("Q8_0", "F16"), ("F16", "Q8_0")):
        assert f"compute on {other} weights" not in reports[quant_type, 0] + reports[quant_type, 4]
        assert f"WanModel, float32 compute on {quant_type} weights, cpu" in reports[quant_type, 4]


def a14b_graph(high_model, low_model, prefix, release=None):
    """The A14B T2V graph of the shipped workflow on GGUF experts from UnetLoaderGGUF: Sage Attention and Lean
    Forward on each expert, WanFit's expert switch step, and (release: the low-noise file) the expert switch
    node releasing the GGUF high-noise expert and loading the low-noise one."""
    graph = graphs.a14b_t2v_stock(prefix=prefix)
    graph["1"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": high_model}}
    graph["2"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": low_model}}
    low_source = ["2", 0]
    if release:
        graph["44"] = {"class_type": "WanFitSwitchToLowNoiseExpert", "inputs": {
            "high_noise_model": ["1", 0], "samples": ["9", 0], "low_noise_model": release, "weight_dtype": "auto",
            "release_high_noise": "always"}}
        graph["10"]["inputs"]["latent_image"] = ["44", 1]
        low_source = ["44", 0]
    for source, sage, lean, sampling in ((["1", 0], "14", "24", "6"), (low_source, "15", "25", "7")):
        graph[sage] = {"class_type": "WanFitSageAttention", "inputs": {
            "model": source, "mode": "auto", "keep_cross_attention_on_sdpa": False, "nan_check_calls": 8}}
        graph[lean] = {"class_type": "WanFitLeanForward", "inputs": {"model": [sage, 0], "mode": "on",
                                                                     "chunk_tokens": 0}}
        graph[sampling]["inputs"]["model"] = [lean, 0]
    graph["35"] = {"class_type": "WanFitExpertSwitchStep", "inputs": {"model": ["6", 0], "steps": 2,
                                                                      "boundary": 0.875, "scheduler": "simple"}}
    graph["9"]["inputs"]["end_at_step"] = ["35", 0]
    graph["10"]["inputs"]["start_at_step"] = ["35", 0]
    graph["43"] = {"class_type": "WanFitAttentionReport", "inputs": {"model": ["7", 0], "samples": ["10", 0],
                                                                     "reset_counts": True}}
    graph[LATENT_NODE] = {"class_type": "SaveLatent", "inputs": {"samples": ["43", 0],
                                                                 "filename_prefix": f"latents/{Path(prefix).name}"}}
    graph["11"] = {"class_type": "WanFitVAEDecode", "inputs": {"samples": ["43", 0], "vae": ["3", 0],
                                                              "budget_mb": 0, "overlap": 0, "mode": "auto"}}
    return graph


def run_a14b(client, graph, tmp_path, name):
    entry = client.run(graph, timeout_s=600)
    videos = client.output_files(entry, "13")
    assert len(videos) == 1 and videos[0]["filename"].endswith(".mp4")
    video = probe_video(client.download(videos[0], tmp_path))
    assert (video["frames"], video["width"], video["height"]) == (5, 64, 64)
    latent = load_saved_latent(client, entry, LATENT_NODE, tmp_path / name)
    assert latent.shape == (1, 16, 2, 8, 8) and torch.isfinite(latent).all() and latent.std() > 0
    return entry


def test_an_a14b_pair_of_gguf_experts_runs_through_the_expert_switch_step_to_a_video(gguf_client, tmp_path):
    gguf_client.free()
    entry = run_a14b(gguf_client, a14b_graph(gguf_name(graphs.T2V_HIGH, "Q8_0"), gguf_name(graphs.T2V_LOW, "Q8_0"),
                                             "video/gguf_a14b"), tmp_path, "pair")
    assert "lean forward: 2 block calls lean" in ui_text(entry, "43")
    assert "float32 compute on Q8_0 weights" in ui_text(entry, "43")


def test_the_expert_switch_releases_a_gguf_high_noise_expert(gguf_client, tmp_path):
    """A GGUF high-noise expert (from UnetLoaderGGUF) released by WanFit's switch, which loads a safetensors
    low-noise expert: the switch's low_noise_model is a file for WanFit's loaders, which refuse .gguf."""
    gguf_client.free()
    entry = run_a14b(gguf_client, a14b_graph(gguf_name(graphs.T2V_HIGH, "F16"), gguf_name(graphs.T2V_LOW, "F16"),
                                             "video/gguf_a14b_release", release=graphs.T2V_LOW), tmp_path, "release")
    switch = ui_text(entry, "44")
    assert switch.startswith("high-noise expert loaded by another node\nreleased the high-noise expert (")
    assert f"loaded {graphs.T2V_LOW}: weight dtype as stored (float16)" in switch


def test_the_expert_switch_hands_over_to_a_gguf_low_noise_expert_and_the_next_run_loads_both_again(gguf_client,
                                                                                                  tmp_path):
    """A GGUF pair through WanFit's switch: it releases the high-noise GGUF (UnetLoaderGGUF's output, which ComfyUI's
    node cache keeps) and loads the low-noise GGUF through ComfyUI-GGUF's own loader. A second run with another seed
    must load the high-noise expert again, not sample the released one (weights on the meta device)."""
    gguf_client.free()
    low = gguf_name(graphs.T2V_LOW, "Q8_0")
    graph = a14b_graph(gguf_name(graphs.T2V_HIGH, "Q8_0"), low, "video/gguf_switch", release=low)
    assert low in json.dumps(gguf_client.object_info()["WanFitSwitchToLowNoiseExpert"]["input"]["required"])
    first = run_a14b(gguf_client, graph, tmp_path, "first")
    switch = ui_text(first, "44")
    assert switch.startswith("high-noise expert loaded by another node\nreleased the high-noise expert (")
    assert "ComfyUI's node cache is cleared after this prompt (as by Free model and node cache)" in switch
    assert switch.endswith(f"loaded {low}: loaded by ComfyUI-GGUF's Unet Loader (GGUF) as stored (F32 43, Q8_0 26, "
                           f"dequantized per layer); weight_dtype does not apply to a GGUF"), switch
    assert "float32 compute on Q8_0 weights" in ui_text(first, "43")
    graph["9"]["inputs"]["noise_seed"] += 1
    second = run_a14b(gguf_client, graph, tmp_path, "second")
    assert ui_text(second, "44").startswith("high-noise expert loaded by another node\nreleased the high-noise expert (")
    first_latent = load_saved_latent(gguf_client, first, LATENT_NODE, tmp_path / "first_again")
    second_latent = load_saved_latent(gguf_client, second, LATENT_NODE, tmp_path / "second_again")
    assert not torch.equal(first_latent, second_latent)


def test_the_expert_switch_refuses_a_gguf_low_noise_expert_that_is_no_wan_a14b_expert(gguf_server, gguf_client,
                                                                                        fixtures):
    import safetensors.torch

    ti2v = gguf_name(graphs.TI2V_5B, "Q8_0")
    graph = a14b_graph(gguf_name(graphs.T2V_HIGH, "Q8_0"), gguf_name(graphs.T2V_LOW, "Q8_0"), "video/refused",
                       release=ti2v)
    text = rejected_text(gguf_client, graph)
    assert f"TI2V-5B is a single model, not an A14B expert: " in text and ti2v in text
    llama = write_gguf(safetensors.torch.load_file(str(fixtures["diffusion_models"][graphs.T2V_LOW])),
                       gguf_server.scratch_models / "diffusion_models" / "wanfit_tiny_low_noise_llama-Q8_0.gguf",
                       "Q8_0", arch="llama")
    graph["44"]["inputs"]["low_noise_model"] = llama.name
    text = rejected_text(gguf_client, graph)
    assert f"{llama} is not a WAN GGUF: its general.architecture is 'llama', not 'wan'" in text
    assert "Fix: pick a WAN 2.2 GGUF" in text


def test_without_comfyui_gguf_the_expert_switch_refuses_a_gguf_naming_the_fix(client):
    """The plain server has no ComfyUI-GGUF: a .gguf low-noise name sent over /prompt is refused before it runs."""
    graph = graphs.a14b_t2v_stock(prefix="video/refused")
    graph["44"] = {"class_type": "WanFitSwitchToLowNoiseExpert", "inputs": {
        "high_noise_model": ["1", 0], "samples": ["9", 0], "low_noise_model": "wan22_low_noise-Q4_K_M.gguf",
        "weight_dtype": "auto", "release_high_noise": "always"}}
    graph["10"]["inputs"]["latent_image"] = ["44", 1]
    text = rejected_text(client, graph)
    assert ("wan22_low_noise-Q4_K_M.gguf is a GGUF file: WanFit Switch To Low-Noise Expert loads it through "
            "ComfyUI-GGUF's Unet Loader (GGUF), which is not installed. Fix: install ComfyUI-GGUF (city96)") in text


@pytest.mark.parametrize("node", ["WanFitLoadDiffusionModel", "WanFitLoadA14BExperts"])
def test_wanfits_loaders_refuse_a_real_gguf_file_with_the_fix(gguf_client, node):
    name = gguf_name(graphs.T2V_HIGH, "Q8_0")
    if node == "WanFitLoadDiffusionModel":
        loader = {"model_name": gguf_name(graphs.TI2V_5B, "Q8_0"), "weight_dtype": "auto"}
        name = loader["model_name"]
    else:
        loader = {"high_noise_model": name, "low_noise_model": gguf_name(graphs.T2V_LOW, "Q8_0"),
                  "weight_dtype": "auto"}
    text = rejected_text(gguf_client, {"1": {"class_type": node, "inputs": loader},
                                       "99": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert f"Not a safetensors file: " in text and name in text
    assert "it looks like a GGUF file (needs the ComfyUI-GGUF loader, not WanFit's loaders)" in text
    assert "Fix: download the .safetensors version of the model" in text


def lean_report_graph(unet_name):
    return {"1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": unet_name}},
            "2": {"class_type": "WanFitSageAttention", "inputs": {
                "model": ["1", 0], "mode": "auto", "keep_cross_attention_on_sdpa": False, "nan_check_calls": 8}},
            "3": {"class_type": "WanFitLeanForward", "inputs": {"model": ["2", 0], "mode": "auto", "chunk_tokens": 0}},
            "99": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}}


def test_a_gguf_whose_arch_is_not_an_image_model_fails_in_comfyui_gguf_naming_it(gguf_server, gguf_client, fixtures):
    import safetensors.torch

    path = write_gguf(safetensors.torch.load_file(str(fixtures["diffusion_models"][graphs.TI2V_5B])),
                      gguf_server.scratch_models / "diffusion_models" / "wanfit_tiny_llama_arch-Q8_0.gguf", "Q8_0",
                      arch="llama")
    with pytest.raises(PromptFailedError) as failure:
        gguf_client.run(lean_report_graph(path.name), timeout_s=300)
    assert "Unexpected architecture type in GGUF file: 'llama'" in str(failure.value)


def test_wan_tensors_under_an_image_arch_load_as_wan(gguf_server, gguf_client, fixtures):
    """ComfyUI-GGUF accepts any image arch and ComfyUI detects the model from its keys: WAN tensors under
    general.architecture 'flux' load and run as WAN 2.2 (python -m wanfit models --check-file refuses the file)."""
    import safetensors.torch

    path = write_gguf(safetensors.torch.load_file(str(fixtures["diffusion_models"][graphs.TI2V_5B])),
                      gguf_server.scratch_models / "diffusion_models" / "wanfit_tiny_flux_arch-Q8_0.gguf", "Q8_0",
                      arch="flux")
    report = gguf_client.run(lean_report_graph(path.name), timeout_s=300)["outputs"]["99"]["text"][0]
    assert report.startswith("Lean forward on 2 blocks"), report
