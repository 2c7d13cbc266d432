"""The harness proven with stock ComfyUI nodes only, on the tiny fixtures."""

import pytest

from tests.host import graphs
from tests.host.video import probe_video


def run_and_fetch_video(client, workflow, tmp_path, save_node_id):
    entry = client.run(workflow, timeout_s=600)
    files = client.output_files(entry, save_node_id)
    assert len(files) == 1, f"expected one video from SaveVideo, history outputs were {entry.get('outputs')}"
    assert files[0]["filename"].endswith(".mp4"), files[0]
    return probe_video(client.download(files[0], tmp_path))


@pytest.mark.parametrize("frames", [5])
def test_ti2v_5b_stock_graph_makes_a_video(client, tmp_path, frames):
    video = run_and_fetch_video(client, graphs.ti2v_5b_stock(width=64, height=64, frames=frames), tmp_path, "10")
    assert (video["frames"], video["width"], video["height"]) == (frames, 64, 64)
    assert video["fps"] == pytest.approx(24)
    first = video["arrays"][0]
    assert first.std() > 1.0, "decoded frames are flat: random VAE init or sampling is broken"


def test_a14b_t2v_stock_graph_with_two_experts_makes_a_video(client, tmp_path):
    video = run_and_fetch_video(client, graphs.a14b_t2v_stock(width=64, height=64, frames=5), tmp_path, "13")
    assert (video["frames"], video["width"], video["height"]) == (5, 64, 64)
    assert video["fps"] == pytest.approx(16)
