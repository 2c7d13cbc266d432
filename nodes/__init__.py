"""Node classes only (ComfyUI's V3 schema); each file declares its nodes and calls into wanfit/."""

from comfy_api.latest import ComfyExtension

from .attention import WanFitAttentionReport, WanFitSageAttention
from .device_info import WanFitDeviceInfo
from .latent import WanFitLoadSavedLatent
from .lean_forward import WanFitLeanForward
from .loaders import (WanFitLoadA14BExperts, WanFitLoadDiffusionModel, WanFitLoadTextEncoder, WanFitLoadVAE,
                      WanFitSwitchToLowNoiseExpert)
from .plan import WanFitOffloadPlan
from .schedule import WanFitExpertSwitchStep
from .vae_decode import WanFitVAEDecode

NODES = [WanFitDeviceInfo, WanFitOffloadPlan, WanFitLoadDiffusionModel, WanFitLoadA14BExperts,
         WanFitSwitchToLowNoiseExpert, WanFitLoadTextEncoder, WanFitLoadVAE, WanFitSageAttention,
         WanFitAttentionReport, WanFitLeanForward, WanFitExpertSwitchStep, WanFitLoadSavedLatent, WanFitVAEDecode]


class WanFitExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
