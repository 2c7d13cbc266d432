"""The planner's parameter counts against each core's own modules, built on the meta device."""

import json

import torch

from tests.comfy_import import import_comfy
from wanfit.decode import budget as decode_budget
from wanfit.plan import footprint


def count(module):
    return sum(parameter.numel() for parameter in module.parameters())


def test_formula_matches_comfyui_modules_on_meta_device(comfyui):
    import_comfy(comfyui)
    import comfy.ldm.wan.model as wan_model
    import comfy.ldm.wan.vae as vae21
    import comfy.ldm.wan.vae2_2 as vae22
    import comfy.ops
    import comfy.text_encoders.t5 as t5

    with torch.device("meta"):
        for config in (footprint.TI2V_5B, footprint.T2V_A14B_EXPERT, footprint.I2V_A14B_EXPERT):
            model = wan_model.WanModel(model_type="t2v", in_dim=config.in_dim, dim=config.dim, ffn_dim=config.ffn_dim,
                                       out_dim=config.out_dim, num_heads=config.num_heads, num_layers=config.num_layers,
                                       device="meta", operations=comfy.ops.disable_weight_init)
            assert count(model) == footprint.transformer_param_count(config), config.name
        common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
        assert count(vae22.WanVAE(dim=160, z_dim=48, **common)) == decode_budget.VAE_PARAM_COUNTS["wan2.2"]
        assert count(vae21.WanVAE(dim=96, z_dim=16, **common)) == decode_budget.VAE_PARAM_COUNTS["wan2.1"]
        umt5_config = json.loads((comfyui / "comfy/text_encoders/umt5_config_xxl.json").read_text())
        umt5 = t5.T5(umt5_config, dtype=None, device="meta", operations=comfy.ops.disable_weight_init)
        assert count(umt5) == footprint.t5_encoder_param_count()


def test_static_decoder_layouts_match_comfyuis_vae_modules(comfyui):
    """The offload plan sizes the decode from wanfit.decode.budget's static layouts (no VAE loaded): they must
    be what the decode reads off each core's own WanVAE at every stem depth."""
    import_comfy(comfyui)
    import comfy.ldm.wan.vae as vae21
    import comfy.ldm.wan.vae2_2 as vae22

    from wanfit.decode.layout import Layout

    common = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    with torch.device("meta"):
        modules = {"wan2.2": vae22.WanVAE(dim=160, z_dim=48, **common), "wan2.1": vae21.WanVAE(dim=96, z_dim=16, **common)}
    for kind, module in modules.items():
        for cut in range(3):
            read, static = Layout(module, None, cut), decode_budget.static_layout(kind, cut)
            for field in ("kind", "cut", "cut_count", "z_dim", "stem_scale", "stem_temporal_factor", "temporal_factor",
                          "stored_channels_per_frame", "spec"):
                assert getattr(read, field) == getattr(static, field), (kind, cut, field)
