"""Node classes only; each file declares its nodes and calls into wanfit/."""

from . import attention, device_info, latent, lean_forward, loaders, plan, schedule, vae_decode
from .routes import register_with_comfyui

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _module in (device_info, plan, loaders, attention, lean_forward, schedule, latent, vae_decode):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

register_with_comfyui()
