"""Which model files are where: the same presence rules for the loaders, `wanfit models` and the worker.

ComfyUI finds a file in its folder, the folder's legacy name or any subfolder; what it lists but
cannot open (a FIFO, a dangling link) is named as such instead of reading as 'missing'.
"""

from dataclasses import dataclass
import os
from pathlib import Path

from ..errors import WanFitError
from .detection import detect_variant
from .headers import not_a_regular_file_error, special_file_in
from .manifest import load_manifest, manifest_entry, missing_model_error

# ComfyUI's folder_paths also searches these legacy folder names.
FOLDER_ALIASES = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip"),
                  "vae": ("vae",), "loras": ("loras",)}


@dataclass(frozen=True)
class SlotStatus:
    """One model slot of a workflow: where its file was found (None when missing), and what fills it."""

    role: str
    found: Path
    entry: dict  # the manifest entry of the slot's default (first) file
    candidates: list  # every file name that fills the slot, the default first


def find_model_file(models_dir, folder, filename):
    """Where ComfyUI would find `filename` (folder, its legacy alias, or any subfolder), else None."""
    for alias in FOLDER_ALIASES.get(folder, (folder,)):
        base = Path(models_dir) / alias
        direct = base / filename
        if direct.is_file():
            return direct
        if base.is_dir():
            for root, _dirs, files in os.walk(base, followlinks=True):
                if filename in files:
                    return Path(root) / filename
    return None


def workflow_status(models_dir, workflow_id, manifest=None):
    """[SlotStatus] for each model slot of the workflow, in the manifest's order."""
    manifest = manifest or load_manifest()
    rows = []
    for slot in manifest["workflows"][workflow_id]["slots"]:
        found = None
        for filename in slot["any_of"]:
            entry = manifest_entry(filename, manifest)
            found = find_model_file(models_dir, entry["folder"], filename)
            if found:
                break
        rows.append(SlotStatus(slot["role"], found, manifest_entry(slot["any_of"][0], manifest), list(slot["any_of"])))
    return rows


def _looks_like_instead(path, entry):
    """What the file looks like when its header is not the model `entry` names, else None; raises when unreadable."""
    info = detect_variant(path)
    return None if (info.kind, info.variant) == (entry["kind"], entry["variant"]) else info.looks_like


def check_present_file(path, entry):
    """None if the header matches the manifest entry's kind/variant, else a one-line problem."""
    try:
        looks_like = _looks_like_instead(path, entry)
    except WanFitError as error:
        return str(error)
    if looks_like is None:
        return None
    return (f"{path} looks like {looks_like}, but {entry['filename']} should be {entry['title']}. "
            f"Fix: delete it and download it again (--download {entry['filename']}).")


def header_verifier(entry):
    """verify(path) for download_file: None when the file's safetensors header is the model `entry` names
    (read from the header alone), else what it is instead."""
    def verify(path):
        try:
            looks_like = _looks_like_instead(path, entry)
        except WanFitError as error:
            return str(error)
        return None if looks_like is None else \
            f"it looks like {looks_like}, but {entry['filename']} should be {entry['title']}."
    return verify


def resolve_model_path(folder, name):
    """The file's path in ComfyUI's model folders, or an error that names the folder it belongs in and where
    to download it."""
    import folder_paths

    path = folder_paths.get_full_path(folder, name)
    if path is None:
        special = special_file_in(folder_paths.get_folder_paths(folder), name)
        if special is not None:
            raise not_a_regular_file_error(special)
        models_dir = getattr(folder_paths, "models_dir", None)
        raise missing_model_error(name, folder, models_dir)
    return path
