"""The candidate search: simulate what the core holds in VRAM and RAM in each phase (text encode, sampling,
VAE decode) for each configuration, fastest first, and keep the first that fits.

The core's own forward first; WanFit's lean forward (wanfit/lean_forward.py) where the stock
activations make every candidate fail or stream weights the lean forward keeps resident. Any supported core: the lean forward checks itself against
the core's own block at run time.
"""

from dataclasses import dataclass, fields, replace

from ..decode import budget as decode_memory
from ..units import BYTES_PER_GIB, BYTES_PER_MIB, format_gib
from . import footprint

DEFAULT_RESERVE_VRAM_BYTES = 512 * BYTES_PER_MIB  # ComfyUI's Linux default is 400 MiB; desktop compositors need a bit more
VRAM_HEADROOM_BYTES = 256 * BYTES_PER_MIB  # never plan the last bytes below the reserve
RESERVE_ROUNDING_BYTES = 256 * BYTES_PER_MIB  # detected co-tenant VRAM, rounded up so plans are stable
RAM_USABLE_FRACTION = 0.9  # the OS, page cache and other processes keep the rest
TEXT_ENCODER_GPU_FRACTION = 0.75  # the text encoder goes to the GPU only when it uses under this share
TEXT_ENCODER_CPU_WORKSPACE_BYTES = 1 * BYTES_PER_GIB  # fp32 casts of one layer + activations on the CPU
RETENTIONS = ("keep_all", "drop_text_encoder", "drop_text_encoder_and_high_noise")


@dataclass(frozen=True)
class PhaseBytes:
    """Bytes held in each phase of one run."""

    text_encode: int
    sample: int
    vae_decode: int

    @property
    def peak(self):
        return max(getattr(self, field.name) for field in fields(self))

    def largest_phase(self):
        """The first phase that holds the peak, in words."""
        return next(field.name for field in fields(self) if getattr(self, field.name) == self.peak).replace("_", " ")

    def as_dict(self):
        return {field.name: int(getattr(self, field.name)) for field in fields(self)}


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: weight dtypes, what RAM keeps between phases, which forward."""

    weight_dtype: str
    text_encoder_dtype: str
    retention: str  # one of RETENTIONS
    lean_forward: bool = False

    @property
    def drops_text_encoder(self):
        return self.retention != "keep_all"

    @property
    def drops_high_noise_expert(self):
        return self.retention == "drop_text_encoder_and_high_noise"


@dataclass(frozen=True)
class Evaluation:
    """What one candidate holds on this machine, and why it does not fit (no failures: it fits)."""

    candidate: Candidate
    text_encoder_device: str  # "gpu" or "cpu"
    model_weight_bytes: int  # one diffusion model as loaded (fp32 on the CPU for 16-bit files)
    resident_model_bytes: int
    cfg_batched: bool
    activation_bytes: int  # one sampling pass, CFG as planned
    vram: PhaseBytes  # None on the CPU
    decode_budget_bytes: int
    decode_tiled: bool
    usable_vram_bytes: int  # total minus the reserve; 0 on the CPU
    ram: PhaseBytes
    usable_ram_bytes: int
    failures: tuple

    @property
    def fits(self):
        return not self.failures

    @property
    def peak_vram_bytes(self):
        return self.vram.peak if self.vram else 0


@dataclass(frozen=True)
class SearchResult:
    chosen: Evaluation  # the first candidate that fits; None when none does
    last_tried: Evaluation  # what the refusal quotes; None when nothing was tried
    reserve_vram_bytes: int
    stock_alternative: Evaluation = None  # the core's own forward, where it fits but the lean one was chosen


def reserve_vram_bytes(device, overrides):
    """The user's reserve (at least the default), else the default plus what other processes hold now."""
    if overrides.reserve_vram_bytes is not None:
        return max(int(overrides.reserve_vram_bytes), DEFAULT_RESERVE_VRAM_BYTES)
    other = device.total_vram_bytes - device.free_vram_bytes - footprint.CUDA_CONTEXT_BYTES
    if device.free_vram_bytes <= 0 or other <= 0:
        other = 0
    other = -(-other // RESERVE_ROUNDING_BYTES) * RESERVE_ROUNDING_BYTES
    return DEFAULT_RESERVE_VRAM_BYTES + other


def model_weight_bytes(request, weight_dtype):
    """One diffusion model as loaded: from the file's header when the request has a file in this dtype, else
    the dtype's formula (fp32 on the CPU for 16-bit weights and the unquantized rest of a quantized format)."""
    on_cpu = not request.device.is_gpu
    if request.model_file is not None and request.model_file.weight_dtype == weight_dtype:
        return request.model_file.cpu_bytes if on_cpu else request.model_file.stored_bytes
    upcast = on_cpu and weight_dtype not in footprint.FP8_DTYPES
    return footprint.transformer_weight_bytes(request.variant.transformer, weight_dtype, upcast_to_fp32=upcast)


def _ram_phases(request, on_cpu, candidate, te_device, sample_workspace, decode_workspace):
    variant, job = request.variant, request.job
    model = model_weight_bytes(request, candidate.weight_dtype)
    te = footprint.text_encoder_weight_bytes(candidate.text_encoder_dtype)
    vae = decode_memory.vae_weight_bytes(variant.vae, upcast_to_fp32=on_cpu)
    video = footprint.decoded_video_ram_bytes(job.width, job.height, job.frames, job.batch)
    te_workspace = TEXT_ENCODER_CPU_WORKSPACE_BYTES if te_device == "cpu" else 0
    base = footprint.PROCESS_BASE_RAM_BYTES
    held_te = 0 if candidate.drops_text_encoder else te
    experts_held = 1 if candidate.drops_high_noise_expert else variant.experts
    return PhaseBytes(
        text_encode=base + te + vae + te_workspace + (0 if candidate.drops_text_encoder else model * variant.experts),
        sample=base + held_te + vae + model * experts_held + sample_workspace,
        vae_decode=base + held_te + vae + model * experts_held + decode_workspace + video,
    )


def evaluate(request, reserve, candidate):
    """Simulate `candidate` for `request` with `reserve` bytes of VRAM kept free."""
    device, variant, job, overrides, core = request.device, request.variant, request.job, request.overrides, request.core
    config = variant.transformer
    on_cpu = not device.is_gpu
    compute_bytes = 4 if on_cpu else 2
    cfg_factor = 2 if job.cfg else 1
    lean = candidate.lean_forward
    failures = []
    act_batched = footprint.transformer_activation_bytes(config, job.width, job.height, job.frames,
                                                         job.batch * cfg_factor, compute_bytes,
                                                         core_version=core.version, lean_forward=lean)
    act_single = footprint.transformer_activation_bytes(config, job.width, job.height, job.frames, job.batch,
                                                        compute_bytes, core_version=core.version, lean_forward=lean)
    state = footprint.sampler_state_bytes(config, job.width, job.height, job.frames, job.batch)
    model = model_weight_bytes(request, candidate.weight_dtype)
    decode_need = decode_memory.job_exact_budget_bytes(variant.vae, job.width, job.height, job.frames, job.batch,
                                                       "cpu") if on_cpu else 0

    if on_cpu:
        te_device, resident, cfg_batched, vram, usable = "cpu", 0, job.cfg, None, 0
        decode_budget, tiled = decode_need, False
        sample_ws, decode_ws = act_batched + state, decode_need
    else:
        usable = device.total_vram_bytes - reserve
        ceiling = usable - VRAM_HEADROOM_BYTES
        fixed = footprint.CUDA_CONTEXT_BYTES + footprint.weight_cast_window_bytes(config) + state
        if fixed + model + act_batched <= ceiling:
            resident, cfg_batched, sample_peak = model, job.cfg, fixed + model + act_batched
        elif fixed + act_single <= ceiling:
            # Partial loading fills the card: the plan budgets all of it (an envelope).
            resident, cfg_batched, sample_peak = min(model, ceiling - fixed - act_single), False, ceiling
        else:
            resident, cfg_batched, sample_peak = 0, False, fixed + act_single
            failures.append(
                f"one sampling pass needs {format_gib(fixed + act_single)} of VRAM "
                f"({format_gib(act_single)} activations for {footprint.transformer_tokens(config, job.width, job.height, job.frames)} tokens) "
                f"but only {format_gib(ceiling)} is usable")
        if (variant.experts > 1 and candidate.weight_dtype not in footprint.QUANTIZED_DTYPES and resident < model
                and not overrides.weight_dtype):
            failures.append("16-bit experts are only worth it fully resident")
        te_bytes = footprint.text_encoder_weight_bytes(candidate.text_encoder_dtype)
        te_need = footprint.CUDA_CONTEXT_BYTES + te_bytes + footprint.TEXT_ENCODER_ACTIVATION_BYTES
        if overrides.text_encoder_device:
            te_device = overrides.text_encoder_device
        else:
            te_device = "gpu" if te_need <= TEXT_ENCODER_GPU_FRACTION * ceiling else "cpu"
        vae_bytes = decode_memory.vae_weight_bytes(variant.vae)
        decode_budget = ceiling - footprint.CUDA_CONTEXT_BYTES - vae_bytes
        decode = decode_memory.job_decode_outlook(variant.vae, job.width, job.height, job.frames, job.batch,
                                                  max(decode_budget, 0), device.kind)
        if not decode.fits:
            failures.append(f"VAE decode needs at least {format_gib(decode.minimum_budget_bytes)} "
                            f"for its smallest tile plus {format_gib(vae_bytes)} weights")
            decode_budget = max(decode_budget, 0)
        vram = PhaseBytes(
            text_encode=min(te_need, ceiling) if te_device == "gpu" else 0,
            sample=sample_peak,
            vae_decode=footprint.CUDA_CONTEXT_BYTES + vae_bytes + (decode.predicted_peak_bytes or decode_budget),
        )
        tiled = not decode.untiled
        sample_ws, decode_ws = 0, 0

    ram = _ram_phases(request, on_cpu, candidate, te_device, sample_ws, decode_ws)
    usable_ram = int(request.ram_bytes * RAM_USABLE_FRACTION)
    if ram.peak > usable_ram:
        failures.append(f"system RAM: the {ram.largest_phase()} phase holds {format_gib(ram.peak)} "
                        f"but {format_gib(usable_ram)} of {format_gib(request.ram_bytes)} is usable")
    return Evaluation(candidate=candidate, text_encoder_device=te_device, model_weight_bytes=model,
                      resident_model_bytes=resident, cfg_batched=cfg_batched,
                      activation_bytes=act_batched if cfg_batched else act_single, vram=vram,
                      decode_budget_bytes=decode_budget, decode_tiled=tiled, usable_vram_bytes=usable, ram=ram,
                      usable_ram_bytes=usable_ram, failures=tuple(failures))


def candidates(variant, overrides, lean_forward=False):
    """Fastest first: 16-bit weights, then fp8; keep every model in RAM, then drop what the next phase lacks."""
    dtypes = (overrides.weight_dtype,) if overrides.weight_dtype else ("fp16", "fp8_scaled")
    retentions = RETENTIONS if variant.experts > 1 else RETENTIONS[:2]
    for retention in retentions:
        for dtype in dtypes:
            te_dtypes = ("fp16", "fp8_scaled") if dtype not in footprint.QUANTIZED_DTYPES else ("fp8_scaled",)
            for te_dtype in te_dtypes:
                yield Candidate(dtype, te_dtype, retention, lean_forward)


def search(request):
    """The first candidate that fits with the core's own forward, else with the lean forward; and the lean
    forward also where the stock forward fits only by streaming weights that the lean one keeps resident.

    Why the second case: a card with a little more VRAM must never stream more than a smaller one (where the
    stock forward fails and the lean one is chosen); the lean forward is no slower (docs/benchmarks.md) and
    streaming weights is.
    """
    stock = _search_forward(request, lean_forward=False)
    chosen = stock.chosen
    if chosen is not None and chosen.resident_model_bytes >= chosen.model_weight_bytes:
        return stock
    lean = _search_forward(request, lean_forward=True)
    if lean.chosen is None:
        return stock
    if chosen is None:
        return lean
    if (lean.chosen.candidate.weight_dtype == chosen.candidate.weight_dtype
            and lean.chosen.resident_model_bytes > chosen.resident_model_bytes):
        return replace(lean, stock_alternative=chosen)
    return stock


def _search_forward(request, lean_forward):
    device, overrides = request.device, request.overrides
    reserve = reserve_vram_bytes(device, overrides) if device.is_gpu else 0
    last = None
    for candidate in candidates(request.variant, overrides, lean_forward):
        last = evaluate(request, reserve, candidate)
        if last.fits:
            if (candidate.text_encoder_dtype == "fp16" and last.text_encoder_device == "cpu"
                    and not overrides.text_encoder_device):
                continue  # a 16-bit text encoder only pays off on the GPU
            return SearchResult(last, last, reserve)
    return SearchResult(None, last, reserve)
