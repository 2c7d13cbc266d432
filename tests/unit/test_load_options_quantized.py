"""The loader's weight dtype and report for files in ComfyUI's quantized formats: loaded as stored, the
quantized layers named as staying quantized, never a cast that does not happen."""

import pytest

from tests.model_files import quantize, wan_dit, write_safetensors
from wanfit.models import detect_variant
from wanfit.models.load_options import choose_weight_dtype


def quantized_info(tmp_path, fmt, rest="BF16", encoding="metadata"):
    tensors, metadata = quantize(wan_dit(16, 16, dtype=rest, all_linears=True), fmt, encoding)
    return detect_variant(write_safetensors(tmp_path / f"{fmt}.safetensors", tensors, metadata))


def choose(info, option="auto", plan_dtype=None):
    plan = {"weight_dtype": plan_dtype} if plan_dtype else None
    return choose_weight_dtype(option, plan, info.weight_dtype, info.fp8_scaled, info.quantization)


@pytest.mark.parametrize("fmt, rest, chosen", [("nvfp4", "BF16", "bf16"), ("int8_tensorwise", "F16", "fp16"),
                                               ("mxfp8", "BF16", "bf16"), ("float8_e4m3fn", "F16", "fp16")])
def test_no_plan_loads_as_stored_keeping_the_rest_in_its_stored_dtype(tmp_path, fmt, rest, chosen):
    info = quantized_info(tmp_path, fmt, rest)
    assert choose(info) == (chosen, f"loaded as stored: 20 of 20 block linears stay {fmt}; the rest {chosen} "
                                    "(unquantized linears in ComfyUI's compute dtype); no plan connected")


@pytest.mark.parametrize("plan_dtype, fmt", [("nvfp4", "nvfp4"), ("int8", "int8_tensorwise"),
                                             ("fp8_scaled", "float8_e4m3fn"), ("float8", "float8_e5m2")])
def test_a_plan_asking_for_the_files_format_changes_nothing(tmp_path, plan_dtype, fmt):
    assert choose(quantized_info(tmp_path, fmt), plan_dtype=plan_dtype) == (
        "bf16", f"plan wants {plan_dtype}, as the file is stored: loaded as stored: 20 of 20 block linears stay "
                f"{fmt}; the rest bf16 (unquantized linears in ComfyUI's compute dtype)")


@pytest.mark.parametrize("plan_dtype, other", [
    ("fp8_scaled", "the fp8_scaled file"), ("fp8_e4m3fn", "the fp8_scaled file"), ("fp16", "the fp16 file"),
    ("bf16", "the fp16 file"), ("mxfp8", "a mxfp8 file")])
def test_a_plan_asking_for_another_format_is_told_the_file_loads_as_stored(tmp_path, plan_dtype, other):
    chosen, reason = choose(quantized_info(tmp_path, "nvfp4"), plan_dtype=plan_dtype)
    assert chosen == "bf16"
    assert reason == (f"plan wants {plan_dtype}, but the file is nvfp4 (ComfyUI quantized): loaded as stored: 20 of 20 "
                      f"block linears stay nvfp4; the rest bf16 (unquantized linears in ComfyUI's compute dtype); "
                      f"WanFit does not convert a quantized file "
                      f"(for {plan_dtype}, load {other})")
    assert "cast" not in reason


def test_a_dtype_chosen_on_the_node_says_only_the_rest_is_cast(tmp_path):
    info = quantized_info(tmp_path, "int8_tensorwise")
    assert choose(info, "fp8_e4m3fn", "fp16") == (
        "fp8_e4m3fn", "weight dtype fp8_e4m3fn (chosen on the node): 20 of 20 block linears stay int8_tensorwise; "
                      "the rest (bf16) is cast to fp8_e4m3fn at load (unquantized linears in ComfyUI's compute dtype)")
    assert choose(info, "bf16")[1].endswith(
        "stay int8_tensorwise; the rest stays bf16 (unquantized linears in ComfyUI's compute dtype)")
    assert choose(info, "default") == (
        "default", "weight dtype default (chosen on the node): 20 of 20 block linears stay int8_tensorwise; "
                   "ComfyUI picks the dtype of the rest (bf16 in the file)")


def test_comfy_quant_tensors_alone_name_no_format_they_cannot_know(tmp_path):
    info = quantized_info(tmp_path, "nvfp4", encoding="comfy_quant")
    assert choose(info) == ("bf16", "loaded as stored: 20 of 20 block linears stay quantized (format read when it "
                                    "loads); the rest bf16 (unquantized linears in ComfyUI's compute dtype); "
                                    "no plan connected")


def test_legacy_fp8_scaled_and_plain_files_keep_their_texts(tmp_path):
    scaled = detect_variant(write_safetensors(tmp_path / "s.safetensors", wan_dit(16, 16, fp8_scaled=True)))
    assert choose(scaled, plan_dtype="fp8_scaled") == ("default", "plan wants fp8_scaled; the file is already fp8, "
                                                                  "loaded as stored")
    plain = detect_variant(write_safetensors(tmp_path / "p.safetensors", wan_dit(16, 16)))
    assert choose(plain, plan_dtype="fp8_scaled") == ("fp8_e4m3fn", "plan wants fp8_scaled: float16 weights are "
                                                                    "cast to fp8_e4m3fn at load")
