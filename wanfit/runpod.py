"""Send a filled API workflow to a RunPod serverless endpoint running worker-comfyui, and save what it returns.

The contract relied on (runpod-workers/worker-comfyui README.md, "API Specification", and its
handler.py, both as of release 5.x, read March 2026):
- POST {base}/{endpoint_id}/run with header `Authorization: Bearer <RUNPOD_API_KEY>` and body
  {"input": {"workflow": <API-format workflow>, "images": [{"name": "x.png", "image": "<base64,
  data-URI prefix optional>"}]}}; each image is uploaded to ComfyUI's input folder under its name,
  so a LoadImage node refers to it by that name. RunPod answers {"id": <job id>, "status": "IN_QUEUE"}.
- GET {base}/{endpoint_id}/status/{job_id} -> {"status": IN_QUEUE | IN_PROGRESS | COMPLETED | FAILED |
  CANCELLED | TIMED_OUT, "output": ..., "error": ...}.
- COMPLETED output (worker-comfyui >= 5.0.0): {"images": [{"filename", "type": "base64" | "s3_url",
  "data"}], "errors": [warnings]}. The worker returns every non-temp file a node lists under
  "images" in /history, which is where SaveVideo reports its mp4 (with animated: [true]).
  Before 5.0.0: {"status": "success", "message": <base64 string or S3 URL>} (one file, no name).
- A failed job: the handler returns {"error": text, "details": [...]}; RunPod's SDK turns that into
  status FAILED with a top-level "error" (and keeps "details" under "output"). A handler exception
  gives an "error" that is a JSON string {"error_type", "error_message", "error_traceback"}.
"""

import base64
import binascii
import json
import mimetypes
import os
from pathlib import Path
import time
import urllib.error
import urllib.parse
import urllib.request

from .client import unused_path, write_atomically
from .errors import WanFitError

DEFAULT_API_BASE = "https://api.runpod.ai/v2"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
POLL_S = 2.0  # RunPod rate-limits /status; a video job takes minutes anyway
# leading bytes -> extension, for the pre-5.0 output that carries no file name
MAGIC_EXTENSIONS = ((b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"\x1aE\xdf\xa3", ".webm"), (b"\xff\xd8\xff", ".jpg"))


class RunPodError(WanFitError):
    """RunPod could not be used as asked (no API key, endpoint unknown, unreachable); fix the command."""


class RunPodJobError(WanFitError):
    """The job was sent but did not give us its files (server error, timeout, unusable output)."""


class RunPodJobFailed(RunPodJobError):
    """The job ran and ended FAILED / CANCELLED / TIMED_OUT; the text is the worker's."""

    def __init__(self, job_id, status):
        self.job_id = job_id
        self.status = status
        super().__init__(f"RunPod job {job_id} ended {status.get('status')}: {job_error_text(status)}")


def api_key_from_env():
    key = os.environ.get("RUNPOD_API_KEY", "").strip()
    if not key:
        raise RunPodError("RUNPOD_API_KEY is not set: --runpod needs a RunPod API key. Fix: create one under "
                          "RunPod > Settings > API Keys and run `export RUNPOD_API_KEY=...` before this command.")
    return key


def job_error_text(status):
    """The most useful error text a finished job carries (the node's exception, when the worker passed it on)."""
    error = status.get("error")
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            error = parsed
    if isinstance(error, dict):
        error = f"{error.get('error_type', '')}: {error.get('error_message', error)}".strip(": ")
    output = status.get("output") if isinstance(status.get("output"), dict) else {}
    details = output.get("details") or output.get("errors") or []
    if isinstance(details, str):
        details = [details]
    lines = [str(error or f"no error text (status {status.get('status')})")]
    lines += [f"  {detail}" for detail in details]
    return "\n".join(lines)


def encode_image(path):
    """A local image as the data URI worker-comfyui accepts in input.images[].image."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def job_input(workflow, images=()):
    """The /run body: images are (name the workflow uses, local path)."""
    body = {"input": {"workflow": workflow}}
    if images:
        body["input"]["images"] = [{"name": name, "image": encode_image(path)} for name, path in images]
    return body


def output_files(status):
    """[(filename, kind "base64" | "s3_url", data)] from a COMPLETED status, either output shape."""
    output = status.get("output")
    if isinstance(output, dict) and isinstance(output.get("images"), list):
        return [(item.get("filename") or f"{status.get('id', 'runpod')}_{index}", item.get("type", "base64"),
                 item.get("data", "")) for index, item in enumerate(output["images"]) if isinstance(item, dict)]
    if isinstance(output, dict) and isinstance(output.get("message"), str):  # worker-comfyui < 5.0.0
        message = output["message"]
        kind = "s3_url" if message.startswith(("http://", "https://")) else "base64"
        return [(None, kind, message)]
    return []


def decode_base64(data):
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RunPodJobError(f"RunPod returned output data that is not valid base64 ({error}).") from error


class RunPodClient:
    def __init__(self, endpoint_id, api_key=None, api_base=None, request_timeout_s=60):
        if not endpoint_id or "/" in endpoint_id:
            raise RunPodError(f"--runpod {endpoint_id!r} is not an endpoint id. Fix: pass the id shown on the "
                              "endpoint's Overview page in the RunPod console (e.g. --runpod abc123xyz).")
        self.endpoint_id = endpoint_id
        self.api_key = api_key or api_key_from_env()
        self.api_base = (api_base or os.environ.get("RUNPOD_API_BASE") or DEFAULT_API_BASE).rstrip("/")
        self.request_timeout_s = request_timeout_s

    def _request(self, method, path, body=None):
        url = f"{self.api_base}/{self.endpoint_id}{path}"
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            text = error.read()[:500].decode(errors="replace")
            if error.code in (401, 403):
                raise RunPodError(f"RunPod refused the API key (HTTP {error.code}) for {url}: {text}. Fix: check "
                                  "RUNPOD_API_KEY (a key with access to this endpoint).") from error
            if error.code == 404:
                raise RunPodError(f"RunPod has no endpoint {self.endpoint_id!r} (HTTP 404 from {url}): {text}. "
                                  "Fix: check the --runpod endpoint id.") from error
            raise RunPodJobError(f"RunPod answered HTTP {error.code} to {method} {url}: {text}") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise RunPodError(f"cannot reach RunPod at {url}: {getattr(error, 'reason', error)}. Fix: check the "
                              "network, or RUNPOD_API_BASE if you set it.") from error
        try:
            return json.loads(payload)
        except json.JSONDecodeError as error:
            raise RunPodJobError(f"RunPod answered {method} {url} with something that is not JSON: "
                              f"{payload[:200].decode(errors='replace')}") from error

    def submit(self, workflow, images=()):
        """Queue the job with POST /run; its id."""
        response = self._request("POST", "/run", job_input(workflow, images))
        if not response.get("id"):
            raise RunPodJobError(f"RunPod /run answered without a job id: {response}")
        return response["id"]

    def status(self, job_id):
        return self._request("GET", f"/status/{urllib.parse.quote(job_id)}")

    def cancel(self, job_id):
        """Best effort (Ctrl-C): a cancelled job stops billing."""
        try:
            self._request("POST", f"/cancel/{urllib.parse.quote(job_id)}")
        except RunPodError:
            pass

    def wait(self, job_id, timeout_s, poll_s=None, on_event=None):
        """Poll /status until the job is final; the COMPLETED status, else RunPodJobFailed."""
        poll_s = POLL_S if poll_s is None else poll_s
        deadline = time.monotonic() + timeout_s
        last_state = None
        while True:
            status = self.status(job_id)
            state = status.get("status")
            if on_event:
                on_event("runpod", {"job_id": job_id, "status": state, "changed": state != last_state})
            last_state = state
            if state == "COMPLETED":
                return status
            if state in FINAL_STATES:
                raise RunPodJobFailed(job_id, status)
            if time.monotonic() >= deadline:
                raise RunPodJobError(f"RunPod job {job_id} is still {state} after {timeout_s:g} s (it keeps running "
                                  "and billing). Fix: pass a larger --timeout, or cancel it in the RunPod console.")
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def save_outputs(self, status, out_dir):
        """Write every output file of a COMPLETED status into out_dir atomically; their paths."""
        files = output_files(status)
        if not files:
            raise RunPodJobError(f"RunPod job {status.get('id')} completed without output files "
                              f"(output: {json.dumps(status.get('output'))[:300]}). Fix: check that the workflow "
                              "ends in SaveVideo / SaveImage.")
        paths = []
        for filename, kind, data in files:
            payload = self._fetch(data) if kind == "s3_url" else decode_base64(data)
            if filename is None:
                extension = next((ext for magic, ext in MAGIC_EXTENSIONS if payload.startswith(magic)),
                                 ".mp4" if payload[4:8] == b"ftyp" else ".bin")
                filename = f"runpod_{status.get('id', 'job')}{extension}"
            paths.append(write_atomically(unused_path(out_dir, Path(filename).name), payload))
        return paths

    def _fetch(self, url):
        """An s3_url output: a presigned URL, fetched without the RunPod key."""
        try:
            with urllib.request.urlopen(url, timeout=self.request_timeout_s) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise RunPodJobError(f"cannot download the job's output from {url}: {error}") from error
