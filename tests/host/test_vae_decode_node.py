"""WanFit VAE Decode inside real /prompt graphs: VAEDecode's shape and dtype, and clear refusals."""

import re

import pytest

from tests.host import graphs
from wanfit.remote.client import PromptFailedError


def decode_graph(vae_name, latent_channels, frames_latent, size_latent, budget_mb=0, overlap=0, seed=0):
    """A random latent decoded by VAEDecode (reference) and WanFit VAE Decode (candidate)."""
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "2": {"class_type": "WanFitTestRandomLatent", "inputs": {"channels": latent_channels, "frames": frames_latent,
                                                                 "height": size_latent, "width": size_latent,
                                                                 "seed": seed}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "WanFitVAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0], "budget_mb": budget_mb,
                                                          "overlap": overlap}},
        "5": {"class_type": "WanFitTestCompareImages", "inputs": {"reference": ["3", 0], "candidate": ["4", 0]}},
    }


@pytest.mark.parametrize("vae_name, channels", [(graphs.VAE_21, 16), (graphs.VAE_22, 48)])
def test_decode_matches_vae_decode_shape_dtype_and_pixels(client, vae_name, channels):
    entry = client.run(decode_graph(vae_name, channels, frames_latent=2, size_latent=4), timeout_s=300)
    stats = entry["outputs"]["5"]["comparison"][0]
    assert stats["candidate_shape"] == stats["reference_shape"]
    assert stats["candidate_dtype"] == stats["reference_dtype"] == "torch.float32"
    assert stats["reference_std"] > 0.01
    assert stats["max_abs_diff"] < 1e-3, stats
    report = entry["outputs"]["4"]["text"][0]
    assert "decoded 5 frames" in report and "untiled (the VAE's own decode fits" in report, report


@pytest.mark.parametrize("vae_name, channels, size_latent, budget_mb, output_shape", [
    (graphs.VAE_21, 16, 16, 200, [9, 128, 128, 3]),
    (graphs.VAE_22, 48, 8, 340, [9, 128, 128, 3]),
])
def test_decode_within_a_small_budget_still_matches(client, vae_name, channels, size_latent, budget_mb, output_shape):
    """A budget that forces several tiles (below the untiled decode's need, above the smallest exact tiling on
    a CPU): the exact halos keep the tiles equal to this core's VAEDecode. Three latent frames: the core's
    decoder takes them as 1 + 2 (0.33.0) or 1 + 1 + 1 (0.3.64), the tiles one at a time, so the causal caches
    are checked across chunks too."""
    entry = client.run(decode_graph(vae_name, channels, frames_latent=3, size_latent=size_latent,
                                    budget_mb=budget_mb), timeout_s=600)
    stats = entry["outputs"]["5"]["comparison"][0]
    assert stats["candidate_shape"] == stats["reference_shape"] == output_shape
    assert stats["max_abs_diff"] < 1e-3, stats
    report = entry["outputs"]["4"]["text"][0]
    rows, cols = map(int, re.search(r"(\d+)x(\d+) tiles \(exact halo", report).groups())
    assert rows * cols > 1, report
    predicted = int(re.search(r"predicted peak (\d+) MB", report).group(1))
    assert predicted <= budget_mb, report
    assert re.search(r"tiled decode checked against the core's own VAE decode \(ComfyUI [0-9.]+, vae2?_?2?\.WanVAE, "
                     r"float32 on cpu\): max difference [0-9.e-]+ <= 0.001 at 2x2 tiles", report), report


def test_wrong_latent_for_the_vae_names_both(client):
    graph = decode_graph(graphs.VAE_22, 16, frames_latent=1, size_latent=4)  # a 16-channel latent
    del graph["3"], graph["5"]
    graph["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}}
    with pytest.raises(PromptFailedError) as failure:
        client.run(graph)
    text = str(failure.value)
    assert "16" in text and "48" in text and "Wan 2.2 VAE" in text and "Wan 2.1" in text, text


def test_empty_latent_is_refused(client):
    graph = decode_graph(graphs.VAE_21, 16, frames_latent=0, size_latent=4)
    del graph["3"], graph["5"]
    graph["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}}
    with pytest.raises(PromptFailedError) as failure:
        client.run(graph)
    assert "samples" in str(failure.value) and "empty" in str(failure.value).lower(), str(failure.value)


def test_budget_below_the_smallest_tile_states_the_minimum(client):
    graph = decode_graph(graphs.VAE_21, 16, frames_latent=1, size_latent=8, budget_mb=64)
    del graph["3"], graph["5"]
    graph["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}}
    graph["4"]["inputs"]["budget_mb"] = 1
    with pytest.raises(PromptFailedError) as failure:
        client.run(graph)
    text = str(failure.value)
    assert "budget" in text and "at least" in text and "MB" in text, text
