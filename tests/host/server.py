"""Start and stop a real ComfyUI server for host tests, without touching the ComfyUI checkout.

The package under test and the test-only nodes are linked into a temporary folder
that an extra-model-paths config names as a `custom_nodes` location; the fixture
models are found through the same config. Output, input, user and temp folders and
the database all live in a temporary directory.
"""

import os
from pathlib import Path
import re
import socket
import subprocess
import sys
import time
import urllib.request

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_LINK_NAME = "ComfyUI-WanFit"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui_path, fixture_root, work_dir, python=sys.executable, extra_args=(), cpu=True):
        self.comfyui_path = Path(comfyui_path)
        self.fixture_root = Path(fixture_root)
        self.work_dir = Path(work_dir)
        self.python = python
        self.extra_args = list(extra_args)
        self.cpu = cpu
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work_dir / "comfyui.log"
        # tests drop their own (bad) model files here; ComfyUI lists it like models/
        self.scratch_models = self.work_dir / "scratch_models"
        self.process = None

    def _prepare(self):
        custom_nodes = self.work_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        for name, target in ((PACKAGE_LINK_NAME, REPO_ROOT), ("wanfit_test_nodes", REPO_ROOT / "tests/host/test_nodes")):
            link = custom_nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        for folder in ("output", "input", "user", "temp"):
            (self.work_dir / folder).mkdir(exist_ok=True)
        config = self.work_dir / "extra_model_paths.yaml"
        config.write_text(
            "wanfit_tests:\n"
            f"    base_path: {self.fixture_root}\n"
            "    diffusion_models: diffusion_models\n"
            "    vae: vae\n"
            "    text_encoders: text_encoders\n"
            "    loras: loras\n"
            f"    custom_nodes: {custom_nodes}\n"
            "wanfit_scratch:\n"
            f"    base_path: {self.scratch_models}\n"
            "    diffusion_models: diffusion_models\n"
            "    vae: vae\n"
            "    text_encoders: text_encoders\n"
        )
        for folder in ("diffusion_models", "vae", "text_encoders"):
            (self.scratch_models / folder).mkdir(parents=True, exist_ok=True)
        return config

    def command(self):
        config = self._prepare()
        return [
            self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--output-directory", str(self.work_dir / "output"),
            "--input-directory", str(self.work_dir / "input"),
            "--user-directory", str(self.work_dir / "user"),
            "--temp-directory", str(self.work_dir / "temp"),
            "--database-url", f"sqlite:///{self.work_dir / 'comfyui.db'}",
            "--extra-model-paths-config", str(config),
            "--disable-auto-launch",
            *self.extra_args,
        ]

    def start(self, timeout_s=180):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.comfyui_path, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer on {self.url} within {timeout_s} s:\n{self.log_tail()}")

    def stop(self):
        stop_process(self.process)

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines=80):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def custom_node_import_seconds(self, name=PACKAGE_LINK_NAME):
        """The import time ComfyUI printed for a custom node package ('   0.0 seconds: /path/name')."""
        for line in self.log_text().splitlines():
            # 0.33 prefixes each line with a coloured level tag ("\x1b[32m[INFO]\x1b[0m ...")
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            match = re.search(r"(?:^|\s)([\d.]+) seconds( \(IMPORT FAILED\))?: (.+)$", line)
            if match and Path(match.group(3)).name == name:
                if match.group(2):
                    raise AssertionError(f"ComfyUI reported IMPORT FAILED for {name}:\n{self.log_tail()}")
                return float(match.group(1))
        return None


def stop_process(process):
    """Terminate a server process, killing it if it has not ended within 20 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
