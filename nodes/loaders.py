"""Loader nodes. The checks, paths and load options (wanfit.models) are imported when a node
runs, not when ComfyUI starts: the widget choices come from wanfit.choices."""

from comfy_api.latest import io

from ..wanfit.choices import LOADER_TEXT_ENCODER_DEVICES, LOADER_WEIGHT_DTYPES
from ..wanfit.errors import WanFitError
from ..wanfit.plan.types import plan_field
from .sockets import output, plan_input, shown


def models():
    from ..wanfit import models as module

    return module


def loading():
    from ..wanfit.models import load_options as module

    return module


def filenames(folder):
    import folder_paths

    return folder_paths.get_filename_list(folder)


def weight_dtype_input():
    return io.Combo.Input("weight_dtype", options=list(LOADER_WEIGHT_DTYPES), default="auto",
                          tooltip="auto follows the plan (fp8 on small cards); default loads as stored; the others "
                                  "cast at load.")


def loader_plan_input():
    return plan_input("Optional WanFit Offload Plan: weight dtype, text-encoder device and model variant to check.")


def refusal(check_name, folder, *file_names):
    """validate_inputs' answer: True, or the error text of wanfit.models' `check_name` on the resolved files,
    so /prompt refuses a bad file before it is queued (ComfyUI then skips its own 'Value not in list', whose
    text names neither the folder nor the fix)."""
    try:
        getattr(models(), check_name)(*(models().resolve_model_path(folder, name) for name in file_names))
    except WanFitError as error:
        return str(error)
    return True


def load_diffusion_model(path, info, weight_dtype_option, plan):
    import comfy.sd

    from ..wanfit.experts import remember_source
    from ..wanfit.models.load_options import choose_weight_dtype, diffusion_model_options

    models().check_loads_on_core(info)
    weight_dtype, reason = choose_weight_dtype(weight_dtype_option, plan, info.weight_dtype, info.fp8_scaled,
                                               info.quantization)
    model = comfy.sd.load_diffusion_model(path, model_options=diffusion_model_options(weight_dtype))
    remember_source(model, path)
    return model, reason


class WanFitLoadDiffusionModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLoadDiffusionModel", display_name="WanFit Load Diffusion Model", category="WanFit/loaders",
            description="Loads a WAN 2.2 diffusion model after checking its header, following the plan's weight dtype.",
            inputs=[io.Combo.Input("model_name", options=filenames("diffusion_models"),
                                   tooltip="File in models/diffusion_models, e.g. wan2.2_ti2v_5B_fp16.safetensors."),
                    weight_dtype_input(), loader_plan_input()],
            outputs=[output(io.Model, "model", "The diffusion model."),
                     output(io.String, "info", "What the file is and how it was loaded.")])

    @classmethod
    def validate_inputs(cls, model_name):
        return refusal("check_loadable_diffusion_model", "diffusion_models", model_name)

    @classmethod
    def fingerprint_inputs(cls, model_name, **inputs):
        """Load again after WanFit released these weights (A14B hand-over); otherwise ComfyUI's cache holds."""
        import folder_paths

        from ..wanfit.experts import released_generation

        return f"{model_name}#{released_generation(folder_paths.get_full_path('diffusion_models', model_name))}"

    @classmethod
    def execute(cls, model_name, weight_dtype, plan=None):
        path = models().resolve_model_path("diffusion_models", model_name)
        info = models().check_diffusion_model(path, plan_field(plan, "model_variant"))
        model, reason = load_diffusion_model(path, info, weight_dtype, plan)
        text = f"{model_name}: {info.title} ({info.precision_label}); {reason}"
        return shown(text, model, text)


class WanFitLoadA14BExperts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = filenames("diffusion_models")
        return io.Schema(
            node_id="WanFitLoadA14BExperts", display_name="WanFit Load A14B Experts", category="WanFit/loaders",
            description="Loads the A14B high-noise and low-noise experts after checking they are one pair.",
            inputs=[io.Combo.Input("high_noise_model", options=names,
                                   tooltip="The high-noise expert, e.g. wan2.2_t2v_high_noise_14B_fp8_scaled."),
                    io.Combo.Input("low_noise_model", options=names,
                                   tooltip="The low-noise expert of the same task, e.g. "
                                           "wan2.2_t2v_low_noise_14B_fp8_scaled."),
                    weight_dtype_input(), loader_plan_input()],
            outputs=[output(io.Model, "high_noise_model", "The high-noise expert (first part of the schedule)."),
                     output(io.Model, "low_noise_model", "The low-noise expert (the rest of the schedule)."),
                     output(io.String, "info", "Which file is which, and how it was loaded.")])

    @classmethod
    def validate_inputs(cls, high_noise_model, low_noise_model):
        return refusal("check_loadable_expert_pair", "diffusion_models", high_noise_model, low_noise_model)

    @classmethod
    def execute(cls, high_noise_model, low_noise_model, weight_dtype, plan=None):
        high_path = models().resolve_model_path("diffusion_models", high_noise_model)
        low_path = models().resolve_model_path("diffusion_models", low_noise_model)
        pair = models().check_expert_pair(high_path, low_path)
        expected = plan_field(plan, "model_variant")
        if expected in ("t2v_a14b", "i2v_a14b") and pair.high.variant != expected:
            models().check_diffusion_model(high_path, expected)  # raises the wrong-variant message
        high, high_reason = load_diffusion_model(high_path, pair.high, weight_dtype, plan)
        low, low_reason = load_diffusion_model(low_path, pair.low, weight_dtype, plan)
        reason = high_reason if high_reason == low_reason else f"high-noise: {high_reason}; low-noise: {low_reason}"
        text = f"{pair.roles}; {reason}"
        return shown(text, high, low, text)


def gguf_folder_registered():
    import folder_paths

    return "unet_gguf" in folder_paths.folder_names_and_paths


def diffusion_model_names():
    """The diffusion models, then the .gguf ones where ComfyUI-GGUF registered its unet_gguf folder."""
    return filenames("diffusion_models") + (filenames("unet_gguf") if gguf_folder_registered() else [])


def diffusion_model_folder(name):
    from ..wanfit.experts import is_gguf_name

    return "unet_gguf" if is_gguf_name(name) and gguf_folder_registered() else "diffusion_models"


def low_noise_refusal(name):
    """validate_inputs' gate: a .gguf needs ComfyUI-GGUF's loader and a WAN 2.2 GGUF; any other file WanFit's own."""
    import nodes

    from ..wanfit.experts import comfyui_gguf_loader, is_gguf_name

    if is_gguf_name(name):
        try:
            comfyui_gguf_loader(nodes.NODE_CLASS_MAPPINGS, name)
        except WanFitError as error:
            return str(error)
    return refusal("check_low_noise_expert", diffusion_model_folder(name), name)


class WanFitSwitchToLowNoiseExpert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitSwitchToLowNoiseExpert", display_name="WanFit Switch To Low-Noise Expert",
            category="WanFit/loaders",
            description="Hands an A14B run over to the low-noise expert, releasing the high-noise one when RAM is short.",
            inputs=[io.Model.Input("high_noise_model", tooltip="The high-noise expert as loaded; released here when "
                                                               "the plan says so."),
                    io.Latent.Input("samples", tooltip="The high-noise sampler's output: the switch waits for it."),
                    io.Combo.Input("low_noise_model", options=diffusion_model_names(),
                                   tooltip="The low-noise expert of the same task, e.g. "
                                           "wan2.2_t2v_low_noise_14B_fp8_scaled; a .gguf loads through ComfyUI-GGUF."),
                    weight_dtype_input(),
                    io.Combo.Input("release_high_noise", options=["auto", "always", "never"], default="auto",
                                   tooltip="auto releases the high-noise expert when the plan says RAM is short."),
                    loader_plan_input()],
            outputs=[output(io.Model, "low_noise_model", "The low-noise expert."),
                     output(io.Latent, "samples", "The high-noise sampler's latent, unchanged."),
                     output(io.String, "info", "What was released and loaded, and why.")])

    @classmethod
    def validate_inputs(cls, low_noise_model):
        return low_noise_refusal(low_noise_model)

    @classmethod
    def execute(cls, high_noise_model, samples, low_noise_model, weight_dtype, release_high_noise, plan=None):
        import comfy.model_management as model_management
        import nodes
        from server import PromptServer

        from ..wanfit.experts import (is_gguf_name, load_gguf_expert, release_high_noise_expert, should_release,
                                      source_path)

        gguf = is_gguf_name(low_noise_model)
        low_path = models().resolve_model_path(diffusion_model_folder(low_noise_model), low_noise_model)
        high_path = source_path(high_noise_model)
        if high_path:
            pair = models().check_expert_pair(high_path, low_path, gguf_allowed=True)
            low_info, roles = pair.low, pair.roles
        else:
            low_info = models().check_expert(low_path, "low-noise", gguf_allowed=True)
            roles = "high-noise expert loaded by another node"
        release, why = should_release(release_high_noise, plan)
        lines = [roles, release_high_noise_expert(high_noise_model, why, model_management, PromptServer.instance)
                 if release else why]
        if gguf:
            low, reason = load_gguf_expert(nodes.NODE_CLASS_MAPPINGS, low_noise_model, low_path,
                                           models().check_gguf_diffusion_model(low_path).file.types_text)
        else:
            low, reason = load_diffusion_model(low_path, low_info, weight_dtype, plan)
        lines.append(f"loaded {low_noise_model}: {reason}")
        text = "\n".join(lines)
        return shown(text, low, samples, text)


class WanFitLoadTextEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLoadTextEncoder", display_name="WanFit Load Text Encoder", category="WanFit/loaders",
            description="Loads the umt5-xxl text encoder after checking the file, on the CPU when the plan says so.",
            inputs=[io.Combo.Input("clip_name", options=filenames("text_encoders"),
                                   tooltip="File in models/text_encoders, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors."),
                    io.Combo.Input("device", options=list(LOADER_TEXT_ENCODER_DEVICES), default="auto",
                                   tooltip="auto follows the plan; cpu keeps about 6 GB of VRAM free."),
                    loader_plan_input()],
            outputs=[output(io.Clip, "clip", "The text encoder, for CLIPTextEncode."),
                     output(io.String, "info", "What the file is and where it runs.")])

    @classmethod
    def validate_inputs(cls, clip_name):
        return refusal("check_text_encoder", "text_encoders", clip_name)

    @classmethod
    def execute(cls, clip_name, device, plan=None):
        import comfy.sd
        import folder_paths
        import torch

        path = models().resolve_model_path("text_encoders", clip_name)
        info = models().check_text_encoder(path)
        chosen, reason = loading().choose_text_encoder_device(device, plan)
        model_options = {}
        if chosen == "cpu":
            model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
        clip = comfy.sd.load_clip(ckpt_paths=[path], embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                  clip_type=comfy.sd.CLIPType.WAN, model_options=model_options)
        text = f"{clip_name}: {info.title} ({info.precision_label}); {reason}"
        return shown(text, clip, text)


class WanFitLoadVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLoadVAE", display_name="WanFit Load VAE", category="WanFit/loaders",
            description="Loads the WAN VAE after checking it matches the model (Wan 2.2 VAE for 5B, Wan 2.1 for A14B).",
            inputs=[io.Combo.Input("vae_name", options=filenames("vae"),
                                   tooltip="File in models/vae: wan2.2_vae for TI2V-5B, wan_2.1_vae for A14B."),
                    io.Model.Input("model", optional=True,
                                   tooltip="Optional: the diffusion model this VAE decodes for, to refuse a mismatch."),
                    loader_plan_input()],
            outputs=[output(io.Vae, "vae", "The VAE."), output(io.String, "info", "Which VAE this is.")])

    @classmethod
    def validate_inputs(cls, vae_name):
        return refusal("check_vae_file", "vae", vae_name)

    @classmethod
    def execute(cls, vae_name, model=None, plan=None):
        import comfy.sd
        import comfy.utils

        path = models().resolve_model_path("vae", vae_name)
        variant = models().model_variant_of(model) or plan_field(plan, "model_variant")
        if variant is not None:
            info = models().check_vae_for_model(path, variant)
        else:
            info = models().check_vae_file(path)
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))
        text = f"{vae_name}: {info.title}" + (f", checked for {variant}" if variant else "")
        return shown(text, vae, text)
