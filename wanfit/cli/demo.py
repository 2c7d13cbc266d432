"""`python -m wanfit demo [--out DIR]`: one TI2V-5B video through a real ComfyUI, on whatever this machine has.

Starts ComfyUI (from $COMFYUI_PATH, else ~/ComfyUI) on a free port with WanFit loaded, runs the
shipped TI2V-5B text-to-video workflow through /prompt and prints the video's path. With the
official files in ComfyUI's models folder it runs them at a small size; without them it builds
tiny random-weight WAN 2.2 models first (the video is then noise: it shows the pipeline works).
Run it from a clone of WanFit, with the Python that has ComfyUI's requirements
(`bash tests/run.sh --setup-only` makes one at ~/.cache/wanfit/venv).
"""

import argparse
import importlib.util
import os
from pathlib import Path
import sys
import tempfile
import time

from ..errors import WanFitError

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_FILES = {"diffusion_models": ["wan2.2_ti2v_5B_fp16.safetensors"], "vae": ["wan2.2_vae.safetensors"],
              "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors"]}
COMFYUI_NEEDS = ("torch", "aiohttp", "yaml", "safetensors", "av", "sqlalchemy")


class DemoError(WanFitError):
    pass


def find_comfyui():
    path = Path(os.environ.get("COMFYUI_PATH") or Path.home() / "ComfyUI").expanduser()
    if not (path / "main.py").is_file():
        raise DemoError(f"no ComfyUI checkout at {path} ($COMFYUI_PATH, else ~/ComfyUI). Fix: "
                        "git clone https://github.com/comfyanonymous/ComfyUI ~/ComfyUI (or set COMFYUI_PATH), then "
                        "bash tests/run.sh --setup-only, then ~/.cache/wanfit/venv/bin/python -m wanfit demo")
    return path


def check_interpreter():
    missing = [name for name in COMFYUI_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoError(f"this Python ({sys.executable}) lacks ComfyUI's requirements ({', '.join(missing)}). Fix: "
                        "bash tests/run.sh --setup-only, then run ~/.cache/wanfit/venv/bin/python -m wanfit demo")


def real_models_present(comfyui):
    models = comfyui / "models"
    return all(any((models / folder / name).is_file() for name in names) for folder, names in REAL_FILES.items())


def run_demo(out_dir, width, height, frames, steps, log=print):
    comfyui = find_comfyui()
    check_interpreter()
    sys.path.insert(0, str(REPO_ROOT))
    from tests.fixtures.generate import ensure_fixtures, fixture_dir
    from tests.fixtures.workflows import for_tiny_fixtures
    from tests.host.server import ComfyServer
    from ..remote.client import ComfyClient
    from ..workflows import fill_workflow, load_input_map

    import torch

    has_gpu = torch.cuda.is_available()
    real = real_models_present(comfyui)
    with tempfile.TemporaryDirectory(prefix="wanfit-demo-") as work_dir:
        if real:
            log(f"official TI2V-5B files found in {comfyui / 'models'}: running them at {width}x{height}x{frames}")
            fixture_root = Path(work_dir) / "no-fixtures"
        else:
            log("no official TI2V-5B files found: building tiny random-weight WAN 2.2 models (the video is noise)")
            ensure_fixtures(comfyui, log=log)
            fixture_root = fixture_dir()
        server = ComfyServer(comfyui, fixture_root, work_dir, cpu=not has_gpu)
        log(f"starting ComfyUI from {comfyui} on {server.url} ({'GPU' if has_gpu else 'CPU'}) ...")
        started = time.monotonic()
        server.start()
        try:
            client = ComfyClient(server.url, request_timeout_s=120)
            if real:
                workflow = fill_workflow("ti2v_5b_t2v", width=width, height=height, frames=frames, steps=steps,
                                         filename_prefix="video/wanfit_demo")
                spec = load_input_map()["ti2v_5b_t2v"]
            else:
                workflow, spec = for_tiny_fixtures("ti2v_5b_t2v", Path(work_dir) / "input", width=width,
                                                   height=height, frames=frames, steps=steps,
                                                   filename_prefix="video/wanfit_demo_tiny")
            log("running the TI2V-5B workflow through /prompt ...")
            entry = client.run(workflow, timeout_s=3600)
            videos = client.output_files(entry, spec["video_node"])
            path = client.download(videos[0], out_dir)
            plan_text = entry["outputs"].get("10", {}).get("text", [""])[0]
            log(plan_text)
            log(f"done in {time.monotonic() - started:.0f} s")
            return path
        except WanFitError:
            log(server.log_tail(40))
            raise
        finally:
            server.stop()


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m wanfit demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="wanfit_demo", help="where the video is saved (default ./wanfit_demo)")
    parser.add_argument("--width", type=int, default=None, help="default 640 with real models, 64 with tiny ones")
    parser.add_argument("--height", type=int, default=None, help="default 352 with real models, 64 with tiny ones")
    parser.add_argument("--frames", type=int, default=None, help="4n+1; default 49 with real models, 9 with tiny")
    parser.add_argument("--steps", type=int, default=None, help="default 20 with real models, 2 with tiny ones")
    args = parser.parse_args(argv)
    try:
        real = real_models_present(find_comfyui())
        defaults = (640, 352, 49, 20) if real else (64, 64, 9, 2)
        width, height, frames, steps = (value if value is not None else default for value, default in
                                        zip((args.width, args.height, args.frames, args.steps), defaults))
        path = run_demo(Path(args.out), width, height, frames, steps, log=lambda text: print(text, file=sys.stderr))
    except WanFitError as error:
        print(f"wanfit demo: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
