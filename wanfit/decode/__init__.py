"""Decode WAN VAE latents inside a memory budget without splitting time: exactly when the budget allows.

Why this shape: the WAN decoders (ComfyUI comfy/ldm/wan/vae.py, vae2_2.py) are causal over
time: they decode one latent frame at a time and every temporal conv keeps the last two
frames of its input. Cutting time breaks that cache (ComfyUI's temporal tiles: max abs diff
1.0), so time stays whole and space is tiled instead:

1. stem, whole frame: conv2, conv1 and the middle blocks (the only attention) at latent
   resolution, for every latent frame, and, when the plan says so, the upsampling layers up
   to a deeper cut (a 2x or 4x latent-size stem: more stored per frame, no halo recomputation
   of those layers); its output is stored off the decode device;
2. tail, one spatial tile at a time, every latent frame in order with the tile's own causal
   cache: each layer's input is cropped to what the rest of the decoder needs (core plus the
   remaining receptive field), so full-resolution layers see the core plus a few pixels and the
   tile is bit-for-bit what the untiled decode gives there (float noise aside); after each
   temporal upsample the frames go on one at a time, so full-resolution layers hold one frame;
   residual blocks and the head write norm + SiLU straight into the conv's padded input, and
   upsamples run as four 2x2 phase convs on the small input (fused_layers);
3. finished frames go to the output device at once (an exact tile's straight into the output
   video); an OOM retries that tile split in two, then on the CPU, keeping every finished tile.

Memory then depends on the tile area, not on the frame count. When no tiling with exact halos fits
the budget, the halo is capped and tiles are blended: approximate, and the plan says so with the
budget that makes it exact (bench/vae_decode_approx.py measures the error).

Modules, torch-free first: tiling (tile geometry and the per-tile memory model, constants measured by
bench/vae_decode_memory.py), budget (the plan search on layouts, the static layouts of the two VAEs,
the VAE weight figures, what the offload plan and the node read), core_protocol (how the running core
pads and caches); then with torch: layout (a loaded decoder's layers and costs), fused_layers (the
layers' fused replays), tiles (stem, tile runner, OOM ladder), plan (the plan of a loaded VAE), api
(the entry points), self_check (the tiles against the core's own decode).
"""

# The torch-side names load with their module on first use: the offload planner imports
# wanfit.decode.budget, and `import wanfit` must not load torch (tests/unit/test_package_import.py).
_LAZY = {
    "VAE_NAMES": "api", "decode_comfy_vae": "api", "decode_latent": "api", "validate_latent": "api",
    "decoder_spec": "layout", "plan_decode": "plan", "untiled_decode_bytes": "budget",
    "DecodeOutOfMemoryError": "tiles", "DecodeStep": "tiles",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
