from ..wanfit.device import probe_comfyui_device


class WanFitDeviceInfo:
    DESCRIPTION = ("Reports the device ComfyUI runs on: GPU name, compute capability, total and free VRAM, "
                   "system RAM, torch/CUDA/ComfyUI versions and which attention backends are importable. "
                   "Run it first on a new machine (or a rented GPU) to see what WanFit will plan for.")
    CATEGORY = "WanFit"
    FUNCTION = "report"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "WANFIT_DEVICE")
    RETURN_NAMES = ("summary", "device")
    OUTPUT_TOOLTIPS = ("Human-readable summary of the device, memory and versions.",
                       "The probe as a dict, for WanFit's offload planner.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls):
        return float("nan")  # free VRAM changes between runs: always re-probe

    def report(self):
        info = probe_comfyui_device()
        summary = info.summary()
        return {"ui": {"text": [summary]}, "result": (summary, info.as_dict())}


NODE_CLASS_MAPPINGS = {"WanFitDeviceInfo": WanFitDeviceInfo}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitDeviceInfo": "WanFit Device Info"}
