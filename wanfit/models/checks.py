"""The loaders' gates: refuse a file that is not the model the slot needs, naming the file and the fix.

Each check reads the header alone (detection.py), so a wrong file is refused in milliseconds, not
after ComfyUI has spent a minute and 28 GB of RAM loading it.
"""

from dataclasses import dataclass
import os
from pathlib import Path
import re

from .core_support import check_loads_on_core
from .detection import VARIANT_TITLES, ModelInfo, detect_variant
from .errors import DOWNLOAD_HINT, ModelMismatchError
from .gguf_header import GGUFFile, is_gguf_file, read_gguf_file
from .headers import SafetensorsHeader, TensorEntry
from .manifest import download_phrase

# Which VAE file each diffusion variant needs (file names from the manifest).
VAE_FOR_MODEL = {"ti2v_5b": "wan22_vae", "t2v_a14b": "wan21_vae", "i2v_a14b": "wan21_vae"}
VAE_FILE_FOR_VARIANT = {"wan22_vae": "wan2.2_vae.safetensors", "wan21_vae": "wan_2.1_vae.safetensors"}
EXPERT_FILES = {
    "t2v_a14b": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    "i2v_a14b": ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"),
}


@dataclass
class GGUFModel:
    file: GGUFFile
    info: ModelInfo


@dataclass
class ExpertPair:
    high: ModelInfo
    low: ModelInfo
    task: str  # t2v_a14b | i2v_a14b
    roles: str  # human sentence saying which file is which and why we think so


def check_diffusion_model(path, expected_variant=None):
    """The node's gate before comfy.sd.load_diffusion_model: refuse anything that is not WAN 2.2, and
    quantization metadata that disagrees with the tensors (naming the layer)."""
    info = detect_variant(path)
    wan22 = ("ti2v_5b", "t2v_a14b", "i2v_a14b")
    if info.kind != "diffusion_model" or info.variant not in wan22:
        raise ModelMismatchError(
            f"Not a WAN 2.2 model: {path} looks like {info.looks_like}. Expected a WAN 2.2 diffusion model "
            f"(TI2V-5B, or a T2V-A14B / I2V-A14B high- or low-noise expert) in models/diffusion_models, e.g. "
            f"wan2.2_ti2v_5B_fp16.safetensors. Fix: pick a WAN 2.2 diffusion model file; {DOWNLOAD_HINT}.",
            [path])
    if expected_variant is not None and info.variant != expected_variant:
        raise ModelMismatchError(
            f"Wrong WAN 2.2 model: {path} is {info.looks_like} ({info.variant}), but this slot expects "
            f"{_article(VARIANT_TITLES.get(expected_variant, expected_variant))} ({expected_variant}). "
            f"Fix: {_variant_fix(expected_variant)}", [path])
    if info.quantization is not None and info.quantization.problems:
        raise ModelMismatchError(
            f"{path}: its quantization metadata disagrees with its tensors: "
            f"{'; '.join(info.quantization.problems)}. ComfyUI would fail on it while loading. Fix: quantize and "
            f"save the model again, or download the file again ({DOWNLOAD_HINT}).", [path])
    return info


def check_gguf_diffusion_model(path):
    """The gate for a WAN 2.2 GGUF that ComfyUI-GGUF's loader will load (the expert switch hands it over, the plan
    sizes it): its header must be GGUF, its architecture WAN's, its names and shapes a WAN 2.2 diffusion model."""
    gguf_file = read_gguf_file(path)
    if gguf_file.architecture not in (None, "wan"):
        raise ModelMismatchError(
            f"{path} is not a WAN GGUF: its general.architecture is {gguf_file.architecture!r}, not 'wan' (what "
            f"ComfyUI-GGUF's tools/convert.py writes for a WAN 2.2 model). Fix: pick a WAN 2.2 GGUF, e.g. "
            f"wan2.2_t2v_low_noise_14B_Q4_K_M.gguf, or the .safetensors model ({DOWNLOAD_HINT}).", [path])
    # The detection reads names and shapes only; the dtype tag is a stand-in.
    tensors = {key.removeprefix("model.diffusion_model."): TensorEntry("U8", tensor.shape, (0, 0))
               for key, tensor in gguf_file.tensors.items()}
    info = detect_variant(SafetensorsHeader(gguf_file.path, gguf_file.file_size_bytes, 0, tensors, {}))
    if info.kind != "diffusion_model" or info.variant not in ("ti2v_5b", "t2v_a14b", "i2v_a14b"):
        raise ModelMismatchError(
            f"Not a WAN 2.2 model: {path} is a WAN GGUF that looks like {info.looks_like}. Fix: pick a WAN 2.2 "
            f"TI2V-5B or A14B expert GGUF, e.g. wan2.2_t2v_low_noise_14B_Q4_K_M.gguf.", [path])
    return GGUFModel(gguf_file, info)


def expert_info(path, gguf_allowed=False):
    """The ModelInfo of one expert file: a GGUF too where ComfyUI-GGUF will load it (the expert switch)."""
    if gguf_allowed and is_gguf_file(path):
        return check_gguf_diffusion_model(path).info
    return check_diffusion_model(path)


def check_expert(path, slot, gguf_allowed=False):
    """One A14B expert file: a WAN 2.2 diffusion model, and not the single TI2V-5B model."""
    info = expert_info(path, gguf_allowed)
    if info.variant == "ti2v_5b":
        raise ModelMismatchError(
            f"TI2V-5B is a single model, not an A14B expert: {path} was given as the {slot} expert. "
            f"Fix: load it with WanFit Load Diffusion Model, or give this node a T2V-A14B or I2V-A14B "
            f"high-noise/low-noise pair.", [path])
    return info


def check_low_noise_expert(path):
    """The expert switch's queue-time gate for its low-noise file: a .gguf (ComfyUI-GGUF loads it) or a file the
    running core loads."""
    info = check_expert(path, "low-noise", gguf_allowed=True)
    if not is_gguf_file(path):
        check_loads_on_core(info)
    return info


def check_loadable_diffusion_model(path):
    """The queue-time gate: check_diffusion_model, then whether the running core loads the file's format."""
    info = check_diffusion_model(path)
    check_loads_on_core(info)
    return info


def check_loadable_expert_pair(high_path, low_path):
    """The queue-time gate for two experts: check_expert_pair, then the running core's formats for each."""
    pair = check_expert_pair(high_path, low_path)
    for info in (pair.high, pair.low):
        check_loads_on_core(info)
    return pair


def check_expert_pair(high_path, low_path, gguf_allowed=False):
    """Both A14B experts must be the same task and architecture, two different files, in the right slots."""
    if _same_file(high_path, low_path):
        raise ModelMismatchError(
            f"The same file was given as both A14B experts: high-noise = {high_path}, low-noise = {low_path}. "
            f"A14B needs two different files: the high-noise expert (…_high_noise_14B…) for the early steps "
            f"and the low-noise expert (…_low_noise_14B…) for the late steps. Fix: set the low-noise input to "
            f"the matching low-noise file, e.g. {EXPERT_FILES['t2v_a14b'][1]} or {EXPERT_FILES['i2v_a14b'][1]}.",
            [high_path, low_path])
    infos = {slot: check_expert(path, slot, gguf_allowed)
             for slot, path in (("high-noise", high_path), ("low-noise", low_path))}
    high, low = infos["high-noise"], infos["low-noise"]
    if high.variant != low.variant:
        fix_files = EXPERT_FILES[high.variant]
        raise ModelMismatchError(
            f"The A14B experts are for different tasks: high-noise {high_path} is {high.looks_like} "
            f"(in_dim {high.dims.in_dim}), low-noise {low_path} is {low.looks_like} (in_dim {low.dims.in_dim}). "
            f"Both experts must be T2V, or both I2V. Fix: for {VARIANT_TITLES[high.variant]}s use "
            f"{fix_files[0]} with {fix_files[1]}.", [high_path, low_path])
    if high.dims.as_dict() != low.dims.as_dict():
        raise ModelMismatchError(
            f"The A14B experts have different architectures: high-noise {high_path} has {high.dims.as_dict()}, "
            f"low-noise {low_path} has {low.dims.as_dict()}. Fix: use the high- and low-noise files of the same "
            f"release, e.g. {EXPERT_FILES[high.variant][0]} with {EXPERT_FILES[high.variant][1]}.",
            [high_path, low_path])
    high_hint, low_hint = noise_level_hint(high_path), noise_level_hint(low_path)
    if high_hint == "low" or low_hint == "high":
        raise ModelMismatchError(
            f"The A14B experts look swapped: the high-noise input is {high_path} (name says "
            f"{high_hint or 'nothing'}-noise) and the low-noise input is {low_path} (name says "
            f"{low_hint or 'nothing'}-noise). Fix: put the …high_noise… file in high_noise_model and the "
            f"…low_noise… file in low_noise_model.", [high_path, low_path])
    roles = (f"high-noise expert: {Path(high_path).name} ("
             + ("file name says high-noise" if high_hint else "no high/low hint in the name; trusted by slot")
             + f"); low-noise expert: {Path(low_path).name} ("
             + ("file name says low-noise" if low_hint else "no high/low hint in the name; trusted by slot") + ")")
    return ExpertPair(high=high, low=low, task=high.variant, roles=roles)


def noise_level_hint(path):
    """'high' / 'low' when the file name says which expert it is, else None."""
    name = Path(path).name.lower()
    found = set(re.findall(r"(?<![a-z])(high|low)(?=[_\-. ]?noise|[_\-.]|$)", name))
    return found.pop() if len(found) == 1 else None


def check_vae_for_model(vae_path, model_variant, model_path=None):
    """TI2V-5B decodes 48-channel latents (Wan 2.2 VAE), A14B 16-channel ones (Wan 2.1 VAE)."""
    if isinstance(model_variant, ModelInfo):
        model_path = model_path or model_variant.path
        model_variant = model_variant.variant
    if model_variant not in VAE_FOR_MODEL:
        raise ModelMismatchError(f"Unknown WAN 2.2 model variant {model_variant!r} for the VAE check. Expected one "
                                 f"of {sorted(VAE_FOR_MODEL)}. Fix: pass the variant detect_variant() reported.",
                                 [vae_path])
    info = detect_variant(vae_path)
    wanted = VAE_FOR_MODEL[model_variant]
    model_label = f"{model_path} ({VARIANT_TITLES[model_variant]})" if model_path else VARIANT_TITLES[model_variant]
    if info.kind != "vae":
        raise ModelMismatchError(
            f"Not a WAN VAE: {vae_path} looks like {info.looks_like}. The model {model_label} needs the "
            f"{VARIANT_TITLES[wanted]}. Fix: load {VAE_FILE_FOR_VARIANT[wanted]} from models/vae "
            f"({download_phrase(VAE_FILE_FOR_VARIANT[wanted])}).", [vae_path])
    if info.variant != wanted:
        raise ModelMismatchError(
            f"Wrong VAE for this model: {vae_path} is the {VARIANT_TITLES[info.variant]}, but the model "
            f"{model_label} needs the {VARIANT_TITLES[wanted]}. Fix: load {VAE_FILE_FOR_VARIANT[wanted]} from "
            f"models/vae instead ({download_phrase(VAE_FILE_FOR_VARIANT[wanted])}).",
            [vae_path] + ([model_path] if model_path else []))
    return info


def check_text_encoder(path):
    """WAN conditions on umt5-xxl (4096 wide, 256384 tokens); a Flux T5-XXL or CLIP gives garbage or fails late."""
    info = detect_variant(path)
    if info.kind != "text_encoder" or info.variant != "umt5_xxl":
        raise ModelMismatchError(
            f"Not the umt5-xxl text encoder: {path} looks like {info.looks_like}. WAN 2.2 needs umt5-xxl in "
            f"models/text_encoders. Fix: load umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16.safetensors) "
            f"instead ({download_phrase('umt5_xxl_fp8_e4m3fn_scaled.safetensors')}).", [path])
    return info



def check_vae_file(path):
    """Any WAN VAE, when no model or plan says which one the slot needs."""
    info = detect_variant(path)
    if info.variant not in ("wan22_vae", "wan21_vae"):
        raise ModelMismatchError(
            f"Not a WAN VAE: {path} looks like {info.looks_like}. Expected the Wan 2.2 VAE (wan2.2_vae.safetensors, "
            "for TI2V-5B) or the Wan 2.1 VAE (wan_2.1_vae.safetensors, for A14B) in models/vae. Fix: pick one of "
            "those; python -m wanfit models lists them with their download links.", [path])
    return info


def _same_file(path_a, path_b):
    try:
        return os.path.samefile(path_a, path_b)
    except OSError:
        return os.path.realpath(path_a) == os.path.realpath(path_b)


def _article(text):
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def _variant_fix(variant):
    if variant == "ti2v_5b":
        return "load wan2.2_ti2v_5B_fp16.safetensors from models/diffusion_models."
    if variant in EXPERT_FILES:
        return f"load {EXPERT_FILES[variant][0]} / {EXPERT_FILES[variant][1]} from models/diffusion_models."
    return DOWNLOAD_HINT + "."
