"""WanFit Sage Attention on a real WAN forward through /prompt (CPU: the fallback path)."""

import torch

from tests.fixtures.generate import TINY_LAYERS
from tests.host import graphs
from tests.host.latents import load_saved_latent

SELF_CALLS_PER_BLOCK = 1
CROSS_CALLS_PER_BLOCK = 1  # text cross-attention; the A14B experts carry no image cross-attention


def attention_graph(seed=3):
    sampler = {"seed": seed, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
    # 1 step at cfg 1.0 is exactly one diffusion-model forward (ComfyUI skips the uncond pass at cfg 1).
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": graphs.T2V_HIGH, "weight_dtype": "default"}},
        "2": {"class_type": "WanFitSageAttention", "inputs": {"model": ["1", 0], "mode": "auto",
                                                              "keep_cross_attention_on_sdpa": False,
                                                              "nan_check_calls": 8}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 8.0}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "5": graphs.text_encode("a lighthouse in a storm", 7),
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                  "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "9": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["3", 0], "samples": ["7", 0],
                                                                "reset_counts": True}},
        "10": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["4", 0], "samples": ["8", 0],
                                                                 "reset_counts": True}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "latents/patched"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "latents/unpatched"}},
        # the patched model, patched again with mode "disabled": ComfyUI's own attention must come back
        "13": {"class_type": "WanFitSageAttention", "inputs": {"model": ["2", 0], "mode": "disabled",
                                                               "keep_cross_attention_on_sdpa": False,
                                                               "nan_check_calls": 8}},
        "14": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["13", 0], "shift": 8.0}},
        "15": {"class_type": "KSampler", "inputs": {"model": ["14", 0], "positive": ["5", 0], "negative": ["5", 0],
                                                    "latent_image": ["6", 0], **sampler}},
        "16": {"class_type": "WanFitAttentionReport", "inputs": {"model": ["14", 0], "samples": ["15", 0],
                                                                 "reset_counts": True}},
        "17": {"class_type": "SaveLatent", "inputs": {"samples": ["16", 0], "filename_prefix": "latents/disabled"}},
    }


def test_auto_mode_on_cpu_falls_back_and_every_attention_call_goes_through_the_override(client, tmp_path):
    entry = client.run(attention_graph(), timeout_s=300)
    outputs = entry["outputs"]

    patch_report = outputs["2"]["text"][0]
    assert "attention mode requested: auto" in patch_report
    assert "reason: no CUDA GPU" in patch_report, patch_report

    counts = outputs["9"]["wanfit_attention"][0]
    forwards = 1
    assert counts["self_attention_calls"] == TINY_LAYERS * SELF_CALLS_PER_BLOCK * forwards, counts
    assert counts["cross_attention_calls"] == TINY_LAYERS * CROSS_CALLS_PER_BLOCK * forwards, counts
    assert counts["kernel_calls"] == 0
    assert counts["fallback_calls"] == counts["self_attention_calls"] + counts["cross_attention_calls"]
    assert counts["fallback_reasons"] == {"no sage kernel selected": counts["fallback_calls"]}
    assert counts["backend"].startswith("SDPA fallback"), counts["backend"]
    assert "calls: kernel 0, fallback 4 (self-attention 2, cross-attention 2)" in outputs["9"]["text"][0]

    # the unpatched model in the same graph stayed unpatched, and so did "disabled"
    assert outputs["10"]["text"][0].startswith("no WanFit attention patch on this model")
    assert outputs["16"]["text"][0].startswith("no WanFit attention patch on this model")
    assert "disabled" in outputs["13"]["text"][0]

    patched = load_saved_latent(client, entry, "11", tmp_path / "patched")
    unpatched = load_saved_latent(client, entry, "12", tmp_path / "unpatched")
    disabled = load_saved_latent(client, entry, "17", tmp_path / "disabled")
    assert patched.shape == (1, 16, 2, 8, 8)
    assert unpatched.std() > 0
    torch.testing.assert_close(patched, unpatched, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(disabled, unpatched, rtol=1e-5, atol=1e-6)
