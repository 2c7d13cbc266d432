"""ComfyUI's native quantization read from a diffusion model's header: every format in both encodings,
legacy scaled_fp8, a real A14B-shaped nvfp4 header, and the metadata that disagrees with the tensors."""

import ast
import json
import os
from pathlib import Path

import pytest

from tests.model_files import QUANT_STORAGE, quantize, wan_dit, write_safetensors
from wanfit.models import QUANT_FORMATS, UNKNOWN_UNTIL_LOADED, check_diffusion_model, detect_variant


def quantized_file(tmp_path, fmt, encoding="metadata", **dit):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True, **dit), fmt, encoding)
    return write_safetensors(tmp_path / f"wan2.2_t2v_{fmt}_{encoding}.safetensors", tensors, metadata)


@pytest.mark.parametrize("fmt", sorted(QUANT_STORAGE))
def test_every_format_in_metadata_is_named_with_its_block_linears(tmp_path, fmt):
    info = detect_variant(quantized_file(tmp_path, fmt))
    quant = info.quantization
    assert (info.variant, quant.encodings, quant.problems) == ("t2v_a14b", ("metadata",), [])
    assert quant.description == f"{fmt}, 20 of 20 block linears; the rest bf16"
    assert info.precision_label == f"{fmt} (ComfyUI quantized)"
    assert check_diffusion_model(info.path).variant == "t2v_a14b"


@pytest.mark.parametrize("fmt", sorted(QUANT_STORAGE))
def test_comfy_quant_tensors_alone_count_the_layers_format_unknown_until_loaded(tmp_path, fmt):
    info = detect_variant(quantized_file(tmp_path, fmt, "comfy_quant"))
    quant = info.quantization
    assert (quant.encodings, quant.problems) == (("comfy_quant tensors",), [])
    assert quant.description == "unknown until loaded, 20 of 20 block linears; the rest bf16"
    assert info.precision_label == "ComfyUI quantized (format read when it loads)"


def test_metadata_names_the_format_of_layers_that_also_carry_comfy_quant_tensors(tmp_path):
    tensors, _ = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "mxfp8", "comfy_quant")
    _, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "mxfp8")
    quant = detect_variant(write_safetensors(tmp_path / "both.safetensors", tensors, metadata)).quantization
    assert quant.encodings == ("metadata", "comfy_quant tensors")
    assert quant.description == "mxfp8, 20 of 20 block linears; the rest bf16"


def test_mixed_formats_are_listed_most_block_linears_first(tmp_path):
    tensors = wan_dit(16, 16, dtype="BF16", all_linears=True)
    layers = [n[:-len(".weight")] for n in tensors if ".ffn." in n]
    tensors, fp8_meta = quantize(tensors, "float8_e4m3fn", layers=layers)
    rest = [n[:-len(".weight")] for n in tensors if "_attn." in n and n.endswith(".weight")]
    tensors, nvfp4_meta = quantize(tensors, "nvfp4", layers=rest)
    merged = json.loads(nvfp4_meta["_quantization_metadata"])
    merged["layers"].update(json.loads(fp8_meta["_quantization_metadata"])["layers"])
    path = write_safetensors(tmp_path / "mixed.safetensors", tensors, {"_quantization_metadata": json.dumps(merged)})
    assert detect_variant(path).quantization.description == \
        "nvfp4, 16 of 20 block linears; float8_e4m3fn, 4 of 20 block linears; the rest bf16"


def test_legacy_scaled_fp8_reads_as_float8_e4m3fn_and_keeps_its_label(tmp_path):
    info = detect_variant(write_safetensors(tmp_path / "s.safetensors", wan_dit(16, 16, fp8_scaled=True)))
    assert info.quantization.encodings == ("scaled_fp8",)
    assert info.quantization.description == "float8_e4m3fn, 2 of 6 block linears; the rest float8_e4m3fn"
    assert info.precision_label == "fp8 scaled"


def test_plain_files_carry_no_quantization(tmp_path):
    info = detect_variant(write_safetensors(tmp_path / "p.safetensors", wan_dit(16, 16, dtype="BF16")))
    assert info.quantization is None and info.precision_label == "bfloat16"


def test_a14b_shaped_nvfp4_header_counts_400_block_linears_and_their_bytes(tmp_path):
    dim, ffn_dim, layers = 5120, 13824, 40
    tensors, metadata = quantize(wan_dit(16, 16, dim=dim, ffn_dim=ffn_dim, layers=layers, dtype="BF16",
                                         all_linears=True), "nvfp4")
    path = write_safetensors(tmp_path / "wan2.2_t2v_high_noise_14B_nvfp4.safetensors", tensors, metadata)
    info = detect_variant(path)
    quant = info.quantization
    assert (info.variant, info.size_class, quant.problems) == ("t2v_a14b", "14B", [])
    assert quant.description == "nvfp4, 400 of 400 block linears; the rest bf16"
    # nvfp4: half a byte a weight, one F8_E4M3 block scale per 16 weights, one F32 tensor scale a layer.
    linear_bytes = lambda out, inp: out * inp // 2 + out * inp // 16 + 4  # noqa: E731
    per_block = 8 * linear_bytes(dim, dim) + linear_bytes(ffn_dim, dim) + linear_bytes(dim, ffn_dim)
    (use,) = quant.formats
    assert (use.format, use.block_linears, use.layers, use.bytes) == ("nvfp4", 400, 400, layers * per_block)
    assert use.bytes == 7_903_643_200
    assert quant.total_bytes == info.tensor_bytes == os.path.getsize(path) - 8 - \
        int.from_bytes(Path(path).read_bytes()[:8], "little")


def bad_metadata_file(tmp_path, tensors, layers):
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    return write_safetensors(tmp_path / "bad.safetensors", tensors, metadata)


def test_metadata_naming_a_missing_layer_is_a_problem_naming_it(tmp_path):
    tensors, _ = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "int8_tensorwise")
    path = bad_metadata_file(tmp_path, tensors, {"blocks.7.self_attn.q": {"format": "int8_tensorwise"}})
    assert detect_variant(path).quantization.problems == [
        "layer blocks.7.self_attn.q is quantized as int8_tensorwise but the file has no blocks.7.self_attn.q.weight"]


def test_a_dtype_that_cannot_hold_the_format_is_a_problem_naming_the_layer(tmp_path):
    tensors, _ = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "float8_e4m3fn")
    path = bad_metadata_file(tmp_path, tensors, {"blocks.0.ffn.0": {"format": "nvfp4"}})
    assert detect_variant(path).quantization.problems == [
        "layer blocks.0.ffn.0 is declared nvfp4, but its weight is stored as F8_E4M3, which cannot hold nvfp4 "
        "(it needs U8)",
        "layer blocks.0.ffn.0 is declared nvfp4, but its weight_scale is stored as F32 (it needs F8_E4M3 or U8)",
        "layer blocks.0.ffn.0 is declared nvfp4 but has no blocks.0.ffn.0.weight_scale_2"]


def test_a_packed_weight_of_the_wrong_width_is_a_problem(tmp_path):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "nvfp4")
    tensors["blocks.1.ffn.2.weight"] = ("U8", (128, 256))
    path = write_safetensors(tmp_path / "wide.safetensors", tensors, metadata)
    assert detect_variant(path).quantization.problems == [
        "layer blocks.1.ffn.2 is declared nvfp4, which packs two values a byte, so its weight's last dim must be "
        "128 (half of 256 inputs), but it is [128, 256]"]


def test_mxfp8_scales_must_be_e8m0(tmp_path):
    tensors, metadata = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "mxfp8")
    tensors["blocks.0.self_attn.k.weight_scale"] = ("F32", (128, 4))
    path = write_safetensors(tmp_path / "mx.safetensors", tensors, metadata)
    assert detect_variant(path).quantization.problems == [
        "layer blocks.0.self_attn.k is declared mxfp8, but its weight_scale is stored as F32 (it needs F8_E8M0 or U8)"]


def test_a_format_comfyui_does_not_know_is_a_problem(tmp_path):
    tensors, _ = quantize(wan_dit(16, 16, dtype="BF16", all_linears=True), "nvfp4")
    path = bad_metadata_file(tmp_path, tensors, {"blocks.0.self_attn.q": {"format": "nvfp8"}})
    assert detect_variant(path).quantization.problems == [
        "layer blocks.0.self_attn.q: format 'nvfp8' is not one ComfyUI knows (it knows float8_e4m3fn, float8_e5m2, "
        "nvfp4, mxfp8, int8_tensorwise, convrot_w4a4, asym_w4a8_int8)"]


def test_unreadable_metadata_is_a_problem(tmp_path):
    tensors = wan_dit(16, 16, dtype="BF16")
    path = write_safetensors(tmp_path / "j.safetensors", tensors, {"_quantization_metadata": "{not json"})
    assert detect_variant(path).quantization.problems == [
        'the _quantization_metadata header entry is not JSON with a "layers" map, so ComfyUI cannot read it']


def core_quant_algos_keys():
    """QUANT_ALGOS' keys from comfy/quant_ops.py's source: the dict literal and each QUANT_ALGOS["x"] = ..."""
    checkout = Path(os.environ.get("WANFIT_CORE_0_33_0") or Path.home() / "ComfyUI-0.33.0")
    source = checkout / "comfy" / "quant_ops.py"
    if not source.is_file():
        pytest.skip(f"no ComfyUI 0.33.0 checkout at {checkout} (set WANFIT_CORE_0_33_0)")
    keys = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == "QUANT_ALGOS" and isinstance(node.value, ast.Dict):
                keys |= {key.value for key in node.value.keys}
            if isinstance(target, ast.Subscript) and getattr(target.value, "id", None) == "QUANT_ALGOS":
                keys.add(target.slice.value)
    return keys


def test_known_formats_equal_the_cores_quant_algos():
    assert set(QUANT_FORMATS) == core_quant_algos_keys() == set(QUANT_STORAGE)
    assert UNKNOWN_UNTIL_LOADED not in QUANT_FORMATS
