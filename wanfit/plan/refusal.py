"""A refusal that says what would fit: the planner asks variations of the request (fewer frames, a smaller
size, fp8, the text encoder on the CPU, more RAM, a bigger card, TI2V-5B) and names those that plan."""

from dataclasses import replace

from ..units import BYTES_PER_GIB, format_gib, gib
from .catalogue import NAMED_GPUS, VARIANTS, device_for_gpu
from .footprint import QUANTIZED_DTYPES
from .search import DEFAULT_RESERVE_VRAM_BYTES, search
from .types import Job, PlanDoesNotFitError

REQUIRED_RAM_CEILING_GB = 4096  # above this, no amount of RAM helps: the job is VRAM-bound


def request_fits(request):
    """True when the search finds a candidate for `request` (a validated PlanRequest)."""
    return search(request).chosen is not None


def max_frames(request):
    """Largest 4n+1 frame count below the job's that fits (memory grows with frames)."""
    job = request.job
    low, high = -1, (job.frames - 1) // 4 - 1
    while low < high:
        middle = (low + high + 1) // 2
        if request_fits(replace(request, job=replace(job, frames=4 * middle + 1))):
            low = middle
        else:
            high = middle - 1
    return 4 * low + 1 if low >= 0 else None


def required_ram_bytes(request):
    """Smallest whole-GB system RAM that makes the job fit, or None (VRAM-bound)."""
    if not request_fits(replace(request, ram_bytes=REQUIRED_RAM_CEILING_GB * BYTES_PER_GIB)):
        return None
    low, high = 1, REQUIRED_RAM_CEILING_GB
    while low < high:
        middle = (low + high) // 2
        if request_fits(replace(request, ram_bytes=middle * BYTES_PER_GIB)):
            high = middle
        else:
            low = middle + 1
    return low * BYTES_PER_GIB


def refusal(request, last_tried):
    """The PlanDoesNotFitError for `request`; `last_tried` (a search.Evaluation) says why the last candidate failed."""
    device, variant, job, overrides, ram_bytes = (request.device, request.variant, request.job, request.overrides,
                                                  request.ram_bytes)
    where = (f"{device.name} ({format_gib(device.total_vram_bytes)} VRAM)" if device.is_gpu else f"the CPU ({device.name})")
    reason = "; ".join(last_tried.failures) if last_tried else "no configuration fits"
    suggestions = []
    most_frames = max_frames(request)
    if most_frames is not None:
        suggestions.append(f"fewer frames: at most {most_frames} frames at {job.width}x{job.height}")
    portrait = job.height > job.width
    for width, height in variant.smaller_sizes:
        if portrait:
            width, height = height, width
        if width * height < job.width * job.height and request_fits(
                replace(request, job=replace(job, width=width, height=height))):
            suggestions.append(f"a smaller size: {width}x{height} with {job.frames} frames")
            break
    if overrides.weight_dtype and overrides.weight_dtype not in QUANTIZED_DTYPES:
        if request_fits(replace(request, overrides=replace(overrides, weight_dtype="fp8_scaled"))):
            suggestions.append("fp8 weights (weight_dtype fp8_scaled)")
    if overrides.text_encoder_device == "gpu" and request_fits(
            replace(request, overrides=replace(overrides, text_encoder_device="cpu"))):
        suggestions.append("the text encoder on the CPU")
    if overrides.reserve_vram_bytes and overrides.reserve_vram_bytes > DEFAULT_RESERVE_VRAM_BYTES and request_fits(
            replace(request, overrides=replace(overrides, reserve_vram_bytes=None))):
        suggestions.append(f"a smaller reserve_vram_gb (now {gib(overrides.reserve_vram_bytes):.1f})")
    required_ram = required_ram_bytes(request)
    if required_ram is not None and required_ram > ram_bytes:
        suggestions.append(f"more system RAM: at least {gib(required_ram):.0f} GB (this machine has {gib(ram_bytes):.0f} GB)")
    if device.is_gpu:
        for name, (total_gib, _) in sorted(NAMED_GPUS.items(), key=lambda item: item[1][0]):
            if total_gib * BYTES_PER_GIB > device.total_vram_bytes and request_fits(
                    replace(request, device=device_for_gpu(name, ram_bytes))):
                suggestions.append(f"a bigger GPU: {total_gib:.0f} GB ({name}) with this RAM")
                break
    if variant.experts > 1:
        five_b = Job(1280 if job.width >= job.height else 704, 704 if job.width >= job.height else 1280,
                     min(job.frames, 121), job.batch, job.cfg)
        if request_fits(replace(request, variant=VARIANTS["ti2v_5b"], job=five_b,
                        overrides=replace(overrides, weight_dtype=None))):
            suggestions.append(f"TI2V-5B ({five_b.width}x{five_b.height}x{five_b.frames}) instead of the A14B pair")
    message = (f"{variant.label} {job.width}x{job.height}x{job.frames} (batch {job.batch}) does not fit on {where} "
               f"with {gib(ram_bytes):.0f} GB system RAM: {reason}. ")
    if suggestions:
        message += "What would fit: " + "; ".join(suggestions) + "."
    else:
        message += "Nothing smaller fits on this machine either: use a machine with more RAM and VRAM."
    return PlanDoesNotFitError(message, suggestions, max_frames=most_frames, required_ram_bytes=required_ram)
