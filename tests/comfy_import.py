"""Import ComfyUI's modules in-process (fixtures, detection checks) on a machine with no GPU."""

import os
from pathlib import Path
import sys


def comfyui_path():
    """$COMFYUI_PATH, else ~/ComfyUI; None when neither holds a ComfyUI checkout."""
    candidate = Path(os.environ.get("COMFYUI_PATH") or Path.home() / "ComfyUI").expanduser()
    return candidate if (candidate / "main.py").is_file() and (candidate / "comfy").is_dir() else None


def import_comfy(path=None, cpu=True):
    """Put ComfyUI on sys.path and force --cpu before model_management probes CUDA."""
    path = Path(path or comfyui_path())
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)

    return path
