"""`python -m wanfit worker-start` (the RunPod worker's start step) end to end, outside Docker.

A temporary folder stands in for /runpod-volume, a local HTTP host on 127.0.0.1 serves the tiny
fixture files under the official file names (WANFIT_MODEL_BASE_URL points at it), GPU_TIER names the
card, and the start step replaces itself with the real ComfyUI checkout's main.py (--exec-comfyui;
in the image it hands over to worker-comfyui's /start.sh instead, tested here with a stand-in script).
"""

import hashlib
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.fixtures.generate import fixture_dir
from tests.fixtures.workflows import for_tiny_fixtures
from tests.host import graphs
from tests.host.server import PACKAGE_LINK_NAME, REPO_ROOT, free_port, stop_process
from tests.host.video import probe_video
from tests.misbehaving_server import MisbehavingServer
from tests.model_files import write_safetensors
from wanfit.remote.client import ComfyClient
from wanfit.models import load_manifest
from wanfit.plan import GPU_TIERS
from wanfit.workflows import load_api_workflow, substitute_files

TIER = "PROSUMER_24GB"
WORKFLOW = "ti2v_5b_t2v"
MODEL = "wan2.2_ti2v_5B_fp16.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan2.2_vae.safetensors"
OFFICIAL_FOR_FIXTURE = {graphs.TI2V_5B: MODEL, graphs.VAE_22: VAE}
START_TIMEOUT_S = 180


class FileHost:
    """A download host on 127.0.0.1: GET (with Range) and HEAD of /<folder>/<filename>, every request logged."""

    def __init__(self, files):
        self.files = dict(files)  # "/folder/name" -> Path
        self.head_lengths = {}  # "/folder/name" -> Content-Length a HEAD answers instead of the real one
        self.truncate = set()  # "/folder/name" whose GET sends only the first half of the promised bytes
        self.server = MisbehavingServer(fallback=self.answer, timeout_s=START_TIMEOUT_S)
        self.url = self.server.url()

    @property
    def requests(self):
        return [(request.method, request.path) for request in self.server.requests]

    def answer(self, exchange):
        request = exchange.request
        path = self.files.get(request.path)
        if path is None:
            return exchange.reply(404, b"not found", content_type="text/plain")
        data = path.read_bytes()
        start, status, headers = 0, 200, {}
        range_header = request.header("Range") or ""
        if range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        if request.method == "HEAD":
            return exchange.head(status, headers, length=self.head_lengths.get(request.path, len(data) - start))
        exchange.head(status, headers, length=len(data) - start)
        if request.path in self.truncate:
            exchange.write(data[start:start + (len(data) - start) // 2])
            return exchange.drop()
        exchange.write(data[start:])

    def gets(self):
        return sorted(path for method, path in self.requests if method == "GET")

    def close(self):
        self.server.close()


def umt5_stand_in(path):
    """A few KB whose safetensors header reads as umt5-xxl (the download's header check passes); the test
    workflow encodes with WanFitTestTextEncode, so nothing loads it."""
    return write_safetensors(path, {
        "shared.weight": ("F16", (8, 4096)), "encoder.block.23.layer.1.DenseReluDense.wi_1.weight": ("F8_E4M3", (1, 4096)),
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": ("F16", (32, 64)),
        "scaled_fp8": ("F32", (0,))})


@pytest.fixture(scope="module")
def host(fixtures, tmp_path_factory):
    served = tmp_path_factory.mktemp("served")
    files = {f"/diffusion_models/{MODEL}": fixture_dir() / "diffusion_models" / graphs.TI2V_5B,
             f"/text_encoders/{TEXT_ENCODER}": umt5_stand_in(served / TEXT_ENCODER),
             f"/vae/{VAE}": fixture_dir() / "vae" / graphs.VAE_22}
    file_host = FileHost(files)
    # The served bytes are the fixtures, not the official files: a manifest of the same shape as WanFit's
    # (sha256 for all three, an exact size for the text encoder only, so the model's size comes from HEAD).
    manifest = load_manifest()
    manifest = dict(manifest, files=[dict(entry) for entry in manifest["files"]])
    for entry in manifest["files"]:
        path = files.get(f"/{entry['folder']}/{entry['filename']}")
        if path is not None:
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            entry["size_bytes"] = path.stat().st_size if entry["filename"] == TEXT_ENCODER else None
    file_host.manifest = served / "manifest.json"
    file_host.manifest.write_text(json.dumps(manifest))
    yield file_host
    file_host.close()


@pytest.fixture(scope="module")
def custom_nodes_config(tmp_path_factory):
    """This package and the test-only nodes linked into a folder a second yaml names (as the host tier does)."""
    root = tmp_path_factory.mktemp("custom_nodes")
    for name, target in ((PACKAGE_LINK_NAME, REPO_ROOT), ("wanfit_test_nodes", REPO_ROOT / "tests/host/test_nodes")):
        (root / name).symlink_to(target, target_is_directory=True)
    config = root.parent / f"{root.name}.yaml"
    config.write_text(f"wanfit_worker_test_nodes:\n    custom_nodes: {root}\n")
    return config


def worker_env(comfyui, host, **overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANFIT_") and k != "GPU_TIER"}
    env.update(PYTHONUNBUFFERED="1", COMFYUI_PATH=str(comfyui), WANFIT_WORKFLOWS=WORKFLOW, GPU_TIER=TIER,
               WANFIT_MODEL_BASE_URL=host.url, WANFIT_MANIFEST=str(host.manifest))
    env.update({k: v for k, v in overrides.items() if v is not None})
    return {k: v for k, v in env.items() if not (k in overrides and overrides[k] is None)}


def start_command(volume, state_dir, *mode):
    return [sys.executable, "-m", "wanfit", "worker-start", "--volume", str(volume), "--state-dir", str(state_dir),
            *mode]


def run_start_step(volume, state_dir, env, *mode, timeout_s=120):
    """A start step that must stop by itself (a bad input): nothing may be started."""
    return subprocess.run(start_command(volume, state_dir, *(mode or ("--exec-comfyui",))), cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


class StartedWorker:
    """The start step in --exec-comfyui mode: the same process becomes ComfyUI (exec), on a free port."""

    def __init__(self, volume, work_dir, env, custom_nodes_config):
        self.work_dir = Path(work_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work_dir / "worker.log"
        for folder in ("input", "user", "temp"):
            (self.work_dir / folder).mkdir(parents=True, exist_ok=True)
        comfy_args = ["--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                      "--input-directory", str(self.work_dir / "input"),
                      "--user-directory", str(self.work_dir / "user"),
                      "--temp-directory", str(self.work_dir / "temp"),
                      "--database-url", f"sqlite:///{self.work_dir / 'comfyui.db'}",
                      "--extra-model-paths-config", str(custom_nodes_config)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                start_command(volume, self.work_dir / "state", "--exec-comfyui", "--", *comfy_args),
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the start step exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            self.stop()
            raise AssertionError(f"ComfyUI did not answer on {self.url} within {START_TIMEOUT_S} s:\n{self.log_tail()}")
        self.client = ComfyClient(self.url, request_timeout_s=120)

    def argv(self):
        """The command line of the process now serving (exec kept its pid)."""
        return Path(f"/proc/{self.process.pid}/cmdline").read_bytes().decode().split("\0")[:-1]

    def log_tail(self, lines=60):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self):
        stop_process(self.process)


def expected_plan_flags(comfyui):
    """What `wanfit plan --print-args` says for this tier, model and core, on this machine's RAM."""
    env = {k: v for k, v in os.environ.items() if k != "GPU_TIER"}
    result = subprocess.run([sys.executable, "-m", "wanfit", "plan", "--print-args", "--tier", TIER, "--model",
                             "ti2v_5b", "--core", str(comfyui)], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def tiny_workflow(input_dir):
    """The shipped TI2V-5B workflow on the fixtures, which the volume holds under the official names."""
    workflow, spec = for_tiny_fixtures(WORKFLOW, input_dir)
    return substitute_files(workflow, OFFICIAL_FOR_FIXTURE), spec


def test_start_step_downloads_what_is_missing_starts_comfyui_and_a_fresh_worker_decodes_the_saved_latent(
        comfyui, host, custom_nodes_config, tmp_path):
    volume = tmp_path / "runpod-volume"
    (volume / "models" / "vae").mkdir(parents=True)
    shutil.copyfile(fixture_dir() / "vae" / graphs.VAE_22, volume / "models" / "vae" / VAE)  # already there
    env = worker_env(comfyui, host)
    host.server.requests.clear()

    worker = StartedWorker(volume, tmp_path / "first", env, custom_nodes_config)
    try:
        # 1. flags: the plan's for this tier and core, then the volume's yaml and output folder
        argv = worker.argv()
        main_py = argv.index(str(Path(comfyui) / "main.py"))
        plan_flags = expected_plan_flags(comfyui)
        yaml_path = tmp_path / "first" / "state" / "extra_model_paths.yaml"
        assert argv[main_py + 1:main_py + 1 + len(plan_flags) + 4] == [
            *plan_flags, "--extra-model-paths-config", str(yaml_path), "--output-directory", str(volume / "output")], argv
        # 2. downloads: only the two missing files, each verified and renamed into place
        assert host.gets() == sorted([f"/diffusion_models/{MODEL}", f"/text_encoders/{TEXT_ENCODER}"]), host.requests
        assert (volume / "models/diffusion_models" / MODEL).read_bytes() == \
            (fixture_dir() / "diffusion_models" / graphs.TI2V_5B).read_bytes()
        assert not list(volume.rglob("*.partial"))
        # 3. the yaml maps the four model folders on the volume
        import yaml

        config = yaml.safe_load(yaml_path.read_text())["wanfit_runpod_volume"]
        assert config["base_path"] == str(volume)
        assert {folder: config[folder].split("\n") for folder in ("diffusion_models", "text_encoders", "vae", "loras")} \
            == {"diffusion_models": ["models/diffusion_models", "models/unet"],
                "text_encoders": ["models/text_encoders", "models/clip"],
                "vae": ["models/vae"], "loras": ["models/loras"]}
        # 4. ComfyUI finds the models through it and runs the shipped workflow
        listed = worker.client.object_info()["WanFitLoadDiffusionModel"]["input"]["required"]["model_name"][1]["options"]
        assert MODEL in listed, listed
        workflow, spec = tiny_workflow(tmp_path / "first" / "input")
        entry = worker.client.run(workflow, timeout_s=300)
        video = probe_video(worker.client.download(worker.client.output_files(entry, spec["video_node"])[0], tmp_path))
        assert video["frames"] == 5
        latent = worker.client.output_files(entry, spec["latent_node"])[0]
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        worker.stop()
    latent_name = f"{latent['subfolder']}/{latent['filename']}"
    assert (volume / "output" / latent_name).is_file(), "the saved latent is not on the volume"

    # a fresh worker on the same volume: nothing downloaded, the saved latent decodes there
    host.server.requests.clear()
    worker = StartedWorker(volume, tmp_path / "second", env, custom_nodes_config)
    try:
        assert host.gets() == [], host.requests
        decode = substitute_files(load_api_workflow("decode_saved_latent"), {})
        decode["10"]["inputs"]["latent"] = latent_name
        decode["71"]["inputs"]["filename_prefix"] = "video/worker_redecode"
        entry = worker.client.run(decode, timeout_s=300)
        again = probe_video(worker.client.download(worker.client.output_files(entry, "71")[0], tmp_path / "again"))
        assert (again["frames"], again["width"], again["height"]) == (video["frames"], video["width"], video["height"])
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        worker.stop()
    assert "all model files of ti2v_5b_t2v are on" in worker.log_path.read_text()


HANDOVER_STAND_IN = """#!/usr/bin/env bash
# Stand-in for worker-comfyui 5.8.5's /start.sh: its two ComfyUI launch lines, with `python` recording its arguments.
python() { printf '%s\\n' "$@" > "$WANFIT_TEST_OUT/argv"; printf '%s' "$PYTORCH_CUDA_ALLOC_CONF" > "$WANFIT_TEST_OUT/env"; }
if [ "$SERVE_API_LOCALLY" == "true" ]; then
    python -u /comfyui/main.py --disable-auto-launch --disable-metadata --listen --verbose "${COMFY_LOG_LEVEL}" --log-stdout &
else
    python -u /comfyui/main.py --disable-auto-launch --disable-metadata --verbose "${COMFY_LOG_LEVEL}" --log-stdout &
fi
wait
"""


def test_deploy_start_script_hands_over_to_the_worker_start_script_with_the_flags_and_environment(
        comfyui, host, tmp_path):
    """deploy/runpod/start.sh as the image runs it, with a stand-in for worker-comfyui's /start.sh."""
    volume = tmp_path / "volume"
    for folder, name, source in (("diffusion_models", MODEL, fixture_dir() / "diffusion_models" / graphs.TI2V_5B),
                                 ("vae", VAE, fixture_dir() / "vae" / graphs.VAE_22),
                                 ("clip", TEXT_ENCODER, fixture_dir() / "vae" / graphs.VAE_22)):  # legacy folder
        (volume / "models" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, volume / "models" / folder / name)
    script = tmp_path / "start.sh"
    script.write_text(HANDOVER_STAND_IN)
    env = worker_env(comfyui, host, WANFIT_TEST_OUT=str(tmp_path), WANFIT_VOLUME=str(volume),
                     WANFIT_STATE_DIR=str(tmp_path / "state"), WANFIT_HANDOVER=str(script))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])  # the image's `python`
    host.server.requests.clear()
    result = subprocess.run(["bash", str(REPO_ROOT / "deploy/runpod/start.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert host.requests == [], "files already on the volume (unet/clip legacy folders too) were fetched again"
    argv = (tmp_path / "argv").read_text().split("\n")[:-1]
    assert argv[:2] == ["-u", "/comfyui/main.py"]
    assert argv[2:] == [*expected_plan_flags(comfyui), "--extra-model-paths-config",
                        str(tmp_path / "state" / "extra_model_paths.yaml"), "--output-directory", str(volume / "output"),
                        "--disable-auto-launch", "--disable-metadata", "--verbose", "", "--log-stdout"], argv
    assert (tmp_path / "env").read_text() == "expandable_segments:True"


# --- bad inputs: a clear message, exit 2, nothing downloaded, nothing started ------------------------------


def assert_refused(result, host, *phrases):
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    for phrase in phrases:
        assert phrase in result.stderr, f"expected {phrase!r} in:\n{result.stderr}"
    assert "starting" not in result.stderr and "handing over" not in result.stderr, result.stderr
    assert host.gets() == [], host.requests


@pytest.fixture
def bad_input(comfyui, host, tmp_path):
    """(volume, run(**env overrides)) with an empty, writable volume."""
    volume = tmp_path / "volume"
    volume.mkdir()
    host.server.requests.clear()

    def run(volume=volume, **overrides):
        return run_start_step(volume, tmp_path / "state", worker_env(comfyui, host, **overrides))

    return volume, run


def test_missing_volume_is_refused(bad_input, host, tmp_path):
    _volume, run = bad_input
    assert_refused(run(volume=tmp_path / "no-volume"), host, "Network volume not found", str(tmp_path / "no-volume"),
                   "Select Network Volume")


@pytest.fixture
def read_only_volume(tmp_path):
    """A read-only folder: chmod for an ordinary user, a read-only tmpfs mount for root (which chmod does not stop)."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root without the right to mount a read-only tmpfs: {mounted.stderr.decode()}")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_read_only_volume_is_refused(bad_input, host, read_only_volume):
    _volume, run = bad_input
    assert_refused(run(volume=read_only_volume), host, f"Network volume {read_only_volume} is read-only")


def test_not_enough_free_space_is_refused_before_downloading(bad_input, host):
    volume, run = bad_input
    host.head_lengths[f"/diffusion_models/{MODEL}"] = 10**16  # 10 PB: more than any test disk
    try:
        result = run()
    finally:
        host.head_lengths.clear()
    assert_refused(result, host, "Not enough free space", MODEL, "Nothing was downloaded")
    assert not list((volume / "models").rglob("*.safetensors*"))


def test_unreachable_download_host_names_the_file(bad_input, host):
    _volume, run = bad_input
    assert_refused(run(WANFIT_MODEL_BASE_URL=f"http://127.0.0.1:{free_port()}"), host,
                   f"Cannot download {MODEL}", "unreachable")


def test_unknown_gpu_tier_lists_the_tiers(bad_input, host):
    _volume, run = bad_input
    assert_refused(run(GPU_TIER="RTX_9090"), host, "GPU_TIER='RTX_9090' is unknown", ", ".join(GPU_TIERS))


def test_unknown_workflow_lists_the_workflows(bad_input, host):
    _volume, run = bad_input
    assert_refused(run(WANFIT_WORKFLOWS="ti2v_5b_t2v,wan_magic"), host, "unknown workflow(s): wan_magic",
                   "a14b_t2v_lightx2v", "decode_saved_latent")


def test_missing_start_script_is_refused(bad_input, comfyui, host, tmp_path):
    volume, _run = bad_input
    result = run_start_step(volume, tmp_path / "state", worker_env(comfyui, host),
                            "--handover", str(tmp_path / "no-start.sh"))
    assert_refused(result, host, "start script", "no-start.sh", "not found")


def test_a_download_cut_short_ends_with_exit_2_naming_the_file_and_keeps_the_partial(bad_input, host):
    """The connection drops after half the text encoder: exit 2 with the file named, ComfyUI not started,
    the .partial kept for the next start to resume."""
    volume, run = bad_input
    host.truncate.add(f"/text_encoders/{TEXT_ENCODER}")
    try:
        result = run()
    finally:
        host.truncate.clear()
    assert result.returncode == 2, result.stderr
    assert f"Downloading {TEXT_ENCODER} failed" in result.stderr and "resume" in result.stderr, result.stderr
    assert "starting" not in result.stderr and "handing over" not in result.stderr, result.stderr
    assert (volume / "models/text_encoders" / f"{TEXT_ENCODER}.partial").is_file()
    assert not (volume / "models/text_encoders" / TEXT_ENCODER).exists()
