"""Memory model: parameter counts against the architectures, bytes per dtype, monotone activations."""

import pytest

from wanfit.plan import footprint


@pytest.mark.parametrize("config, expected", [
    (footprint.TI2V_5B, 4_999_787_712),
    (footprint.T2V_A14B_EXPERT, 14_288_491_584),
])
def test_transformer_param_count_matches_the_formula(config, expected):
    assert footprint.transformer_param_count(config) == expected


def test_i2v_expert_differs_only_by_input_channels():
    extra = (footprint.transformer_param_count(footprint.I2V_A14B_EXPERT)
             - footprint.transformer_param_count(footprint.T2V_A14B_EXPERT))
    assert extra == (36 - 16) * 4 * 5120


def test_umt5_xxl_is_about_5_7b():
    assert footprint.t5_encoder_param_count() == 5_680_910_336


@pytest.mark.parametrize("dtype, low_gib, high_gib", [
    ("fp16", 26.0, 27.0), ("bf16", 26.0, 27.0), ("fp8_scaled", 13.0, 14.0), ("fp8_e4m3fn", 13.0, 14.0), ("fp8_e5m2", 13.0, 14.0),
])
def test_a14b_expert_weight_bytes_per_dtype(dtype, low_gib, high_gib):
    size = footprint.transformer_weight_bytes(footprint.T2V_A14B_EXPERT, dtype) / 2**30
    assert low_gib < size < high_gib, f"{dtype}: {size:.2f} GiB"


def test_fp8_scaled_text_encoder_matches_the_published_file_size():
    # umt5_xxl_fp8_e4m3fn_scaled.safetensors is ~6.7 GB: embedding stays 16-bit
    assert 6.6e9 < footprint.text_encoder_weight_bytes("fp8_scaled") < 6.8e9
    assert footprint.text_encoder_weight_bytes("fp16") == 2 * footprint.t5_encoder_param_count()


def test_cpu_upcasts_16_bit_weights_to_fp32_but_not_fp8():
    fp16 = footprint.transformer_weight_bytes(footprint.TI2V_5B, "fp16")
    assert footprint.transformer_weight_bytes(footprint.TI2V_5B, "fp16", upcast_to_fp32=True) > 1.9 * fp16
    assert footprint.transformer_weight_bytes(footprint.TI2V_5B, "fp8_scaled", upcast_to_fp32=True) < 0.6 * fp16


@pytest.mark.parametrize("config, width, height, frames, tokens", [
    (footprint.TI2V_5B, 1280, 704, 121, 31 * 22 * 40),
    (footprint.T2V_A14B_EXPERT, 1280, 720, 81, 21 * 45 * 80),
    (footprint.T2V_A14B_EXPERT, 832, 480, 81, 21 * 30 * 52),
])
def test_tokens(config, width, height, frames, tokens):
    assert footprint.transformer_tokens(config, width, height, frames) == tokens


def test_activations_scale_with_tokens_and_batch():
    one = footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 832, 480, 81)
    # hidden states double with the batch; the RoPE table (under 2% here) is shared by it
    two = footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 832, 480, 81, batch_elements=2)
    assert 1.97 * one < two < 2 * one
    assert footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 1280, 720, 81) > 2 * one
    # 720p A14B, one pass: a few GB, not tens (SDPA never materializes the score matrix)
    assert 5 * 2**30 < footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 1280, 720, 81) < 12 * 2**30


def test_comfyui_estimate_is_larger_than_ours():
    """ComfyUI's memory_required is deliberately pessimistic; ours models live tensors."""
    ours = footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 1280, 720, 81)
    assert footprint.comfyui_memory_required_bytes(footprint.T2V_A14B_EXPERT, 1280, 720, 81) > ours
