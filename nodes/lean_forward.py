"""WanFit Lean Forward: the WAN model with a lean block forward (wanfit/lean_forward.py)."""


class WanFitLeanForward:
    DESCRIPTION = ("Runs this WAN model's transformer blocks over token chunks: the same result as ComfyUI's own "
                   "blocks (checked on each supported core), with about 5 hidden states of activation memory instead "
                   "of 9-13.5, so bigger videos fit a small card. Returns a patched clone; the input model is "
                   "untouched, so each A14B expert is patched on its own. Works with WanFit Sage Attention, LoRAs and "
                   "fp8 weights; refuses a model that already carries another block-replacing patch.")
    CATEGORY = "WanFit"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("A clone of the model whose blocks run lean.",
                       "What was installed and the activation memory it saves.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert). Apply "
                                               "the lean forward to both experts of an A14B pair."}),
                "chunk_tokens": ("INT", {
                    "default": 0, "min": 0, "max": 1_000_000, "step": 256,
                    "tooltip": "Tokens per chunk. 0 = auto (1/16 of the sequence, at least 1024 tokens): the "
                               "memory saving with GPU-sized matmuls. Smaller saves a little more memory during "
                               "the FFN and costs speed; it must not exceed the job's token count.",
                }),
            },
            "optional": {
                "plan": ("WANFIT_PLAN", {"tooltip": "Optional WanFit Offload Plan: its chunk size applies when "
                                                    "chunk_tokens is 0 (auto)."}),
            },
        }

    def patch(self, model, chunk_tokens, plan=None):
        from ..wanfit.lean_forward import patch_model_lean

        def planned(key):
            if plan is None:
                return None
            return plan.get(key) if isinstance(plan, dict) else getattr(plan, key, None)

        chunk = chunk_tokens if chunk_tokens > 0 else (planned("lean_chunk_tokens") or "auto")
        patched, report = patch_model_lean(model, chunk)
        if plan is not None and not planned("lean_forward"):
            report += " (the plan fits without it: this node is optional for this job)"
        return {"ui": {"text": [report]}, "result": (patched, report)}


NODE_CLASS_MAPPINGS = {"WanFitLeanForward": WanFitLeanForward}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitLeanForward": "WanFit Lean Forward"}
