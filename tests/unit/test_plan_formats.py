"""The planner and ComfyUI's native quantized formats: sizes, native or dequantized compute, the suggestion, refusals."""

import os
from pathlib import Path
import re
import subprocess
import sys

import pytest

from tests.model_files import DTYPE_BYTES, quantize
from wanfit.choices import PLAN_WEIGHT_DTYPES
from wanfit.core import core_from_version
from wanfit.errors import InvalidInputError
from wanfit.models.quantization import QUANT_FORMATS
from wanfit.plan import Job, Overrides, cpu_device, device_for_gpu, plan, plan_from_options
from wanfit.plan.footprint import QUANTIZED_FORMATS, T2V_A14B_EXPERT, TI2V_5B, transformer_weight_bytes
from wanfit.models.core_support import CoreQuantSupport
from wanfit.plan.formats import FORMAT_SUPPORT, check_core_loads, core_loads, core_quant_support
from wanfit.units import BYTES_PER_GIB

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEW_FORMATS = ("float8", "int8", "mxfp8", "nvfp4")
A14B_JOB = Job(1280, 720, 81)
RAM = 64 * BYTES_PER_GIB


def run_cli(*args):
    env = dict(os.environ)
    env.pop("GPU_TIER", None)
    env.pop("COMFYUI_PATH", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, "-m", "wanfit", "plan", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


# --- an independent count: every tensor of a WAN DiT checkpoint, by name and shape --------------------------------

def wan_checkpoint(dim, ffn_dim, layers, in_dim, out_dim, text_dim=4096, freq_dim=256):
    """{name: shape} of a Wan 2.x DiT state dict as its .safetensors files list it (T2V / TI2V, no img_emb)."""
    t = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,),
         "text_embedding.0.weight": (dim, text_dim), "text_embedding.0.bias": (dim,),
         "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
         "time_embedding.0.weight": (dim, freq_dim), "time_embedding.0.bias": (dim,),
         "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
         "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
         "head.head.weight": (out_dim * 4, dim), "head.head.bias": (out_dim * 4,), "head.modulation": (1, 2, dim)}
    for i in range(layers):
        block = f"blocks.{i}."
        for attention in ("self_attn", "cross_attn"):
            for name in "qkvo":
                t[f"{block}{attention}.{name}.weight"] = (dim, dim)
                t[f"{block}{attention}.{name}.bias"] = (dim,)
            t[f"{block}{attention}.norm_q.weight"] = (dim,)
            t[f"{block}{attention}.norm_k.weight"] = (dim,)
        t[f"{block}norm3.weight"] = (dim,)
        t[f"{block}norm3.bias"] = (dim,)
        t[f"{block}ffn.0.weight"] = (ffn_dim, dim)
        t[f"{block}ffn.0.bias"] = (ffn_dim,)
        t[f"{block}ffn.2.weight"] = (dim, ffn_dim)
        t[f"{block}ffn.2.bias"] = (dim,)
        t[f"{block}modulation"] = (1, 6, dim)
    return t


def loaded_bytes(checkpoint, comfy_format):
    """Bytes once ComfyUI loads the checkpoint quantized in `comfy_format` (tests/model_files.quantize stores the
    block linears as comfy/ops.py does): quantized tensors as stored, the patch embedding fp32, the rest 16-bit."""
    tensors, _ = quantize({name: ("BF16", shape) for name, shape in checkpoint.items()}, comfy_format)
    total = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for extent in shape:
            count *= extent
        if name.startswith("patch_embedding."):
            total += 4 * count
        elif dtype != "BF16":
            total += DTYPE_BYTES[dtype] * count
        else:
            total += 2 * count
    return total


A14B_CHECKPOINT = wan_checkpoint(5120, 13824, 40, 16, 16)
TI2V_CHECKPOINT = wan_checkpoint(3072, 14336, 30, 48, 48)


@pytest.mark.parametrize("name", NEW_FORMATS)
@pytest.mark.parametrize("config, checkpoint", [(T2V_A14B_EXPERT, A14B_CHECKPOINT), (TI2V_5B, TI2V_CHECKPOINT)],
                         ids=["a14b", "ti2v_5b"])
def test_planned_bytes_equal_a_count_of_the_checkpoint_quantized_in_the_format(name, config, checkpoint):
    assert transformer_weight_bytes(config, name) == loaded_bytes(checkpoint, QUANTIZED_FORMATS[name].quant_algo)


def test_a14b_expert_sizes_per_format_match_the_issue():
    sizes = {name: transformer_weight_bytes(T2V_A14B_EXPERT, name) for name in NEW_FORMATS + ("fp8_scaled",)}
    assert sizes["nvfp4"] == 8_379_455_168  # about 8.4 GB with its scales (7.8 GiB as the plan prints it)
    assert sizes["float8"] == sizes["int8"] == sizes["fp8_scaled"] == 14_526_731_968  # 13.5 GiB
    assert round((sizes["mxfp8"] - sizes["fp8_scaled"]) / 1e9, 2) == 0.44  # one e8m0 scale per 32 weights


def test_block_scales_are_padded_to_the_group_as_comfy_kitchen_pads():
    # nvfp4 pads rows and columns to 16: a 100 x 40 layer is stored as 112 x 48, 4 bits each, one fp8 scale per 16
    assert QUANTIZED_FORMATS["nvfp4"].linear_bytes(100, 40) == 112 * 48 // 2 + 112 * 3 + 4
    assert QUANTIZED_FORMATS["mxfp8"].linear_bytes(100, 40) == 128 * 64 + 128 * 2


def test_every_planned_format_is_one_comfyui_knows():
    assert {fmt.quant_algo for fmt in QUANTIZED_FORMATS.values()} <= set(QUANT_FORMATS)


def test_the_node_widget_keeps_the_old_values_first():
    assert PLAN_WEIGHT_DTYPES[:6] == ("auto", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "fp8_scaled")
    assert set(PLAN_WEIGHT_DTYPES[6:10]) == set(NEW_FORMATS)
    assert all(name.startswith("gguf_") for name in PLAN_WEIGHT_DTYPES[10:])


# --- options and CLI ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW_FORMATS)
def test_options_plan_each_format_sized_from_it(name):
    result = plan_from_options(lambda: device_for_gpu("RTX 4090", RAM), "t2v_a14b", weight_dtype=name)
    assert result.weight_dtype == name
    assert result.model_weight_bytes == transformer_weight_bytes(T2V_A14B_EXPERT, name)


@pytest.mark.parametrize("alias, name", [("int8_tensorwise", "int8"), ("float8_e4m3fn", "float8")])
def test_comfyui_format_names_are_accepted_as_the_plans_names(alias, name):
    result = plan_from_options(lambda: device_for_gpu("RTX 4090", RAM), "ti2v_5b", weight_dtype=alias)
    assert result.weight_dtype == name


@pytest.mark.parametrize("name", NEW_FORMATS)
def test_cli_accepts_each_format(name):
    result = run_cli("--tier", "PROSUMER_32GB", "--system-ram-gb", "64", "--model", "t2v_a14b", "--core", "0.33.0",
                     "--weight-dtype", name)
    assert result.returncode == 0, result.stderr
    assert f"Weights {name}:" in result.stdout
    assert f"Weights {name} computed native on NVIDIA RTX 5090" in result.stdout


def test_cli_refuses_an_unknown_format_naming_the_field_and_the_choices():
    result = run_cli("--tier", "PROSUMER_24GB", "--core", "0.33.0", "--weight-dtype", "q4_k_m")
    assert result.returncode == 2
    assert "weight_dtype='q4_k_m' is invalid" in result.stderr
    assert ", ".join(PLAN_WEIGHT_DTYPES) in result.stderr


def test_cli_refuses_a_format_the_core_cannot_load_naming_the_first_core():
    result = run_cli("--tier", "PROSUMER_24GB", "--core", "0.3.64", "--weight-dtype", "nvfp4")
    assert result.returncode == 2
    assert "weight_dtype='nvfp4' is invalid: expected a format ComfyUI 0.3.64 loads" in result.stderr
    assert "from 0.8.2 on" in result.stderr


@pytest.mark.parametrize("version, name, loads", [("0.25.0", "int8", False), ("0.28.0", "int8", True),
                                                  ("0.16.4", "mxfp8", False), ("0.18.1", "mxfp8", True),
                                                  ("0.3.68", "float8", False), ("0.3.76", "float8", True)])
def test_first_core_per_format(version, name, loads):
    def planned():
        return plan_from_options(lambda: device_for_gpu("RTX 4090", RAM), "ti2v_5b", weight_dtype=name,
                                 core=core_from_version(version))
    if loads:
        assert planned().weight_dtype == name
    else:
        with pytest.raises(InvalidInputError, match="weight_dtype"):
            planned()


# --- native or dequantized per card ------------------------------------------------------------------------------

@pytest.mark.parametrize("card, name, mode", [
    ("RTX 5090", "nvfp4", "native"), ("B200", "nvfp4", "native"), ("RTX PRO 6000", "mxfp8", "native"),
    ("RTX 4090", "nvfp4", "dequantized per layer"), ("H100 80GB", "mxfp8", "dequantized per layer"),
    ("H100 80GB", "float8", "native"), ("L4", "float8", "native"), ("RTX 3090", "float8", "dequantized per layer"),
    ("A100 80GB", "float8", "dequantized per layer"), ("RTX 3090", "int8", "native"), ("A100 80GB", "int8", "native"),
])
def test_the_plan_says_native_or_dequantized_for_the_card(card, name, mode):
    result = plan(device_for_gpu(card, RAM), "t2v_a14b", A14B_JOB, Overrides(weight_dtype=name))
    assert result.weight_compute == mode
    weights_reason = next(reason for reason in result.reasons if reason.startswith(f"weights {name}"))
    assert f"computed {mode}:" in weights_reason
    assert f"Weights {name} computed {mode} on NVIDIA {card}" in result.summary()
    if mode != "native":
        assert "the memory saving stays, the speed-up does not" in weights_reason


@pytest.mark.parametrize("name, mode", [("int8", "native"), ("nvfp4", "dequantized per layer")])
def test_the_cpu_plan_says_how_it_computes_the_format(name, mode):
    result = plan(cpu_device(RAM * 2), "ti2v_5b", Job(640, 352, 17), Overrides(weight_dtype=name))
    assert result.weight_compute == mode
    assert any(f"computed {mode}" in reason for reason in result.reasons)


def test_16_bit_and_fp8_plans_carry_no_compute_line():
    result = plan(device_for_gpu("RTX 4090", RAM), "t2v_a14b", A14B_JOB)
    assert result.weight_dtype == "fp8_scaled" and result.weight_compute == ""
    assert " computed " not in result.summary()


# --- the suggestion ---------------------------------------------------------------------------------------------

def test_auto_suggests_nvfp4_where_fp8_streams_and_keeps_its_own_choice():
    result = plan(device_for_gpu("RTX 4080", RAM), "t2v_a14b", A14B_JOB)
    assert result.weight_dtype == "fp8_scaled" and result.streamed_model_bytes > 0
    assert result.format_suggestion.startswith("nvfp4 would keep the whole expert on the GPU (7.8 GB")
    assert "dequantized per layer on this card" in result.format_suggestion
    assert "Suggestion: nvfp4" in result.summary()


def test_a_32_gb_blackwell_card_gets_nvfp4_native_where_fp8_streams():
    result = plan(device_for_gpu("RTX 5090", RAM), "t2v_a14b", Job(1280, 720, 161, batch=2))
    assert result.weight_dtype == "fp8_scaled" and result.streamed_model_bytes > 0
    assert result.format_suggestion.startswith("nvfp4 would keep the whole expert")
    assert "native on this card" in result.format_suggestion


@pytest.mark.parametrize("card, variant, job, overrides", [
    ("RTX 4090", "ti2v_5b", Job(1280, 704, 121), Overrides()),  # fp16 fully resident: nothing to gain
    ("RTX 4090", "t2v_a14b", A14B_JOB, Overrides(weight_dtype="fp8_scaled")),  # the user chose
    ("RTX 5090", "t2v_a14b", A14B_JOB, Overrides()),  # fp8 already resident
])
def test_no_suggestion_where_nothing_streams_or_the_dtype_is_forced(card, variant, job, overrides):
    assert plan(device_for_gpu(card, RAM), variant, job, overrides).format_suggestion == ""


def test_no_suggestion_of_a_format_the_core_cannot_load():
    result = plan(device_for_gpu("RTX 4080", RAM), "t2v_a14b", A14B_JOB, core=core_from_version("0.3.64"))
    assert result.streamed_model_bytes > 0 and result.format_suggestion == ""


def test_readme_table_is_the_generated_one():
    table = subprocess.run([sys.executable, "bench/plan_matrix.py", "--formats"], cwd=REPO, capture_output=True,
                           text=True, timeout=120, check=True).stdout
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        assert table in handle.read(), "regenerate: python bench/plan_matrix.py --formats (README, quantized formats)"


def _release_quant_algos(root):
    """The QUANT_ALGOS keys a release's comfy/quant_ops.py defines (as a dict literal key or QUANT_ALGOS["key"] =)."""
    source = root / "comfy" / "quant_ops.py"
    if not source.is_file() or "QUANT_ALGOS = {" not in source.read_text(encoding="utf-8"):
        return set()
    text = source.read_text(encoding="utf-8").split("QUANT_ALGOS = {", 1)[1]
    return set(re.findall(r'^    "(\w+)": \{', text.split("\n}", 1)[0], re.M)) | set(re.findall(r'QUANT_ALGOS\["(\w+)"\] =', text))


RELEASES = sorted(Path.home().glob("ComfyUI-[0-9]*"))


def test_the_planner_reads_first_cores_from_the_loaders_table():
    for name, support in FORMAT_SUPPORT.items():
        assert support.first_core == core_from_version(QUANT_FORMATS[support.quant_algo].first_core).version


def test_a_running_core_is_asked_for_its_own_formats_not_the_table():
    # a core that reports 0.33.0 but whose QUANT_ALGOS lacks nvfp4 (comfy-kitchen without it, a fork): refused,
    # naming what the core's table lists; the version table alone would have planned it
    support = CoreQuantSupport(frozenset({"float8_e4m3fn", "int8_tensorwise"}), True, "comfy.quant_ops.QUANT_ALGOS")
    core = core_from_version("0.33.0")
    assert core_loads("nvfp4", core) and not core_loads("nvfp4", core, support)
    with pytest.raises(InvalidInputError, match="its comfy.quant_ops.QUANT_ALGOS lists float8_e4m3fn, int8_tensorwise"):
        check_core_loads("nvfp4", core, support)
    check_core_loads("int8", core, support)
    # and the other way: an old version whose table has the format plans it
    assert core_loads("int8", core_from_version("0.25.0"), support)


def test_a_plan_ahead_reads_no_running_core():
    assert core_quant_support(core_from_version("0.33.0")) is None


@pytest.mark.skipif(not RELEASES, reason="no ComfyUI releases at ~/ComfyUI-<version>")
@pytest.mark.parametrize("root", RELEASES, ids=lambda root: root.name)
def test_first_core_table_matches_each_release_quant_algos(root):
    core = core_from_version(root.name.split("-", 1)[1])
    algos = _release_quant_algos(root)
    for name, fmt in QUANTIZED_FORMATS.items():
        assert (tuple(core.version) >= FORMAT_SUPPORT[name].first_core) == (fmt.quant_algo in algos), (root, name)
