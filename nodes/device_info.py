from comfy_api.latest import io

from ..wanfit.device import probe_comfyui_device
from .sockets import Device, output, shown


class WanFitDeviceInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitDeviceInfo", display_name="WanFit Device Info", category="WanFit",
            description="Reports the GPU, VRAM, system RAM, versions and attention backends WanFit plans for.",
            inputs=[],
            outputs=[output(io.String, "summary", "The device, memory and versions as text."),
                     output(Device, "device", "The probed device, for WanFit Offload Plan's device input.")],
            is_output_node=True)

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        return float("nan")  # free VRAM changes between runs: always probe again

    @classmethod
    def execute(cls):
        info = probe_comfyui_device()
        summary = info.summary()
        return shown(summary, summary, info)
