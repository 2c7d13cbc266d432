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
import http.client
import json
import mimetypes
import os
from pathlib import Path
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import WanFitError
from .transfer import (RedirectRefused, TransferLimit, fetchable_opener, fetchable_url_problem, parse_json_object,
                       read_body, safe_file_name, same_origin_opener, stream_to_file, unused_path, write_atomically)

DEFAULT_API_BASE = "https://api.runpod.ai/v2"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
POLL_S = 2.0  # RunPod rate-limits /status; a video job takes minutes anyway
MAX_RESPONSE_BYTES = 512 * 1024**2  # a /status answer carries base64 videos, but never this much
MAX_OUTPUT_BYTES = 16 * 1024**3  # one s3_url output file
REQUEST_TOTAL_S = 600  # one API answer, however slowly it trickles in
OUTPUT_TYPES = ("base64", "s3_url")
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
    if not isinstance(details, list):
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


def _unusable_output(status, field, what):
    return RunPodJobError(f"RunPod job {status.get('id')} returned an unusable output: {field} {what}. Nothing "
                          f"was saved. Fix: check the worker's logs in the RunPod console and that the endpoint "
                          f"runs worker-comfyui (its output is {{\"images\": [{{\"filename\", \"type\": "
                          f"\"base64\" | \"s3_url\", \"data\"}}]}}).")


def output_files(status):
    """[(filename, kind "base64" | "s3_url", data)] from a COMPLETED status, either output shape. A file
    entry of the wrong shape is refused with a message naming the field."""
    output = status.get("output")
    if isinstance(output, dict) and isinstance(output.get("images"), list):
        files = []
        for index, item in enumerate(output["images"]):
            field = f"output.images[{index}]"
            if not isinstance(item, dict):
                raise _unusable_output(status, field, f"is {type(item).__name__}, expected an object")
            filename, kind, data = item.get("filename"), item.get("type", "base64"), item.get("data")
            if filename is not None and not isinstance(filename, str):
                raise _unusable_output(status, f"{field}.filename", f"is {type(filename).__name__}, expected a "
                                                                    f"file name")
            if kind not in OUTPUT_TYPES:
                raise _unusable_output(status, f"{field}.type", f"is {json.dumps(kind)[:60]}, expected "
                                                                f"\"base64\" or \"s3_url\"")
            if not isinstance(data, str):
                raise _unusable_output(status, f"{field}.data", f"is {json.dumps(data)[:60]}, expected a "
                                                                f"{'base64 string' if kind == 'base64' else 'URL'}")
            files.append((filename or f"{status.get('id', 'runpod')}_{index}", kind, data))
        return files
    if isinstance(output, dict) and isinstance(output.get("message"), str):  # worker-comfyui < 5.0.0
        message = output["message"]
        kind = "s3_url" if message.startswith(("http://", "https://")) else "base64"
        return [(None, kind, message)]
    return []


def decode_base64(data):
    if not isinstance(data, str):
        raise RunPodJobError(f"RunPod returned output data that is {type(data).__name__}, not a base64 string. "
                             f"Fix: check the worker's logs in the RunPod console.")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RunPodJobError(f"RunPod returned output data that is not valid base64 ({error}).") from error


def _plain_id(value):
    """A server-given job id as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(value))[:64].strip(".") or "job"


class RunPodClient:
    def __init__(self, endpoint_id, api_key=None, api_base=None, request_timeout_s=60,
                 max_output_bytes=MAX_OUTPUT_BYTES):
        if not endpoint_id or not re.fullmatch(r"[A-Za-z0-9_-]+", endpoint_id):
            raise RunPodError(f"--runpod {endpoint_id!r} is not an endpoint id. Fix: pass the id shown on the "
                              "endpoint's Overview page in the RunPod console (e.g. --runpod abc123xyz).")
        self.endpoint_id = endpoint_id
        self.api_key = api_key or api_key_from_env()
        self.api_base = (api_base or os.environ.get("RUNPOD_API_BASE") or DEFAULT_API_BASE).rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.deadline = None  # time.monotonic() by which the output downloads must be done (--timeout), or None
        self.max_response_bytes = MAX_RESPONSE_BYTES
        self.max_output_bytes = max_output_bytes

    def _deadline(self):
        """One API answer gets REQUEST_TOTAL_S of its own (the job's --timeout is checked between polls: a
        last /status after it is how wait() says which state the job was left in)."""
        return time.monotonic() + REQUEST_TOTAL_S

    def _request(self, method, path, body=None):
        url = f"{self.api_base}/{self.endpoint_id}{path}"
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            # The key goes to the endpoint's own origin only: a redirect elsewhere is refused, not followed.
            with same_origin_opener(url).open(request, timeout=self.request_timeout_s) as response:
                payload = read_body(response, self.request_timeout_s, self._deadline(), self.max_response_bytes)
        except RedirectRefused as error:
            raise RunPodJobError(f"RunPod answered {method} {url} with a redirect that WanFit refused: {error.reason}."
                                 f" Fix: check RUNPOD_API_BASE (unset, it is {DEFAULT_API_BASE}).") from None
        except TransferLimit as limit:
            raise RunPodJobError(f"RunPod's answer to {method} {url} was cut off: {limit}. Fix: check the network "
                                 f"and RUNPOD_API_BASE, or pass a larger --timeout.") from None
        except urllib.error.HTTPError as error:
            text = error.read(500).decode(errors="replace")
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
        except (OSError, http.client.HTTPException) as error:
            raise RunPodJobError(f"RunPod's answer to {method} {url} broke off ({error}). Fix: run the command "
                                 f"again.") from None
        parsed, problem = parse_json_object(payload)
        if problem:
            raise RunPodJobError(f"RunPod answered {method} {url} with {problem}. Fix: check RUNPOD_API_BASE and "
                                 f"the endpoint id.")
        return parsed

    def submit(self, workflow, images=()):
        """Queue the job with POST /run; its id."""
        response = self._request("POST", "/run", job_input(workflow, images))
        if not response.get("id") or not isinstance(response["id"], str):
            raise RunPodJobError(f"RunPod /run answered without a job id: {json.dumps(response)[:300]}")
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
        for filename, kind, data in files:  # refuse a bad URL before anything is written
            problem = fetchable_url_problem(data) if kind == "s3_url" else None
            if problem:
                raise RunPodJobError(f"RunPod job {status.get('id')} names its output {filename or ''} at "
                                     f"{data[:200]!r}, which WanFit does not fetch: {problem}. Nothing was saved. "
                                     f"Fix: configure the worker's S3 upload with an https bucket URL, or "
                                     f"unset it to get base64 outputs.")
        job = _plain_id(status.get("id", "job"))
        out_dir = Path(out_dir)
        paths = []
        for index, (filename, kind, data) in enumerate(files):
            fallback = f"runpod_{job}_{index}" if len(files) > 1 else f"runpod_{job}"
            if kind == "s3_url":
                downloaded = self._fetch(data, out_dir)
                try:
                    with open(downloaded, "rb") as handle:
                        head = handle.read(16)
                    name = self._output_name(filename, head, fallback)
                    paths.append(_rename_unused(downloaded, out_dir, name))
                finally:
                    downloaded.unlink(missing_ok=True)
            else:
                payload = decode_base64(data)
                paths.append(write_atomically(unused_path(out_dir, self._output_name(filename, payload, fallback)),
                                              payload))
        return paths

    @staticmethod
    def _output_name(filename, head, fallback):
        """A plain file name inside --out: the worker's name without any folder part, else `fallback` plus an
        extension sniffed from the first bytes (the pre-5.0 output carries no name)."""
        if filename is not None:
            name = safe_file_name(filename, None)
            if name:
                return name
        extension = next((ext for magic, ext in MAGIC_EXTENSIONS if head.startswith(magic)),
                         ".mp4" if head[4:8] == b"ftyp" else ".bin")
        return fallback + extension

    def _fetch(self, url, out_dir):
        """An s3_url output (a presigned URL, fetched without the RunPod key) streamed into a temporary file
        in out_dir, within the size cap and the time limits; its path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".runpod-", suffix=".download", dir=out_dir)
        os.close(handle)
        temporary = Path(temporary)
        try:
            with fetchable_opener().open(url, timeout=self.request_timeout_s) as response:
                stream_to_file(response, temporary, self.request_timeout_s, self.deadline, self.max_output_bytes)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, (TransferLimit, urllib.error.URLError, OSError, http.client.HTTPException)):
                reason = getattr(error, "reason", error)
                raise RunPodJobError(f"cannot download the job's output from {url}: {reason}. Nothing was saved "
                                     f"under its name. Fix: run the command again, or pass a larger --timeout."
                                     ) from None
            raise
        return temporary


def _rename_unused(source, out_dir, name):
    destination = unused_path(out_dir, name)
    os.replace(source, destination)
    return destination
