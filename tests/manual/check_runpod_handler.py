"""By hand, outside CI: worker-comfyui's own handler against a local worker started by `wanfit worker-start`.

    python tests/manual/check_runpod_handler.py --worker-comfyui DIR --handler-python PYTHON

DIR holds worker-comfyui's handler.py and src/network_volume.py (a checkout, or files exported from
one: its code is not part of this repository). PYTHON is an interpreter with its handler's
dependencies (runpod, requests, websocket-client). ComfyUI is the checkout at $COMFYUI_PATH, run
with --cpu on 127.0.0.1:8188 (the handler's fixed address), started by
`python -m wanfit worker-start --exec-comfyui` on a temporary folder standing in for /runpod-volume
that holds the tiny fixtures under the official file names. Every shipped API workflow is sent
through the handler's `handler(job)` in its input format (start images as base64 in
`input.images`); then a fresh worker on the same volume decodes the latents the first jobs saved
with `decode_saved_latent`. Prints one line per job and a JSON summary.
"""

import argparse
import base64
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.generate import ensure_fixtures, fixture_dir  # noqa: E402
from tests.fixtures.workflows import FIXTURE_FOR, for_tiny_fixtures  # noqa: E402
from tests.host.server import PACKAGE_LINK_NAME  # noqa: E402
from wanfit.models import load_manifest  # noqa: E402
from wanfit.workflows import load_api_workflow, workflow_names  # noqa: E402

PORT = 8188
TEXT_ENCODERS = ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",)

# Run inside the handler's interpreter: one job, the handler's answer as JSON on stdout's last line.
RUN_JOB = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/src"]
import handler
job = json.load(open(sys.argv[2]))
result = handler.handler(job)
print("WANFIT_RESULT " + json.dumps(result))
"""


def fill_volume(volume):
    """Every official file of the manifest's default slots, as its tiny fixture (text encoder: a stand-in)."""
    manifest = load_manifest()
    for workflow in manifest["workflows"].values():
        for slot in workflow["slots"]:
            name = slot["any_of"][0]
            entry = next(f for f in manifest["files"] if f["filename"] == name)
            dest = volume / "models" / entry["folder"] / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name in TEXT_ENCODERS:
                dest.write_bytes(b"text encoder stand-in\n")
            else:
                shutil.copyfile(fixture_dir() / entry["folder"] / FIXTURE_FOR[name], dest)


def job_workflow(name, scratch):
    """The shipped workflow at 64x64x5, 2 steps, text-encoder stand-in, official file names kept."""
    shipped = load_api_workflow(name)
    tiny, spec = for_tiny_fixtures(name, scratch)
    for node_id, node in tiny.items():
        for key, value in node["inputs"].items():
            original = shipped.get(node_id, {}).get("inputs", {}).get(key)
            if isinstance(value, str) and value.endswith(".safetensors") and isinstance(original, str):
                node["inputs"][key] = original
    images = []
    if spec["needs_image"]:
        image_name = "wanfit_test_start.png"
        images.append({"name": image_name, "image": base64.b64encode((scratch / image_name).read_bytes()).decode()})
    return tiny, spec, images


class Worker:
    def __init__(self, volume, work, custom_nodes_yaml):
        for folder in ("input", "user", "temp"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, WANFIT_WORKFLOWS="all", GPU_TIER="DATACENTER_80GB", PYTHONUNBUFFERED="1")
        self.log = open(work / "worker.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wanfit", "worker-start", "--volume", str(volume), "--state-dir", str(work / "state"),
             "--exec-comfyui", "--", "--cpu", "--listen", "127.0.0.1", "--port", str(PORT), "--disable-auto-launch",
             "--disable-metadata", "--input-directory", str(work / "input"), "--user-directory", str(work / "user"),
             "--temp-directory", str(work / "temp"), "--database-url", f"sqlite:///{work / 'comfyui.db'}",
             "--extra-model-paths-config", str(custom_nodes_yaml)],
            cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the worker exited with {self.process.returncode}; see {work / 'worker.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/system_stats", timeout=2).close()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit("ComfyUI did not start within 240 s")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def run_job(args, job, work):
    job_file = work / f"{job['id']}.json"
    job_file.write_text(json.dumps(job))
    result = subprocess.run([args.handler_python, "-c", RUN_JOB, str(args.worker_comfyui), str(job_file)],
                            capture_output=True, text=True, timeout=900, cwd=work)
    lines = [line for line in result.stdout.splitlines() if line.startswith("WANFIT_RESULT ")]
    if not lines:
        raise SystemExit(f"the handler printed no result (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("WANFIT_RESULT "):]), result.stdout


def describe(name, answer, stdout, volume):
    """The handler's images compared byte for byte with the files on the volume."""
    rows = []
    for image in answer.get("images", []):
        data = base64.b64decode(image["data"]) if image.get("type") == "base64" else b""
        on_volume = list((volume / "output").rglob(image["filename"]))
        rows.append({"filename": image["filename"], "type": image.get("type"), "bytes": len(data),
                     "identical_to_volume_file": bool(on_volume) and on_volume[0].read_bytes() == data})
    warnings = [line.strip() for line in stdout.splitlines() if "latents" in line and "worker-comfyui" in line]
    return {"workflow": name, "error": answer.get("error"), "status": answer.get("status"), "images": rows,
            "errors": answer.get("errors"), "handler_lines_naming_latents": warnings[:2]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-comfyui", type=Path, required=True)
    parser.add_argument("--handler-python", required=True)
    args = parser.parse_args()
    comfyui = Path(os.environ.get("COMFYUI_PATH") or Path.home() / "ComfyUI")
    ensure_fixtures(comfyui)
    root = Path(tempfile.mkdtemp(prefix="wanfit-handler-check-"))
    volume, scratch = root / "runpod-volume", root / "scratch"
    scratch.mkdir(parents=True)
    fill_volume(volume)
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACKAGE_LINK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (custom_nodes / "wanfit_test_nodes").symlink_to(REPO_ROOT / "tests/host/test_nodes", target_is_directory=True)
    nodes_yaml = root / "custom_nodes.yaml"
    nodes_yaml.write_text(f"test_nodes:\n    custom_nodes: {custom_nodes}\n")

    summary, latents = [], {}
    worker = Worker(volume, root / "first", nodes_yaml)
    try:
        for name in workflow_names():
            if name == "decode_saved_latent":
                continue
            workflow, spec, images = job_workflow(name, scratch)
            job = {"id": f"check-{name}", "input": {"workflow": workflow, **({"images": images} if images else {})}}
            started = time.monotonic()
            answer, stdout = run_job(args, job, root)
            row = describe(name, answer, stdout, volume)
            row["seconds"] = round(time.monotonic() - started, 1)
            saved = sorted((volume / "output" / "latents").glob(f"wanfit_{name}_*.latent"))
            row["latent_on_volume"] = saved[-1].relative_to(volume / "output").as_posix() if saved else None
            latents[name] = row["latent_on_volume"]
            summary.append(row)
            print(json.dumps(row), flush=True)
    finally:
        worker.stop()

    worker = Worker(volume, root / "second", nodes_yaml)  # a fresh worker on the same volume
    try:
        for source, vae in (("ti2v_5b_t2v", "wan2.2_vae.safetensors"), ("a14b_t2v", "wan_2.1_vae.safetensors")):
            decode = load_api_workflow("decode_saved_latent")
            decode["10"]["inputs"]["latent"] = latents[source]
            decode["13"]["inputs"]["vae_name"] = vae
            decode["70"]["inputs"]["fps"] = 16 if "a14b" in source else 24
            answer, stdout = run_job(args, {"id": f"check-decode-{source}", "input": {"workflow": decode}}, root)
            row = describe(f"decode_saved_latent ({latents[source]}, fresh worker)", answer, stdout, volume)
            summary.append(row)
            print(json.dumps(row), flush=True)
    finally:
        worker.stop()
    ok = all(not row["error"] and row["images"] and all(i["identical_to_volume_file"] for i in row["images"])
             for row in summary)
    print(json.dumps({"all_jobs_returned_their_mp4": ok, "jobs": len(summary), "work_dir": str(root)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
