"""API-format graphs built from stock ComfyUI nodes, shaped like the official WAN 2.2 templates
(comfyui-workflow-templates: video_wan2_2_5B_ti2v.json, video_wan2_2_14B_t2v.json)."""

TI2V_5B = "wanfit_tiny_ti2v_5B.safetensors"
T2V_HIGH = "wanfit_tiny_t2v_high_noise_14B.safetensors"
T2V_LOW = "wanfit_tiny_t2v_low_noise_14B.safetensors"
I2V_HIGH = "wanfit_tiny_i2v_high_noise_14B.safetensors"
I2V_LOW = "wanfit_tiny_i2v_low_noise_14B.safetensors"
VAE_22 = "wanfit_random_wan2.2_vae.safetensors"
VAE_21 = "wanfit_random_wan_2.1_vae.safetensors"


def text_encode(node_id_text, seed):
    return {"class_type": "WanFitTestTextEncode", "inputs": {"text": node_id_text, "seed": seed}}


def ti2v_5b_stock(width=64, height=64, frames=5, steps=2, seed=1, fps=24, prefix="video/wanfit_test_5b"):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TI2V_5B, "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_22}},
        "3": text_encode("a red fox running through snow", 1),
        "4": text_encode("blurry, static", 2),
        "5": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "6": {"class_type": "Wan22ImageToVideoLatent",
              "inputs": {"vae": ["2", 0], "width": width, "height": height, "length": frames, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["5", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["6", 0],
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["2", 0]}},
        "9": {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": fps}},
        "10": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": prefix,
                                                      "format": "auto", "codec": "auto"}},
    }


def a14b_t2v_stock(width=64, height=64, frames=5, steps=2, seed=1, fps=16, prefix="video/wanfit_test_a14b"):
    switch_step = steps // 2
    sampler_common = {"add_noise": "enable", "noise_seed": seed, "steps": steps, "cfg": 3.5,
                      "sampler_name": "euler", "scheduler": "simple"}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": T2V_HIGH, "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": T2V_LOW, "weight_dtype": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_21}},
        "4": text_encode("a red fox running through snow", 1),
        "5": text_encode("blurry, static", 2),
        "6": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 8.0}},
        "8": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": width, "height": height, "length": frames, "batch_size": 1}},
        "9": {"class_type": "KSamplerAdvanced", "inputs": {
            **sampler_common, "model": ["6", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["8", 0],
            "start_at_step": 0, "end_at_step": switch_step, "return_with_leftover_noise": "enable"}},
        "10": {"class_type": "KSamplerAdvanced", "inputs": {
            **sampler_common, "add_noise": "disable", "model": ["7", 0], "positive": ["4", 0], "negative": ["5", 0],
            "latent_image": ["9", 0], "start_at_step": switch_step, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["3", 0]}},
        "12": {"class_type": "CreateVideo", "inputs": {"images": ["11", 0], "fps": fps}},
        "13": {"class_type": "SaveVideo", "inputs": {"video": ["12", 0], "filename_prefix": prefix,
                                                      "format": "auto", "codec": "auto"}},
    }
