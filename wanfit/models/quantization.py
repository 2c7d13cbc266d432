"""ComfyUI's native quantization of a diffusion model, read from its safetensors header alone.

ComfyUI 0.33.0 accepts three encodings (comfy/utils.py `convert_old_quants`, comfy/ops.py
`mixed_precision_ops`):

- header metadata `_quantization_metadata`: JSON `{"format_version": "1.0", "layers": {layer: {"format": ...}}}`.
  `convert_old_quants` turns each entry into a `<layer>.comfy_quant` tensor, replacing one the file holds,
  so the metadata wins over per-layer tensors and a `scaled_fp8` marker is then ignored;
- per-layer `<layer>.comfy_quant` uint8 tensors holding the layer's JSON. Their presence alone makes
  `detect_layer_quantization` pick `mixed_precision_ops`, whose layer loader json-decodes the data when the
  layer loads; from the header only their presence and length are known, so such a layer is counted as
  quantized in the format "unknown until loaded" unless the metadata names it;
- legacy fp8_scaled: a `scaled_fp8` marker and `<layer>.scale_weight` tensors, which `convert_old_quants`
  turns into float8_e4m3fn layers with a `weight_scale`.

Nothing here imports torch: only the header is read, so a 14 GB expert is described in microseconds.
"""

from dataclasses import dataclass, field
import json
import re

from .headers import SAFETENSORS_DTYPES

UNKNOWN_UNTIL_LOADED = "unknown until loaded"


@dataclass(frozen=True)
class QuantFormat:
    """How one of ComfyUI's formats is stored: the weight's dtypes and the scales its loader pops."""

    name: str
    weight_dtypes: tuple  # safetensors tags the loader accepts for the weight
    scales: tuple  # ((tensor suffix, safetensors tags it may have), ...), all required
    packed_in_half: bool = False  # two 4-bit values a byte: the weight's last dim is half the layer's inputs
    first_core: str = None  # a ComfyUI release whose QUANT_ALGOS has it, for the fix when the running core lacks it


# The keys of QUANT_ALGOS in ComfyUI 0.33.0's comfy/quant_ops.py, stored as comfy/ops.py loads them.
# Scales that the loader views as another dtype (.view) may also be stored as U8. first_core is the
# oldest release checked here whose QUANT_ALGOS has the format (mxfp8 also needs comfy-kitchen's
# MXFP8 layout); whether the running core loads a file is read from the core itself (core_support.py).
QUANT_FORMATS = {f.name: f for f in (
    QuantFormat("float8_e4m3fn", ("F8_E4M3",), (("weight_scale", ("F32", "F16", "BF16")),), first_core="0.3.76"),
    QuantFormat("float8_e5m2", ("F8_E5M2",), (("weight_scale", ("F32", "F16", "BF16")),), first_core="0.8.2"),
    QuantFormat("nvfp4", ("U8",), (("weight_scale", ("F8_E4M3", "U8")), ("weight_scale_2", ("F32", "F16", "BF16"))),
                packed_in_half=True, first_core="0.8.2"),
    QuantFormat("mxfp8", ("F8_E4M3",), (("weight_scale", ("F8_E8M0", "U8")),), first_core="0.18.1"),
    QuantFormat("int8_tensorwise", ("I8",), (("weight_scale", ("F32", "F16", "BF16")),), first_core="0.28.0"),
    QuantFormat("convrot_w4a4", ("I8",), (("weight_scale", ("F32", "F16", "BF16")),), first_core="0.28.0"),
    QuantFormat("asym_w4a8_int8", ("I8",), (("weight_s_rel", ("F8_E4M3", "U8")),), packed_in_half=True,
                first_core="0.31.0"),
)}

BLOCK_LINEAR = re.compile(r"blocks\.(\d+)\.(?:(?:self_attn|cross_attn)\.[qkvo]|ffn\.[02])$")


@dataclass(frozen=True)
class FormatUse:
    """One format in a file: how many block linears use it, how many layers in all, and their bytes."""

    format: str
    block_linears: int
    layers: int
    bytes: int  # weights plus their scales


@dataclass
class QuantizationInfo:
    """A diffusion model's quantization as its header declares it; `problems` name each disagreeing layer."""

    encodings: tuple  # of "metadata", "comfy_quant tensors", "scaled_fp8"
    formats: tuple  # FormatUse, most block linears first
    block_linears: int  # in the whole file
    rest_dtype: str  # what the unquantized weights are mostly stored as ("bfloat16", ...)
    total_bytes: int  # every tensor in the file
    problems: list = field(default_factory=list)

    @property
    def native(self):
        """Stored in ComfyUI's quantized format (metadata or .comfy_quant tensors), not legacy scaled_fp8,
        which every core loads and the loaders treat as an fp8 file."""
        return "metadata" in self.encodings or "comfy_quant tensors" in self.encodings

    @property
    def main_format(self):
        return self.formats[0].format if self.formats else None

    @property
    def description(self):
        """'nvfp4, 400 of 400 block linears; the rest bf16'."""
        parts = [f"{use.format}, {use.block_linears} of {self.block_linears} block linears" for use in self.formats]
        return "; ".join(parts + [f"the rest {short_dtype(self.rest_dtype)}"])

    @property
    def kept_description(self):
        """What loading as stored keeps: '400 of 400 block linears stay nvfp4; the rest bf16 (unquantized
        linears in ComfyUI's compute dtype)'. comfy/ops.py mixed_precision_ops loads a linear without a
        format (embeddings, head) in the compute dtype whatever the load dtype: bf16 on most GPUs, fp32 on
        the CPU; the load dtype keeps the rest (modulation, norms)."""
        parts = [f"{use.block_linears} of {self.block_linears} block linears stay "
                 f"{'quantized (format read when it loads)' if use.format == UNKNOWN_UNTIL_LOADED else use.format}"
                 for use in self.formats]
        return "; ".join(parts + [f"the rest {short_dtype(self.rest_dtype)} (unquantized linears in ComfyUI's "
                                  f"compute dtype)"])


def short_dtype(name):
    """The short names people write: bfloat16 -> bf16, float16 -> fp16, float32 -> fp32."""
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(name, name)


def read_quantization(tensors, metadata, key_prefix=""):
    """The quantization a header declares, or None when the file carries none (a plain fp16/bf16 file)."""
    layer_formats, encodings, problems = {}, [], []
    raw = metadata.get("_quantization_metadata")
    if raw is not None:
        encodings.append("metadata")
        layer_formats.update(_metadata_layers(raw, tensors, key_prefix, problems))
    quant_tensors = [name[:-len(".comfy_quant")] for name in tensors if name.endswith(".comfy_quant")]
    if quant_tensors:
        encodings.append("comfy_quant tensors")
        for layer in quant_tensors:
            layer_formats.setdefault(layer, UNKNOWN_UNTIL_LOADED)
    if raw is None and any(n == key_prefix + "scaled_fp8" for n in tensors):
        encodings.append("scaled_fp8")
        for name in tensors:
            if name.endswith(".scale_weight"):
                layer_formats[name[:-len(".scale_weight")]] = "float8_e4m3fn"
    if not encodings:
        return None

    by_format = {}
    owned = set()
    for layer, name in layer_formats.items():
        weight = tensors.get(layer + ".weight")
        if weight is None:
            problems.append(f"layer {layer} is quantized as {name} but the file has no {layer}.weight")
            continue
        if name in QUANT_FORMATS and "scaled_fp8" not in encodings:
            problems += _storage_problems(QUANT_FORMATS[name], layer, tensors, _in_features(tensors, layer, key_prefix))
        keys = [k for k in tensors if k.startswith(layer + ".") and "." not in k[len(layer) + 1:]]
        owned.update(keys)
        block, layers, size = by_format.get(name, (0, 0, 0))
        by_format[name] = (block + bool(BLOCK_LINEAR.search(layer)), layers + 1,
                           size + sum(tensors[k].data_offsets[1] - tensors[k].data_offsets[0] for k in keys))
    formats = tuple(sorted((FormatUse(name, *counts) for name, counts in by_format.items()),
                           key=lambda use: (-use.block_linears, -use.layers, use.format)))
    rest = {}
    for name, entry in tensors.items():
        if name not in owned and not name.endswith((".comfy_quant", "scaled_fp8")) and entry.numel:
            dtype = SAFETENSORS_DTYPES[entry.dtype].name
            rest[dtype] = rest.get(dtype, 0) + entry.numel
    block_linears = sum(1 for n in tensors if n.endswith(".weight") and BLOCK_LINEAR.search(n[:-len(".weight")]))
    total = sum(entry.data_offsets[1] - entry.data_offsets[0] for entry in tensors.values())
    return QuantizationInfo(tuple(encodings), formats, block_linears, max(rest, key=rest.get) if rest else None,
                            total, problems)


def _metadata_layers(raw, tensors, key_prefix, problems):
    """{layer key as the file names it: format} from `_quantization_metadata`, problems for what ComfyUI rejects."""
    try:
        parsed = json.loads(raw)
        layers = parsed["layers"]
        if not isinstance(layers, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        problems.append("the _quantization_metadata header entry is not JSON with a \"layers\" map, so ComfyUI "
                        "cannot read it")
        return {}
    found = {}
    for layer, conf in layers.items():
        name = conf.get("format") if isinstance(conf, dict) else None
        if name not in QUANT_FORMATS:
            problems.append(f"layer {layer}: format {name!r} is not one ComfyUI knows "
                            f"(it knows {', '.join(QUANT_FORMATS)})")
            continue
        key = layer if layer + ".weight" in tensors or not key_prefix else key_prefix + layer
        found[key] = name
    return found


def _in_features(tensors, layer, key_prefix):
    """A block linear's input width from the model's shapes (dim, or ffn_dim for ffn.2); None elsewhere."""
    match = BLOCK_LINEAR.search(layer)
    modulation = tensors.get(key_prefix + "head.modulation")
    if match is None or modulation is None:
        return None
    if layer.endswith("ffn.2"):
        ffn_in = tensors.get(f"{key_prefix}blocks.{match.group(1)}.ffn.0.weight")
        return ffn_in.shape[0] if ffn_in is not None else None
    return modulation.shape[-1]


def _storage_problems(fmt, layer, tensors, in_features):
    weight = tensors[layer + ".weight"]
    problems = []
    if weight.dtype not in fmt.weight_dtypes:
        problems.append(f"layer {layer} is declared {fmt.name}, but its weight is stored as {weight.dtype}, which "
                        f"cannot hold {fmt.name} (it needs {' or '.join(fmt.weight_dtypes)})")
    elif fmt.packed_in_half and in_features and weight.shape[-1:] != (in_features // 2,):
        problems.append(f"layer {layer} is declared {fmt.name}, which packs two values a byte, so its weight's "
                        f"last dim must be {in_features // 2} (half of {in_features} inputs), but it is "
                        f"{list(weight.shape)}")
    for suffix, dtypes in fmt.scales:
        scale = tensors.get(f"{layer}.{suffix}")
        if scale is None:
            problems.append(f"layer {layer} is declared {fmt.name} but has no {layer}.{suffix}")
        elif scale.dtype not in dtypes:
            problems.append(f"layer {layer} is declared {fmt.name}, but its {suffix} is stored as {scale.dtype} "
                            f"(it needs {' or '.join(dtypes)})")
    return problems

