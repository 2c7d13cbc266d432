from comfy_api.latest import io

from ..wanfit.choices import REPLAY_MODES
from ..wanfit.decode.budget import auto_budget_bytes
from ..wanfit.units import BYTES_PER_MIB, format_gib
from .sockets import output, plan_input, shown


class WanFitVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitVAEDecode", display_name="WanFit VAE Decode", category="WanFit",
            description="Decodes a WAN latent within a memory budget, as a drop-in for VAE Decode.",
            inputs=[
                io.Latent.Input("samples", tooltip="The sampled latent (TI2V-5B: 48 channels; A14B: 16 channels)."),
                io.Vae.Input("vae", tooltip="The WAN VAE that matches the model."),
                io.Int.Input("budget_mb", default=0, min=0, max=1 << 20, step=64,
                             tooltip="Working memory for the decode in MB; 0 = auto (free memory minus the "
                                     "plan's reserve)."),
                io.Int.Input("overlap", default=0, min=0, max=64,
                             tooltip="0 = exact halos when the budget allows; a number caps the halo and blends "
                                     "tiles (approximate)."),
                plan_input("Optional WanFit Offload Plan: its reserve and decode budget apply when budget_mb is 0."),
                io.Combo.Input("mode", options=list(REPLAY_MODES), default="auto", optional=True,
                               tooltip="auto: WanFit's tiles where they match this ComfyUI's decode, else its own; "
                                       "on: WanFit's tiles or an error; off: ComfyUI's own decode."),
            ],
            outputs=[output(io.Image, "images", "The decoded frames, like VAE Decode's output."),
                     output(io.String, "report", "Budget and tiles used.")])

    @classmethod
    def execute(cls, samples, vae, budget_mb, overlap, plan=None, mode="auto"):
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
        return shown(report, images, report)
