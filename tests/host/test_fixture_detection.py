"""Each tiny fixture is classified by ComfyUI's own detection as the variant it stands for.

In-process (no server): ComfyUI's model_detection and sd.VAE are imported from the checkout.
"""

import pytest
import torch

from tests.comfy_import import import_comfy
from tests.host import graphs

EXPECTED_DIFFUSION = {
    # file: (ComfyUI model config class, in_dim, out_dim, latent format)
    graphs.TI2V_5B: ("WAN22_T2V", 48, 48, "Wan22"),
    graphs.T2V_HIGH: ("WAN21_T2V", 16, 16, "Wan21"),
    graphs.T2V_LOW: ("WAN21_T2V", 16, 16, "Wan21"),
    graphs.I2V_HIGH: ("WAN21_T2V", 36, 16, "Wan21"),  # real A14B I2V experts carry no img_emb either
    graphs.I2V_LOW: ("WAN21_T2V", 36, 16, "Wan21"),
}

EXPECTED_VAE = {
    # file: (latent channels, spatial downscale, decoder module)
    graphs.VAE_22: (48, 16, "comfy.ldm.wan.vae2_2"),
    graphs.VAE_21: (16, 8, "comfy.ldm.wan.vae"),
}


@pytest.fixture(scope="module")
def comfy(comfyui):
    import_comfy(comfyui)
    import comfy.model_detection
    import comfy.sd
    import comfy.utils

    return comfy


@pytest.mark.parametrize("name", sorted(EXPECTED_DIFFUSION))
def test_diffusion_fixture_is_detected_as_intended_variant(comfy, fixtures, name):
    state_dict = comfy.utils.load_torch_file(str(fixtures["diffusion_models"][name]))
    config = comfy.model_detection.model_config_from_unet(state_dict, "")
    expected_class, in_dim, out_dim, latent_format = EXPECTED_DIFFUSION[name]
    assert config is not None, f"ComfyUI did not recognise {name}"
    assert type(config).__name__ == expected_class
    assert (config.unet_config["in_dim"], config.unet_config["out_dim"]) == (in_dim, out_dim)
    assert config.unet_config["num_heads"] == 1 and config.unet_config["dim"] == 128
    assert type(config.latent_format).__name__ == latent_format


@pytest.mark.parametrize("name", sorted(EXPECTED_VAE))
def test_vae_fixture_is_detected_and_decodes_finite_frames(comfy, fixtures, name):
    state_dict = comfy.utils.load_torch_file(str(fixtures["vae"][name]))
    vae = comfy.sd.VAE(sd=state_dict)
    latent_channels, downscale, module = EXPECTED_VAE[name]
    assert vae.latent_channels == latent_channels
    assert vae.upscale_index_formula == (4, downscale, downscale)
    assert type(vae.first_stage_model).__module__ == module
    latent = torch.randn(1, latent_channels, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    frames = vae.decode(latent)
    assert tuple(frames.shape[-4:]) == (5, 4 * downscale, 4 * downscale, 3)
    assert torch.isfinite(frames).all()
    assert frames.std() > 0.02, f"decoded frames are nearly flat (std {frames.std():.4f})"


def test_wanfit_header_detection_agrees_with_comfyui_on_every_fixture(fixtures):
    from wanfit.models import detect_variant

    expected = {graphs.TI2V_5B: "ti2v_5b", graphs.T2V_HIGH: "t2v_a14b", graphs.T2V_LOW: "t2v_a14b",
                graphs.I2V_HIGH: "i2v_a14b", graphs.I2V_LOW: "i2v_a14b", graphs.VAE_22: "wan22_vae",
                graphs.VAE_21: "wan21_vae"}
    paths = {**fixtures["diffusion_models"], **fixtures["vae"]}
    assert {name: detect_variant(path).variant for name, path in paths.items()} == expected
    assert 700e6 < detect_variant(paths[graphs.VAE_22]).parameter_count < 710e6  # the real Wan 2.2 VAE's ~705M
