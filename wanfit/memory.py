"""The VAEs' sizes: weights and WanFit VAE Decode's working memory, read by the planner and the decode."""

from .tiling import ONE_TILE_BYTES_PER_OUTPUT_PX

# --- VAEs --------------------------------------------------------------------

# Counted on ComfyUI's comfy.ldm.wan.vae2_2.WanVAE / vae.WanVAE with the ddconfig
# from comfy/sd.py (meta device): encoder + decoder + 1x1 convs.
VAE_PARAM_COUNTS = {
    "wan2.2": 704_688_668,  # z=48, 16x16 spatial, 4x temporal; used by TI2V-5B
    "wan2.1": 126_892_531,  # z=16, 8x8 spatial, 4x temporal; used by the A14B experts
}
VAE_WEIGHT_DTYPE_BYTES = 2  # files are bf16/fp16; ComfyUI decodes in bf16 where supported

# ComfyUI's own estimate (comfy/sd.py, class VAE.memory_used_decode) is 8000 (Wan 2.2) / 7000
# (Wan 2.1) bytes x dtype size per output pixel; WanFit uses its own measurement instead.
# Measured, not guessed (bench/vae_decode_memory.py, docs/benchmarks.md): the working memory of
# WanFit VAE Decode (what the shipped workflows decode with) as one tile, per output pixel of one
# frame, fp32 on the CPU, independent of the frame count; ComfyUI's VAE Decode needs about 1.9x
# that (tiling.UNTILED_BYTES_PER_OUTPUT_PX). Stored here per 2-byte compute dtype (half the fp32
# figure), with a 1.25 margin for what a GPU adds (cuDNN workspaces, allocator rounding) until a
# lent GPU measures it with torch.cuda.max_memory_allocated.
GPU_DECODE_MARGIN = 1.25
VAE_DECODE_BYTES_PER_OUTPUT_PIXEL = {
    name: int(fp32_bytes / 2 * GPU_DECODE_MARGIN) for name, fp32_bytes in ONE_TILE_BYTES_PER_OUTPUT_PX.items()
}
# The smallest tile a budgeted tiled decode will use (wanfit/tiling.py plans the real tiles).
VAE_DECODE_MIN_TILE_PIXELS = 256 * 256


def vae_weight_bytes(vae_name, upcast_to_fp32=False):
    return VAE_PARAM_COUNTS[vae_name] * (4 if upcast_to_fp32 else VAE_WEIGHT_DTYPE_BYTES)


def vae_decode_bytes(vae_name, width, height, batch=1, compute_bytes=2):
    """WanFit VAE Decode working memory as one tile for a width x height video (any length)."""
    per_pixel = VAE_DECODE_BYTES_PER_OUTPUT_PIXEL[vae_name] * compute_bytes // 2
    return per_pixel * width * height * batch


def vae_decode_min_tile_bytes(vae_name, compute_bytes=2):
    per_pixel = VAE_DECODE_BYTES_PER_OUTPUT_PIXEL[vae_name] * compute_bytes // 2
    return per_pixel * VAE_DECODE_MIN_TILE_PIXELS

