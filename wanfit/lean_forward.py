"""Lean WAN block forward: the core's own block arithmetic over token chunks.

ComfyUI's WanAttentionBlock keeps several full-size tensors alive at once: the modulated input,
q and k, RoPE's fp32 copies of k, the FFN's up-projection and GELU outputs (2 x 2.7 hidden states
for A14B, 2 x 4.7 for TI2V-5B). Activation memory is what an offload plan cannot stream away, so
it sets the smallest card a job runs on. This module replays the block of each supported core
(read from its code, `replay_for_running_core`) with the same operations in the same order, but:

- q, k and v are filled chunk by chunk into their own buffers; the modulated norm is recomputed
  per chunk (elementwise, cheap) instead of held at full size, and RoPE runs on each chunk;
- the attention itself is one call of the function the stock block calls
  (comfy.ldm.modules.attention.optimized_attention, so a WanFit sage override still applies);
- the output projection, the cross-attention queries and the FFN run over token chunks, and the
  residual updates go in place into a buffer this block owns (never into the caller's tensor);
- each Linear weight is cast once per block (comfy.ops.cast_bias_weight, the cast ComfyUI's ops do
  on use for streamed, fp8 and LoRA-patched weights), then used by every chunk with F.linear;
- a layer on the quantized-matmul path is called per chunk; where it takes its activation scale from
  the whole call (nvfp4 without a stored input_scale: `quantizes_input_per_call`), each chunk carries one
  extra row holding every input column's largest |value| over the sequence, so every chunk is
  quantized with the scale of the core's one call (`_Linear.cover`: one extra pass over that layer's
  input; for the FFN down-projection that is the up-projection once more).

The peak inside a block is the attention call: the block input, q, k, v and the attention output,
5 hidden states, against 9-13.5 for the stock block (docs/benchmarks.md).

It is installed per model on a clone, through the block-replacement hook both cores' WanModel
honours: transformer_options["patches_replace"]["dit"][("double_block", i)].
"""

from dataclasses import dataclass
import hashlib
import inspect
import logging
import math

import torch

from . import replay_check
from .core import format_version, parse_version, running_core_version
from .errors import InvalidInputError, WanFitError
from .plan.types import plan_field
from .plan.footprint import LEAN_AUTO_CHUNKS, LEAN_AUTO_MIN_CHUNK_TOKENS, lean_auto_chunk_tokens

log = logging.getLogger("wanfit")

PATCH_NAME = "dit"
BLOCK_NAME = "double_block"


class LeanForwardError(WanFitError):
    """The lean forward cannot be installed on, or run with, this model or core."""


@dataclass(frozen=True)
class CoreReplay:
    """What the running core's WanAttentionBlock does, as far as the replay must know.

    Read from the core's own code (`replay_for_running_core`), never from a version table: the
    features are hints that pick the replay's variant, and the check against the core's own block
    (`check_against_core`) decides whether the replay runs at all.
    """

    core: str  # the running core's name (core.running_core_version), for check keys and reports
    block_patches: bool  # attn1_patch / attn2_patch inside the block (0.11 on)
    fused_ffn_activation: bool  # FFN down-projection through comfy.ops.linear_input_act where the block's ffn is WanFeedForward (0.31 on)
    offloadable_casts: bool  # cast_bias_weight(offloadable=True) + uncast_bias_weight (dynamic-VRAM era)
    # what cast_bias_weight takes of (compute_dtype, want_requant): 0.12 added the first, 0.16 the second; the
    # quantized layers' own cast passes them where they exist
    cast_keywords: tuple = ()


def _source(function):
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None


def block_source_fingerprint():
    """sha256 over the source of the core's functions the replay reproduces (reports name it: a block
    source no release in the test matrix had is worth knowing when a check fails)."""
    import comfy.ldm.wan.model as wan

    parts = [wan.WanAttentionBlock.forward, wan.WanSelfAttention.forward, wan.WanT2VCrossAttention.forward,
             wan.repeat_e]
    if hasattr(wan, "WanFeedForward"):
        parts.append(wan.WanFeedForward.forward)
    digest = hashlib.sha256()
    for function in parts:
        digest.update((_source(function) or "").encode("utf-8"))
    return digest.hexdigest()


def wan_module():
    """comfy.ldm.wan.model of the running core, or LeanForwardError saying it does not import."""
    try:
        import comfy.ldm.wan.model as wan
        import comfy.ops  # noqa: F401
    except Exception as error:  # noqa: BLE001 - ImportError, or a dependency of the module that moved
        raise LeanForwardError(
            f"this ComfyUI's WAN module (comfy.ldm.wan.model) does not import ({type(error).__name__}: {error}), "
            "so there is no WAN block to replay. Fix: set WanFit Lean Forward's mode to auto or off, and check "
            "that ComfyUI itself loads WAN models.") from error
    return wan


def replay_for_running_core(core_version=None):
    """The replay variant for the ComfyUI imported in this process, read from its code.

    core_version ((0, 45, 0) or "0.45.0") names the core in keys and reports; None reads the running core."""
    wan = wan_module()
    import comfy.ops

    if core_version is None:
        core = running_core_version()
    else:
        core = str(core_version) if isinstance(core_version, str) else format_version(core_version)
    self_attention = _source(wan.WanSelfAttention.forward)
    block_patches = self_attention is None or "attn1_patch" in self_attention
    feed_forward = getattr(wan, "WanFeedForward", None)
    fused = feed_forward is not None and "linear_input_act" in (_source(feed_forward.forward) or "linear_input_act")
    cast_parameters = inspect.signature(comfy.ops.cast_bias_weight).parameters
    offloadable = "offloadable" in cast_parameters and hasattr(comfy.ops, "uncast_bias_weight")
    return CoreReplay(core, block_patches=block_patches, fused_ffn_activation=fused,
                      offloadable_casts=offloadable,
                      cast_keywords=tuple(name for name in ("compute_dtype", "want_requant") if name in cast_parameters))


# --- chunk sizes ----------------------------------------------------------------


def auto_chunk_tokens(tokens):
    """1/LEAN_AUTO_CHUNKS of the sequence, at least LEAN_AUTO_MIN_CHUNK_TOKENS (wanfit.plan.footprint)."""
    return lean_auto_chunk_tokens(tokens)


def validate_chunk_setting(chunk_tokens):
    """'auto' or a whole number >= 1 (the token count is checked when a job runs)."""
    if chunk_tokens == "auto":
        return chunk_tokens
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise InvalidInputError("chunk_tokens", chunk_tokens, "'auto' or a whole number of tokens >= 1",
                                "use auto (the plan's or 1/8 of the sequence) or a size such as 4096")
    return chunk_tokens


def resolve_chunk_tokens(chunk_tokens, tokens):
    if chunk_tokens == "auto":
        return auto_chunk_tokens(tokens)
    if chunk_tokens > tokens:
        raise InvalidInputError("chunk_tokens", chunk_tokens,
                                f"at most the {tokens} tokens of this job's sequence",
                                "use auto, or a chunk size no larger than the sequence")
    return chunk_tokens


# --- one Linear, its weight cast once for all chunks -------------------------------------


def _qualname(function):
    return getattr(function, "__qualname__", "")


def _closure_value(function, name, default=None):
    code = getattr(function, "__code__", None)
    if code is None or function.__closure__ is None or name not in code.co_freevars:
        return default
    return function.__closure__[code.co_freevars.index(name)].cell_contents


def linear_path(module):
    """How the core's op computes this Linear: 'standard' (cast_bias_weight + F.linear),
    'scaled_fp8' (0.3.64 scaled fp8 without fp8 matmul: cast, times the scale), 'mixed_cast'
    (0.33 mixed-precision op on its dequantizing path) or 'module' (anything else: the module is
    called per chunk, exact, with its weight cast per chunk)."""
    import comfy.ops

    base = comfy.ops.disable_weight_init.Linear
    cls = type(module)
    if getattr(cls, "forward", None) is base.forward:
        cast_fn = getattr(cls, "forward_comfy_cast_weights", None)
        if cast_fn is base.forward_comfy_cast_weights:
            return "standard"
        if _qualname(cast_fn).startswith("scaled_fp8_ops.") and _closure_value(cast_fn, "fp8_matrix_mult") is False:
            return "scaled_fp8"
        return "module"
    if _qualname(getattr(cls, "forward", None)).startswith("mixed_precision_ops."):
        if getattr(module, "pre_quant_scale", None) is not None:
            return "module"
        uses_quantized = (getattr(module, "layout_type", None) is not None and not module._full_precision_mm
                          and not getattr(module, "comfy_force_cast_weights", False)
                          and len(module.weight_function) == 0 and len(module.bias_function) == 0)
        return "module" if uses_quantized else "mixed_cast"
    return "module"


def uses_quantized_matmul(module):
    """True where a mixed-precision op (0.33 on) multiplies in its quantized format: its weight is
    quantized and nothing (a disabled format, a LoRA patch, a forced cast) sends it to the dequantizing path."""
    return (_qualname(getattr(type(module), "forward", None)).startswith("mixed_precision_ops.")
            and getattr(module, "layout_type", None) is not None and not getattr(module, "_full_precision_mm", True)
            and not getattr(module, "comfy_force_cast_weights", False)
            and len(getattr(module, "weight_function", ())) == 0 and len(getattr(module, "bias_function", ())) == 0)


def quant_format(module):
    """The layer's quantized format as the core names it ('nvfp4', 'float8_e4m3fn', ...), else None."""
    return getattr(module, "quant_format", None) if getattr(module, "layout_type", None) is not None else None


_per_call_layouts = {}  # (layout, dtype, device type) -> whether one row's quantization depends on the others


def layout_scales_per_call(layout, dtype, device):
    """Whether the core's `layout` quantizes a row differently when other rows come with it (nvfp4 takes its
    tensor scale from the whole call's input when no input_scale is given; fp8 without one uses 1, mxfp8
    scales each row's blocks alone). Asked of the core's own QuantizedTensor.from_float on two rows, once per
    process: not a table of formats. A probe that raises answers True (the self-check then decides)."""
    key = (layout, dtype, torch.device(device).type)
    if key not in _per_call_layouts:
        try:
            from comfy.quant_ops import QuantizedTensor

            rows = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
            rows[1] *= 64  # the second row holds the call's largest values
            rows = rows.to(device=device, dtype=dtype)
            together = QuantizedTensor.from_float(rows, layout).dequantize()[:1]
            alone = QuantizedTensor.from_float(rows[:1].clone(), layout).dequantize()[:1]
            _per_call_layouts[key] = not torch.equal(together.float(), alone.float())
        except Exception:  # noqa: BLE001 - a layout this probe cannot drive: treat it as per call
            _per_call_layouts[key] = True
    return _per_call_layouts[key]


def quantizes_input_per_call(module, dtype, device):
    """True where this layer quantizes its input with a scale read from the whole call's input: chunking
    its input would give each chunk its own scale (nvfp4 without a stored input_scale)."""
    if not uses_quantized_matmul(module) or getattr(module, "input_scale", None) is not None:
        return False
    try:
        from comfy.quant_ops import QUANT_ALGOS
    except ImportError:
        return False
    if not QUANT_ALGOS.get(quant_format(module), {}).get("quantize_input", True):
        return False  # weight-only formats (int8_tensorwise) never quantize the activations
    return layout_scales_per_call(module.layout_type, dtype, device)


class _Linear:
    """A Linear applied to chunks: the weight is cast once (on the first chunk) and kept until close().

    ComfyUI 0.33 casts streamed weights into per-stream scratch buffers that the next cast may
    reuse; a weight kept across other casts is therefore copied out of that buffer and the buffer
    released at once (one weight-size copy, only for streamed weights)."""

    def __init__(self, module, replay, full_input_numel):
        self.module = module
        self.replay = replay
        self.full_input_numel = full_input_numel
        self.path = linear_path(module)
        self.weight = self.bias = None
        self.input_scale = None
        self.extremes = None  # per input column, the sequence's largest |value| (cover())
        self._ready = False

    def cover(self, inputs, spans, like):
        """Where the layer takes its activation scale from the whole call (quantizes_input_per_call), read
        each input column's largest |value| over the sequence first (inputs(start, stop) is recomputed, one
        extra pass); each chunk is then called with that row appended, so its per-call scale is the whole
        sequence's and every token is quantized as in the core's one call (the extra output row is dropped)."""
        if self.path != "module" or len(spans) < 2 or not quantizes_input_per_call(self.module, like.dtype,
                                                                                    like.device):
            return
        extremes = None
        for start, stop in spans:
            piece = inputs(start, stop)
            column = piece.reshape(-1, piece.shape[-1]).abs().amax(dim=0)
            extremes = column if extremes is None else torch.maximum(extremes, column)
            del piece
        self.extremes = extremes

    def _prepare(self, like):
        import comfy.ops

        module = self.module
        self._ready = True
        if self.path == "module":
            return
        run_every_op = getattr(comfy.ops, "run_every_op", None)
        if run_every_op is not None:
            run_every_op()
        needs_cast = (self.path != "standard" or module.comfy_cast_weights or len(module.weight_function) > 0
                      or len(module.bias_function) > 0)
        if not needs_cast:
            self.weight, self.bias = module.weight, module.bias
            return
        if self.replay.offloadable_casts:
            kwargs = {"offloadable": True}
            if self.path == "mixed_cast":
                wanted = {"compute_dtype": like.dtype, "want_requant": False}
                kwargs.update({name: wanted[name] for name in self.replay.cast_keywords})
            weight, bias, offload = comfy.ops.cast_bias_weight(module, like, **kwargs)
            shared = offload is not None and (offload[0] is not None or hasattr(module, "_v"))
            if shared:
                own = (module.weight, getattr(module, "_v_weight", None))
                weight = weight if any(weight is t for t in own) else weight.clone()
                if bias is not None and not any(bias is t for t in (module.bias, getattr(module, "_v_bias", None))):
                    bias = bias.clone()
            comfy.ops.uncast_bias_weight(module, weight, bias, offload)
        else:
            weight, bias = comfy.ops.cast_bias_weight(module, like)
        if self.path == "scaled_fp8":
            scale = module.scale_weight.to(device=weight.device, dtype=weight.dtype)
            # the core picks by the whole input's size: scale the weight when it is the smaller tensor
            if weight.numel() < self.full_input_numel:
                weight = weight * scale
            else:
                self.input_scale = scale
        self.weight, self.bias = weight, bias

    def __call__(self, chunk):
        if not self._ready:
            self._prepare(chunk)
        if self.path == "module":
            if self.extremes is None:
                return self.module(chunk)
            rows = torch.cat([chunk.reshape(-1, chunk.shape[-1]), self.extremes.unsqueeze(0)])
            return self.module(rows)[:-1].reshape(*chunk.shape[:-1], -1)
        if self.input_scale is not None:
            chunk = chunk * self.input_scale
        return torch.nn.functional.linear(chunk, self.weight, self.bias)

    def close(self):
        self.weight = self.bias = self.input_scale = self.extremes = None


# --- the block ------------------------------------------------------------------------


def modulation_rows(e, tokens, start, stop):
    """repeat_e(e, x)[:, start:stop] of comfy/ldm/wan/model.py without the full-size repeat (public: the host
    tier compares it with the core's own repeat_e)."""
    frames = e.size(1)
    if frames <= 1:
        return e
    repeats = tokens // frames
    if repeats == 1:
        if frames != tokens:
            raise LeanForwardError(f"modulation has {frames} rows for {tokens} tokens: the stock block cannot "
                                   "broadcast it either")
        return e[:, start:stop]
    step = repeats if repeats * frames == tokens else repeats + 1
    index = torch.arange(start, stop, device=e.device) // step
    return e.index_select(1, index)


def _spans(tokens, chunk):
    return [(start, min(start + chunk, tokens)) for start in range(0, tokens, chunk)]


def _buffer_like(piece, tokens):
    shape = (piece.shape[0], tokens) + tuple(piece.shape[2:])
    return torch.empty(shape, dtype=piece.dtype, device=piece.device)


def lean_block_forward(block, x, e, freqs, context, transformer_options, replay, chunk_tokens):
    """WanAttentionBlock.forward of the core `replay` describes, over token chunks. Returns the new x."""
    import comfy.ldm.wan.model as wan
    import comfy.model_management
    import comfy.ops

    batch, tokens, _ = x.shape
    chunk = resolve_chunk_tokens(chunk_tokens, tokens)
    spans = _spans(tokens, chunk)
    patches = transformer_options.get("patches", {}) if replay.block_patches else {}
    attention = wan.optimized_attention
    rope = wan.apply_rope1

    modulation = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    if e.ndim < 4:
        e = (modulation + e).chunk(6, dim=1)
    else:
        e = (modulation.unsqueeze(0) + e).unbind(2)
    del modulation

    def modulated(norm, shift, scale, start, stop):
        part = x_now[:, start:stop]
        return torch.addcmul(modulation_rows(shift, tokens, start, stop), norm(part),
                             1 + modulation_rows(scale, tokens, start, stop))

    def linear(module):
        return _Linear(module, replay, batch * tokens * module.in_features)

    def fill(module, inputs, post=None):
        """One buffer [B, tokens, ...] = post(module(inputs(start, stop))) chunk by chunk, one cast."""
        layer = linear(module)
        out = None
        try:
            layer.cover(inputs, spans, x)
            for start, stop in spans:
                piece = layer(inputs(start, stop))
                if post is not None:
                    piece = post(piece, start, stop)
                if out is None:
                    out = _buffer_like(piece, tokens)
                out[:, start:stop] = piece
                del piece
        finally:
            layer.close()
        return out

    # --- self-attention: q, k with RoPE, and v, each into its own buffer -----------------
    x_now = x
    attn = block.self_attn
    heads, head_dim = attn.num_heads, attn.head_dim

    def self_input(start, stop):
        return modulated(block.norm1, e[0], e[1], start, stop)

    def qk_post(norm):
        def post(piece, start, stop):
            piece = norm(piece).view(batch, stop - start, heads, head_dim)
            return rope(piece, freqs[:, start:stop])
        return post

    q = fill(attn.q, self_input, qk_post(attn.norm_q))
    k = fill(attn.k, self_input, qk_post(attn.norm_k))
    v = fill(attn.v, self_input)
    out = attention(q.view(batch, tokens, heads * head_dim), k.view(batch, tokens, heads * head_dim),
                    v.view(batch, tokens, heads * head_dim), heads=heads, transformer_options=transformer_options)
    del v
    if "attn1_patch" in patches:
        for patch in patches["attn1_patch"]:
            out = patch({"x": out, "q": q, "k": k, "transformer_options": transformer_options})
    del q, k

    # output projection and the first residual, into a buffer this block owns
    x_own = None
    layer = linear(attn.o)
    try:
        layer.cover(lambda start, stop: out[:, start:stop], spans, x)
        for start, stop in spans:
            piece = torch.addcmul(x[:, start:stop], layer(out[:, start:stop]), modulation_rows(e[2], tokens, start, stop))
            if x_own is None:
                x_own = _buffer_like(piece, tokens)
            x_own[:, start:stop] = piece
            del piece
    finally:
        layer.close()
    del out
    x_now = x_own

    # --- cross-attention: queries over chunks; k, v from the (short) text context ---------
    cross = block.cross_attn
    k_text = cross.norm_k(cross.k(context))
    v_text = cross.v(context)
    q = fill(cross.q, lambda start, stop: block.norm3(x_now[:, start:stop]),
             lambda piece, start, stop: cross.norm_q(piece))
    out = attention(q, k_text, v_text, heads=cross.num_heads, transformer_options=transformer_options)
    del q, k_text, v_text
    layer = linear(cross.o)
    try:
        layer.cover(lambda start, stop: out[:, start:stop], spans, x)
        for start, stop in spans:
            x_now[:, start:stop] += layer(out[:, start:stop])
    finally:
        layer.close()
    del out

    if "attn2_patch" in patches:
        for patch in patches["attn2_patch"]:
            x_now = patch({"x": x_now, "transformer_options": transformer_options})
        # a patch may keep what it returned: the FFN residual goes into a fresh buffer
        x_ffn = torch.empty_like(x_now, memory_format=torch.contiguous_format)
    else:
        x_ffn = x_now

    # --- FFN over chunks: both matrices cast once, the intermediate never full size -------
    up_module, activation, down_module = block.ffn[0], block.ffn[1], block.ffn[2]
    up, down = linear(up_module), linear(down_module)
    feed_forward = getattr(wan, "WanFeedForward", None)
    fused = replay.fused_ffn_activation and feed_forward is not None and isinstance(block.ffn, feed_forward)
    eager_activation = comfy.ops.INPUT_ACT_EAGER["gelu_tanh"] if fused else activation
    try:
        up.cover(lambda start, stop: modulated(block.norm2, e[3], e[4], start, stop), spans, x)
        down.cover(lambda start, stop: eager_activation(up(modulated(block.norm2, e[3], e[4], start, stop))),
                   spans, x)
        for start, stop in spans:
            hidden = up(modulated(block.norm2, e[3], e[4], start, stop))
            if fused:
                if down.path == "module" and down.extremes is None:
                    hidden = comfy.ops.linear_input_act(down_module, hidden, "gelu_tanh")
                else:
                    hidden = down(comfy.ops.INPUT_ACT_EAGER["gelu_tanh"](hidden))
            else:
                hidden = down(activation(hidden))
            scale = modulation_rows(e[5], tokens, start, stop)
            if x_ffn is x_now:
                x_ffn[:, start:stop].addcmul_(hidden, scale)
            else:
                x_ffn[:, start:stop] = torch.addcmul(x_now[:, start:stop], hidden, scale)
            del hidden
    finally:
        up.close()
        down.close()
    return x_ffn


# --- the check against the core's own block ----------------------------------------------

CHECK_TOKENS = 256  # tokens of the real input the check runs both blocks on
CHECK_CHUNKS = 3  # the lean side runs them in this many chunks, so the chunk seams are checked too
FP32_TOLERANCE = 1e-5  # max |lean - stock| relative to max |stock|
# bf16 and fp16: the replay does the core's operations in the core's order, so it is exact (0) there too;
# the tolerance only has to catch a real drift: a 0.3 % one (a per-chunk activation scale gave 0.36-0.53 %
# at the model's output) must fail, with a margin of 3 (a rounding step is 0.78 % in bf16, 0.1 % in fp16).
DRIFT_CAUGHT = 3e-3
HALF_TOLERANCE = DRIFT_CAUGHT / 3

REPLAY = "lean forward"  # the replay's name in replay_check keys and reports
AGAINST = "the core's own block"
CORE_PATH = "ComfyUI's own blocks"  # what mode auto runs where the check failed


def tolerance_for(dtype):
    """The check's bound on max |lean - core| / max |core|: 1e-5 in fp32 and fp64, 1e-3 in narrower dtypes."""
    return FP32_TOLERANCE if dtype in (torch.float32, torch.float64) else HALF_TOLERANCE


def block_linears(block):
    """The Linears of a WanAttentionBlock whose formats change its arithmetic."""
    return [block.self_attn.q, block.self_attn.k, block.self_attn.v, block.self_attn.o, block.cross_attn.q,
            block.cross_attn.k, block.cross_attn.v, block.cross_attn.o, block.ffn[0], block.ffn[2]]


def layer_arithmetic(module):
    """One Linear's share of the check key: its format (the core's quantized format, a GGUF tensor type,
    else the weight dtype), whether it carries a stored input_scale, and how the core computes it."""
    weight = getattr(module, "weight", None)
    tensor_type = getattr(getattr(weight, "tensor_type", None), "name", None)  # ComfyUI-GGUF's GGMLTensor
    name = quant_format(module) or tensor_type or str(getattr(weight, "dtype", None)).replace("torch.", "")
    if getattr(module, "input_scale", None) is not None:
        name += " with input_scale"
    if uses_quantized_matmul(module):
        return f"{name} (quantized matmul)"
    return name


def check_subject(model_class, block, dtype, device):
    """(key without the core, report text): everything that changes the block's arithmetic, the set of its
    layers' formats included (a check passed on an fp8 model says nothing of an nvfp4 one)."""
    weight = str(getattr(getattr(block.self_attn.q, "weight", None), "dtype", None)).replace("torch.", "")
    dtype = str(dtype).replace("torch.", "")
    formats = tuple(sorted({layer_arithmetic(module) for module in block_linears(block)}))
    key = (model_class, dtype, weight, type(block.self_attn.q).__qualname__, str(device), formats)
    return key, f"{model_class}, {dtype} compute on {' + '.join(formats)} weights, {device}"


def _token_rows(e, tokens, count):
    """The modulation rows repeat_e gives the first `count` tokens (e: [B, rows, 6, C])."""
    rows = e.size(1)
    if rows <= 1:
        return e
    return modulation_rows(e, tokens, 0, count)


def check_against_core(block, args, original_block, replay, model_class, tokens=CHECK_TOKENS, on_new=None):
    """The process's replay_check.ReplayCheck of the lean block against the core's own `original_block`.

    On first use both run on the first `tokens` tokens of the real input: same module, weights, dtype,
    device and transformer_options as the run; the lean side in CHECK_CHUNKS chunks. Never raises.
    """
    x = args["img"]
    key, subject = check_subject(model_class, block, x.dtype, x.device)
    tolerance = tolerance_for(x.dtype)

    def compare():
        count = min(x.shape[1], tokens)
        e = args["vec"]
        if e.ndim == 4:
            e = _token_rows(e[:1], x.shape[1], count)
        else:
            e = e[:1]
        pe = args["pe"]
        if pe is not None:
            pe = pe[:1, :count]
        sample = x[:1, :count].clone()
        trial = dict(args, img=sample.clone(), vec=e, pe=pe, txt=args["txt"][:1])
        stock = original_block(trial)["img"]
        lean = lean_block_forward(block, sample.clone(), e, pe, trial["txt"], args["transformer_options"], replay,
                                  max(1, math.ceil(count / CHECK_CHUNKS)))
        if stock.shape != lean.shape:
            return math.inf, f"shapes differ (core {tuple(stock.shape)}, lean {tuple(lean.shape)})", None
        stock, lean = stock.float(), lean.float()
        scale = stock.abs().max().item()
        difference = (lean - stock).abs().max().item() / max(scale, 1e-30)
        if not math.isfinite(difference) and torch.equal(stock, lean):
            difference = 0.0
        verdict = "<=" if difference <= tolerance else "exceeds the tolerance"
        return difference, f"{count} tokens, max relative difference {difference:.3g} {verdict} {tolerance:.2g}", None

    return replay_check.check_once(REPLAY, AGAINST, subject, key, tolerance, compare, core=replay.core,
                                     on_new=on_new)


class LeanBlock:
    """The callable ComfyUI's WanModel.forward_orig calls instead of block i:
    patch(args, {"original_block": block_wrap}) -> {"img": x}.

    Before the first lean run of a (core, model class, dtype, device, layer formats) in this process, the lean block is
    compared with the core's own block on the real input (check_against_core). Failed: in mode auto
    every block runs the core's own code and the report says why; in mode on the run stops with
    replay_check.ReplayMismatchError (replay_check.follow)."""

    def __init__(self, index, replay, chunk_tokens, model_class="WanModel", mode="auto", notify=None, checked=True):
        self.index = index
        self.checked = checked  # False only for measurements that must see the lean block alone (bench/)
        self.replay = replay
        self.chunk_tokens = chunk_tokens
        self.model_class = model_class
        self.mode = mode
        self.notify = notify  # called once per new check with its ReplayCheck (the node shows it)
        self.calls = 0  # blocks run lean (tests and reports read it)
        self.core_calls = 0  # blocks handed to the core's own code after a failed check
        self.check = None  # the ReplayCheck this block followed last

    # ModelPatcher.clone() deep-copies model_options on 0.3.64; the patch holds no tensors.
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __call__(self, args, extra):
        original = extra["original_block"]
        block = _closure_value(original, "block")
        if block is None:
            raise LeanForwardError(f"block {self.index}: ComfyUI's original_block carries no WAN block; this "
                                   "core's forward_orig is not the one the lean forward was checked against.")
        if not self.checked or args["img"].device.type == "meta":  # a meta tensor has no values to compare
            return self._lean(block, args)
        check = check_against_core(block, args, original, self.replay, self.model_class, on_new=self.notify)
        self.check = check
        if not replay_check.follow(check, self.mode, "WanFit Lean Forward", CORE_PATH):
            self.core_calls += 1
            return original(args)
        return self._lean(block, args)

    def _lean(self, block, args):
        x = lean_block_forward(block, args["img"], args["vec"], args["pe"], args["txt"],
                               args["transformer_options"], self.replay, self.chunk_tokens)
        self.calls += 1
        return {"img": x}


# --- installing it on a model ----------------------------------------------------------


def diffusion_model_of(model_patcher):
    model = getattr(model_patcher, "model", None)
    return model, getattr(model, "diffusion_model", None)


def check_wan_model(model_patcher):
    """The WanModel inside a ComfyUI MODEL, or a clear error naming what it is instead."""
    wan = wan_module()

    base_model, diffusion_model = diffusion_model_of(model_patcher)
    if not isinstance(diffusion_model, wan.WanModel):
        model_type = type(base_model).__name__ if base_model is not None else type(model_patcher).__name__
        inner = type(diffusion_model).__name__ if diffusion_model is not None else "no diffusion model"
        raise LeanForwardError(
            f"WanFit Lean Forward needs a WAN 2.2 model (TI2V-5B or an A14B expert); this MODEL is {model_type} "
            f"({inner}). Fix: connect the WAN diffusion model's loader to the lean forward.")
    blocks = getattr(diffusion_model, "blocks", [])
    for index, block in enumerate(blocks):
        if type(block) is not wan.WanAttentionBlock:
            raise LeanForwardError(
                f"block {index} of this {type(diffusion_model).__name__} is a {type(block).__name__}, not the "
                "WanAttentionBlock the lean forward reproduces. Fix: run this model without the lean forward.")
        if type(block.cross_attn) is not wan.WanT2VCrossAttention:
            raise LeanForwardError(
                f"block {index} has {type(block.cross_attn).__name__} (image cross-attention of WAN 2.1 I2V/FLF); "
                "WAN 2.2 models use text cross-attention only, which is what the lean forward reproduces. Fix: run "
                "this model without the lean forward.")
    return diffusion_model


def installed_lean_blocks(model_patcher):
    options = getattr(model_patcher, "model_options", {}) or {}
    replace = options.get("transformer_options", {}).get("patches_replace", {}).get(PATCH_NAME, {})
    return {key: patch for key, patch in replace.items() if isinstance(patch, LeanBlock)}


def _other_block_patches(model_patcher):
    options = getattr(model_patcher, "model_options", {}) or {}
    replace = options.get("transformer_options", {}).get("patches_replace", {}).get(PATCH_NAME, {})
    return sorted(str(key) for key, patch in replace.items() if not isinstance(patch, LeanBlock))


def patch_model_lean(model_patcher, chunk_tokens="auto", core_version=None, mode="auto", notify=None):
    """Return (patched clone, report STRING); the input model stays untouched.

    chunk_tokens: 'auto' or tokens per chunk (>= 1; checked against the sequence when a job runs).
    core_version: the ComfyUI core the model runs in; None reads the running core.
    mode: what a failed check against the core's own block does (replay_check.follow): auto runs the
    core's blocks, on stops the run. notify(check) is called with each new check's result.
    """
    if replay_check.validate_mode(mode) == "off":
        raise InvalidInputError("mode", mode, "auto or on", "mode off leaves the model unpatched: do not patch it")
    chunk_tokens = validate_chunk_setting(chunk_tokens)
    diffusion_model = check_wan_model(model_patcher)
    others = _other_block_patches(model_patcher)
    if others:
        raise LeanForwardError(
            f"this model already carries another block replacement ({', '.join(others[:4])}"
            f"{', ...' if len(others) > 4 else ''}) from another node; the lean forward replaces whole blocks and "
            "would silently override it. Fix: apply only one of the two block-replacing nodes to this model.")
    replay = replay_for_running_core(core_version)
    model_class = type(diffusion_model).__qualname__

    clone = model_patcher.clone()
    for index in range(len(diffusion_model.blocks)):
        clone.set_model_patch_replace(LeanBlock(index, replay, chunk_tokens, model_class, mode, notify),
                                      PATCH_NAME, BLOCK_NAME, index)
    chunk_text = (f"auto (1/{LEAN_AUTO_CHUNKS} of the sequence, at least {LEAN_AUTO_MIN_CHUNK_TOKENS} tokens)"
                  if chunk_tokens == "auto"
                  else f"{chunk_tokens} tokens")
    known = checks_for_model(model_patcher, diffusion_model, replay, model_class)
    if known and all(check.passed for check in known):
        checked = f"; {known[-1].describe()}"
    elif known:
        failed = next(check for check in known if not check.passed)
        checked = "; " + (replay_check.fallback_note(failed, CORE_PATH) if mode == "auto"
                          else f"{failed.describe()}: mode on stops the run")
    else:
        checked = (f"; checked against ComfyUI {replay.core}'s own block on the first step "
                   f"({'its own blocks run instead' if mode == 'auto' else 'mode on stops the run'} if they differ)")
    report = (f"Lean forward on {len(diffusion_model.blocks)} blocks, chunks {chunk_text}: activations peak at ~5 "
              f"hidden states instead of {stock_block_units(diffusion_model, replay.core):.1f}{checked}")
    log.info("WanFit lean forward: %s", report)
    return clone, report


def run_dtype_and_device(model_patcher, diffusion_model):
    """The compute dtype and device this model's blocks will run in (model_base casts the input to
    get_dtype_inference(); the patcher's load_device holds the blocks), as the check key names them."""
    base_model = getattr(model_patcher, "model", None)
    dtype = None
    if base_model is not None:
        dtype = getattr(base_model, "manual_cast_dtype", None) or getattr(diffusion_model, "dtype", None)
    device = getattr(model_patcher, "load_device", None)
    return dtype, device


def checks_for_model(model_patcher, diffusion_model, replay, model_class):
    """The process's checks this model's blocks will follow: keyed as the check cache is (check_subject on its
    first block, its compute dtype and device), so a report never quotes the check of another model."""
    dtype, device = run_dtype_and_device(model_patcher, diffusion_model)
    if dtype is None or device is None or not len(diffusion_model.blocks):
        return []
    key, _ = check_subject(model_class, diffusion_model.blocks[0], dtype, device)
    check = replay_check.find_check(REPLAY, replay.core, key)
    return [] if check is None else [check]


def apply_lean_forward(model_patcher, mode="auto", chunk_tokens=0, plan=None, notify=None):
    """WanFit Lean Forward's policy: (model, report STRING), the model patched or passed through.

    mode off passes the model through; auto with a plan patches only when the plan needs the lean
    forward, and a model or core it cannot take passes through with the reason; on patches or raises.
    chunk_tokens 0 takes the plan's chunk size, else auto.
    """
    replay_check.validate_mode(mode)
    if mode == "off":
        return model_patcher, "Lean forward off: ComfyUI's own blocks run (the model passes through unchanged)"
    if mode == "auto" and plan is not None and not plan_field(plan, "lean_forward"):
        return model_patcher, ("Lean forward not needed: the plan fits this job with ComfyUI's own blocks (the "
                               "model passes through unchanged; mode on forces the lean forward)")
    chunk = chunk_tokens if chunk_tokens > 0 else (plan_field(plan, "lean_chunk_tokens") or "auto")
    try:
        patched, report = patch_model_lean(model_patcher, chunk, mode=mode, notify=notify)
    except LeanForwardError as error:
        if mode != "auto":
            raise
        return model_patcher, ("Lean forward not applied, ComfyUI's own blocks run (the model passes through "
                               f"unchanged): {error}")
    if mode == "auto" and plan is not None:
        report += " (the plan needs it for this job to fit, or to keep more weights resident)"
    return patched, report


def lean_report(model_patcher):
    """After a run: whether the lean blocks ran or the core's own did, and the check behind it."""
    blocks = installed_lean_blocks(model_patcher)
    if not blocks:
        return ""
    lean_calls = sum(block.calls for block in blocks.values())
    core_calls = sum(block.core_calls for block in blocks.values())
    checks = {block.check.key: block.check for block in blocks.values() if block.check is not None}
    lines = [f"lean forward: {lean_calls} block calls lean, {core_calls} on ComfyUI's own blocks"]
    lines += [check.describe() for check in checks.values()]
    return "\n".join(lines)


def stock_block_units(diffusion_model, core):
    """The core's own block's activation peak in hidden states (the newest profile for a core without a version)."""
    from .plan import footprint as memory

    config = memory.WanTransformerConfig("model", dim=diffusion_model.dim, ffn_dim=diffusion_model.ffn_dim,
                                         num_layers=len(diffusion_model.blocks), num_heads=diffusion_model.num_heads,
                                         in_dim=diffusion_model.in_dim, out_dim=diffusion_model.out_dim)
    return memory.activation_hidden_units(config, parse_version(core))


def lean_transformer_options(num_blocks, core_version=None, chunk_tokens="auto", transformer_options=None,
                             mode="on", checked=True):
    """transformer_options with the lean blocks installed (bench and tests call WanModel directly;
    in mode on a failed check stops the forward; checked=False skips the check, for measurements
    of the lean block alone)."""
    replay = replay_for_running_core(core_version)
    options = dict(transformer_options or {})
    replace = dict(options.get("patches_replace", {}))
    blocks = dict(replace.get(PATCH_NAME, {}))
    for index in range(num_blocks):
        blocks[(BLOCK_NAME, index)] = LeanBlock(index, replay, validate_chunk_setting(chunk_tokens), mode=mode,
                                                checked=checked)
    replace[PATCH_NAME] = blocks
    options["patches_replace"] = replace
    return options
