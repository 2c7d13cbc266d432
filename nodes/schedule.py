from comfy_api.latest import io

from ..wanfit.schedule import switch_step
from .sockets import output, shown


class WanFitExpertSwitchStep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import comfy.samplers

        return io.Schema(
            node_id="WanFitExpertSwitchStep", display_name="WanFit A14B Expert Switch Step", category="WanFit/sampling",
            description="The step at which an A14B run hands over from the high-noise to the low-noise expert.",
            inputs=[
                io.Model.Input("model", tooltip="The high-noise expert after ModelSamplingSD3 (its shift sets the "
                                                "schedule)."),
                io.Int.Input("steps", default=40, min=1, max=10000, tooltip="Total steps of both samplers."),
                io.Float.Input("boundary", default=0.875, min=0.0, max=1.0, step=0.005,
                               tooltip="Wan2.2's boundary: 0.875 for T2V-A14B, 0.900 for I2V-A14B."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple",
                               tooltip="The scheduler of both samplers."),
            ],
            outputs=[output(io.Int, "switch_step", "Steps run by the high-noise expert."),
                     output(io.String, "info", "The sigmas around the switch.")])

    @classmethod
    def execute(cls, model, steps, boundary, scheduler):
        import comfy.samplers

        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
        step = switch_step(sigmas.tolist(), boundary)
        info = (f"high-noise expert: steps 0-{step} (sigma {float(sigmas[0]):.3f} to {float(sigmas[step]):.3f}), "
                f"low-noise expert: steps {step}-{steps}; boundary {boundary}")
        return shown(info, step, info)
