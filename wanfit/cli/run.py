"""`python -m wanfit run --workflow NAME --prompt TEXT [options]`

Fills a shipped API workflow (or --workflow-file, with NAME's input map saying which node holds
the prompt, size, frames...), uploads --image, queues it on ComfyUI's /prompt, shows progress
from /ws on stderr, downloads the video(s) SaveVideo wrote into --out and prints their paths on
stdout. With --runpod ENDPOINT_ID the same workflow goes to a RunPod worker-comfyui endpoint.

Exit codes: 0 done; 1 the server or the job failed (its error text is printed); 2 the command is
wrong (unknown workflow, missing or unreadable image, frames not 4n+1, server unreachable, no
RUNPOD_API_KEY...) and nothing was run; 130 interrupted (Ctrl-C). No exit leaves a file under a
final name in --out that is not complete.
"""

import argparse
import json
from pathlib import Path
import sys
import tempfile
import time

from ..remote.client import ComfyClient, ComfyServerError, ComfyUnreachableError, is_file_ref
from ..errors import InvalidInputError, WanFitError
from ..remote.progress import ProgressPrinter, PromptRun
from ..remote.runpod import RunPodClient, RunPodError
from ..remote.transfer import safe_file_name, unused_path
from ..workflows import fill_workflow, load_input_map, resolve_workflows_dir

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_TIMEOUT_S = 3600
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".gif", ".webp", ".avi"}


class RunInputError(WanFitError):
    """The command cannot run as typed; nothing was sent anywhere."""


class ServerUnreachableError(RunInputError):
    def __init__(self, server, cause):
        super().__init__(
            f"server={server!r} is unreachable: no ComfyUI answered there ({cause}). Fix: start ComfyUI with "
            f"WanFit installed (cd ~/ComfyUI && python main.py --listen 127.0.0.1 --port 8188), wait for "
            f"'To see the GUI go to: {DEFAULT_SERVER}', then rerun; or pass --server URL of a running ComfyUI.")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m wanfit run", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", required=True, metavar="NAME",
                        help="shipped workflow, e.g. ti2v_5b_t2v, ti2v_5b_i2v, a14b_t2v, a14b_i2v, "
                             "a14b_t2v_lightx2v, a14b_i2v_lightx2v")
    parser.add_argument("--prompt", required=True, help="what the video shows")
    parser.add_argument("--negative", help="what it must not show (default: the workflow's)")
    parser.add_argument("--image", metavar="PATH", help="start image for the *_i2v workflows (uploaded to the server)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int, help="4n+1: 5, 9, ..., 81, 121")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--fps", type=float)
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"ComfyUI URL (default {DEFAULT_SERVER})")
    parser.add_argument("--out", default=".", metavar="DIR", help="where the video is saved (default: here)")
    parser.add_argument("--workflow-file", metavar="PATH",
                        help="an API-format workflow to submit instead of the shipped one; --workflow NAME still "
                             "says which node holds the prompt, size, frames...")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S})")
    parser.add_argument("--runpod", metavar="ENDPOINT_ID",
                        help="run on this RunPod serverless worker-comfyui endpoint (key in $RUNPOD_API_KEY)")
    return parser.parse_args(argv)


def field_values(args):
    """The workflow fields the command sets; None keeps the workflow's own value."""
    fps = args.fps
    if fps is not None and float(fps).is_integer():
        fps = int(fps)
    return {"prompt": args.prompt, "negative": args.negative,
            "image": Path(args.image).name if args.image else None, "width": args.width, "height": args.height,
            "frames": args.frames, "steps": args.steps, "seed": args.seed, "cfg": args.cfg, "fps": fps}


def read_workflow_file(path):
    path = Path(path)
    try:
        workflow = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError("workflow-file", str(path), "an existing API-format workflow JSON file",
                                "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError("workflow-file", str(path), f"readable JSON ({error})") from None
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise InvalidInputError("workflow-file", str(path), "an API-format workflow, not the editor's UI format",
                                "in ComfyUI use Workflow > Export (API), or pass the file from workflows/api/")
    if not isinstance(workflow, dict) or not workflow or not all(
            isinstance(node, dict) and "class_type" in node and isinstance(node.get("inputs"), dict)
            for node in workflow.values()):
        raise InvalidInputError("workflow-file", str(path), 'an API-format workflow: {"<node id>": {"class_type": '
                                '..., "inputs": {...}}, ...}', "in ComfyUI use Workflow > Export (API)")
    return workflow


def input_spec(name):
    """NAME's entry of the input map (which node input holds each field)."""
    try:
        input_map = load_input_map()
    except FileNotFoundError:
        location = resolve_workflows_dir() / "api" / "inputs.json"
        raise RunInputError(f"no workflow input map at {location}. Fix: update WanFit (git pull), or point "
                            "WANFIT_WORKFLOWS_DIR at a folder with api/inputs.json.") from None
    if name not in input_map:
        raise InvalidInputError("workflow", name, "one of " + ", ".join(sorted(input_map)),
                                "pick one of those (python -m wanfit models lists what each needs)")
    return input_map[name]


def fill(name, values, workflow_file=None):
    """The filled API workflow: the shipped one, or `workflow_file` filled by the same code (fill_workflow
    pointed at a one-workflow folder), so both get the same checks."""
    spec = input_spec(name)
    if workflow_file is None:
        return fill_workflow(name, **values)
    workflow = read_workflow_file(workflow_file)
    for field, value in values.items():
        if value is None or field not in spec["fields"]:
            continue  # fill_workflow names unknown fields
        for node_id, input_name in spec["fields"][field]:
            if input_name not in workflow.get(node_id, {}).get("inputs", {}):
                raise InvalidInputError("workflow-file", str(workflow_file),
                                        f"node {node_id} with input {input_name!r}, where workflow {name} keeps "
                                        f"{field}", f"pass the --workflow whose input map matches the file, or "
                                        f"leave --{field} out")
    with tempfile.TemporaryDirectory(prefix="wanfit-run-") as folder:
        (Path(folder) / "api").mkdir()
        (Path(folder) / "api" / "inputs.json").write_text(json.dumps({name: spec}))
        (Path(folder) / "api" / f"{name}.json").write_text(json.dumps(workflow))
        return fill_workflow(name, workflows_dir=folder, **values)


def set_field(workflow, spec, field, value):
    for node_id, input_name in spec["fields"].get(field, []):
        workflow[node_id]["inputs"][input_name] = value


def prepare(args):
    """Everything checked before anything is sent: (workflow, input spec)."""
    workflow = fill(args.workflow, field_values(args), args.workflow_file)
    if args.image and not Path(args.image).is_file():
        raise InvalidInputError("image", args.image, "an existing image file (PNG, JPEG or WEBP)",
                                "check the path; the file is read here and uploaded to the server")
    if args.timeout <= 0:
        raise InvalidInputError("timeout", args.timeout, "a positive number of seconds")
    if not args.runpod and not args.server.startswith(("http://", "https://")):
        raise InvalidInputError("server", args.server, "an http:// or https:// URL",
                                f"e.g. --server {DEFAULT_SERVER}")
    return workflow, input_spec(args.workflow)


def video_files(history_entry):
    """The files to download: videos (SaveVideo lists its mp4 under "images" with animated: [true]);
    when a workflow saved no video, its saved images."""
    videos, images = [], []
    outputs = history_entry.get("outputs")
    for output in (outputs if isinstance(outputs, dict) else {}).values():
        if not isinstance(output, dict):
            continue
        animated = output.get("animated") if isinstance(output.get("animated"), list) else []
        listed = output.get("images") if isinstance(output.get("images"), list) else []
        for index, item in enumerate(listed):
            if not is_file_ref(item) or item.get("type") == "temp":
                continue
            flagged_animated = index < len(animated) and animated[index] is True
            is_video = flagged_animated or Path(item["filename"].replace("\0", "")).suffix.lower() in VIDEO_EXTENSIONS
            (videos if is_video else images).append(item)
        for key in ("videos", "gifs"):  # older video nodes (VideoHelperSuite) use these keys
            listed = output.get(key) if isinstance(output.get(key), list) else []
            videos += [item for item in listed if is_file_ref(item)]
    return videos or images


def run_local(args, workflow, spec, printer):
    client = ComfyClient(args.server, deadline=time.monotonic() + args.timeout)  # --timeout covers downloads
    try:
        client.get_json("/system_stats")
    except ComfyUnreachableError as error:
        cause = error.__cause__ or error
        raise ServerUnreachableError(args.server, getattr(cause, "reason", cause)) from None
    if args.image:
        set_field(workflow, spec, "image", client.upload_image(args.image))
    prompt_run = PromptRun(client, workflow, printer)
    try:
        entry = prompt_run.run(args.timeout)
    except KeyboardInterrupt:
        if prompt_run.prompt_id:
            client.interrupt(prompt_run.prompt_id)
        raise
    printer.close()
    files = video_files(entry)
    if not files:
        raise ComfyServerError(f"prompt {prompt_run.prompt_id} finished but saved no video. Fix: end the "
                               "workflow in SaveVideo (or SaveImage).")
    return [client.download(item, args.out,
                            filename=unused_path(args.out, safe_file_name(item["filename"], "comfyui_output")).name)
            for item in files]


def run_runpod(args, workflow, printer):
    runpod = RunPodClient(args.runpod)
    runpod.deadline = time.monotonic() + args.timeout  # --timeout covers the job and its downloads
    images = [(Path(args.image).name, args.image)] if args.image else []
    job_id = runpod.submit(workflow, images)
    printer("runpod", {"job_id": job_id, "status": "submitted"})
    try:
        status = runpod.wait(job_id, args.timeout, on_event=printer)
    except KeyboardInterrupt:
        runpod.cancel(job_id)
        raise
    printer.close()
    output = status.get("output") if isinstance(status.get("output"), dict) else {}
    warnings = output.get("errors") or []
    for warning in warnings if isinstance(warnings, list) else [warnings]:
        print(f"wanfit run: RunPod worker warning: {warning}", file=sys.stderr)
    return runpod.save_outputs(status, args.out)


def main(argv=None):
    args = parse_args(argv)
    printer = None
    try:
        workflow, spec = prepare(args)
        printer = ProgressPrinter(workflow)
        if args.runpod:
            paths = run_runpod(args, workflow, printer)
        else:
            paths = run_local(args, workflow, spec, printer)
    except KeyboardInterrupt:
        if printer:
            printer.close()
        print("wanfit run: interrupted; the prompt (or RunPod job) was cancelled and no file was saved under its "
              "final name.", file=sys.stderr)
        return 130
    except (RunInputError, InvalidInputError, RunPodError) as error:
        if printer:
            printer.close()
        print(f"wanfit run: {error}", file=sys.stderr)
        return 2
    except WanFitError as error:
        if printer:
            printer.close()
        print(f"wanfit run: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
