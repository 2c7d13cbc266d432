"""How the loaders turn the plan, the node's choice and the file's dtype into ComfyUI load options."""

import pytest
import torch

from wanfit.models.load_options import choose_text_encoder_device, choose_weight_dtype, diffusion_model_options


@pytest.mark.parametrize("option, plan_dtype, stored, fp8_scaled, expected", [
    ("auto", None, "float16", False, "default"),            # no plan: exactly the stock UNETLoader
    ("auto", "fp16", "float16", False, "default"),          # plan wants what the file holds
    ("auto", "bf16", "float16", False, "bf16"),
    ("auto", "fp8_scaled", "float16", False, "fp8_e4m3fn"),  # plan shrinks a 16-bit file at load
    ("auto", "fp8_e5m2", "bfloat16", False, "fp8_e5m2"),
    ("auto", "fp8_scaled", "float8_e4m3fn", True, "default"),  # already fp8 scaled: as stored
    ("auto", "fp16", "float8_e4m3fn", True, "default"),     # cannot restore precision from fp8
    ("fp8_e4m3fn_fast", "fp16", "float16", False, "fp8_e4m3fn_fast"),  # the node's choice wins
])
def test_weight_dtype_choice(option, plan_dtype, stored, fp8_scaled, expected):
    plan = {"weight_dtype": plan_dtype} if plan_dtype else None
    chosen, reason = choose_weight_dtype(option, plan, stored, fp8_scaled)
    assert chosen == expected, reason
    assert reason


def test_options_match_unetloader():
    assert diffusion_model_options("default") == {}
    assert diffusion_model_options("fp8_e4m3fn") == {"dtype": torch.float8_e4m3fn}
    assert diffusion_model_options("fp8_e4m3fn_fast") == {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}
    assert diffusion_model_options("fp8_e5m2") == {"dtype": torch.float8_e5m2}
    assert diffusion_model_options("bf16") == {"dtype": torch.bfloat16}


@pytest.mark.parametrize("option, plan_device, expected", [
    ("auto", "cpu", "cpu"), ("auto", "gpu", "default"), ("auto", None, "default"), ("cpu", "gpu", "cpu"),
])
def test_text_encoder_device(option, plan_device, expected):
    plan = {"text_encoder_device": plan_device} if plan_device else None
    assert choose_text_encoder_device(option, plan)[0] == expected
