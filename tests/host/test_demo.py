"""`python -m wanfit demo` on this machine (no official models: tiny ones), as the README runs it."""

import os
from pathlib import Path
import subprocess
import sys

from tests.host.video import probe_video

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_makes_a_video_and_prints_its_path(comfyui, fixtures, tmp_path):
    env = dict(os.environ, COMFYUI_PATH=str(comfyui))
    result = subprocess.run([sys.executable, "-m", "wanfit", "demo", "--out", str(tmp_path)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    video_path = Path(result.stdout.strip().splitlines()[-1])
    assert video_path.parent == tmp_path and video_path.suffix == ".mp4"
    video = probe_video(video_path)
    assert (video["frames"], video["width"], video["height"]) == (9, 64, 64)
    assert "tiny random-weight" in result.stderr and "WanFit plan: TI2V-5B" in result.stderr


def test_demo_without_comfyui_says_how_to_get_it(tmp_path):
    env = dict(os.environ, COMFYUI_PATH=str(tmp_path / "nowhere"))
    result = subprocess.run([sys.executable, "-m", "wanfit", "demo"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "no ComfyUI checkout at" in result.stderr and "git clone" in result.stderr
