from comfy_api.latest import io

from ..wanfit.choices import (MODEL_VARIANTS, PLAN_INPUT_LIMITS, PLAN_MODES, PLAN_TEXT_ENCODER_DEVICES,
                              PLAN_WEIGHT_DTYPES)
from .loaders import diffusion_model_folder, diffusion_model_names
from .sockets import Device, Plan, output, shown

NO_MODEL_FILE = "none"


def limits(name):
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


def model_file_path(name):
    from ..wanfit.models import resolve_model_path

    return resolve_model_path(diffusion_model_folder(name), name)


class WanFitOffloadPlan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitOffloadPlan", display_name="WanFit Offload Plan", category="WanFit",
            description="Plans a WAN 2.2 run for this GPU and this ComfyUI before it starts, or says what would fit.",
            inputs=[
                io.Combo.Input("model_variant", options=list(MODEL_VARIANTS), default="ti2v_5b",
                               tooltip="The model to plan for: TI2V-5B, or the T2V / I2V A14B expert pair."),
                io.Int.Input("width", default=1280, **limits("width"), step=16,
                             tooltip="Video width in pixels: a multiple of 32 for TI2V-5B, of 16 for A14B."),
                io.Int.Input("height", default=704, **limits("height"), step=16,
                             tooltip="Video height in pixels: a multiple of 32 for TI2V-5B, of 16 for A14B."),
                io.Int.Input("frames", default=121, **limits("frames"), step=4,
                             tooltip="Frame count, 4n+1 (121 for TI2V-5B at 24 fps, 81 for A14B at 16 fps)."),
                io.Int.Input("batch", default=1, **limits("batch"), tooltip="Videos generated at once."),
                io.Boolean.Input("cfg", default=True,
                                 tooltip="On when cfg > 1 (two passes per step); off for cfg 1.0."),
                io.Combo.Input("mode", options=list(PLAN_MODES), default="auto",
                               tooltip="auto plans for this GPU; a tier name plans for that card instead."),
                io.Float.Input("reserve_vram_gb", default=0.0, **limits("reserve_vram_gb"), step=0.5,
                               tooltip="VRAM to leave to other processes; 0 = automatic."),
                io.Combo.Input("weight_dtype", options=list(PLAN_WEIGHT_DTYPES), default="auto",
                               tooltip="auto lets the plan choose (fp8 on small cards); force one to match your "
                                       "files, ComfyUI's quantized float8, int8, mxfp8 and nvfp4 included."),
                io.Combo.Input("text_encoder_device", options=list(PLAN_TEXT_ENCODER_DEVICES), default="auto",
                               tooltip="Where umt5-xxl runs; cpu saves about 6 GB of VRAM."),
                Device.Input("device", optional=True,
                             tooltip="Optional WanFit Device Info output, planned for instead of probing again."),
                io.Combo.Input("model_file", options=[NO_MODEL_FILE] + diffusion_model_names(), default=NO_MODEL_FILE,
                               optional=True,
                               tooltip="Optional: the diffusion model (or .gguf) the plan is sized from, by its "
                                       "header; weight_dtype auto then takes its format."),
            ],
            outputs=[output(Plan, "plan", "The plan, for WanFit loaders, Sage Attention and VAE Decode."),
                     output(io.String, "summary", "The plan as text: tier, predicted VRAM/RAM, choices and reasons."),
                     output(io.Int, "width", "The planned video width, for the latent node's width."),
                     output(io.Int, "height", "The planned video height, for the latent node's height."),
                     output(io.Int, "frames", "The planned frame count, for the latent node's length."),
                     output(io.Int, "batch", "The planned batch, for the latent node's batch_size.")],
            # Not an output node: it runs only as part of a graph that uses it, so a loader that fails validation
            # stops the whole prompt with its own message instead of the plan running alone around it.
            is_output_node=False)

    @classmethod
    def validate_inputs(cls, model_file=NO_MODEL_FILE):
        """A named file is read before the prompt is queued: a damaged, foreign or missing one is refused by name."""
        from ..wanfit.errors import WanFitError
        from ..wanfit.plan.model_file import size_model_file

        if model_file == NO_MODEL_FILE:
            return True
        try:
            size_model_file(model_file_path(model_file))
        except WanFitError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, model_variant, width, height, frames, batch, cfg, mode, reserve_vram_gb, weight_dtype,
                text_encoder_device, device=None, model_file=NO_MODEL_FILE):
        import comfy.cli_args
        import comfy.model_management

        from ..wanfit.plan import apply_runtime_settings, plan_from_options

        core = running_core()
        probe = probe_for_plan if device is None else lambda: device
        result = plan_from_options(probe, model_variant, width, height, frames, batch, cfg, mode,
                                   reserve_vram_gb, weight_dtype, text_encoder_device, core=core,
                                   model_file=None if model_file == NO_MODEL_FILE else model_file_path(model_file))
        lines = [result.summary()]
        if mode == "auto":
            lines += apply_runtime_settings(result, comfy.model_management, comfy.cli_args.args, core)
        summary = "\n".join(lines)
        return shown(summary, result, summary, width, height, frames, batch, wanfit_plan=[result.as_dict()])
