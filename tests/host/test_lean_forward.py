"""WanFit Lean Forward against this core's own WAN blocks, in-process, CPU fp32.

The tiny fixture models (dim 128, 2 blocks, the real key layout) load through ComfyUI's own loader
(comfy.sd), so the blocks are the core's WanAttentionBlock built with the ops ComfyUI picks; the
lean clone is made by the package's own entry point (patch_model_lean). Each comparison runs the
core's forward twice on the same loaded weights: stock (no block replacement) and lean.
Acceptance: max |lean - stock| <= 1e-5 x max |stock| per forward; a sampling run's latent
relative L2 <= 1e-5.
"""

import pytest
import torch

from tests.comfy_import import import_comfy
from tests.fixtures.generate import LORAS, fixture_paths

T2V = "wanfit_tiny_t2v_high_noise_14B.safetensors"
I2V = "wanfit_tiny_i2v_low_noise_14B.safetensors"
TI2V = "wanfit_tiny_ti2v_5B.safetensors"
# latent frames x height x width per model: A14B latents are H/8 x W/8 (16 ch; I2V 36 with the image
# channels), TI2V-5B H/16 x W/16 (48 ch). 3 x 24 x 40 -> 720 tokens for A14B, 3 x 16 x 24 -> 288 for 5B.
SHAPES = {T2V: (16, 3, 24, 40), I2V: (36, 3, 24, 40), TI2V: (48, 3, 16, 24)}
CHUNKS = (97, "auto")  # 97: uneven chunks (the last one short); auto: the whole (small) sequence
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def comfy(comfyui, fixtures):
    import_comfy(comfyui)
    import comfy.model_management
    import comfy.sd
    import comfy.utils

    return comfy


def load(comfy, name, fixtures):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(fixtures["diffusion_models"][name]))


def forward(patcher, inputs, transformer_options=None, load=True):
    """The core's WanModel forward on the patcher's loaded weights (weight patches applied)."""
    import comfy.model_management

    if load:
        comfy.model_management.load_models_gpu([patcher])
    diffusion_model = patcher.model.diffusion_model
    options = dict(patcher.model_options.get("transformer_options", {}))
    if transformer_options is not None:
        options = transformer_options
    with torch.inference_mode():
        return diffusion_model(*inputs, transformer_options=options).float()


def make_inputs(name, batch=2, seed=0, per_frame_timestep=False):
    channels, frames, height, width = SHAPES[name]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, height, width, generator=generator)
    if per_frame_timestep:  # TI2V-5B with an image: the first latent frame at t=0 (model_base.WAN22)
        t = torch.tensor([[0.0] + [600.0] * (frames - 1)] * batch)
    else:
        t = torch.tensor([600.0, 300.0][:batch])
    context = torch.randn(batch, 512, 4096, generator=generator)
    return x, t, context


def assert_close(lean, stock, where):
    difference = (lean - stock).abs().max().item()
    scale = stock.abs().max().item()
    assert torch.isfinite(lean).all(), f"{where}: lean output not finite"
    assert difference <= TOLERANCE * scale, (
        f"{where}: max |lean - stock| = {difference:.3e}, expected <= {TOLERANCE} x max |stock| = {TOLERANCE * scale:.3e}")
    print(f"{where}: max abs diff / max abs output = {difference / scale:.2e}")
    return difference / scale


@pytest.mark.parametrize("frames, tokens", [(1, 50), (5, 50), (7, 50), (3, 9), (50, 50)])
def test_modulation_rows_match_the_cores_repeat_e_chunk_by_chunk(comfy, frames, tokens):
    import comfy.ldm.wan.model as wan

    from wanfit.lean_forward import modulation_rows

    e = torch.randn(2, frames, 8)
    full = wan.repeat_e(e, torch.empty(2, tokens, 8)).expand(2, tokens, 8)
    for start in range(0, tokens, 6):
        stop = min(start + 6, tokens)
        assert torch.equal(modulation_rows(e, tokens, start, stop).expand(2, stop - start, 8), full[:, start:stop])


@pytest.mark.parametrize("name", [TI2V, T2V, I2V])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_lean_forward_matches_the_cores_blocks(comfy, fixtures, name, chunk):
    from wanfit.lean_forward import installed_lean_blocks, patch_model_lean

    stock_model = load(comfy, name, fixtures)
    lean_model, report = patch_model_lean(stock_model, chunk)
    assert len(installed_lean_blocks(lean_model)) == 2 and not installed_lean_blocks(stock_model), report
    inputs = make_inputs(name, per_frame_timestep=name == TI2V)
    stock = forward(stock_model, inputs, transformer_options={})
    lean = forward(lean_model, inputs)
    assert [patch.calls for patch in installed_lean_blocks(lean_model).values()] == [1, 1], "the lean blocks did not run"
    assert_close(lean, stock, f"{name}, chunks {chunk}")


@pytest.mark.parametrize("lowvram", [False, True], ids=["lora-merged", "lora-on-the-fly"])
def test_lean_forward_with_a_lora(comfy, fixtures, lowvram):
    """A LoRA merged into the weights, and applied on use by weight functions (partial loading:
    comfy.ops casts each weight through the LoRA patch, which the lean forward does once per block)."""
    import comfy.model_management
    import comfy.sd
    import comfy.utils

    from wanfit.lean_forward import patch_model_lean

    base = load(comfy, T2V, fixtures)
    lora = comfy.utils.load_torch_file(str(fixtures["loras"][sorted(LORAS)[0]]))
    with_lora, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0.0)
    lean_model, _ = patch_model_lean(with_lora, 97)
    inputs = make_inputs(T2V)
    plain = forward(base, inputs, transformer_options={})
    comfy.model_management.unload_all_models()
    if lowvram:
        # a 1-byte budget: no weight is loaded for good; every patched Linear gets a LowVramPatch weight
        # function and comfy_cast_weights, as partial loading does on a small card
        with_lora.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
        block = with_lora.model.diffusion_model.blocks[0]
        assert block.self_attn.q.weight_function and block.self_attn.q.comfy_cast_weights
    stock = forward(with_lora, inputs, transformer_options={}, load=not lowvram)
    lean = forward(lean_model, inputs, load=not lowvram)
    if lowvram:
        with_lora.unpatch_model(device_to=torch.device("cpu"))
    assert (stock - plain).abs().max() > 1e-3, "the LoRA changed nothing: the test would prove nothing"
    assert_close(lean, stock, f"LoRA ({'on the fly' if lowvram else 'merged'})")


def write_fp8_scaled(source, destination):
    """The fixture in the layout of the official *_fp8_scaled.safetensors files: every Linear weight
    (2-D, "<layer>.weight") stored as float8_e4m3fn divided by a per-layer float32 "<layer>.scale_weight"
    (max |w| / 448), and an empty "scaled_fp8" marker tensor, by which ComfyUI detects the format
    (0.3.64: comfy/model_detection.py -> scaled fp8 ops; 0.33: comfy.utils.convert_old_quants ->
    mixed-precision ops with a float8 layout)."""
    from safetensors.torch import load_file, save_file

    state_dict = load_file(str(source))
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith(".weight") and tensor.ndim == 2:
            weight = tensor.float()
            scale = weight.abs().max().clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
            out[key] = (weight / scale).to(torch.float8_e4m3fn)
            out[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
        else:
            out[key] = tensor
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(out, str(destination))
    return destination


@pytest.mark.parametrize("chunk", CHUNKS)
def test_lean_forward_is_exact_on_fp8_scaled_weights(comfy, fixtures, tmp_path, chunk):
    """fp8 weights are cast to the compute dtype on use (float32 on the CPU), scaled per layer as the
    core's op does; the lean forward casts each once per block and must give the core's result."""
    from wanfit.lean_forward import linear_path, installed_lean_blocks, patch_model_lean

    path = write_fp8_scaled(fixtures["diffusion_models"][T2V], tmp_path / "wanfit_tiny_t2v_fp8_scaled.safetensors")
    stock_model = comfy.sd.load_diffusion_model(str(path))
    q = stock_model.model.diffusion_model.blocks[0].self_attn.q
    stored = getattr(q.weight, "_qdata", q.weight)  # 0.33 keeps a QuantizedTensor around the fp8 data
    assert stored.dtype == torch.float8_e4m3fn, f"the fp8_scaled file did not load as fp8 weights: {stored.dtype}"
    plain = load(comfy, T2V, fixtures)
    lean_model, report = patch_model_lean(stock_model, chunk)
    inputs = make_inputs(T2V)
    reference = forward(plain, inputs, transformer_options={})
    stock = forward(stock_model, inputs, transformer_options={})
    lean = forward(lean_model, inputs)
    assert [patch.calls for patch in installed_lean_blocks(lean_model).values()] == [1, 1], report
    relative_to_fp16 = ((stock - reference).norm() / reference.norm()).item()
    assert 0 < relative_to_fp16 < 0.2, f"fp8 vs fp16 weights: relative L2 {relative_to_fp16:.3e} (fp8 not in use?)"
    print(f"fp8_scaled ({type(q).__qualname__}, lean path {linear_path(q)}): fp8 vs fp16 relative L2 "
          f"{relative_to_fp16:.2e}")
    assert_close(lean, stock, f"fp8_scaled, chunks {chunk}")


def test_lean_forward_keeps_the_sage_patch_in_the_loop(comfy, fixtures):
    """The attention goes through transformer_options' override (WanFit Sage Attention), as in the stock block."""
    from wanfit.attention import find_override, patch_model_attention
    from wanfit.lean_forward import patch_model_lean

    base = load(comfy, T2V, fixtures)
    with_sage, _ = patch_model_attention(base, "auto", verify=False)
    override = find_override(with_sage)
    lean_model, _ = patch_model_lean(with_sage, 97)
    inputs = make_inputs(T2V)
    forward(lean_model, inputs)  # the first lean forward of a process also runs the check against the core
    override.stats.reset()
    stock = forward(with_sage, inputs)
    stock_calls = override.stats.self_attention_calls + override.stats.cross_attention_calls
    override.stats.reset()
    lean = forward(lean_model, inputs)
    lean_calls = override.stats.self_attention_calls + override.stats.cross_attention_calls
    assert stock_calls == lean_calls == 4, f"attention calls: stock {stock_calls}, lean {lean_calls}; expected 4 each"
    assert_close(lean, stock, "with WanFit Sage Attention (SDPA fallback on the CPU)")


def test_a_sampling_run_gives_the_same_latent(comfy, fixtures):
    import comfy.model_management
    import comfy.sample

    from wanfit.lean_forward import patch_model_lean

    stock_model = load(comfy, T2V, fixtures)
    lean_model, _ = patch_model_lean(stock_model, 97)
    generator = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 512, 4096, generator=generator), {}]]
    negative = [[torch.randn(1, 512, 4096, generator=generator), {}]]
    latent = torch.zeros(1, 16, 3, 24, 40)
    results = []
    for model in (stock_model, lean_model, stock_model):
        noise = comfy.sample.prepare_noise(latent, 42)
        results.append(comfy.sample.sample(model, noise, 6, 5.0, "euler", "simple", positive, negative, latent,
                                           disable_pbar=True, seed=42).float())
        comfy.model_management.unload_all_models()
    stock, lean, stock_again = results
    assert torch.equal(stock, stock_again), "two stock runs differ: the comparison would prove nothing"
    relative_l2 = ((lean - stock).norm() / stock.norm()).item()
    print(f"sampling run (6 steps, cfg 5): latent relative L2 = {relative_l2:.2e}")
    assert relative_l2 <= TOLERANCE, f"latent relative L2 {relative_l2:.3e}, expected <= {TOLERANCE}"


# --- the node's modes, through /prompt ----------------------------------------------------


def node_modes_graph():
    """One tiny A14B expert through four WanFit Lean Forward nodes, each sampled once (1 step, cfg 1).
    Plan "8gb": A14B 1280x720x81 on an 8 GB card, which fits only with the lean forward; plan "here": a
    64x64x5 job on this CPU machine, which fits with the core's own blocks."""
    from tests.host import graphs

    def plan(mode, width, height, frames):
        return {"class_type": "WanFitOffloadPlan", "inputs": {
            "model_variant": "t2v_a14b", "width": width, "height": height, "frames": frames, "batch": 1, "cfg": False,
            "mode": mode, "reserve_vram_gb": 0.0, "weight_dtype": "auto", "text_encoder_device": "auto"}}

    graph = {
        "1": plan("CONSUMER_8GB", 1280, 720, 81),
        "2": plan("auto", 64, 64, 5),
        "3": {"class_type": "UNETLoader", "inputs": {"unet_name": graphs.T2V_HIGH, "weight_dtype": "default"}},
        "4": graphs.text_encode("a lighthouse in a storm", 7),
        "5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                  "batch_size": 1}},
    }
    # 64x64x5 is 32 tokens: chunk_tokens 16 overrides the 8 GB plan's chunk size (sized for 75,600 tokens)
    lean_nodes = {"11": ("auto", 16, "1"), "12": ("auto", 0, "2"), "13": ("auto", 16, None), "14": ("off", 0, "1"),
                  "15": ("on", 16, "2")}
    for node_id, (mode, chunk, plan_id) in lean_nodes.items():
        inputs = {"model": ["3", 0], "mode": mode, "chunk_tokens": chunk}
        if plan_id:
            inputs["plan"] = [plan_id, 0]
        graph[node_id] = {"class_type": "WanFitLeanForward", "inputs": inputs}
        sampler_id, save_id = str(int(node_id) + 10), str(int(node_id) + 20)
        graph[sampler_id] = {"class_type": "KSampler", "inputs": {
            "model": [node_id, 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": 3,
            "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
        graph[save_id] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0],
                                                                 "filename_prefix": f"latents/lean_mode_{node_id}"}}
    return graph


def test_the_node_follows_the_plan_in_auto_mode_and_obeys_on_and_off(client, tmp_path):
    from tests.host.latents import load_saved_latent

    client.free()
    entry = client.run(node_modes_graph(), timeout_s=300)
    outputs = entry["outputs"]
    assert "Lean forward: on" in outputs["1"]["text"][0], "the 8 GB plan should need the lean forward"
    assert "Lean forward: on" not in outputs["2"]["text"][0], "this machine's tiny job should fit without it"
    expected = {"11": "Lean forward on 2 blocks", "12": "Lean forward not needed", "13": "Lean forward on 2 blocks",
                "14": "Lean forward off", "15": "Lean forward on 2 blocks"}
    for node_id, start in expected.items():
        report = outputs[node_id]["text"][0]
        assert report.startswith(start), f"lean node {node_id}: expected a report starting {start!r}, got {report!r}"
    assert "16 tokens" in outputs["11"]["text"][0] and "the plan needs it" in outputs["11"]["text"][0]
    latents = {node_id: load_saved_latent(client, entry, str(int(node_id) + 20), tmp_path / node_id).float()
               for node_id in expected}
    stock = latents["14"]
    for node_id, latent in latents.items():
        difference = (latent - stock).abs().max().item()
        assert difference <= TOLERANCE * stock.abs().max().item(), f"lean node {node_id}: max |diff| {difference:.3e}"


# --- bad inputs ----------------------------------------------------------------------------


def test_a_model_that_is_not_wan_is_refused_by_name(comfy):
    import comfy.model_patcher

    from wanfit.lean_forward import LeanForwardError, patch_model_lean

    class FluxLikeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(4, 4)

    patcher = comfy.model_patcher.ModelPatcher(FluxLikeModel(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(LeanForwardError, match="FluxLikeModel.*Linear"):
        patch_model_lean(patcher)


@pytest.mark.parametrize("chunk", [0, -5, 2.5, True, "big"])
def test_a_chunk_size_below_one_is_refused(comfy, fixtures, chunk):
    from wanfit.errors import InvalidInputError
    from wanfit.lean_forward import patch_model_lean

    with pytest.raises(InvalidInputError, match="chunk_tokens"):
        patch_model_lean(load(comfy, T2V, fixtures), chunk)


def test_a_chunk_size_above_the_token_count_is_refused(comfy, fixtures):
    from wanfit.errors import InvalidInputError
    from wanfit.lean_forward import patch_model_lean

    lean_model, _ = patch_model_lean(load(comfy, T2V, fixtures), 721)  # this job has 720 tokens
    with pytest.raises(InvalidInputError, match=r"chunk_tokens=721.*720 tokens"):
        forward(lean_model, make_inputs(T2V))
    lean_model, _ = patch_model_lean(load(comfy, T2V, fixtures), 720)  # the whole sequence in one chunk is fine
    forward(lean_model, make_inputs(T2V))


def test_another_block_replacement_is_refused(comfy, fixtures):
    from wanfit.lean_forward import LeanForwardError, patch_model_lean

    model = load(comfy, T2V, fixtures).clone()
    model.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 1)
    with pytest.raises(LeanForwardError, match=r"another block replacement \(\('double_block', 1\)\)"):
        patch_model_lean(model)
    lean_model, _ = patch_model_lean(load(comfy, T2V, fixtures))
    patch_model_lean(lean_model, 97)  # re-applying the lean forward (a new chunk size) is allowed


@pytest.fixture
def fresh_checks():
    """No verdict from an earlier test: the next lean forward checks itself again."""
    from wanfit import replay_check

    replay_check.forget_checks()
    yield replay_check
    replay_check.forget_checks()


def test_a_core_newer_than_any_tested_is_not_refused_the_check_decides(comfy, fixtures, fresh_checks):
    from wanfit import lean_forward

    stock_model = load(comfy, T2V, fixtures)
    lean_model, report = lean_forward.patch_model_lean(stock_model, 97, core_version=(0, 45, 0))
    assert "checked against ComfyUI 0.45.0's own block on the first step" in report, report
    inputs = make_inputs(T2V)
    assert_close(forward(lean_model, inputs), forward(stock_model, inputs, transformer_options={}), "0.45.0 label")
    (check,) = fresh_checks.cached_checks()
    assert check.passed and check.core == "0.45.0" and check.difference <= 1e-5, check


def test_a_core_whose_wan_module_does_not_import_is_refused_by_name(comfy, fixtures, monkeypatch):
    import sys

    from wanfit import lean_forward

    model = load(comfy, T2V, fixtures)
    monkeypatch.setitem(sys.modules, "comfy.ldm.wan.model", None)  # import then raises ImportError
    with pytest.raises(lean_forward.LeanForwardError, match=r"WAN module \(comfy.ldm.wan.model\) does not import"):
        lean_forward.patch_model_lean(model)


def _core_block_changed(monkeypatch, comfy):
    """The core's own block computes something else (a release that changed its arithmetic)."""
    import comfy.ldm.wan.model as wan

    original = wan.WanAttentionBlock.forward

    def changed(self, x, *args, **kwargs):
        return original(self, x, *args, **kwargs) * 1.01

    monkeypatch.setattr(wan.WanAttentionBlock, "forward", changed)


def test_a_core_block_the_replay_does_not_match_runs_the_cores_own_blocks_in_auto(comfy, fixtures, monkeypatch,
                                                                                  fresh_checks):
    from wanfit import lean_forward

    _core_block_changed(monkeypatch, comfy)
    stock_model = load(comfy, T2V, fixtures)
    shown = []
    lean_model, _ = lean_forward.patch_model_lean(stock_model, 97, mode="auto", notify=shown.append)
    inputs = make_inputs(T2V)
    stock = forward(stock_model, inputs, transformer_options={})
    out = forward(lean_model, inputs)
    assert torch.equal(out, stock), "mode auto after a failed check must give exactly the core's own result"
    blocks = lean_forward.installed_lean_blocks(lean_model).values()
    assert [block.calls for block in blocks] == [0, 0] and [block.core_calls for block in blocks] == [1, 1]
    (check,) = shown
    assert not check.passed and 5e-3 < check.difference < 1, check
    text = lean_forward.lean_report(lean_model)
    assert "0 block calls lean, 2 on ComfyUI's own blocks" in text, text
    assert "check against the core's own block failed (ComfyUI 0.33.0" in text or "failed (ComfyUI 0.3.64" in text, text
    assert "exceeds the tolerance 1e-05" in text, text
    # the next model of the same class in this process takes the cached verdict, and its report says so at once
    _, report = lean_forward.patch_model_lean(load(comfy, T2V, fixtures), 97)
    assert "failed" in report and "instead: ComfyUI's own blocks" in report, report


def test_a_core_block_the_replay_does_not_match_stops_the_run_in_mode_on(comfy, fixtures, monkeypatch,
                                                                        fresh_checks):
    from wanfit import lean_forward

    _core_block_changed(monkeypatch, comfy)
    lean_model, _ = lean_forward.patch_model_lean(load(comfy, T2V, fixtures), 97, mode="on")
    with pytest.raises(fresh_checks.ReplayMismatchError,
                       match=r"mode on.*failed \(ComfyUI [0-9.]+, WanModel, float32.*exceeds the tolerance.*mode to auto"):
        forward(lean_model, make_inputs(T2V))


def test_a_check_that_itself_raises_falls_back_and_says_so(comfy, fixtures, monkeypatch, fresh_checks):
    """The core's own block runs out of memory once, inside the check: mode auto runs the core's blocks."""
    import comfy.ldm.wan.model as wan

    original = wan.WanAttentionBlock.forward
    calls = []

    def out_of_memory_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return original(self, *args, **kwargs)

    from wanfit import lean_forward

    stock_model = load(comfy, T2V, fixtures)
    lean_model, _ = lean_forward.patch_model_lean(stock_model, 97)
    inputs = make_inputs(T2V)
    monkeypatch.setattr(wan.WanAttentionBlock, "forward", out_of_memory_once)
    out = forward(lean_model, inputs)
    monkeypatch.setattr(wan.WanAttentionBlock, "forward", original)
    assert torch.equal(out, forward(stock_model, inputs, transformer_options={}))
    text = lean_forward.lean_report(lean_model)
    assert "the check itself raised RuntimeError: CUDA out of memory" in text, text
    assert "0 block calls lean, 2 on ComfyUI's own blocks" in text, text


# --- activation memory at real size (bench/activation_peak.py --lean) ---------------------


def _bench(comfyui, tmp_path, *options):
    import json
    from pathlib import Path
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    report = tmp_path / "report.json"
    completed = subprocess.run([sys.executable, str(repo / "bench" / "activation_peak.py"), "--lean", "--rope", "eager",
                                "--core-path", str(comfyui), "--json", str(report), *options],
                               cwd=repo, capture_output=True, text=True, timeout=600)
    assert report.is_file(), f"the bench wrote no report (rc {completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    return json.loads(report.read_text()), completed


def test_lean_activation_simulation_matches_a_real_cpu_run(comfyui, tmp_path):
    data, completed = _bench(comfyui, tmp_path, "--validate")
    for row in data["validation"]:
        where = f"lean, {row['config']}, batch {row['batch']}"
        assert row["meta_peak_bytes"] == row["real_peak_bytes"], f"{where}: meta and real CPU peaks differ"
        assert row["output_finite"] and row["meta_live_after_bytes"] == row["real_live_after_bytes"] == 0, where
        assert 1.0 <= row["predicted_over_simulated"] <= 1.30, f"{where}: {row['predicted_over_simulated']:.3f}"
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_lean_activations_at_real_size_stay_within_5_5_hidden_states(comfyui, tmp_path):
    """A14B 1280x720x81 and 832x480x81, TI2V-5B 1280x704x121, batch 1 and 2 (issue 16's acceptance)."""
    data, _ = _bench(comfyui, tmp_path)
    rows = data["rows"]
    assert len(rows) == 6 and all(row["forward"] == "lean" for row in rows)
    for row in rows:
        where = f"{row['job']}, batch {row['batch']}"
        assert row["units"] <= 5.5, f"{where}: {row['units']:.2f} hidden states, expected <= 5.5"
        assert 1.05 <= row["predicted_over_simulated"] <= 1.30, (
            f"{where}: planner predicted / simulated = {row['predicted_over_simulated']:.3f}, expected 1.05-1.30")
