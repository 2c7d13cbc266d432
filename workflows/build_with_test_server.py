"""Rebuild the shipped workflows against a throw-away ComfyUI server (the test harness's).

    ~/.cache/wanfit/venv/bin/python workflows/build_with_test_server.py
"""

from pathlib import Path
import sys
import tempfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.comfy_import import comfyui_path  # noqa: E402
from tests.fixtures.generate import ensure_fixtures, fixture_dir  # noqa: E402
from tests.host.server import ComfyServer  # noqa: E402
from wanfit.remote.client import ComfyClient  # noqa: E402
from workflows.build import build  # noqa: E402


def main():
    comfy = comfyui_path()
    ensure_fixtures(comfy)
    with tempfile.TemporaryDirectory() as work_dir:
        server = ComfyServer(comfy, fixture_dir(), work_dir).start()
        try:
            build(ComfyClient(server.url).object_info())
        finally:
            server.stop()
    print("wrote workflows/api, workflows/ui, example_workflows")


if __name__ == "__main__":
    main()
