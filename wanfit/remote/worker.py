"""The start step of a RunPod serverless worker (worker-comfyui): flags, models on the volume, paths.

A serverless worker starts cold on a card it learns about only then, with a network volume that
may or may not hold the models yet. Before ComfyUI starts, this module:
1. plans ComfyUI's launch flags for that card (GPU_TIER when set) and the installed core;
2. makes sure the model files of the workflows named in WANFIT_WORKFLOWS are on the volume,
   downloading only the missing ones (resumable, verified) after checking free space;
3. writes an extra-model-paths file for the volume's models and puts ComfyUI's output folder
   on the volume, so a latent saved by one job can be decoded by a later job on another worker.
Every check that can fail runs before anything is downloaded or started, and each failure is a
`WorkerStartError` whose message names the variable, file or folder and the fix.
"""

import contextlib
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import re
import shlex
import shutil
import urllib.error
import urllib.request

from ..errors import WanFitError
from .transfer import write_atomically
from ..units import BYTES_PER_GIB, format_gib

log = logging.getLogger("wanfit")

DEFAULT_VOLUME = "/runpod-volume"
DEFAULT_COMFYUI = "/comfyui"  # where worker-comfyui's image installs ComfyUI
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras")
LEGACY_FOLDERS = {"diffusion_models": "unet", "text_encoders": "clip"}  # worker-comfyui's own yaml maps these
OUTPUT_FOLDER = "output"  # <volume>/output: videos and saved latents (SaveLatent writes output/latents/)
FREE_SPACE_MARGIN_BYTES = BYTES_PER_GIB  # left free after the downloads (logs, latents, the yaml)
HEAD_TIMEOUT_S = 20.0
LOCK_NAME = ".wanfit-download.lock"


class WorkerStartError(WanFitError):
    """The worker cannot start as configured; nothing was started."""


# --- what to prepare --------------------------------------------------------------


def workflow_choices(manifest, input_map):
    """Names WANFIT_WORKFLOWS accepts: the manifest's workflows and the shipped API workflows."""
    return list(dict.fromkeys(list(manifest["workflows"]) + sorted(input_map)))


def parse_workflows(text, manifest, input_map):
    """'ti2v_5b_t2v, a14b_t2v' -> ['ti2v_5b_t2v', 'a14b_t2v']; 'all' = every manifest workflow."""
    choices = workflow_choices(manifest, input_map)
    names = [name.strip() for name in re.split(r"[,\s]+", text or "") if name.strip()]
    if not names:
        raise WorkerStartError("WANFIT_WORKFLOWS is not set: the worker does not know which models to put on the "
                               f"volume. Fix: set it to one or more of {', '.join(choices)} (comma-separated), "
                               "or 'all'.")
    if names == ["all"]:
        return list(manifest["workflows"])
    unknown = [name for name in names if name not in choices]
    if unknown:
        raise WorkerStartError(f"WANFIT_WORKFLOWS names unknown workflow(s): {', '.join(unknown)}. Expected one or "
                               f"more of: {', '.join(choices)} (comma-separated), or 'all'.")
    if not any(name in manifest["workflows"] for name in names):
        raise WorkerStartError(f"WANFIT_WORKFLOWS={text!r} names no workflow that loads a model ({', '.join(names)} "
                               "only decode a saved latent). Fix: add the workflow that generates the latents, e.g. "
                               f"{next(iter(manifest['workflows']))}.")
    return list(dict.fromkeys(names))


def model_variants(workflows, input_map):
    """The plan variants ('ti2v_5b', 't2v_a14b', ...) the named workflows run, in order."""
    variants = [input_map.get(name, {}).get("model_variant") for name in workflows]
    return list(dict.fromkeys(variant for variant in variants if variant))


def parse_plan_size(text):
    """'832x480x81' -> (832, 480, 81); empty -> None (each model's official size)."""
    if not text or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match:
        raise WorkerStartError(f"WANFIT_PLAN_SIZE={text!r} is invalid: expected WIDTHxHEIGHTxFRAMES of the largest "
                               "job the endpoint will run, e.g. 832x480x81.")
    return tuple(int(part) for part in match.groups())


# --- the volume ---------------------------------------------------------------------


def check_volume(volume):
    """The volume exists, is a folder and takes writes (a read-only mount fails here, not mid-download)."""
    volume = Path(volume)
    fix = ("attach a network volume to the endpoint (Advanced > Select Network Volume), or set WANFIT_VOLUME to "
           "a writable folder")
    if not volume.exists():
        raise WorkerStartError(f"Network volume not found: {volume} does not exist. Fix: {fix}.")
    if not volume.is_dir():
        raise WorkerStartError(f"Network volume {volume} is not a folder. Fix: {fix}.")
    read_only = bool(os.statvfs(volume).f_flag & os.ST_RDONLY)
    probe = volume / f".wanfit-write-test-{os.getpid()}"
    if not read_only:
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            read_only = error
    if read_only:
        why = f" ({read_only.strerror})" if isinstance(read_only, OSError) else " (mounted read-only)"
        raise WorkerStartError(f"Network volume {volume} is read-only{why}: models and saved latents cannot be "
                               f"written there. Fix: {fix}.")
    return volume


def models_dir(volume):
    return Path(volume) / "models"


def output_dir(volume):
    return Path(volume) / OUTPUT_FOLDER


# --- model files ----------------------------------------------------------------------


def missing_files(volume, workflows, manifest):
    """Manifest entries of the files to download: the default file of each slot no candidate fills."""
    from ..models import workflow_status  # the same presence rules as `wanfit models`

    wanted = {}
    for workflow_id in workflows:
        if workflow_id not in manifest["workflows"]:
            continue  # decode_saved_latent: its VAE comes with the workflow that saved the latent
        for slot in workflow_status(models_dir(volume), workflow_id, manifest):
            if slot.found is None:
                wanted.setdefault(slot.entry["filename"], slot.entry)
    return list(wanted.values())


def download_url(entry, base_url=None):
    """The manifest URL, or <base_url>/<folder>/<filename> (a mirror, or a test server)."""
    if base_url:
        return f"{base_url.rstrip('/')}/{entry['folder']}/{entry['filename']}"
    return entry.get("url")


def remote_size_bytes(url, filename, timeout_s=HEAD_TIMEOUT_S):
    """Content-Length of a HEAD request (redirects followed); None when the server does not say."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "ComfyUI-WanFit-worker"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as error:
        raise WorkerStartError(f"Cannot download {filename}: {url} answered HTTP {error.code} {error.reason}. Fix: "
                               "check WANFIT_MODEL_BASE_URL / the manifest URL, or copy the file onto the volume "
                               "by hand.") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WorkerStartError(f"Cannot download {filename}: the download host is unreachable ({url}: {reason}). "
                               "Nothing was downloaded. Fix: check the network / WANFIT_MODEL_BASE_URL and start "
                               "the worker again.") from None
    return int(length) if length and length.isdigit() else None


def size_needed(entries, volume, base_url=None, head=remote_size_bytes):
    """[(entry, url, bytes still to fetch or None)] and the notes on sizes that could not be known.

    The manifest's exact size wins, else the server's Content-Length; a `.partial` from an
    interrupted run counts as already fetched (the download resumes it).
    """
    from .download import partial_path

    rows, notes = [], []
    for entry in entries:
        url = download_url(entry, base_url)
        if not url:
            raise WorkerStartError(f"No download URL is recorded for {entry['filename']}. Fix: copy it into "
                                   f"{models_dir(volume) / entry['folder']} on the volume, or set "
                                   "WANFIT_MODEL_BASE_URL to a mirror that holds <folder>/<filename>.")
        size = entry.get("size_bytes") or head(url, entry["filename"])
        if size is None:
            notes.append(f"{entry['filename']}: the server sent no Content-Length, so its size cannot be checked "
                         "against the free space")
        else:
            partial = partial_path(models_dir(volume) / entry["folder"] / entry["filename"])
            if partial.is_file():
                size = max(size - partial.stat().st_size, 0)
        rows.append((entry, url, size))
    return rows, notes


def check_free_space(volume, rows, free_bytes=None):
    """Refuse before downloading when the known sizes do not fit with a margin."""
    needed = sum(size for _entry, _url, size in rows if size)
    free = shutil.disk_usage(volume).free if free_bytes is None else free_bytes
    if needed and needed + FREE_SPACE_MARGIN_BYTES > free:
        listing = ", ".join(f"{entry['filename']} {format_gib(size)}" for entry, _url, size in rows if size)
        raise WorkerStartError(f"Not enough free space on the volume {volume}: the missing models need "
                               f"{format_gib(needed)} ({listing}) plus {format_gib(FREE_SPACE_MARGIN_BYTES)} spare, "
                               f"but only {format_gib(free)} is free. Nothing was downloaded. Fix: enlarge the "
                               "network volume, delete files from it, or name fewer workflows in WANFIT_WORKFLOWS.")
    return needed, free


@contextlib.contextmanager
def volume_lock(volume):
    """One downloading worker per volume: a second worker cold-starting at the same time waits, then
    finds the files present. Where the volume's filesystem has no flock, proceed without it."""
    import fcntl

    path = models_dir(volume) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another worker is downloading to %s; waiting for it", volume)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            log.warning("cannot lock %s (%s); downloading without a lock", path, error)
        yield


def download_missing(volume, rows, download_file=None):
    """Fetch each row (resumable; size, sha256 and safetensors header verified as `wanfit models --download`
    does); returns the paths written."""
    from ..models import header_verifier
    from .download import DownloadError
    from .download import download_file as default_download_file

    download_file = download_file or default_download_file
    written = []
    for entry, url, _size in rows:
        dest = models_dir(volume) / entry["folder"] / entry["filename"]
        if dest.is_file():
            continue  # another worker finished it while this one waited for the lock
        try:
            result = download_file(url, dest, expected_size_bytes=entry.get("size_bytes"),
                                   expected_sha256=entry.get("sha256"), verify=header_verifier(entry))
        except DownloadError as error:
            raise WorkerStartError(f"Downloading {entry['filename']} failed: {error}") from None
        written.append(Path(result["path"]))
    return written


# --- what ComfyUI is told ---------------------------------------------------------------


def _yaml_string(text):
    """A double-quoted YAML scalar (JSON string syntax is valid YAML)."""
    import json

    return json.dumps(str(text))


def extra_model_paths_yaml(volume):
    """The model folders on the volume, each with its legacy name (unet/, clip/) as a second path."""
    lines = ["# Written by `python -m wanfit worker-start`: the WAN model folders on the network volume.",
             "wanfit_runpod_volume:",
             f"  base_path: {_yaml_string(volume)}",
             "  is_default: true"]
    for folder in MODEL_FOLDERS:
        paths = [f"models/{folder}"] + ([f"models/{LEGACY_FOLDERS[folder]}"] if folder in LEGACY_FOLDERS else [])
        lines.append(f"  {folder}: {_yaml_string(chr(10).join(paths))}")
    return "\n".join(lines) + "\n"


def comfyui_args(plan_args, yaml_path, volume):
    """The plan's flags plus the volume's model paths and output folder."""
    return [*plan_args, "--extra-model-paths-config", str(yaml_path), "--output-directory", str(output_dir(volume))]


# worker-comfyui 5.x src/start.sh launches `python -u /comfyui/main.py <its flags> &`; the flags go
# right after main.py on each such line.
_MAIN_PY_LAUNCH = re.compile(r"(\bpython3?\s+(?:-u\s+)?\S*/main\.py)(?=\s|$)")


def patch_start_script(text, args, env=None, source="/start.sh"):
    """worker-comfyui's start script with ComfyUI's launch line carrying `args`, and `env` exported."""
    flags = " ".join(shlex.quote(arg) for arg in args)
    patched, count = _MAIN_PY_LAUNCH.subn(lambda match: f"{match.group(1)} {flags}", text)
    if not count:
        raise WorkerStartError(f"{source} has no `python -u .../main.py` line to add ComfyUI's flags to: the "
                               "worker-comfyui base image changed. Fix: build on the pinned base image named in "
                               "deploy/runpod/Dockerfile.")
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted((env or {}).items()))
    if exports:
        first, newline, rest = patched.partition("\n")
        patched = (first + newline + exports + rest) if first.startswith("#!") else exports + patched
    return patched


# --- cold-start cost ---------------------------------------------------------------------


def entry_size_bytes(entry):
    """Exact size, else the manifest's approximate GB, else None."""
    if entry.get("size_bytes"):
        return int(entry["size_bytes"])
    if entry.get("approx_size_gb"):
        return int(float(entry["approx_size_gb"]) * 1e9)
    return None


def download_estimate(workflow_id, manifest):
    """(known bytes of the default file set, [files of unknown size]) for one workflow."""
    known, unknown = 0, []
    for slot in manifest["workflows"][workflow_id]["slots"]:
        entry = next(f for f in manifest["files"] if f["filename"] == slot["any_of"][0])
        size = entry_size_bytes(entry)
        if size is None:
            unknown.append(entry["filename"])
        else:
            known += size
    return known, unknown


# --- launch flags ------------------------------------------------------------------------


def worker_device(gpu_tier):
    """GPU_TIER's representative card when set (it wins over the card found), else the card torch sees."""
    from ..device import probe_device, system_ram_bytes
    from ..plan import GPU_TIERS, device_for_tier

    if gpu_tier:
        if gpu_tier.strip().upper() not in GPU_TIERS:
            raise WorkerStartError(f"GPU_TIER={gpu_tier!r} is unknown. Expected one of: {', '.join(GPU_TIERS)}. "
                                   "Fix: set GPU_TIER to one of these, or unset it to plan for the GPU found.")
        return device_for_tier(gpu_tier, system_ram_bytes()[0])
    try:
        device = probe_device()
    except Exception as error:  # no CUDA driver in the container: say so, with the way out
        device, reason = None, f" ({error})"
    else:
        reason = ""
    if device is None or not device.is_gpu:
        from ..plan import GPU_TIERS

        raise WorkerStartError(f"No GPU could be queried{reason} and GPU_TIER is not set. Fix: set GPU_TIER to one "
                               f"of {', '.join(GPU_TIERS)}.")
    return device


def launch_plan(variants, device, core, plan_size=None):
    """The plan whose flags the worker launches with: of the named workflows' models, the one with the
    highest predicted RAM, then VRAM peak (flags are per process, so the most demanding model decides)."""
    from ..plan import PlanDoesNotFitError, plan_from_options

    width, height, frames = plan_size or (None, None, None)
    plans = []
    for variant in variants:
        try:
            plans.append(plan_from_options(lambda: device, variant, width, height, frames, core=core))
        except PlanDoesNotFitError as error:
            raise WorkerStartError(f"{error} Fix: set WANFIT_PLAN_SIZE=WIDTHxHEIGHTxFRAMES to the largest job this "
                                   "endpoint will run, or pick a larger GPU for the endpoint.") from None
        except WanFitError as error:
            raise WorkerStartError(f"WANFIT_PLAN_SIZE: {error}") from None
    return max(plans, key=lambda plan: (plan.predicted_peak_ram_bytes, plan.predicted_peak_vram_bytes))


def load_worker_manifest(path=None):
    """WanFit's manifest, or WANFIT_MANIFEST's (same format): a mirror whose files are not the official bytes."""
    from ..models import load_manifest

    if not path:
        return load_manifest()
    try:
        manifest = load_manifest(path)
        manifest["files"], manifest["workflows"]  # noqa: B018 (the two keys the worker reads)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WorkerStartError(f"WANFIT_MANIFEST={path!r} is not a readable WanFit manifest ({error}). Fix: point it "
                               "at a JSON file in the format of wanfit/models/manifest.json, or unset it.") from None
    return manifest


# --- the whole step ------------------------------------------------------------------------


@dataclass
class Prepared:
    """What the start step decided: ComfyUI's arguments and environment, and what it downloaded."""

    args: list
    env: dict
    yaml_path: Path
    downloaded: list  # Paths written
    plan: object  # the Plan whose launch flags ComfyUI gets
    core: object  # the ComfyUI checkout's core description


def prepare(environ, volume, comfyui_path, state_dir, download_file=None):
    """Check everything, then download and write the yaml. Raises WorkerStartError before any side
    effect when an input is wrong (workflow, tier, core, volume, size, free space, host)."""
    from .. import core as cores
    from ..workflows import load_input_map

    manifest, input_map = load_worker_manifest(environ.get("WANFIT_MANIFEST")), load_input_map()
    workflows = parse_workflows(environ.get("WANFIT_WORKFLOWS", ""), manifest, input_map)
    plan_size = parse_plan_size(environ.get("WANFIT_PLAN_SIZE", ""))
    device = worker_device(environ.get("GPU_TIER", ""))
    try:
        core = cores.core_from_checkout(comfyui_path)
    except WanFitError as error:
        raise WorkerStartError(f"COMFYUI_PATH: {error}") from None
    plan = launch_plan(model_variants(workflows, input_map), device, core, plan_size)
    log.info("launch flags for %s on %s, ComfyUI %s: %s", plan.model_variant, plan.device_name, core.version_text,
             " ".join(plan.launch_args) or "(none)")

    volume = check_volume(volume)
    base_url = environ.get("WANFIT_MODEL_BASE_URL") or None
    downloaded = []
    with volume_lock(volume):
        entries = missing_files(volume, workflows, manifest)
        if entries:
            rows, notes = size_needed(entries, volume, base_url)
            for note in notes:
                log.warning("%s", note)
            needed, free = check_free_space(volume, rows)
            log.info("downloading %d missing file(s), %s, to %s (%s free)", len(rows), format_gib(needed),
                     models_dir(volume), format_gib(free))
            downloaded = download_missing(volume, rows, download_file)
        else:
            log.info("all model files of %s are on %s; nothing to download", ", ".join(workflows), volume)
    output_dir(volume).mkdir(parents=True, exist_ok=True)
    yaml_path = write_atomically(Path(state_dir) / "extra_model_paths.yaml", extra_model_paths_yaml(volume))
    return Prepared(comfyui_args(plan.launch_args, yaml_path, volume), dict(plan.launch_env), Path(yaml_path),
                    list(downloaded), plan, core)
