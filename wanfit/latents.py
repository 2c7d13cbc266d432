"""Saved latents (ComfyUI's SaveLatent files) found again for a later decode.

SaveLatent writes `<output>/<prefix>_00001_.latent` (safetensors, key `latent_tensor`, with a
`latent_format_version_0` marker); stock LoadLatent reads only the input folder, so a latent saved
before a failed decode had to be copied by hand. These helpers list and read them where they are.
"""

from pathlib import Path

from .errors import InvalidInputError

LATENT_SUFFIX = ".latent"
LEGACY_SCALE = 1.0 / 0.18215  # files written before latent_format_version_0 (ComfyUI's LoadLatent)


def list_saved_latents(output_dir):
    """Paths relative to the output folder, newest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    files = [path for path in root.rglob(f"*{LATENT_SUFFIX}") if path.is_file()]
    files.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    return [path.relative_to(root).as_posix() for path in files]


def resolve_saved_latent(output_dir, name):
    root = Path(output_dir).resolve()
    path = (root / name).resolve()
    if root not in path.parents or path.suffix != LATENT_SUFFIX:
        raise InvalidInputError("latent", name, f"a .latent file inside the output folder {root}",
                                "pick one of the files SaveLatent wrote (output/latents/...)")
    if not path.is_file():
        raise InvalidInputError("latent", name, f"an existing file; {path} is not there",
                                "refresh the list (press R) or run the workflow that saves it")
    return path


def load_saved_latent(path):
    from safetensors.torch import load_file

    tensors = load_file(str(path), device="cpu")
    if "latent_tensor" not in tensors:
        raise InvalidInputError("latent", str(path), "a SaveLatent file (safetensors with 'latent_tensor')",
                                "pick a .latent file written by SaveLatent")
    scale = 1.0 if "latent_format_version_0" in tensors else LEGACY_SCALE
    return {"samples": tensors["latent_tensor"].float() * scale}
