"""Which WAN 2.2 file is this? Answered from the safetensors header alone, before anything loads.

The rules mirror ComfyUI (comfy/model_detection.py at `head.modulation`, comfy/sd.py VAE and
text-encoder detection), so what WanFit accepts is what ComfyUI will load.
"""

from dataclasses import dataclass, field
import re

from .headers import SAFETENSORS_DTYPES, SafetensorsHeader, read_safetensors_header
from .quantization import UNKNOWN_UNTIL_LOADED, QuantizationInfo, read_quantization

WAN_HEAD_DIM = 128  # ComfyUI: num_heads = dim // 128
UMT5_XXL_VOCAB = 256384

VARIANT_TITLES = {
    "ti2v_5b": "WAN 2.2 TI2V-5B",
    "t2v_a14b": "WAN 2.2 T2V-A14B expert",
    "i2v_a14b": "WAN 2.2 I2V-A14B expert",
    "wan22_vae": "Wan 2.2 VAE (z=48, 16x16 spatial)",
    "wan21_vae": "Wan 2.1 VAE (z=16, 8x8 spatial)",
    "umt5_xxl": "umt5-xxl text encoder",
    "wan_lora": "WAN LoRA",
}


@dataclass
class WanDims:
    dim: int = None
    layers: int = None
    in_dim: int = None
    out_dim: int = None
    ffn_dim: int = None
    heads: int = None
    z_dim: int = None  # VAEs only
    lora_rank: int = None  # LoRAs only

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ModelInfo:
    """What a file is, from its header: enough for the loaders and the planner to decide."""

    path: str
    kind: str  # diffusion_model | vae | text_encoder | lora | unknown
    variant: str  # ti2v_5b | t2v_a14b | i2v_a14b | wan22_vae | wan21_vae | umt5_xxl | wan_lora | unsupported | unknown
    looks_like: str  # one phrase for messages: "a WAN 2.2 I2V-A14B expert", "a Stable Diffusion UNet checkpoint"
    dims: WanDims = field(default_factory=WanDims)
    dtype_param_counts: dict = field(default_factory=dict)  # torch dtype name -> parameters stored in it
    weight_dtype: str = None  # dominant dtype by parameter count (comfy.utils.weight_dtype)
    fp8_scaled: bool = False  # ComfyUI "scaled_fp8" marker key present
    scaled_fp8_dtype: str = None  # what ComfyUI would set model_config.scaled_fp8 to
    has_scale_weight_keys: bool = False
    parameter_count: int = 0
    key_prefix: str = ""
    size_class: str = None  # "5B" | "14B" | "1.3B" | "tiny" | "other"
    tensor_bytes: int = 0
    notes: list = field(default_factory=list)
    quantization: QuantizationInfo = None  # diffusion models in ComfyUI's quantized formats (or fp8_scaled)

    @property
    def dtypes(self):
        return sorted(self.dtype_param_counts, key=self.dtype_param_counts.get, reverse=True)

    @property
    def precision_label(self):
        if self.fp8_scaled:
            return "fp8 scaled"
        if self.quantization is not None and self.quantization.main_format is not None:
            if self.quantization.main_format == UNKNOWN_UNTIL_LOADED:
                return "ComfyUI quantized (format read when it loads)"
            return f"{self.quantization.main_format} (ComfyUI quantized)"
        return self.weight_dtype

    @property
    def title(self):
        return VARIANT_TITLES.get(self.variant, self.looks_like)

    def as_dict(self):
        return {
            "path": self.path, "kind": self.kind, "variant": self.variant, "looks_like": self.looks_like,
            "dims": self.dims.as_dict(), "dtype_param_counts": dict(self.dtype_param_counts),
            "weight_dtype": self.weight_dtype, "fp8_scaled": self.fp8_scaled,
            "scaled_fp8_dtype": self.scaled_fp8_dtype, "parameter_count": self.parameter_count,
            "key_prefix": self.key_prefix, "size_class": self.size_class, "tensor_bytes": self.tensor_bytes,
            "notes": list(self.notes),
            "quantization": self.quantization.description if self.quantization else None,
        }


def _find_prefix(tensors, marker):
    """The key prefix in front of `marker` ('' or 'model.diffusion_model.' ...), or None if absent."""
    if marker in tensors:
        return ""
    for name in tensors:
        if name.endswith("." + marker):
            return name[: -len(marker)]
    return None


def _count_blocks(tensors, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for name in tensors for m in [pattern.match(name)] if m}
    return max(indices) + 1 if indices else 0


def _size_class(dim):
    if dim is None:
        return None
    if dim <= 512:
        return "tiny"
    return {1536: "1.3B", 3072: "5B", 5120: "14B"}.get(dim, "other")


def _dtype_summary(tensors):
    counts = {}
    tensor_bytes = 0
    for entry in tensors.values():
        name = SAFETENSORS_DTYPES[entry.dtype].name
        counts[name] = counts.get(name, 0) + entry.numel
        tensor_bytes += entry.data_offsets[1] - entry.data_offsets[0]
    return counts, tensor_bytes


# (key fragment, what the file looks like) for files that are not WAN 2.2 at all.
FOREIGN_FINGERPRINTS = (
    ("input_blocks.", "a Stable Diffusion 1.x/2.x/SDXL UNet checkpoint (input_blocks/middle_block/output_blocks keys)"),
    ("double_blocks.", "a Flux / HunyuanVideo diffusion model (double_blocks keys)"),
    ("joint_blocks.", "a Stable Diffusion 3 MMDiT (joint_blocks keys)"),
    ("transformer_blocks.", "a diffusers-format transformer (transformer_blocks keys), not a ComfyUI single file"),
    ("text_model.encoder.layers.", "a CLIP text encoder"),
    ("vision_model.encoder.layers.", "a CLIP vision encoder"),
    ("encoder.down.0.", "a Stable Diffusion / Flux image VAE (encoder.down keys)"),
    ("model.layers.0.", "an LLM text encoder (Llama/Qwen/Gemma keys)"),
)


def detect_variant(path_or_header):
    """Classify a file by key names and shapes, the way ComfyUI does, without reading tensor data.

    Detection is by keys and channel counts (in_dim/out_dim/z_dim), never by size, so the tiny
    dim-128 test fixtures detect exactly like the 14B originals; size_class reports the size.
    """
    header = path_or_header if isinstance(path_or_header, SafetensorsHeader) else read_safetensors_header(path_or_header)
    tensors = header.tensors
    counts, tensor_bytes = _dtype_summary(tensors)
    info = ModelInfo(path=header.path, kind="unknown", variant="unknown", looks_like="an unrecognised model file",
                     dtype_param_counts=counts, tensor_bytes=tensor_bytes,
                     parameter_count=sum(e.numel for e in tensors.values()))
    if counts:
        info.weight_dtype = max(counts, key=counts.get)
    scaled_key = next((n for n in tensors if n == "scaled_fp8" or n.endswith(".scaled_fp8")), None)
    if scaled_key is not None:
        info.fp8_scaled = True
        marker_dtype = SAFETENSORS_DTYPES[tensors[scaled_key].dtype].name
        # ComfyUI: a float32 marker means e4m3fn; otherwise the marker's own dtype.
        info.scaled_fp8_dtype = "float8_e4m3fn" if marker_dtype == "float32" else marker_dtype
    info.has_scale_weight_keys = any(n.endswith("scale_weight") for n in tensors)

    if not tensors:
        info.looks_like = "an empty safetensors file (no tensors)"
        return info
    for detector in (_detect_diffusion_model, _detect_vae, _detect_text_encoder, _detect_lora):
        if detector(tensors, info):
            if info.kind == "diffusion_model":
                info.quantization = read_quantization(tensors, header.metadata, info.key_prefix)
            return info
    for fragment, looks_like in FOREIGN_FINGERPRINTS:
        if any(fragment in name for name in tensors):
            info.looks_like = looks_like
            break
    return info


def _detect_diffusion_model(tensors, info):
    prefix = _find_prefix(tensors, "head.modulation")
    if prefix is None or prefix + "patch_embedding.weight" not in tensors:
        return False
    info.kind = "diffusion_model"
    info.key_prefix = prefix
    dim = tensors[prefix + "head.modulation"].shape[-1]
    ffn_key = prefix + "blocks.0.ffn.0.weight"
    info.dims = WanDims(
        dim=dim, heads=dim // WAN_HEAD_DIM,
        out_dim=tensors[prefix + "head.head.weight"].shape[0] // 4 if prefix + "head.head.weight" in tensors else None,
        in_dim=tensors[prefix + "patch_embedding.weight"].shape[1],
        ffn_dim=tensors[ffn_key].shape[0] if ffn_key in tensors else None,
        layers=_count_blocks(tensors, prefix + "blocks."),
    )
    info.size_class = _size_class(dim)
    has = lambda key: prefix + key in tensors  # noqa: E731
    special = (("vace_patch_embedding.weight", "a WAN VACE model"),
               ("control_adapter.conv.weight", "a WAN Fun camera-control model"),
               ("casual_audio_encoder.encoder.final_linear.weight", "a WAN 2.2 S2V (speech-to-video) model"),
               ("audio_proj.audio_proj_glob_1.layer.bias", "a HuMo model"),
               ("face_adapter.fuser_blocks.0.k_norm.weight", "a WAN 2.2 Animate model"))
    for key, looks_like in special:
        if has(key):
            info.variant, info.looks_like = "unsupported", looks_like
            return True
    if has("img_emb.proj.0.bias"):
        # Wan 2.1 I2V/FLF2V carry a CLIP-vision image embedding; the WAN 2.2 A14B I2V experts do not.
        info.variant = "unsupported"
        info.looks_like = ("a Wan 2.1 image-to-video model (it has img_emb CLIP-vision keys; WAN 2.2 A14B I2V "
                           "experts have none)")
        return True
    in_dim, out_dim = info.dims.in_dim, info.dims.out_dim
    if out_dim == 48 or in_dim == 48:
        info.variant = "ti2v_5b"
    elif in_dim == 16:
        info.variant = "t2v_a14b"
    elif in_dim == 36:
        info.variant = "i2v_a14b"
    else:
        info.variant = "unsupported"
        info.looks_like = f"a WAN-family diffusion model with in_dim {in_dim}, which no WAN 2.2 variant uses"
        return True
    info.looks_like = "a " + VARIANT_TITLES[info.variant]
    if info.variant != "ti2v_5b" and info.size_class == "1.3B":
        info.notes.append("dim 1536 is the Wan 2.1 T2V-1.3B size; a WAN 2.2 A14B expert has dim 5120")
    if info.variant == "t2v_a14b" and info.size_class == "14B":
        info.notes.append("a Wan 2.1 T2V-14B file has the same keys and shapes; only the file name tells them apart")
    return True


def _detect_vae(tensors, info):
    prefix = _find_prefix(tensors, "decoder.middle.0.residual.0.gamma")
    if prefix is None:
        return False
    info.kind = "vae"
    info.key_prefix = prefix
    # comfy/sd.py: this key exists only in the Wan 2.2 VAE's decoder.
    is_wan22 = prefix + "decoder.upsamples.0.upsamples.0.residual.2.weight" in tensors
    info.variant = "wan22_vae" if is_wan22 else "wan21_vae"
    conv2 = tensors.get(prefix + "conv2.weight")
    info.dims = WanDims(z_dim=conv2.shape[0] if conv2 is not None else (48 if is_wan22 else 16))
    info.looks_like = "the " + VARIANT_TITLES[info.variant]
    return True


def _detect_text_encoder(tensors, info):
    marker = "encoder.block.23.layer.1.DenseReluDense.wi_1.weight"
    prefix = _find_prefix(tensors, marker)
    if prefix is None:
        if _find_prefix(tensors, "encoder.block.23.layer.1.DenseReluDense.wi.weight") is not None:
            info.kind, info.variant = "text_encoder", "unsupported"
            info.looks_like = "an original T5 v1.0 XXL text encoder (Cosmos)"
            return True
        return False
    info.kind = "text_encoder"
    info.key_prefix = prefix
    d_model = tensors[prefix + marker].shape[-1]
    shared = tensors.get(prefix + "shared.weight")
    vocab = shared.shape[0] if shared is not None else None
    info.dims = WanDims(dim=d_model, layers=_count_blocks(tensors, prefix + "encoder.block."))
    # umt5 keeps a relative-attention bias in every block (comfy/text_encoders/t5.py); T5 only in block 0.
    per_block_bias = prefix + "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in tensors
    if d_model == 4096 and (per_block_bias or vocab == UMT5_XXL_VOCAB):
        info.variant, info.looks_like = "umt5_xxl", "the umt5-xxl text encoder"
    elif d_model == 4096:
        info.variant = "unsupported"
        info.looks_like = f"a T5-XXL text encoder (Flux/SD3/LTXV; vocab {vocab or 'unknown'}), not umt5-xxl"
    else:
        info.variant = "unsupported"
        info.looks_like = f"a T5-family text encoder with width {d_model} (not umt5-xxl, which is 4096)"
    return True


LORA_KEY_FRAGMENTS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")


def _detect_lora(tensors, info):
    lora_keys = [n for n in tensors if any(f in n for f in LORA_KEY_FRAGMENTS)]
    if not lora_keys:
        return False
    info.kind = "lora"
    down = next((n for n in lora_keys if ("lora_down" in n or "lora_A" in n or "lora.down" in n)
                 and len(tensors[n].shape) == 2), None)
    if down is not None:
        rank, in_features = tensors[down].shape
        info.dims = WanDims(dim=in_features, lora_rank=rank)
        info.size_class = _size_class(in_features)
    wan_like = any(re.search(r"blocks[._]\d+[._](self_attn|cross_attn|ffn)", n) for n in lora_keys)
    info.variant = "wan_lora" if wan_like else "unknown"
    info.looks_like = "a WAN LoRA" if wan_like else "a LoRA for a non-WAN model"
    return True


def model_variant_of(model):
    """ti2v_5b | t2v_a14b | i2v_a14b for a loaded WAN MODEL (ComfyUI's detected config), else None."""
    if model is None:
        return None
    config = getattr(getattr(model, "model", None), "model_config", None)
    unet_config = getattr(config, "unet_config", {}) or {}
    if unet_config.get("image_model") != "wan2.1":
        return None
    if unet_config.get("out_dim") == 48:
        return "ti2v_5b"
    return "i2v_a14b" if unet_config.get("in_dim") == 36 else "t2v_a14b"
