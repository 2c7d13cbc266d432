"""Sage-attention patcher without a GPU and without ComfyUI: the selection table, verification, install
hints and per-model patching. The override's layout conversions and fallbacks are checked against
ComfyUI's own attention in tests/host/test_attention_node.py."""

import copy
import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tests.attention_kernels import NanKernel, ReferenceKernel, make_inputs
from wanfit import attention
from wanfit.attention import (AttentionCapabilities, MODES, SDPA, find_override, install_hint,
                              make_attention_override, patch_model_attention, resolve_attention, select_kernel,
                              verify_kernel)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    (NanKernel(), "NaN/Inf"),
    (lambda q, k, v, **kw: ReferenceKernel()(q, k, v, **kw) + 0.5 * torch.randn_like(q), "verification failed"),
    (lambda q, k, v, **kw: q[..., :64], "output shape"),
])
def test_verify_kernel_rejects_wrong_kernels(bad_kernel, words):
    ok, _, reason = verify_kernel(bad_kernel, "cpu", torch.float32, heads=2, tokens=128)
    assert not ok and words in reason, reason


def test_failed_verification_falls_back_with_the_reason():
    kernel, spec, selection = resolve_attention(
        "auto", caps((8, 9), "2.2.0"), verify_dtype="float32", verify_device="cpu",
        kernel_loader=lambda name: (NanKernel(), None))
    assert kernel is None and selection.kernel_name == SDPA
    assert "NaN/Inf" in selection.reason and "qk_int8_pv_fp8_cuda" in selection.reason


def test_a_kernel_is_verified_once_per_process():
    kernel = ReferenceKernel()
    for _ in range(2):
        found, _, selection = resolve_attention("auto", caps((8, 9), "2.2.0"), verify_dtype="float32",
                                                verify_device="cpu", kernel_loader=lambda name: (kernel, None))
        assert found is kernel and "verified" in selection.reason, selection
    assert len(kernel.calls) == 1, f"verified {len(kernel.calls)} times"


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


# ---------------------------------------------------------------- CLI

def test_doctor_cli_reports_sdpa_and_why():
    result = subprocess.run([sys.executable, "-m", "wanfit", "doctor"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SDPA" in result.stdout and "no CUDA GPU" in result.stdout, result.stdout
    assert f"{sys.executable} -m pip install sageattention" in result.stdout


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


def test_clones_share_one_override():
    """ModelPatcher.clone() deep-copies model_options; counts and the guard must stay in one place."""
    override = make_attention_override(None, SDPA)
    options = {"transformer_options": {"optimized_attention_override": override}}
    assert copy.deepcopy(options)["transformer_options"]["optimized_attention_override"] is override


# ---------------------------------------------------------------- registry adapters (fake packages)

def test_registry_passes_kernel_kwargs_and_protects_k(monkeypatch):
    """Fake sageattention / sageattn3 modules: fixed kwargs reach the kernel, and an in-place smooth_k
    (sageattn3, sageattention 1.x) never changes the k that ComfyUI's fallback would reuse."""
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
    assert spec.layouts == ("HND",) and spec.mutates_k
    q, k, v = make_inputs(1, 2, 12, 12, 64, True)
    k_before = k.clone()
    for layout, (q_in, k_in, v_in) in (("HND", (q, k, v)), ("NHD", (t.transpose(1, 2) for t in (q, k, v)))):
        out = kernel(q_in, k_in, v_in, tensor_layout=layout)
        out = out.transpose(1, 2) if layout == "NHD" else out
        torch.testing.assert_close(k, k_before, rtol=0, atol=0)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=1e-4, atol=1e-5)
