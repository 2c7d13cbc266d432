"""`python -m wanfit worker-start`: the start step of a RunPod serverless worker, then ComfyUI.

Reads WANFIT_WORKFLOWS (which models to put on the volume), GPU_TIER (plan for this tier instead
of the GPU found), WANFIT_VOLUME (default /runpod-volume), COMFYUI_PATH (default /comfyui),
WANFIT_MODEL_BASE_URL (a mirror holding <folder>/<filename>), WANFIT_MANIFEST (that mirror's
sizes and sha256, in wanfit/models/manifest.json's format), WANFIT_PLAN_SIZE (the largest job,
WIDTHxHEIGHTxFRAMES) and WANFIT_STATE_DIR (default /tmp/wanfit-worker). Plans ComfyUI's launch
flags, downloads the missing model files to <volume>/models, writes an extra-model-paths file,
then replaces itself with worker-comfyui's start script carrying those flags (--handover, the
image's default) or with ComfyUI's main.py (--exec-comfyui; arguments after `--` are appended).
Exit 2, with the reason on stderr, when anything fails; nothing is started then.
"""

import argparse
import logging
import os
from pathlib import Path
import shlex
import sys

from ..errors import WanFitError
from ..remote.transfer import write_atomically
from ..remote.worker import DEFAULT_COMFYUI, DEFAULT_VOLUME, WorkerStartError, patch_start_script, prepare

PREFIX = "wanfit worker-start: "


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m wanfit worker-start", description=__doc__.splitlines()[0])
    parser.add_argument("--volume", default=None,
                        help=f"the network volume (default $WANFIT_VOLUME or {DEFAULT_VOLUME})")
    parser.add_argument("--comfyui", default=None,
                        help=f"the ComfyUI checkout (default $COMFYUI_PATH or {DEFAULT_COMFYUI})")
    parser.add_argument("--state-dir", default=None,
                        help="where the extra-model-paths file and the patched start script go "
                             "(default $WANFIT_STATE_DIR or /tmp/wanfit-worker)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--handover", metavar="SCRIPT", default=None,
                      help="worker-comfyui's start script to run with the flags "
                           "(default $WANFIT_HANDOVER or /start.sh)")
    mode.add_argument("--exec-comfyui", action="store_true",
                      help="start ComfyUI's main.py directly (arguments after -- are appended)")
    mode.add_argument("--prepare-only", action="store_true", help="print ComfyUI's arguments and stop")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(PREFIX + "%(message)s"))
    logger = logging.getLogger("wanfit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    volume = args.volume or os.environ.get("WANFIT_VOLUME") or DEFAULT_VOLUME
    state_dir = Path(args.state_dir or os.environ.get("WANFIT_STATE_DIR") or "/tmp/wanfit-worker")
    comfyui = Path(args.comfyui or os.environ.get("COMFYUI_PATH") or DEFAULT_COMFYUI)
    try:
        handover = None
        if not (args.exec_comfyui or args.prepare_only):
            handover = Path(args.handover or os.environ.get("WANFIT_HANDOVER") or "/start.sh")
            if not handover.is_file():
                raise WorkerStartError(f"worker-comfyui's start script {handover} was not found. Fix: build the image "
                                       "from deploy/runpod/Dockerfile (its base image has /start.sh), or pass "
                                       "--handover PATH.")
        prepared = prepare(os.environ, volume, comfyui, state_dir)
        comfy_args = prepared.args + extra
        sys.stderr.write(f"{PREFIX}ComfyUI arguments: {' '.join(shlex.quote(a) for a in comfy_args)}\n")
        if args.prepare_only:
            print(" ".join(shlex.quote(a) for a in comfy_args))
            return 0
        env = dict(os.environ, **prepared.env)
        if handover is not None:
            script = write_atomically(state_dir / "start.sh",
                                      patch_start_script(handover.read_text(encoding="utf-8"), comfy_args,
                                                         prepared.env, source=str(handover)))
            sys.stderr.write(f"{PREFIX}handing over to {handover} (with the flags: {script})\n")
            sys.stderr.flush()
            os.execvpe("bash", ["bash", str(script)], env)
        main_py = comfyui / "main.py"
        sys.stderr.write(f"{PREFIX}starting {main_py}\n")
        sys.stderr.flush()
        os.chdir(comfyui)
        os.execve(sys.executable, [sys.executable, "-u", str(main_py), *comfy_args], env)
    except WanFitError as error:
        sys.stderr.write(f"{PREFIX}{error}\n")
        return 2
    except OSError as error:  # exec failed, state dir not writable
        sys.stderr.write(f"{PREFIX}{error}\n")
        return 2
