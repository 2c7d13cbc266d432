"""`python -m wanfit models [--check] [--download NAMES|all] [--models-dir DIR] [--workflow NAME] [--manager-json [PATH]] [--check-file PATH]`

Lists, per WanFit workflow, which official model files are present under a ComfyUI models
folder and which are missing (with their folder and URL); --check also reads each present
file's header and says whether it is really the model its name promises; --download fetches
missing files (resumable, verified). Exit 0 when the command did what was asked (missing files
are reported, not errors), 2 on errors (bad option, unreadable/wrong file, failed download).

--check-file PATH inspects one file from its header alone: kind, variant, format (ComfyUI's
quantized formats included, e.g. "nvfp4, 400 of 400 block linears; the rest bf16"), size and
what would load it, and, where ComfyUI is importable, whether that core loads the format (read from
its comfy/quant_ops.py). Exit 0 when WanFit's loaders would load it, 2 with the fix when not (not a
WAN 2.2 model, VAE or text encoder, an unreadable header, quantization metadata that disagrees
with the tensors, a format the core lacks, or a .gguf file, which ComfyUI-GGUF's loader loads; a GGUF
whose general.architecture is not "wan" is refused naming it).
"""

import argparse
import json
import os
from pathlib import Path
import sys

from ..errors import WanFitError
from ..models import (DOWNLOAD_HINT, VARIANT_TITLES, check_diffusion_model, check_present_file, check_text_encoder,
                      check_vae_file, detect_variant, find_model_file, header_verifier, load_manifest,
                      manager_model_list, manifest_entry, workflow_status)
from ..models.gguf_header import read_gguf_file
from ..models.core_support import check_loads_on_core, core_verdict, running_core_support
from ..remote.download import DownloadError, download_file


class CliError(WanFitError):
    """A command-line problem the user fixes by changing the command."""


def default_models_dir():
    comfyui_path = os.environ.get("COMFYUI_PATH") or str(Path.home() / "ComfyUI")
    return Path(comfyui_path) / "models"


def _size_text(entry):
    if entry.get("size_bytes"):
        return f"{entry['size_bytes'] / 1e9:.2f} GB"
    return f"~{entry['approx_size_gb']} GB" if entry.get("approx_size_gb") else "size unknown"


def resolve_download_names(names_arg, workflow_ids, models_dir, manifest):
    """'all' = the default (first) file of every slot that is missing in the selected workflows."""
    if names_arg.strip() == "all":
        wanted = []
        for workflow_id in workflow_ids:
            for slot in workflow_status(models_dir, workflow_id, manifest):
                if not slot.found and slot.entry["filename"] not in wanted:
                    wanted.append(slot.entry["filename"])
        return wanted
    wanted = []
    for name in (n.strip() for n in names_arg.split(",") if n.strip()):
        if name in manifest["workflows"]:
            wanted += [s["any_of"][0] for s in manifest["workflows"][name]["slots"]]
            continue
        entry = manifest_entry(name, manifest)
        if entry is None:
            known = ", ".join(sorted(f["filename"] for f in manifest["files"]))
            raise CliError(f"--download {name!r}: not a file or workflow in WanFit's manifest. Expected one of: "
                           f"all, {', '.join(manifest['workflows'])}, or a file name: {known}.")
        wanted.append(entry["filename"])
    return list(dict.fromkeys(wanted))


def main(argv, manifest=None):
    """`manifest` replaces WanFit's own (a test serves its files from 127.0.0.1)."""
    parser = argparse.ArgumentParser(prog="python -m wanfit models", description=__doc__.splitlines()[2].strip())
    parser.add_argument("--models-dir", default=None, help="ComfyUI models folder (default $COMFYUI_PATH/models "
                                                           "or ~/ComfyUI/models)")
    parser.add_argument("--workflow", default=None, help="only this workflow (default: all)")
    parser.add_argument("--check", action="store_true", help="also read each present file's header and verify it")
    parser.add_argument("--download", metavar="NAMES", default=None,
                        help="comma-separated file names or workflow names to fetch, or 'all' (missing files)")
    parser.add_argument("--manager-json", nargs="?", const="-", default=None, metavar="PATH",
                        help="print (or write to PATH) the manifest in ComfyUI-Manager's model-list.json format")
    parser.add_argument("--check-file", metavar="PATH", default=None,
                        help="inspect one model file: kind, variant, format, size, what would load it")
    args = parser.parse_args(argv)
    try:
        if args.check_file is not None:
            return check_file(Path(args.check_file))
        return _run(args, manifest or load_manifest())
    except WanFitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# kind -> (WanFit's gate for that kind, the loader nodes that take it)
FILE_LOADERS = {
    "diffusion_model": (check_diffusion_model, "WanFit Load Diffusion Model (TI2V-5B) / WanFit Load A14B Experts "
                                               "(an A14B expert)"),
    "vae": (check_vae_file, "WanFit Load VAE"),
    "text_encoder": (check_text_encoder, "WanFit Load Text Encoder"),
}


def importable_core_support():
    """The formats of the ComfyUI this Python can import, or None. Outside a running ComfyUI its device
    probe is turned off first (--cpu), as only the table is read: a machine without a GPU would fail it."""
    try:
        import comfy.cli_args
    except ImportError:
        return None
    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = True
    return running_core_support()


def machine_compute_text(quant_algo):
    """Whether this machine's device computes a QUANT_ALGOS format natively or ComfyUI dequantizes it per layer."""
    from ..device import probe_device
    from ..plan.footprint import QUANTIZED_FORMATS
    from ..plan.formats import compute_path

    name = next((name for name, fmt in QUANTIZED_FORMATS.items() if fmt.quant_algo == quant_algo), None)
    path = compute_path(name, probe_device()) if name else None
    if path is None:
        return f"{quant_algo}: not planned by WanFit (ComfyUI dequantizes it per layer where it lacks the kernel)"
    return f"{path.mode} ({path.why})"


def check_file(path):
    """`--check-file PATH`: what the file is and what loads it, from its header; 0 when WanFit loads it."""
    print(f"file: {path}")
    if path.suffix.lower() == ".gguf":
        # GGUFFileError (a ModelFileError): not GGUF, truncated, damaged (with the fix); the header alone is read
        header = read_gguf_file(path, require_data=False)
        print(f"kind: GGUF model (general.architecture: {header.architecture or 'none'})")
        print(f"format: GGUF v{header.version}, {header.tensor_count} tensors: {header.types_text}")
        size = path.stat().st_size
        print(f"size: {size / 1e9:.2f} GB ({size} bytes)")
        if not header.is_wan:
            named = f"'{header.architecture}'" if header.architecture else "missing"
            raise CliError(f"{path} is not a WAN GGUF: its general.architecture is {named}, not 'wan' (what "
                           f"ComfyUI-GGUF's tools/convert.py writes for a WAN 2.2 model). Fix: pick a WAN 2.2 "
                           f"GGUF (general.architecture 'wan'), or the .safetensors model ({DOWNLOAD_HINT}).")
        print("loads with: ComfyUI-GGUF's Unet Loader (GGUF), which WanFit Switch To Low-Noise Expert also calls; "
              "WanFit's loaders refuse .gguf")
        raise CliError(f"{path} is a GGUF file, which WanFit's loaders do not load. Fix: load it with "
                       f"ComfyUI-GGUF's Unet Loader (GGUF), or use the .safetensors version ({DOWNLOAD_HINT}).")
    info = detect_variant(path)  # ModelFileError (unreadable, damaged, not safetensors) carries its own fix
    variant = f"{info.variant} ({VARIANT_TITLES[info.variant]})" if info.variant in VARIANT_TITLES else \
        f"{info.variant} ({info.looks_like})"
    print(f"kind: {info.kind}\nvariant: {variant}")
    quantization = info.quantization
    print(f"format: {quantization.description if quantization else info.precision_label}")
    print(f"size: {info.tensor_bytes / 1e9:.2f} GB ({info.tensor_bytes} bytes of tensors)")
    gate, loaders = FILE_LOADERS.get(info.kind, (None, None))
    if gate is None:
        raise CliError(f"{path} looks like {info.looks_like}, which no WanFit loader takes. Fix: pick a WAN 2.2 "
                       f"diffusion model, the Wan VAE or the umt5-xxl text encoder ({DOWNLOAD_HINT}).")
    gate(path)  # ModelMismatchError names the right file, or the layer whose metadata disagrees
    support = importable_core_support()
    if support is not None and info.kind == "diffusion_model":
        verdict = core_verdict(info, support)
        print(f"loads on this core: {'yes' if verdict.loads else 'no'} ({verdict.reason})")
        check_loads_on_core(info, support)
    if quantization is not None and quantization.main_format:
        print(f"computes on this machine: {machine_compute_text(quantization.main_format)}")
    print(f"loads with: {loaders}")
    return 0


def _run(args, manifest):
    if args.manager_json is not None:
        text = json.dumps(manager_model_list(manifest), indent=2) + "\n"
        if args.manager_json == "-":
            sys.stdout.write(text)
        else:
            Path(args.manager_json).write_text(text, encoding="utf-8")
            print(f"wrote {args.manager_json}")
        return 0
    models_dir = Path(args.models_dir) if args.models_dir else default_models_dir()
    if not models_dir.is_dir():
        raise CliError(f"ComfyUI models folder not found: {models_dir}. Expected the 'models' folder of a ComfyUI "
                       f"checkout. Fix: pass --models-dir /path/to/ComfyUI/models or set COMFYUI_PATH.")
    workflow_ids = list(manifest["workflows"])
    if args.workflow:
        if args.workflow not in manifest["workflows"]:
            raise CliError(f"--workflow {args.workflow!r} is unknown. Expected one of: {', '.join(workflow_ids)}.")
        workflow_ids = [args.workflow]

    failures = 0
    if args.download:
        for filename in resolve_download_names(args.download, workflow_ids, models_dir, manifest):
            entry = manifest_entry(filename, manifest)
            present = find_model_file(models_dir, entry["folder"], filename)
            if present:
                problem = check_present_file(present, entry)
                if problem:  # e.g. an error page saved by an older downloader: say so, never overwrite
                    print(f"error: present but not the model: {problem}", file=sys.stderr)
                    failures += 1
                else:
                    print(f"present, skipped: {entry['folder']}/{filename}")
                continue
            if not entry.get("url"):
                print(f"error: no download URL is recorded for {filename}; copy it into "
                      f"{models_dir / entry['folder']} by hand.", file=sys.stderr)
                failures += 1
                continue
            try:
                result = download_file(entry["url"], models_dir / entry["folder"] / filename,
                                       expected_size_bytes=entry.get("size_bytes"),
                                       expected_sha256=entry.get("sha256"), verify=header_verifier(entry))
            except DownloadError as error:
                print(f"error: {error}", file=sys.stderr)
                failures += 1
                continue
            verified = "sha256 verified" if entry.get("sha256") else f"sha256 {result['sha256']} (no reference)"
            print(f"downloaded: {result['path']} ({result['size_bytes']} bytes, {verified})")

    print(f"Models under {models_dir}")
    checked = {}
    for workflow_id in workflow_ids:
        rows = workflow_status(models_dir, workflow_id, manifest)
        missing = sum(1 for slot in rows if slot.found is None)
        state = "ready" if not missing else f"{missing} missing"
        print(f"\n{workflow_id}: {manifest['workflows'][workflow_id]['title']} [{state}]")
        for slot in rows:
            role, found, entry, candidates = slot.role, slot.found, slot.entry, slot.candidates
            if found is None:
                others = f" (or {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
                print(f"  missing  {role:<18} {entry['folder']}/{entry['filename']}{others} - {_size_text(entry)}, "
                      f"{entry['url'] or 'no URL recorded'}")
                continue
            line = f"  ok       {role:<18} {found.relative_to(models_dir) if _inside(found, models_dir) else found}"
            if args.check:
                found_entry = manifest_entry(found.name, manifest)
                if found not in checked:
                    checked[found] = check_present_file(found, found_entry)
                problem = checked[found]
                if problem:
                    line = f"  BAD      {role:<18} {problem}"
                    failures += 1
                else:
                    line += "  (header ok)"
            print(line)
    if failures:
        print(f"\n{failures} problem(s) found; see the lines marked BAD / error above.", file=sys.stderr)
        return 2
    return 0


def _inside(path, folder):
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False
