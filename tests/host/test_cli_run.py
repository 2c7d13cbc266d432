"""`python -m wanfit run` as a user runs it: a subprocess against the real ComfyUI server.

The shipped workflows name official model files this server lacks, so the graphs here are the stock
TI2V-5B graph on the tiny fixtures (tests/host/graphs.py) passed with --workflow-file, and a test
input map (via WANFIT_WORKFLOWS_DIR) says which node holds the prompt, image, size, frames...
"""

import json
import os
from pathlib import Path
import subprocess
import sys

from tests.host import graphs
from tests.host.video import probe_video
from tests.misbehaving_server import refusing_url

REPO_ROOT = Path(__file__).resolve().parents[2]

STOCK_I2V_FIELDS = {"prompt": [["3", "text"]], "negative": [["4", "text"]], "image": [["11", "image"]],
                    "width": [["6", "width"]], "height": [["6", "height"]], "frames": [["6", "length"]],
                    "steps": [["7", "steps"]], "seed": [["7", "seed"]], "cfg": [["7", "cfg"]], "fps": [["9", "fps"]],
                    "filename_prefix": [["10", "filename_prefix"]]}


def stock_i2v_graph():
    """The stock TI2V-5B graph with a start image (LoadImage -> Wan22ImageToVideoLatent.start_image)."""
    graph = graphs.ti2v_5b_stock(prefix="video/wanfit_cli")
    graph["11"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    graph["6"]["inputs"]["start_image"] = ["11", 0]
    return graph


def failing_graph():
    """A graph whose node raises at run time (frames=8 passes /prompt validation, not the node)."""
    return {"3": graphs.text_encode("a fox", 1),
            "50": {"class_type": "WanFitOffloadPlan", "inputs": {
                "model_variant": "ti2v_5b", "width": 64, "height": 64, "frames": 8, "batch": 1, "cfg": True,
                "mode": "auto", "reserve_vram_gb": 0.0, "weight_dtype": "auto", "text_encoder_device": "auto"}},
            "51": {"class_type": "PreviewAny", "inputs": {"source": ["50", 1]}}}


def write_inputs(tmp_path):
    """api/inputs.json for the two test graphs, and the graphs as --workflow-file files."""
    api = tmp_path / "workflows" / "api"
    api.mkdir(parents=True)
    (api / "inputs.json").write_text(json.dumps({
        "stock_ti2v_i2v": {"fields": STOCK_I2V_FIELDS, "needs_image": True, "size_multiple": 32, "fps": 24},
        "plan_only": {"fields": {"prompt": [["3", "text"]]}, "needs_image": False, "size_multiple": 32}}))
    files = {"stock_ti2v_i2v": tmp_path / "stock_ti2v_i2v.json", "plan_only": tmp_path / "plan_only.json"}
    files["stock_ti2v_i2v"].write_text(json.dumps(stock_i2v_graph()))
    files["plan_only"].write_text(json.dumps(failing_graph()))
    return api.parent, files


def wanfit_run(*argv, workflows_dir=None, timeout_s=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if workflows_dir:
        env["WANFIT_WORKFLOWS_DIR"] = str(workflows_dir)
    return subprocess.run([sys.executable, "-m", "wanfit", "run", *argv], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_run_uploads_the_image_and_saves_the_video(server, tmp_path):
    from PIL import Image

    workflows_dir, files = write_inputs(tmp_path)
    image = tmp_path / "wanfit_cli_start.png"
    Image.new("RGB", (96, 80), (200, 60, 30)).save(image)
    out_dir = tmp_path / "out"
    result = wanfit_run("--workflow", "stock_ti2v_i2v", "--workflow-file", str(files["stock_ti2v_i2v"]),
                        "--prompt", "a red fox running through snow", "--image", str(image), "--width", "64",
                        "--height", "64", "--frames", "5", "--steps", "2", "--seed", "3", "--fps", "24",
                        "--server", server.url, "--out", str(out_dir), "--timeout", "240",
                        workflows_dir=workflows_dir)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    [saved] = [Path(line) for line in result.stdout.splitlines()]
    assert saved.parent == out_dir and saved.suffix == ".mp4" and saved.name.startswith("wanfit_cli")
    assert sorted(path.name for path in out_dir.iterdir()) == [saved.name], "no .partial left behind"
    video = probe_video(saved)
    assert (video["frames"], video["width"], video["height"]) == (5, 64, 64), video
    assert (server.work_dir / "input" / image.name).read_bytes() == image.read_bytes(), "uploaded as input"
    assert "queued as prompt" in result.stderr and "node 7 (KSampler)" in result.stderr, result.stderr
    assert "finished" in result.stderr, result.stderr


def test_node_error_reaches_stderr_with_exit_1(server, tmp_path):
    workflows_dir, files = write_inputs(tmp_path)
    out_dir = tmp_path / "out"
    result = wanfit_run("--workflow", "plan_only", "--workflow-file", str(files["plan_only"]), "--prompt", "a fox",
                        "--server", server.url, "--out", str(out_dir), "--timeout", "120",
                        workflows_dir=workflows_dir)
    assert result.returncode == 1, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stdout == ""
    assert "failed in node 50 (WanFitOffloadPlan)" in result.stderr, result.stderr
    assert "frames=8 is invalid: expected 4n+1" in result.stderr, result.stderr
    assert not out_dir.exists()


def test_unreachable_server_exits_2_and_says_how_to_start_comfyui(tmp_path):
    workflows_dir, files = write_inputs(tmp_path)
    with refusing_url() as url:
        result = wanfit_run("--workflow", "plan_only", "--workflow-file", str(files["plan_only"]), "--prompt", "x",
                            "--server", url, "--out", str(tmp_path / "out"), workflows_dir=workflows_dir,
                            timeout_s=60)
    assert result.returncode == 2, result.stderr
    assert f"server='{url}' is unreachable" in result.stderr
    assert "python main.py --listen 127.0.0.1 --port 8188" in result.stderr
    assert not (tmp_path / "out").exists()
