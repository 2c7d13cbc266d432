"""Lean WAN block forward: the core's own block arithmetic over token chunks.

ComfyUI's WanAttentionBlock keeps several full-size tensors alive at once: the modulated input,
q and k, RoPE's fp32 copies of k, the FFN's up-projection and GELU outputs (2 x 2.7 hidden states
for A14B, 2 x 4.7 for TI2V-5B). Activation memory is what an offload plan cannot stream away, so
it sets the smallest card a job runs on. This module replays the block of each supported core
(`REPLAYS`) with the same operations in the same order, but:

- q, k and v are filled chunk by chunk into their own buffers; the modulated norm is recomputed
  per chunk (elementwise, cheap) instead of held at full size, and RoPE runs on each chunk;
- the attention itself is one call of the function the stock block calls
  (comfy.ldm.modules.attention.optimized_attention, so a WanFit sage override still applies);
- the output projection, the cross-attention queries and the FFN run over token chunks, and the
  residual updates go in place into a buffer this block owns (never into the caller's tensor);
- each Linear weight is cast once per block (comfy.ops.cast_bias_weight, the cast ComfyUI's ops do
  on use for streamed, fp8 and LoRA-patched weights), then used by every chunk with F.linear.

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

from .errors import InvalidInputError, WanFitError
from .memory import LEAN_AUTO_CHUNKS, LEAN_AUTO_MIN_CHUNK_TOKENS, lean_auto_chunk_tokens

log = logging.getLogger("wanfit")

PATCH_NAME = "dit"
BLOCK_NAME = "double_block"


class LeanForwardError(WanFitError):
    """The lean forward cannot be installed on, or run with, this model or core."""


@dataclass(frozen=True)
class CoreReplay:
    """What one core's WanAttentionBlock does, as far as the replay must know.

    fingerprint: sha256 of the source of the functions the replay reproduces (see
    `block_source_fingerprint`); a checkout whose code differs is refused, not replayed.
    """

    version: tuple
    fingerprint: str
    block_patches: bool  # attn1_patch / attn2_patch inside the block (0.33)
    fused_ffn_activation: bool  # FFN down-projection through comfy.ops.linear_input_act (0.33)
    offloadable_casts: bool  # cast_bias_weight(offloadable=True) + uncast_bias_weight (0.33)


REPLAYS = {
    (0, 3, 64): CoreReplay((0, 3, 64), "17d5889aa693150535e7b2221df47331894439779e4d0e2096a773c8cbe07e94",
                           block_patches=False, fused_ffn_activation=False, offloadable_casts=False),
    (0, 33, 0): CoreReplay((0, 33, 0), "572fbfe65ea57879d0a635d345fe2e00af181f96de096a3236c6242b7cad66eb",
                           block_patches=True, fused_ffn_activation=True, offloadable_casts=True),
}


def _format_version(version):
    return ".".join(str(part) for part in version)


def block_source_fingerprint():
    """sha256 over the source of the core's functions the replay reproduces."""
    import comfy.ldm.wan.model as wan

    parts = [wan.WanAttentionBlock.forward, wan.WanSelfAttention.forward, wan.WanT2VCrossAttention.forward,
             wan.repeat_e]
    if hasattr(wan, "WanFeedForward"):
        parts.append(wan.WanFeedForward.forward)
    digest = hashlib.sha256()
    for function in parts:
        digest.update(inspect.getsource(function).encode("utf-8"))
    return digest.hexdigest()


def replay_for(core_version, fingerprint=None):
    """The replay for a core version; refuses unknown cores and checkouts whose block code differs."""
    version = tuple(core_version)
    replay = REPLAYS.get(version)
    known = ", ".join(_format_version(v) for v in REPLAYS)
    if replay is None:
        raise LeanForwardError(
            f"WanFit Lean Forward replays the WAN block of ComfyUI {known}; this is ComfyUI "
            f"{_format_version(version)}, whose block it has not been checked against. Fix: run without the lean "
            "forward (remove the node or set the plan's lean forward off), or use a supported core.")
    if fingerprint is not None and fingerprint != replay.fingerprint:
        raise LeanForwardError(
            f"comfy/ldm/wan/model.py of this ComfyUI {_format_version(version)} differs from the released "
            f"{_format_version(version)} (block code fingerprint {fingerprint[:12]}, expected "
            f"{replay.fingerprint[:12]}): the lean forward would not reproduce it. Fix: restore the core's own "
            "comfy/ldm/wan/model.py, or run without the lean forward.")
    return replay


# --- chunk sizes ----------------------------------------------------------------


def auto_chunk_tokens(tokens):
    """1/LEAN_AUTO_CHUNKS of the sequence, at least LEAN_AUTO_MIN_CHUNK_TOKENS (wanfit.memory)."""
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


def _linear_path(module):
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


class _Linear:
    """A Linear applied to chunks: the weight is cast once (on the first chunk) and kept until close().

    ComfyUI 0.33 casts streamed weights into per-stream scratch buffers that the next cast may
    reuse; a weight kept across other casts is therefore copied out of that buffer and the buffer
    released at once (one weight-size copy, only for streamed weights)."""

    def __init__(self, module, replay, full_input_numel):
        self.module = module
        self.replay = replay
        self.full_input_numel = full_input_numel
        self.path = _linear_path(module)
        self.weight = self.bias = None
        self.input_scale = None
        self._release = None
        self._ready = False

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
                kwargs.update(compute_dtype=like.dtype, want_requant=False)
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
            return self.module(chunk)
        if self.input_scale is not None:
            chunk = chunk * self.input_scale
        return torch.nn.functional.linear(chunk, self.weight, self.bias)

    def close(self):
        self.weight = self.bias = self.input_scale = None


# --- the block ------------------------------------------------------------------------


def _rows(e, tokens, start, stop):
    """repeat_e(e, x)[:, start:stop] of comfy/ldm/wan/model.py without the full-size repeat."""
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
        return torch.addcmul(_rows(shift, tokens, start, stop), norm(part),
                             1 + _rows(scale, tokens, start, stop))

    def linear(module):
        return _Linear(module, replay, batch * tokens * module.in_features)

    def fill(module, inputs, post=None):
        """One buffer [B, tokens, ...] = post(module(inputs(start, stop))) chunk by chunk, one cast."""
        layer = linear(module)
        out = None
        try:
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
        for start, stop in spans:
            piece = torch.addcmul(x[:, start:stop], layer(out[:, start:stop]), _rows(e[2], tokens, start, stop))
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
    fused = replay.fused_ffn_activation
    try:
        for start, stop in spans:
            hidden = up(modulated(block.norm2, e[3], e[4], start, stop))
            if fused:
                if down.path == "module":
                    hidden = comfy.ops.linear_input_act(down_module, hidden, "gelu_tanh")
                else:
                    hidden = down(comfy.ops.INPUT_ACT_EAGER["gelu_tanh"](hidden))
            else:
                hidden = down(activation(hidden))
            scale = _rows(e[5], tokens, start, stop)
            if x_ffn is x_now:
                x_ffn[:, start:stop].addcmul_(hidden, scale)
            else:
                x_ffn[:, start:stop] = torch.addcmul(x_now[:, start:stop], hidden, scale)
            del hidden
    finally:
        up.close()
        down.close()
    return x_ffn


# --- installing it on a model ----------------------------------------------------------


class LeanBlock:
    """The callable ComfyUI's WanModel.forward_orig calls instead of block i:
    patch(args, {"original_block": block_wrap}) -> {"img": x}."""

    def __init__(self, index, replay, chunk_tokens):
        self.index = index
        self.replay = replay
        self.chunk_tokens = chunk_tokens
        self.calls = 0  # blocks run lean (tests and reports read it)

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
        x = lean_block_forward(block, args["img"], args["vec"], args["pe"], args["txt"],
                               args["transformer_options"], self.replay, self.chunk_tokens)
        self.calls += 1
        return {"img": x}


def diffusion_model_of(model_patcher):
    model = getattr(model_patcher, "model", None)
    return model, getattr(model, "diffusion_model", None)


def check_wan_model(model_patcher):
    """The WanModel inside a ComfyUI MODEL, or a clear error naming what it is instead."""
    import comfy.ldm.wan.model as wan

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


def patch_model_lean(model_patcher, chunk_tokens="auto", core_version=None):
    """Return (patched clone, report STRING); the input model stays untouched.

    chunk_tokens: 'auto' or tokens per chunk (>= 1; checked against the sequence when a job runs).
    core_version: the ComfyUI core the model runs in; None reads the running core.
    """
    chunk_tokens = validate_chunk_setting(chunk_tokens)
    diffusion_model = check_wan_model(model_patcher)
    others = _other_block_patches(model_patcher)
    if others:
        raise LeanForwardError(
            f"this model already carries another block replacement ({', '.join(others[:4])}"
            f"{', ...' if len(others) > 4 else ''}) from another node; the lean forward replaces whole blocks and "
            "would silently override it. Fix: apply only one of the two block-replacing nodes to this model.")
    if core_version is None:
        from .core import running_core

        core_version = running_core().version
    replay = replay_for(core_version, block_source_fingerprint())

    clone = model_patcher.clone()
    for index in range(len(diffusion_model.blocks)):
        clone.set_model_patch_replace(LeanBlock(index, replay, chunk_tokens), PATCH_NAME, BLOCK_NAME, index)
    chunk_text = (f"auto (1/{LEAN_AUTO_CHUNKS} of the sequence, at least {LEAN_AUTO_MIN_CHUNK_TOKENS} tokens)"
                  if chunk_tokens == "auto"
                  else f"{chunk_tokens} tokens")
    report = (f"Lean forward on {len(diffusion_model.blocks)} blocks (ComfyUI {_format_version(replay.version)} "
              f"block replayed), chunks {chunk_text}: activations peak at ~5 hidden states instead of "
              f"{stock_block_units(diffusion_model, replay.version):.1f}")
    log.info("WanFit lean forward: %s", report)
    return clone, report


def stock_block_units(diffusion_model, core_version):
    from . import memory

    config = memory.WanTransformerConfig("model", dim=diffusion_model.dim, ffn_dim=diffusion_model.ffn_dim,
                                         num_layers=len(diffusion_model.blocks), num_heads=diffusion_model.num_heads,
                                         in_dim=diffusion_model.in_dim, out_dim=diffusion_model.out_dim)
    return memory.activation_hidden_units(config, core_version)


def lean_transformer_options(num_blocks, core_version, chunk_tokens="auto", transformer_options=None):
    """transformer_options with the lean blocks installed (bench and tests call WanModel directly)."""
    replay = replay_for(core_version, block_source_fingerprint())
    options = dict(transformer_options or {})
    replace = dict(options.get("patches_replace", {}))
    blocks = dict(replace.get(PATCH_NAME, {}))
    for index in range(num_blocks):
        blocks[(BLOCK_NAME, index)] = LeanBlock(index, replay, validate_chunk_setting(chunk_tokens))
    replace[PATCH_NAME] = blocks
    options["patches_replace"] = replace
    return options


def chunk_count(tokens, chunk_tokens="auto"):
    return math.ceil(tokens / resolve_chunk_tokens(chunk_tokens, tokens))
