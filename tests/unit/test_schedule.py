import math

import pytest

from wanfit.schedule import BOUNDARY, switch_step


def shifted_flow_sigmas(steps, shift):
    """ComfyUI's 'simple' schedule for a flow model with ModelSamplingSD3(shift)."""
    sigmas = []
    for i in range(steps):
        t = 1 - i / steps
        sigmas.append(shift * t / (1 + (shift - 1) * t))
    return sigmas + [0.0]


@pytest.mark.parametrize("steps, shift, boundary, expected", [
    (40, 12.0, BOUNDARY["t2v_a14b"], None),
    (40, 5.0, BOUNDARY["i2v_a14b"], None),
    (20, 8.0, 0.875, None),
    (4, 5.0, 0.9, None),
])
def test_switch_step_is_the_first_step_below_the_boundary(steps, shift, boundary, expected):
    sigmas = shifted_flow_sigmas(steps, shift)
    step = switch_step(sigmas, boundary)
    assert 1 <= step <= steps - 1
    assert all(sigma >= boundary for sigma in sigmas[:step]) or step == 1
    assert sigmas[step] < boundary or step == steps - 1


def test_t2v_official_schedule_switches_near_the_middle():
    # shift 12, 40 steps: sigma(t) = 12t/(1+11t) >= 0.875  <=>  t >= 0.3684 -> steps 0..25 (26 steps)
    assert switch_step(shifted_flow_sigmas(40, 12.0), 0.875) == math.ceil(40 * (1 - 0.875 / (12 - 11 * 0.875)))


def test_degenerate_schedules():
    assert switch_step([1.0, 0.0], 0.875) == 1
    assert switch_step([0.5, 0.2, 0.0], 0.875) == 1  # both experts still get a step
    assert switch_step([1.0, 0.99, 0.98, 0.0], 0.5) == 2
