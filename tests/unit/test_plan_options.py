"""Options -> plan (shared by node, route and CLI) and what a plan changes in a running ComfyUI."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from wanfit.core import core_from_version
from wanfit.errors import InvalidInputError
from wanfit.plan import apply_runtime_settings, cpu_device, device_for_gpu, plan_from_options, plan_from_query
from wanfit.units import gib_to_bytes


def rtx_4090():
    return device_for_gpu("RTX 4090", system_ram_bytes=gib_to_bytes(64))


def test_defaults_are_the_official_sizes():
    plan = plan_from_options(rtx_4090, "ti2v_5b")
    assert (plan.job.width, plan.job.height, plan.job.frames) == (1280, 704, 121)
    plan = plan_from_options(rtx_4090, "i2v_a14b")
    assert (plan.job.width, plan.job.height, plan.job.frames) == (1280, 720, 81)


def test_a_tier_mode_plans_for_that_card_not_this_one():
    plan = plan_from_options(lambda: cpu_device(gib_to_bytes(64)), "t2v_a14b", 832, 480, 81, mode="DATACENTER_80GB")
    assert plan.tier == "DATACENTER_80GB" and not plan.is_cpu


def test_query_strings_parse_like_node_inputs():
    from_query = plan_from_query({"model": "t2v_a14b", "width": "832", "height": "480", "frames": "81",
                                  "cfg": "false", "tier": "PROSUMER_24GB"}, rtx_4090)
    from_options = plan_from_options(rtx_4090, "t2v_a14b", 832, 480, 81, cfg=False, mode="PROSUMER_24GB")
    assert from_query == from_options


@pytest.mark.parametrize("kwargs, field", [
    ({"model_variant": "sd15"}, "model_variant"),
    ({"mode": "LAPTOP_4GB"}, "mode"),
    ({"weight_dtype": "int4"}, "weight_dtype"),
    ({"text_encoder_device": "tpu"}, "text_encoder_device"),
    ({"reserve_vram_gb": -1}, "reserve_vram_gb"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(InvalidInputError) as error:
        plan_from_options(rtx_4090, **kwargs)
    assert error.value.field == field and f"{field}=" in str(error.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e308, 257.0, "6", True])
def test_reserve_that_is_not_a_sane_number_names_the_field(value):
    """NaN passes ComfyUI's min/max widget check; it used to end in "cannot convert float NaN to integer"."""
    with pytest.raises(InvalidInputError) as error:
        plan_from_options(rtx_4090, reserve_vram_gb=value)
    assert error.value.field == "reserve_vram_gb" and "Fix:" in str(error.value)


@pytest.mark.parametrize("params, field", [
    ({"reserve_vram_gb": "nan"}, "reserve_vram_gb"),
    ({"reserve_vram_gb": "inf"}, "reserve_vram_gb"),
    ({"reserve_vram_gb": "-inf"}, "reserve_vram_gb"),
    ({"reserve_vram_gb": "1e308"}, "reserve_vram_gb"),
    ({"reserve_vram_gb": "1e400"}, "reserve_vram_gb"),
    ({"width": "1" + "0" * 300}, "width"),
    ({"height": "8224"}, "height"),
    ({"frames": "1" + "0" * 300}, "frames"),
    ({"batch": "10" + "0" * 30}, "batch"),
    ({"width": "9" * 5000}, "width"),
])
def test_absurd_query_numbers_name_the_field_in_a_short_message(params, field):
    with pytest.raises(InvalidInputError) as error:
        plan_from_query(params, rtx_4090)
    assert error.value.field == field and str(error.value).startswith(f"{field}=")
    assert len(str(error.value)) < 300, str(error.value)


@pytest.mark.parametrize("field, step", [("width", 32), ("height", 32), ("frames", 4), ("batch", 1)])
def test_whole_number_inputs_end_at_the_limit_the_node_declares(field, step):
    """The widget's max is PLAN_INPUT_LIMITS; the plan accepts it (it may not fit) and refuses one step more."""
    from wanfit.choices import PLAN_INPUT_LIMITS
    from wanfit.plan import PlanDoesNotFitError

    highest = PLAN_INPUT_LIMITS[field][1]
    try:
        plan_from_options(rtx_4090, "ti2v_5b", **{field: highest})
    except PlanDoesNotFitError:
        pass
    with pytest.raises(InvalidInputError) as error:
        plan_from_options(rtx_4090, "ti2v_5b", **{field: highest + step})
    assert error.value.field == field and f"expected at most {highest}" in str(error.value)


def test_bad_boolean_in_query():
    with pytest.raises(InvalidInputError, match="cfg='maybe' is invalid: expected true or false"):
        plan_from_query({"cfg": "maybe"}, rtx_4090)


def test_runtime_raises_the_reserve_and_lists_missing_launch_flags():
    oldest = core_from_version("0.3.64")
    plan = plan_from_options(lambda: device_for_gpu("RTX 3060", gib_to_bytes(64)), "t2v_a14b", 832, 480, 81,
                             reserve_vram_gb=4, core=oldest)
    model_management = SimpleNamespace(EXTRA_RESERVED_VRAM=400 * 1024**2)
    args = SimpleNamespace(async_offload=False, lowvram=False, cache_none=False, disable_smart_memory=False, cpu=False)
    lines = apply_runtime_settings(plan, model_management, args, oldest)
    assert model_management.EXTRA_RESERVED_VRAM == plan.reserve_vram_bytes >= gib_to_bytes(4)
    assert lines[0].startswith("applied now: VRAM reserve 0.4 GB -> ")
    flags = [flag for flag in plan.launch_args if flag.startswith("--") and flag != "--reserve-vram"]
    assert flags, plan.launch_args
    assert lines[-1].startswith("needs a restart: start ComfyUI with " + " ".join(flags))


def test_runtime_never_lowers_a_reserve_given_at_launch():
    plan = plan_from_options(rtx_4090, "ti2v_5b", 1280, 704, 121, core=core_from_version("0.3.64"))
    model_management = SimpleNamespace(EXTRA_RESERVED_VRAM=gib_to_bytes(10))
    apply_runtime_settings(plan, model_management, SimpleNamespace())
    assert model_management.EXTRA_RESERVED_VRAM == gib_to_bytes(10)


def running_0_33(dynamic_now=True):
    return replace(core_from_version("0.33.0"), source="running process", dynamic_vram_active=dynamic_now)


def test_runtime_on_dynamic_vram_asks_for_the_reserve_at_launch_and_values_with_their_flags():
    core = running_0_33()
    plan = plan_from_options(lambda: device_for_gpu("RTX 4090", gib_to_bytes(32)), "t2v_a14b", 832, 480, 81,
                             reserve_vram_gb=4, core=core)
    assert plan.memory_manager == "dynamic_vram" and "--cache-ram" in plan.launch_args
    args = SimpleNamespace(reserve_vram=None, cache_ram=[])
    lines = apply_runtime_settings(plan, SimpleNamespace(EXTRA_RESERVED_VRAM=0), args, core)
    headroom = plan.launch_args[plan.launch_args.index("--cache-ram") + 1]
    # comfy-aimdo takes its headroom from --reserve-vram only at start-up
    assert lines[-1].startswith(f"needs a restart: start ComfyUI with --reserve-vram 4 --cache-ram {headroom}"), lines
    started_right = SimpleNamespace(reserve_vram=4.0, cache_ram=[float(headroom)])
    assert not any("restart" in line for line in apply_runtime_settings(plan, SimpleNamespace(), started_right, core))


def test_runtime_restart_list_only_holds_flags_the_running_core_defines():
    plan = plan_from_options(lambda: device_for_gpu("RTX 3070", gib_to_bytes(64)), "t2v_a14b", 832, 480, 81,
                             core=core_from_version("0.3.64"))
    assert "--lowvram" in plan.launch_args
    core = replace(core_from_version("0.33.0"), flags=frozenset({"--reserve-vram", "--async-offload"}))
    lines = apply_runtime_settings(plan, SimpleNamespace(), SimpleNamespace(), core)
    restart = next(line for line in lines if line.startswith("needs a restart"))
    assert "--lowvram" not in restart and "--async-offload" in restart
    assert lines[-1] == "not for this ComfyUI (0.33.0): --lowvram"


def test_options_plan_for_the_core_given():
    oldest = plan_from_options(rtx_4090, "t2v_a14b", 1280, 720, 81, core=core_from_version("0.3.64"))
    newest = plan_from_options(rtx_4090, "t2v_a14b", 1280, 720, 81)
    assert (oldest.core_version, oldest.memory_manager) == ("0.3.64", "partial_loading")
    assert (newest.core_version, newest.memory_manager) == ("0.33.0", "dynamic_vram")
    from_query = plan_from_query({"model": "t2v_a14b", "width": "1280", "height": "720"}, rtx_4090,
                                 core_from_version("0.3.64"))
    assert from_query == oldest


def test_widget_choices_match_the_modules_that_act_on_them():
    """wanfit.choices exists so node files import fast; it must not drift from the real lists."""
    from wanfit import choices
    from wanfit.attention import KERNELS
    from wanfit.plan import GPU_TIERS, MODEL_VARIANTS

    assert choices.MODEL_VARIANTS == MODEL_VARIANTS
    assert choices.GPU_TIER_NAMES == tuple(GPU_TIERS)
    assert set(choices.ATTENTION_MODES) == {"auto", "disabled", *KERNELS}
