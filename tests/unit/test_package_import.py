"""Importing the package (as ComfyUI does at start-up) loads no heavy module: it stays milliseconds."""

import json
from pathlib import Path
import subprocess
import sys

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "safetensors", "sageattention", "triton")

PROBE = """
import importlib.util, json, sys
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("ComfyUI_WanFit", root + "/__init__.py", submodule_search_locations=[root])
module = importlib.util.module_from_spec(spec)
sys.modules["ComfyUI_WanFit"] = module
spec.loader.exec_module(module)
print(json.dumps({"entry": callable(module.comfy_entrypoint), "modules": sorted(sys.modules)}))
"""


def test_the_package_imports_without_torch_or_any_accelerator_module():
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO_ROOT)], capture_output=True, text=True, timeout=120,
                            cwd="/")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    heavy = [name for name in HEAVY if name in loaded["modules"]]
    assert heavy == [], f"importing the package loaded {heavy}; import them inside the functions that need them"
    assert loaded["entry"], "the package exposes no comfy_entrypoint for ComfyUI to list its nodes"
