"""Loader nodes. The checks (wanfit.models) and load options (wanfit.loading) are imported when a node
runs, not when ComfyUI starts: the widget choices come from wanfit.choices."""

from ..wanfit.choices import LOADER_TEXT_ENCODER_DEVICES as TEXT_ENCODER_DEVICE_OPTIONS
from ..wanfit.choices import LOADER_WEIGHT_DTYPES as WEIGHT_DTYPE_OPTIONS
from ..wanfit.errors import WanFitError

def models():
    from ..wanfit import models as module

    return module


def loading():
    from ..wanfit.models import load_options as module

    return module


PLAN_INPUT = ("WANFIT_PLAN", {"tooltip": "Optional WanFit Offload Plan: weight dtype, text-encoder device and the "
                                         "model variant to check against come from it."})
WEIGHT_DTYPE_TOOLTIP = ("auto: follow the plan (fp8 on small cards), or load as stored without a plan. default: as "
                        "stored. fp8_*: cast at load to save half the memory. bf16/fp16: cast 16-bit weights.")


def filenames(folder):
    import folder_paths

    return folder_paths.get_filename_list(folder)


def full_path(folder, name):
    """The file's path, or an error that names the folder it belongs in and where to download it."""
    import folder_paths

    from ..wanfit.models import missing_model_error, not_a_regular_file_error, special_file_in

    path = folder_paths.get_full_path(folder, name)
    if path is None:
        special = special_file_in(folder_paths.get_folder_paths(folder), name)
        if special is not None:
            raise not_a_regular_file_error(special)
        models_dir = getattr(folder_paths, "models_dir", None)
        raise missing_model_error(name, folder, models_dir)
    return path


def validation_message(check):
    """For VALIDATE_INPUTS: True, or the error text, so /prompt refuses a bad file before it is queued
    (ComfyUI then skips its own 'Value not in list', whose text names neither the folder nor the fix)."""
    try:
        check()
    except WanFitError as error:
        return str(error)
    return True


def check_vae_file(path):
    from ..wanfit.models import ModelMismatchError, detect_variant

    info = detect_variant(path)
    if info.variant not in ("wan22_vae", "wan21_vae"):
        raise ModelMismatchError(
            f"Not a WAN VAE: {path} looks like {info.looks_like}. Expected the Wan 2.2 VAE (wan2.2_vae.safetensors, "
            "for TI2V-5B) or the Wan 2.1 VAE (wan_2.1_vae.safetensors, for A14B) in models/vae. Fix: pick one of "
            "those; python -m wanfit models lists them with their download links.", [path])
    return info


def load_diffusion_model(path, info, weight_dtype_option, plan):
    import comfy.sd

    from ..wanfit.models.load_options import choose_weight_dtype, diffusion_model_options

    weight_dtype, reason = choose_weight_dtype(weight_dtype_option, plan, info.weight_dtype, info.fp8_scaled)
    from ..wanfit.experts import remember_source

    model = comfy.sd.load_diffusion_model(path, model_options=diffusion_model_options(weight_dtype))
    remember_source(model, path)
    return model, reason


def plan_variant(plan):
    return getattr(plan, "model_variant", None) if plan is not None else None


class WanFitLoadDiffusionModel:
    DESCRIPTION = ("Loads a WAN 2.2 diffusion model (TI2V-5B, or one A14B expert) after checking its header: a wrong "
                   "or damaged file is refused in milliseconds, before anything is loaded, with the fix. Follows the "
                   "plan's weight dtype when one is connected.")
    CATEGORY = "WanFit/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The diffusion model.", "What the file is and how it was loaded.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (filenames("diffusion_models"), {
                "tooltip": "File in models/diffusion_models, e.g. wan2.2_ti2v_5B_fp16.safetensors."}),
            "weight_dtype": (list(WEIGHT_DTYPE_OPTIONS), {"default": "auto", "tooltip": WEIGHT_DTYPE_TOOLTIP}),
        }, "optional": {"plan": PLAN_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return validation_message(lambda: models().check_diffusion_model(full_path("diffusion_models", model_name)))

    @classmethod
    def IS_CHANGED(cls, model_name, **kwargs):
        """Load again after WanFit released these weights (A14B hand-over); otherwise ComfyUI's cache holds."""
        import folder_paths

        from ..wanfit.experts import released_generation

        return f"{model_name}#{released_generation(folder_paths.get_full_path('diffusion_models', model_name))}"

    def load(self, model_name, weight_dtype, plan=None):
        path = full_path("diffusion_models", model_name)
        info = models().check_diffusion_model(path, plan_variant(plan))
        model, reason = load_diffusion_model(path, info, weight_dtype, plan)
        text = f"{model_name}: {info.title} ({info.precision_label}); {reason}"
        return {"ui": {"text": [text]}, "result": (model, text)}


class WanFitLoadA14BExperts:
    DESCRIPTION = ("Loads the WAN 2.2 A14B expert pair (high-noise for the early steps, low-noise for the late steps) "
                   "after checking that both are experts of the same task (T2V with T2V, I2V with I2V), of the same "
                   "architecture, and two different files.")
    CATEGORY = "WanFit/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "MODEL", "STRING")
    RETURN_NAMES = ("high_noise_model", "low_noise_model", "info")
    OUTPUT_TOOLTIPS = ("The high-noise expert (first part of the schedule).",
                       "The low-noise expert (the rest of the schedule).", "Which file is which, and how loaded.")

    @classmethod
    def INPUT_TYPES(cls):
        names = filenames("diffusion_models")
        return {"required": {
            "high_noise_model": (names, {"tooltip": "The high-noise expert, e.g. "
                                                    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors."}),
            "low_noise_model": (names, {"tooltip": "The low-noise expert of the same task, e.g. "
                                                   "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors."}),
            "weight_dtype": (list(WEIGHT_DTYPE_OPTIONS), {"default": "auto", "tooltip": WEIGHT_DTYPE_TOOLTIP}),
        }, "optional": {"plan": PLAN_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, high_noise_model, low_noise_model):
        return validation_message(lambda: models().check_expert_pair(full_path("diffusion_models", high_noise_model),
                                                            full_path("diffusion_models", low_noise_model)))

    def load(self, high_noise_model, low_noise_model, weight_dtype, plan=None):
        high_path = full_path("diffusion_models", high_noise_model)
        low_path = full_path("diffusion_models", low_noise_model)
        pair = models().check_expert_pair(high_path, low_path)
        expected = plan_variant(plan)
        if expected in ("t2v_a14b", "i2v_a14b") and pair.high.variant != expected:
            models().check_diffusion_model(high_path, expected)  # raises the wrong-variant message
        high, reason = load_diffusion_model(high_path, pair.high, weight_dtype, plan)
        low, _ = load_diffusion_model(low_path, pair.low, weight_dtype, plan)
        text = f"{pair.roles}; {reason}"
        return {"ui": {"text": [text]}, "result": (high, low, text)}


class WanFitSwitchToLowNoiseExpert:
    DESCRIPTION = ("Hands an A14B run over from the high-noise to the low-noise expert: after the high-noise "
                   "sampler it checks the pair (same task, same architecture, different files), releases the "
                   "high-noise expert from VRAM and RAM when the plan says RAM is short, and only then loads the "
                   "low-noise expert, so the two 14B experts are never in memory together. The latent passes "
                   "through to the low-noise sampler.")
    CATEGORY = "WanFit/loaders"
    FUNCTION = "switch"
    RETURN_TYPES = ("MODEL", "LATENT", "STRING")
    RETURN_NAMES = ("low_noise_model", "samples", "info")
    OUTPUT_TOOLTIPS = ("The low-noise expert.", "The high-noise sampler's latent, unchanged.",
                       "What was released and loaded, and why.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "high_noise_model": ("MODEL", {"tooltip": "The high-noise expert as loaded (WanFit Load Diffusion "
                                                      "Model); it is released here when the plan says so."}),
            "samples": ("LATENT", {"tooltip": "The high-noise sampler's output: the switch waits for it."}),
            "low_noise_model": (filenames("diffusion_models"), {
                "tooltip": "The low-noise expert of the same task, e.g. "
                           "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors."}),
            "weight_dtype": (list(WEIGHT_DTYPE_OPTIONS), {"default": "auto", "tooltip": WEIGHT_DTYPE_TOOLTIP}),
            "release_high_noise": (["auto", "always", "never"], {
                "default": "auto", "tooltip": "auto: release when the plan says RAM is short (the next run then "
                                              "reloads it from disk); always / never override the plan."}),
        }, "optional": {"plan": PLAN_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, low_noise_model):
        return validation_message(lambda: models().check_diffusion_model(full_path("diffusion_models",
                                                                                   low_noise_model)))

    def switch(self, high_noise_model, samples, low_noise_model, weight_dtype, release_high_noise, plan=None):
        import comfy.model_management as model_management

        from ..wanfit.experts import release_model, should_release, source_path

        low_path = full_path("diffusion_models", low_noise_model)
        high_path = source_path(high_noise_model)
        if high_path:
            pair = models().check_expert_pair(high_path, low_path)
            low_info, roles = pair.low, pair.roles
        else:
            low_info, roles = models().check_diffusion_model(low_path), "high-noise expert loaded by another node"
        release, why = should_release(release_high_noise, plan)
        lines = [roles]
        if release:
            freed = release_model(high_noise_model, model_management)
            lines.append(f"released the high-noise expert ({freed / 2**30:.2f} GB): {why}")
        else:
            lines.append(why)
        low, reason = load_diffusion_model(low_path, low_info, weight_dtype, plan)
        lines.append(f"loaded {low_noise_model}: {reason}")
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (low, samples, text)}


class WanFitLoadTextEncoder:
    DESCRIPTION = ("Loads the umt5-xxl text encoder WAN 2.2 uses (any precision ComfyUI supports, e.g. "
                   "umt5_xxl_fp8_e4m3fn_scaled) after checking the file, on the CPU when the plan says so.")
    CATEGORY = "WanFit/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("CLIP", "STRING")
    RETURN_NAMES = ("clip", "info")
    OUTPUT_TOOLTIPS = ("The text encoder, for CLIPTextEncode.", "What the file is and where it runs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (filenames("text_encoders"), {
                "tooltip": "File in models/text_encoders, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors."}),
            "device": (list(TEXT_ENCODER_DEVICE_OPTIONS), {
                "default": "auto", "tooltip": "auto: the plan's choice. cpu keeps ~6 GB of VRAM free for the "
                                              "diffusion model at the cost of a slower prompt encode."}),
        }, "optional": {"plan": PLAN_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, clip_name):
        return validation_message(lambda: models().check_text_encoder(full_path("text_encoders", clip_name)))

    def load(self, clip_name, device, plan=None):
        import comfy.sd
        import folder_paths
        import torch

        path = full_path("text_encoders", clip_name)
        info = models().check_text_encoder(path)
        chosen, reason = loading().choose_text_encoder_device(device, plan)
        model_options = {}
        if chosen == "cpu":
            model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
        clip = comfy.sd.load_clip(ckpt_paths=[path], embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                  clip_type=comfy.sd.CLIPType.WAN, model_options=model_options)
        text = f"{clip_name}: {info.title} ({info.precision_label}); {reason}"
        return {"ui": {"text": [text]}, "result": (clip, text)}


class WanFitLoadVAE:
    DESCRIPTION = ("Loads the WAN VAE after checking it matches the model: the Wan 2.2 VAE (48 latent channels) for "
                   "TI2V-5B, the Wan 2.1 VAE (16 channels) for A14B. Connect the model (or a plan) to have the "
                   "pairing checked before anything is decoded.")
    CATEGORY = "WanFit/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("VAE", "STRING")
    RETURN_NAMES = ("vae", "info")
    OUTPUT_TOOLTIPS = ("The VAE.", "Which VAE this is.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (filenames("vae"), {"tooltip": "File in models/vae: wan2.2_vae.safetensors for TI2V-5B, "
                                                       "wan_2.1_vae.safetensors for A14B."}),
        }, "optional": {
            "model": ("MODEL", {"tooltip": "Optional: the diffusion model this VAE will decode for; a mismatch is "
                                           "refused with the right file to use."}),
            "plan": PLAN_INPUT,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return validation_message(lambda: check_vae_file(full_path("vae", vae_name)))

    def load(self, vae_name, model=None, plan=None):
        import comfy.sd
        import comfy.utils

        path = full_path("vae", vae_name)
        variant = model_variant_of(model) or plan_variant(plan)
        if variant is not None:
            info = models().check_vae_for_model(path, variant)
        else:
            info = check_vae_file(path)
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))
        text = f"{vae_name}: {info.title}" + (f", checked for {variant}" if variant else "")
        return {"ui": {"text": [text]}, "result": (vae, text)}


def model_variant_of(model):
    """ti2v_5b | t2v_a14b | i2v_a14b for a loaded WAN MODEL (ComfyUI's detected config), else None."""
    if model is None:
        return None
    config = getattr(getattr(model, "model", None), "model_config", None)
    unet_config = getattr(config, "unet_config", {}) or {}
    if unet_config.get("image_model") != "wan2.1":
        return None
    if unet_config.get("out_dim") == 48:
        return "ti2v_5b"
    return "i2v_a14b" if unet_config.get("in_dim") == 36 else "t2v_a14b"


NODE_CLASS_MAPPINGS = {
    "WanFitLoadDiffusionModel": WanFitLoadDiffusionModel,
    "WanFitLoadA14BExperts": WanFitLoadA14BExperts,
    "WanFitSwitchToLowNoiseExpert": WanFitSwitchToLowNoiseExpert,
    "WanFitLoadTextEncoder": WanFitLoadTextEncoder,
    "WanFitLoadVAE": WanFitLoadVAE,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanFitLoadDiffusionModel": "WanFit Load Diffusion Model",
    "WanFitLoadA14BExperts": "WanFit Load A14B Experts",
    "WanFitSwitchToLowNoiseExpert": "WanFit Switch To Low-Noise Expert",
    "WanFitLoadTextEncoder": "WanFit Load Text Encoder",
    "WanFitLoadVAE": "WanFit Load VAE",
}
