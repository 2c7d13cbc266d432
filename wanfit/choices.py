"""The values node widgets offer, in a module with no imports, so ComfyUI loads WanFit fast.

The modules that act on them (plan, attention, loading) import these names from here.
"""

MODEL_VARIANTS = ("ti2v_5b", "t2v_a14b", "i2v_a14b")
GPU_TIER_NAMES = ("CONSUMER_8GB", "CONSUMER_12GB", "CONSUMER_16GB", "PROSUMER_24GB", "PROSUMER_32GB",
                  "PROSUMER_48GB", "DATACENTER_80GB", "DATACENTER_141GB")
PLAN_MODES = ("auto",) + GPU_TIER_NAMES
# ComfyUI-native quantized formats come last (saved workflows keep their widget values): float8 = float8_e4m3fn,
# int8 = int8_tensorwise, mxfp8, nvfp4 (comfy/quant_ops.py QUANT_ALGOS; wanfit/plan/formats.py).
PLAN_WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "fp8_scaled", "float8", "int8", "mxfp8", "nvfp4")
PLAN_TEXT_ENCODER_DEVICES = ("auto", "cpu", "gpu")
ATTENTION_MODES = ("auto", "disabled", "sageattn", "qk_int8_pv_fp16_triton", "qk_int8_pv_fp16_cuda",
                   "qk_int8_pv_fp8_cuda", "qk_int8_pv_fp8_cuda_sm90", "sageattn3")
LOADER_WEIGHT_DTYPES = ("auto", "default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
LOADER_TEXT_ENCODER_DEVICES = ("auto", "default", "cpu")

# Range of each numeric Offload Plan input: the node widgets declare it, and the plan, the
# GET /wanfit/plan route and the CLI refuse anything outside it (a NaN or 1e308 from a query
# string, a NaN that passes ComfyUI's min/max check) with an error naming the field.
PLAN_INPUT_LIMITS = {"width": (16, 8192), "height": (16, 8192), "frames": (1, 1025), "batch": (1, 64),
                     "reserve_vram_gb": (0.0, 256.0)}
REPLAY_MODES = ("auto", "on", "off")  # WanFit VAE Decode and Lean Forward: auto (checked replay, else the core's), on, off
