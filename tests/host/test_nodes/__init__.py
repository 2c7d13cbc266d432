"""Test-only nodes, loaded only by the test server (never shipped to users).

umt5-xxl (5.7B parameters) cannot be made tiny, so WanFitTestTextEncode stands in
for CLIPLoader + CLIPTextEncode and emits conditioning with exactly the structure
CLIPTextEncode produces for WAN (comfy/text_encoders/wan.py, comfy/sd1_clip.py):
[[cond, {"pooled_output": None}]], cond float32 of shape (1, 512, 4096): the
tokenizer pads to min_length 512 and zero_out_masked zeroes the padding; the T5
encoder returns no pooled output.
"""

import hashlib
import sys

import torch

UMT5_MIN_LENGTH = 512
UMT5_HIDDEN_SIZE = 4096


def fake_umt5_conditioning(text, seed):
    token_count = min(UMT5_MIN_LENGTH, len(text.split()) + 1)  # words + the end token
    digest = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + digest)
    cond = torch.zeros(1, UMT5_MIN_LENGTH, UMT5_HIDDEN_SIZE, dtype=torch.float32)
    cond[:, :token_count] = torch.randn(1, token_count, UMT5_HIDDEN_SIZE, generator=generator) * 0.2
    return [[cond, {"pooled_output": None}]]


class WanFitTestTextEncode:
    CATEGORY = "WanFit/testing"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    DESCRIPTION = "TESTS ONLY: umt5-xxl-shaped conditioning from a seed, standing in for CLIPLoader + CLIPTextEncode."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "", "tooltip": "Prompt; only its word count and hash matter."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Seed of the random embedding."}),
        }}

    def encode(self, text, seed):
        return (fake_umt5_conditioning(text, seed),)


class WanFitTestRandomLatent:
    """TESTS ONLY: a random video latent of any shape (stock empty-latent nodes give zeros)."""

    CATEGORY = "WanFit/testing"
    FUNCTION = "make"
    RETURN_TYPES = ("LATENT",)
    DESCRIPTION = "TESTS ONLY: a random N(0, 1) latent (1, channels, frames, height, width) from a seed."

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 4, "min": 0, "max": 512, "tooltip": "size"}
        return {"required": {"channels": ("INT", {"default": 16, "min": 1, "max": 64, "tooltip": "channels"}),
                             "frames": ("INT", {**size, "default": 2}), "height": ("INT", size),
                             "width": ("INT", size), "seed": ("INT", {"default": 0, "min": 0, "tooltip": "seed"})}}

    def make(self, channels, frames, height, width, seed):
        generator = torch.Generator().manual_seed(seed)
        return ({"samples": torch.randn(1, channels, frames, height, width, generator=generator)},)


class WanFitTestCompareImages:
    """TESTS ONLY: shape, dtype and difference of two IMAGE batches, reported in the UI output."""

    CATEGORY = "WanFit/testing"
    FUNCTION = "compare"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    DESCRIPTION = "TESTS ONLY: compares two IMAGE batches (shape, dtype, max abs diff, PSNR)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"reference": ("IMAGE", {"tooltip": "reference"}), "candidate": ("IMAGE", {"tooltip": "candidate"})}}

    def compare(self, reference, candidate):
        stats = {"reference_shape": list(reference.shape), "candidate_shape": list(candidate.shape),
                 "reference_dtype": str(reference.dtype), "candidate_dtype": str(candidate.dtype),
                 "reference_device": str(reference.device), "candidate_device": str(candidate.device)}
        if reference.shape == candidate.shape:
            diff = (reference.float() - candidate.float()).abs()
            mse = float((diff ** 2).mean())
            stats["max_abs_diff"] = float(diff.max())
            stats["psnr_db"] = float("inf") if mse == 0 else float(10 * torch.log10(torch.tensor(1.0 / mse)))
            stats["reference_std"] = float(reference.float().std())
        return {"ui": {"comparison": [stats]}}


class WanFitTestDevice:
    """TESTS ONLY: a device other than the one the server runs on, as WanFit Device Info's output carries it."""

    CATEGORY = "WanFit/testing"
    FUNCTION = "make"
    RETURN_TYPES = ("WANFIT_DEVICE",)
    DESCRIPTION = "TESTS ONLY: a CPU device with the name and system RAM given, for WanFit Offload Plan's device input."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "stand-in CPU", "tooltip": "name"}),
                             "ram_gb": ("INT", {"default": 512, "min": 1, "max": 4096, "tooltip": "system RAM"})}}

    def make(self, name, ram_gb):
        # the DeviceInfo class of the WanFit package this server loaded (under its folder's name)
        device = next(module for key, module in sys.modules.items() if key.endswith(".wanfit.device"))
        ram = ram_gb << 30
        return (device.DeviceInfo(kind="cpu", name=name, total_vram_bytes=0, free_vram_bytes=0, total_ram_bytes=ram,
                                  free_ram_bytes=ram),)


NODE_CLASS_MAPPINGS = {"WanFitTestDevice": WanFitTestDevice, "WanFitTestTextEncode": WanFitTestTextEncode, "WanFitTestCompareImages": WanFitTestCompareImages,
                       "WanFitTestRandomLatent": WanFitTestRandomLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitTestDevice": "WanFit Test Device (tests only)",
                              "WanFitTestTextEncode": "WanFit Test Text Encode (tests only)",
                              "WanFitTestCompareImages": "WanFit Test Compare Images (tests only)",
                              "WanFitTestRandomLatent": "WanFit Test Random Latent (tests only)"}
