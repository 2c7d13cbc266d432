from ..wanfit.decode.budget import auto_budget_bytes
from ..wanfit.units import BYTES_PER_MIB, format_gib

DECODE_MODES = ("auto", "on", "off")  # wanfit.decode.api.DECODE_MODES (kept here: the node imports no torch)
MODE_TOOLTIP = ("auto: WanFit's tiled decode where it reproduces this ComfyUI's own VAE decode (checked once per "
                "process on a small latent), else ComfyUI's own decode (tiled by ComfyUI when the budget needs it); "
                "the report says which ran and why. on: WanFit's tiled decode, or an error when that check fails. "
                "off: ComfyUI's own VAE decode.")


class WanFitVAEDecode:
    DESCRIPTION = ("Decodes a WAN latent within a memory budget, as a drop-in for VAE Decode: picks the largest "
                   "spatial tiles that fit before it starts (no OOM needed to find out), keeps the causal time "
                   "axis whole so there are no temporal seams, gives each tile the halo the decoder needs so tiles "
                   "match the untiled decode (when the budget is too small for that, it blends tiles and the report "
                   "says so, with the budget that would be exact), moves finished frames off the GPU, frees other "
                   "models first when the budget needs it, and retries a tile smaller (then on the CPU) if the GPU "
                   "still runs out. Before its first tiled decode it checks itself against this ComfyUI's own VAE "
                   "decode on a small latent; where they differ, ComfyUI's own decode runs (mode auto).")
    CATEGORY = "WanFit"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "report")
    OUTPUT_TOOLTIPS = ("The decoded frames, like VAE Decode's output.", "Budget and tiles used.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The sampled latent (TI2V-5B: 48 channels, Wan 2.2 VAE; A14B: 16 "
                                              "channels, Wan 2.1 VAE)."}),
            "vae": ("VAE", {"tooltip": "The WAN VAE that matches the model."}),
            "budget_mb": ("INT", {"default": 0, "min": 0, "max": 1 << 20, "step": 64,
                                  "tooltip": "Working memory for the decode, in MB. 0 = auto: the device's free "
                                             "memory minus the plan's reserve."}),
            "overlap": ("INT", {"default": 0, "min": 0, "max": 64,
                                "tooltip": "0 = exact when the budget allows: each tile gets the full halo the decoder "
                                           "needs, so there are no seams (a budget too small for that blends tiles "
                                           "and the report says APPROXIMATE, with the budget that would be exact). "
                                           "A number caps the halo at that many latent pixels and blends tiles: "
                                           "less work, always approximate (seams can differ by tens of /255)."}),
        }, "optional": {
            "plan": ("WANFIT_PLAN", {"tooltip": "Optional WanFit Offload Plan: its reserve and decode budget "
                                                "apply when budget_mb is 0."}),
            "mode": (list(DECODE_MODES), {"default": "auto", "tooltip": MODE_TOOLTIP}),
        }}

    def decode(self, samples, vae, budget_mb, overlap, plan=None, mode="auto"):
        import comfy.model_management as model_management
        import comfy.utils

        from ..wanfit.decode import decode_comfy_vae  # torch.nn-heavy: imported on first decode

        budget = budget_mb * BYTES_PER_MIB if budget_mb else auto_budget_bytes(vae, plan, model_management)
        bar = {}

        def progress(done, total):
            if bar.get("total") != total:
                bar["total"], bar["pbar"] = total, comfy.utils.ProgressBar(total)
            bar["pbar"].update_absolute(done, total)

        def free_models_for_decode(needed_bytes):
            # as VAE.decode does: load the VAE onto its device, unloading other models to make room
            model_management.load_models_gpu([vae.patcher], memory_required=needed_bytes,
                                             force_full_load=getattr(vae, "disable_offload", False))

        oom = model_management.OOM_EXCEPTION  # plain Exception on builds without a CUDA OOM type: no ladder then
        plans, notes = [], []
        images = decode_comfy_vae(vae, samples["samples"], budget, overlap=overlap or None, progress=progress,
                                  free_models_for_decode=free_models_for_decode,
                                  oom_exceptions=() if oom is Exception else (oom,), on_plan=plans.append,
                                  mode=mode, on_note=notes.append)
        if images.dim() == 5:  # (batch, frames, H, W, 3) -> a batch of frames, as VAEDecode returns
            images = images.reshape(-1, *images.shape[-3:])
        how = plans[-1].describe() if plans else "ComfyUI's own VAE decode"
        report = (f"decoded {images.shape[0]} frames of {images.shape[2]}x{images.shape[1]} within "
                  f"{format_gib(budget)} ({'auto' if not budget_mb else 'set on the node'}): {how}"
                  + "".join(f"\n{note}" for note in notes))
        return {"ui": {"text": [report]}, "result": (images, report)}


NODE_CLASS_MAPPINGS = {"WanFitVAEDecode": WanFitVAEDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitVAEDecode": "WanFit VAE Decode"}
