"""The plan sized from a diffusion model file's header (.safetensors or .gguf), GGUF quantizations planned for
ComfyUI-GGUF's loader, and the files the plan refuses (naming the file and the fix)."""

import json
import os
import struct

import pytest

from tests.model_files import quantize, sd15_unet, wan_dit, write_safetensors
from tests.unit.test_plan_formats import A14B_CHECKPOINT, loaded_bytes, run_cli, wan_checkpoint
from wanfit.core import core_from_version
from wanfit.errors import InvalidInputError, WanFitError
from wanfit.models import ModelMismatchError
from wanfit.models.gguf_header import GGML_TYPES, GGUFFileError
from wanfit.plan import device_for_gpu, plan_from_options
from wanfit.plan.footprint import (GGUF_DTYPES, I2V_A14B_EXPERT, T2V_A14B_EXPERT, TI2V_5B, WanTransformerConfig,
                                   transformer_weight_bytes)
from wanfit.plan.gguf import GGUF_QUANTS
from wanfit.plan.model_file import LLAMA_FILE_TYPES, size_model_file
from wanfit.units import BYTES_PER_GIB

RAM = 64 * BYTES_PER_GIB


def card(name="RTX 4090"):
    return lambda: device_for_gpu(name, RAM)




@pytest.fixture(scope="module")
def nvfp4_expert(tmp_path_factory):
    """A header-only T2V-A14B expert (real shapes, sparse zero data) quantized to nvfp4 as comfy/ops.py stores it."""
    tensors, metadata = quantize({name: ("BF16", shape) for name, shape in A14B_CHECKPOINT.items()}, "nvfp4")
    return write_safetensors(tmp_path_factory.mktemp("files") / "wan2.2_t2v_low_noise_14B_nvfp4.safetensors",
                             tensors, metadata)


# --- safetensors --------------------------------------------------------------------------------------------------

def test_an_nvfp4_expert_is_sized_from_its_header_and_says_so(nvfp4_expert):
    result = plan_from_options(card(), None, model_file=str(nvfp4_expert))
    assert result.model_variant == "t2v_a14b" and result.weight_dtype == "nvfp4"
    assert result.model_weight_bytes == loaded_bytes(A14B_CHECKPOINT, "nvfp4") == 8_379_455_168
    sizing = f"sized from {nvfp4_expert}: 7.8 GB, nvfp4 400 of 400 block linears; the rest bf16"
    assert result.model_file_sizing == sizing and result.model_file == str(nvfp4_expert)
    assert f"diffusion model {sizing} (both experts planned at this size)" in result.reasons
    assert f"Model file: {sizing}" in result.summary()
    assert any(reason.startswith("weights nvfp4 (") and "from the model file; computed" in reason
               for reason in result.reasons)


def test_the_file_wins_over_the_formula_where_they_differ(tmp_path):
    # a file whose FFN down projections stay bf16 (as some nvfp4 files keep them): larger than the formula says
    tensors = {name: ("BF16", shape) for name, shape in A14B_CHECKPOINT.items()}
    layers = [name[:-len(".weight")] for name in tensors if name.endswith(".weight") and ".ffn.2" not in name
              and (".self_attn." in name or ".cross_attn." in name or ".ffn.0" in name) and "norm" not in name]
    tensors, metadata = quantize(tensors, "nvfp4", layers=layers)
    path = write_safetensors(tmp_path / "mixed.safetensors", tensors, metadata)
    result = plan_from_options(card(), "t2v_a14b", model_file=str(path))
    assert result.model_weight_bytes > transformer_weight_bytes(T2V_A14B_EXPERT, "nvfp4") + 4 * 10**9
    assert "nvfp4 360 of 400 block linears; the rest bf16" in result.model_file_sizing


@pytest.mark.parametrize("kwargs, weight_dtype", [(dict(dtype="F16"), "fp16"), (dict(dtype="BF16"), "bf16"),
                                                  (dict(fp8_scaled=True), "fp8_scaled")])
def test_plain_and_fp8_scaled_files_plan_their_own_dtype(tmp_path, kwargs, weight_dtype):
    path = write_safetensors(tmp_path / "model.safetensors", wan_dit(48, 48, **kwargs))
    result = plan_from_options(card(), None, model_file=str(path))
    assert result.model_variant == "ti2v_5b" and result.weight_dtype == weight_dtype
    assert result.model_file_sizing.startswith(f"sized from {path}: ")


def test_cli_sizes_from_the_file_and_takes_its_variant(nvfp4_expert):
    result = run_cli("--tier", "PROSUMER_24GB", "--system-ram-gb", "64", "--core", "0.33.0",
                     "--model-file", str(nvfp4_expert))
    assert result.returncode == 0, result.stderr
    assert "WanFit plan: T2V-A14B" in result.stdout
    assert f"Model file: sized from {nvfp4_expert}: 7.8 GB, nvfp4 400 of 400 block linears" in result.stdout


def test_a_forced_dtype_the_file_does_not_store_is_refused(nvfp4_expert):
    with pytest.raises(InvalidInputError, match=r"model_file=.* is invalid: expected a t2v_a14b file stored as "
                                                r"fp8_scaled\. Fix: it is a t2v_a14b file stored as nvfp4"):
        plan_from_options(card(), "t2v_a14b", weight_dtype="fp8_scaled", model_file=str(nvfp4_expert))


def test_a_file_of_another_variant_is_refused(nvfp4_expert):
    with pytest.raises(InvalidInputError, match="plan model_variant t2v_a14b with weight_dtype nvfp4"):
        plan_from_options(card(), "ti2v_5b", model_file=str(nvfp4_expert))


def test_a_file_the_core_cannot_load_is_refused_naming_the_file(nvfp4_expert):
    with pytest.raises(InvalidInputError) as refused:
        plan_from_options(card(), None, model_file=str(nvfp4_expert), core=core_from_version("0.3.64"))
    assert str(refused.value).startswith(f"model_file='{nvfp4_expert}"[:40])
    assert "expected a file ComfyUI 0.3.64 loads" in str(refused.value) and "from 0.8.2 on" in str(refused.value)


def _raw(path, data):
    path.write_bytes(data)
    return str(path)


def _hostile_files(tmp_path):
    good = wan_dit(16, 16)
    unpacked, metadata = quantize({k: v for k, v in good.items()}, "nvfp4")
    unpacked["blocks.0.ffn.0.weight"] = ("U8", (256, 128))  # declared nvfp4, not packed two values a byte
    header = json.dumps({"a": {"dtype": "F16", "shape": "12", "data_offsets": [0, 2]}}).encode()
    return {
        "truncated": (str(write_safetensors(tmp_path / "truncated.safetensors", good, drop_tail_bytes=100)),
                      "truncated"),
        "huge header length": (_raw(tmp_path / "huge.safetensors", struct.pack("<Q", 10**12) + b"{}"),
                               "not a safetensors header length"),
        "non-JSON": (_raw(tmp_path / "nonjson.safetensors", struct.pack("<Q", 6) + b"{nope}"),
                     "not valid safetensors JSON"),
        "shape not a list": (_raw(tmp_path / "shape.safetensors", struct.pack("<Q", len(header)) + header + b"\0\0"),
                             "not a list of whole numbers"),
        "wrong packed shape": (str(write_safetensors(tmp_path / "packed.safetensors", unpacked, metadata)),
                               "packs two values a byte"),
        "not WAN": (str(write_safetensors(tmp_path / "sd15.safetensors", sd15_unet())), "Not a WAN 2.2 model"),
    }


@pytest.mark.parametrize("case", ["truncated", "huge header length", "non-JSON", "shape not a list",
                                  "wrong packed shape", "not WAN"])
def test_a_hostile_safetensors_file_is_refused_naming_it_with_the_fix(tmp_path, case):
    path, reason = _hostile_files(tmp_path)[case]
    with pytest.raises(WanFitError) as refused:
        plan_from_options(card(), None, model_file=path)
    assert path in str(refused.value) and reason in str(refused.value) and "Fix:" in str(refused.value)


# --- GGUF ---------------------------------------------------------------------------------------------------------

def test_the_ggml_type_table_is_the_gguf_packages():
    gguf = pytest.importorskip("gguf")
    for number, (name, block, size) in GGML_TYPES.items():
        assert gguf.GGMLQuantizationType(number).name == name
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(number)] == (block, size)
    for number, name in LLAMA_FILE_TYPES.items():
        assert gguf.LlamaFileType(number).name in (f"MOSTLY_{name}", "ALL_F32")


# Published WAN 2.2 GGUFs (QuantStack's Hugging Face repos, converted from the fp16 files): file bytes, and the header
# before their tensors (67,968 bytes for an A14B expert's 1,095 tensors, 51,168 for TI2V-5B's 825).
PUBLISHED_GGUF_BYTES = {
    (T2V_A14B_EXPERT, "gguf_q4_k_m"): 9_650_090_496, (T2V_A14B_EXPERT, "gguf_q3_k_s"): 6_513_373_696,
    (I2V_A14B_EXPERT, "gguf_q8_0"): 15_406_608_896, (I2V_A14B_EXPERT, "gguf_q6_k"): 12_003_652_096,
    (I2V_A14B_EXPERT, "gguf_q5_k_m"): 10_792_055_296, (I2V_A14B_EXPERT, "gguf_q4_k_m"): 9_651_728_896,
    (I2V_A14B_EXPERT, "gguf_q3_k_s"): 6_515_012_096,
    (TI2V_5B, "gguf_q8_0"): 5_400_179_040, (TI2V_5B, "gguf_q6_k"): 4_211_683_680, (TI2V_5B, "gguf_q5_k_m"): 3_810_603_360,
    (TI2V_5B, "gguf_q5_k_s"): 3_559_928_160, (TI2V_5B, "gguf_q5_1"): 3_866_636_640, (TI2V_5B, "gguf_q5_0"): 3_642_503_520,
    (TI2V_5B, "gguf_q4_k_m"): 3_433_116_000, (TI2V_5B, "gguf_q4_k_s"): 3_116_380_512, (TI2V_5B, "gguf_q4_1"): 3_253_219_680,
    (TI2V_5B, "gguf_q4_0"): 3_029_086_560, (TI2V_5B, "gguf_q3_k_m"): 2_547_790_176, (TI2V_5B, "gguf_q3_k_s"): 2_294_755_680,
    (TI2V_5B, "gguf_q2_k"): 1_853_862_240,
}
PUBLISHED_GGUF_HEADER_BYTES = {T2V_A14B_EXPERT: 67_968, I2V_A14B_EXPERT: 67_968, TI2V_5B: 51_168}


@pytest.mark.parametrize("config, name", list(PUBLISHED_GGUF_BYTES), ids=lambda value: getattr(value, "name", value))
def test_the_planned_gguf_size_is_the_published_files_tensors_to_the_byte(config, name):
    published = PUBLISHED_GGUF_BYTES[config, name] - PUBLISHED_GGUF_HEADER_BYTES[config]
    assert transformer_weight_bytes(config, name) == published


def test_a14b_expert_sizes_per_gguf_quantization():
    sizes = {name: transformer_weight_bytes(T2V_A14B_EXPERT, name) for name in GGUF_DTYPES}
    assert sizes["gguf_f16"] == sizes["gguf_bf16"] == 28_577_638_528
    assert sizes["gguf_q2_k"] < sizes["gguf_q3_k_s"] < sizes["gguf_q3_k_m"] < sizes["gguf_q4_k_s"] < sizes["gguf_q4_k_m"]
    # GGUF keeps every tensor as stored, on the CPU too
    assert transformer_weight_bytes(TI2V_5B, "gguf_q8_0", upcast_to_fp32=True) == transformer_weight_bytes(
        TI2V_5B, "gguf_q8_0")


def test_q4_k_m_mixes_v_and_ffn_down_as_llama_quantize_does():
    quant = GGUF_QUANTS["gguf_q4_k_m"]
    assert [quant.linear_type(f"blocks.0.{name}", 0) for name in ("self_attn.q", "cross_attn.v", "ffn.0", "ffn.2")] == [
        "Q4_K", "Q6_K", "Q4_K", "Q6_K"]
    q3 = GGUF_QUANTS["gguf_q3_k_m"]
    assert [q3.linear_type("blocks.0.self_attn.v", index) for index in (0, 1, 2)] == ["Q5_K", "Q5_K", "Q4_K"]


@pytest.mark.parametrize("name", ["gguf_q8_0", "gguf_q4_k_m", "gguf_f16"])
def test_gguf_plans_on_partial_loading_with_a_note(name):
    result = plan_from_options(card(), "t2v_a14b", weight_dtype=name)
    assert result.weight_dtype == name and result.memory_manager == "partial_loading"
    assert result.model_weight_bytes == transformer_weight_bytes(T2V_A14B_EXPERT, name)
    assert result.weight_compute == "dequantized per layer"
    assert "GGUF: a GGUF " in result.summary() and "ComfyUI-GGUF's Unet Loader (GGUF)" in result.gguf_note
    assert any("dynamic VRAM does not place it" in reason for reason in result.reasons)
    assert "--disable-dynamic-vram" not in result.launch_args


def test_gguf_on_the_cpu_is_not_upcast():
    result = plan_from_options(lambda: __import__("wanfit.plan", fromlist=["cpu_device"]).cpu_device(RAM * 2),
                               "ti2v_5b", 640, 352, 17, weight_dtype="gguf_q8_0")
    assert result.model_weight_bytes == transformer_weight_bytes(TI2V_5B, "gguf_q8_0")
    assert result.weight_compute == "dequantized per layer"


TINY = WanTransformerConfig("tiny", dim=256, ffn_dim=512, num_layers=2, num_heads=2, in_dim=16, out_dim=16)


def write_gguf(path, quant="Q8_0", arch="wan", file_type=True, skip_v=False):
    """A tiny T2V WAN GGUF as ComfyUI-GGUF's tools write one from an fp16 model (as the published WAN 2.2 GGUFs
    are): the 5-D patch embedding F32 (fix_5d_tensors.py), every other tensor F16 but the block linears, which are
    in `quant` (Q4_K_M: v and ffn.2 in Q6_K, raw bytes)."""
    gguf = pytest.importorskip("gguf")
    import numpy

    types = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if file_type:
        writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{quant}"))
    for name, shape in wan_checkpoint(TINY.dim, TINY.ffn_dim, TINY.num_layers, TINY.in_dim, TINY.out_dim).items():
        data = numpy.zeros(shape, dtype=numpy.float32)
        block_linear = name.startswith("blocks.") and len(shape) == 2
        if len(shape) == 5:
            writer.add_tensor(name, data, raw_dtype=types.F32)
        elif len(shape) != 2 or ".modulation" in name or data.size <= 1024 or not block_linear or quant == "F16":
            writer.add_tensor(name, data.astype(numpy.float16), raw_dtype=types.F16)
        elif quant == "Q8_0":
            writer.add_tensor(name, gguf.quants.quantize(data, types.Q8_0), raw_dtype=types.Q8_0)
        else:
            kind = types.Q6_K if name.endswith((".v.weight", ".ffn.2.weight")) else types.Q4_K
            block, size = gguf.GGML_QUANT_SIZES[kind]
            writer.add_tensor(name, numpy.zeros((shape[0], shape[1] // block * size), numpy.uint8), raw_dtype=kind)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M", "F16"])
def test_a_gguf_is_sized_from_its_tensor_table(tmp_path, quant):
    gguf = pytest.importorskip("gguf")
    path = write_gguf(tmp_path / f"wan2.2_t2v_tiny-{quant}.gguf", quant)
    stored = sum(int(tensor.n_bytes) for tensor in gguf.GGUFReader(path).tensors)
    name = f"gguf_{quant.lower()}"
    assert stored == transformer_weight_bytes(TINY, name)  # the formula is what the tools write
    sized = size_model_file(path)
    assert (sized.kind, sized.variant, sized.weight_dtype, sized.stored_bytes) == ("gguf", "t2v_a14b", name, stored)
    result = plan_from_options(card(), None, model_file=path)
    assert result.weight_dtype == name and result.model_weight_bytes == stored
    assert result.model_file_sizing.startswith(f"sized from {path}: 0.0 GB, GGUF {quant}, 20 block linears; tensors ")
    assert result.memory_manager == "partial_loading" and result.gguf_note


def test_a_gguf_without_file_type_takes_its_block_linears_type(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", "Q8_0", file_type=False)
    assert size_model_file(path).weight_dtype == "gguf_q8_0"


def test_a_gguf_of_another_architecture_is_refused(tmp_path):
    path = write_gguf(tmp_path / "flux.gguf", arch="flux")
    with pytest.raises(ModelMismatchError, match="is not a WAN GGUF: its general.architecture is 'flux', not 'wan'"):
        size_model_file(path)


def _gguf_bytes(tmp_path):
    return open(write_gguf(tmp_path / "good.gguf"), "rb").read()


@pytest.mark.parametrize("case, reason", [
    ("truncated header", "ends inside its header"), ("truncated data", "it is truncated"),
    ("huge count", "plausible"), ("not GGUF", "not b'GGUF'"), ("version 9", "GGUF version 9"),
    ("huge string", "byte metadata key"),
])
def test_a_hostile_gguf_is_refused_naming_it_with_the_fix(tmp_path, case, reason):
    data = _gguf_bytes(tmp_path)
    bad = {"truncated header": data[:200], "truncated data": data[:-64], "not GGUF": b"GGML" + data[4:],
           "huge count": data[:8] + struct.pack("<Q", 10**12) + data[16:],
           "version 9": data[:4] + struct.pack("<I", 9) + data[8:],
           "huge string": data[:24] + struct.pack("<Q", 10**15) + data[32:]}[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(bad)
    with pytest.raises(GGUFFileError) as refused:
        plan_from_options(card(), None, model_file=str(path))
    assert str(path) in str(refused.value) and reason in str(refused.value) and "Fix:" in str(refused.value)


def test_a_gguf_with_wrong_tensor_shapes_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy

    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_tensor("head.modulation", numpy.zeros((1, 2, 256), numpy.float32))
    writer.add_tensor("blocks.0.ffn.0.weight", numpy.zeros((512, 256), numpy.float32))
    path = tmp_path / "shapes.gguf"
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = bytearray(path.read_bytes())
    # make the ffn weight Q4_K with 256-wide rows declared 100 wide: its blocks of 256 cannot tile a row
    name = b"blocks.0.ffn.0.weight"
    at = data.index(name) + len(name)
    data[at + 4:at + 12] = struct.pack("<Q", 100)
    data[at + 20:at + 24] = struct.pack("<I", 12)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFFileError, match="whose blocks of 256 values do not divide its rows"):
        size_model_file(str(path))
    # and a GGUF with WAN's name but no WAN model in it
    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_tensor("something.weight", numpy.zeros((4, 4), numpy.float32))
    other = tmp_path / "other.gguf"
    writer.write_header_to_file(path=other)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelMismatchError, match="is a WAN GGUF that looks like .*Fix: pick a WAN 2.2 TI2V-5B or A14B"):
        size_model_file(str(other))


def test_a_pipe_named_as_a_model_is_refused_without_opening_it(tmp_path):
    for name in ("pipe.gguf", "pipe.safetensors"):
        path = tmp_path / name
        os.mkfifo(path)
        with pytest.raises(WanFitError, match="regular file|not a model file|Not a model file") as refused:
            size_model_file(str(path))
        assert str(path) in str(refused.value)
