"""Where the A14B pair hands over from the high-noise to the low-noise expert.

Wan2.2 (wan/text2video.py, image2video.py) runs the high-noise expert while the timestep
t >= boundary * 1000 and the low-noise expert after; in ComfyUI's flow models the sigma of a
step is t / 1000. So the high-noise expert runs every step whose starting sigma is >= the
boundary (0.875 for T2V-A14B, 0.900 for I2V-A14B), under the shift and scheduler actually used.
"""

BOUNDARY = {"t2v_a14b": 0.875, "i2v_a14b": 0.900}


def switch_step(sigmas, boundary):
    """Number of steps for the high-noise expert, given the schedule's sigmas (steps + 1 values)."""
    steps = len(sigmas) - 1
    if steps < 1:
        return 0
    high_steps = sum(1 for sigma in list(sigmas)[:-1] if float(sigma) >= boundary)
    # both experts get at least one step whenever there are two steps to share
    return min(max(high_steps, 1), steps - 1) if steps >= 2 else steps
