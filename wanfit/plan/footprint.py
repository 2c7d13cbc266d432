"""What WAN 2.2 occupies inside ComfyUI: weights, activations, sampler state, process overheads.

Everything here is arithmetic on the published architectures, so the planner can
predict memory before any file is loaded. Parameter counts are derived layer by
layer from the module definitions in ComfyUI (`comfy/ldm/wan/model.py`,
`comfy/text_encoders/t5.py` with `umt5_config_xxl.json`); a host test checks the
formulas against ComfyUI's real modules built on the meta device. The VAE's sizes
belong to the decode (wanfit/decode/budget.py).

Constants that are estimates rather than counts are marked ESTIMATE and say
where they come from; a GPU benchmark (docs/benchmarks.md) is what may change them.
"""

from dataclasses import dataclass
import math

from ..units import BYTES_PER_GIB, BYTES_PER_MIB
from .gguf import GGUF_QUANTS, block_linear_bytes as gguf_block_linear_bytes

# --- bytes per stored weight -------------------------------------------------

# fp8 "scaled" files (Comfy-Org's *_fp8_scaled.safetensors) store the large
# matrices in fp8_e4m3fn plus one fp32 scale per matrix; vectors stay 16-bit.
DTYPE_BYTES = {
    "fp32": 4,
    "bf16": 2,
    "fp16": 2,
    "fp8_e4m3fn": 1,
    "fp8_e5m2": 1,
    "fp8_scaled": 1,
}
FP8_DTYPES = ("fp8_e4m3fn", "fp8_e5m2", "fp8_scaled")
FP8_SCALE_BYTES_PER_MATRIX = 4  # one fp32 scale_weight per quantized Linear


def round_up(value, multiple):
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class QuantizedFormat:
    """How one of ComfyUI's native quantized formats stores a block linear (comfy/quant_ops.py QUANT_ALGOS,
    loaded by comfy/ops.py mixed_precision_ops): the values, their block scales and per-tensor scales.

    Only the block linears are quantized; ComfyUI builds every other weight (norms, modulation, embeddings,
    head, biases) at the compute dtype, 16-bit on a GPU."""

    name: str  # the plan's weight_dtype
    quant_algo: str  # its key in QUANT_ALGOS (wanfit.models.quantization.QUANT_FORMATS)
    value_bits: int  # bits of one stored weight element
    group_size: int = 0  # elements sharing one block scale; rows and columns are padded to it (0: no blocks)
    group_scale_bytes: int = 0  # one block scale: fp8 e4m3 for nvfp4, e8m0 for mxfp8
    tensor_scale_bytes: int = 4  # the layer's fp32 per-tensor scale (nvfp4's weight_scale_2; none for mxfp8)

    def linear_bytes(self, out_features, in_features):
        """Bytes of one out x in Linear's weight with its scales."""
        rows, cols = out_features, in_features
        if self.group_size:
            rows, cols = round_up(rows, self.group_size), round_up(cols, self.group_size)
        blocks = rows * (cols // self.group_size) * self.group_scale_bytes if self.group_size else 0
        return rows * cols * self.value_bits // 8 + blocks + self.tensor_scale_bytes


# The plan's names for ComfyUI's formats (the QUANT_ALGOS keys are longer, and fp8_e4m3fn already names a plain
# fp8 file): float8 = float8_e4m3fn (an e5m2 file is the same size), int8 = int8_tensorwise.
QUANTIZED_FORMATS = {fmt.name: fmt for fmt in (
    QuantizedFormat("float8", "float8_e4m3fn", 8),  # 1 byte + a per-tensor fp32 weight_scale
    QuantizedFormat("int8", "int8_tensorwise", 8),  # 1 byte + a per-tensor fp32 weight_scale
    QuantizedFormat("mxfp8", "mxfp8", 8, group_size=32, group_scale_bytes=1, tensor_scale_bytes=0),
    QuantizedFormat("nvfp4", "nvfp4", 4, group_size=16, group_scale_bytes=1),
)}
# GGUF files (ComfyUI-GGUF's loader; wanfit/plan/gguf.py): every tensor stays as stored, on the CPU too.
GGUF_DTYPES = tuple(GGUF_QUANTS)
QUANTIZED_DTYPES = FP8_DTYPES + tuple(QUANTIZED_FORMATS) + GGUF_DTYPES  # below 16 bits: they stay so on the CPU too
WEIGHT_DTYPES = tuple(DTYPE_BYTES) + tuple(QUANTIZED_FORMATS) + GGUF_DTYPES


def dtype_bytes(dtype):
    return DTYPE_BYTES[dtype]


# --- architectures -----------------------------------------------------------


@dataclass(frozen=True)
class WanTransformerConfig:
    """The numbers ComfyUI reads from a WAN state dict (comfy/model_detection.py)."""

    name: str
    dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096  # umt5-xxl d_model
    freq_dim: int = 256  # sinusoidal timestep embedding width
    patch_size: tuple = (1, 2, 2)
    vae_spatial_stride: int = 8  # pixels per latent pixel (16 for the Wan 2.2 VAE)
    latent_channels: int = 16

    @property
    def head_dim(self):
        return self.dim // self.num_heads

    @property
    def pixels_per_token_side(self):
        """Pixels along one side of one transformer token (VAE stride x patch)."""
        return self.vae_spatial_stride * self.patch_size[1]


TI2V_5B = WanTransformerConfig("TI2V-5B", dim=3072, ffn_dim=14336, num_layers=30, num_heads=24,
                               in_dim=48, out_dim=48, vae_spatial_stride=16, latent_channels=48)
T2V_A14B_EXPERT = WanTransformerConfig("T2V-A14B expert", dim=5120, ffn_dim=13824, num_layers=40,
                                       num_heads=40, in_dim=16, out_dim=16)
# I2V experts take 16 noise + 20 conditioning channels (WanImageToVideo) and have no img_emb.
I2V_A14B_EXPERT = WanTransformerConfig("I2V-A14B expert", dim=5120, ffn_dim=13824, num_layers=40,
                                       num_heads=40, in_dim=36, out_dim=16)


def transformer_param_counts(config):
    """Parameters per component as {name: (matrix_params, vector_params)}.

    Derivation (comfy/ldm/wan/model.py, WanModel with model_type "t2v"; the
    A14B I2V experts are also built as "t2v", with in_dim 36 and no img_emb):
    - patch_embedding: Conv3d(in_dim, dim, kernel (1,2,2)) -> in_dim*4*dim + dim (kept fp32)
    - text_embedding: Linear(text_dim, dim), GELU, Linear(dim, dim)
    - time_embedding: Linear(freq_dim, dim), SiLU, Linear(dim, dim)
    - time_projection: SiLU, Linear(dim, 6*dim)
    - per block (num_layers of them):
        norm1, norm2: LayerNorm without affine -> 0
        self_attn: q, k, v, o Linear(dim, dim) with bias + RMSNorm q/k weights (2*dim)
        norm3: LayerNorm with affine -> 2*dim
        cross_attn: the same as self_attn (k, v read the dim-wide text context)
        ffn: Linear(dim, ffn_dim), GELU, Linear(ffn_dim, dim)
        modulation: Parameter (1, 6, dim)
    - head: LayerNorm without affine, Linear(dim, out_dim*prod(patch)), modulation (1, 2, dim)
    """
    dim, ffn = config.dim, config.ffn_dim
    patch_volume = math.prod(config.patch_size)

    def linear(i, o):  # split a Linear into (matrix, bias)
        return i * o, o

    attention_matrix = 4 * dim * dim
    attention_vector = 4 * dim + 2 * dim  # q/k/v/o biases + RMSNorm q and k
    block_matrix = 2 * attention_matrix + 2 * dim * ffn
    block_vector = 2 * attention_vector + 2 * dim + (ffn + dim) + 6 * dim  # + norm3, ffn biases, modulation
    text_1, text_2 = linear(config.text_dim, dim), linear(dim, dim)
    time_1, time_2 = linear(config.freq_dim, dim), linear(dim, dim)
    projection = linear(dim, 6 * dim)
    head = linear(dim, config.out_dim * patch_volume)
    return {
        "patch_embedding": (config.in_dim * patch_volume * dim, dim),
        "text_embedding": (text_1[0] + text_2[0], text_1[1] + text_2[1]),
        "time_embedding": (time_1[0] + time_2[0], time_1[1] + time_2[1]),
        "time_projection": projection,
        "blocks": (config.num_layers * block_matrix, config.num_layers * block_vector),
        "head": (head[0], head[1] + 2 * dim),
    }


def transformer_param_count(config):
    return sum(matrix + vector for matrix, vector in transformer_param_counts(config).values())


BLOCK_LINEAR_NAMES = tuple(f"{attention}.{name}" for attention in ("self_attn", "cross_attn") for name in "qkvo") + (
    "ffn.0", "ffn.2")


def block_linear_shapes(config):
    """(out, in) of every block linear: q, k, v, o of self- and cross-attention and the two FFN matrices
    (BLOCK_LINEAR_NAMES, in that order)."""
    dim, ffn = config.dim, config.ffn_dim
    return ((dim, dim),) * 8 + ((ffn, dim), (dim, ffn))


def gguf_weight_bytes(config, weight_dtype):
    """Bytes of a WAN GGUF (GGUF_DTYPES) as ComfyUI-GGUF holds it: the file's tensors as stored (gguf.py): the block
    linears in the quantization's mix, the other matrices, vectors and modulation F16, the patch embedding's weight
    F32 -- what the published WAN 2.2 GGUFs, converted from the fp16 files, hold to the byte."""
    quant = GGUF_QUANTS[weight_dtype]
    counts = transformer_param_counts(config)
    linears, v_index = 0, 0
    for block in range(config.num_layers):
        for name, (out_features, in_features) in zip(BLOCK_LINEAR_NAMES, block_linear_shapes(config)):
            linears += gguf_block_linear_bytes(quant, out_features, in_features, f"blocks.{block}.{name}", v_index)
            v_index += name.endswith(".v")
    other_matrices = sum(m for name, (m, v) in counts.items() if name not in ("blocks", "patch_embedding"))
    vectors = sum(v for name, (m, v) in counts.items() if name != "patch_embedding")
    patch_weight, patch_bias = counts["patch_embedding"]
    return linears + other_matrices * 2 + vectors * 2 + patch_weight * 4 + patch_bias * 2


def transformer_weight_bytes(config, weight_dtype, upcast_to_fp32=False):
    """Bytes the diffusion model occupies once loaded.

    fp8 applies to the block matrices (what the fp8 files quantize); embeddings,
    head, biases, norms and modulation stay 16-bit, the patch embedding fp32
    (ComfyUI builds it with dtype=float32). `upcast_to_fp32`: ComfyUI with --cpu
    computes in fp32 and loads 16-bit files as fp32 (fp8 files stay fp8). A
    QUANTIZED_FORMATS name quantizes the block matrices in that format, with its
    scales; the rest is at the compute dtype (fp32 with upcast_to_fp32). A GGUF_DTYPES name:
    gguf_weight_bytes, as stored whatever the device.
    """
    if weight_dtype in GGUF_QUANTS:
        return gguf_weight_bytes(config, weight_dtype)
    counts = transformer_param_counts(config)
    if weight_dtype in QUANTIZED_FORMATS:
        fmt = QUANTIZED_FORMATS[weight_dtype]
        linears = config.num_layers * sum(fmt.linear_bytes(o, i) for o, i in block_linear_shapes(config))
        block_vector = counts["blocks"][1]
        other = sum(m + v for name, (m, v) in counts.items() if name not in ("blocks", "patch_embedding"))
        return linears + (block_vector + other) * (4 if upcast_to_fp32 else 2) + sum(counts["patch_embedding"]) * 4
    if weight_dtype in FP8_DTYPES:
        block_matrix, block_vector = counts["blocks"]
        matrices_per_block = 8 + 2  # q k v o (self) + q k v o (cross) + 2 ffn
        scales = config.num_layers * matrices_per_block * FP8_SCALE_BYTES_PER_MATRIX if weight_dtype == "fp8_scaled" else 0
        other = sum(m + v for name, (m, v) in counts.items() if name not in ("blocks", "patch_embedding"))
        return block_matrix * 1 + (block_vector + other) * 2 + sum(counts["patch_embedding"]) * 4 + scales
    element_bytes = 4 if upcast_to_fp32 else dtype_bytes(weight_dtype)
    patch = sum(counts["patch_embedding"])
    return (transformer_param_count(config) - patch) * element_bytes + patch * 4


def largest_matrix_params(config):
    """The largest single weight ComfyUI casts at once (an FFN matrix)."""
    return max(config.dim * config.ffn_dim, config.dim * config.dim * 6)


# --- text encoder: umt5-xxl (encoder only) -----------------------------------


@dataclass(frozen=True)
class T5EncoderConfig:
    """comfy/text_encoders/umt5_config_xxl.json; ComfyUI builds only the encoder."""

    d_model: int = 4096
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    d_kv: int = 64
    vocab_size: int = 256384
    relative_attention_num_buckets: int = 32


UMT5_XXL = T5EncoderConfig()


def t5_encoder_param_counts(config=UMT5_XXL):
    """{"embedding": n, "matrices": n, "vectors": n} for a gated-GELU umT5 encoder.

    - shared token embedding: vocab x d_model
    - per layer: q, k, v, o without bias (d_model x heads*d_kv each); a relative
      position bias per layer (umT5 does not share it: buckets x heads); two
      RMSNorm weights; gated FFN wi_0, wi_1 (d_model x d_ff) and wo (d_ff x d_model)
    - final RMSNorm
    5,680,910,336 parameters for umt5-xxl (checked against ComfyUI's T5 on meta).
    """
    inner = config.num_heads * config.d_kv
    per_layer_matrices = 4 * config.d_model * inner + 3 * config.d_model * config.d_ff
    per_layer_vectors = config.relative_attention_num_buckets * config.num_heads + 2 * config.d_model
    return {
        "embedding": config.vocab_size * config.d_model,
        "matrices": config.num_layers * per_layer_matrices,
        "vectors": config.num_layers * per_layer_vectors + config.d_model,
    }


def t5_encoder_param_count(config=UMT5_XXL):
    return sum(t5_encoder_param_counts(config).values())


def text_encoder_weight_bytes(weight_dtype, config=UMT5_XXL):
    """fp8 files (umt5_xxl_fp8_e4m3fn_scaled) quantize the layer matrices, not the embedding."""
    counts = t5_encoder_param_counts(config)
    if weight_dtype in FP8_DTYPES:
        scales = config.num_layers * 7 * FP8_SCALE_BYTES_PER_MATRIX if weight_dtype == "fp8_scaled" else 0
        return counts["matrices"] + (counts["embedding"] + counts["vectors"]) * 2 + scales
    return t5_encoder_param_count(config) * dtype_bytes(weight_dtype)


# ESTIMATE: 512 tokens; T5 materializes 64 heads x 512 x 512 attention scores
# (fp32: 64 MiB) plus a few 512 x 10240 FFN intermediates: well under this.
TEXT_ENCODER_ACTIVATION_BYTES = 512 * BYTES_PER_MIB

# --- transformer activations -------------------------------------------------


def latent_frames(frames):
    """WAN VAEs compress time 4x causally: F = 4n + 1 frames -> n + 1 latent frames."""
    return (frames - 1) // 4 + 1


def transformer_tokens(config, width, height, frames):
    """Sequence length: latent T x H/(stride*2) x W/(stride*2) (patch (1,2,2))."""
    side = config.pixels_per_token_side
    return latent_frames(frames) * (height // side) * (width // side)


# Peak live tensors of one forward pass of ComfyUI's WanModel, in units of one hidden
# state [tokens, dim] at the compute dtype per batch element, read off each core's
# comfy/ldm/wan/model.py (inference: no autograd graph keeps anything). Checked against
# the core's own forward at real sizes by bench/activation_peak.py (meta device, every
# live storage counted; docs/benchmarks.md, "Activation memory per core (simulated)").
# SDPA runs as the flash kernel: one output, never the tokens x tokens scores; RMSNorm as
# the fused kernel: one output.
#
# Both cores, inside WanAttentionBlock.forward:
# - the caller (WanModel.forward_orig: `x = block(x, ...)`) holds the block's input x for
#   the whole block, so it counts once besides whatever x the block rebinds;
# - the FFN keeps its up-projection output (ffn_dim wide) alive while GELU writes its own
#   output: 2 x ffn_dim/dim units (2 x 2.7 for A14B, 2 x 4.67 for TI2V-5B).
#
# 0.3.64:
# - self-attention, while RoPE runs on k (comfy/ldm/flux/math.apply_rope1, eager, fp32):
#   caller's x (1) + modulated input (1) + rotated q (1) + normed k (1) + k upcast to
#   fp32 (2) + fp32 rotated k (2) + its cast back (1) = 9.
# - FFN (nn.Sequential: the up-projection output is dropped once GELU returns):
#   caller's x (1) + x after cross-attention (1) + modulated input (1) + 2 x ffn/dim.
# 0.33.0:
# - block 0 makes `x.contiguous()` of the patch embedding's transposed view while the
#   caller holds the view's storage: one more unit during block 0's self-attention.
#   RoPE goes through comfy-kitchen (comfy.quant_ops.ck.apply_rope1). Its CUDA kernel
#   writes one output, but comfy/quant_ops.py turns the kitchen's CUDA backend off for
#   torch built below CUDA 13 (2.9.1+cu128 among them), leaving the eager backend with
#   0.3.64's fp32 arithmetic: 9 + 1 = 10. With the kernel the self-attention stays near 7
#   and the FFN is the peak; the planner counts the eager case, the larger.
# - FFN (WanFeedForward -> comfy.ops.linear_input_act(down, up(x), "gelu_tanh")): the
#   up-projection output is the function's argument, alive until the down-projection
#   returns, so its output counts too: caller's x (1) + x after cross-attention (1) +
#   modulated input (1) + down-projection output (1) + 2 x ffn/dim.


@dataclass(frozen=True)
class ActivationProfile:
    """One core's peak inside a WAN block, in hidden-state units (see above)."""

    core_version: tuple
    self_attention_units: float  # while RoPE runs on k
    ffn_fixed_units: float  # besides the two ffn_dim-wide intermediates


ACTIVATION_PROFILES = (
    ActivationProfile((0, 3, 64), self_attention_units=9, ffn_fixed_units=3),
    ActivationProfile((0, 33, 0), self_attention_units=10, ffn_fixed_units=4),
)
FFN_INTERMEDIATES = 2  # up-projection output + GELU output
# Tensors that live through the whole pass, besides the blocks' hidden states:
# the RoPE table [1, tokens, 1, head_dim/2, 2, 2] fp32, one for the whole batch: 8 x head_dim
# bytes per token (1 KiB for head_dim 128);
ROPE_BYTES_PER_HEAD_DIM_PER_TOKEN = 8
# the text context after text_embedding, [batch, 512, dim] (ComfyUI pads umT5 to 512 tokens);
TEXT_CONTEXT_TOKENS = 512
# and the latent input copy pad_to_patch_size makes, [batch, in_dim, T, H, W] at the compute dtype.
# ESTIMATE: caching-allocator rounding and fragmentation between blocks, with
# PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (the plan sets it). The live-tensor count
# above is exact for the core's forward; this factor is what a GPU measurement may change.
ACTIVATION_OVERHEAD_FACTOR = 1.2


def activation_profile(core_version=None):
    """The profile of the newest known core not newer than core_version (None: the newest);
    a core older than every profile gets the oldest."""
    if core_version is None:
        return ACTIVATION_PROFILES[-1]
    known = [profile for profile in ACTIVATION_PROFILES if profile.core_version <= tuple(core_version)]
    return known[-1] if known else ACTIVATION_PROFILES[0]


# WanFit's lean block forward (wanfit/lean_forward.py), the same on both cores (it replays each
# core's arithmetic, with its own allocation pattern). With f = chunk tokens / tokens:
# - the self-attention call: caller's x (1) + q (1) + k (1) + v (1) + its output (1) = 5;
# - while k or v fills: caller's x, q, k (and v) + one chunk's temporaries: the norm, the modulated
#   input, the Linear and RMSNorm outputs and RoPE's fp32 copy, result and cast back (8 at most);
# - the FFN: caller's x (1) + the block's own x (1) + one chunk's norm, modulated input and
#   down-projection (3) and its up-projection and GELU outputs (2 x ffn_dim / dim).
# At the auto chunk size (1/8 of the sequence, at least 4096 tokens) the fill is 4 + 8f: 5 units at
# f = 1/8, a little more where the 4096-token floor makes f larger (5.2 for TI2V-5B at 1280x704x121,
# f = 0.15; simulated, the attention call stays the peak: the fill's 8 is an upper bound); the FFN
# stays below 5 on both models.
# Checked by bench/activation_peak.py --lean (docs/benchmarks.md).
LEAN_ATTENTION_UNITS = 5
LEAN_FILL_UNITS = 4
LEAN_FILL_CHUNK_UNITS = 8
LEAN_FFN_UNITS = 2
LEAN_FFN_CHUNK_FIXED_UNITS = 3
# "auto" chunk size: the sequence in this many chunks, none smaller than LEAN_AUTO_MIN_CHUNK_TOKENS (a
# matmul of fewer rows wastes the card, and every chunk costs a round of small kernels) unless the
# whole sequence is smaller. Fewer, larger chunks keep the lean forward as fast as the stock one
# (bench/lean_forward_speed.py, docs/benchmarks.md); 1/8 keeps the fill phase at 5 units.
LEAN_AUTO_CHUNKS = 8
# Cores whose stock activation profiles are measured (ACTIVATION_PROFILES); the lean forward runs on
# every supported core, checked against the core's own block at run time (wanfit/lean_forward.py).
LEAN_FORWARD_CORES = ((0, 3, 64), (0, 33, 0))
LEAN_AUTO_MIN_CHUNK_TOKENS = 4096


def lean_auto_chunk_tokens(tokens):
    return min(tokens, max(LEAN_AUTO_MIN_CHUNK_TOKENS, -(-tokens // LEAN_AUTO_CHUNKS)))


def lean_block_units(config, tokens, chunk_tokens=None):
    """Peak hidden states inside a lean block (per batch element); chunk_tokens None = auto."""
    chunk = lean_auto_chunk_tokens(tokens) if chunk_tokens is None else min(chunk_tokens, tokens)
    fraction = chunk / tokens
    fill = LEAN_FILL_UNITS + fraction * LEAN_FILL_CHUNK_UNITS
    ffn = LEAN_FFN_UNITS + fraction * (LEAN_FFN_CHUNK_FIXED_UNITS + FFN_INTERMEDIATES * config.ffn_dim / config.dim)
    return max(LEAN_ATTENTION_UNITS, fill, ffn)


def activation_hidden_units(config, core_version=None, lean_forward=False, tokens=None, chunk_tokens=None):
    """Peak hidden states live inside a block, per batch element: self-attention or FFN
    (lean_forward: WanFit's lean block at `tokens`, chunk_tokens None = auto)."""
    if lean_forward:
        return lean_block_units(config, tokens, chunk_tokens)
    profile = activation_profile(core_version)
    ffn = profile.ffn_fixed_units + FFN_INTERMEDIATES * config.ffn_dim / config.dim
    return max(profile.self_attention_units, ffn)


def transformer_activation_bytes(config, width, height, frames, batch_elements=1, compute_bytes=2, core_version=None,
                                 lean_forward=False, chunk_tokens=None):
    """Peak activation memory of one forward pass; batch_elements is 2x batch when CFG is
    batched; core_version (e.g. (0, 3, 64)) picks the core's profile, None the newest;
    lean_forward: WanFit's lean block forward instead of the core's own blocks, with
    chunk_tokens per chunk (None = auto)."""
    tokens = transformer_tokens(config, width, height, frames)
    hidden_state_bytes = tokens * config.dim * compute_bytes
    units = activation_hidden_units(config, core_version, lean_forward, tokens, chunk_tokens)
    blocks = hidden_state_bytes * units * batch_elements
    rope_table = tokens * config.head_dim * ROPE_BYTES_PER_HEAD_DIM_PER_TOKEN
    text_context = TEXT_CONTEXT_TOKENS * config.dim * compute_bytes * batch_elements
    latent_input = tokens * config.in_dim * math.prod(config.patch_size) * compute_bytes * batch_elements
    return int(math.ceil((blocks + rope_table + text_context + latent_input) * ACTIVATION_OVERHEAD_FACTOR))


# Latent-sized tensors the sampler keeps (noise, x, denoised, cond/uncond outputs,
# sampler history) in fp32, plus text context and timestep embeddings.
SAMPLER_LATENT_COPIES = 10
SAMPLER_FIXED_BYTES = 256 * BYTES_PER_MIB


def sampler_state_bytes(config, width, height, frames, batch=1):
    stride = config.vae_spatial_stride
    latent = config.latent_channels * latent_frames(frames) * (height // stride) * (width // stride)
    return latent * 4 * SAMPLER_LATENT_COPIES * batch + SAMPLER_FIXED_BYTES


# ComfyUI casts each Linear's weight to the compute dtype on use (comfy.ops
# cast_bias_weight) - always for fp8 or streamed weights; with --async-offload
# two streams prefetch ahead. Budget this many of the largest matrices in flight.
WEIGHT_CAST_WINDOW_MATRICES = 4


def weight_cast_window_bytes(config, compute_bytes=2):
    return largest_matrix_params(config) * compute_bytes * WEIGHT_CAST_WINDOW_MATRICES


def comfyui_memory_required_bytes(config, width, height, frames, batch_elements=1, compute_bytes=2):
    """ComfyUI's own estimate (model_base.BaseModel.memory_required with SDPA):
    latent area x dtype size x 0.01 x memory_usage_factor MiB, where WAN's
    memory_usage_factor is dim / 2222 (supported_models.WAN21_T2V). ComfyUI uses
    it to size partial loading and to decide whether cond and uncond run batched.
    """
    stride = config.vae_spatial_stride
    area = batch_elements * latent_frames(frames) * (height // stride) * (width // stride)
    return int(area * compute_bytes * 0.01 * (config.dim / 2222) * BYTES_PER_MIB)


# --- process overheads -------------------------------------------------------

# ESTIMATE: CUDA context + cuBLAS/cuDNN workspaces of the ComfyUI process
# (300-600 MiB on recent drivers with lazy module loading).
CUDA_CONTEXT_BYTES = 512 * BYTES_PER_MIB
# ESTIMATE: resident size of python + torch + CUDA host libraries + ComfyUI with
# its nodes imported, before any model is loaded.
PROCESS_BASE_RAM_BYTES = 3 * BYTES_PER_GIB


def decoded_video_ram_bytes(width, height, frames, batch=1):
    """Decoded frames land on the CPU as fp32 (ComfyUI's intermediate device);
    saving makes a uint8 copy and the encoder buffers a little: x1.5."""
    return int(width * height * 3 * frames * batch * 4 * 1.5)
