"""The manifest in ComfyUI-Manager's model-list.json format, for its 'Install Models' dialog."""

from .manifest import load_manifest

# ComfyUI-Manager's model-list.json entry fields (stable since 2023: name, type, base, save_path,
# description, reference, filename, url; newer entries add size as a "14.3GB" string).
MANAGER_TYPES = {"diffusion_models": "diffusion_model", "text_encoders": "clip", "vae": "VAE", "loras": "lora"}


def manager_model_list(manifest=None):
    """The manifest in ComfyUI-Manager's model-list.json format, for its 'Install Models' dialog."""
    manifest = manifest or load_manifest()
    models = []
    for entry in manifest["files"]:
        if not entry.get("url"):
            continue
        item = {
            "name": entry["title"],
            "type": MANAGER_TYPES.get(entry["folder"], entry["folder"]),
            "base": "Wan2.2" if "2.1" not in entry["filename"] else "Wan2.1",
            "save_path": entry["folder"],
            "description": entry["description"],
            "reference": entry.get("reference") or entry["url"].split("/resolve/")[0],
            "filename": entry["filename"],
            "url": entry["url"],
        }
        if entry.get("approx_size_gb"):
            item["size"] = f"{entry['approx_size_gb']}GB"
        models.append(item)
    return {"models": models}
