"""One-shot GPU check: real-size random-weight WAN 2.2 models in the real ComfyUI core, in one command.

On a GPU (H100/H200: at most 8 minutes; no work starts after --deadline-s, 470 s by default, and
whatever did not fit is marked skipped; the first run also writes ~11.5 GB of random model files):

    COMFYUI_PATH=~/ComfyUI python bench/gpu_check.py --out gpu_check_out

Self-test on a CPU (every case path at a tiny size; 1-3 minutes on 2 cores, mostly real-size VAE work):

    COMFYUI_PATH=~/ComfyUI python bench/gpu_check.py --cpu-tiny --out /tmp/gpu_check_tiny

What it measures (each case in its own process, so memory managers never mix; each measurement in
its own try/except, so one failure is recorded and the run goes on):
  - peak VRAM (torch.cuda.max_memory_allocated, and the device's used memory polled every 10 ms)
    against wanfit.plan.plan's prediction, for TI2V-5B 1280x704x121 and one T2V-A14B expert
    1280x720x81, with the card capped at 24 and 32 GB (torch.cuda.set_per_process_memory_fraction,
    torch.cuda.mem_get_info narrowed to the cap so ComfyUI and WanFit plan for that card, and on
    dynamic-VRAM cores --vram-headroom so comfy-aimdo keeps the rest free);
  - s/step with WanFit's attention patcher in "auto" mode (sageattention when it imports and
    verifies) against ComfyUI's own attention (PyTorch SDPA);
  - WanFit's lean block forward (the "lean" arm: SDPA attention, lean blocks) against ComfyUI's own
    blocks (the "sdpa" arm): peak VRAM and s/step, for TI2V-5B and one T2V-A14B expert;
  - WanFit's budgeted VAE decode at a small budget against the core's own VAE decode;
  - on cores with dynamic VRAM (0.33+): the same sampling with --disable-dynamic-vram;
  - ComfyUI's template graph (UNETLoader + KSampler + VAEDecode, as video_wan2_2_5B_ti2v.json) against
    WanFit's shipped workflows/api/ti2v_5b_t2v.json for the same job on the same capped card;
  - ComfyUI's native quantized formats (cores whose comfy.quant_ops.QUANT_ALGOS has them, 0.33; an older core
    reports the case skipped, naming what its QUANT_ALGOS lacks): TI2V-5B with its block linears quantized
    by the core's own QuantizedTensor.from_float (tests/quantized_wan.py) to float8_e4m3fn, int8_tensorwise,
    nvfp4 and mxfp8, loaded by the core as a file with a _quantization_metadata header and sampled by its own
    sampler, against the same model in fp16: s/step, peak VRAM against the plan's prediction for that
    weight_dtype, whether the core computes each layer natively or dequantizes it as it runs (its loader's
    per-layer choice, beside wanfit.plan.formats' verdict for the card), and WanFit's lean forward's
    max |lean - core| / max |core| on one forward of that model. Kept cheap (41 frames, 2 steps: loading,
    not sampling, should be most of the roughly one to two minutes it is estimated to take on an H100) and
    placed after the cap-24 cases, which say more about WanFit, but before the cap-32 repeats, which the
    formats' first measurement on a GPU is worth more than.
The text encoder is skipped: conditioning of the real shape (1, 512, 4096) stands in for it.
Random weights are built on the GPU (no downloads); speed and memory do not depend on their values.

Writes DIR/gpu_check.json after every case and DIR/gpu_check.md (a table naming the core version).
Internal: `--case NAME[,NAME]` runs cases in a child process and writes their results to --result-file.
"""

import argparse
import contextlib
import datetime
import inspect
import json
import os
from pathlib import Path
import platform
import re
import subprocess
import sys
import threading
import time
import traceback

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
PACKAGE_LINK_NAME = "ComfyUI-WanFit"
DEFAULT_DEADLINE_S = {"gpu": 470, "cpu-tiny": 240}
GPU_CACHE_VERSION = 1  # bump when the generated real-size files change

# Jobs per mode: (width, height, frames, steps). Real sizes are the official ones (design.md).
JOBS = {
    "gpu": {"ti2v_5b": (1280, 704, 121, 3), "t2v_a14b": (1280, 720, 81, 2)},
    "cpu-tiny": {"ti2v_5b": (32, 32, 5, 2), "t2v_a14b": (32, 32, 5, 2)},
}
# The decode case: real resolution, fewer frames on a GPU (the graph cases decode the whole 121 frames).
DECODE_JOBS = {"gpu": (1280, 704, 41), "cpu-tiny": (32, 32, 5)}
DECODE_BUDGET_BYTES = {"gpu": 2 * 2**30, "cpu-tiny": 256 * 2**20}
# The formats case: one TI2V-5B model per format, 2 steps (the second step's interval is the s/step) at 41 frames,
# a third of the token count of the sample cases, so five loads and samplings stay near a minute on an H100.
FORMAT_JOBS = {"gpu": (1280, 704, 41, 2), "cpu-tiny": (32, 32, 5, 2)}
# fp16 first: the same model unquantized, the baseline the formats' s/step and peaks are read against
FORMAT_ARMS = ("fp16", "float8_e4m3fn", "int8_tensorwise", "nvfp4", "mxfp8")
# the lean forward against the core's: one forward at the sampling latent on a GPU; 3x24x40 (720 tokens) on the CPU
LEAN_LATENT = {"cpu-tiny": (3, 24, 40)}
FORMATS_CASE = "formats_ti2v_5b_cap24"
CAPS_GB = (24, 32)
CFG = 5.0
SAMPLER, SCHEDULER = "uni_pc", "simple"
TI2V_5B_FILE = "wanfit_random_ti2v_5B_fp16.safetensors"
WAN22_VAE_FILE = "wanfit_random_wan2.2_vae.safetensors"  # the name tests/fixtures/generate.py gives it too
NA_CPU = "n/a on CPU"


# --- small helpers -------------------------------------------------------------


def gib(value):
    return None if value is None else round(value / 2**30, 3)


def na(reason):
    return reason if reason.startswith("n/a") else f"n/a: {reason}"


def ratio(numerator, denominator, reason="n/a: not measured"):
    if isinstance(numerator, (int, float)) and isinstance(denominator, (int, float)) and denominator:
        return round(numerator / denominator, 3)
    return reason


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json_atomically(path, data):
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=str))
    os.replace(partial, path)


def core_version(core_path):
    text = (Path(core_path) / "comfyui_version.py").read_text()
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return match.group(1) if match else "unknown"


def core_has_dynamic_vram(core_path):
    return "--disable-dynamic-vram" in (Path(core_path) / "comfy" / "cli_args.py").read_text()


def is_oom(error):
    text = f"{type(error).__name__} {error}"
    return "OutOfMemory" in text or "out of memory" in text.lower()


# --- the cases -------------------------------------------------------------------


def build_cases(mode, dynamic_core):
    """Ordered by priority: when the deadline comes, what is left is the least important."""
    def sample(variant, cap, arms, **extra):
        return {"name": f"sample_{variant}_cap{cap}", "kind": "sample", "variant": variant, "cap_gb": cap,
                "arms": arms, **extra}

    off = sample("ti2v_5b", 24, ["sdpa"], dynamic_vram=False)
    off["name"] += "_dynamic_vram_off"
    if not dynamic_core:
        off["not_applicable"] = "n/a: this core has no dynamic VRAM (comfy-aimdo arrived after 0.3.64)"
    lean_a14b = sample("t2v_a14b", 24, ["sdpa", "lean"])
    lean_a14b["name"] += "_lean_vs_stock"
    cases = [{"name": "env", "kind": "env"}, {"name": "prepare_models", "kind": "prepare"},
             sample("ti2v_5b", 24, ["sdpa", "auto", "lean"]),
             *({"name": f"graph_{graph}_ti2v_5b_cap24", "kind": "graph", "graph": graph, "cap_gb": 24}
               for graph in ("comfyui_template", "wanfit")),
             off,
             sample("t2v_a14b", 24, ["auto"]),
             {"name": "decode_wan22_cap24", "kind": "decode", "cap_gb": 24},
             lean_a14b,
             {"name": FORMATS_CASE, "kind": "formats", "cap_gb": 24},
             sample("ti2v_5b", 32, ["sdpa", "auto"]),
             sample("t2v_a14b", 32, ["auto"])]
    for case in cases:
        case.setdefault("dynamic_vram", True)
    return cases


def core_flags(case, mode, dynamic_core, work_dir, total_vram_bytes):
    flags = ["--disable-auto-launch",
             "--output-directory", str(work_dir / "output"), "--temp-directory", str(work_dir / "temp"),
             "--input-directory", str(work_dir / "input"), "--user-directory", str(work_dir / "user"),
             "--extra-model-paths-config", str(work_dir / "extra_model_paths.yaml")]
    if mode == "cpu-tiny":
        flags.append("--cpu")
    if dynamic_core and not case.get("dynamic_vram", True):
        flags.append("--disable-dynamic-vram")
    elif dynamic_core and mode == "gpu" and case.get("cap_gb") and total_vram_bytes:
        # comfy-aimdo allocates outside PyTorch's allocator; this keeps the rest of the real card free
        headroom_gb = max(0.0, total_vram_bytes / 2**30 - case["cap_gb"])
        flags += ["--vram-headroom", f"{headroom_gb:.2f}"]
    return flags


# --- child process: boot the core as main.py does ---------------------------------


class Child:
    """Everything one child process shares between its cases: the booted core and the capped card."""

    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.cpu = self.mode == "cpu-tiny"
        self.core = Path(args.comfyui).resolve()
        self.work_dir = Path(args.work_dir)
        self.deadline = args.deadline
        self.results = {}
        self.real_mem_get_info = None
        self.cap_bytes = None

    # results are written after every measurement, so a killed child still reports what it did
    def save(self):
        write_json_atomically(self.args.result_file, self.results)

    def boot(self, flags):
        # Our own packages first: ComfyUI has top-level `nodes` and `tests` that would shadow the repository's.
        sys.path.insert(0, str(REPO_ROOT))
        import tests.fixtures.generate  # noqa: F401
        import tests.host.graphs  # noqa: F401
        import tests.host.test_nodes  # noqa: F401
        import tests.quantized_wan  # noqa: F401
        import wanfit.plan  # noqa: F401

        sys.path.remove(str(REPO_ROOT))
        sys.path.append(str(REPO_ROOT))
        sys.path.insert(0, str(self.core))
        sys.argv = [str(self.core / "main.py"), *flags]
        import comfy.options

        comfy.options.enable_args_parsing()
        if not self.cpu:
            import cuda_malloc  # noqa: F401  (main.py does this first when run as a script: picks the allocator)
        import main  # noqa: F401  (the core's own start-up: args, paths, dynamic VRAM, model management)
        import asyncio
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        link_dir = self.work_dir / "custom_nodes"
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / PACKAGE_LINK_NAME
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        if not asyncio.run(nodes.load_custom_node(str(link), module_parent="custom_nodes")):
            raise RuntimeError(f"ComfyUI could not import WanFit from {link}")
        from tests.host.test_nodes import WanFitTestTextEncode

        nodes.NODE_CLASS_MAPPINGS.setdefault("WanFitTestTextEncode", WanFitTestTextEncode)

    def cap(self, cap_gb):
        """Make this process see a card of cap_gb: allocator limit, mem_get_info and ComfyUI's total."""
        import torch
        import comfy.model_management as mm

        if self.cpu:
            return None
        if self.real_mem_get_info is None:
            self.real_mem_get_info = torch.cuda.mem_get_info
        real = self.real_mem_get_info
        free, total = real()
        used = total - free
        try:  # what PyTorch's allocator already holds counts against its limit, not as another tenant
            other = used - torch.cuda.memory_reserved()
        except Exception:  # noqa: BLE001
            other = used
        cap = int(cap_gb * 2**30)

        def capped_mem_get_info(device=None):
            free_now, total_now = real(device) if device is not None else real()
            return max(0, cap - (total_now - free_now)), cap

        torch.cuda.mem_get_info = capped_mem_get_info
        torch.cuda.memory.mem_get_info = capped_mem_get_info
        torch.cuda.set_per_process_memory_fraction(max(0.01, min(1.0, (cap - other) / total)))
        mm.total_vram = cap / 2**20
        self.cap_bytes = cap
        return {"cap_gib": cap_gb, "real_total_gib": gib(total), "used_at_cap_gib": gib(used),
                "allocator_limit_gib": gib(cap - other)}

    def remaining(self):
        return self.deadline - time.time()

    def apply_cap(self, case, result):
        """Cap the card for a GPU case; False (recorded) when that failed, so nothing runs mislabelled."""
        if self.cpu or not case.get("cap_gb"):
            result["metrics"]["cap_gib"] = NA_CPU if self.cpu else na("no cap for this case")
            return True
        record(result, "cap", lambda: self.cap(case["cap_gb"]))
        return "cap" in result["metrics"]


class PeakMeter:
    """Peak of torch.cuda.max_memory_allocated and of the device's used memory (polled), from reset()."""

    def __init__(self, child):
        self.child = child
        self.device_peak = 0
        self.torch_peak_error = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.child.cpu:
            return self
        import torch

        torch.cuda.synchronize()
        try:
            torch.cuda.reset_peak_memory_stats()
        except Exception as error:  # noqa: BLE001 - some allocator backends keep no peak statistics
            self.torch_peak_error = f"n/a: reset_peak_memory_stats failed ({type(error).__name__}: {error})"
        real = self.child.real_mem_get_info or torch.cuda.mem_get_info
        free, total = real()
        self.device_peak = total - free

        def poll():
            while not self._stop.wait(0.01):
                try:
                    f, t = real()
                    self.device_peak = max(self.device_peak, t - f)
                except Exception:
                    return

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread:
            self._stop.set()
            self._thread.join(timeout=2)
        return False

    def snapshot(self):
        """{'peak_torch_allocated_gib', 'peak_device_used_gib'} so far (n/a on CPU)."""
        if self.child.cpu:
            return {"peak_torch_allocated_gib": NA_CPU, "peak_device_used_gib": NA_CPU}
        import torch

        torch.cuda.synchronize()
        real = self.child.real_mem_get_info or torch.cuda.mem_get_info
        free, total = real()
        self.device_peak = max(self.device_peak, total - free)
        return {"peak_torch_allocated_gib": self.torch_peak_error or gib(torch.cuda.max_memory_allocated()),
                "peak_device_used_gib": gib(self.device_peak)}


def record(result, key, function):
    """One measurement: its numbers go under result['metrics'][key]; an exception is recorded, not raised."""
    started = time.perf_counter()
    try:
        value = function()
        result["metrics"][key] = value
    except Exception as error:  # noqa: BLE001 - the run must go on
        if is_oom(error):
            result["metrics"][key] = {"oom": True, "seconds": round(time.perf_counter() - started, 2)}
            result["notes"].append(f"{key}: out of memory ({str(error).splitlines()[0][:300]})")
        else:
            result["errors"].append(f"{key}: {type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}")
    finally:
        _free_memory()


def _free_memory():
    try:
        import gc
        import comfy.model_management as mm

        gc.collect()
        mm.soft_empty_cache()
    except Exception:
        pass


# --- model building ------------------------------------------------------------------


def wan_config(variant, tiny):
    """The transformer's shape: the real one (wanfit.plan.footprint), or the fixtures' dim-128 one for --cpu-tiny."""
    from types import SimpleNamespace
    from tests.fixtures import generate
    from wanfit.plan import footprint as memory

    real = {"ti2v_5b": memory.TI2V_5B, "t2v_a14b": memory.T2V_A14B_EXPERT}[variant]
    if not tiny:
        return real
    return SimpleNamespace(dim=generate.TINY_DIM, ffn_dim=generate.TINY_FFN_DIM, num_layers=generate.TINY_LAYERS,
                           in_dim=real.in_dim, out_dim=real.out_dim)


def build_wan_state_dict(config, device, seed, init=True):
    """A WAN transformer's state dict with the checkpoint key layout, random fp16, built on `device`.

    ComfyUI's own WanModel, made directly on the device (a GPU makes 14B random weights in seconds)
    and initialised by the fixtures' rule (tests/fixtures/generate.py: norms 1, biases 0, weights
    N(0, 1/sqrt(fan_in))). init=False on the meta device gives the key layout only.
    """
    import torch
    import comfy.ldm.wan.model
    import comfy.ops
    from tests.fixtures.generate import TEXT_DIM, init_random_weights

    with torch.device(device):
        model = comfy.ldm.wan.model.WanModel(
            model_type="t2v", in_dim=config.in_dim, out_dim=config.out_dim, dim=config.dim, ffn_dim=config.ffn_dim,
            freq_dim=256, text_dim=TEXT_DIM, num_heads=config.dim // 128, num_layers=config.num_layers,
            operations=comfy.ops.disable_weight_init, dtype=torch.float16, device=device)
        if init:
            init_random_weights(model, torch.Generator(device=device).manual_seed(seed), conv_gain=1.0)
    return model.state_dict()


def build_wan22_vae_state_dict(device, seed=22, init=True):
    import importlib
    import torch
    from tests.fixtures.generate import VAES, init_random_weights

    module_name, ddconfig, _ = VAES[WAN22_VAE_FILE]
    with torch.device(device):
        model = importlib.import_module(f"comfy.ldm.wan.{module_name}").WanVAE(**ddconfig)
        if init:
            init_random_weights(model, torch.Generator(device=device).manual_seed(seed), conv_gain=0.7)
    return {key: value.to(torch.float16) for key, value in model.state_dict().items()}


def check_layout(state_dict, path):
    """The builder's keys and shapes are those of a fixture file ComfyUI is known to load; returns the key count."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        expected = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    built = {key: list(value.shape) for key, value in state_dict.items()}
    if built != expected:
        missing, extra = sorted(set(expected) - set(built)), sorted(set(built) - set(expected))
        shapes = [key for key in set(built) & set(expected) if built[key] != expected[key]]
        raise AssertionError(f"builder layout differs from {path.name}: missing {missing[:5]}, extra {extra[:5]}, "
                             f"other shapes {shapes[:5]}")
    return len(built)


def model_paths(child):
    """{"ti2v_5b": file, "vae": file, "t2v_a14b": None: the A14B expert is built in memory, it has no file}."""
    if child.cpu:
        from tests.fixtures.generate import fixture_paths
        from tests.host import graphs

        paths = fixture_paths()
        return {"ti2v_5b": paths["diffusion_models"][graphs.TI2V_5B], "vae": paths["vae"][graphs.VAE_22],
                "t2v_a14b": None}
    base = Path(child.args.cache_dir) / f"v{GPU_CACHE_VERSION}"
    return {"ti2v_5b": base / "diffusion_models" / TI2V_5B_FILE, "vae": base / "vae" / WAN22_VAE_FILE,
            "t2v_a14b": None}


def models_root(args):
    if args.mode == "cpu-tiny":
        sys.path.insert(0, str(REPO_ROOT))
        from tests.fixtures.generate import fixture_dir

        return fixture_dir()
    return Path(args.cache_dir) / f"v{GPU_CACHE_VERSION}"


def build_in_ram(child, variant):
    """A model with no file (the 28 GB A14B expert): built on the GPU, handed over in RAM as a file would be."""
    import torch

    device = "cpu" if child.cpu else "cuda"
    sd = build_wan_state_dict(wan_config(variant, child.cpu), device, seed=14)
    sd = {key: value.cpu() for key, value in sd.items()}
    _free_memory()
    if not child.cpu:
        torch.cuda.empty_cache()
    return sd


def load_diffusion_model(child, variant, weight_dtype, state_dict=None):
    import torch
    import comfy.sd

    options = {}
    if weight_dtype and weight_dtype.startswith("fp8"):
        options["dtype"] = torch.float8_e4m3fn  # what a loader's fp8 weight_dtype does with a 16-bit file
    if state_dict is not None:
        return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options=options)
    return comfy.sd.load_diffusion_model(str(model_paths(child)[variant]), model_options=options)


def conditioning():
    from tests.host.test_nodes import fake_umt5_conditioning

    return (fake_umt5_conditioning("a red fox trots through fresh snow in a birch forest at sunrise", 1),
            fake_umt5_conditioning("blurry, static, low quality", 2))


def wanfit_plan(child, variant, job, weight_dtype=None):
    """wanfit.plan.plan for the card as this process sees it (capped), as the plan node would probe it."""
    from wanfit.core import running_core
    from wanfit.device import probe_comfyui_device
    from wanfit.plan import Job, Overrides, plan

    width, height, frames, _ = job
    # the running core: its memory manager, dynamic VRAM on or off
    return plan(probe_comfyui_device(), variant, Job(width, height, frames, cfg=True),
                overrides=Overrides(weight_dtype=weight_dtype) if weight_dtype else None, core=running_core())


# --- case bodies -------------------------------------------------------------------------


def run_env(child, case, result):
    import torch
    import comfy.model_management as mm

    info = result["info"]
    info["python"] = platform.python_version()
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda or ""
    info["comfyui_version"] = core_version(child.core)
    info["torch_device"] = str(mm.get_torch_device())
    info["comfy_attention"] = _comfy_attention_name()
    info["dynamic_vram_enabled"] = _aimdo_enabled()
    try:
        import sageattention  # noqa: F401

        info["sageattention"] = getattr(sageattention, "__version__", "importable")
    except Exception as error:  # noqa: BLE001
        info["sageattention"] = f"not importable ({type(error).__name__}: {error})"
    if child.cpu:
        result["metrics"]["total_vram_gib"] = NA_CPU
        result["metrics"]["cpu_threads"] = torch.get_num_threads()
    else:
        free, total = torch.cuda.mem_get_info()
        info["device_name"] = torch.cuda.get_device_name()
        info["compute_capability"] = list(torch.cuda.get_device_capability())
        result["metrics"]["total_vram_gib"] = gib(total)
        result["metrics"]["free_vram_gib"] = gib(free)
        result["total_vram_bytes"] = total


def run_prepare(child, case, result):
    """The files the loader nodes read: real-size random 5B and Wan 2.2 VAE (GPU), or the test fixtures."""
    if child.cpu:
        from tests.fixtures.generate import ensure_fixtures

        started = time.perf_counter()
        paths = ensure_fixtures(child.core, log=lambda message: result["notes"].append(message))
        result["metrics"]["seconds"] = round(time.perf_counter() - started, 2)
        result["info"]["models"] = ("tests/fixtures/generate.py fixtures (dim 128, 2 layers; real VAE architecture); "
                                    "the A14B expert is built in memory by the GPU run's builder")
        # the GPU run's builders make what ComfyUI loads: same keys and shapes as the fixture files
        ti2v_file = model_paths(child)["ti2v_5b"]
        record(result, "ti2v_5b_builder_keys", lambda: check_layout(
            build_wan_state_dict(wan_config("ti2v_5b", True), "meta", 0, init=False), ti2v_file))
        record(result, "wan22_vae_builder_keys", lambda: check_layout(
            build_wan22_vae_state_dict("meta", init=False), paths["vae"][WAN22_VAE_FILE]))
        return
    import torch
    from safetensors.torch import save_file

    paths = model_paths(child)
    for key, builder in (("ti2v_5b", lambda: build_wan_state_dict(wan_config("ti2v_5b", False), "cuda", seed=5)),
                         ("vae", lambda: build_wan22_vae_state_dict("cuda"))):
        def build_and_save(path=paths[key], builder=builder):
            if path.exists():
                return {"seconds": 0.0, "file_gib": gib(path.stat().st_size), "cached": True}
            started = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {name: value.contiguous().cpu() for name, value in builder().items()}
            torch.cuda.empty_cache()
            partial = path.with_name(path.name + ".partial")
            save_file(tensors, str(partial), metadata={"wanfit_gpu_check": "random weights, benchmark only"})
            os.replace(partial, path)
            return {"seconds": round(time.perf_counter() - started, 2), "file_gib": gib(path.stat().st_size),
                    "cached": False}

        record(result, key, build_and_save)


def _comfy_attention_name():
    try:
        import comfy.ldm.modules.attention as attention

        return attention.optimized_attention.__name__
    except Exception as error:  # noqa: BLE001
        return f"unknown ({error})"


def _aimdo_enabled():
    try:
        import comfy.memory_management

        return bool(getattr(comfy.memory_management, "aimdo_enabled", False))
    except Exception:
        return False


def _step_seconds(stamps, total_seconds, steps):
    """Median interval between step callbacks (the first step carries loading); one step: the total."""
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    if intervals:
        intervals.sort()
        return round(intervals[len(intervals) // 2], 4), "median interval between step callbacks"
    return round(total_seconds / max(1, steps), 4), "whole sampling call / steps (includes loading)"


def run_sample(child, case, result):
    import torch
    import comfy.sample
    from wanfit.attention import find_override, patch_model_attention
    from wanfit.lean_forward import patch_model_lean

    variant = case["variant"]
    job = JOBS[child.mode][variant]
    width, height, frames, steps = job
    info = result["info"]
    info["job"] = f"{width}x{height}x{frames}, {steps} steps, cfg {CFG}, {SAMPLER}/{SCHEDULER}"
    info["comfy_attention"] = _comfy_attention_name()
    info["dynamic_vram_enabled"] = _aimdo_enabled()

    plan_holder = {}

    def make_plan():
        try:
            plan = wanfit_plan(child, variant, job)
        except Exception as error:  # noqa: BLE001 - a refusal is a result: measure with 16-bit weights anyway
            result["notes"].append(f"plan refused: {error}")
            info["plan"] = f"refused: {str(error)[:400]}"
            return {"predicted_peak_vram_gib": na("the plan refused this job (see notes)")}
        plan_holder["plan"] = plan
        info["plan"] = plan.summary()
        if child.cpu:
            return {"predicted_peak_vram_gib": NA_CPU, "predicted_sample_vram_gib": NA_CPU,
                    "predicted_peak_ram_gib": gib(plan.predicted_peak_ram_bytes)}
        return {"predicted_peak_vram_gib": gib(plan.predicted_peak_vram_bytes),
                "predicted_sample_vram_gib": gib(plan.predicted_vram_by_phase.get("sample", 0)),
                "predicted_peak_ram_gib": gib(plan.predicted_peak_ram_bytes)}

    # a model with no file (the A14B expert) is built before the cap: 14B fp16 is 28 GB on the GPU for a moment
    model_holder = {}
    if model_paths(child)[variant] is None:
        def build():
            started = time.perf_counter()
            model_holder["state_dict"] = build_in_ram(child, variant)
            return {"seconds": round(time.perf_counter() - started, 2)}

        record(result, "build", build)
        if "state_dict" not in model_holder:
            return

    def load():
        plan = plan_holder.get("plan")
        weight_dtype = plan.weight_dtype if plan is not None else "fp16"
        info["weight_dtype"] = weight_dtype  # the plan's: the loader nodes follow it the same way
        started = time.perf_counter()
        model_holder["model"] = load_diffusion_model(child, variant, weight_dtype, model_holder.pop("state_dict", None))
        return {"seconds": round(time.perf_counter() - started, 2)}

    if not child.apply_cap(case, result):
        return
    record(result, "plan", make_plan)
    record(result, "load", load)
    model = model_holder.get("model")
    if model is None:
        return
    positive, negative = conditioning()
    latent_channels = 48 if variant == "ti2v_5b" else 16
    stride = 16 if variant == "ti2v_5b" else 8
    latent = torch.zeros(1, latent_channels, (frames - 1) // 4 + 1, height // stride, width // stride)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    for arm in case["arms"]:
        if child.remaining() < 20:
            result["metrics"][arm] = na("skipped: global deadline reached")
            continue

        def sample(arm=arm):
            patched, report = patch_model_attention(model, "auto" if arm == "auto" else "disabled")
            info[f"{arm}_attention_report"] = report
            if arm == "lean":  # the core's attention, WanFit's lean blocks: against the "sdpa" arm
                patched, info["lean_report"] = patch_model_lean(patched, "auto")
            stamps = []
            with PeakMeter(child) as meter:
                started = time.perf_counter()
                comfy.sample.sample(patched, noise, steps, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                                    seed=5, disable_pbar=True,
                                    callback=lambda step, x0, x, total: stamps.append(time.perf_counter()))
                seconds = time.perf_counter() - started
                peaks = meter.snapshot()
            s_per_step, how = _step_seconds(stamps, seconds, steps)
            override = find_override(patched)
            kernel_calls = override.stats.kernel_calls if override is not None else 0
            info[f"{arm}_s_per_step_method"] = how
            out = {"s_per_step": s_per_step, "sampling_seconds": round(seconds, 2), "steps": steps,
                   "attention_kernel_calls": kernel_calls, "oom": False, **peaks}
            plan = plan_holder.get("plan")
            if child.cpu:
                out["measured_over_predicted"] = NA_CPU
            elif plan is not None:
                predicted = plan.predicted_vram_by_phase.get("sample") or plan.predicted_peak_vram_bytes
                out["measured_over_predicted"] = ratio(peaks["peak_device_used_gib"], gib(predicted))
            else:
                out["measured_over_predicted"] = na("no plan (refused)")
            return out

        record(result, arm, sample)
        child.save()
    metrics = result["metrics"]
    if "sdpa" in metrics and "auto" in metrics:
        auto, sdpa = metrics["auto"], metrics["sdpa"]
        if child.cpu:
            metrics["sage_speedup_over_sdpa"] = na("n/a on CPU: sageattention has no CPU kernels "
                                                   "(the auto arm ran the SDPA fallback)")
        elif isinstance(auto, dict) and not auto.get("attention_kernel_calls"):
            metrics["sage_speedup_over_sdpa"] = na("sageattention did not run (see auto_attention_report)")
        elif isinstance(auto, dict) and isinstance(sdpa, dict):
            metrics["sage_speedup_over_sdpa"] = ratio(sdpa.get("s_per_step"), auto.get("s_per_step"))
    if isinstance(metrics.get("sdpa"), dict) and isinstance(metrics.get("lean"), dict):
        lean, stock = metrics["lean"], metrics["sdpa"]
        metrics["lean_over_stock_s_per_step"] = ratio(lean.get("s_per_step"), stock.get("s_per_step"))
        if child.cpu:
            metrics["lean_over_stock_peak_torch"] = na("n/a on CPU: no device memory statistics")
        else:
            metrics["lean_over_stock_peak_torch"] = ratio(lean.get("peak_torch_allocated_gib"),
                                                          stock.get("peak_torch_allocated_gib"),
                                                          na("a peak is missing (OOM or no statistics)"))


def run_decode(child, case, result):
    import torch
    import comfy.sd
    import comfy.utils

    from wanfit.decode import decode_comfy_vae

    width, height, frames = DECODE_JOBS[child.mode]
    budget = DECODE_BUDGET_BYTES[child.mode]
    info = result["info"]
    info["job"] = f"Wan 2.2 VAE, {width}x{height}x{frames}; WanFit budget {gib(budget)} GiB"
    if not child.apply_cap(case, result):
        return
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(model_paths(child)["vae"])))
    latent = torch.randn(1, 48, (frames - 1) // 4 + 1, height // 16, width // 16,
                         generator=torch.Generator().manual_seed(3))
    plans = []

    def arm(kind):
        with torch.inference_mode(), PeakMeter(child) as meter:
            started = time.perf_counter()
            if kind == "comfy":
                images = vae.decode(latent)
            else:
                images = decode_comfy_vae(vae, latent, budget, on_plan=plans.append)
            seconds = time.perf_counter() - started
            peaks = meter.snapshot()
        out = {"seconds": round(seconds, 2), "frames": int(images.shape[-4]) if images.dim() >= 4 else 0,
               "oom": False, **peaks}
        if kind == "wanfit":
            out["budget_gib"] = gib(budget)
            predicted = getattr(plans[-1], "predicted_peak_bytes", None) if plans else None
            out["predicted_peak_gib"] = gib(predicted) if predicted else na("no plan reported")
            if plans:
                info["wanfit_plan"] = plans[-1].describe() if hasattr(plans[-1], "describe") else str(plans[-1])
            out["peak_over_budget"] = NA_CPU if child.cpu else ratio(peaks["peak_torch_allocated_gib"], gib(budget))
        return out

    for kind in ("comfy", "wanfit"):
        if child.remaining() < 20:
            result["metrics"][kind] = na("skipped: global deadline reached")
            continue
        record(result, kind, lambda kind=kind: arm(kind))
        child.save()
    metrics = result["metrics"]
    if isinstance(metrics.get("comfy"), dict) and isinstance(metrics.get("wanfit"), dict):
        metrics["wanfit_time_over_comfy"] = ratio(metrics["wanfit"].get("seconds"), metrics["comfy"].get("seconds"))
        metrics["wanfit_peak_over_comfy"] = NA_CPU if child.cpu else ratio(
            metrics["wanfit"].get("peak_torch_allocated_gib"), metrics["comfy"].get("peak_torch_allocated_gib"))


def graph_for(kind, mode):
    """(API prompt, sampler node id, decode node id) for the same TI2V-5B job; no video encode, no text encoder."""
    from tests.host import graphs

    width, height, frames, steps = JOBS[mode]["ti2v_5b"]
    if mode == "cpu-tiny":
        model_name, vae_name = graphs.TI2V_5B, graphs.VAE_22
    else:
        model_name, vae_name = TI2V_5B_FILE, WAN22_VAE_FILE
    if kind == "comfyui_template":
        prompt = graphs.ti2v_5b_stock(width=width, height=height, frames=frames, steps=steps)
        prompt["1"]["inputs"]["unet_name"] = model_name
        prompt["2"]["inputs"]["vae_name"] = vae_name
        for node in ("9", "10"):  # CreateVideo + SaveVideo: mp4 encoding is not what is compared
            del prompt[node]
        return prompt, "7", "8"
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "ti2v_5b_t2v.json").read_text())
    prompt["10"]["inputs"].update(width=width, height=height, frames=frames)
    prompt["11"]["inputs"]["model_name"] = model_name
    prompt["13"]["inputs"]["vae_name"] = vae_name
    prompt["30"]["inputs"].update(width=width, height=height, length=frames)
    prompt["40"]["inputs"]["steps"] = steps
    del prompt["12"]  # the text encoder loader: conditioning of the real shape stands in
    prompt["20"] = graphs.text_encode("a red fox running through snow", 1)
    prompt["21"] = graphs.text_encode("blurry, static", 2)
    for node in ("50", "70", "71"):  # SaveLatent, CreateVideo, SaveVideo
        del prompt[node]
    return prompt, "40", "60"


class _QuietServer:
    """What PromptExecutor needs of ComfyUI's server when nobody is listening."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata = {}

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


def run_graph(child, case, result):
    import torch
    import comfy.utils
    import execution
    from comfy_execution.utils import get_executing_context

    prompt, sampler_id, decode_id = graph_for(case["graph"], child.mode)
    info = result["info"]
    info["graph"] = case["graph"]
    info["nodes"] = sorted({node["class_type"] for node in prompt.values()})
    info["dynamic_vram_enabled"] = _aimdo_enabled()
    if not child.apply_cap(case, result):
        return
    steps = JOBS[child.mode]["ti2v_5b"][3]

    def run():
        parameters = inspect.signature(execution.PromptExecutor).parameters
        if "cache_args" in parameters:
            executor = execution.PromptExecutor(_QuietServer(), cache_type=False,
                                                cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        else:
            executor = execution.PromptExecutor(_QuietServer(), cache_type=False)
        stamps, phase = [], {}
        meter = PeakMeter(child)

        def hook(value, total, preview, prompt_id=None, node_id=None):
            context = get_executing_context()
            node = node_id or (context.node_id if context is not None else None)
            if str(node) == sampler_id:
                stamps.append(time.perf_counter())
                if value >= total and "sampling" not in phase:
                    phase["sampling"] = meter.snapshot()
                    if not child.cpu:
                        torch.cuda.reset_peak_memory_stats()
                        meter.device_peak = 0

        comfy.utils.set_progress_bar_global_hook(hook)
        with meter:
            started = time.perf_counter()
            executor.execute(prompt, "wanfit-gpu-check", {}, [decode_id])
            seconds = time.perf_counter() - started
            after = meter.snapshot()
        comfy.utils.set_progress_bar_global_hook(None)
        failure = [data for event, data in executor.status_messages if event == "execution_error"]
        oom = any("OutOfMemory" in str(f.get("exception_type", "")) or "out of memory" in
                  str(f.get("exception_message", "")).lower() for f in failure)
        if failure and not oom:
            raise RuntimeError(f"graph failed at node {failure[0].get('node_id')} "
                               f"({failure[0].get('node_type')}): {failure[0].get('exception_message')}")
        s_per_step, how = _step_seconds(stamps, seconds, steps)
        info["s_per_step_method"] = how + " (sampler node progress)"
        sampling = phase.get("sampling", {})
        out = {"prompt_seconds": round(seconds, 2), "s_per_step": s_per_step if stamps else na("no sampler progress"),
               "oom": oom, "steps": steps}
        for key in ("peak_torch_allocated_gib", "peak_device_used_gib"):
            out[f"sampling_{key}"] = sampling.get(key, na("sampling did not finish"))
            out[f"after_sampling_{key}"] = after[key]
        if oom:
            result["notes"].append(f"out of memory at node {failure[0].get('node_id')} ({failure[0].get('node_type')})")
        return out

    record(result, "run", run)


def _quantized_layers(patcher):
    """(layers the core loaded in a quantized format, those it computes natively): the core's mixed_precision_ops
    gives a quantized layer a `layout_type` and marks it `_full_precision_mm` where this card cannot compute its
    format (comfy.ops.pick_operations): such a layer is dequantized to the compute dtype each time it runs."""
    layers = [module for module in patcher.model.diffusion_model.modules()
              if getattr(module, "layout_type", None) is not None]
    return len(layers), sum(1 for module in layers if not getattr(module, "_full_precision_mm", False))


def _kitchen_backends():
    try:
        import comfy_kitchen

        return ", ".join(name for name, backend in comfy_kitchen.list_backends().items()
                         if backend.get("available") and not backend.get("disabled")) or "none"
    except Exception as error:  # noqa: BLE001
        return f"unknown ({type(error).__name__}: {error})"


def _lean_against_core(child, patcher, latent_shape, context):
    """max |lean - core| / max |core| of the diffusion model's raw output: one forward through the core's own
    apply_model with its blocks, one with WanFit's lean blocks (no self-check: the lean block alone)."""
    import torch
    import comfy.model_management as mm
    from wanfit.lean_forward import lean_transformer_options
    from tests.quantized_wan import relative_difference

    device = mm.get_torch_device()
    base = patcher.model
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(latent_shape, generator=generator).to(device)
    sigma = torch.tensor([0.6], device=device)
    outputs = []
    hook = base.diffusion_model.register_forward_hook(lambda module, args, output: outputs.append(output.float()))
    seconds = {}
    mm.load_models_gpu([patcher])
    patcher.pre_run()
    try:
        for arm, options in (("core", {}), ("lean", lean_transformer_options(len(base.diffusion_model.blocks),
                                                                              mode="on", checked=False))):
            with torch.inference_mode():
                if not child.cpu:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                base.apply_model(x, sigma, c_crossattn=context.to(device), transformer_options=options)
                if not child.cpu:
                    torch.cuda.synchronize()
                seconds[arm] = round(time.perf_counter() - started, 4)
    finally:
        hook.remove()
        patcher.cleanup()
    core, lean = outputs
    return {"lean_over_core_max_relative": relative_difference(lean, core), "core_forward_seconds": seconds["core"],
            "lean_forward_seconds": seconds["lean"], "forward_tokens": int(core[0, 0].numel() // 4)}


def run_formats(child, case, result):
    """TI2V-5B with its block linears quantized by the core's own QuantizedTensor.from_float, per format: loaded by
    the core as a file with a `_quantization_metadata` header, sampled with ComfyUI's own sampler, and its forward
    compared with WanFit's lean one."""
    import torch
    import comfy.model_management as mm
    import comfy.sample
    import comfy.sd
    import comfy.utils
    from tests import quantized_wan
    from wanfit.device import probe_comfyui_device
    from wanfit.plan.formats import WEIGHT_DTYPE_ALIASES, compute_path

    info = result["info"]
    known = quantized_wan.core_formats()
    info["core_quant_algos"] = list(known)
    if not known:
        result["skipped"] = (f"skipped: ComfyUI {core_version(child.core)} has no quantized formats "
                             "(no comfy.quant_ops.QUANT_ALGOS)")
        return
    width, height, frames, steps = job = FORMAT_JOBS[child.mode]
    info["job"] = (f"TI2V-5B {width}x{height}x{frames}, {steps} steps, cfg {CFG}, {SAMPLER}/{SCHEDULER}; the block "
                   f"linears ({len(quantized_wan.BLOCK_LINEAR)} per block) quantized, the rest as in the fp16 file")
    info["comfy_kitchen_backends"] = _kitchen_backends()
    info["dynamic_vram_enabled"] = _aimdo_enabled()
    if not child.apply_cap(case, result):
        return
    source = {}

    def read():
        started = time.perf_counter()
        source["state_dict"] = comfy.utils.load_torch_file(str(model_paths(child)["ti2v_5b"]))
        return {"seconds": round(time.perf_counter() - started, 2)}

    record(result, "load", read)
    if "state_dict" not in source:
        return
    num_layers = 1 + max(int(key.split(".")[1]) for key in source["state_dict"] if key.startswith("blocks."))
    positive, negative = conditioning()
    latent = torch.zeros(1, 48, (frames - 1) // 4 + 1, height // 16, width // 16)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    lean_shape = (1, 48, *LEAN_LATENT[child.mode]) if child.mode in LEAN_LATENT else tuple(latent.shape)
    quantize_on = "cpu" if child.cpu else "cuda"
    takes_metadata = "metadata" in inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters
    device = probe_comfyui_device()
    metrics = result["metrics"]

    def measure(arm):
        out = {}
        state_dict = dict(source["state_dict"])
        metadata = None
        if arm != "fp16":
            started = time.perf_counter()
            quantized_wan.quantize_block_linears(state_dict, arm, num_layers, comfy_quant=not takes_metadata,
                                                 device=quantize_on)
            if not child.cpu:
                torch.cuda.empty_cache()
            out["quantize_seconds"] = round(time.perf_counter() - started, 2)
            layers = {f"blocks.{index}.{name}": {"format": arm} for index in range(num_layers)
                      for name in quantized_wan.BLOCK_LINEAR}
            metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
        weight_dtype = WEIGHT_DTYPE_ALIASES.get(arm, arm)
        try:
            plan = wanfit_plan(child, "ti2v_5b", job, weight_dtype)
            info[f"{arm}_plan"] = plan.summary()
        except Exception as error:  # noqa: BLE001 - a refusal is a result
            plan = None
            info[f"{arm}_plan"] = f"refused: {str(error)[:400]}"
        started = time.perf_counter()
        extra = {"metadata": metadata} if takes_metadata and metadata else {}
        patcher = comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={}, **extra)
        out["load_seconds"] = round(time.perf_counter() - started, 2)
        base = patcher.model  # get_dtype_inference arrived after 0.3.76
        compute_dtype = base.get_dtype_inference() if hasattr(base, "get_dtype_inference") else (
            base.manual_cast_dtype or base.get_dtype())
        info[f"{arm}_compute_dtype"] = str(compute_dtype).replace("torch.", "")
        quantized, native = _quantized_layers(patcher)
        out["quantized_layers"] = quantized
        if arm != "fp16":
            # what the core did: its loader marks each layer it will dequantize as it runs
            out["layers_native"], out["layers_dequantized"] = native, quantized - native
            if not quantized:
                out["core_ran_natively"] = na("no loaded layer has a layout_type to read")
            elif native in (0, quantized):
                out["core_ran_natively"] = native == quantized
            else:
                out["core_ran_natively"] = na(f"mixed: {native} of {quantized} layers native")
            path = compute_path(weight_dtype, device)
            info[f"{arm}_plan_compute"] = path.describe()
            out["plan_says_native"] = path.native
            if isinstance(out["core_ran_natively"], bool):
                out["core_agrees_with_plan"] = out["core_ran_natively"] == path.native
        stamps = []
        with PeakMeter(child) as meter:
            started = time.perf_counter()
            comfy.sample.sample(patcher, noise, steps, CFG, SAMPLER, SCHEDULER, positive, negative, latent, seed=5,
                                disable_pbar=True,
                                callback=lambda step, x0, x, total: stamps.append(time.perf_counter()))
            seconds = time.perf_counter() - started
            peaks = meter.snapshot()
        out["s_per_step"], info[f"{arm}_s_per_step_method"] = _step_seconds(stamps, seconds, steps)
        out.update(sampling_seconds=round(seconds, 2), steps=steps, oom=False, **peaks)
        if child.cpu:
            out["predicted_sample_vram_gib"] = out["measured_over_predicted"] = NA_CPU
        elif plan is not None:
            predicted = plan.predicted_vram_by_phase.get("sample") or plan.predicted_peak_vram_bytes
            out["predicted_sample_vram_gib"] = gib(predicted)
            out["measured_over_predicted"] = ratio(peaks["peak_device_used_gib"], gib(predicted))
        else:
            out["predicted_sample_vram_gib"] = out["measured_over_predicted"] = na("the plan refused (see info)")
        if child.remaining() <= 15:
            out["lean_over_core_max_relative"] = na("skipped: global deadline reached")
        else:  # a failure here must not lose the arm's other numbers
            try:
                out.update(_lean_against_core(child, patcher, lean_shape, positive[0][0]))
            except Exception as error:  # noqa: BLE001
                first_line = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
                if is_oom(error):
                    result["notes"].append(f"{arm} lean against core: out of memory ({first_line})")
                    out["lean_over_core_max_relative"] = na("out of memory (see notes)")
                else:
                    result["errors"].append(f"{arm} lean against core: {first_line}\n{traceback.format_exc(limit=-8)}")
                    out["lean_over_core_max_relative"] = na(f"the forward raised {type(error).__name__} (see errors)")
        del patcher, state_dict
        mm.unload_all_models()
        return out

    for arm in FORMAT_ARMS:
        if arm != "fp16" and arm not in known:
            metrics[arm] = na(f"this core's QUANT_ALGOS has no {arm} (it has {', '.join(known)})")
        elif child.remaining() < 45:  # one arm on a GPU: quantize, load, sample and two forwards, about 15-20 s
            metrics[arm] = na("skipped: global deadline reached")
        else:
            record(result, arm, lambda arm=arm: measure(arm))
        child.save()
    baseline = metrics.get("fp16")
    for arm in FORMAT_ARMS[1:]:
        if isinstance(metrics.get(arm), dict) and isinstance(baseline, dict):
            metrics[arm]["s_per_step_over_fp16"] = ratio(metrics[arm].get("s_per_step"), baseline.get("s_per_step"))
            metrics[arm]["peak_device_over_fp16"] = NA_CPU if child.cpu else ratio(
                metrics[arm].get("peak_device_used_gib"), baseline.get("peak_device_used_gib"),
                na("a peak is missing (OOM)"))


CASE_RUNNERS = {"env": run_env, "prepare": run_prepare, "sample": run_sample, "decode": run_decode, "graph": run_graph,
                "formats": run_formats}


def child_main(args):
    cases = json.loads(Path(args.cases_file).read_text())
    child = Child(args)
    flags = json.loads(args.flags)
    for case in cases:
        child.results[case["name"]] = {"name": case["name"], "kind": case["kind"], "status": "running",
                                       "flags": flags, "metrics": {}, "info": {}, "notes": [], "errors": []}
    child.save()
    try:
        child.boot(flags)
    except Exception:  # noqa: BLE001
        for result in child.results.values():
            result["status"] = "error"
            result["errors"].append("core start-up failed:\n" + traceback.format_exc())
        child.save()
        return 1
    for case in cases:
        result = child.results[case["name"]]
        started = time.perf_counter()
        try:
            CASE_RUNNERS[case["kind"]](child, case, result)
        except Exception:  # noqa: BLE001
            result["errors"].append(traceback.format_exc())
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["status"] = "error" if result["errors"] else ("skipped" if result.get("skipped") else "ok")
        if result.get("skipped"):
            result["reason"] = result.pop("skipped")
        child.save()
    return 0


# --- parent: run the cases, collect, summarise ---------------------------------------------


def run_children(args, cases, out_dir, report):
    work_dir = out_dir / "work"
    for folder in ("output", "temp", "input", "user", "custom_nodes", "logs"):
        (work_dir / folder).mkdir(parents=True, exist_ok=True)
    (work_dir / "extra_model_paths.yaml").write_text(
        "wanfit_gpu_check:\n"
        f"    base_path: {models_root(args)}\n"
        "    diffusion_models: diffusion_models\n"
        "    vae: vae\n")
    dynamic_core = core_has_dynamic_vram(args.comfyui)
    deadline = report["deadline_epoch"]
    total_vram_bytes = None
    # one child per case on a GPU; on the CPU cases with the same core flags share one (start-up time)
    groups = []
    for case in cases:  # the report lists cases in run order; "pending" until their child reports
        report["cases"][case["name"]] = {"name": case["name"], "kind": case["kind"], "status": "pending",
                                         "metrics": {}, "errors": [], "notes": [], "info": {}}
    for case in cases:
        if case.get("not_applicable"):
            report["cases"][case["name"]] = {"name": case["name"], "kind": case["kind"], "status": "n/a",
                                             "reason": case["not_applicable"], "metrics": {}, "errors": [],
                                             "notes": [], "info": {}}
            continue
        flags_key = json.dumps(core_flags(case, args.mode, dynamic_core, work_dir, 1))
        same = [group for group in groups if group[0] == flags_key]
        if args.mode == "cpu-tiny" and same:
            same[0][1].append(case)
        else:
            groups.append((flags_key, [case]))
    for _, group in groups:
        names = ",".join(case["name"] for case in group)
        remaining = deadline - time.time()
        if remaining < 30:
            for case in group:
                report["cases"][case["name"]] = {"name": case["name"], "kind": case["kind"], "status": "skipped",
                                                 "reason": "skipped: global deadline reached", "metrics": {},
                                                 "errors": [], "notes": [], "info": {}}
            write_outputs(out_dir, report)
            continue
        flags = core_flags(group[0], args.mode, dynamic_core, work_dir, total_vram_bytes)
        cases_file = work_dir / f"cases_{group[0]['name']}.json"
        cases_file.write_text(json.dumps(group))
        result_file = work_dir / f"result_{group[0]['name']}.json"
        result_file.unlink(missing_ok=True)
        log_path = work_dir / "logs" / f"{group[0]['name']}.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--case", names, "--cases-file", str(cases_file),
                   "--result-file", str(result_file), "--flags", json.dumps(flags), "--work-dir", str(work_dir),
                   "--comfyui", str(args.comfyui), "--mode", args.mode, "--cache-dir", str(args.cache_dir),
                   "--deadline", str(deadline)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        started = time.perf_counter()
        print(f"[gpu_check] {names} ...", flush=True)
        timed_out = False
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
            try:
                process.wait(timeout=max(5, remaining - 5))
            except subprocess.TimeoutExpired:
                timed_out = True
                process.kill()
                process.wait(timeout=30)
        seconds = time.perf_counter() - started
        results = json.loads(result_file.read_text()) if result_file.exists() else {}
        for case in group:
            result = results.get(case["name"]) or {"name": case["name"], "kind": case["kind"], "metrics": {},
                                                    "info": {}, "notes": [], "errors": []}
            if result.get("status") in (None, "running"):
                result["status"] = "error"
                why = "killed at the global deadline" if timed_out else f"child exited with code {process.returncode}"
                result["errors"].append(f"{why}; log: {log_path}\n{_tail(log_path)}")
            result["log"] = str(log_path)
            report["cases"][case["name"]] = result
            if "total_vram_bytes" in result:
                total_vram_bytes = result["total_vram_bytes"]
        statuses = ", ".join(f"{c['name']} {report['cases'][c['name']]['status']}" for c in group)
        print(f"[gpu_check]   {statuses} ({seconds:.1f} s)", flush=True)
        write_outputs(out_dir, report)


def _tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def summarise(report):
    cases = report["cases"]

    def metric(case, *keys):
        value = cases.get(case, {}).get("metrics", {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    summary = {}
    for cap in CAPS_GB:
        summary[f"ti2v_5b_cap{cap}_sage_speedup_over_sdpa"] = metric(f"sample_ti2v_5b_cap{cap}", "sage_speedup_over_sdpa")
    on = metric("sample_ti2v_5b_cap24", "sdpa", "s_per_step")
    off = cases.get("sample_ti2v_5b_cap24_dynamic_vram_off", {})
    if off.get("status") == "n/a":
        summary["dynamic_vram_off_over_on_s_per_step"] = off["reason"]
    elif report["mode"] == "cpu-tiny":
        summary["dynamic_vram_off_over_on_s_per_step"] = na("n/a on CPU: dynamic VRAM is off with --cpu")
    else:
        summary["dynamic_vram_off_over_on_s_per_step"] = ratio(metric(off.get("name", ""), "sdpa", "s_per_step"), on)
        summary["dynamic_vram_off_over_on_peak_device"] = ratio(
            metric(off.get("name", ""), "sdpa", "peak_device_used_gib"),
            metric("sample_ti2v_5b_cap24", "sdpa", "peak_device_used_gib"))
    for case in ("sample_ti2v_5b_cap24", "sample_t2v_a14b_cap24_lean_vs_stock"):
        label = case.replace("sample_", "").replace("_lean_vs_stock", "")
        for key in ("lean_over_stock_s_per_step", "lean_over_stock_peak_torch"):
            summary[f"{label}_{key}"] = metric(case, key)
    template = metric("graph_comfyui_template_ti2v_5b_cap24", "run", "s_per_step")
    wanfit = metric("graph_wanfit_ti2v_5b_cap24", "run", "s_per_step")
    summary["graph_template_over_wanfit_s_per_step"] = ratio(template, wanfit)
    summary["graph_template_oom"] = metric("graph_comfyui_template_ti2v_5b_cap24", "run", "oom")
    summary["graph_wanfit_oom"] = metric("graph_wanfit_ti2v_5b_cap24", "run", "oom")
    summary["decode_wanfit_time_over_comfy"] = metric("decode_wan22_cap24", "wanfit_time_over_comfy")
    summary["decode_wanfit_peak_over_comfy"] = metric("decode_wan22_cap24", "wanfit_peak_over_comfy")
    formats = cases.get(FORMATS_CASE, {})
    for arm in FORMAT_ARMS[1:]:
        if formats.get("status") in ("n/a", "skipped"):
            summary[f"format_{arm}_s_per_step_over_fp16"] = formats.get("reason")
            continue
        summary[f"format_{arm}_s_per_step_over_fp16"] = metric(FORMATS_CASE, arm, "s_per_step_over_fp16")
        summary[f"format_{arm}_lean_over_core_max_relative"] = metric(FORMATS_CASE, arm, "lean_over_core_max_relative")
    return {key: (value if value is not None else "n/a: not measured") for key, value in summary.items()}


def _fmt(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    if value is None:
        return "-"
    return str(value)


def markdown(report):
    env = report["cases"].get("env", {}).get("info", {})
    device = env.get("device_name") or ("CPU" if report["mode"] == "cpu-tiny" else "unknown device")
    lines = [f"# WanFit GPU check: ComfyUI {report['core_version']} ({report['mode']})", "",
             f"Core {report['core_version']} at {report['core_path']}; device {device}; torch {env.get('torch', '?')}; "
             f"sageattention: {env.get('sageattention', '?')}; started {report['started']}, "
             f"{report.get('seconds', 0):.0f} s of a {report['deadline_s']} s deadline.", ""]
    if report["mode"] == "cpu-tiny":
        lines += ["Tiny CPU self-test (dim 128 models): proves the script runs; not a benchmark.", ""]
    lines += ["| case | arm | status | s/step (or detail) | peak torch GiB | peak device GiB | plan GiB | measured/plan | OOM | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, case in report["cases"].items():
        status = case.get("status")
        metrics = case.get("metrics", {})
        if status in ("n/a", "skipped", "pending"):
            lines.append(f"| {name} | - | {case.get('reason', status)} | | | | | | | |")
            continue
        planned = metrics.get("plan", {}) if isinstance(metrics.get("plan"), dict) else {}
        arms = [(key, value) for key, value in metrics.items()
                if isinstance(value, dict) and key not in ("plan", "load", "cap", "build")]
        if not arms:
            row = {key: value for key, value in metrics.items() if not isinstance(value, dict)}
            detail = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items())
            lines.append(f"| {name} | - | {status} | {detail} | | | | | | {_fmt(case.get('seconds'))} |")
        for arm, values in arms:
            peak_torch = values.get("peak_torch_allocated_gib", values.get("sampling_peak_torch_allocated_gib"))
            peak_device = values.get("peak_device_used_gib", values.get("sampling_peak_device_used_gib"))
            plan_gib = planned.get("predicted_sample_vram_gib", values.get(
                "predicted_sample_vram_gib", values.get("predicted_peak_gib", values.get("budget_gib"))))
            lines.append(f"| {name} | {arm} | {status} | {_fmt(values.get('s_per_step'))} | {_fmt(peak_torch)} | "
                         f"{_fmt(peak_device)} | {_fmt(plan_gib)} | "
                         f"{_fmt(values.get('measured_over_predicted', values.get('peak_over_budget')))} | "
                         f"{_fmt(values.get('oom'))} | "
                         f"{_fmt(values.get('seconds', values.get('sampling_seconds', values.get('prompt_seconds'))))} |")
    lines += formats_markdown(report)
    lines += ["", "| comparison | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in report.get("summary", {}).items()]
    errors = [(name, case["errors"]) for name, case in report["cases"].items() if case.get("errors")]
    if errors:
        lines += ["", "## Errors", ""]
        for name, messages in errors:
            for message in messages:
                lines.append(f"- {name}: {message.strip().splitlines()[-1][:300]}")
    return "\n".join(lines) + "\n"


def formats_markdown(report):
    """The formats case's own table: what the core computed natively, and the lean forward's difference."""
    case = report["cases"].get(FORMATS_CASE)
    if not case or case.get("status") in ("n/a", "skipped", "pending"):
        return []
    info = case.get("info", {})
    lines = ["", f"## Quantized formats ({FORMATS_CASE}: {info.get('job', '')}; comfy-kitchen backends: "
                 f"{info.get('comfy_kitchen_backends', '?')})", "",
             "| format | s/step | over fp16 | peak device GiB | plan GiB | measured/plan | layers native/quantized "
             "| core ran | plan says | lean vs core (max rel.) | lean s / core s per forward |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in FORMAT_ARMS:
        values = case.get("metrics", {}).get(arm)
        if not isinstance(values, dict):
            lines.append(f"| {arm} | {_fmt(values)} | | | | | | | | | |")
            continue

        def mode(flag):
            return flag if isinstance(flag, str) else ("native" if flag else "dequantized")

        layers = (f"{values.get('layers_native')}/{values.get('quantized_layers')}" if "layers_native" in values
                  else "-")
        core_ran = "-" if arm == "fp16" else mode(values.get("core_ran_natively"))
        plan_says = "-" if arm == "fp16" else mode(values.get("plan_says_native"))
        lines.append(f"| {arm} ({info.get(f'{arm}_compute_dtype', '?')}) | {_fmt(values.get('s_per_step'))} | "
                     f"{_fmt(values.get('s_per_step_over_fp16'))} | {_fmt(values.get('peak_device_used_gib'))} | "
                     f"{_fmt(values.get('predicted_sample_vram_gib'))} | {_fmt(values.get('measured_over_predicted'))} "
                     f"| {layers} | {core_ran} | {plan_says} | {_fmt(values.get('lean_over_core_max_relative'))} | "
                     f"{_fmt(values.get('lean_forward_seconds'))} / {_fmt(values.get('core_forward_seconds'))} |")
    return lines


def write_outputs(out_dir, report):
    report["seconds"] = round(time.time() - report["started_epoch"], 1)
    report["summary"] = summarise(report)
    write_json_atomically(out_dir / "gpu_check.json", report)
    (out_dir / "gpu_check.md").write_text(markdown(report))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:5]))
    parser.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json, gpu_check.md and logs")
    parser.add_argument("--cpu-tiny", action="store_true",
                        help="self-test: every case at a tiny size on the CPU (dim 128 models, 32x32x5, 2 steps)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", str(Path.home() / "ComfyUI")),
                        help="ComfyUI checkout (default $COMFYUI_PATH, else ~/ComfyUI)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="stop starting work after this many seconds (default 470 on a GPU, 240 with --cpu-tiny)")
    parser.add_argument("--cache-dir", default=os.environ.get("WANFIT_GPU_CHECK_CACHE",
                                                              str(Path.home() / ".cache" / "wanfit" / "gpu_check")),
                        help="where the real-size random model files are written once (about 11.5 GB)")
    parser.add_argument("--only", default=None, help="comma-separated case names to run (default: all)")
    # internal: one child process
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cases-file", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--flags", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        return child_main(args)
    args.mode = "cpu-tiny" if args.cpu_tiny else "gpu"
    core = Path(args.comfyui).expanduser().resolve()
    if not (core / "main.py").is_file():
        print(f"No ComfyUI checkout at {core}: set COMFYUI_PATH or pass --comfyui.", file=sys.stderr)
        return 2
    args.comfyui = str(core)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline_s = args.deadline_s or DEFAULT_DEADLINE_S[args.mode]
    started = time.time()
    cases = build_cases(args.mode, core_has_dynamic_vram(core))
    if args.only:
        wanted = set(args.only.split(",")) | {"env", "prepare_models"}
        cases = [case for case in cases if case["name"] in wanted]
    report = {"schema": SCHEMA_VERSION, "mode": args.mode, "core_path": str(core), "core_version": core_version(core),
              "dynamic_vram_core": core_has_dynamic_vram(core), "repository_commit": _git_commit(),
              "python": sys.executable, "started": now_iso(), "started_epoch": started, "deadline_s": deadline_s,
              "deadline_epoch": started + deadline_s, "jobs": JOBS[args.mode], "cases": {}}
    write_outputs(out_dir, report)
    run_children(args, cases, out_dir, report)
    for case in report["cases"].values():
        if case["status"] == "pending":
            case.update(status="skipped", reason="skipped: never started")
    report["finished"] = now_iso()
    write_outputs(out_dir, report)
    print((out_dir / "gpu_check.md").read_text())
    print(f"[gpu_check] wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0


def _git_commit():
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    return ""


if __name__ == "__main__":
    sys.exit(main())
