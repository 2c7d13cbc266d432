from ..wanfit.choices import (MODEL_VARIANTS, PLAN_INPUT_LIMITS, PLAN_MODES, PLAN_TEXT_ENCODER_DEVICES,
                              PLAN_WEIGHT_DTYPES)


def _limits(name):
    """min/max of a numeric input, from the table the plan itself enforces (the route and CLI too)."""
    low, high = PLAN_INPUT_LIMITS[name]
    return {"min": low, "max": high}


def probe_for_plan():
    from ..wanfit.device import probe_comfyui_device

    return probe_comfyui_device()


def running_core():
    """The ComfyUI this node runs in: version, launch flags, whether dynamic VRAM is on now."""
    from ..wanfit.core import running_core as read_running_core

    return read_running_core()


class WanFitOffloadPlan:
    DESCRIPTION = ("Plans a WAN 2.2 run for this GPU before it starts: weight dtype, how much of the model stays "
                   "on the GPU and how much streams from RAM, where the text encoder runs, whether to drop the "
                   "high-noise expert before the low-noise one, the VAE decode budget, the attention backend and "
                   "the VRAM to leave to other processes, with predicted peak VRAM/RAM and the reasons, for the "
                   "ComfyUI it runs in (its version, launch flags and memory manager: dynamic VRAM or partial "
                   "loading). Refuses, saying what would fit, when nothing does. Connect the plan to the WanFit "
                   "loaders, Sage Attention and VAE Decode, and its width, height, frames and batch to the latent "
                   "node, so the size is set in one place. In the editor the node shows, before Run, whether the "
                   "job fits this machine.")
    CATEGORY = "WanFit"
    FUNCTION = "make_plan"
    # Not an output node: it runs only as part of a graph that uses it, so a loader that fails validation
    # stops the whole prompt with its own message instead of the plan running alone around it.
    OUTPUT_NODE = False
    RETURN_TYPES = ("WANFIT_PLAN", "STRING", "INT", "INT", "INT", "INT")
    RETURN_NAMES = ("plan", "summary", "width", "height", "frames", "batch")
    OUTPUT_TOOLTIPS = ("The plan, for WanFit loaders, Sage Attention and VAE Decode.",
                       "The plan as text: tier, predicted VRAM/RAM, choices and reasons.",
                       "The planned video width, for the latent node's width.",
                       "The planned video height, for the latent node's height.",
                       "The planned frame count, for the latent node's length.",
                       "The planned batch, for the latent node's batch_size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_variant": (list(MODEL_VARIANTS), {
                "default": "ti2v_5b",
                "tooltip": "ti2v_5b: TI2V-5B (one model, Wan 2.2 VAE). t2v_a14b / i2v_a14b: the A14B high/low-noise "
                           "expert pair (Wan 2.1 VAE)."}),
            "width": ("INT", {"default": 1280, **_limits("width"), "step": 16,
                              "tooltip": "Video width in pixels: a multiple of 32 for TI2V-5B, of 16 for A14B."}),
            "height": ("INT", {"default": 704, **_limits("height"), "step": 16,
                               "tooltip": "Video height in pixels: a multiple of 32 for TI2V-5B, of 16 for A14B. "
                                          "Official: 704 (5B), 720 or 480 (A14B)."}),
            "frames": ("INT", {"default": 121, **_limits("frames"), "step": 4,
                               "tooltip": "Frame count, 4n+1 (121 for TI2V-5B at 24 fps, 81 for A14B at 16 fps)."}),
            "batch": ("INT", {"default": 1, **_limits("batch"), "tooltip": "Videos generated at once."}),
            "cfg": ("BOOLEAN", {"default": True, "tooltip": "On when cfg > 1 (two passes per step). Off for "
                                                            "cfg 1.0, e.g. with the 4-step lightx2v LoRA."}),
            "mode": (list(PLAN_MODES), {
                "default": "auto",
                "tooltip": "auto: read this GPU (total and free VRAM, RAM). A tier name plans for that card "
                           "instead, e.g. to size a job for a rented GPU."}),
            "reserve_vram_gb": ("FLOAT", {
                "default": 0.0, **_limits("reserve_vram_gb"), "step": 0.5,
                "tooltip": "VRAM to leave to other processes (a local LLM server, a second ComfyUI). "
                           "0 = automatic: ComfyUI's default plus whatever other processes hold now."}),
            "weight_dtype": (list(PLAN_WEIGHT_DTYPES), {
                "default": "auto", "tooltip": "auto lets the plan choose (fp8 on small cards). Force one to "
                                              "match the files you have."}),
            "text_encoder_device": (list(PLAN_TEXT_ENCODER_DEVICES), {
                "default": "auto", "tooltip": "Where umt5-xxl runs. cpu saves ~6 GB of VRAM at the cost of "
                                              "a slower prompt encode."}),
        }}

    def make_plan(self, model_variant, width, height, frames, batch, cfg, mode, reserve_vram_gb, weight_dtype,
                  text_encoder_device):
        import comfy.cli_args
        import comfy.model_management

        from ..wanfit.plan import apply_runtime_settings, plan_from_options

        core = running_core()
        result = plan_from_options(probe_for_plan, model_variant, width, height, frames, batch, cfg, mode,
                                   reserve_vram_gb, weight_dtype, text_encoder_device, core=core)
        lines = [result.summary()]
        if mode == "auto":
            lines += apply_runtime_settings(result, comfy.model_management, comfy.cli_args.args, core)
        summary = "\n".join(lines)
        ui = {"text": [summary], "wanfit_plan": [result.as_dict()]}
        return {"ui": ui, "result": (result, summary, width, height, frames, batch)}


NODE_CLASS_MAPPINGS = {"WanFitOffloadPlan": WanFitOffloadPlan}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitOffloadPlan": "WanFit Offload Plan"}
