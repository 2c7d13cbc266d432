"""The offload planner: device + model variant + job size -> a Plan, before anything loads.

A pure function of its inputs (same inputs, same plan); torch-free. It simulates
what the ComfyUI core it plans for (wanfit.core: 0.3.64 or 0.33.0) will hold in VRAM
and RAM in each phase (text encode, sampling, VAE decode) using wanfit.memory, picks
the fastest configuration that fits, and otherwise refuses with what would fit.
ARCHITECTURE: on either memory manager VRAM bounds activations and RAM bounds weights.
ComfyUI partial loading (0.3.64; 0.33 without dynamic VRAM) keeps a budget of the
diffusion model on the GPU (lowvram_model_memory) and casts the rest per layer from RAM.
Dynamic VRAM (comfy-aimdo, 0.33 on NVIDIA by default) maps the weights into a virtual
address range and faults them in layer by layer: VRAM keeps what activations leave free
(lowest addresses first, i.e. the first blocks), the rest streams from pinned RAM each step.
Launch flags are only ever ones the core's cli_args.py defines and that change something there.
"""

from dataclasses import asdict, dataclass, field, replace
import logging
import math

from . import core as cores
from . import memory
from .decode import budget as decode_memory
from .choices import PLAN_INPUT_LIMITS
from .device import DeviceInfo
from .errors import InvalidInputError, WanFitError
from .units import BYTES_PER_GIB, BYTES_PER_MIB, format_gib, gib

log = logging.getLogger("wanfit")


class PlanDoesNotFitError(WanFitError):
    """No configuration fits; the message says what would (fewer frames, size, dtype, RAM, card)."""

    def __init__(self, message, suggestions=(), max_frames=None, required_ram_bytes=None):
        super().__init__(message)
        self.suggestions = tuple(suggestions)
        self.max_frames = max_frames
        self.required_ram_bytes = required_ram_bytes


# --- inputs ------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    transformer: memory.WanTransformerConfig
    experts: int  # A14B: a high-noise and a low-noise expert
    vae: str
    size_multiple: int  # VAE stride x patch: 32 for TI2V-5B, 16 for A14B
    smaller_sizes: tuple  # landscape sizes to suggest, largest first


VARIANTS = {
    "ti2v_5b": Variant("ti2v_5b", "TI2V-5B", memory.TI2V_5B, 1, "wan2.2", 32,
                       ((1280, 704), (960, 544), (832, 480), (640, 352))),
    "t2v_a14b": Variant("t2v_a14b", "T2V-A14B", memory.T2V_A14B_EXPERT, 2, "wan2.1", 16,
                        ((1280, 720), (960, 544), (832, 480), (640, 368))),
    "i2v_a14b": Variant("i2v_a14b", "I2V-A14B", memory.I2V_A14B_EXPERT, 2, "wan2.1", 16,
                        ((1280, 720), (960, 544), (832, 480), (640, 368))),
}
MODEL_VARIANTS = tuple(VARIANTS)


@dataclass(frozen=True)
class Job:
    width: int
    height: int
    frames: int
    batch: int = 1
    cfg: bool = True  # classifier-free guidance: cond + uncond passes (False for cfg 1.0 / distill LoRAs)


@dataclass(frozen=True)
class Overrides:
    reserve_vram_bytes: int = None  # VRAM kept free for other processes (e.g. a local LLM server)
    weight_dtype: str = None  # force the diffusion model dtype (memory.WEIGHT_DTYPES)
    text_encoder_device: str = None  # "cpu" or "gpu"


# --- GPU tiers and named cards -----------------------------------------------

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


# --- planning constants ------------------------------------------------------

DEFAULT_RESERVE_VRAM_BYTES = 512 * BYTES_PER_MIB  # ComfyUI's Linux default is 400 MiB; desktop compositors need a bit more
VRAM_HEADROOM_BYTES = 256 * BYTES_PER_MIB  # never plan the last bytes below the reserve
RESERVE_ROUNDING_BYTES = 256 * BYTES_PER_MIB  # detected co-tenant VRAM, rounded up so plans are stable
RAM_USABLE_FRACTION = 0.9  # the OS, page cache and other processes keep the rest
TEXT_ENCODER_GPU_FRACTION = 0.75  # the text encoder goes to the GPU only when it uses under this share
TEXT_ENCODER_CPU_WORKSPACE_BYTES = 1 * BYTES_PER_GIB  # fp32 casts of one layer + activations on the CPU
RETENTIONS = ("keep_all", "drop_text_encoder", "drop_text_encoder_and_high_noise")
CACHE_RAM_MARGIN_BYTES = 1 * BYTES_PER_GIB  # --cache-ram: free RAM kept above the next model's size

MEMORY_MANAGERS = {
    "dynamic_vram": "dynamic VRAM (comfy-aimdo)",
    "partial_loading": "ComfyUI partial loading",
    "cpu": "CPU (no VRAM manager)",
}
# Flags the plan never emits on a core that ships dynamic VRAM: --lowvram does nothing there, the
# others switch dynamic VRAM off (comfy/cli_args.py enables_dynamic_vram()).
NEVER_ON_DYNAMIC_VRAM_CORES = ("--lowvram", "--novram", "--highvram", "--gpu-only")
SAGE_MIN_CAPABILITY = (8, 0)  # sageattention kernels: Ampere and newer


# --- the plan ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    model_variant: str
    tier: str
    device_name: str
    job: Job
    weight_dtype: str
    text_encoder_dtype: str
    text_encoder_device: str  # "gpu" or "cpu"
    model_weight_bytes: int  # one diffusion model (one expert for A14B)
    resident_model_bytes: int  # ComfyUI partial-loading budget (lowvram_model_memory)
    streamed_model_bytes: int  # cast/streamed from RAM every step
    cfg_batched: bool  # cond and uncond in one batch (else one after the other)
    drop_text_encoder_after_encode: bool
    drop_high_noise_expert_before_low: bool
    vae_decode_budget_bytes: int
    vae_decode_tiled: bool
    attention_backend: str  # "sageattention" or "pytorch_sdpa"
    reserve_vram_bytes: int
    usable_vram_bytes: int
    usable_ram_bytes: int
    predicted_peak_vram_bytes: int
    predicted_peak_ram_bytes: int
    predicted_vram_by_phase: dict
    predicted_ram_by_phase: dict
    launch_args: tuple
    launch_env: dict
    reasons: tuple
    total_vram_bytes: int = 0
    system_ram_bytes: int = 0
    core_version: str = ""  # the ComfyUI core planned for, e.g. "0.33.0"
    core_source: str = ""  # where that came from (checkout, running process, version string, assumed)
    memory_manager: str = ""  # key of MEMORY_MANAGERS
    pinned_ram_bytes: int = 0  # dynamic VRAM: streamed weights ComfyUI pins in RAM (part of the RAM peak)
    lean_forward: bool = False  # WanFit Lean Forward on the diffusion model(s): needed for the job to fit
    lean_chunk_tokens: int = 0  # tokens per chunk the lean forward uses for this job (its "auto"); 0 when off
    predicted_activation_bytes: int = 0  # one sampling pass's activations (CFG as planned), the forward planned
    # WanFit VAE Decode of this job at vae_decode_budget_bytes: exact halos (equal to VAE Decode), or halos capped
    # and tiles blended (approximate); the smallest budget whose decode is exact; and the plan's words for it
    vae_decode_exact: bool = True
    vae_decode_exact_budget_bytes: int = 0
    vae_decode_outlook: str = ""

    @property
    def resident_fraction(self):
        return self.resident_model_bytes / self.model_weight_bytes if self.model_weight_bytes else 0.0

    @property
    def is_cpu(self):
        return self.tier == "CPU"

    def as_dict(self):
        data = asdict(self)
        data["launch_args"] = list(self.launch_args)
        data["reasons"] = list(self.reasons)
        data["resident_fraction"] = round(self.resident_fraction, 4)
        data["memory_manager_label"] = MEMORY_MANAGERS.get(self.memory_manager, self.memory_manager)
        return data

    def summary(self):
        job = self.job
        label = VARIANTS[self.model_variant].label
        lines = [f"WanFit plan: {label} {job.width}x{job.height}x{job.frames} (batch {job.batch}) "
                 f"on {self.device_name} [{self.tier}]"]
        manager = MEMORY_MANAGERS.get(self.memory_manager, self.memory_manager)
        lines.append(f"ComfyUI {self.core_version or '?'}: {manager}")
        if self.is_cpu:
            lines.append(f"CPU only: weights {self.weight_dtype}, predicted RAM "
                         f"{format_gib(self.predicted_peak_ram_bytes)} of {format_gib(self.system_ram_bytes)}; "
                         f"VAE decode {self.vae_decode_outlook}")
        else:
            streamed_from = "from pinned RAM" if self.memory_manager == "dynamic_vram" else "cast from RAM"
            lines.append(f"Weights {self.weight_dtype}: {format_gib(self.resident_model_bytes)} of "
                         f"{format_gib(self.model_weight_bytes)} resident, {format_gib(self.streamed_model_bytes)} "
                         f"streamed {streamed_from}; text encoder {self.text_encoder_dtype} on {self.text_encoder_device}")
            lines.append(f"Predicted peak VRAM {format_gib(self.predicted_peak_vram_bytes)} of "
                         f"{format_gib(self.total_vram_bytes)} (reserve {format_gib(self.reserve_vram_bytes)}), "
                         f"RAM {format_gib(self.predicted_peak_ram_bytes)} of {format_gib(self.system_ram_bytes)}")
            lines.append(f"Attention {self.attention_backend}; VAE decode budget "
                         f"{format_gib(self.vae_decode_budget_bytes)}{' (tiled)' if self.vae_decode_tiled else ''}: "
                         f"{self.vae_decode_outlook}")
        if self.lean_forward:
            lines.append(f"Lean forward: on (chunks of {self.lean_chunk_tokens} tokens), activations "
                         f"{format_gib(self.predicted_activation_bytes)}")
        drops = [name for name, flag in (("text encoder after encode", self.drop_text_encoder_after_encode),
                                         ("high-noise expert before low", self.drop_high_noise_expert_before_low)) if flag]
        if drops:
            lines.append("Drop: " + ", ".join(drops))
        lines.append("Launch: " + (" ".join(self.launch_args) or "(no flags)"))
        return "\n".join(lines)


# --- validation --------------------------------------------------------------


def _variant(model_variant):
    key = str(model_variant).strip().lower().replace("-", "_")
    if key not in VARIANTS:
        raise InvalidInputError("model_variant", model_variant, "one of " + ", ".join(MODEL_VARIANTS),
                                "ti2v_5b for the 5B model (Wan 2.2 VAE), t2v_a14b / i2v_a14b for the expert pair")
    return VARIANTS[key]


def _positive_int(name, value):
    """A whole number from 1 up to the input's limit; an absurd one (10**300) is refused before any arithmetic."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(name, value, "a positive whole number")
    highest = PLAN_INPUT_LIMITS[name][1]
    if value > highest:
        raise InvalidInputError(name, value, f"at most {highest}", f"use {highest} or less")


def validate_job(job, variant):
    for name in ("width", "height"):
        value = getattr(job, name)
        _positive_int(name, value)
        if value % variant.size_multiple:
            lower = max(variant.size_multiple, value // variant.size_multiple * variant.size_multiple)
            raise InvalidInputError(name, value, f"a multiple of {variant.size_multiple} for {variant.label}",
                                    f"use {lower} or {lower + variant.size_multiple}")
    _positive_int("frames", job.frames)
    if (job.frames - 1) % 4:
        lower = (job.frames - 1) // 4 * 4 + 1
        raise InvalidInputError("frames", job.frames, "4n+1 (1, 5, ..., 81, ..., 121): the VAE packs 4 frames per latent frame",
                                f"use {lower} or {lower + 4}")
    _positive_int("batch", job.batch)


def _validate_overrides(overrides, device):
    if overrides.weight_dtype is not None and overrides.weight_dtype not in memory.WEIGHT_DTYPES:
        raise InvalidInputError("weight_dtype", overrides.weight_dtype, "one of " + ", ".join(memory.WEIGHT_DTYPES))
    if overrides.text_encoder_device not in (None, "cpu", "gpu"):
        raise InvalidInputError("text_encoder_device", overrides.text_encoder_device, "cpu, gpu or unset (auto)")
    reserve = overrides.reserve_vram_bytes
    if reserve is not None:
        if isinstance(reserve, bool) or not isinstance(reserve, (int, float)) or not math.isfinite(reserve):
            raise InvalidInputError("reserve_vram_gb", reserve, "a finite number of GB (reserve_vram_bytes: bytes)")
        if reserve < 0:
            raise InvalidInputError("reserve_vram_gb", gib(reserve), "0 or more")
        if device.is_gpu and reserve >= device.total_vram_bytes:
            raise InvalidInputError("reserve_vram_gb", round(gib(reserve), 2),
                                    f"less than the card's total VRAM ({format_gib(device.total_vram_bytes)})",
                                    "reserve only what the other process (e.g. an LLM server) really holds")


def _reserve_bytes(device, overrides):
    if overrides.reserve_vram_bytes is not None:
        return max(int(overrides.reserve_vram_bytes), DEFAULT_RESERVE_VRAM_BYTES)
    other = device.total_vram_bytes - device.free_vram_bytes - memory.CUDA_CONTEXT_BYTES
    if device.free_vram_bytes <= 0 or other <= 0:
        other = 0
    other = -(-other // RESERVE_ROUNDING_BYTES) * RESERVE_ROUNDING_BYTES
    return DEFAULT_RESERVE_VRAM_BYTES + other


# --- evaluating one candidate ------------------------------------------------


@dataclass
class _Candidate:
    weight_dtype: str
    text_encoder_dtype: str
    retention: str
    text_encoder_device: str = "cpu"
    lean_forward: bool = False
    failures: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)


def _ram_phases(variant, job, on_cpu, weight_dtype, te_dtype, te_device, retention, sample_workspace, decode_workspace):
    config = variant.transformer
    upcast = on_cpu and weight_dtype not in memory.FP8_DTYPES
    model = memory.transformer_weight_bytes(config, weight_dtype, upcast_to_fp32=upcast)
    te = memory.text_encoder_weight_bytes(te_dtype)
    vae = decode_memory.vae_weight_bytes(variant.vae, upcast_to_fp32=on_cpu)
    video = memory.decoded_video_ram_bytes(job.width, job.height, job.frames, job.batch)
    te_workspace = TEXT_ENCODER_CPU_WORKSPACE_BYTES if te_device == "cpu" else 0
    base = memory.PROCESS_BASE_RAM_BYTES
    held_te = 0 if retention != "keep_all" else te
    experts_held = 1 if retention == "drop_text_encoder_and_high_noise" else variant.experts
    return {
        "text_encode": base + te + vae + te_workspace + (model * variant.experts if retention == "keep_all" else 0),
        "sample": base + held_te + vae + model * experts_held + sample_workspace,
        "vae_decode": base + held_te + vae + model * experts_held + decode_workspace + video,
    }


def _evaluate(device, variant, job, reserve, ram_bytes, candidate, te_device_override, core, forced_dtype=False):
    config = variant.transformer
    on_cpu = not device.is_gpu
    compute_bytes = 4 if on_cpu else 2
    cfg_factor = 2 if job.cfg else 1
    lean = candidate.lean_forward
    act_batched = memory.transformer_activation_bytes(config, job.width, job.height, job.frames,
                                                      job.batch * cfg_factor, compute_bytes, core_version=core.version,
                                                      lean_forward=lean)
    act_single = memory.transformer_activation_bytes(config, job.width, job.height, job.frames, job.batch, compute_bytes,
                                                     core_version=core.version, lean_forward=lean)
    state = memory.sampler_state_bytes(config, job.width, job.height, job.frames, job.batch)
    n = candidate.numbers
    n["model_weight_bytes"] = memory.transformer_weight_bytes(
        config, candidate.weight_dtype, upcast_to_fp32=on_cpu and candidate.weight_dtype not in memory.FP8_DTYPES)
    decode_need = decode_memory.job_exact_budget_bytes(variant.vae, job.width, job.height, job.frames, job.batch,
                                                       "cpu") if on_cpu else 0

    if on_cpu:
        candidate.text_encoder_device = "cpu"
        n.update(resident=0, cfg_batched=job.cfg, vram={}, peak_vram=0, decode_budget=decode_need, tiled=False,
                 activation=act_batched if job.cfg else act_single)
        sample_ws, decode_ws = act_batched + state, decode_need
    else:
        usable = device.total_vram_bytes - reserve
        ceiling = usable - VRAM_HEADROOM_BYTES
        model = n["model_weight_bytes"]
        fixed = memory.CUDA_CONTEXT_BYTES + memory.weight_cast_window_bytes(config) + state
        if fixed + model + act_batched <= ceiling:
            resident, cfg_batched, sample_peak = model, job.cfg, fixed + model + act_batched
        elif fixed + act_single <= ceiling:
            # Partial loading fills the card: the plan budgets all of it (an envelope).
            resident, cfg_batched, sample_peak = min(model, ceiling - fixed - act_single), False, ceiling
        else:
            resident, cfg_batched, sample_peak = 0, False, fixed + act_single
            candidate.failures.append(
                f"one sampling pass needs {format_gib(fixed + act_single)} of VRAM "
                f"({format_gib(act_single)} activations for {memory.transformer_tokens(config, job.width, job.height, job.frames)} tokens) "
                f"but only {format_gib(ceiling)} is usable")
        if (variant.experts > 1 and candidate.weight_dtype not in memory.FP8_DTYPES and resident < model
                and not forced_dtype):
            candidate.failures.append("16-bit experts are only worth it fully resident")
        te_bytes = memory.text_encoder_weight_bytes(candidate.text_encoder_dtype)
        te_need = memory.CUDA_CONTEXT_BYTES + te_bytes + memory.TEXT_ENCODER_ACTIVATION_BYTES
        if te_device_override:
            candidate.text_encoder_device = te_device_override
        else:
            candidate.text_encoder_device = "gpu" if te_need <= TEXT_ENCODER_GPU_FRACTION * ceiling else "cpu"
        vae_bytes = decode_memory.vae_weight_bytes(variant.vae)
        decode_budget = ceiling - memory.CUDA_CONTEXT_BYTES - vae_bytes
        decode = decode_memory.job_decode_outlook(variant.vae, job.width, job.height, job.frames, job.batch,
                                                  max(decode_budget, 0), device.kind)
        if not decode.fits:
            candidate.failures.append(f"VAE decode needs at least {format_gib(decode.minimum_budget_bytes)} "
                                      f"for its smallest tile plus {format_gib(vae_bytes)} weights")
            decode_budget = max(decode_budget, 0)
        vram = {
            "text_encode": min(te_need, ceiling) if candidate.text_encoder_device == "gpu" else 0,
            "sample": sample_peak,
            "vae_decode": memory.CUDA_CONTEXT_BYTES + vae_bytes + (decode.predicted_peak_bytes or decode_budget),
        }
        n.update(activation=act_batched if cfg_batched else act_single)
        n.update(resident=resident, cfg_batched=cfg_batched, vram=vram, peak_vram=max(vram.values()),
                 decode_budget=decode_budget, tiled=not decode.untiled, usable=usable)
        sample_ws, decode_ws = 0, 0

    ram = _ram_phases(variant, job, on_cpu, candidate.weight_dtype, candidate.text_encoder_dtype,
                      candidate.text_encoder_device, candidate.retention, sample_ws, decode_ws)
    usable_ram = int(ram_bytes * RAM_USABLE_FRACTION)
    peak_ram = max(ram.values())
    if peak_ram > usable_ram:
        worst = max(ram, key=ram.get)
        candidate.failures.append(f"system RAM: the {worst.replace('_', ' ')} phase holds {format_gib(peak_ram)} "
                                  f"but {format_gib(usable_ram)} of {format_gib(ram_bytes)} is usable")
    n.update(ram=ram, peak_ram=peak_ram, usable_ram=usable_ram)
    return not candidate.failures


def _candidates(device, variant, overrides):
    if overrides.weight_dtype:
        dtypes = (overrides.weight_dtype,)
    else:
        dtypes = ("fp16", "fp8_scaled")
    retentions = RETENTIONS if variant.experts > 1 else RETENTIONS[:2]
    for retention in retentions:
        for dtype in dtypes:
            te_dtypes = ("fp16", "fp8_scaled") if dtype not in memory.FP8_DTYPES else ("fp8_scaled",)
            for te_dtype in te_dtypes:
                yield _Candidate(dtype, te_dtype, retention)


def _try_plan(device, variant, job, overrides, ram_bytes, core):
    """(chosen candidate or None, last candidate tried, reserve). The core's own forward first; WanFit's
    lean forward (wanfit/lean_forward.py) only where the stock activations make every candidate fail.
    Any supported core: the lean forward checks itself against the core's own block at run time."""
    chosen, last, reserve = _try_forward(device, variant, job, overrides, ram_bytes, core, lean=False)
    if chosen is None:
        lean_chosen, lean_last, reserve = _try_forward(device, variant, job, overrides, ram_bytes, core, lean=True)
        if lean_chosen is not None:
            return lean_chosen, lean_last, reserve
    return chosen, last, reserve


def _try_forward(device, variant, job, overrides, ram_bytes, core, lean):
    reserve = _reserve_bytes(device, overrides) if device.is_gpu else 0
    last = None
    for candidate in _candidates(device, variant, overrides):
        candidate.lean_forward = lean
        last = candidate
        if _evaluate(device, variant, job, reserve, ram_bytes, candidate, overrides.text_encoder_device, core,
                     forced_dtype=bool(overrides.weight_dtype)):
            if (candidate.text_encoder_dtype == "fp16" and candidate.text_encoder_device == "cpu"
                    and not overrides.text_encoder_device):
                continue  # a 16-bit text encoder only pays off on the GPU
            return candidate, last, reserve
    return None, last, reserve


# --- public entry point ------------------------------------------------------


def plan(device: DeviceInfo, model_variant: str, job: Job, overrides: Overrides = None, system_ram_bytes=None,
         core: cores.Core = None) -> Plan:
    """Choose dtype, placement, offload budget and launch flags for `job` on `device` under `core`.

    `core` (wanfit.core.Core) is the ComfyUI the plan is for; None plans for the newest supported
    core (0.33.0), which is what a fresh install runs. The node and the route pass the running
    core, the CLI the one at --core / $COMFYUI_PATH.
    """
    core = core or cores.newest_core()
    if not isinstance(core, cores.Core):
        raise InvalidInputError("core", core, "a wanfit.core.Core (core_from_version / core_from_checkout / running_core)")
    variant = _variant(model_variant)
    validate_job(job, variant)
    overrides = overrides or Overrides()
    ram_bytes = device.total_ram_bytes if system_ram_bytes is None else system_ram_bytes
    if isinstance(ram_bytes, bool) or not isinstance(ram_bytes, int) or ram_bytes <= 0:
        raise InvalidInputError("system_ram_bytes", ram_bytes, "the machine's total RAM in bytes (> 0)")
    if device.is_gpu and device.total_vram_bytes <= 0:
        raise InvalidInputError("total_vram_bytes", device.total_vram_bytes, f"> 0 for GPU {device.name!r}",
                                "check nvidia-smi and CUDA_VISIBLE_DEVICES, set GPU_TIER, or run ComfyUI with --cpu")
    _validate_overrides(overrides, device)

    chosen, last, reserve = _try_plan(device, variant, job, overrides, ram_bytes, core)
    if chosen is None:
        raise _refusal(device, variant, job, overrides, ram_bytes, last, core)
    result = _build_plan(device, variant, job, overrides, ram_bytes, chosen, reserve, core)
    log.info("plan %s %dx%dx%d on %s, ComfyUI %s (%s): %s, resident %s, peak VRAM %s, RAM %s", variant.key, job.width,
             job.height, job.frames, device.name, result.core_version, result.memory_manager, result.weight_dtype,
             format_gib(result.resident_model_bytes), format_gib(result.predicted_peak_vram_bytes),
             format_gib(result.predicted_peak_ram_bytes))
    return result


def fits(device, model_variant, job, overrides=None, system_ram_bytes=None, core=None):
    """True when `plan` would return a plan (invalid inputs still raise)."""
    try:
        plan(device, model_variant, job, overrides, system_ram_bytes, core)
    except PlanDoesNotFitError:
        return False
    return True


def _attention(device):
    if not device.is_gpu:
        return "pytorch_sdpa", "attention: PyTorch SDPA (sageattention has no CPU kernels)"
    capability = tuple(device.compute_capability or (0, 0))
    if capability < SAGE_MIN_CAPABILITY:
        return "pytorch_sdpa", f"attention: PyTorch SDPA (sageattention needs compute capability 8.0+, this card is {capability[0]}.{capability[1]})"
    if device.attention_backends and not device.attention_backends.get("sageattention"):
        return "pytorch_sdpa", "attention: PyTorch SDPA (sageattention is not installed: `python -m wanfit doctor` says how)"
    return "sageattention", "attention: sageattention preferred (the patcher falls back to SDPA if a shape or kernel is unsupported)"


def _is_nvidia(device):
    name = device.name.lower()
    return device.kind == "cuda" and not any(word in name for word in ("amd", "radeon", "instinct"))


def _torch_older_than(device, version):
    parsed = cores.parse_version(str(device.torch_version).split("+")[0]) if device.torch_version else None
    return parsed is not None and parsed[:2] < version


def memory_manager(core, device):
    """Which memory manager places the weights: (key of MEMORY_MANAGERS, why)."""
    if not device.is_gpu:
        return "cpu", "no GPU: every model runs from RAM"
    if not core.dynamic_vram:
        return "partial_loading", (f"ComfyUI {core.version_text} has no dynamic VRAM: ComfyUI partial loading keeps a "
                                   "budget of the diffusion model on the GPU and casts the rest from RAM per layer")
    if core.dynamic_vram_active is not None:
        if core.dynamic_vram_active:
            return "dynamic_vram", "the running ComfyUI has dynamic VRAM (comfy-aimdo) on"
        return "partial_loading", ("the running ComfyUI has dynamic VRAM off (a flag such as --disable-dynamic-vram, "
                                   "torch older than 2.8, no working comfy-aimdo, or not an NVIDIA GPU): "
                                   "ComfyUI partial loading places the weights")
    if not _is_nvidia(device):
        return "partial_loading", (f"ComfyUI {core.version_text} turns dynamic VRAM on by default only on NVIDIA: "
                                   "ComfyUI partial loading places the weights")
    if _torch_older_than(device, cores.DYNAMIC_VRAM_MIN_TORCH):
        return "partial_loading", (f"torch {device.torch_version} is older than 2.8, so ComfyUI {core.version_text} "
                                   "falls back from dynamic VRAM to partial loading")
    return "dynamic_vram", (f"ComfyUI {core.version_text} on an NVIDIA GPU runs dynamic VRAM (comfy-aimdo) by default "
                            "(torch 2.8 or newer)")


def pinned_ram_cap_bytes(ram_bytes):
    """ComfyUI 0.33's MAX_PINNED_MEMORY on Linux without swap (comfy/model_management.py)."""
    return int(max(ram_bytes * 0.40, min(ram_bytes * 0.90, ram_bytes - 4 * BYTES_PER_GIB, ram_bytes - 16 * BYTES_PER_GIB)))


def default_cache_ram_headroom_bytes(ram_bytes):
    """ComfyUI 0.33's RAM-pressure cache threshold without --cache-ram (main.py prompt_worker)."""
    return int(min(10.0, max(2.0, gib(ram_bytes) * 0.10)) * BYTES_PER_GIB)


def _gb_text(num_bytes):
    return f"{num_bytes / BYTES_PER_GIB:.2f}".rstrip("0").rstrip(".")


def _launch(core, manager, device, ram_bytes, reserve, other, streamed, te_device, drop_te, next_model_bytes):
    """(launch flags, reasons): only flags `core` defines and that change something on it."""
    args, reasons = ["--reserve-vram", _gb_text(reserve)], []
    if manager == "dynamic_vram":
        reasons.append(f"--reserve-vram {_gb_text(reserve)}: ComfyUI's reserve and comfy-aimdo's VRAM headroom at once "
                       "(main.py passes it to comfy_aimdo.control.init): dynamic VRAM keeps ComfyUI's own VRAM below "
                       f"total - {format_gib(reserve)} at all times, idle included")
        if other > 0:
            reasons.append(f"the {format_gib(other)} for other processes is in that reserve, so their share stays free "
                           "without --disable-smart-memory (which on dynamic VRAM would evict cached weights after "
                           "every run only to stream them in again)")
    else:
        reasons.append(f"--reserve-vram {_gb_text(reserve)}: partial loading leaves this much VRAM free when it "
                       "sizes the resident part")
        if streamed and not core.async_offload_default_on:
            args.append("--async-offload")
            reasons.append("--async-offload: copies the next streamed weights while the current layer computes")
        if streamed and te_device == "cpu" and not core.dynamic_vram:
            args.append("--lowvram")
            reasons.append("--lowvram: ComfyUI's own text encoder loaders put umt5-xxl on the CPU too")
        if other > 0:
            args.append("--disable-smart-memory")
            reasons.append("--disable-smart-memory: hand VRAM back to the other process between runs")
    if drop_te:
        if core.has_flag("--cache-ram"):
            headroom = -(-(next_model_bytes + CACHE_RAM_MARGIN_BYTES) // BYTES_PER_GIB) * BYTES_PER_GIB
            if not core.ram_cache_default_on:  # 0.3.68-0.21: the classic cache is the default and holds every model
                args.append("--cache-ram")
                args.append(_gb_text(headroom))
                reasons.append(f"--cache-ram {_gb_text(headroom)}: switches ComfyUI {core.version_text} from its default "
                               "classic cache (which would hold the models the plan drops) to its RAM-pressure cache, "
                               f"which frees cached models once free RAM falls below {format_gib(headroom)} (the next "
                               "model plus a margin) and keeps them cached while RAM allows, unlike --cache-none")
            elif headroom > default_cache_ram_headroom_bytes(ram_bytes):
                args.append("--cache-ram")
                args.append(_gb_text(headroom))
                reasons.append(f"--cache-ram {_gb_text(headroom)}: ComfyUI {core.version_text}'s RAM-pressure cache "
                               f"frees cached models once free RAM falls below {format_gib(headroom)} (the next model "
                               f"plus a margin; default {format_gib(default_cache_ram_headroom_bytes(ram_bytes))}), "
                               "and keeps them cached while RAM allows, unlike --cache-none")
            else:
                reasons.append(f"ComfyUI {core.version_text}'s RAM-pressure cache (default threshold "
                               f"{format_gib(default_cache_ram_headroom_bytes(ram_bytes))}) already frees models in time")
        else:
            args.append("--cache-none")
            reasons.append("--cache-none: ComfyUI's node cache must not hold the models the plan drops")
    unknown = [flag for flag in args if flag.startswith("--") and not core.has_flag(flag)]
    forbidden = [flag for flag in args if core.dynamic_vram and flag in NEVER_ON_DYNAMIC_VRAM_CORES]
    if unknown or forbidden:  # a planner bug, never a user error: fail loudly rather than emit a wrong line
        raise WanFitError(f"plan for ComfyUI {core.version_text} would emit {unknown + forbidden}, which that core "
                          "does not define or which fight its dynamic VRAM")
    return tuple(args), reasons


def _build_plan(device, variant, job, overrides, ram_bytes, chosen, reserve, core):
    n = chosen.numbers
    model = n["model_weight_bytes"]
    resident = n["resident"]
    streamed = 0 if not device.is_gpu else model - resident
    drop_te = chosen.retention != "keep_all"
    drop_high = chosen.retention == "drop_text_encoder_and_high_noise"
    attention, attention_reason = _attention(device)
    manager, manager_reason = memory_manager(core, device)
    pinned = min(streamed, pinned_ram_cap_bytes(ram_bytes)) if manager == "dynamic_vram" else 0
    reasons = [f"core: {core.describe()}; memory manager {MEMORY_MANAGERS[manager]}: {manager_reason}"]
    outlook = _decode_outlook(device, variant, job, n["decode_budget"])
    if not device.is_gpu:
        reasons.append(f"CPU: no GPU is available to PyTorch on {device.name}, so ComfyUI runs every model on the CPU "
                       "(--cpu) in float32; expect minutes per step, even at small sizes")
        reasons.append(f"weights {chosen.weight_dtype}" + (" (16-bit files load as fp32 on the CPU)"
                                                            if chosen.weight_dtype not in memory.FP8_DTYPES else " (stay fp8, cast per layer)"))
        launch_args, launch_env = ("--cpu",), {}
    else:
        if chosen.weight_dtype in memory.FP8_DTYPES:
            why = "forced" if overrides.weight_dtype else (
                "16-bit weights do not fit RAM" if variant.experts == 1 else "a 16-bit expert would not stay resident in VRAM or fit RAM")
            reasons.append(f"weights {chosen.weight_dtype}: {why}")
        else:
            reasons.append(f"weights {chosen.weight_dtype}: " + ("forced" if overrides.weight_dtype else "full quality fits"))
        if streamed and manager == "dynamic_vram":
            reasons.append(f"dynamic VRAM: predicted {format_gib(resident)} of {format_gib(model)} stays in VRAM (the "
                           f"first blocks: comfy-aimdo keeps the lowest addresses of the model's VBAR and evicts above a "
                           f"watermark when activations need room), {format_gib(streamed)} streams from pinned RAM every "
                           f"step (async offload is on by default); pinned RAM {format_gib(pinned)}, part of the RAM "
                           f"peak, ComfyUI caps pins at {format_gib(pinned_ram_cap_bytes(ram_bytes))}")
        elif streamed:
            reasons.append(f"partial loading: {format_gib(resident)} of {format_gib(model)} stays on the GPU, "
                           f"{format_gib(streamed)} is cast from RAM layer by layer each step"
                           + ("" if core.async_offload_default_on else " (--async-offload overlaps it)"))
        elif manager == "dynamic_vram":
            reasons.append(f"diffusion model fully resident ({format_gib(model)}): dynamic VRAM faults every weight in "
                           "on the first step and keeps it")
        else:
            reasons.append(f"diffusion model fully resident ({format_gib(model)})")
        if job.cfg:
            reasons.append("CFG: cond and uncond run " + ("batched (fits)" if n["cfg_batched"] else
                                                          "one after the other (batched activations do not fit next to the weights)"))
        te_how = ""
        if chosen.text_encoder_device == "cpu" and manager == "dynamic_vram":
            te_how = " (the WanFit text encoder loader places it; no launch flag needed)"
        reasons.append(f"text encoder umt5-xxl {chosen.text_encoder_dtype} on {chosen.text_encoder_device}: " + (
            "forced" if overrides.text_encoder_device else
            ("fits beside the card's other work" if chosen.text_encoder_device == "gpu"
             else "it would take most of the card; the CPU encodes 512 tokens in seconds")) + te_how)
        reasons.append(f"VAE decode budget {format_gib(n['decode_budget'])}: " +
                       ("tiled decode within budget" if n["tiled"] else "whole frames fit, no tiling needed") +
                       f"; WanFit VAE Decode at this budget: {outlook.describe()}")
        other = reserve - DEFAULT_RESERVE_VRAM_BYTES
        reasons.append(f"reserve {format_gib(reserve)} of VRAM" + (
            f" ({format_gib(other)} for other processes on this GPU)" if other > 0 else " (desktop, driver, fragmentation)"))
        launch_args, flag_reasons = _launch(core, manager, device, ram_bytes, reserve, other, streamed,
                                            chosen.text_encoder_device, drop_te, model)
        reasons += flag_reasons
        launch_env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"} if device.kind == "cuda" else {}
    reasons.append(attention_reason)
    lean_chunk = 0
    if chosen.lean_forward:
        config, tokens = variant.transformer, memory.transformer_tokens(variant.transformer, job.width, job.height, job.frames)
        lean_chunk = memory.lean_auto_chunk_tokens(tokens)
        batch = job.batch * (2 if n["cfg_batched"] else 1)
        compute_bytes = 4 if not device.is_gpu else 2
        stock = memory.transformer_activation_bytes(config, job.width, job.height, job.frames, batch, compute_bytes,
                                                    core_version=core.version)
        reasons.append(f"lean forward on (WanFit Lean Forward, chunks of {lean_chunk} tokens): activations "
                       f"{format_gib(n['activation'])} instead of {format_gib(stock)} with ComfyUI's own blocks "
                       f"({memory.lean_block_units(config, tokens):.1f} instead of "
                       f"{memory.activation_hidden_units(config, core.version):.1f} hidden states of {tokens} tokens), "
                       f"saving {format_gib(stock - n['activation'])}: without it the job does not fit")
    if drop_te:
        reasons.append("RAM is short for keeping every model: free the text encoder after encoding" +
                       (" and the high-noise expert before the low-noise expert loads" if drop_high else "") +
                       " (ComfyUI's node cache must let them go)")
    elif variant.experts > 1:
        reasons.append("RAM holds both experts and the text encoder: nothing is dropped between runs")
    return Plan(
        model_variant=variant.key,
        tier="CPU" if not device.is_gpu else tier_for_vram(device.total_vram_bytes),
        device_name=device.name,
        job=job,
        weight_dtype=chosen.weight_dtype,
        text_encoder_dtype=chosen.text_encoder_dtype,
        text_encoder_device=chosen.text_encoder_device,
        model_weight_bytes=model,
        resident_model_bytes=resident,
        streamed_model_bytes=streamed,
        cfg_batched=n["cfg_batched"],
        drop_text_encoder_after_encode=drop_te,
        drop_high_noise_expert_before_low=drop_high,
        vae_decode_budget_bytes=int(n["decode_budget"]),
        vae_decode_tiled=n["tiled"],
        attention_backend=attention,
        reserve_vram_bytes=reserve,
        usable_vram_bytes=n.get("usable", 0),
        usable_ram_bytes=n["usable_ram"],
        predicted_peak_vram_bytes=int(n["peak_vram"]),
        predicted_peak_ram_bytes=int(n["peak_ram"]),
        predicted_vram_by_phase={k: int(v) for k, v in n["vram"].items()},
        predicted_ram_by_phase={k: int(v) for k, v in n["ram"].items()},
        launch_args=launch_args,
        launch_env=launch_env,
        reasons=tuple(reasons),
        total_vram_bytes=device.total_vram_bytes,
        system_ram_bytes=ram_bytes,
        core_version=core.version_text,
        core_source=core.source,
        memory_manager=manager,
        pinned_ram_bytes=int(pinned),
        lean_forward=chosen.lean_forward,
        lean_chunk_tokens=lean_chunk,
        predicted_activation_bytes=int(n["activation"]),
        vae_decode_exact=outlook.exact or outlook.untiled,
        vae_decode_exact_budget_bytes=outlook.exact_budget_bytes,
        vae_decode_outlook=outlook.describe(),
    )


def _decode_outlook(device, variant, job, budget_bytes):
    """WanFit VAE Decode of this job's latent at the planned budget, planned as the node will (its static layouts of
    the variant's VAE): exact halos or approximate, and the budget that makes it exact. A GPU decodes in 16-bit and
    keeps finished frames in RAM; a CPU decodes in fp32 with the video in the same memory."""
    device_type = device.kind if device.is_gpu else "cpu"
    return decode_memory.job_decode_outlook(variant.vae, job.width, job.height, job.frames, job.batch, int(budget_bytes),
                                            device_type)


# --- refusals that say what would fit -----------------------------------------


def _fits_quietly(device, variant, job, overrides, ram_bytes, core):
    return _try_plan(device, variant, job, overrides, ram_bytes, core)[0] is not None


def _max_frames(device, variant, job, overrides, ram_bytes, core):
    """Largest 4n+1 frame count below job.frames that fits (memory grows with frames)."""
    low, high = -1, (job.frames - 1) // 4 - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _fits_quietly(device, variant, replace(job, frames=4 * middle + 1), overrides, ram_bytes, core):
            low = middle
        else:
            high = middle - 1
    return 4 * low + 1 if low >= 0 else None


def _required_ram(device, variant, job, overrides, core):
    """Smallest whole-GB system RAM that makes the job fit, or None (VRAM-bound)."""
    ceiling_gb = 4096
    if not _fits_quietly(device, variant, job, overrides, ceiling_gb * BYTES_PER_GIB, core):
        return None
    low, high = 1, ceiling_gb
    while low < high:
        middle = (low + high) // 2
        if _fits_quietly(device, variant, job, overrides, middle * BYTES_PER_GIB, core):
            high = middle
        else:
            low = middle + 1
    return low * BYTES_PER_GIB


def _refusal(device, variant, job, overrides, ram_bytes, last, core):
    where = (f"{device.name} ({format_gib(device.total_vram_bytes)} VRAM)" if device.is_gpu else f"the CPU ({device.name})")
    reason = "; ".join(last.failures) if last else "no configuration fits"
    suggestions = []
    max_frames = _max_frames(device, variant, job, overrides, ram_bytes, core)
    if max_frames is not None:
        suggestions.append(f"fewer frames: at most {max_frames} frames at {job.width}x{job.height}")
    portrait = job.height > job.width
    for width, height in variant.smaller_sizes:
        if portrait:
            width, height = height, width
        if width * height < job.width * job.height and _fits_quietly(
                device, variant, replace(job, width=width, height=height), overrides, ram_bytes, core):
            suggestions.append(f"a smaller size: {width}x{height} with {job.frames} frames")
            break
    if overrides.weight_dtype and overrides.weight_dtype not in memory.FP8_DTYPES:
        fp8 = replace(overrides, weight_dtype="fp8_scaled")
        if _fits_quietly(device, variant, job, fp8, ram_bytes, core):
            suggestions.append("fp8 weights (weight_dtype fp8_scaled)")
    if overrides.text_encoder_device == "gpu" and _fits_quietly(
            device, variant, job, replace(overrides, text_encoder_device="cpu"), ram_bytes, core):
        suggestions.append("the text encoder on the CPU")
    if overrides.reserve_vram_bytes and overrides.reserve_vram_bytes > DEFAULT_RESERVE_VRAM_BYTES and _fits_quietly(
            device, variant, job, replace(overrides, reserve_vram_bytes=None), ram_bytes, core):
        suggestions.append(f"a smaller reserve_vram_gb (now {gib(overrides.reserve_vram_bytes):.1f})")
    required_ram = _required_ram(device, variant, job, overrides, core)
    if required_ram is not None and required_ram > ram_bytes:
        suggestions.append(f"more system RAM: at least {gib(required_ram):.0f} GB (this machine has {gib(ram_bytes):.0f} GB)")
    if device.is_gpu:
        for name, (total_gib, _) in sorted(NAMED_GPUS.items(), key=lambda item: item[1][0]):
            if total_gib * BYTES_PER_GIB > device.total_vram_bytes and _fits_quietly(
                    device_for_gpu(name, ram_bytes), variant, job, overrides, ram_bytes, core):
                suggestions.append(f"a bigger GPU: {total_gib:.0f} GB ({name}) with this RAM")
                break
    if variant.experts > 1:
        five_b = Job(1280 if job.width >= job.height else 704, 704 if job.width >= job.height else 1280,
                     min(job.frames, 121), job.batch, job.cfg)
        if _fits_quietly(device, VARIANTS["ti2v_5b"], five_b, replace(overrides, weight_dtype=None), ram_bytes, core):
            suggestions.append(f"TI2V-5B ({five_b.width}x{five_b.height}x{five_b.frames}) instead of the A14B pair")
    message = (f"{variant.label} {job.width}x{job.height}x{job.frames} (batch {job.batch}) does not fit on {where} "
               f"with {gib(ram_bytes):.0f} GB system RAM: {reason}. ")
    if suggestions:
        message += "What would fit: " + "; ".join(suggestions) + "."
    else:
        message += "Nothing smaller fits on this machine either: use a machine with more RAM and VRAM."
    return PlanDoesNotFitError(message, suggestions, max_frames, required_ram)
