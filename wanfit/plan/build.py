"""The Plan of the candidate the search chose: its numbers, its launch flags, and the reason for each choice."""

from ..decode import budget as decode_memory
from ..units import format_gib
from . import footprint
from .catalogue import tier_for_vram
from .formats import compute_path
from .gguf import GGUF_QUANTS
from .launch import Launch, LaunchSituation, launch_flags
from .memory_manager import MEMORY_MANAGERS, memory_manager, pinned_ram_cap_bytes
from .search import DEFAULT_RESERVE_VRAM_BYTES
from .types import Plan

SAGE_MIN_CAPABILITY = (8, 0)  # sageattention kernels: Ampere and newer


def attention_backend(device):
    """(backend, why): sageattention where the card and the install allow it, else PyTorch SDPA."""
    if not device.is_gpu:
        return "pytorch_sdpa", "attention: PyTorch SDPA (sageattention has no CPU kernels)"
    capability = tuple(device.compute_capability or (0, 0))
    if capability < SAGE_MIN_CAPABILITY:
        return "pytorch_sdpa", f"attention: PyTorch SDPA (sageattention needs compute capability 8.0+, this card is {capability[0]}.{capability[1]})"
    if device.attention_backends and not device.attention_backends.get("sageattention"):
        return "pytorch_sdpa", "attention: PyTorch SDPA (sageattention is not installed: `python -m wanfit doctor` says how)"
    return "sageattention", "attention: sageattention preferred (the patcher falls back to SDPA if a shape or kernel is unsupported)"


def decode_outlook(device, variant, job, budget_bytes):
    """WanFit VAE Decode of this job's latent at the planned budget, planned as the node will (its static layouts of
    the variant's VAE): exact halos or approximate, and the budget that makes it exact. A GPU decodes in 16-bit and
    keeps finished frames in RAM; a CPU decodes in fp32 with the video in the same memory."""
    device_type = device.kind if device.is_gpu else "cpu"
    return decode_memory.job_decode_outlook(variant.vae, job.width, job.height, job.frames, job.batch, int(budget_bytes),
                                            device_type)


GGUF_MANAGER_REASON = ("a GGUF model: ComfyUI-GGUF's Unet Loader wraps it in its GGUFModelPatcher, a plain ModelPatcher, "
                       "so dynamic VRAM does not place it; ComfyUI partial loading keeps a budget of it on the GPU and "
                       "casts the rest from RAM per layer")


def gguf_note(weight_dtype, device):
    """How a GGUF model is loaded and planned, in words (empty for any other dtype)."""
    quant = GGUF_QUANTS.get(weight_dtype)
    if quant is None:
        return ""
    where = "the GPU" if device.is_gpu else "the CPU"
    return (f"a GGUF {quant.file_type} model: load it with ComfyUI-GGUF's Unet Loader (GGUF) (WanFit's loaders refuse "
            f".gguf); every tensor stays as the file stores it and its GGMLOps dequantize each layer on {where} at "
            f"every call, so the plan is for the core's non-dynamic path (partial loading) and the dequantize costs "
            f"speed, not memory")


def gguf_compute(weight_dtype, device):
    """The ComputePath of a GGUF model: dequantized per layer on every device (None for any other dtype)."""
    from .formats import DEQUANTIZED, ComputePath

    if weight_dtype not in GGUF_QUANTS:
        return None
    dtype = "16-bit" if device.is_gpu else "fp32"
    return ComputePath(weight_dtype, DEQUANTIZED, f"ComfyUI-GGUF's GGMLOps dequantize each layer to {dtype} as it "
                                                  "runs, on every card: the memory saving stays, the speed-up does not")


def build_plan(request, result, outlook=None, suggestion=""):
    """The Plan of result.chosen; `outlook` replaces the decode outlook at the planned budget (a test's lever);
    `suggestion` is the format suggestion's text (formats.suggest_format)."""
    device, variant, job, overrides, core = request.device, request.variant, request.job, request.overrides, request.core
    ram_bytes, chosen, reserve = request.ram_bytes, result.chosen, result.reserve_vram_bytes
    candidate = chosen.candidate
    model = chosen.model_weight_bytes
    resident = chosen.resident_model_bytes
    streamed = 0 if not device.is_gpu else model - resident
    drop_te = candidate.drops_text_encoder
    drop_high = candidate.drops_high_noise_expert
    attention, attention_reason = attention_backend(device)
    manager, manager_reason = memory_manager(core, device)
    if manager == "dynamic_vram" and candidate.weight_dtype in GGUF_QUANTS:
        manager, manager_reason = "partial_loading", GGUF_MANAGER_REASON
    pinned = min(streamed, pinned_ram_cap_bytes(ram_bytes)) if manager == "dynamic_vram" else 0
    reasons = [f"core: {core.describe()}; memory manager {MEMORY_MANAGERS[manager]}: {manager_reason}"]
    compute = compute_path(candidate.weight_dtype, device) or gguf_compute(candidate.weight_dtype, device)
    note = gguf_note(candidate.weight_dtype, device)
    if request.model_file is not None:
        reasons.append(f"diffusion model {request.model_file.describe()}"
                       + (" (both experts planned at this size)" if variant.experts > 1 else ""))
    if note:
        reasons.append(f"GGUF: {note}")
    if outlook is None:
        outlook = decode_outlook(device, variant, job, chosen.decode_budget_bytes)
    if not device.is_gpu:
        reasons.append(f"CPU: no GPU is available to PyTorch on {device.name}, so ComfyUI runs every model on the CPU "
                       "(--cpu) in float32; expect minutes per step, even at small sizes")
        if candidate.weight_dtype in GGUF_QUANTS:
            reasons.append(f"weights {candidate.weight_dtype} (every tensor as the GGUF stores it), computed "
                           f"{compute.describe()}")
        elif compute is not None:
            reasons.append(f"weights {candidate.weight_dtype} (block linears stay {candidate.weight_dtype}, the rest "
                           f"loads as fp32), computed {compute.describe()}")
        else:
            reasons.append(f"weights {candidate.weight_dtype}" + (" (16-bit files load as fp32 on the CPU)"
                                                                   if candidate.weight_dtype not in footprint.FP8_DTYPES
                                                                   else " (stay fp8, cast per layer)"))
        launch = Launch(("--cpu",), {}, ())
    else:
        reasons += _gpu_reasons(request, result, manager, pinned, outlook, compute)
        launch = launch_flags(LaunchSituation(
            core=core, memory_manager=manager, device_kind=device.kind, ram_bytes=ram_bytes,
            reserve_vram_bytes=reserve, other_process_vram_bytes=reserve - DEFAULT_RESERVE_VRAM_BYTES,
            streamed_model_bytes=streamed, text_encoder_device=chosen.text_encoder_device, drops_models=drop_te,
            next_model_bytes=model))
        reasons += launch.reasons
    reasons.append(attention_reason)
    lean_chunk = 0
    if candidate.lean_forward:
        config, tokens = variant.transformer, footprint.transformer_tokens(variant.transformer, job.width, job.height, job.frames)
        lean_chunk = footprint.lean_auto_chunk_tokens(tokens)
        batch = job.batch * (2 if chosen.cfg_batched else 1)
        compute_bytes = 4 if not device.is_gpu else 2
        stock = footprint.transformer_activation_bytes(config, job.width, job.height, job.frames, batch, compute_bytes,
                                                       core_version=core.version)
        reasons.append(f"lean forward on (WanFit Lean Forward, chunks of {lean_chunk} tokens): activations "
                       f"{format_gib(chosen.activation_bytes)} instead of {format_gib(stock)} with ComfyUI's own blocks "
                       f"({footprint.lean_block_units(config, tokens):.1f} instead of "
                       f"{footprint.activation_hidden_units(config, core.version):.1f} hidden states of {tokens} tokens), "
                       f"saving {format_gib(stock - chosen.activation_bytes)}: " + (
                           "without it the job does not fit" if result.stock_alternative is None else
                           f"it keeps {format_gib(chosen.resident_model_bytes)} of the weights resident instead of "
                           f"{format_gib(result.stock_alternative.resident_model_bytes)} (no slower than ComfyUI's "
                           "own blocks; streaming weights is)"))
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
        weight_dtype=candidate.weight_dtype,
        text_encoder_dtype=candidate.text_encoder_dtype,
        text_encoder_device=chosen.text_encoder_device,
        model_weight_bytes=model,
        resident_model_bytes=resident,
        streamed_model_bytes=streamed,
        cfg_batched=chosen.cfg_batched,
        drop_text_encoder_after_encode=drop_te,
        drop_high_noise_expert_before_low=drop_high,
        vae_decode_budget_bytes=int(chosen.decode_budget_bytes),
        vae_decode_tiled=chosen.decode_tiled,
        attention_backend=attention,
        reserve_vram_bytes=reserve,
        usable_vram_bytes=chosen.usable_vram_bytes,
        usable_ram_bytes=chosen.usable_ram_bytes,
        predicted_peak_vram_bytes=int(chosen.peak_vram_bytes),
        predicted_peak_ram_bytes=int(chosen.ram.peak),
        predicted_vram_by_phase=chosen.vram.as_dict() if chosen.vram else {},
        predicted_ram_by_phase=chosen.ram.as_dict(),
        launch_args=launch.args,
        launch_env=launch.env,
        reasons=tuple(reasons),
        total_vram_bytes=device.total_vram_bytes,
        system_ram_bytes=ram_bytes,
        core_version=core.version_text,
        core_source=core.source,
        memory_manager=manager,
        pinned_ram_bytes=int(pinned),
        lean_forward=candidate.lean_forward,
        lean_chunk_tokens=lean_chunk,
        predicted_activation_bytes=int(chosen.activation_bytes),
        vae_decode_exact=outlook.exact or outlook.untiled,
        vae_decode_exact_budget_bytes=outlook.exact_budget_bytes,
        vae_decode_outlook=outlook.describe(),
        weight_compute=compute.mode if compute else "",
        weight_compute_reason=compute.why if compute else "",
        format_suggestion=suggestion,
        model_file=request.model_file.path if request.model_file else "",
        model_file_sizing=request.model_file.describe() if request.model_file else "",
        gguf_note=note,
    )


def _gpu_reasons(request, result, manager, pinned, outlook, compute):
    """Why the weights (and, for a quantized format, how the card computes it: `compute`, a formats.ComputePath),
    CFG, text encoder, decode budget and reserve are what they are on a GPU."""
    variant, job, overrides, core = request.variant, request.job, request.overrides, request.core
    chosen, reserve = result.chosen, result.reserve_vram_bytes
    candidate = chosen.candidate
    model, resident = chosen.model_weight_bytes, chosen.resident_model_bytes
    streamed = model - resident
    reasons = []
    fmt = footprint.QUANTIZED_FORMATS.get(candidate.weight_dtype)
    quant = GGUF_QUANTS.get(candidate.weight_dtype)
    size = f"{format_gib(model)} {'an expert' if variant.experts > 1 else 'in all'}"
    why = "from the model file" if request.model_file is not None else "forced"
    if fmt is not None:  # only ever forced: auto plans fp16 or fp8_scaled and suggests a format
        reasons.append(f"weights {candidate.weight_dtype} (ComfyUI's {fmt.quant_algo}: the block linears with their "
                       f"scales, the rest 16-bit; {size}): {why}; computed {compute.describe()}")
    elif quant is not None:
        reasons.append(f"weights {candidate.weight_dtype} (a GGUF {quant.file_type}: the block linears "
                       f"{quant.mix_text()}, the other tensors F16 but the patch embedding's F32 weight; {size}): "
                       f"{why}; computed {compute.describe()}")
    elif candidate.weight_dtype in footprint.FP8_DTYPES:
        why = why if overrides.weight_dtype else (
            "16-bit weights do not fit RAM" if variant.experts == 1 else "a 16-bit expert would not stay resident in VRAM or fit RAM")
        reasons.append(f"weights {candidate.weight_dtype}: {why}")
    else:
        reasons.append(f"weights {candidate.weight_dtype}: " + (why if overrides.weight_dtype else "full quality fits"))
    if streamed and manager == "dynamic_vram":
        reasons.append(f"dynamic VRAM: predicted {format_gib(resident)} of {format_gib(model)} stays in VRAM (the "
                       f"first blocks: comfy-aimdo keeps the lowest addresses of the model's VBAR and evicts above a "
                       f"watermark when activations need room), {format_gib(streamed)} streams from pinned RAM every "
                       f"step (async offload is on by default); pinned RAM {format_gib(pinned)}, part of the RAM "
                       f"peak, ComfyUI caps pins at {format_gib(pinned_ram_cap_bytes(request.ram_bytes))}")
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
        reasons.append("CFG: cond and uncond run " + ("batched (fits)" if chosen.cfg_batched else
                                                      "one after the other (batched activations do not fit next to the weights)"))
    te_how = ""
    if chosen.text_encoder_device == "cpu" and manager == "dynamic_vram":
        te_how = " (the WanFit text encoder loader places it; no launch flag needed)"
    reasons.append(f"text encoder umt5-xxl {candidate.text_encoder_dtype} on {chosen.text_encoder_device}: " + (
        "forced" if overrides.text_encoder_device else
        ("fits beside the card's other work" if chosen.text_encoder_device == "gpu"
         else "it would take most of the card; the CPU encodes 512 tokens in seconds")) + te_how)
    reasons.append(f"VAE decode budget {format_gib(chosen.decode_budget_bytes)}: " +
                   ("tiled decode within budget" if chosen.decode_tiled else "whole frames fit, no tiling needed") +
                   f"; WanFit VAE Decode at this budget: {outlook.describe()}")
    other = reserve - DEFAULT_RESERVE_VRAM_BYTES
    reasons.append(f"reserve {format_gib(reserve)} of VRAM" + (
        f" ({format_gib(other)} for other processes on this GPU)" if other > 0 else " (desktop, driver, fragmentation)"))
    return reasons
