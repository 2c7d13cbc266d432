"""Options -> plan (shared by node, route and CLI) and what a plan changes in a running ComfyUI."""

from types import SimpleNamespace

import pytest

from wanfit.errors import InvalidInputError
from wanfit.plan import cpu_device, device_for_gpu
from wanfit.plan_options import plan_from_options, plan_from_query
from wanfit.runtime import apply_runtime_settings
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


def test_bad_boolean_in_query():
    with pytest.raises(InvalidInputError, match="cfg='maybe' is invalid: expected true or false"):
        plan_from_query({"cfg": "maybe"}, rtx_4090)


def test_runtime_raises_the_reserve_and_lists_missing_launch_flags():
    plan = plan_from_options(lambda: device_for_gpu("RTX 3060", gib_to_bytes(64)), "t2v_a14b", 832, 480, 81,
                             reserve_vram_gb=4)
    model_management = SimpleNamespace(EXTRA_RESERVED_VRAM=400 * 1024**2)
    args = SimpleNamespace(async_offload=False, lowvram=False, cache_none=False, disable_smart_memory=False, cpu=False)
    lines = apply_runtime_settings(plan, model_management, args)
    assert model_management.EXTRA_RESERVED_VRAM == plan.reserve_vram_bytes >= gib_to_bytes(4)
    assert lines[0].startswith("applied now: VRAM reserve 0.4 GB -> ")
    flags = [flag for flag in plan.launch_args if flag.startswith("--") and flag != "--reserve-vram"]
    assert flags, plan.launch_args
    assert lines[-1].startswith("needs a restart: start ComfyUI with " + " ".join(flags))


def test_runtime_never_lowers_a_reserve_given_at_launch():
    plan = plan_from_options(rtx_4090, "ti2v_5b", 1280, 704, 121)
    model_management = SimpleNamespace(EXTRA_RESERVED_VRAM=gib_to_bytes(10))
    apply_runtime_settings(plan, model_management, SimpleNamespace())
    assert model_management.EXTRA_RESERVED_VRAM == gib_to_bytes(10)


def test_widget_choices_match_the_modules_that_act_on_them():
    """wanfit.choices exists so node files import fast; it must not drift from the real lists."""
    from wanfit import choices
    from wanfit.attention import KERNELS
    from wanfit.plan import GPU_TIERS, MODEL_VARIANTS

    assert choices.MODEL_VARIANTS == MODEL_VARIANTS
    assert choices.GPU_TIER_NAMES == tuple(GPU_TIERS)
    assert set(choices.ATTENTION_MODES) == {"auto", "disabled", *KERNELS}
