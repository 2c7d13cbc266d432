"""Sage-attention patcher without a GPU: a reference kernel in sageattention's calling convention proves
the layout conversions for every ComfyUI call shape; a NaN kernel proves the guard."""

import copy
import math
import os
import subprocess
import sys

from hypothesis import given, settings, strategies as st
import pytest
import torch
import torch.nn.functional as F

from wanfit import attention
from wanfit.attention import (AttentionCapabilities, KernelSpec, MODES, SDPA, find_override, install_hint,
                              make_attention_override, patch_model_attention, resolve_attention, select_kernel,
                              verify_kernel)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- references

def comfy_attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                            skip_output_reshape=False, **kwargs):
    """ComfyUI's attention_pytorch semantics (comfy/ldm/modules/attention.py), by hand, without ComfyUI."""
    comfy_attention_pytorch.calls += 1
    if skip_reshape:
        b, _, _, dim_head = q.shape
    else:
        b, _, dim_head = q.shape
        dim_head //= heads
        q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    if not skip_output_reshape:
        out = out.transpose(1, 2).reshape(b, -1, heads * dim_head)
    return out


comfy_attention_pytorch.calls = 0


class ReferenceKernel:
    """softmax(QK^T / sqrt(d)) V in sageattention's convention: kernel(q, k, v, tensor_layout, is_causal)."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
        assert tensor_layout in ("HND", "NHD")
        assert q.dtype == k.dtype == v.dtype
        self.calls.append((tensor_layout, q.dtype, tuple(q.shape), tuple(k.shape)))
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if is_causal:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        out = (scores.softmax(dim=-1) @ v.double()).to(q.dtype)
        return out.transpose(1, 2) if tensor_layout == "NHD" else out


def nan_kernel(q, k, v, tensor_layout="HND", is_causal=False, **kwargs):
    nan_kernel.calls += 1
    return torch.full_like(q, float("nan"))


nan_kernel.calls = 0


def make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def rand(length):
        shape = (batch, heads, length, head_dim) if skip_reshape else (batch, length, heads * head_dim)
        return torch.randn(shape, generator=generator).to(dtype)

    return rand(q_len), rand(k_len), rand(k_len)


def call_override(override, q, k, v, heads, **kwargs):
    """Call the override exactly as comfy's wrap_attn does: override(func, *args, **kwargs)."""
    kwargs.setdefault("transformer_options", {})
    kwargs["_inside_attn_wrapper"] = True
    return override(comfy_attention_pytorch, q, k, v, heads=heads, **kwargs)


SHAPES = [  # (batch, heads, q_len, k_len, head_dim)
    (1, 1, 16, 16, 128),  # the tiny WAN of the host tests: dim 128, one head
    (2, 3, 24, 24, 64),
    (1, 2, 20, 7, 128),  # cross-attention: 7 context tokens
    (2, 4, 9, 33, 32),
]


# ---------------------------------------------------------------- layout conversions

@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}h{}q{}k{}d{}".format(*s))
def test_every_call_shape_matches_comfy_attention(skip_reshape, skip_output_reshape, shape):
    batch, heads, q_len, k_len, head_dim = shape
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", compute_dtype=torch.float64)
    q, k, v = make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float64)

    out = call_override(override, q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    expected = comfy_attention_pytorch(q, k, v, heads, skip_reshape=skip_reshape,
                                       skip_output_reshape=skip_output_reshape)

    assert out.shape == expected.shape, f"output shape {tuple(out.shape)}, ComfyUI gives {tuple(expected.shape)}"
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert kernel.calls[0][0] == ("HND" if skip_reshape else "NHD"), "layout must match attention_sage's choice"
    assert override.stats.kernel_calls == 1 and override.stats.fallback_calls == 0


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 2), heads=st.integers(1, 4), q_len=st.integers(1, 20), k_len=st.integers(1, 20),
       head_dim=st.sampled_from([8, 16, 64]), skip_reshape=st.booleans(), skip_output_reshape=st.booleans())
def test_layout_conversion_property(batch, heads, q_len, k_len, head_dim, skip_reshape, skip_output_reshape):
    override = make_attention_override(ReferenceKernel(), "reference", compute_dtype=torch.float64)
    q, k, v = make_inputs(batch, heads, q_len, k_len, head_dim, skip_reshape, dtype=torch.float64)
    out = call_override(override, q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    expected = comfy_attention_pytorch(q, k, v, heads, skip_reshape=skip_reshape,
                                       skip_output_reshape=skip_output_reshape)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_fp32_inputs_are_cast_for_the_kernel_and_back(skip_reshape):
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 32, 32, 64, skip_reshape, dtype=torch.float32)
    out = call_override(override, q, k, v, 2, skip_reshape=skip_reshape)
    expected = comfy_attention_pytorch(q, k, v, 2, skip_reshape=skip_reshape)
    assert kernel.calls[0][1] == torch.bfloat16, f"kernel saw {kernel.calls[0][1]}, sage kernels need fp16/bf16"
    assert out.dtype == torch.float32, "ComfyUI must get back the dtype it passed in"
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.02)


def test_half_inputs_go_to_the_kernel_unchanged():
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 8, 8, 64, False, dtype=torch.float16)
    out = call_override(override, q, k, v, 2)
    assert kernel.calls[0][1] == torch.float16 and out.dtype == torch.float16


# ---------------------------------------------------------------- fallbacks

def test_masks_route_to_the_fallback():
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference")
    q, k, v = make_inputs(1, 2, 8, 8, 64, False)
    mask = torch.zeros(8, 8)
    mask[:, 4:] = float("-inf")
    out = call_override(override, q, k, v, 2, mask=mask)
    torch.testing.assert_close(out, comfy_attention_pytorch(q, k, v, 2, mask=mask))
    assert kernel.calls == [], "a sage kernel ignores masks: masked calls must never reach it"
    assert override.stats.kernel_calls == 0 and override.stats.fallback_calls == 1
    assert override.stats.fallback_reasons == {"mask (sage kernels take no mask)": 1}


def test_unsupported_head_dim_routes_to_the_fallback():
    spec = KernelSpec("reference", "none", "none", 2, (), head_dims=(64, 128))
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", kernel_spec=spec)
    q, k, v = make_inputs(1, 2, 8, 8, 40, False)
    call_override(override, q, k, v, 2)
    assert kernel.calls == []
    assert override.stats.fallback_reasons == {"head_dim 40 unsupported by reference": 1}
    q, k, v = make_inputs(1, 1, 8, 8, 128, False)
    call_override(override, q, k, v, 1)
    assert override.stats.kernel_calls == 1


def test_cross_attention_can_stay_on_sdpa():
    kernel = ReferenceKernel()
    override = make_attention_override(kernel, "reference", keep_cross_attention_on_sdpa=True)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, q, k, v, 1)  # self-attention
    q, k, v = make_inputs(1, 1, 16, 5, 128, False)
    call_override(override, q, k, v, 1)  # cross-attention (text context)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, q, k, v, 1, transformer_options={"wanfit_attention_kind": "cross"})  # explicit hint
    stats = override.stats
    assert (stats.self_attention_calls, stats.cross_attention_calls) == (1, 2)
    assert (stats.kernel_calls, stats.fallback_calls) == (1, 2)
    assert stats.fallback_reasons == {"cross-attention kept on SDPA": 2}


def test_no_kernel_is_a_counting_pass_through():
    override = make_attention_override(None, SDPA, selection_reason="no CUDA GPU")
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    before = comfy_attention_pytorch.calls
    out = call_override(override, q, k, v, 1)
    assert comfy_attention_pytorch.calls == before + 1
    torch.testing.assert_close(out, comfy_attention_pytorch(q, k, v, 1), rtol=0, atol=0)
    assert override.stats.fallback_calls == 1 and override.stats.kernel_calls == 0
    assert "SDPA fallback (ComfyUI comfy_attention_pytorch)" in override.report()


def test_nan_guard_recomputes_and_switches_to_sdpa():
    nan_kernel.calls = 0
    override = make_attention_override(nan_kernel, "qk_int8_pv_fp8_cuda", nan_check_calls=4)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    first = call_override(override, q, k, v, 1)
    torch.testing.assert_close(first, comfy_attention_pytorch(q, k, v, 1))  # the run goes on, correct
    assert "NaN/Inf" in override.disabled_reason
    second = call_override(override, q, k, v, 1)
    assert torch.isfinite(second).all()
    assert nan_kernel.calls == 1, "after the guard trips, the kernel must not run again"
    stats = override.stats
    assert (stats.kernel_calls, stats.fallback_calls) == (0, 2)
    report = override.report()
    assert "switched off" in report and "NaN/Inf" in report, report


def test_nan_from_the_inputs_is_not_blamed_on_the_kernel():
    override = make_attention_override(ReferenceKernel(), "reference")
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    q[0, 0, 0] = float("nan")
    call_override(override, q, k, v, 1)
    assert override.disabled_reason == "", "SDPA is NaN too, so the kernel is not at fault"


def test_nan_guard_checks_only_the_first_calls():
    override = make_attention_override(ReferenceKernel(), "reference", nan_check_calls=2)
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    for _ in range(5):
        call_override(override, q, k, v, 1)
    assert override.stats.nan_checks == 2 and override.stats.kernel_calls == 5


def test_kernel_errors_fall_back_and_switch_off_after_repeats():
    def broken(q, k, v, tensor_layout="HND", is_causal=False):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    override = make_attention_override(broken, "qk_int8_pv_fp16_cuda", max_kernel_errors=2)
    q, k, v = make_inputs(1, 1, 8, 8, 64, False)
    for _ in range(3):
        torch.testing.assert_close(call_override(override, q, k, v, 1), comfy_attention_pytorch(q, k, v, 1))
    assert "raised 2 times" in override.disabled_reason
    assert override.stats.fallback_reasons["kernel error: RuntimeError"] == 2
    assert override.stats.fallback_reasons["kernel switched off"] == 1


def test_clones_share_one_override():
    """ModelPatcher.clone() deep-copies model_options; counts and the guard must stay in one place."""
    override = make_attention_override(None, SDPA)
    options = {"transformer_options": {"optimized_attention_override": override}}
    assert copy.deepcopy(options)["transformer_options"]["optimized_attention_override"] is override


# ---------------------------------------------------------------- selection table

def caps(cc=None, sage="", sage3=False):
    return AttentionCapabilities(cuda_available=cc is not None, compute_capability=cc,
                                 device_name="NVIDIA test" if cc else "cpu", sage_version=sage,
                                 sage3_installed=sage3, torch_version="2.8.0", torch_cuda_version="12.8")


AUTO_TABLE = [  # (compute capability, sageattention version, expected kernel, words in the reason)
    (None, "2.2.0", SDPA, "no CUDA GPU"),
    (None, "", SDPA, "no CUDA GPU"),
    ((8, 9), "", SDPA, "not installed"),
    ((7, 5), "2.2.0", SDPA, "below sm80"),
    ((8, 9), "2.2.0", "qk_int8_pv_fp8_cuda", "FP8 PV"),
    ((12, 0), "2.2.0", "qk_int8_pv_fp8_cuda", "FP8 PV"),
    ((9, 0), "2.2.0", "qk_int8_pv_fp8_cuda_sm90", "Hopper"),
    ((8, 0), "2.2.0", "qk_int8_pv_fp16_cuda", "FP16 PV"),
    ((8, 6), "2.1.1", "qk_int8_pv_fp16_cuda", "FP16 PV"),
    ((8, 7), "2.2.0", "qk_int8_pv_fp16_triton", "Triton"),
    ((10, 0), "2.2.0", SDPA, "no kernel for sm100"),
    ((8, 9), "1.0.6", "sageattn", "Triton"),
    ((12, 0), "1.0.6", SDPA, "does not run on sm120"),
]


@pytest.mark.parametrize("cc, sage, expected, words", AUTO_TABLE)
def test_auto_selection_table(cc, sage, expected, words):
    selection = select_kernel("auto", caps(cc, sage))
    assert selection.kernel_name == expected, f"{cc} with sageattention {sage or 'absent'}: {selection}"
    assert words in selection.reason, f"reason {selection.reason!r} should mention {words!r}"


def test_missing_package_reason_gives_the_install_command():
    selection = select_kernel("auto", caps((8, 9), ""))
    assert f"{sys.executable} -m pip install sageattention" in selection.reason


EXPLICIT_TABLE = [  # (mode, compute capability, sage, sage3, expected kernel)
    ("disabled", (8, 9), "2.2.0", False, SDPA),
    ("qk_int8_pv_fp8_cuda", (8, 6), "2.2.0", False, SDPA),  # no FP8 tensor cores on Ampere
    ("qk_int8_pv_fp8_cuda", (8, 9), "2.2.0", False, "qk_int8_pv_fp8_cuda"),
    ("qk_int8_pv_fp8_cuda_sm90", (8, 9), "2.2.0", False, SDPA),
    ("qk_int8_pv_fp8_cuda_sm90", (9, 0), "2.2.0", False, "qk_int8_pv_fp8_cuda_sm90"),
    ("qk_int8_pv_fp16_cuda", (8, 9), "1.0.6", False, SDPA),  # 1.x has no CUDA kernels
    ("qk_int8_pv_fp16_triton", (8, 6), "2.2.0", False, "qk_int8_pv_fp16_triton"),
    ("sageattn", (8, 6), "1.0.6", False, "sageattn"),
    ("sageattn", (8, 7), "2.2.0", False, SDPA),  # sageattn's own dispatcher raises on sm87
    ("sageattn3", (12, 0), "", True, "sageattn3"),
    ("sageattn3", (12, 0), "", False, SDPA),
    ("sageattn3", (8, 9), "", True, SDPA),
    ("qk_int8_pv_fp8_cuda", None, "2.2.0", False, SDPA),
]


@pytest.mark.parametrize("mode, cc, sage, sage3, expected", EXPLICIT_TABLE)
def test_explicit_mode_table(mode, cc, sage, sage3, expected):
    selection = select_kernel(mode, caps(cc, sage, sage3))
    assert selection.kernel_name == expected, f"{mode} on {cc}: {selection}"
    assert selection.reason


def test_every_mode_is_known_and_unknown_modes_fall_back():
    assert set(MODES) - {"auto", "disabled"} == set(attention.KERNELS)
    assert select_kernel("flash", caps((8, 9), "2.2.0")).kernel_name == SDPA


def test_probe_on_this_machine_is_cpu_and_cached():
    first = attention.probe_capabilities("cpu")
    assert first is attention.probe_capabilities("cpu")
    assert not first.cuda_available and first.torch_version == torch.__version__


# ---------------------------------------------------------------- verification

def test_verify_kernel_accepts_a_correct_kernel():
    ok, error, reason = verify_kernel(ReferenceKernel(), "cpu", torch.float32, heads=2, tokens=256)
    assert ok and error < 1e-5, reason
    assert reason.startswith("verified")


@pytest.mark.parametrize("bad_kernel, words", [
    (nan_kernel, "NaN/Inf"),
    (lambda q, k, v, **kw: ReferenceKernel()(q, k, v, **kw) + 0.5 * torch.randn_like(q), "verification failed"),
    (lambda q, k, v, **kw: q[..., :64], "output shape"),
])
def test_verify_kernel_rejects_wrong_kernels(bad_kernel, words):
    ok, _, reason = verify_kernel(bad_kernel, "cpu", torch.float32, heads=2, tokens=128)
    assert not ok and words in reason, reason


def test_failed_verification_falls_back_with_the_reason():
    kernel, spec, selection = resolve_attention(
        "auto", caps((8, 9), "2.2.0"), verify_dtype="float32", verify_device="cpu",
        kernel_loader=lambda name: (nan_kernel, None))
    assert kernel is None and selection.kernel_name == SDPA
    assert "NaN/Inf" in selection.reason and "qk_int8_pv_fp8_cuda" in selection.reason


def test_import_failure_falls_back_with_the_reason():
    def loader(name):
        raise ImportError("libcudart.so.12: cannot open shared object file")

    kernel, _, selection = resolve_attention("auto", caps((8, 9), "2.2.0"), kernel_loader=loader)
    assert kernel is None and "failed to import" in selection.reason and "libcudart" in selection.reason


# ---------------------------------------------------------------- install hint, report

def test_install_hint_names_this_interpreter():
    hint = install_hint(caps((8, 9), ""))
    assert f"{sys.executable} -m pip install sageattention" in hint
    assert "git clone https://github.com/thu-ml/SageAttention" in hint and "--no-build-isolation" in hint
    assert "12.8" in hint and 'TORCH_CUDA_ARCH_LIST="8.9"' in hint


# ---------------------------------------------------------------- patching a model

class TinyPatcher:
    """Duck-typed ModelPatcher whose clone() shallow-copies model_options (the worst case)."""

    def __init__(self, model_options=None):
        self.model_options = model_options if model_options is not None else {"transformer_options": {}}
        self.load_device = torch.device("cpu")

    def clone(self):
        clone = TinyPatcher(self.model_options.copy())
        return clone


def test_patch_leaves_the_input_model_untouched():
    sentinel = object()
    original = TinyPatcher({"transformer_options": {"patches": {"x": [sentinel]}}, "other": 1})
    snapshot = {"transformer_options": dict(original.model_options["transformer_options"]), "other": 1}

    patched, report = patch_model_attention(original, "auto")

    assert original.model_options == snapshot, "the input model must stay unpatched"
    assert "optimized_attention_override" not in original.model_options["transformer_options"]
    override = find_override(patched)
    assert override is not None and override.kernel is None
    assert patched.model_options["transformer_options"]["patches"] == {"x": [sentinel]}, "other patches kept"
    assert "requested: auto" in report and "SDPA fallback" in report and "no CUDA GPU" in report, report


def test_disabled_removes_an_earlier_wanfit_patch():
    patched, _ = patch_model_attention(TinyPatcher(), "auto")
    unpatched, report = patch_model_attention(patched, "disabled")
    assert find_override(unpatched) is None and find_override(patched) is not None
    assert "unpatched" in report and "removed" in report


def test_plan_attention_backend_is_used_in_auto():
    plan = {"attention_backend": "qk_int8_pv_fp8_cuda", "keep_cross_attention_on_sdpa": True}
    patched, report = patch_model_attention(TinyPatcher(), "auto", plan=plan)
    override = find_override(patched)
    assert override.keep_cross_attention_on_sdpa
    assert "plan chose qk_int8_pv_fp8_cuda" in report, report


def test_patch_with_a_kernel_runs_it_through_the_clone():
    patched, report = patch_model_attention(
        TinyPatcher(), "qk_int8_pv_fp8_cuda", caps=caps((8, 9), "2.2.0"), verify=False,
        kernel_loader=lambda name: (ReferenceKernel(), attention.KERNELS[name]))
    override = find_override(patched)
    q, k, v = make_inputs(1, 1, 16, 16, 128, False)
    call_override(override, q, k, v, 1)
    assert override.stats.kernel_calls == 1
    assert "backend: sageattention qk_int8_pv_fp8_cuda" in report and "calls:" in override.report()


# ---------------------------------------------------------------- CLI

def test_doctor_cli_reports_sdpa_and_why():
    result = subprocess.run([sys.executable, "-m", "wanfit", "doctor"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SDPA" in result.stdout and "no CUDA GPU" in result.stdout, result.stdout
    assert f"{sys.executable} -m pip install sageattention" in result.stdout


# ---------------------------------------------------------------- registry adapters (fake packages)

def test_registry_passes_kernel_kwargs_and_protects_k(monkeypatch):
    """Fake sageattention / sageattn3 modules: fixed kwargs reach the kernel, and an in-place smooth_k
    (sageattn3, sageattention 1.x) never changes the k that ComfyUI's fallback would reuse."""
    import types

    seen = {}

    def fp8(q, k, v, tensor_layout="HND", is_causal=False, pv_accum_dtype=None, **kwargs):
        seen["pv_accum_dtype"] = pv_accum_dtype
        return ReferenceKernel()(q, k, v, tensor_layout=tensor_layout)

    def blackwell(q, k, v, attn_mask=None, is_causal=False, per_block_mean=True, **kwargs):
        assert q.shape[1] == 2, "sageattn3 takes HND only"
        k -= k.mean(dim=-2, keepdim=True)  # what sageattn3 does to its k
        return F.scaled_dot_product_attention(q, k, v)

    monkeypatch.setitem(sys.modules, "sageattention", types.SimpleNamespace(sageattn_qk_int8_pv_fp8_cuda=fp8))
    monkeypatch.setitem(sys.modules, "sageattn3", types.SimpleNamespace(sageattn3_blackwell=blackwell))

    kernel, spec = attention.load_kernel("qk_int8_pv_fp8_cuda")
    q, k, v = make_inputs(1, 2, 8, 8, 64, True)
    kernel(q, k, v, tensor_layout="HND")
    assert seen["pv_accum_dtype"] == "fp32+fp16"

    kernel, spec = attention.load_kernel("sageattn3")
    override = make_attention_override(kernel, "sageattn3", kernel_spec=spec, compute_dtype=torch.float32)
    q, k, v = make_inputs(1, 2, 12, 12, 64, False)
    k_before = k.clone()
    out = call_override(override, q, k, v, 2)
    torch.testing.assert_close(k, k_before, rtol=0, atol=0)
    torch.testing.assert_close(out, comfy_attention_pytorch(q, k, v, 2), rtol=1e-4, atol=1e-5)


def test_comfy_global_sage_is_not_used_as_the_fallback():
    """With --use-sage-attention ComfyUI's own function is attention_sage: the guard must recompute on SDPA."""
    def attention_sage(q, k, v, heads, **kwargs):
        raise AssertionError("the fallback must not be ComfyUI's sage attention")

    override = make_attention_override(nan_kernel, "qk_int8_pv_fp8_cuda")
    for skip_reshape in (False, True):
        q, k, v = make_inputs(1, 2, 8, 8, 64, skip_reshape)
        out = override(attention_sage, q, k, v, heads=2, skip_reshape=skip_reshape, transformer_options={})
        torch.testing.assert_close(out, comfy_attention_pytorch(q, k, v, 2, skip_reshape=skip_reshape))
    assert "NaN/Inf" in override.disabled_reason
