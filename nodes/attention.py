from ..wanfit.choices import ATTENTION_MODES as MODES

MODE_TOOLTIP = ("auto: the fastest sageattention kernel this GPU supports, verified against SDPA on first use; "
                "PyTorch SDPA when sageattention, a GPU or a supported architecture is missing. "
                "disabled: ComfyUI's own attention (removes an earlier WanFit patch). "
                "The other entries force one sageattention kernel family (falls back, with the reason, "
                "if this card cannot run it).")


class WanFitSageAttention:
    DESCRIPTION = ("Routes this model's attention through a sageattention kernel when the package, the GPU and "
                   "the shapes allow it, and through ComfyUI's own attention (PyTorch SDPA) otherwise. Returns a "
                   "patched clone: the input model is untouched, so each A14B expert can be patched on its own. "
                   "NaN/Inf from the kernel switches that model back to SDPA for the rest of the run.")
    CATEGORY = "WanFit"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("A clone of the model with the attention override set.",
                       "Which backend runs and why (call counts appear in WanFit Attention Report after sampling).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert)."}),
                "mode": (list(MODES), {"default": "auto", "tooltip": MODE_TOOLTIP}),
                "keep_cross_attention_on_sdpa": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Run the text cross-attention on SDPA and only self-attention on the kernel. "
                               "Turn on if sage output looks washed out or ignores the prompt.",
                }),
                "nan_check_calls": ("INT", {
                    "default": 8, "min": 0, "max": 10000,
                    "tooltip": "How many first kernel outputs are checked for NaN/Inf (black-video guard). "
                               "0 disables the check.",
                }),
            },
            "optional": {
                "plan": ("WANFIT_PLAN", {"tooltip": "Optional WanFit Offload Plan: its attention preference "
                                                    "applies when mode is auto."}),
            },
        }

    def patch(self, model, mode, keep_cross_attention_on_sdpa, nan_check_calls, plan=None):
        from ..wanfit.attention import patch_model_attention

        patched, report = patch_model_attention(model, mode, plan=plan,
                                                keep_cross_attention_on_sdpa=keep_cross_attention_on_sdpa or None,
                                                nan_check_calls=nan_check_calls)
        return {"ui": {"text": [report]}, "result": (patched, report)}


class WanFitAttentionReport:
    DESCRIPTION = ("Reports, after sampling, which attention backend actually ran on a model patched by WanFit "
                   "Sage Attention and how many calls went to the kernel or the fallback (and why). Put it after "
                   "the sampler; the latent passes through unchanged.")
    CATEGORY = "WanFit"
    FUNCTION = "report"
    OUTPUT_NODE = True
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("samples", "report")
    OUTPUT_TOOLTIPS = ("The input latent, unchanged.", "Backend, reason and call counts since the last report.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model that was sampled (the output of WanFit Sage Attention)."}),
            "samples": ("LATENT", {"tooltip": "The sampler's output; connecting it makes the report run after "
                                              "sampling."}),
            "reset_counts": ("BOOLEAN", {"default": True, "tooltip": "Zero the call counts after reporting, so "
                                                                     "the next run reports only its own calls."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # counts change with every run of the sampler

    def report(self, model, samples, reset_counts):
        from ..wanfit.attention import find_override
        from ..wanfit.lean_forward import lean_report

        override = find_override(model)
        if override is None:
            text = "no WanFit attention patch on this model: ComfyUI's own attention ran"
            counts = {}
        else:
            text = override.report()
            counts = override.stats.as_dict()
            counts["backend"] = override.backend_description()
            if reset_counts:
                override.stats.reset()
        lean = lean_report(model)  # the model came through WanFit Lean Forward: which blocks ran, and the check
        if lean:
            text = f"{text}\n{lean}"
        return {"ui": {"text": [text], "wanfit_attention": [counts]}, "result": (samples, text)}


NODE_CLASS_MAPPINGS = {"WanFitSageAttention": WanFitSageAttention, "WanFitAttentionReport": WanFitAttentionReport}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitSageAttention": "WanFit Sage Attention",
                              "WanFitAttentionReport": "WanFit Attention Report"}
