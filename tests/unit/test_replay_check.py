"""The one replay check: its cache, its verdicts and the auto/on/off policy both replays follow.

The replays themselves are checked against the real cores (tests/host, tests/matrix); here the
compare functions are plain values, since the policy does not depend on what was compared."""

import math

import pytest

from wanfit import replay_check
from wanfit.errors import InvalidInputError


@pytest.fixture(autouse=True)
def fresh_checks():
    replay_check.forget_checks()
    yield
    replay_check.forget_checks()


def run(difference, key=("WanModel", "float32"), core="0.33.0", on_new=None):
    runs = []

    def compare():
        runs.append(1)
        if isinstance(difference, Exception):
            raise difference
        return difference, f"max difference {difference:g}", "matched"

    check = replay_check.check_once("lean forward", "the core's own block", "WanModel, float32 on cpu", key, 1e-5,
                                    compare, core=core, on_new=on_new)
    return check, runs


def test_a_check_runs_once_per_key_and_core_and_is_kept_for_the_process():
    heard = []
    first, runs = run(1e-7, on_new=heard.append)
    again, runs_again = run(1.0, on_new=heard.append)  # the cached verdict wins, compare is not called
    other_core, _ = run(1.0, core="0.3.64")
    assert (runs, runs_again) == ([1], []) and again is first and heard == [first]
    assert first.passed and first.matched == "matched"
    assert first.key == ("lean forward", "0.33.0", "WanModel", "float32")
    assert not other_core.passed and other_core.matched is None
    assert replay_check.cached_checks("lean forward") == [first, other_core] and replay_check.cached_checks("x") == []


def test_a_check_that_raises_or_gives_nan_is_a_failed_check_not_a_crash():
    raised, _ = run(RuntimeError("CUDA out of memory"), key=("a",))
    nan, _ = run(math.nan, key=("b",))
    assert not raised.passed and raised.difference == math.inf
    assert "the check itself raised RuntimeError: CUDA out of memory" in raised.describe()
    assert not nan.passed


def test_reports_name_the_replay_the_core_the_subject_and_the_difference():
    passed, _ = run(2e-7, key=("p",))
    failed, _ = run(0.5, key=("f",))
    assert passed.describe() == ("lean forward checked against the core's own block (ComfyUI 0.33.0, WanModel, "
                                 "float32 on cpu): max difference 2e-07")
    assert failed.describe() == ("lean forward check against the core's own block failed (ComfyUI 0.33.0, WanModel, "
                                 "float32 on cpu): max difference 0.5")
    note = replay_check.fallback_note(failed, "ComfyUI's own blocks")
    assert note == failed.describe() + "; instead: ComfyUI's own blocks"


@pytest.mark.parametrize("mode, passed, expected", [
    ("auto", True, True), ("on", True, True), ("auto", False, False), ("on", False, replay_check.ReplayMismatchError)])
def test_the_mode_policy(mode, passed, expected):
    check, _ = run(0.0 if passed else 1.0)
    if expected is replay_check.ReplayMismatchError:
        with pytest.raises(expected, match=r"WanFit Lean Forward \(mode on\): .*failed \(ComfyUI 0.33.0.*max "
                                           r"difference 1.*mode to auto \(it then runs ComfyUI's own blocks\) or off"):
            replay_check.follow(check, mode, "WanFit Lean Forward", "ComfyUI's own blocks")
    else:
        assert replay_check.follow(check, mode, "WanFit Lean Forward", "ComfyUI's own blocks") is expected


def test_modes_are_auto_on_off_and_nothing_else():
    assert replay_check.MODES == ("auto", "on", "off")
    assert replay_check.validate_mode("off") == "off"
    with pytest.raises(InvalidInputError, match="mode"):
        replay_check.validate_mode("sometimes")


def test_a_check_is_found_by_its_whole_key_only():
    check, _ = run(1e-7, key=("WanModel", "bfloat16", ("float8_e4m3fn (quantized matmul)",)))
    assert replay_check.find_check("lean forward", "0.33.0", ("WanModel", "bfloat16",
                                                             ("float8_e4m3fn (quantized matmul)",))) is check
    assert replay_check.find_check("lean forward", "0.33.0", ("WanModel", "bfloat16",
                                                             ("nvfp4 (quantized matmul)",))) is None
    assert replay_check.find_check("lean forward", "0.3.64", check.key[2:]) is None
