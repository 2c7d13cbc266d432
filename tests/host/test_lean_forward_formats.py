"""WanFit Lean Forward on ComfyUI's native quantized formats, on the quantized-matmul path (tests/quantized_wan.py),
against the core's own blocks, in-process on the CPU: fp32, bf16 and fp16.

Exact means 0: the replay runs the core's layers on the core's own inputs. nvfp4 without a stored input_scale
takes its activation scale from the whole call; the replay must give every token chunk that scale.
Skipped on a core without quantized formats (0.3.64).
"""

import pytest
import torch

from tests import quantized_wan
from tests.comfy_import import import_comfy

# convrot_w4a4 and asym_w4a8_int8 on a model 256 wide (quantized_wan.WIDE_FORMATS)
FORMATS = ("float8_e4m3fn", "int8_tensorwise", "nvfp4", "mxfp8", "convrot_w4a4", "asym_w4a8_int8")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CHUNK = 97  # 720 tokens in 8 chunks, the last one short


@pytest.fixture(scope="module")
def comfy(comfyui):
    import_comfy(comfyui)
    import comfy.ops  # noqa: F401
    if not quantized_wan.core_formats():
        pytest.skip("this core has no quantized formats (comfy.quant_ops.QUANT_ALGOS)")
    import comfy

    return comfy


@pytest.fixture
def fresh_checks():
    from wanfit import replay_check

    replay_check.forget_checks()
    yield replay_check
    replay_check.forget_checks()


def run(model, dtype, transformer_options, fmt=None):
    with torch.inference_mode():
        return model(*quantized_wan.inputs(dtype, fmt=fmt), transformer_options=transformer_options)


def lean_options(mode="on", checked=True):
    from wanfit import lean_forward

    return lean_forward.lean_transformer_options(quantized_wan.LAYERS, chunk_tokens=CHUNK, mode=mode, checked=checked)


# every dtype on the formats whose arithmetic depends on it; the weight-only 4-bit formats in bf16
CASES = [(fmt, dtype) for fmt in FORMATS for dtype in DTYPES
         if fmt not in quantized_wan.WIDE_FORMATS or dtype == torch.bfloat16]


@pytest.mark.parametrize("fmt, dtype", CASES, ids=[f"{fmt}-{str(dtype).replace('torch.', '')}" for fmt, dtype in CASES])
def test_the_lean_forward_equals_the_cores_blocks_on_every_format(comfy, fresh_checks, fmt, dtype):
    if fmt not in quantized_wan.core_formats():
        pytest.skip(f"this core has no {fmt}")
    model = quantized_wan.quantized_wan(fmt, dtype)
    stock = run(model, dtype, {}, fmt)
    lean = run(model, dtype, lean_options(mode="on"), fmt)  # mode on: a failed self-check raises
    assert quantized_wan.relative_difference(lean, stock) == 0
    (check,) = fresh_checks.cached_checks()
    assert check.passed and check.difference == 0 and fmt in check.subject, check


def test_an_nvfp4_layer_without_input_scale_is_detected_from_the_layer(comfy):
    from wanfit.lean_forward import quantizes_input_per_call

    def first_layer(fmt, **kwargs):
        return quantized_wan.quantized_wan(fmt, torch.bfloat16, **kwargs).blocks[0].self_attn.q

    assert quantizes_input_per_call(first_layer("nvfp4"), torch.bfloat16, "cpu")
    assert not quantizes_input_per_call(first_layer("nvfp4", input_scale=True), torch.bfloat16, "cpu")
    for fmt in ("float8_e4m3fn", "int8_tensorwise", "mxfp8"):
        if fmt in quantized_wan.core_formats():
            assert not quantizes_input_per_call(first_layer(fmt), torch.bfloat16, "cpu"), fmt


def test_a_calibrated_nvfp4_file_with_input_scale_is_exact_too(comfy, fresh_checks):
    model = quantized_wan.quantized_wan("nvfp4", torch.bfloat16, input_scale=True)
    stock = run(model, torch.bfloat16, {})
    assert quantized_wan.relative_difference(run(model, torch.bfloat16, lean_options()), stock) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_a_drift_of_0_3_percent_fails_the_check_and_auto_runs_the_cores_blocks(comfy, fresh_checks, monkeypatch,
                                                                               dtype):
    """The core's block moved by 0.3 % of its largest output (a release that changed its arithmetic, or a replay
    that quantizes differently): the check must see it in bf16 and fp16, where an exact replay gives 0."""
    import comfy.ldm.wan.model as wan

    original = wan.WanAttentionBlock.forward

    def drifted(self, x, *args, **kwargs):
        out = original(self, x, *args, **kwargs)
        top = out.float().abs().amax()
        small = out.float().abs() < top / 8  # where a bf16 step is at most 0.1 % of the largest output
        return torch.where(small, out.float() + 3e-3 * top, out.float()).to(out.dtype)

    model = quantized_wan.quantized_wan("float8_e4m3fn", dtype)
    monkeypatch.setattr(wan.WanAttentionBlock, "forward", drifted)
    stock = run(model, dtype, {})
    out = run(model, dtype, lean_options(mode="auto"))
    (check,) = fresh_checks.cached_checks()
    assert not check.passed and 2.5e-3 <= check.difference <= 3.5e-3, check
    assert torch.equal(out, stock), "mode auto after a failed check runs the core's own blocks"


def test_a_check_on_one_format_is_not_reused_for_another(comfy, fresh_checks):
    """An fp8 model checked first, then an nvfp4 one in the same process: the second runs its own check."""
    from wanfit import lean_forward

    subjects = []
    for fmt in ("float8_e4m3fn", "nvfp4"):
        model = quantized_wan.quantized_wan(fmt, torch.bfloat16)
        block = model.blocks[0]
        subjects.append(lean_forward.check_subject("WanModel", block, torch.bfloat16, "cpu")[0])
        run(model, torch.bfloat16, lean_options())
    assert subjects[0] != subjects[1]
    checks = fresh_checks.cached_checks()
    assert [check.key[2:] for check in checks] == subjects, checks
    assert "nvfp4 (quantized matmul)" in checks[1].subject and "float8_e4m3fn" in checks[0].subject, checks


def test_each_report_quotes_the_check_of_its_own_model(comfy, fixtures, fresh_checks):
    """One model class at two dtypes in one process (as a Q8_0 then an F16 GGUF): the second model's report
    names no check before its own has run, then names its own, never the first model's."""
    import comfy.model_management
    import comfy.sd

    from wanfit import lean_forward

    path = str(fixtures["diffusion_models"]["wanfit_tiny_t2v_high_noise_14B.safetensors"])
    x, t, context = (torch.randn(1, 16, 3, 24, 40), torch.tensor([600.0]), torch.randn(1, 512, 4096))

    def patch_and_run(dtype):
        model = comfy.sd.load_diffusion_model(path, model_options={"dtype": dtype})
        lean_model, report = lean_forward.patch_model_lean(model, 97, mode="on")
        comfy.model_management.load_models_gpu([model])
        compute = model.model.get_dtype_inference()
        options = dict(lean_model.model_options["transformer_options"])
        with torch.inference_mode():
            model.model.diffusion_model(x.to(compute), t, context.to(compute), transformer_options=options)
        return report, lean_forward.lean_report(lean_model)

    first_report, first_after = patch_and_run(torch.float32)
    second_report, second_after = patch_and_run(torch.float16)
    assert "on the first step" in first_report and "on float32 weights" in first_after, (first_report, first_after)
    assert "on the first step" in second_report and "float32 weights" not in second_report, second_report
    assert "on float16 weights" in second_after and "float32 weights" not in second_after, second_after
    third_report, _ = patch_and_run(torch.float16)
    assert "on float16 weights" in third_report and "on the first step" not in third_report, third_report
