"""The lean forward's pure parts: chunk sizes, the check's tolerance, its activation model, the node's mode policy.

What replays ComfyUI's own code (the modulation rows against repeat_e, the block) is checked against
the real cores in tests/host/test_lean_forward.py and tests/matrix."""

import pytest
import torch

from wanfit.plan import footprint as memory
from wanfit.errors import InvalidInputError
from wanfit import replay_check
from wanfit.lean_forward import (LeanForwardError, apply_lean_forward, check_subject, resolve_chunk_tokens,
                                  tolerance_for, validate_chunk_setting)


def test_the_planner_knows_an_activation_profile_for_each_measured_core():
    assert tuple(sorted(profile.core_version for profile in memory.ACTIVATION_PROFILES)) == memory.LEAN_FORWARD_CORES


def test_the_check_tolerance_is_1e_5_in_fp32_and_catches_a_0_3_percent_drift_in_bf16_and_fp16():
    assert tolerance_for(torch.float32) == 1e-5
    for dtype in (torch.bfloat16, torch.float16):
        assert 0 < tolerance_for(dtype) == 1e-3
        check = replay_check.check_once("lean forward", "the core's own block", "drift", ("drift", str(dtype)),
                                        tolerance_for(dtype), lambda: (3e-3, "0.3 % apart", None), core="unit")
        exact = replay_check.check_once("lean forward", "the core's own block", "exact", ("exact", str(dtype)),
                                        tolerance_for(dtype), lambda: (0.0, "0 apart", None), core="unit")
        assert not check.passed and exact.passed
    replay_check.forget_checks()


class Block(torch.nn.Module):
    """The attribute layout of the core's WanAttentionBlock (self_attn, cross_attn, ffn), with plain Linears."""

    def __init__(self):
        super().__init__()
        self.self_attn = torch.nn.Module()
        self.cross_attn = torch.nn.Module()
        for attention in (self.self_attn, self.cross_attn):
            for name in "qkvo":
                setattr(attention, name, torch.nn.Linear(4, 4))
        self.ffn = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))


def test_the_check_key_holds_the_set_of_the_blocks_layer_formats():
    plain, fp8, nvfp4 = Block(), Block(), Block()
    for block, fmt in ((fp8, "float8_e4m3fn"), (nvfp4, "nvfp4")):
        block.ffn[0].layout_type, block.ffn[0].quant_format = "Layout", fmt  # what the core's layer loader sets
    keys = [check_subject("WanModel", block, torch.bfloat16, "cpu") for block in (plain, fp8, nvfp4)]
    assert len({key for key, _ in keys}) == 3
    assert keys[0][0][-1] == ("float32",) and keys[2][0][-1] == ("float32", "nvfp4")
    assert keys[2][1] == "WanModel, bfloat16 compute on float32 + nvfp4 weights, cpu"
    nvfp4.ffn[0].input_scale = torch.tensor(0.5)
    assert check_subject("WanModel", nvfp4, torch.bfloat16, "cpu")[0][-1] == ("float32", "nvfp4 with input_scale")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4096", None])
def test_chunk_settings_below_one_or_not_whole_are_refused(value):
    with pytest.raises(InvalidInputError, match="chunk_tokens"):
        validate_chunk_setting(value)


def test_chunk_sizes_resolve_against_the_sequence():
    assert validate_chunk_setting("auto") == "auto" and validate_chunk_setting(1) == 1
    assert resolve_chunk_tokens("auto", 75_600) == 9450  # 1/8
    assert resolve_chunk_tokens("auto", 27_280) == 4096  # not below 4096 tokens
    assert resolve_chunk_tokens("auto", 4_000) == 4000  # a sequence under the floor in one chunk
    assert resolve_chunk_tokens("auto", 500) == 500  # a short sequence in one chunk
    assert resolve_chunk_tokens(500, 500) == 500
    with pytest.raises(InvalidInputError, match=r"chunk_tokens=501.*500 tokens"):
        resolve_chunk_tokens(501, 500)


@pytest.mark.parametrize("config, width, height, frames, units", [
    (memory.T2V_A14B_EXPERT, 1280, 720, 81, 5), (memory.T2V_A14B_EXPERT, 832, 480, 81, 5.0002),
    (memory.TI2V_5B, 1280, 704, 121, 5.2012)])  # the 4096-token floor: f = 4096 / 27,280 = 0.15, fill 4 + 8f
def test_lean_activations_are_about_5_hidden_states_at_real_sizes(config, width, height, frames, units):
    tokens = memory.transformer_tokens(config, width, height, frames)
    assert memory.lean_block_units(config, tokens) == pytest.approx(units, abs=1e-4)
    for core in memory.LEAN_FORWARD_CORES:
        stock = memory.transformer_activation_bytes(config, width, height, frames, core_version=core)
        lean = memory.transformer_activation_bytes(config, width, height, frames, core_version=core, lean_forward=True)
        assert lean < stock * 0.6


def test_lean_activations_grow_when_chunks_are_the_whole_sequence():
    config = memory.TI2V_5B
    assert memory.lean_block_units(config, 1000, 1000) == pytest.approx(2 + 3 + 2 * 14336 / 3072)


# --- the node's mode policy (lean_forward.apply_lean_forward), where it needs no model ----------------

class NotAModel:
    """Whatever reaches the node: the policy must pass it through untouched where it does not patch."""


@pytest.mark.parametrize("mode, plan, start", [
    ("off", None, "Lean forward off: ComfyUI's own blocks run"),
    ("off", {"lean_forward": True}, "Lean forward off"),
    ("auto", {"lean_forward": False, "lean_chunk_tokens": 4096}, "Lean forward not needed: the plan fits"),
])
def test_modes_that_do_not_patch_pass_the_model_through(mode, plan, start):
    model = NotAModel()
    out, report = apply_lean_forward(model, mode, 0, plan)
    assert out is model and report.startswith(start), report


def test_auto_passes_through_what_it_cannot_patch_and_on_refuses_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "comfy.ldm.wan.model", None)  # no WAN module to replay in this process
    model = NotAModel()
    out, report = apply_lean_forward(model, "auto", 0, {"lean_forward": True})
    assert out is model and report.startswith("Lean forward not applied, ComfyUI's own blocks run"), report
    assert "comfy.ldm.wan.model" in report, report
    with pytest.raises(LeanForwardError, match=r"WAN module \(comfy.ldm.wan.model\) does not import"):
        apply_lean_forward(model, "on", 0, None)
    with pytest.raises(InvalidInputError, match="mode"):
        apply_lean_forward(model, "sometimes", 0, None)
