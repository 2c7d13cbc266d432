from ..wanfit.schedule import switch_step


class WanFitExpertSwitchStep:
    DESCRIPTION = ("The step at which an A14B run switches from the high-noise to the low-noise expert, as Wan2.2 "
                   "does it: the high-noise expert runs while the sigma is at or above the boundary (0.875 for "
                   "T2V, 0.900 for I2V) under this model's shift and this scheduler. Feed it to end_at_step of the "
                   "first KSamplerAdvanced and start_at_step of the second.")
    CATEGORY = "WanFit/sampling"
    FUNCTION = "compute"
    RETURN_TYPES = ("INT", "STRING")
    RETURN_NAMES = ("switch_step", "info")
    OUTPUT_TOOLTIPS = ("Steps run by the high-noise expert.", "The sigmas around the switch.")

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers

        return {"required": {
            "model": ("MODEL", {"tooltip": "The high-noise expert after ModelSamplingSD3 (its shift sets the "
                                           "schedule)."}),
            "steps": ("INT", {"default": 40, "min": 1, "max": 10000, "tooltip": "Total steps of both samplers."}),
            "boundary": ("FLOAT", {"default": 0.875, "min": 0.0, "max": 1.0, "step": 0.005,
                                   "tooltip": "Wan2.2's boundary: 0.875 for T2V-A14B, 0.900 for I2V-A14B."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "simple",
                                                              "tooltip": "The scheduler of both samplers."}),
        }}

    def compute(self, model, steps, boundary, scheduler):
        import comfy.samplers

        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
        step = switch_step(sigmas.tolist(), boundary)
        info = (f"high-noise expert: steps 0-{step} (sigma {float(sigmas[0]):.3f} to {float(sigmas[step]):.3f}), "
                f"low-noise expert: steps {step}-{steps}; boundary {boundary}")
        return {"ui": {"text": [info]}, "result": (step, info)}


NODE_CLASS_MAPPINGS = {"WanFitExpertSwitchStep": WanFitExpertSwitchStep}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitExpertSwitchStep": "WanFit A14B Expert Switch Step"}
