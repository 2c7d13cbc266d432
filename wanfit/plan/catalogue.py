"""What the planner plans for: the model variants, named GPUs and the GPU_TIER names start scripts use."""

from dataclasses import dataclass

from ..device import DeviceInfo
from ..errors import InvalidInputError
from ..units import BYTES_PER_GIB, gib
from . import footprint


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    transformer: footprint.WanTransformerConfig
    experts: int  # A14B: a high-noise and a low-noise expert
    vae: str
    size_multiple: int  # VAE stride x patch: 32 for TI2V-5B, 16 for A14B
    smaller_sizes: tuple  # landscape sizes to suggest, largest first


VARIANTS = {
    "ti2v_5b": Variant("ti2v_5b", "TI2V-5B", footprint.TI2V_5B, 1, "wan2.2", 32,
                       ((1280, 704), (960, 544), (832, 480), (640, 352))),
    "t2v_a14b": Variant("t2v_a14b", "T2V-A14B", footprint.T2V_A14B_EXPERT, 2, "wan2.1", 16,
                        ((1280, 720), (960, 544), (832, 480), (640, 368))),
    "i2v_a14b": Variant("i2v_a14b", "I2V-A14B", footprint.I2V_A14B_EXPERT, 2, "wan2.1", 16,
                        ((1280, 720), (960, 544), (832, 480), (640, 368))),
}
MODEL_VARIANTS = tuple(VARIANTS)

# Approximate totals as torch.cuda reports them (GiB), and compute capability.
NAMED_GPUS = {
    "RTX 3070": (7.79, (8, 6)),
    "RTX 3060": (11.76, (8, 6)),
    "RTX 4080": (15.70, (8, 9)),
    "RTX 3090": (23.69, (8, 6)),
    "RTX 4090": (23.99, (8, 9)),
    "RTX 5090": (31.36, (12, 0)),
    "RTX A6000": (47.54, (8, 6)),
    "L40S": (44.39, (8, 9)),
    "A100 80GB": (79.15, (8, 0)),
    "H100 80GB": (79.19, (9, 0)),
    "H200": (139.8, (9, 0)),
    # Blackwell and Ada cards for the quantized formats' compute (nvfp4 and mxfp8 from sm100, sm120 included)
    "L4": (22.03, (8, 9)),
    "RTX PRO 6000": (95.59, (12, 0)),
    "B200": (178.35, (10, 0)),
}
# GPU_TIER values (start scripts use these names) -> nominal GB and a representative card.
GPU_TIERS = {
    "CONSUMER_8GB": (8, "RTX 3070"),
    "CONSUMER_12GB": (12, "RTX 3060"),
    "CONSUMER_16GB": (16, "RTX 4080"),
    "PROSUMER_24GB": (24, "RTX 4090"),
    "PROSUMER_32GB": (32, "RTX 5090"),
    "PROSUMER_48GB": (48, "RTX A6000"),
    "DATACENTER_80GB": (80, "H100 80GB"),
    "DATACENTER_141GB": (141, "H200"),
}
DEFAULT_SYSTEM_RAM_BYTES = 64 * BYTES_PER_GIB


def device_for_gpu(name, system_ram_bytes=DEFAULT_SYSTEM_RAM_BYTES, free_vram_bytes=None):
    """A DeviceInfo for a named card (tests, GPU_TIER, the plan matrix)."""
    if name not in NAMED_GPUS:
        raise InvalidInputError("gpu", name, "one of " + ", ".join(NAMED_GPUS))
    total_gib, capability = NAMED_GPUS[name]
    total = int(total_gib * BYTES_PER_GIB)
    return DeviceInfo(kind="cuda", name=f"NVIDIA {name}" if not name.startswith("NVIDIA") else name,
                      total_vram_bytes=total, free_vram_bytes=total if free_vram_bytes is None else free_vram_bytes,
                      compute_capability=capability, total_ram_bytes=system_ram_bytes, free_ram_bytes=system_ram_bytes)


def device_for_tier(tier, system_ram_bytes=DEFAULT_SYSTEM_RAM_BYTES):
    """A DeviceInfo for a GPU_TIER name (its representative card)."""
    key = str(tier).strip().upper()
    if key not in GPU_TIERS:
        raise InvalidInputError("GPU_TIER", tier, "one of " + ", ".join(GPU_TIERS))
    return device_for_gpu(GPU_TIERS[key][1], system_ram_bytes)


def cpu_device(system_ram_bytes=DEFAULT_SYSTEM_RAM_BYTES):
    return DeviceInfo(kind="cpu", name="CPU", total_vram_bytes=0, free_vram_bytes=0,
                      total_ram_bytes=system_ram_bytes, free_ram_bytes=system_ram_bytes)


def tier_for_vram(total_vram_bytes):
    """The largest tier the card reaches (10% slack: a 48 GB L40S reports 44.4 GiB)."""
    best = "BELOW_CONSUMER_8GB"
    for name, (nominal_gb, _) in GPU_TIERS.items():
        if gib(total_vram_bytes) >= nominal_gb * 0.9:
            best = name
    return best
