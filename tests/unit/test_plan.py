"""Planner: every plan fits the card and the RAM, or refuses saying what would fit."""

from dataclasses import replace as replace_field
import json
import math
from pathlib import Path
import subprocess
import sys

from hypothesis import given, settings, strategies as st
import pytest

from wanfit.decode import budget as decode_budget
from wanfit.core import core_from_version
from wanfit.device import DeviceInfo
from wanfit.errors import InvalidInputError, WanFitError
from wanfit.plan import (GPU_TIERS, Job, Overrides, Plan, PlanDoesNotFitError, cpu_device, device_for_gpu,
                         device_for_tier, plan, tier_for_vram)
from wanfit.plan import footprint
from wanfit.plan.build import build_plan, decode_outlook
from wanfit.plan.catalogue import VARIANTS
from wanfit.plan.launch import LaunchSituation, default_cache_ram_headroom_bytes, launch_flags
from wanfit.plan.search import search
from wanfit.plan.validation import plan_request

GIB = 2**30
OLDEST, NEWEST = core_from_version("0.3.64"), core_from_version("0.33.0")
CARDS = ["RTX 3070", "RTX 3060", "RTX 4080", "RTX 4090", "RTX 5090", "RTX A6000", "L40S", "H100 80GB", "H200"]
RAM_GB = [16, 32, 64, 117, 968]
JOBS = [
    ("ti2v_5b", Job(1280, 704, 121)),
    ("t2v_a14b", Job(832, 480, 81)),
    ("t2v_a14b", Job(1280, 720, 81)),
    ("i2v_a14b", Job(1280, 720, 81)),
]
MATRIX = [(card, ram, variant, job) for card in CARDS for ram in RAM_GB for variant, job in JOBS]


@pytest.mark.parametrize("card, ram_gb, variant, job", MATRIX,
                         ids=[f"{c}-{r}GB-{v}-{j.width}x{j.height}x{j.frames}" for c, r, v, j in MATRIX])
def test_matrix_plan_fits_or_refuses_usefully(card, ram_gb, variant, job):
    device = device_for_gpu(card, ram_gb * GIB)
    try:
        result = plan(device, variant, job)
    except PlanDoesNotFitError as error:
        message = str(error)
        assert "does not fit" in message and device.name in message
        assert "What would fit:" in message, message
        assert error.suggestions, message
        return
    limit = device.total_vram_bytes - result.reserve_vram_bytes
    assert result.predicted_peak_vram_bytes <= limit, f"VRAM {result.predicted_peak_vram_bytes / GIB:.2f} > {limit / GIB:.2f}"
    assert result.predicted_peak_ram_bytes <= ram_gb * GIB, f"RAM {result.predicted_peak_ram_bytes / GIB:.2f} > {ram_gb}"
    assert 0 <= result.resident_model_bytes <= result.model_weight_bytes
    assert result.resident_model_bytes + result.streamed_model_bytes == result.model_weight_bytes
    assert "--reserve-vram" in result.launch_args
    assert result.launch_env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert result.reasons


EXPECTED = [
    # card, RAM GB, variant, job, weight dtype (None: refused), text encoder device
    ("H100 80GB", 117, "t2v_a14b", Job(1280, 720, 81), "fp16", "gpu"),
    ("RTX 4090", 64, "t2v_a14b", Job(1280, 720, 81), "fp8_scaled", "gpu"),
    ("RTX 5090", 64, "i2v_a14b", Job(1280, 720, 81), "fp8_scaled", "gpu"),
    ("RTX 3060", 64, "t2v_a14b", Job(832, 480, 81), "fp8_scaled", "gpu"),
    ("RTX 3070", 32, "t2v_a14b", Job(832, 480, 81), "fp8_scaled", "cpu"),
    ("RTX 3070", 64, "ti2v_5b", Job(1280, 704, 121), "fp16", "cpu"),
    ("RTX 4090", 64, "ti2v_5b", Job(1280, 704, 121), "fp16", "gpu"),
    ("RTX 3070", 16, "t2v_a14b", Job(1280, 720, 81), None, None),
]


@pytest.mark.parametrize("card, ram_gb, variant, job, dtype, te_device", EXPECTED)
def test_choices_for_known_setups(card, ram_gb, variant, job, dtype, te_device):
    device = device_for_gpu(card, ram_gb * GIB)
    if dtype is None:
        with pytest.raises(PlanDoesNotFitError):
            plan(device, variant, job)
        return
    result = plan(device, variant, job)
    assert (result.weight_dtype, result.text_encoder_device) == (dtype, te_device), result.summary()


def test_a14b_streams_an_fp8_expert_on_an_8gb_card_with_partial_loading_on_0_3_64():
    result = plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(832, 480, 81), core=OLDEST)
    assert result.streamed_model_bytes > 10 * GIB
    assert result.memory_manager == "partial_loading" and result.pinned_ram_bytes == 0
    assert result.launch_args == ("--reserve-vram", "0.5", "--async-offload", "--lowvram"), result.launch_args


def test_a14b_streams_an_fp8_expert_on_an_8gb_card_with_dynamic_vram_on_0_33():
    result = plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(832, 480, 81), core=NEWEST)
    assert result.streamed_model_bytes > 10 * GIB
    assert result.memory_manager == "dynamic_vram"
    # async offload is on by default there and --lowvram does nothing: only the reserve is left to say
    assert result.launch_args == ("--reserve-vram", "0.5"), result.launch_args
    assert 0 < result.pinned_ram_bytes <= result.streamed_model_bytes
    assert "dynamic VRAM (comfy-aimdo)" in result.summary()
    assert any("streams from pinned RAM" in reason for reason in result.reasons), result.reasons


def test_low_ram_drops_the_high_noise_expert_before_the_low_noise_one():
    result = plan(device_for_gpu("RTX 4090", 32 * GIB), "t2v_a14b", Job(832, 480, 81), core=OLDEST)
    assert result.drop_high_noise_expert_before_low and result.drop_text_encoder_after_encode
    assert "--cache-none" in result.launch_args
    newest = plan(device_for_gpu("RTX 4090", 32 * GIB), "t2v_a14b", Job(832, 480, 81), core=NEWEST)
    assert newest.drop_high_noise_expert_before_low and "--cache-none" not in newest.launch_args
    # 0.33's RAM-pressure cache frees the dropped expert once free RAM is below the next one plus a margin
    headroom_gb = float(newest.launch_args[newest.launch_args.index("--cache-ram") + 1])
    assert newest.model_weight_bytes / GIB + 1 <= headroom_gb < newest.model_weight_bytes / GIB + 2
    roomy = plan(device_for_gpu("RTX 4090", 117 * GIB), "t2v_a14b", Job(832, 480, 81))
    assert not roomy.drop_high_noise_expert_before_low
    # RAM counts both experts and the text encoder when nothing is dropped
    both = 2 * roomy.model_weight_bytes + footprint.text_encoder_weight_bytes(roomy.text_encoder_dtype)
    assert roomy.predicted_peak_ram_bytes > both


def test_refusal_on_8gb_with_16gb_ram_says_what_would_fit():
    with pytest.raises(PlanDoesNotFitError) as caught:
        plan(device_for_gpu("RTX 3070", 16 * GIB), "t2v_a14b", Job(1280, 720, 81))
    message = str(caught.value)
    assert "VRAM" in message and "RAM" in message
    assert "TI2V-5B" in message


def test_refusal_computes_max_frames_and_smaller_size():
    with pytest.raises(PlanDoesNotFitError) as caught:
        plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(1280, 720, 161))
    error = caught.value
    assert error.max_frames is not None and (error.max_frames - 1) % 4 == 0
    assert f"at most {error.max_frames} frames" in str(error)
    assert plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(1280, 720, error.max_frames))
    assert "smaller size" in str(error)


@pytest.mark.parametrize("core", ["0.3.64", "0.33.0"])
@pytest.mark.parametrize("variant", ["t2v_a14b", "i2v_a14b"])
def test_a14b_720p_fits_8gb_with_the_lean_forward(core, variant):
    """The core's own blocks need 9-10 hidden states (A14B 720p: 7.9-8.8 GB); the lean forward 5."""
    job = Job(1280, 720, 81)
    result = plan(device_for_gpu("RTX 3070", 64 * GIB), variant, job, core=core_from_version(core))
    assert result.lean_forward and result.lean_chunk_tokens == 9450
    stock = footprint.transformer_activation_bytes(footprint.T2V_A14B_EXPERT, 1280, 720, 81,
                                                   core_version=tuple(int(part) for part in core.split(".")))
    assert result.predicted_activation_bytes < stock / 1.7
    assert any(reason.startswith("lean forward on") and "without it the job does not fit" in reason
               for reason in result.reasons), result.reasons
    assert "Lean forward: on" in result.summary()


def test_the_lean_forward_stays_off_where_the_stock_forward_fits():
    result = plan(device_for_gpu("RTX 4090", 64 * GIB), "t2v_a14b", Job(832, 480, 81))
    assert not result.lean_forward and result.lean_chunk_tokens == 0
    assert not any("lean forward" in reason for reason in result.reasons)


def test_the_lean_forward_is_planned_for_a_core_newer_than_any_tested_and_the_plan_names_it():
    """No version gate: the lean forward checks itself against the running core's block (mode auto falls back)."""
    result = plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(1280, 720, 81), core=core_from_version("0.45.0"))
    assert result.lean_forward
    assert "0.45.0" in result.summary() or "0.45" in result.summary(), result.summary()


def test_refusal_for_ram_names_the_ram_needed():
    with pytest.raises(PlanDoesNotFitError) as caught:
        plan(device_for_gpu("H100 80GB", 16 * GIB), "t2v_a14b", Job(832, 480, 81))
    error = caught.value
    assert "more system RAM: at least" in str(error)
    needed = error.required_ram_bytes
    assert needed > 16 * GIB
    assert plan(device_for_gpu("H100 80GB", needed), "t2v_a14b", Job(832, 480, 81))


def test_forced_fp16_refusal_suggests_fp8():
    with pytest.raises(PlanDoesNotFitError) as caught:
        plan(device_for_gpu("RTX 4090", 32 * GIB), "t2v_a14b", Job(832, 480, 81), Overrides(weight_dtype="fp16"))
    assert "fp8" in str(caught.value)


def test_cpu_plan_says_cpu_and_why():
    result = plan(cpu_device(64 * GIB), "ti2v_5b", Job(640, 352, 17))
    assert result.tier == "CPU" and result.is_cpu
    assert result.launch_args == ("--cpu",)
    assert result.predicted_peak_vram_bytes == 0
    assert result.attention_backend == "pytorch_sdpa"
    assert "CPU" in result.summary() and any("no GPU" in reason for reason in result.reasons)


@pytest.mark.parametrize("core, hand_back", [(OLDEST, True), (NEWEST, False)], ids=["0.3.64", "0.33.0"])
def test_reserve_for_a_colocated_llm_server(core, hand_back):
    result = plan(device_for_gpu("RTX 4090", 64 * GIB), "ti2v_5b", Job(1280, 704, 121),
                  Overrides(reserve_vram_bytes=10 * GIB), core=core)
    assert result.reserve_vram_bytes == 10 * GIB
    assert result.predicted_peak_vram_bytes <= result.total_vram_bytes - 10 * GIB
    assert result.launch_args[result.launch_args.index("--reserve-vram") + 1] == "10"
    # 0.3.64 hands VRAM back between runs; on 0.33 --reserve-vram is comfy-aimdo's headroom, held at all times
    assert ("--disable-smart-memory" in result.launch_args) == hand_back, result.launch_args


def test_vram_held_by_another_process_is_reserved():
    card = device_for_gpu("RTX 4090", 64 * GIB)
    busy = device_for_gpu("RTX 4090", 64 * GIB, free_vram_bytes=card.total_vram_bytes - 8 * GIB)
    assert plan(busy, "ti2v_5b", Job(1280, 704, 121)).reserve_vram_bytes >= 7 * GIB


def test_plan_as_dict_is_json_and_summary_is_short():
    result = plan(device_for_tier("PROSUMER_24GB"), "t2v_a14b", Job(1280, 720, 81))
    data = json.loads(json.dumps(result.as_dict()))
    for key in ("weight_dtype", "text_encoder_device", "resident_model_bytes", "streamed_model_bytes",
                "drop_high_noise_expert_before_low", "vae_decode_budget_bytes", "attention_backend",
                "reserve_vram_bytes", "predicted_peak_vram_bytes", "predicted_peak_ram_bytes", "launch_args",
                "launch_env", "reasons", "tier", "core_version", "memory_manager", "pinned_ram_bytes"):
        assert key in data
    assert data["tier"] == "PROSUMER_24GB"
    assert data["core_version"] == "0.33.0" and data["memory_manager"] == "dynamic_vram"
    assert data["memory_manager_label"] == "dynamic VRAM (comfy-aimdo)"
    assert 3 <= len(result.summary().splitlines()) <= 8


@pytest.mark.parametrize("tier", list(GPU_TIERS))
def test_tier_helpers_round_trip(tier):
    assert tier_for_vram(device_for_tier(tier).total_vram_bytes) == tier


def test_l40s_counts_as_a_48gb_card():
    assert tier_for_vram(device_for_gpu("L40S").total_vram_bytes) == "PROSUMER_48GB"


def test_old_cards_prefer_sdpa():
    turing = DeviceInfo(kind="cuda", name="RTX 2080 Ti", total_vram_bytes=11 * GIB, free_vram_bytes=11 * GIB,
                        compute_capability=(7, 5), total_ram_bytes=64 * GIB)
    assert plan(turing, "ti2v_5b", Job(832, 480, 41)).attention_backend == "pytorch_sdpa"


# --- bad inputs ----------------------------------------------------------------

BAD = [
    ("ti2v_5b", Job(1280, 704, 120), None, "frames"),
    ("ti2v_5b", Job(1280, 704, 0), None, "frames"),
    ("ti2v_5b", Job(1280, 720, 121), None, "height"),  # 720 is not a multiple of 32
    ("ti2v_5b", Job(1296, 704, 121), None, "width"),
    ("t2v_a14b", Job(1288, 720, 81), None, "width"),
    ("t2v_a14b", Job(0, 720, 81), None, "width"),
    ("t2v_a14b", Job(832, -480, 81), None, "height"),
    ("t2v_a14b", Job(832, 480, 81, batch=0), None, "batch"),
    ("wan_1b", Job(832, 480, 81), None, "model_variant"),
    ("t2v_a14b", Job(832, 480, 81), Overrides(reserve_vram_bytes=100 * GIB), "reserve_vram_gb"),
    ("t2v_a14b", Job(832, 480, 81), Overrides(weight_dtype="int4"), "weight_dtype"),
    ("t2v_a14b", Job(832, 480, 81), Overrides(text_encoder_device="tpu"), "text_encoder_device"),
]


@pytest.mark.parametrize("variant, job, overrides, field", BAD)
def test_bad_inputs_name_the_field(variant, job, overrides, field):
    with pytest.raises(InvalidInputError) as caught:
        plan(device_for_gpu("RTX 4090"), variant, job, overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(field), str(caught.value)


def test_a14b_accepts_multiples_of_16():
    assert plan(device_for_gpu("RTX 4090"), "t2v_a14b", Job(1280, 720, 81))


def test_gpu_reporting_zero_vram_is_refused():
    broken = DeviceInfo(kind="cuda", name="ghost", total_vram_bytes=0, free_vram_bytes=0, total_ram_bytes=64 * GIB)
    with pytest.raises(InvalidInputError, match="total_vram_bytes"):
        plan(broken, "ti2v_5b", Job(1280, 704, 121))


def test_the_planner_imports_without_torch():
    """Start scripts run `python -m wanfit plan --print-args` before ComfyUI starts; it must stay arithmetic."""
    probe = "import sys, wanfit.plan; print(sorted(name for name in ('torch', 'numpy') if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_all_errors_are_wanfit_errors():
    assert issubclass(PlanDoesNotFitError, WanFitError) and issubclass(InvalidInputError, WanFitError)


# --- properties ------------------------------------------------------------------

variants = st.sampled_from(["ti2v_5b", "t2v_a14b", "i2v_a14b"])
ram_gbs = st.sampled_from(RAM_GB)


def _job(variant, width_units, height_units, n):
    unit = 32 if variant == "ti2v_5b" else 16
    return Job(width_units * unit, height_units * unit, 4 * n + 1)


def _try(device, variant, job):
    try:
        return plan(device, variant, job)
    except PlanDoesNotFitError:
        return None


@settings(max_examples=60, deadline=None)
@given(variant=variants, ram_gb=ram_gbs, small_gb=st.floats(6, 140), extra_gb=st.floats(0.5, 60),
       width_units=st.integers(10, 40), height_units=st.integers(10, 40), n=st.integers(0, 40))
def test_more_vram_never_means_more_offloading(variant, ram_gb, small_gb, extra_gb, width_units, height_units, n):
    job = _job(variant, width_units, height_units, n)

    def device(gb):
        total = int(gb * GIB)
        return DeviceInfo(kind="cuda", name="card", total_vram_bytes=total, free_vram_bytes=total,
                          compute_capability=(8, 9), total_ram_bytes=ram_gb * GIB)

    small, big = _try(device(small_gb), variant, job), _try(device(small_gb + extra_gb), variant, job)
    if small is None:
        return
    assert big is not None, "a bigger card refused a job a smaller one planned"
    assert big.resident_fraction >= small.resident_fraction
    assert big.streamed_model_bytes <= small.streamed_model_bytes


@settings(max_examples=60, deadline=None)
@given(variant=variants, card=st.sampled_from(CARDS), ram_gb=ram_gbs, width_units=st.integers(10, 40),
       height_units=st.integers(10, 40), n=st.integers(0, 40), more_n=st.integers(0, 20), more_w=st.integers(0, 10))
def test_more_frames_or_pixels_never_lower_predicted_memory(variant, card, ram_gb, width_units, height_units, n, more_n, more_w):
    device = device_for_gpu(card, ram_gb * GIB)
    small = _try(device, variant, _job(variant, width_units, height_units, n))
    big = _try(device, variant, _job(variant, width_units + more_w, height_units, n + more_n))
    if small is None or big is None or big.weight_dtype != small.weight_dtype or big.lean_forward != small.lean_forward:
        return  # a refusal, a cheaper dtype or the lean forward is the planner's answer to more memory
    assert big.predicted_peak_vram_bytes >= small.predicted_peak_vram_bytes
    same_ram_choices = all(getattr(big, choice) == getattr(small, choice) for choice in (
        "drop_text_encoder_after_encode", "drop_high_noise_expert_before_low", "text_encoder_dtype",
        "text_encoder_device"))
    if same_ram_choices:  # a lighter text encoder or dropping a model is the planner's answer to a bigger job
        assert big.predicted_peak_ram_bytes >= small.predicted_peak_ram_bytes


@settings(max_examples=25, deadline=None)
@given(variant=variants, card=st.sampled_from(CARDS), ram_gb=ram_gbs, n=st.integers(0, 30))
def test_same_inputs_same_plan(variant, card, ram_gb, n):
    job = _job(variant, 40 if variant != "ti2v_5b" else 20, 30 if variant != "ti2v_5b" else 15, n)
    first = _try(device_for_gpu(card, ram_gb * GIB), variant, job)
    second = _try(device_for_gpu(card, ram_gb * GIB), variant, job)
    assert first == second
    if first is not None:
        assert isinstance(first, Plan) and first.as_dict() == second.as_dict()


# --- the core planned for -----------------------------------------------------------

CORES = [OLDEST, NEWEST]
TIER_JOBS = [("ti2v_5b", Job(1280, 704, 121)), ("t2v_a14b", Job(832, 480, 81)), ("i2v_a14b", Job(1280, 720, 81))]
TIER_MATRIX = [(core, tier, ram, variant, job) for core in CORES for tier in GPU_TIERS for ram in (32, 64)
               for variant, job in TIER_JOBS]


def _flags(launch_args):
    return [item for item in launch_args if item.startswith("--")]


@pytest.mark.parametrize("core, tier, ram_gb, variant, job", TIER_MATRIX,
                         ids=[f"{c.version_text}-{t}-{r}GB-{v}" for c, t, r, v, _ in TIER_MATRIX])
def test_every_flag_exists_on_the_core_planned_for(core, tier, ram_gb, variant, job):
    try:
        result = plan(device_for_tier(tier, ram_gb * GIB), variant, job, core=core)
    except PlanDoesNotFitError:
        return
    assert result.core_version == core.version_text
    unknown = [flag for flag in _flags(result.launch_args) if flag not in core.flags]
    assert not unknown, f"ComfyUI {core.version_text} defines no {unknown} (emitted {result.launch_args})"
    if core.dynamic_vram:
        assert result.memory_manager == "dynamic_vram"
        fighting = set(_flags(result.launch_args)) & {"--lowvram", "--novram", "--highvram", "--gpu-only"}
        assert not fighting, f"{fighting} is a no-op or switches dynamic VRAM off on {core.version_text}"
        assert "--async-offload" not in result.launch_args  # default-on there: changes nothing
    else:
        assert result.memory_manager == "partial_loading"
    assert len(_flags(result.launch_args)) == len(set(_flags(result.launch_args)))


@pytest.mark.parametrize("core", CORES, ids=lambda c: c.version_text)
def test_cpu_plan_is_the_same_flag_on_both_cores(core):
    result = plan(cpu_device(64 * GIB), "ti2v_5b", Job(640, 352, 17), core=core)
    assert result.launch_args == ("--cpu",) and result.memory_manager == "cpu"


def test_no_core_means_the_newest_supported_one():
    device = device_for_gpu("RTX 4090", 64 * GIB)
    assumed, given = plan(device, "ti2v_5b", Job(1280, 704, 121)), plan(device, "ti2v_5b", Job(1280, 704, 121), core=NEWEST)
    assert assumed.core_version == "0.33.0" and "assumed" in assumed.core_source
    assert (assumed.launch_args, assumed.memory_manager) == (given.launch_args, given.memory_manager)


def test_a_version_between_known_cores_plans_like_the_older_one():
    between = core_from_version("0.20.0")
    device = device_for_gpu("RTX 3070", 64 * GIB)
    result = plan(device, "t2v_a14b", Job(832, 480, 81), core=between)
    assert result.launch_args == plan(device, "t2v_a14b", Job(832, 480, 81), core=OLDEST).launch_args
    assert result.core_version == "0.20.0" and "nearest older tested one" in result.reasons[0]


def test_running_core_without_dynamic_vram_gets_partial_loading_but_still_no_lowvram():
    running = replace_field(NEWEST, source="running process", dynamic_vram_active=False)
    result = plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(832, 480, 81), core=running)
    assert result.memory_manager == "partial_loading"
    assert "ComfyUI partial loading" in result.summary()
    assert not set(result.launch_args) & {"--lowvram", "--novram", "--highvram", "--gpu-only", "--async-offload"}
    active = replace_field(NEWEST, source="running process", dynamic_vram_active=True)
    assert plan(device_for_gpu("RTX 3070", 64 * GIB), "t2v_a14b", Job(832, 480, 81),
                core=active).memory_manager == "dynamic_vram"


def test_torch_older_than_2_8_falls_back_to_partial_loading_on_0_33():
    old_torch = DeviceInfo(kind="cuda", name="NVIDIA RTX 4090", total_vram_bytes=24 * GIB, free_vram_bytes=24 * GIB,
                           compute_capability=(8, 9), total_ram_bytes=64 * GIB, torch_version="2.7.1+cu126")
    result = plan(old_torch, "t2v_a14b", Job(1280, 720, 81), core=NEWEST)
    assert result.memory_manager == "partial_loading"
    assert any("older than 2.8" in reason for reason in result.reasons)


@pytest.mark.parametrize("core", CORES, ids=lambda c: c.version_text)
def test_same_inputs_same_plan_on_each_core(core):
    device = device_for_tier("CONSUMER_12GB", 32 * GIB)
    first = plan(device, "i2v_a14b", Job(1280, 720, 81), core=core)
    second = plan(device_for_tier("CONSUMER_12GB", 32 * GIB), "i2v_a14b", Job(1280, 720, 81),
                  core=core_from_version(core.version_text))
    assert first == second and first.as_dict() == second.as_dict()


def test_a_core_that_is_not_a_core_object_is_refused():
    with pytest.raises(InvalidInputError) as caught:
        plan(device_for_gpu("RTX 4090"), "ti2v_5b", Job(1280, 704, 121), core="0.33.0")
    assert caught.value.field == "core"


def test_where_the_classic_cache_is_the_default_the_plan_names_cache_ram_whenever_it_drops_models():
    # 0.3.68-0.21 define --cache-ram but start with the classic cache, which holds every model it loaded
    classic = replace_field(NEWEST, ram_cache_default_on=False)
    ram_bytes = 128 * GIB  # the RAM-pressure cache's default threshold (10 GB here) already frees a 5 GB model

    def dropping(core):
        return launch_flags(LaunchSituation(
            core=core, memory_manager="dynamic_vram" if core.dynamic_vram else "partial_loading", device_kind="cuda",
            ram_bytes=ram_bytes, reserve_vram_bytes=GIB // 2, other_process_vram_bytes=0, streamed_model_bytes=0,
            text_encoder_device="gpu", drops_models=True, next_model_bytes=5 * GIB))

    assert default_cache_ram_headroom_bytes(ram_bytes) == 10 * GIB
    on_newest, on_classic = dropping(NEWEST), dropping(classic)
    assert on_newest.args == ("--reserve-vram", "0.5"), on_newest.args
    assert any("already frees models in time" in reason for reason in on_newest.reasons), on_newest.reasons
    assert on_classic.args == ("--reserve-vram", "0.5", "--cache-ram", "6"), on_classic.args
    assert any("default classic cache" in reason for reason in on_classic.reasons), on_classic.reasons
    assert dropping(OLDEST).args[-1] == "--cache-none"  # 0.3.64 has no --cache-ram


# --- the VAE decode at the planned budget: exact or approximate -----------------

def test_the_plans_decode_budget_is_exact_at_real_sizes_and_says_from_what_budget():
    for variant, job in JOBS:
        result = plan(device_for_gpu("RTX 4090", 128 * GIB), variant, job)
        vae = VARIANTS[variant].vae
        latent = decode_budget.latent_shape_for(vae, job.width, job.height, job.frames, job.batch)
        exact_from = decode_budget.exact_budget_bytes(decode_budget.static_layouts(vae), latent, 2, "cuda", False)
        assert result.vae_decode_exact and result.vae_decode_exact_budget_bytes == exact_from
        assert 0 < exact_from <= result.vae_decode_budget_bytes
        line = next(line for line in result.summary().splitlines() if "VAE decode budget" in line)
        assert "exact" in line and "APPROXIMATE" not in line, line
        assert f"exact down to a budget of {math.ceil(exact_from / 2**20)} MB" in line, line
        data = json.loads(json.dumps(result.as_dict()))
        assert data["vae_decode_exact"] is True and data["vae_decode_exact_budget_bytes"] == exact_from


def test_a_decode_budget_below_the_exact_one_is_approximate_and_names_the_exact_budget():
    gpu, variant, job = device_for_gpu("RTX 4090", 64 * GIB), VARIANTS["ti2v_5b"], Job(192, 192, 9)
    exact_from = decode_outlook(gpu, variant, job, 2**40).exact_budget_bytes
    below = decode_outlook(gpu, variant, job, exact_from - 1)
    assert below.fits and not below.exact and below.exact_budget_bytes == exact_from
    assert below.describe().startswith("APPROXIMATE (")
    assert f"exact needs a budget of at least {math.ceil(exact_from / 2**20)} MB" in below.describe()
    at = decode_outlook(gpu, variant, job, exact_from)
    assert at.exact and "APPROXIMATE" not in at.describe()


def test_an_approximate_decode_reaches_the_summary_the_json_and_the_reasons():
    """No whole plan reaches an approximate decode today, so the outlook at a budget 1 byte below the exact
    one goes in through build_plan's `outlook`."""
    gpu, job = device_for_gpu("RTX 4090", 64 * GIB), Job(192, 192, 9)
    exact_from = decode_outlook(gpu, VARIANTS["ti2v_5b"], job, 2**40).exact_budget_bytes
    request = plan_request(gpu, "ti2v_5b", job)
    result = build_plan(request, search(request), outlook=decode_outlook(gpu, VARIANTS["ti2v_5b"], job, exact_from - 1))
    words = f"exact needs a budget of at least {math.ceil(exact_from / 2**20)} MB"
    assert not result.vae_decode_exact and result.vae_decode_exact_budget_bytes == exact_from
    line = next(line for line in result.summary().splitlines() if "VAE decode budget" in line)
    assert "APPROXIMATE" in line and words in line, line
    assert any("APPROXIMATE" in reason and words in reason for reason in result.reasons)
    assert json.loads(json.dumps(result.as_dict()))["vae_decode_exact"] is False


def test_a_cpu_plan_says_whether_its_decode_is_exact():
    result = plan(cpu_device(64 * GIB), "ti2v_5b", Job(640, 352, 17))
    assert result.vae_decode_exact and "VAE decode exact" in result.summary()
