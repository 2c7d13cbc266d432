"""Build the shipped workflows from one Python description (the source of truth).

Writes workflows/api/<name>.json (for /prompt), workflows/api/inputs.json (which node input
is the prompt, size, frames...), workflows/ui/<name>.json (for the graph editor) and copies
the UI files to example_workflows/<template name>.json (ComfyUI's template browser; the
thumbnails beside them are screenshots the browser tests make, see tests/browser). The UI
layout needs the server's /object_info: run with a ComfyUI that has WanFit installed,

    python workflows/build.py --server http://127.0.0.1:8188

The host tests check that the committed files equal what this script produces.
"""

import argparse
import json
from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wanfit import __version__  # noqa: E402
from wanfit.models import load_manifest  # noqa: E402
from wanfit.workflows import api_to_ui  # noqa: E402
from workflows.layout import NOTE_SIZE, lay_out  # noqa: E402

NEGATIVE = ("vivid colors, overexposed, static, blurry details, subtitles, style, artwork, painting, still image, "
            "overall gray, worst quality, low quality, JPEG artifacts, ugly, deformed, extra fingers, poorly drawn "
            "hands, poorly drawn face, malformed limbs, fused fingers, cluttered background, three legs, many "
            "people in the background, walking backwards")
PROMPT_T2V = ("A red fox trots through fresh snow in a birch forest at sunrise, its breath visible in the cold air; "
              "the camera tracks alongside at low height, soft golden light, shallow depth of field.")
PROMPT_I2V = "The subject turns slowly towards the camera and smiles; gentle camera push-in, natural light."

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
FILES = {
    "ti2v_5b": {"model": "wan2.2_ti2v_5B_fp16.safetensors", "vae": "wan2.2_vae.safetensors"},
    "t2v_a14b": {"high": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                 "low": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "vae": "wan_2.1_vae.safetensors",
                 "lora_high": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
                 "lora_low": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"},
    "i2v_a14b": {"high": "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                 "low": "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", "vae": "wan_2.1_vae.safetensors",
                 "lora_high": "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
                 "lora_low": "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"},
}
EXAMPLE_IMAGE = "example.png"


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def planned_size():
    """The latent node's size inputs, taken from the plan node's outputs: the size is set once, on the plan."""
    return {"width": ["10", 2], "height": ["10", 3], "length": ["10", 4], "batch_size": ["10", 5]}


def plan_node(variant, width, height, frames, cfg):
    return node("WanFitOffloadPlan", model_variant=variant, width=width, height=height, frames=frames, batch=1,
                cfg=cfg, mode="auto", reserve_vram_gb=0.0, weight_dtype="auto", text_encoder_device="auto",
                model_file="none")


def sage(model_ref):
    return node("WanFitSageAttention", model=model_ref, mode="auto", keep_cross_attention_on_sdpa=False,
                nan_check_calls=8, plan=["10", 0])


def lean(model_ref):
    """WanFit Lean Forward, following the plan: lean blocks only where the job needs them to fit; otherwise
    the model passes through unchanged."""
    return node("WanFitLeanForward", model=model_ref, mode="auto", chunk_tokens=0, plan=["10", 0])


def output_nodes(workflow, samples_ref, vae_ref, fps, name):
    workflow["50"] = node("SaveLatent", samples=samples_ref, filename_prefix=f"latents/wanfit_{name}")
    workflow["60"] = node("WanFitVAEDecode", samples=samples_ref, vae=vae_ref, budget_mb=0, overlap=0,
                          plan=["10", 0], mode="auto")
    workflow["70"] = node("CreateVideo", images=["60", 0], fps=fps)
    workflow["71"] = node("SaveVideo", video=["70", 0], filename_prefix=f"video/wanfit_{name}", format="auto",
                          codec="auto")


def ti2v_5b(name, image):
    width, height, frames, steps, cfg, shift, fps = 1280, 704, 121, 50, 5.0, 5.0, 24
    w = {
        "10": plan_node("ti2v_5b", width, height, frames, True),
        "11": node("WanFitLoadDiffusionModel", model_name=FILES["ti2v_5b"]["model"], weight_dtype="auto",
                   plan=["10", 0]),
        "12": node("WanFitLoadTextEncoder", clip_name=UMT5, device="auto", plan=["10", 0]),
        "13": node("WanFitLoadVAE", vae_name=FILES["ti2v_5b"]["vae"], model=["11", 0], plan=["10", 0]),
        "14": sage(["11", 0]),
        "24": lean(["14", 0]),
        "15": node("ModelSamplingSD3", model=["24", 0], shift=shift),
        "20": node("CLIPTextEncode", text=PROMPT_I2V if image else PROMPT_T2V, clip=["12", 0]),
        "21": node("CLIPTextEncode", text=NEGATIVE, clip=["12", 0]),
        "30": node("Wan22ImageToVideoLatent", vae=["13", 0], **planned_size()),
        "40": node("KSampler", model=["15", 0], positive=["20", 0], negative=["21", 0], latent_image=["30", 0],
                   seed=42, steps=steps, cfg=cfg, sampler_name="uni_pc", scheduler="simple", denoise=1.0),
        "41": node("WanFitAttentionReport", model=["15", 0], samples=["40", 0], reset_counts=True),
    }
    fields = {"prompt": [["20", "text"]], "negative": [["21", "text"]], "width": [["10", "width"]],
              "height": [["10", "height"]], "frames": [["10", "frames"]],
              "steps": [["40", "steps"]], "seed": [["40", "seed"]], "cfg": [["40", "cfg"]], "fps": [["70", "fps"]],
              "filename_prefix": [["71", "filename_prefix"]]}
    if image:
        w["31"] = node("LoadImage", image=EXAMPLE_IMAGE)
        w["30"]["inputs"]["start_image"] = ["31", 0]
        fields["image"] = [["31", "image"]]
    output_nodes(w, ["41", 0], ["13", 0], fps, name)
    groups = [("Models and plan", "models", ["10", "11", "12", "13"]),
              ("Model: sage attention, lean forward, sampling shift", "models", ["14", "24", "15"]),
              ("Prompt" + (", start image" if image else "") + " and latent", "prompt",
               ["20", "21"] + (["31"] if image else []) + ["30"], "below"),
              ("Sampling", "sampling", ["40", "41"]),
              ("Save the latent, decode, save the video", "decode", ["50", "60", "70", "71"])]
    return w, fields, groups, {"size_multiple": 32, "needs_image": image, "fps": fps, "video_node": "71",
                       "latent_node": "50", "model_variant": "ti2v_5b"}


def a14b(name, task, lightx2v):
    variant = f"{task}_a14b"
    files = FILES[variant]
    width, height, frames, fps = 1280, 720, 81, 16
    if lightx2v:
        steps, cfg_high, cfg_low = 4, 1.0, 1.0
    elif task == "t2v":
        steps, cfg_high, cfg_low = 40, 4.0, 3.0
    else:
        steps, cfg_high, cfg_low = 40, 3.5, 3.5
    shift = 12.0 if task == "t2v" else 5.0
    if lightx2v:
        shift = 5.0
    boundary = 0.875 if task == "t2v" else 0.900
    w = {
        "10": plan_node(variant, width, height, frames, not lightx2v),
        "11": node("WanFitLoadDiffusionModel", model_name=files["high"], weight_dtype="auto", plan=["10", 0]),
        "12": node("WanFitLoadTextEncoder", clip_name=UMT5, device="auto", plan=["10", 0]),
        "13": node("WanFitLoadVAE", vae_name=files["vae"], model=["11", 0], plan=["10", 0]),
        "20": node("CLIPTextEncode", text=PROMPT_I2V if task == "i2v" else PROMPT_T2V, clip=["12", 0]),
        "21": node("CLIPTextEncode", text=NEGATIVE, clip=["12", 0]),
        # after the high-noise steps: release the high-noise expert if the plan says RAM is short, then load
        # the low-noise one, so the two 14B experts are never in memory together
        "44": node("WanFitSwitchToLowNoiseExpert", high_noise_model=["11", 0], samples=["40", 0],
                   low_noise_model=files["low"], weight_dtype="auto", release_high_noise="auto", plan=["10", 0]),
    }
    high_ref, low_ref = ["11", 0], ["44", 0]
    if lightx2v:
        w["16"] = node("LoraLoaderModelOnly", model=["11", 0], lora_name=files["lora_high"], strength_model=1.0)
        w["17"] = node("LoraLoaderModelOnly", model=["44", 0], lora_name=files["lora_low"], strength_model=1.0)
        high_ref, low_ref = ["16", 0], ["17", 0]
    w["14"] = sage(high_ref)
    w["15"] = sage(low_ref)
    # one lean forward per expert: the low-noise one patches the model the switch node loads
    w["24"] = lean(["14", 0])
    w["25"] = lean(["15", 0])
    w["18"] = node("ModelSamplingSD3", model=["24", 0], shift=shift)
    w["19"] = node("ModelSamplingSD3", model=["25", 0], shift=shift)
    if task == "t2v":
        w["30"] = node("EmptyHunyuanLatentVideo", **planned_size())
        positive, negative, latent = ["20", 0], ["21", 0], ["30", 0]
    else:
        w["31"] = node("LoadImage", image=EXAMPLE_IMAGE)
        w["30"] = node("WanImageToVideo", positive=["20", 0], negative=["21", 0], vae=["13", 0], **planned_size(),
                       start_image=["31", 0])
        positive, negative, latent = ["30", 0], ["30", 1], ["30", 2]
    w["35"] = node("WanFitExpertSwitchStep", model=["18", 0], steps=steps, boundary=boundary, scheduler="simple")
    common = dict(steps=steps, sampler_name="euler", scheduler="simple", positive=positive, negative=negative)
    w["40"] = node("KSamplerAdvanced", model=["18", 0], add_noise="enable", noise_seed=42, cfg=cfg_high,
                   latent_image=latent, start_at_step=0, end_at_step=["35", 0], return_with_leftover_noise="enable",
                   **common)
    w["42"] = node("KSamplerAdvanced", model=["19", 0], add_noise="disable", noise_seed=42, cfg=cfg_low,
                   latent_image=["44", 1], start_at_step=["35", 0], end_at_step=10000,
                   return_with_leftover_noise="disable", **common)
    w["43"] = node("WanFitAttentionReport", model=["19", 0], samples=["42", 0], reset_counts=True)
    fields = {"prompt": [["20", "text"]], "negative": [["21", "text"]],
              "width": [["10", "width"]], "height": [["10", "height"]], "frames": [["10", "frames"]],
              "steps": [["35", "steps"], ["40", "steps"], ["42", "steps"]],
              "seed": [["40", "noise_seed"], ["42", "noise_seed"]], "cfg": [["40", "cfg"], ["42", "cfg"]],
              "fps": [["70", "fps"]], "filename_prefix": [["71", "filename_prefix"]]}
    if task == "i2v":
        fields["image"] = [["31", "image"]]
    output_nodes(w, ["43", 0], ["13", 0], fps, name)
    loras = lightx2v
    groups = [("Models and plan", "models", ["10", "11", "12", "13"]),
              ("Prompt" + (", start image" if task == "i2v" else "") + " and latent", "prompt",
               ["20", "21"] + (["31"] if task == "i2v" else []) + ["30"], "below"),
              ("High-noise expert: first steps", "high", (["16"] if loras else []) + ["14", "24", "18", "35", "40"]),
              ("Low-noise expert: last steps", "low", ["44"] + (["17"] if loras else []) + ["15", "25", "19", "42", "43"]),
              ("Save the latent, decode, save the video", "decode", ["50", "60", "70", "71"])]
    return w, fields, groups, {"size_multiple": 16, "needs_image": task == "i2v", "fps": fps, "video_node": "71",
                       "latent_node": "50", "model_variant": variant}


def decode_saved_latent(name):
    """Decode a latent a workflow saved, again, without sampling (after a failed or too-big decode)."""
    w = {
        "10": node("WanFitLoadSavedLatent", latent="latents/wanfit_ti2v_5b_t2v_00001_.latent"),
        "13": node("WanFitLoadVAE", vae_name=FILES["ti2v_5b"]["vae"]),
        "60": node("WanFitVAEDecode", samples=["10", 0], vae=["13", 0], budget_mb=0, overlap=0, mode="auto"),
        "70": node("CreateVideo", images=["60", 0], fps=24),
        "71": node("SaveVideo", video=["70", 0], filename_prefix=f"video/wanfit_{name}", format="auto",
                   codec="auto"),
    }
    fields = {"latent": [["10", "latent"]], "vae": [["13", "vae_name"]], "fps": [["70", "fps"]],
              "filename_prefix": [["71", "filename_prefix"]]}
    groups = [("Saved latent and its VAE", "models", ["10", "13"]),
              ("Decode and save the video", "decode", ["60", "70", "71"])]
    return w, fields, groups, {"size_multiple": 16, "needs_image": False, "fps": 24, "video_node": "71",
                       "latent_node": None, "model_variant": None}


WORKFLOWS = {
    "ti2v_5b_t2v": lambda: ti2v_5b("ti2v_5b_t2v", image=False),
    "ti2v_5b_i2v": lambda: ti2v_5b("ti2v_5b_i2v", image=True),
    "a14b_t2v": lambda: a14b("a14b_t2v", "t2v", lightx2v=False),
    "a14b_i2v": lambda: a14b("a14b_i2v", "i2v", lightx2v=False),
    "a14b_t2v_lightx2v": lambda: a14b("a14b_t2v_lightx2v", "t2v", lightx2v=True),
    "a14b_i2v_lightx2v": lambda: a14b("a14b_i2v_lightx2v", "i2v", lightx2v=True),
    "decode_saved_latent": lambda: decode_saved_latent("decode_saved_latent"),
}

TITLES = {
    "ti2v_5b_t2v": "WAN 2.2 TI2V-5B text-to-video (WanFit)",
    "ti2v_5b_i2v": "WAN 2.2 TI2V-5B image-to-video (WanFit)",
    "a14b_t2v": "WAN 2.2 A14B text-to-video (WanFit)",
    "a14b_i2v": "WAN 2.2 A14B image-to-video (WanFit)",
    "a14b_t2v_lightx2v": "WAN 2.2 A14B text-to-video, 4-step lightx2v LoRA (WanFit)",
    "a14b_i2v_lightx2v": "WAN 2.2 A14B image-to-video, 4-step lightx2v LoRA (WanFit)",
    "decode_saved_latent": "Decode a saved WAN latent again, without sampling (WanFit)",
}

# The template browser shows a template's file name as its title (and, in front end 1.27, as its
# description): neither front end reads a title or description from a custom node's files. The
# names say what each workflow does and needs; the number keeps them in order when sorted by name.
TEMPLATE_NAMES = {
    "ti2v_5b_t2v": "1 TI2V-5B text to video, 8 GB GPU, 16 GB RAM",
    "ti2v_5b_i2v": "2 TI2V-5B image to video, 8 GB GPU, 16 GB RAM",
    "a14b_t2v": "3 A14B text to video, 8 GB GPU, 32 GB RAM, 40 steps",
    "a14b_i2v": "4 A14B image to video, 8 GB GPU, 32 GB RAM, 40 steps",
    "a14b_t2v_lightx2v": "5 A14B text to video in 4 steps, 8 GB GPU, 32 GB RAM",
    "a14b_i2v_lightx2v": "6 A14B image to video in 4 steps, 8 GB GPU, 32 GB RAM",
    "decode_saved_latent": "7 Decode a saved latent again, no sampling, any GPU",
}

LOADER_INPUTS = {"WanFitLoadDiffusionModel": ["model_name"], "WanFitLoadA14BExperts": ["high_noise_model", "low_noise_model"],
                 "WanFitSwitchToLowNoiseExpert": ["low_noise_model"],
                 "WanFitLoadTextEncoder": ["clip_name"], "WanFitLoadVAE": ["vae_name"], "LoraLoaderModelOnly": ["lora_name"]}


def model_entry(filename, manifest):
    for entry in manifest["files"]:
        if entry["filename"] == filename:
            return {"name": filename, "url": entry.get("url"), "directory": entry["folder"]}
    raise KeyError(f"{filename} is not in wanfit/models/manifest.json")


def note_text(name, workflow, manifest, spec):
    lines = [f"## {TITLES[name]}", "",
             "Built with WanFit: an offload plan sized for this GPU, checked loaders, sage attention with an SDPA "
             "fallback, the lean block forward where the plan needs it, the latent saved before a VRAM-aware "
             "tiled decode.", "", "**Model files**"]
    for node_id in sorted(workflow, key=int):
        for input_name in LOADER_INPUTS.get(workflow[node_id]["class_type"], []):
            entry = model_entry(workflow[node_id]["inputs"][input_name], manifest)
            lines.append(f"- [{entry['name']}]({entry['url']}) -> `models/{entry['directory']}/`")
    if name == "decode_saved_latent":
        lines += ["", "Pick the .latent a WanFit workflow saved under output/latents, and the VAE of its model "
                  "(wan2.2_vae for TI2V-5B at 24 fps, wan_2.1_vae for A14B at 16 fps)."]
        return "\n".join(lines)
    lines += ["", "`python -m wanfit models --download " + name + "` fetches all of them.", "",
              f"Size: width/height multiples of {spec['size_multiple']}, frames 4n+1; {spec['fps']} fps.",
              "If the run is refused by the plan, its message says what would fit on this card."]
    return "\n".join(lines)


def build(object_info, out_root=ROOT):
    manifest = load_manifest()
    api_dir, ui_dir, example_dir = out_root / "workflows/api", out_root / "workflows/ui", out_root / "example_workflows"
    for directory in (api_dir, ui_dir, example_dir):
        directory.mkdir(parents=True, exist_ok=True)
    input_map = {}
    for name, make in WORKFLOWS.items():
        workflow, fields, groups, spec = make()
        input_map[name] = {"title": TITLES[name], "fields": fields, **spec}
        (api_dir / f"{name}.json").write_text(json.dumps(workflow, indent=2) + "\n")
        properties = {}
        for node_id, node_data in workflow.items():
            class_type = node_data["class_type"]
            is_wanfit = class_type.startswith("WanFit")
            entry = {"cnr_id": "comfyui-wanfit" if is_wanfit else "comfy-core",
                     "ver": __version__ if is_wanfit else "0.3.64"}
            files = [model_entry(node_data["inputs"][i], manifest) for i in LOADER_INPUTS.get(class_type, [])]
            if files:
                entry["models"] = files
            properties[node_id] = entry
        placed = lay_out(workflow, groups)
        notes = [(note_text(name, workflow, manifest, spec), placed.note_position, NOTE_SIZE)]
        ui = api_to_ui(workflow, object_info, positions=placed.positions, sizes=placed.sizes, properties=properties,
                       notes=notes, groups=placed.groups, view=placed.view)
        ui["extra"]["wanfit"] = {"workflow": name, "title": TITLES[name]}
        text = json.dumps(ui, indent=2) + "\n"
        (ui_dir / f"{name}.json").write_text(text)
        # the thumbnail beside it (<template name>.jpg) is a screenshot of the graph, made by tests/browser
        (example_dir / f"{TEMPLATE_NAMES[name]}.json").write_text(text)
    (api_dir / "inputs.json").write_text(json.dumps(input_map, indent=2) + "\n")
    return input_map


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    args = parser.parse_args()
    from wanfit.remote.client import ComfyClient

    build(ComfyClient(args.server).object_info())
    print("wrote workflows/api, workflows/ui, example_workflows")


if __name__ == "__main__":
    main()
