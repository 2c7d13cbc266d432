"""Peak activation memory of ComfyUI's own WAN forward at real sizes, simulated on the CPU.

    COMFYUI_PATH=~/ComfyUI-0.3.64 python bench/activation_peak.py            # all jobs, batch 1 and 2
    python bench/activation_peak.py --core-path ~/ComfyUI-0.33.0 --json out.json
    python bench/activation_peak.py --validate                               # meta == real CPU run, small size
    python bench/activation_peak.py --core-path ~/ComfyUI-0.33.0 --lean      # WanFit's lean block forward

How: the core's `WanModel` (comfy/ldm/wan/model.py, built with the core's comfy.ops) is
built at full size on the `meta` device, so no weight takes memory, and its forward runs at
the real token count under a TorchDispatchMode that adds each new output storage's bytes when
an op creates it and subtracts them in a weakref.finalize on the storage when it is freed.
The peak is the largest live total. Weights and inputs (latent, umT5 context, timestep) exist
before the count starts, so only activations count. Batch 2 is cond and uncond batched (CFG).

Two kernels are mapped to what a CUDA GPU runs, since their CPU / meta fallbacks allocate
differently:
- scaled_dot_product_attention -> the flash kernel: one output, laid out [B, L, H, D] as the
  CUDA kernel allocates it (so ComfyUI's transpose + reshape afterwards is a view), plus its
  fp32 log-sum-exp. The math fallback would build the tokens x tokens score matrix.
- rms_norm -> the fused kernel: one output (and its per-row fp32 rstd).
On 0.33, RoPE goes through comfy-kitchen (comfy.quant_ops.ck.apply_rope1). On a GPU it runs
the kitchen's CUDA kernel (one output of the input's shape and dtype) only with torch built for
CUDA 13+; below that ComfyUI turns the kitchen's CUDA backend off and its eager backend runs
(fp32 temporaries, as 0.3.64's own RoPE). --rope picks one; auto = what this torch would get.

`--lean` runs the same forward with WanFit's lean block forward installed (wanfit/lean_forward.py,
through the core's patches_replace["dit"][("double_block", i)] hook, chunk size auto) and predicts
with the lean activation model (memory.transformer_activation_bytes(..., lean_forward=True)).

`--validate` runs the same model at a small size twice - on meta, and on the CPU with real
random weights and real tensors, counting the same way - and checks the two peaks are
identical, so the meta simulation is the count a real run would give.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import weakref

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from wanfit.plan import footprint as memory  # noqa: E402
from wanfit.core import core_from_checkout  # noqa: E402

GIB = 2**30
TEXT_TOKENS = 512  # ComfyUI pads the umT5 context to 512 tokens

# name -> (transformer config, width, height, frames)
JOBS = {
    "5B 1280x704x121": (memory.TI2V_5B, 1280, 704, 121),
    "A14B 1280x720x81": (memory.T2V_A14B_EXPERT, 1280, 720, 81),
    "A14B 832x480x81": (memory.T2V_A14B_EXPERT, 832, 480, 81),
}
# Small enough for a real CPU run in seconds; head_dim 128 as in the real models. Two FFN widths,
# so that each of the two peaks is checked: FFN (ffn_dim 4 x dim) and self-attention with RoPE
# on k (ffn_dim = dim).
VALIDATION_CONFIGS = (
    memory.WanTransformerConfig("validation, FFN peak", dim=256, ffn_dim=1024, num_layers=2, num_heads=2,
                                in_dim=16, out_dim=16),
    memory.WanTransformerConfig("validation, attention peak", dim=256, ffn_dim=256, num_layers=2, num_heads=2,
                                in_dim=16, out_dim=16),
)
VALIDATION_VIDEO = (192, 128, 17)  # width, height, frames -> latent 5 x 16 x 24 -> 5 x 8 x 12 = 480 tokens
VALIDATION_LATENT = (5, 16, 24)
VALIDATION_LEAN_CHUNK_TOKENS = 60  # --lean --validate: 8 chunks of the 480 tokens (auto would take them whole)


# --- importing the core -------------------------------------------------------


def import_core(core_path):
    """Import the ComfyUI core at core_path with its own argument parser run on
    `--cpu --use-pytorch-cross-attention`: the CPU so nothing probes CUDA, and PyTorch's
    SDPA as optimized_attention, as a CUDA machine uses by default (on the CPU ComfyUI would
    pick sub-quadratic attention). Parsing the core's own parser gives every attribute the
    core's modules read (0.33's quant_ops reads some that an empty Namespace lacks)."""
    core_path = os.path.abspath(os.path.expanduser(core_path))
    if not os.path.isfile(os.path.join(core_path, "comfy", "ldm", "wan", "model.py")):
        raise SystemExit(f"No ComfyUI core at {core_path} (expected comfy/ldm/wan/model.py); pass --core-path "
                         "or set COMFYUI_PATH.")
    if core_path not in sys.path:
        sys.path.insert(0, core_path)
    import comfy.options  # noqa: F401
    import comfy.cli_args

    parsed = comfy.cli_args.parser.parse_args(["--cpu", "--use-pytorch-cross-attention"])
    vars(comfy.cli_args.args).update(vars(parsed))
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)
    import comfy.ops  # noqa: F401
    import comfy.ldm.wan.model  # noqa: F401

    return core_path


def core_version(core_path):
    """Read from the checkout's files (never executed), as the planner reads a core."""
    return core_from_checkout(core_path).version_text


def version_tuple(text):
    return tuple(int(part) for part in text.split(".")[:3])


# --- counting live storages ---------------------------------------------------


class LiveStorageCounter(TorchDispatchMode):
    """Adds every new output storage's nbytes at creation, subtracts them when the storage
    is freed (weakref.finalize on the untyped storage, whose Python object lives as long as
    the storage does). Aliases (views) of a counted storage are not counted again."""

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.allocated_bytes = 0  # everything ever created: the peak must be far below it
        self.peak_bytes = 0
        self.peak_op = ""
        self.peak_module = ""
        self.peak_live = []
        self.paused = 0
        self.module_stack = []
        self._live = {}  # storage id -> (nbytes, op, module)

    def track(self, tensor, op_name):
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live or storage.nbytes() == 0:
            return
        nbytes = storage.nbytes()
        module = self.module_stack[-1] if self.module_stack else ""
        self._live[key] = (nbytes, op_name, module)
        self.live_bytes += nbytes
        self.allocated_bytes += nbytes
        weakref.finalize(storage, self._freed, key)
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_op = op_name
            self.peak_module = module
            self.peak_live = sorted(self._live.values(), key=lambda item: -item[0])

    def _freed(self, key):
        nbytes = self._live.pop(key)[0]
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            name = str(func.overloadpacket.__name__)
            # A view or in-place op hands back an input's storage: that storage is either
            # counted already or existed before the count started (a weight, an input).
            arguments = list(args) + list((kwargs or {}).values())
            inputs = {tensor.untyped_storage()._cdata for tensor in _tensors(arguments)}
            for tensor in _tensors(out):
                if tensor.untyped_storage()._cdata not in inputs:
                    self.track(tensor, name)
        return out

    @contextlib.contextmanager
    def pause(self):
        """Compute a fused kernel's result on the CPU without counting its intermediates."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def watch_modules(self, model):
        """Name the innermost module that is running, to say where the peak occurs."""
        def enter(name):
            return lambda module, args: self.module_stack.append(name)

        def leave(module, args, output):
            self.module_stack.pop()

        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(name or "model")))
            handles.append(module.register_forward_hook(leave))
        return handles


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


class CudaKernels(TorchFunctionMode):
    """Give SDPA, RMSNorm (and comfy-kitchen's RoPE, see rope_kernels) the memory behaviour of
    the CUDA kernels a GPU runs: allocate exactly their outputs; on a real CPU run, fill them
    with the reference result computed while the counter is paused."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            return flash_attention(self.counter, *args, **kwargs)
        if func is torch.nn.functional.rms_norm:
            return fused_rms_norm(self.counter, *args, **kwargs)
        return func(*args, **kwargs)


def flash_attention(counter, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    """CUDA flash forward: out allocated as [B, L, H, D] and returned transposed to [B, H, L, D];
    softmax log-sum-exp [B, H, L] fp32, dropped right away in inference."""
    if attn_mask is not None:
        raise NotImplementedError("the flash kernel takes no mask; WAN's attention passes none")
    b, h, lq, _ = q.shape
    out = torch.empty((b, lq, h, v.shape[-1]), dtype=q.dtype, device=q.device).transpose(1, 2)
    torch.empty((b, h, lq), dtype=torch.float32, device=q.device)  # log-sum-exp
    if q.device.type != "meta":
        with counter.pause():
            out.copy_(torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                                                        is_causal=is_causal, scale=scale))
    return out


def fused_rms_norm(counter, x, normalized_shape, weight=None, eps=None):
    """Fused RMSNorm: the output and a per-row fp32 rstd (kept only for backward)."""
    out = torch.empty_like(x)
    rows = x.numel() // max(1, x.shape[-1])
    torch.empty((rows,), dtype=torch.float32, device=x.device)  # rstd
    if x.device.type != "meta":
        with counter.pause():
            out.copy_(torch.nn.functional.rms_norm(x, normalized_shape, weight, eps))
    return out


def kitchen_rope_backend():
    """Which comfy-kitchen RoPE a CUDA GPU runs with this torch: comfy/quant_ops.py disables
    the kitchen's CUDA backend below CUDA 13 (and Triton unless asked), leaving its eager one."""
    cuda = torch.version.cuda
    return "kernel" if cuda and int(cuda.split(".")[0]) >= 13 else "eager"


@contextlib.contextmanager
def rope_kernels(counter, backend="auto"):
    """0.33 routes RoPE through comfy-kitchen (comfy.quant_ops.ck.apply_rope / apply_rope1).
    - kernel: its CUDA kernel writes one output of the input's shape and dtype;
    - eager: its eager backend, the same fp32 arithmetic as 0.3.64's apply_rope1 (an fp32 copy
      of the input, an fp32 result, the cast back), run as plain PyTorch so each is counted.
    auto = what this torch gets on a CUDA GPU (kitchen_rope_backend). 0.3.64 applies RoPE in
    eager PyTorch (comfy/ldm/flux/math.apply_rope1) on every device: nothing to map."""
    try:
        import comfy.quant_ops as quant_ops
    except ImportError:
        yield None
        return
    kitchen = getattr(quant_ops, "ck", None)
    if kitchen is None or not hasattr(kitchen, "apply_rope1"):
        yield None
        return
    backend = kitchen_rope_backend() if backend == "auto" else backend
    if backend == "eager":
        from comfy_kitchen.backends.eager import rope as eager_rope

        rope1, rope = eager_rope.apply_rope1, eager_rope.apply_rope
    else:
        import comfy.ldm.flux.math as flux_math

        def rope1(x, freqs_cis):
            out = torch.empty_like(x)
            if x.device.type != "meta":
                with counter.pause():
                    out.copy_(flux_math._apply_rope1(x, freqs_cis))
            return out

        def rope(xq, xk, freqs_cis):
            return rope1(xq, freqs_cis), rope1(xk, freqs_cis)

    saved = kitchen.apply_rope1, kitchen.apply_rope
    kitchen.apply_rope1, kitchen.apply_rope = rope1, rope
    try:
        yield backend
    finally:
        kitchen.apply_rope1, kitchen.apply_rope = saved


# --- building and running the model -------------------------------------------


def build_model(config, device, dtype, operations_name="disable_weight_init"):
    """The core's WanModel as comfy/model_detection.py configures a WAN 2.2 state dict
    (model_type t2v; the A14B I2V experts too, with in_dim 36)."""
    import comfy.ldm.wan.model as wan_model
    import comfy.ops

    operations = getattr(comfy.ops, operations_name)
    with torch.device(device):
        model = wan_model.WanModel(model_type="t2v", patch_size=config.patch_size, in_dim=config.in_dim,
                                   dim=config.dim, ffn_dim=config.ffn_dim, freq_dim=config.freq_dim,
                                   text_dim=config.text_dim, out_dim=config.out_dim, num_heads=config.num_heads,
                                   num_layers=config.num_layers, device=device, dtype=dtype, operations=operations)
    model.eval().requires_grad_(False)
    if device != "meta":
        generator = torch.Generator().manual_seed(0)
        for parameter in model.parameters():
            fan_in = parameter.shape[-1] if parameter.ndim > 1 else 1
            values = torch.randn(parameter.shape, generator=generator) / fan_in**0.5
            if parameter.ndim == 1:  # norm weights and biases
                values = 1 + 0.1 * values
            parameter.copy_(values.to(parameter.dtype))
    return model


def measure_peak(model, config, latent_shape, batch, device, dtype, rope="auto", lean=None, lean_chunk_tokens="auto"):
    """Run one forward pass of the core's WanModel, counting only what the pass creates.
    lean: None (the core's own blocks) or the core version whose block the lean forward replays."""
    frames, height, width = latent_shape
    generator = torch.Generator().manual_seed(1)

    def make(*shape):
        if device == "meta":
            return torch.empty(shape, dtype=dtype, device="meta")
        return torch.randn(shape, generator=generator).to(dtype)

    x = make(batch, config.in_dim, frames, height, width)
    context = make(batch, TEXT_TOKENS, config.text_dim)
    timestep = torch.full((batch,), 500.0, device=device)
    options = {}
    if lean is not None:
        from wanfit.lean_forward import lean_transformer_options

        options = lean_transformer_options(len(model.blocks), lean, lean_chunk_tokens, checked=False)
    counter = LiveStorageCounter()
    handles = counter.watch_modules(model)
    try:
        with torch.inference_mode(), rope_kernels(counter, rope) as rope_backend, CudaKernels(counter), counter:
            out = model(x, timestep, context, transformer_options=options)
            result = {"rope": rope_backend or "eager (core's own)", "peak_bytes": counter.peak_bytes,
                      "allocated_bytes": counter.allocated_bytes, "peak_op": counter.peak_op,
                      "peak_module": counter.peak_module,
                      "peak_live": counter.peak_live,
                      "output_finite": device == "meta" or bool(torch.isfinite(out).all())}
            del out
        result["live_after_bytes"] = counter.live_bytes  # 0 once the output is gone: every free was seen
    finally:
        for handle in handles:
            handle.remove()
    return result


def latent_shape(config, width, height, frames):
    stride = config.vae_spatial_stride
    return memory.latent_frames(frames), height // stride, width // stride


def run_job(name, config, width, height, frames, batch, version, dtype, operations_name, rope="auto", lean=False):
    model = build_model(config, "meta", dtype, operations_name)
    shape = latent_shape(config, width, height, frames)
    measured = measure_peak(model, config, shape, batch, "meta", dtype, rope, lean=version if lean else None)
    tokens = memory.transformer_tokens(config, width, height, frames)
    unit_bytes = tokens * config.dim * 2 * batch
    predicted = memory.transformer_activation_bytes(config, width, height, frames, batch_elements=batch,
                                                    compute_bytes=2, core_version=version, lean_forward=lean)
    return {
        "job": name, "batch": batch, "tokens": tokens, "dim": config.dim, "rope": measured["rope"],
        "forward": "lean" if lean else "stock",
        "simulated_peak_bytes": measured["peak_bytes"],
        "units": measured["peak_bytes"] / unit_bytes,
        "peak_op": measured["peak_op"], "peak_module": measured["peak_module"],
        "live_at_peak": [{"bytes": nbytes, "units": nbytes / unit_bytes, "op": op, "module": module}
                         for nbytes, op, module in measured["peak_live"] if nbytes >= unit_bytes / 100],
        "predicted_bytes": predicted,
        "predicted_over_simulated": predicted / measured["peak_bytes"],
    }


def validate(dtype, operations_name, rope="auto", version=None, lean=False):
    """The meta simulation against a real CPU run of the same small model: identical peaks."""
    rows = []
    for config in VALIDATION_CONFIGS:
        for batch in (1, 2):
            lean_core, chunk = (version, VALIDATION_LEAN_CHUNK_TOKENS) if lean else (None, "auto")
            meta = measure_peak(build_model(config, "meta", dtype, operations_name), config, VALIDATION_LATENT, batch,
                                "meta", dtype, rope, lean=lean_core, lean_chunk_tokens=chunk)
            real = measure_peak(build_model(config, "cpu", dtype, operations_name), config, VALIDATION_LATENT, batch,
                                "cpu", dtype, rope, lean=lean_core, lean_chunk_tokens=chunk)
            predicted = memory.transformer_activation_bytes(config, *VALIDATION_VIDEO, batch_elements=batch,
                                                            compute_bytes=2, core_version=version, lean_forward=lean,
                                                            chunk_tokens=chunk if lean else None)
            rows.append({"config": config.name, "batch": batch, "rope": meta["rope"],
                         "meta_peak_bytes": meta["peak_bytes"], "real_peak_bytes": real["peak_bytes"],
                         "predicted_bytes": predicted,
                         "predicted_over_simulated": predicted / meta["peak_bytes"],
                         "meta_peak_op": meta["peak_op"], "real_peak_op": real["peak_op"],
                         "output_finite": real["output_finite"],
                         "meta_live_after_bytes": meta["live_after_bytes"],
                         "real_live_after_bytes": real["live_after_bytes"],
                         "allocated_bytes": real["allocated_bytes"],
                         "identical": meta["peak_bytes"] == real["peak_bytes"]})
    return rows


# --- report ---------------------------------------------------------------------


def markdown_table(rows):
    lines = ["| job | batch | tokens | simulated peak | units | peak at | predicted | predicted / simulated |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['job']} | {row['batch']} | {row['tokens']:,} "
                     f"| {row['simulated_peak_bytes'] / GIB:.2f} GiB "
                     f"| {row['units']:.2f} | {row['peak_module']} `{row['peak_op']}` | "
                     f"{row['predicted_bytes'] / GIB:.2f} GiB | {row['predicted_over_simulated']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--core-path", default=os.environ.get("COMFYUI_PATH"),
                        help="ComfyUI checkout whose WanModel runs (default: $COMFYUI_PATH)")
    parser.add_argument("--job", action="append", choices=sorted(JOBS), help="one job (repeatable; default: all)")
    parser.add_argument("--batch", type=int, action="append", choices=(1, 2),
                        help="batch elements (2 = cond and uncond batched; repeatable; default: 1 and 2)")
    parser.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16", help="compute dtype (2 bytes)")
    parser.add_argument("--ops", choices=("disable_weight_init", "manual_cast"), default="disable_weight_init",
                        help="comfy.ops class: disable_weight_init is what ComfyUI picks when the weights are "
                             "stored in the compute dtype")
    parser.add_argument("--rope", choices=("auto", "kernel", "eager"), default="auto",
                        help="0.33's comfy-kitchen RoPE: its CUDA kernel (one output) or its eager backend (fp32 "
                             "temporaries); auto = what this torch gets on a GPU (the kernel needs CUDA 13+). "
                             "0.3.64 always runs eager RoPE")
    parser.add_argument("--lean", action="store_true",
                        help="install WanFit's lean block forward (wanfit/lean_forward.py, chunks auto) and predict "
                             "with the lean activation model")
    parser.add_argument("--validate", action="store_true",
                        help="only check meta == real CPU peak at a small size (exit 1 when they differ)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    options = parser.parse_args(argv)
    if not options.core_path:
        parser.error("no core: pass --core-path or set COMFYUI_PATH")

    core_path = import_core(options.core_path)
    version = core_version(core_path)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[options.dtype]
    card = {"core": version, "core_path": core_path, "forward": "lean" if options.lean else "stock",
            "torch": torch.__version__, "python": platform.python_version(),
            "device": "CPU simulation on the meta device", "dtype": options.dtype, "ops": options.ops,
            "date": datetime.date.today().isoformat(),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])}
    if options.validate:
        rows = validate(dtype, options.ops, options.rope, version_tuple(version), lean=options.lean)
        print(f"ComfyUI {version}, torch {torch.__version__}: meta vs real CPU peak, dim 256, 2 layers, "
              f"latent {VALIDATION_LATENT} ({math.prod(VALIDATION_LATENT) // 4} tokens)")
        for row in rows:
            print(f"  {row['config']}, batch {row['batch']}, RoPE {row['rope']}: "
                  f"meta {row['meta_peak_bytes']:,} B ({row['meta_peak_op']}), "
                  f"real {row['real_peak_bytes']:,} B ({row['real_peak_op']}): "
                  f"{'identical' if row['identical'] else 'DIFFERENT'}; "
                  f"all allocations {row['allocated_bytes']:,} B, "
                  f"left live {row['meta_live_after_bytes']} / {row['real_live_after_bytes']} B, "
                  f"output finite {row['output_finite']}, "
                  f"predicted / simulated {row['predicted_over_simulated']:.3f}")
        if options.json:
            with open(options.json, "w") as handle:
                json.dump({"card": card, "validation": rows}, handle, indent=1)
        ok = all(row["identical"] and row["output_finite"]
                 and row["meta_live_after_bytes"] == row["real_live_after_bytes"] == 0
                 for row in rows)
        return 0 if ok else 1

    rows = []
    for name in options.job or list(JOBS):
        config, width, height, frames = JOBS[name]
        for batch in options.batch or (1, 2):
            rows.append(run_job(name, config, width, height, frames, batch, version_tuple(version), dtype, options.ops,
                                options.rope, lean=options.lean))
    print(f"ComfyUI {version}, torch {torch.__version__}, {options.dtype}, comfy.ops.{options.ops}, "
          f"RoPE {rows[0]['rope']}, {'WanFit lean' if options.lean else 'the core' + chr(39) + 's own'} block forward; "
          "CPU simulation on the meta device\n")
    print(markdown_table(rows))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({"card": card, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
