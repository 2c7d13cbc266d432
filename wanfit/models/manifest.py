"""The official WAN 2.2 files as data (manifest.json): names, folders, URLs, sizes, certain checksums.

URLs and checksums change without code changes; the loaders' messages, the command line's list
and download, and the RunPod worker all read this one file.
"""

import json
from pathlib import Path

from .errors import DOWNLOAD_HINT, MissingModelError

MANIFEST_PATH = Path(__file__).with_name("manifest.json")

_manifest_cache = None


def load_manifest(path=None):
    """The official files as data (manifest.json), so URLs and checksums change without code changes."""
    global _manifest_cache
    if path is not None:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    if _manifest_cache is None:
        _manifest_cache = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    return _manifest_cache


def manifest_entry(filename, manifest=None):
    manifest = manifest or load_manifest()
    return next((f for f in manifest["files"] if f["filename"] == filename or f["id"] == filename), None)


def download_phrase(filename):
    """'download: <url>' for a file of the manifest, else how to list and fetch the official files."""
    entry = manifest_entry(filename)
    if entry and entry.get("url"):
        return f"download: {entry['url']}"
    return DOWNLOAD_HINT


def missing_model_error(name, folder, models_dir=None):
    """The error a loader raises when a selected file is absent: where it belongs and where to get it."""
    entry = manifest_entry(name)
    folder = folder or (entry or {}).get("folder", "diffusion_models")
    where = Path(models_dir) / folder if models_dir else Path("ComfyUI") / "models" / folder
    if entry and entry.get("url"):
        source = f"Download it from {entry['url']} into {where}, or run `python -m wanfit models --download {name}`."
        url = entry["url"]
    elif entry:
        source = f"No download URL is recorded for it in WanFit's manifest; copy it into {where}."
        url = None
    else:
        source = f"It is not one of the official WAN 2.2 files WanFit knows; copy it into {where}."
        url = None
    message = (f"Model file missing: {name} is not in {where}. Expected it in the ComfyUI models folder "
               f"'{folder}' (or a subfolder). Fix: {source} Then refresh the browser (press R) so the loader lists it.")
    return MissingModelError(where / name, message, folder=folder, url=url)
