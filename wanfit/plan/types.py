"""The planner's values: the job and the user's overrides in, the Plan (or a refusal) out."""

from dataclasses import asdict, dataclass

from ..core import Core
from ..device import DeviceInfo
from ..errors import WanFitError
from ..units import format_gib
from .catalogue import VARIANTS, Variant
from .memory_manager import MEMORY_MANAGERS


class PlanDoesNotFitError(WanFitError):
    """No configuration fits; the message says what would (fewer frames, size, dtype, RAM, card)."""

    def __init__(self, message, suggestions=(), max_frames=None, required_ram_bytes=None):
        super().__init__(message)
        self.suggestions = tuple(suggestions)
        self.max_frames = max_frames
        self.required_ram_bytes = required_ram_bytes


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
    weight_dtype: str = None  # force the diffusion model dtype (footprint.WEIGHT_DTYPES, quantized formats included)
    text_encoder_device: str = None  # "cpu" or "gpu"


@dataclass(frozen=True)
class PlanRequest:
    """One validated question to the planner; the refusal search asks variations of it."""

    device: DeviceInfo
    variant: Variant
    job: Job
    overrides: Overrides
    ram_bytes: int  # the system RAM planned for (the device's unless the caller said otherwise)
    core: Core


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
    # a ComfyUI-native quantized format (footprint.QUANTIZED_FORMATS): "native" or "dequantized per layer" on this
    # card, and why; empty for fp16, bf16 and the fp8 files
    weight_compute: str = ""
    weight_compute_reason: str = ""
    # where weights stream and weight_dtype is auto: a quantized format that would keep the model resident, in words
    format_suggestion: str = ""

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
        if self.weight_compute:
            lines.append(f"Weights {self.weight_dtype} computed {self.weight_compute} on {self.device_name}")
        if self.format_suggestion:
            lines.append(f"Suggestion: {self.format_suggestion}")
        drops = [name for name, flag in (("text encoder after encode", self.drop_text_encoder_after_encode),
                                         ("high-noise expert before low", self.drop_high_noise_expert_before_low)) if flag]
        if drops:
            lines.append("Drop: " + ", ".join(drops))
        lines.append("Launch: " + (" ".join(self.launch_args) or "(no flags)"))
        return "\n".join(lines)

def plan_field(plan, name, default=None):
    """A plan's field, from a Plan or from the dict a plan travels as (JSON, GET /wanfit/plan); `default`
    without a plan, so a node or loader with no plan connected reads its own defaults."""
    if plan is None:
        return default
    if isinstance(plan, dict):
        return plan.get(name, default)
    return getattr(plan, name, default)
