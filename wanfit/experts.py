"""Handing over from the high-noise to the low-noise A14B expert without holding both.

When RAM is short the plan says drop_high_noise_expert_before_low: the high-noise expert's
weights are freed (unloaded from the GPU, then released in RAM) after its steps and before the
low-noise expert is read from disk, so the two 14B experts never sit in memory together.
ComfyUI's node cache would otherwise keep the loader's output alive to the end of the prompt,
so the weights are released in place; the loader that made them re-runs on the next prompt
because its IS_CHANGED token moves on (released_generation).
"""

import logging

log = logging.getLogger("wanfit")

_released = {}  # model file path -> how many times its weights were released


def released_generation(path):
    return _released.get(path, 0)


def remember_source(patcher, path):
    """Record which file a loaded model came from (the low-noise loader checks the pair by file)."""
    patcher.model_options.setdefault("wanfit", {})["source_path"] = str(path)


def source_path(patcher):
    return (getattr(patcher, "model_options", {}) or {}).get("wanfit", {}).get("source_path")


def should_release(mode, plan):
    """-> (release?, reason). mode: auto (the plan decides), always, never."""
    if mode == "always":
        return True, "release forced on the node"
    if mode == "never":
        return False, "kept in memory (release set to never)"
    wanted = getattr(plan, "drop_high_noise_expert_before_low", None) if plan is not None else None
    if wanted:
        return True, "the plan drops the high-noise expert before the low-noise one loads (RAM is short)"
    if wanted is None:
        return False, "kept in memory: no plan connected (connect WanFit Offload Plan to let it decide)"
    return False, "kept in memory: the plan has RAM for both experts (the next run reuses it)"


def release_model(patcher, model_management):
    """Unload `patcher` (and every clone sharing its weights) from the GPU, then free the weights.

    Returns the bytes of weights released. The model is unusable afterwards.
    """
    base_model = patcher.model
    size = patcher.model_size()
    for loaded in list(model_management.current_loaded_models):
        model = loaded.model
        if model is not None and model.model is base_model:
            loaded.model_unload()
            model_management.current_loaded_models.remove(loaded)
    if getattr(patcher, "is_dynamic", lambda: False)():
        # dynamic VRAM (0.33+, comfy-aimdo): weights are pinned in RAM and mapped through a per-device
        # virtual buffer; both would outlive the parameters' storage otherwise
        patcher.unpin_all_weights()
        getattr(base_model, "dynamic_vbars", {}).clear()
    base_model.to("meta")  # parameters become shapes without storage: the RAM goes back
    path = source_path(patcher)
    if path:
        _released[path] = _released.get(path, 0) + 1
    model_management.soft_empty_cache()
    log.info("WanFit: released %.1f GB of high-noise expert weights (%s)", size / 2**30, path or "unknown file")
    return size


GGUF_LOADER_NODE = "UnetLoaderGGUF"  # ComfyUI-GGUF's loader node


def is_gguf_name(name):
    return str(name).lower().endswith(".gguf")


def comfyui_gguf_loader(node_classes, name):
    """ComfyUI-GGUF's loader node class: the switch loads a .gguf low-noise expert through it, after the
    high-noise expert is released, as that node would; without ComfyUI-GGUF it refuses, naming the file."""
    from .models import ModelMismatchError

    loader = node_classes.get(GGUF_LOADER_NODE)
    if loader is None:
        raise ModelMismatchError(
            f"{name} is a GGUF file: WanFit Switch To Low-Noise Expert loads it through ComfyUI-GGUF's Unet Loader "
            f"(GGUF), which is not installed. Fix: install ComfyUI-GGUF (city96) with ComfyUI-Manager and restart "
            f"ComfyUI, or pick the .safetensors low-noise expert.", [name])
    return loader


def load_gguf_expert(node_classes, name, path, gguf_types):
    """-> (model, reason): the low-noise GGUF loaded by ComfyUI-GGUF's own node, its source remembered."""
    (model,) = comfyui_gguf_loader(node_classes, name)().load_unet(name)
    remember_source(model, path)
    return model, (f"loaded by ComfyUI-GGUF's Unet Loader (GGUF) as stored ({gguf_types}, dequantized per layer); "
                   f"weight_dtype does not apply to a GGUF")


def reload_after_this_prompt(server):
    """A model released in place that no WanFit loader made stays in ComfyUI's node cache, and the next prompt
    would sample a model without weights. Setting the flag the Free model and node cache button sets (the prompt
    worker then resets the cache after this prompt) makes the next prompt load it again. -> whether it was set."""
    queue = getattr(server, "prompt_queue", None)
    if queue is None or not callable(getattr(queue, "set_flag", None)):
        return False
    queue.set_flag("free_memory", True)
    return True


def release_high_noise_expert(patcher, why, model_management, server):
    """release_model, and the line the switch reports; a model no WanFit loader made gets the cache flag too."""
    line = f"released the high-noise expert ({release_model(patcher, model_management) / 2**30:.2f} GB): {why}"
    if source_path(patcher):
        return line  # the WanFit loader's fingerprint moves on (released_generation): it loads again
    if reload_after_this_prompt(server):
        return (line + "; ComfyUI's node cache is cleared after this prompt (as by Free model and node cache), so "
                       "the next run loads the high-noise expert again")
    return (line + "; press Free model and node cache before the next run (this ComfyUI has no cache flag to set), "
                   "or load the high-noise expert with WanFit Load A14B Experts")
