"""Activation model per ComfyUI core against the core's own forward, simulated at real sizes.

The simulated peaks come from bench/activation_peak.py (ComfyUI's WanModel on the meta
device, every live storage counted, SDPA as the flash kernel, RMSNorm fused; torch 2.14.1
for 0.3.64, 2.9.1 for 0.33.0; docs/benchmarks.md, "Activation memory per core (simulated)").
The planner's prediction carries a 1.2 allocator margin over the live-tensor count, so it must
sit a little above each simulated peak, never below.
"""

from hypothesis import given, strategies as st
import pytest

from wanfit.plan import footprint as memory

JOBS = {
    "5B 1280x704x121": (memory.TI2V_5B, 1280, 704, 121),
    "A14B 1280x720x81": (memory.T2V_A14B_EXPERT, 1280, 720, 81),
    "A14B 832x480x81": (memory.T2V_A14B_EXPERT, 832, 480, 81),
}

# (core, comfy-kitchen RoPE on 0.33: its eager backend, which torch below CUDA 13 gets, or its
# CUDA kernel), job, batch elements, simulated peak bytes
SIMULATED = [
    ((0, 3, 64), "eager", "5B 1280x704x121", 1, 2_108_805_120),  # 12.58 units
    ((0, 3, 64), "eager", "5B 1280x704x121", 2, 4_189_675_520),  # 12.50
    ((0, 3, 64), "eager", "A14B 1280x720x81", 1, 7_059_763_200),  # 9.12
    ((0, 3, 64), "eager", "A14B 1280x720x81", 2, 14_042_112_000),  # 9.07
    ((0, 3, 64), "eager", "A14B 832x480x81", 1, 3_062_277_120),  # 9.13
    ((0, 3, 64), "eager", "A14B 832x480x81", 2, 6_091_008_000),  # 9.08
    ((0, 33, 0), "eager", "5B 1280x704x121", 1, 2_276_413_440),  # 13.58
    ((0, 33, 0), "eager", "5B 1280x704x121", 2, 4_524_892_160),  # 13.50
    ((0, 33, 0), "eager", "A14B 1280x720x81", 1, 7_833_907_200),  # 10.12
    ((0, 33, 0), "eager", "A14B 1280x720x81", 2, 15_590_400_000),  # 10.07
    ((0, 33, 0), "eager", "A14B 832x480x81", 1, 3_397_739_520),  # 10.13
    ((0, 33, 0), "eager", "A14B 832x480x81", 2, 6_761_932_800),  # 10.08
    ((0, 33, 0), "kernel", "5B 1280x704x121", 1, 2_276_413_440),  # 13.58
    ((0, 33, 0), "kernel", "5B 1280x704x121", 2, 4_524_892_160),  # 13.50
    ((0, 33, 0), "kernel", "A14B 1280x720x81", 1, 7_369_420_800),  # 9.52
    ((0, 33, 0), "kernel", "A14B 1280x720x81", 2, 14_661_427_200),  # 9.47
    ((0, 33, 0), "kernel", "A14B 832x480x81", 1, 3_196_462_080),  # 9.53
    ((0, 33, 0), "kernel", "A14B 832x480x81", 2, 6_359_377_920),  # 9.48
]


@pytest.mark.parametrize("core, rope, job, batch, simulated_bytes", SIMULATED)
def test_prediction_sits_just_above_the_simulated_peak(core, rope, job, batch, simulated_bytes):
    config, width, height, frames = JOBS[job]
    predicted = memory.transformer_activation_bytes(config, width, height, frames, batch_elements=batch,
                                                    compute_bytes=2, core_version=core)
    ratio = predicted / simulated_bytes
    assert 1.05 <= ratio <= 1.30, (f"core {core}, RoPE {rope}, {job}, batch {batch}: predicted {predicted / 2**30:.2f} "
                                   f"GiB / simulated {simulated_bytes / 2**30:.2f} GiB = {ratio:.3f}, "
                                   "expected 1.05-1.30")


@pytest.mark.parametrize("core, expected", [
    (None, (0, 33, 0)),
    ((0, 3, 64), (0, 3, 64)),
    ((0, 3, 65), (0, 3, 64)),  # between two known cores: the older profile
    ((0, 32, 9), (0, 3, 64)),
    ((0, 33, 0), (0, 33, 0)),
    ((0, 40, 1), (0, 33, 0)),  # newer than all: the newest
    ((0, 3, 10), (0, 3, 64)),  # older than all: the oldest
])
def test_core_version_picks_the_newest_profile_not_newer_than_it(core, expected):
    assert memory.activation_profile(core).core_version == expected


def test_default_is_the_newest_core():
    args = (memory.T2V_A14B_EXPERT, 1280, 720, 81)
    default = memory.transformer_activation_bytes(*args)
    assert default == memory.transformer_activation_bytes(*args, core_version=(0, 33, 0))
    assert default > memory.transformer_activation_bytes(*args, core_version=(0, 3, 64))


CONFIGS = st.sampled_from([memory.TI2V_5B, memory.T2V_A14B_EXPERT, memory.I2V_A14B_EXPERT])
CORES = st.sampled_from([None, (0, 3, 64), (0, 20, 0), (0, 33, 0)])
SIDES = st.integers(min_value=1, max_value=120).map(lambda n: 32 * n)


@given(config=CONFIGS, core=CORES, width=SIDES, height=SIDES, frames=st.integers(1, 60).map(lambda n: 4 * n + 1),
       batch=st.integers(1, 4))
def test_monotonic_in_frames_size_and_batch(config, core, width, height, frames, batch):
    def predict(w=width, h=height, f=frames, b=batch):
        return memory.transformer_activation_bytes(config, w, h, f, batch_elements=b, core_version=core)

    base = predict()
    assert predict(f=frames + 4) >= base
    assert predict(w=width + 32) >= base
    assert predict(h=height + 32) >= base
    assert predict(b=batch + 1) > base
