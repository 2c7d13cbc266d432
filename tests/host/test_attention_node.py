"""WanFit Sage Attention on a real WAN forward through /prompt (CPU: the fallback path), and its override
against this core's own attention (comfy.ldm.modules.attention.attention_pytorch, in-process): a reference
kernel in sageattention's calling convention proves the layout conversions for every ComfyUI call shape;
a NaN kernel and a raising one prove the guards."""

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
import torch

from tests.attention_kernels import NanKernel, ReferenceKernel, make_inputs
from tests.comfy_import import import_comfy

from tests.fixtures.generate import TINY_LAYERS
from tests.host import graphs
from tests.host.latents import load_saved_latent

SELF_CALLS_PER_BLOCK = 1
CROSS_CALLS_PER_BLOCK = 1  # text cross-attention; the A14B experts carry no image cross-attention


def attention_graph(seed=3):
    sampler = {"seed": seed, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
    # 1 step at cfg 1.0 is exactly one diffusion-model forward (ComfyUI skips the uncond pass at cfg 1).
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": graphs.T2V_HIGH, "weight_dtype": "default"}},
        "2": {"class_type": "WanFitSageAttention", "inputs": {"model": ["1", 0], "mode": "auto",
                                                              "keep_cross_attention_on_sdpa": False,
                                                              "nan_check_calls": 8}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 8.0}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "5": graphs.text_encode("a lighthouse in a storm", 7),
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                  "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "9": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["3", 0], "samples": ["7", 0],
                                                                "reset_counts": True}},
        "10": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["4", 0], "samples": ["8", 0],
                                                                 "reset_counts": True}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "latents/patched"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "latents/unpatched"}},
        # the patched model, patched again with mode "disabled": ComfyUI's own attention must come back
        "13": {"class_type": "WanFitSageAttention", "inputs": {"model": ["2", 0], "mode": "disabled",
                                                               "keep_cross_attention_on_sdpa": False,
                                                               "nan_check_calls": 8}},
        "14": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["13", 0], "shift": 8.0}},
        "15": {"class_type": "KSampler", "inputs": {"model": ["14", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                    "latent_image": ["6", 0], **sampler}},
        "16": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["14", 0], "samples": ["15", 0],
                                                                 "reset_counts": True}},
        "17": {"class_type": "SaveLatent", "inputs": {"samples": ["16", 0], "filename_prefix": "latents/disabled"}},
    }


def test_auto_mode_on_cpu_falls_back_and_every_attention_call_goes_through_the_override(client, tmp_path):
    entry = client.run(attention_graph(), timeout_s=300)
    outputs = entry["outputs"]

    patch_report = outputs["2"]["text"][0]
    assert "attention mode requested: auto" in patch_report
    assert "reason: no CUDA GPU" in patch_report, patch_report

    counts = outputs["9"]["wanfit_attention"][0]
    forwards = 1
    assert counts["self_attention_calls"] == TINY_LAYERS * SELF_CALLS_PER_BLOCK * forwards, counts
    assert counts["cross_attention_calls"] == TINY_LAYERS * CROSS_CALLS_PER_BLOCK * forwards, counts
    assert counts["kernel_calls"] == 0
    assert counts["fallback_calls"] == counts["self_attention_calls"] + counts["cross_attention_calls"]
    assert counts["fallback_reasons"] == {"no sage kernel selected": counts["fallback_calls"]}
    assert counts["backend"].startswith("SDPA fallback"), counts["backend"]
    assert "calls: kernel 0, fallback 4 (self-attention 2, cross-attention 2)" in outputs["9"]["text"][0]

    # the unpatched model in the same graph stayed unpatched, and so did "disabled"
    assert outputs["10"]["text"][0].startswith("no WanFit attention patch on this model")
    assert outputs["16"]["text"][0].startswith("no WanFit attention patch on this model")
    assert "disabled" in outputs["13"]["text"][0]

    patched = load_saved_latent(client, entry, "11", tmp_path / "patched")
    unpatched = load_saved_latent(client, entry, "12", tmp_path / "unpatched")
    disabled = load_saved_latent(client, entry, "17", tmp_path / "disabled")
    assert patched.shape == (1, 16, 2, 8, 8)
    assert unpatched.std() > 0
    torch.testing.assert_close(patched, unpatched, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(disabled, unpatched, rtol=1e-5, atol=1e-6)


# --- the override against this core's own attention, in-process ---------------------------------------


@pytest.fixture(scope="module")
def core_attention(comfyui):
    """This core's attention_pytorch, the function ComfyUI hands the override on a CPU."""
    import_comfy(comfyui)
    import comfy.ldm.modules.attention as attention_module

    return attention_module


def call_override(override, function, q, k, v, heads, **kwargs):
    """Call the override exactly as comfy's wrap_attn does: override(func, *args, _inside_attn_wrapper=True, ...)."""
    kwargs.setdefault("transformer_options", {})
    kwargs["_inside_attn_wrapper"] = True
    return override(function, q, k, v, heads=heads, **kwargs)


def core_result(core_attention, q, k, v, heads, **kwargs):
    return core_attention.attention_pytorch(q, k, v, heads, **kwargs)


SHAPES = [  # (batch, heads, q_len, k_len, head_dim)
    (1, 1, 16, 16, 128),  # the tiny WAN of the host tests: dim 128, one head
    (2, 3, 24, 24, 64),
    (1, 2, 20, 7, 128),  # cross-attention: 7 context tokens
    (2, 4, 9, 33, 32),
]


@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}h{}q{}k{}d{}".format(*s))
def test_every_call_shape_matches_the_cores_attention(core_attention, skip_reshape, skip_output_reshape, shape):
    from wanfit.attention import make_attention_override

    batch, heads, q_len, k_len, head_dim = shape
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", compute_dtype=torch.float64)
    q, k, v = make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float64)
    shapes = dict(skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)

    out = call_override(override, core_attention.attention_pytorch, q, k, v, heads, **shapes)
    expected = core_result(core_attention, q, k, v, heads, **shapes)

    assert out.shape == expected.shape, f"output shape {tuple(out.shape)}, ComfyUI gives {tuple(expected.shape)}"
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert kernel.calls[0][0] == ("HND" if skip_reshape else "NHD"), "layout must match attention_sage's choice"
    assert override.stats.kernel_calls == 1 and override.stats.fallback_calls == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.integers(1, 2), heads=st.integers(1, 4), q_len=st.integers(1, 20), k_len=st.integers(1, 20),
       head_dim=st.sampled_from([8, 16, 64]), skip_reshape=st.booleans(), skip_output_reshape=st.booleans())
def test_layout_conversion_property(core_attention, batch, heads, q_len, k_len, head_dim, skip_reshape,
                                    skip_output_reshape):
    from wanfit.attention import make_attention_override

    override = make_attention_override(ReferenceKernel(), "reference", compute_dtype=torch.float64)
    q, k, v = make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float64)
    shapes = dict(skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    out = call_override(override, core_attention.attention_pytorch, q, k, v, heads, **shapes)
    torch.testing.assert_close(out, core_result(core_attention, q, k, v, heads, **shapes), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_fp32_inputs_are_cast_for_the_kernel_and_back(core_attention, skip_reshape):
    from wanfit.attention import make_attention_override

    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 32, 32, 64, skip_reshape, dtype=torch.float32)
    out = call_override(override, core_attention.attention_pytorch, q, k, v, 2, skip_reshape=skip_reshape)
    expected = core_result(core_attention, q, k, v, 2, skip_reshape=skip_reshape)
    assert kernel.calls[0][1] == torch.bfloat16, f"kernel saw {kernel.calls[0][1]}, sage kernels need fp16/bf16"
    assert out.dtype == torch.float32, "ComfyUI must get back the dtype it passed in"
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.02)


def test_half_inputs_go_to_the_kernel_unchanged(core_attention):
    from wanfit.attention import make_attention_override

    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 8, 8, 64, False, dtype=torch.float16)
    out = call_override(override, core_attention.attention_pytorch, q, k, v, 2)
    assert kernel.calls[0][1] == torch.float16 and out.dtype == torch.float16


def test_masks_route_to_the_cores_attention(core_attention):
    from wanfit.attention import make_attention_override

    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 8, 8, 64, False)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = float("-inf")
    out = call_override(override, core_attention.attention_pytorch, q, k, v, 2, mask=mask)
    torch.testing.assert_close(out, core_result(core_attention, q, k, v, 2, mask=mask))
    assert kernel.calls == [], "a sage kernel ignores masks: masked calls must never reach it"
    assert override.stats.kernel_calls == 0 and override.stats.fallback_calls == 1
    assert override.stats.fallback_reasons == {"mask (sage kernels take no mask)": 1}


def test_unsupported_head_dim_routes_to_the_cores_attention(core_attention):
    from wanfit.attention import KernelSpec, make_attention_override

    spec = KernelSpec("reference", "none", "none", 2, (), head_dims=(64, 128))
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", kernel_spec=spec)
    q, k, v = make_inputs(1, 2, 8, 8, 40, False)
    call_override(override, core_attention.attention_pytorch, q, k, v, 2)
    assert kernel.calls == []
    assert override.stats.fallback_reasons == {"head_dim 40 unsupported by reference": 1}
    q, k, v = make_inputs(1, 1, 8, 8, 128, False)
    call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    assert override.stats.kernel_calls == 1


def test_cross_attention_can_stay_on_sdpa(core_attention):
    from wanfit.attention import make_attention_override

    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", keep_cross_attention_on_sdpa=True)
    function = core_attention.attention_pytorch
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, function, q, k, v, 1)  # self-attention
    q, k, v = make_inputs(1, 1, 16, 5, 128, False)
    call_override(override, function, q, k, v, 1)  # cross-attention (text context)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, function, q, k, v, 1, transformer_options={"wanfit_attention_kind": "cross"})  # a hint
    stats = override.stats
    assert (stats.self_attention_calls, stats.cross_attention_calls) == (1, 2)
    assert (stats.kernel_calls, stats.fallback_calls) == (1, 2)
    assert stats.fallback_reasons == {"cross-attention kept on SDPA": 2}


def test_no_kernel_is_a_counting_pass_through_to_the_cores_attention(core_attention):
    from wanfit.attention import SDPA, make_attention_override

    override = make_attention_override(None, SDPA, selection_reason="no CUDA GPU")
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    out = call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    torch.testing.assert_close(out, core_result(core_attention, q, k, v, 1), rtol=0, atol=0)
    assert override.stats.fallback_calls == 1 and override.stats.kernel_calls == 0
    assert "SDPA fallback (ComfyUI attention_pytorch)" in override.report()


def test_nan_guard_recomputes_on_the_cores_attention_and_switches_it_off(core_attention):
    from wanfit.attention import make_attention_override

    kernel = NanKernel()
    override = make_attention_override(kernel, "qk_int8_pv_fp8_cuda", nan_check_calls=4)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    first = call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    torch.testing.assert_close(first, core_result(core_attention, q, k, v, 1))  # the run goes on, correct
    assert "NaN/Inf" in override.disabled_reason
    second = call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    assert torch.isfinite(second).all()
    assert kernel.calls == 1, "after the guard trips, the kernel must not run again"
    assert (override.stats.kernel_calls, override.stats.fallback_calls) == (0, 2)
    report = override.report()
    assert "switched off" in report and "NaN/Inf" in report, report


def test_nan_from_the_inputs_is_not_blamed_on_the_kernel(core_attention):
    from wanfit.attention import make_attention_override

    override = make_attention_override(ReferenceKernel(), "reference")
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    q[0, 0, 0] = float("nan")
    call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    assert override.disabled_reason == "", "SDPA is NaN too, so the kernel is not at fault"


def test_nan_guard_checks_only_the_first_calls(core_attention):
    from wanfit.attention import make_attention_override

    override = make_attention_override(ReferenceKernel(), "reference", nan_check_calls=2)
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    for _ in range(5):
        call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    assert override.stats.nan_checks == 2 and override.stats.kernel_calls == 5


def test_kernel_errors_fall_back_and_switch_off_after_repeats(core_attention):
    from wanfit.attention import make_attention_override

    def broken(q, k, v, tensor_layout="HND", is_causal=False):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    override = make_attention_override(broken, "qk_int8_pv_fp16_cuda", max_kernel_errors=2)
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    for _ in range(3):
        torch.testing.assert_close(call_override(override, core_attention.attention_pytorch, q, k, v, 1),
                                   core_result(core_attention, q, k, v, 1))
    assert "raised 2 times" in override.disabled_reason
    assert override.stats.fallback_reasons["kernel error: RuntimeError"] == 2
    assert override.stats.fallback_reasons["kernel switched off"] == 1


def test_the_cores_global_sage_is_not_used_as_the_fallback(core_attention, monkeypatch):
    """With --use-sage-attention ComfyUI's own function is its attention_sage: the guard recomputes on the
    core's attention_pytorch instead (here attention_sage itself would need a GPU)."""
    from wanfit.attention import make_attention_override

    def attention_sage(q, k, v, heads, **kwargs):
        raise AssertionError("the fallback must not be ComfyUI's sage attention")

    monkeypatch.setattr(core_attention, "attention_sage", attention_sage)
    attention_sage.__module__ = core_attention.__name__
    override = make_attention_override(NanKernel(), "qk_int8_pv_fp8_cuda")
    for skip_reshape in (False, True):
        q, k, v = make_inputs(1, 2, 8, 8, 64, skip_reshape)
        out = call_override(override, core_attention.attention_sage, q, k, v, 2, skip_reshape=skip_reshape)
        torch.testing.assert_close(out, core_result(core_attention, q, k, v, 2, skip_reshape=skip_reshape))
    assert "NaN/Inf" in override.disabled_reason


def test_a_patched_clone_runs_its_kernel(core_attention):
    from wanfit.attention import AttentionCapabilities, KERNELS, find_override, patch_model_attention

    class Patcher:  # ModelPatcher's clone() shallow-copies model_options (the worst case)
        def __init__(self, model_options=None):
            self.model_options = model_options if model_options is not None else {"transformer_options": {}}
            self.load_device = torch.device("cpu")

        def clone(self):
            return Patcher(self.model_options.copy())

    caps = AttentionCapabilities(cuda_available=True, compute_capability=(8, 9), device_name="NVIDIA test",
                                 sage_version="2.2.0")
    patched, report = patch_model_attention(Patcher(), "qk_int8_pv_fp8_cuda", caps=caps, verify=False,
                                            kernel_loader=lambda name: (ReferenceKernel(), KERNELS[name]))
    override = find_override(patched)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, core_attention.attention_pytorch, q, k, v, 1)
    assert override.stats.kernel_calls == 1
    assert "backend: sageattention qk_int8_pv_fp8_cuda" in report and "calls:" in override.report()
