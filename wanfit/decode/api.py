"""The entry points: validate the latent, plan, free other models, then decode untiled or in tiles."""

import logging
import math

import torch

from ..errors import InvalidInputError
from .budget import follow_live_tensors_on_cpu, untiled_decode_bytes
from .layout import require_protocol
from .plan import layouts_of, plan_decode, plan_for_layouts
from .tiles import DecodeStep, decode_tiles, empty_device_cache, is_oom

log = logging.getLogger("wanfit")


# Latent channels -> what users know the VAE as (messages name both sides of a mismatch).
VAE_NAMES = {16: "Wan 2.1 VAE (16 latent channels; T2V/I2V-A14B)", 48: "Wan 2.2 VAE (48 latent channels; TI2V-5B)"}


def validate_latent(latent, latent_channels, field="samples"):
    """Refuse latents this VAE cannot decode, with a message naming both sides and the fix."""
    if not isinstance(latent, torch.Tensor):
        raise InvalidInputError(field, type(latent).__name__, "a latent tensor", "connect a LATENT output")
    if latent.ndim == 4:
        latent = latent.unsqueeze(0)
    if latent.ndim != 5:
        raise InvalidInputError(field, f"shape {tuple(latent.shape)}",
                                "a video latent of shape (batch, channels, frames, height, width)",
                                "connect the sampler's LATENT output (WAN latents are 5-D)")
    if latent.numel() == 0:
        raise InvalidInputError(field, f"shape {tuple(latent.shape)}", "a non-empty latent",
                                "the latent is empty: check the frame count and size of the empty latent node")
    channels = latent.shape[1]
    if channels != latent_channels:
        given = VAE_NAMES.get(channels, f"a {channels}-channel latent")
        vae = VAE_NAMES.get(latent_channels, f"a VAE with {latent_channels} latent channels")
        raise InvalidInputError(
            field, f"{channels}-channel latent",
            f"{latent_channels} channels for the {vae}; this latent belongs to the {given}",
            "load the matching VAE: Wan 2.2 VAE (wan2.2_vae) for TI2V-5B, Wan 2.1 VAE (wan_2.1_vae) for A14B")
    return latent


def decode_latent(module, latent, budget_bytes, device=None, dtype=None, output_device="cpu", overlap=None,
                  progress=None, free_models_for_decode=None, oom_exceptions=(), activation_factor=None,
                  on_plan=None, allow_untiled=True, stem_cuts=None, protocol=None, grid=None, oom=None):
    """Decode a WAN latent (B, C, T, h, w) with module (a WanVAE) within budget_bytes of working memory.

    Returns the raw decoder output (B, 3, frames, H, W), float32 on output_device, values in [-1, 1]
    (as WanVAE.decode). progress(done, total) is called per latent frame of every tile;
    free_models_for_decode(needed_bytes) is called once before decoding so the caller can unload
    other models (ComfyUI: comfy.model_management.load_models_gpu / free_memory); on_plan(plan)
    receives the tiling.TilePlan before decoding starts (the node reports it). oom(step), when given, hears
    each tiles.DecodeStep before it runs and may raise there (how tests play an OOM).
    """
    layouts = layouts_of(module, activation_factor, stem_cuts, protocol)
    # one memory layout whatever the sampler handed over: convs round differently per layout,
    # and a saved latent (SaveLatent writes it contiguous) must decode to the same video again
    latent = validate_latent(latent, layouts[0].z_dim).contiguous()
    if budget_bytes is None or budget_bytes <= 0:
        raise InvalidInputError("budget", budget_bytes, "a positive number of bytes", "give a budget in MB or use auto")
    param = next(module.parameters())
    device = torch.device(device) if device is not None else param.device
    dtype = dtype or param.dtype
    output_device = torch.device(output_device)
    _, _, frames, h, w = latent.shape

    if grid:
        plan, minimum = _forced_grid(layouts[0], latent.shape, grid), None
    else:
        plan, minimum = plan_for_layouts(layouts, latent.shape, budget_bytes, dtype, device, output_device, overlap,
                                         allow_untiled)
    layout = next((layout for layout in layouts if plan is not None and layout.cut == plan.stem_cut), layouts[0])
    if plan is not None and not plan.untiled:
        require_protocol(layout)  # a decoder no known convention fits is never replayed
    if plan is None:
        raise InvalidInputError(
            "budget", f"{budget_bytes / 2**20:.0f} MB",
            f"at least {math.ceil(minimum / 2**20)} MB for the smallest tile of this {layout.kind} latent "
            f"({frames}x{h}x{w} latent)", "raise the budget (or auto), or free memory used by other models")
    log.info("VAE decode %s %s within %.0f MB: %s", layout.kind, tuple(latent.shape), budget_bytes / 2**20,
             plan.describe())
    if on_plan is not None:
        on_plan(plan)
    if free_models_for_decode is not None:
        free_models_for_decode(plan.predicted_peak_bytes)
    if plan.untiled:
        try:
            if oom is not None:
                oom(DecodeStep("untiled", device, dtype, 0))
            return _decode_untiled(module, latent, device, dtype, output_device, progress)
        except Exception as error:  # noqa: BLE001 - only OOMs are handled, the rest re-raised
            if not is_oom(error, oom_exceptions):
                raise
        log.warning("VAE decode: out of memory in the untiled decode; decoding in tiles instead")
        empty_device_cache(device)
        return decode_latent(module, latent, budget_bytes, device, dtype, output_device, overlap, progress,
                             None, oom_exceptions, activation_factor, on_plan, allow_untiled=False,
                             stem_cuts=stem_cuts, protocol=protocol, oom=oom)
    with torch.inference_mode():
        return decode_tiles(layout, plan, latent, device, dtype, output_device, progress, oom_exceptions, oom)


def _forced_grid(layout, latent_shape, grid):
    """An exact plan of rows x cols tiles at stem depth 0, whatever the memory (for the self-check)."""
    from . import tiling

    _, _, _, h, w = latent_shape
    rows, cols = tiling.plan_for_cores(layout.spec, (h, w), tiling.split_evenly(h, min(grid[0], h)),
                                       tiling.split_evenly(w, min(grid[1], w)))
    return tiling.TilePlan(rows=rows, cols=cols, exact=True, halo_cap_latent_px=None, predicted_peak_bytes=0,
                           tile_peak_bytes=0, fixed_bytes=0, relative_cost=1.0)


def _decode_untiled(module, latent, device, dtype, output_device, progress):
    """The VAE's own decode (ComfyUI WanVAE.decode), as VAE.decode runs it."""
    if progress is not None:
        progress(0, 1)
    with torch.inference_mode():
        out = module.decode(latent.to(device=device, dtype=dtype)).to(device=output_device, dtype=torch.float32)
    if progress is not None:
        progress(1, 1)
    return out


def decode_comfy_vae(vae, samples, budget_bytes, overlap=None, progress=None, free_models_for_decode=None,
                     oom_exceptions=(), activation_factor=None, on_plan=None, allow_untiled=True, mode="auto",
                     on_note=None):
    """Drop-in for ComfyUI's VAE.decode on WAN VAEs: returns images (B, frames, H, W, 3) in [0, 1].

    vae is duck-typed: first_stage_model, latent_channels, device, vae_dtype, output_device,
    process_output (comfy.sd.VAE). The node reshapes to IMAGE (B*frames, H, W, 3) as VAEDecode does.
    mode: auto = WanFit's tiles where they reproduce this core's own decode (self_check, once per
    process), else the core's own decode (its tiled decode when the budget needs it); on = WanFit's
    tiles or replay_check.ReplayMismatchError; off = the core's own decode. on_note(text) hears which path
    ran and why.
    """
    from .. import replay_check
    from . import self_check

    replay_check.validate_mode(mode)
    module = getattr(vae, "first_stage_model", None)
    if module is None or not hasattr(module, "decoder"):
        raise InvalidInputError("vae", type(module).__name__, "a Wan 2.1 or Wan 2.2 VAE",
                                "load wan2.2_vae (TI2V-5B) or wan_2.1_vae (A14B) with a VAE loader")
    samples = validate_latent(samples, getattr(vae, "latent_channels", module.conv2.in_channels))
    note = on_note or (lambda text: None)
    if mode == "off":
        note("mode off: ComfyUI's own VAE decode ran")
        return decode_with_core(vae, module, samples, budget_bytes, progress)

    plan = plan_decode(module, samples.shape, budget_bytes, dtype=vae.vae_dtype, device=vae.device,
                       output_device=vae.output_device, overlap=overlap, activation_factor=activation_factor,
                       allow_untiled=allow_untiled) if budget_bytes and budget_bytes > 0 else None
    protocol = None
    # the untiled path is the core's own WanVAE.decode, nothing replayed; no plan: decode_latent says why
    if plan is not None and not plan.untiled:
        if torch.device(vae.device).type == "cpu":
            follow_live_tensors_on_cpu()  # the check's untiled core decode comes first and counts too
        check = check_against_core(vae)
        if not replay_check.follow(check, mode, "WanFit VAE Decode", self_check.CORE_PATH):
            note(replay_check.fallback_note(check, self_check.CORE_PATH))
            return decode_with_core(vae, module, samples, budget_bytes, progress)
        protocol = check.matched
        note(check.describe())
    raw = decode_latent(module, samples, budget_bytes, device=vae.device, dtype=vae.vae_dtype,
                        output_device=vae.output_device, overlap=overlap, progress=progress,
                        free_models_for_decode=free_models_for_decode, oom_exceptions=oom_exceptions,
                        activation_factor=activation_factor, on_plan=on_plan, allow_untiled=allow_untiled,
                        protocol=protocol)
    return vae.process_output(raw).movedim(1, -1)


def check_against_core(vae):
    """The (cached) replay_check.ReplayCheck of WanFit's tiles against this core's own decode of `vae`."""
    from . import self_check

    module = vae.first_stage_model

    def tiled_at_check_grid(latent, candidate):
        raw = decode_latent(module, latent, 1, device=vae.device, dtype=vae.vae_dtype,
                            output_device=vae.output_device, protocol=candidate, grid=self_check.CHECK_GRID)
        return vae.process_output(raw).movedim(1, -1)

    return self_check.check_tiled_decode(vae, module, tiled_at_check_grid)


def decode_with_core(vae, module, samples, budget_bytes, progress=None):
    """The core's own decode: VAE.decode when the untiled decode fits the budget, else the core's
    VAE.decode_tiled with square spatial tiles sized to it (its own temporal tiling and overlaps)."""
    _, _, _, h, w = samples.shape
    dtype_bytes = torch.empty((), dtype=vae.vae_dtype).element_size()
    device_type = torch.device(vae.device).type
    kind = "wan2.2" if module.conv2.in_channels == 48 else "wan2.1"
    need = untiled_decode_bytes(kind, samples.shape, dtype_bytes, device_type)
    if progress is not None:
        progress(0, 1)
    if budget_bytes is None or need <= budget_bytes:
        images = vae.decode(samples)
    else:
        side = max(8, int(math.sqrt(budget_bytes / max(need / (h * w), 1))) // 8 * 8)
        images = vae.decode_tiled(samples, tile_x=min(side, w), tile_y=min(side, h), overlap=min(8, side // 4))
    if progress is not None:
        progress(1, 1)
    if images.ndim == 4:  # some cores return (B*frames, H, W, 3)
        images = images.reshape(samples.shape[0], -1, *images.shape[-3:])
    return images
