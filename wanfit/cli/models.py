"""`python -m wanfit models [--check] [--download NAMES|all] [--models-dir DIR] [--workflow NAME] [--manager-json [PATH]]`

Lists, per WanFit workflow, which official model files are present under a ComfyUI models
folder and which are missing (with their folder and URL); --check also reads each present
file's header and says whether it is really the model its name promises; --download fetches
missing files (resumable, verified). Exit 0 when the command did what was asked (missing files
are reported, not errors), 2 on errors (bad option, unreadable/wrong file, failed download).
"""

import argparse
import json
import os
from pathlib import Path
import sys

from ..errors import WanFitError
from ..models import (check_present_file, find_model_file, header_verifier, load_manifest, manager_model_list,
                      manifest_entry, workflow_status)
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
    args = parser.parse_args(argv)
    try:
        return _run(args, manifest or load_manifest())
    except WanFitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


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
