"""Test-only nodes, loaded only by the test server (never shipped to users).

umt5-xxl (5.7B parameters) cannot be made tiny, so WanFitTestTextEncode stands in
for CLIPLoader + CLIPTextEncode and emits conditioning with exactly the structure
CLIPTextEncode produces for WAN (comfy/text_encoders/wan.py, comfy/sd1_clip.py):
[[cond, {"pooled_output": None}]], cond float32 of shape (1, 512, 4096): the
tokenizer pads to min_length 512 and zero_out_masked zeroes the padding; the T5
encoder returns no pooled output.
"""

import hashlib

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


NODE_CLASS_MAPPINGS = {"WanFitTestTextEncode": WanFitTestTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitTestTextEncode": "WanFit Test Text Encode (tests only)"}
