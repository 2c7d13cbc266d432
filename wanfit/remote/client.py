"""A small client for ComfyUI's HTTP API (/prompt, /history, /view, /free, /object_info).

Standard library only, so the CLI and the tests use it in any interpreter.
"""

import http.client
import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from ..errors import WanFitError
from .transfer import (TransferDeadline, TransferLimit, bounded_text, parse_json_object, read_body, safe_file_name,
                       stream_to_file)

MAX_JSON_BYTES = 256 * 1024**2  # /object_info of a big install is tens of MB; /history entries far less
MAX_DOWNLOAD_BYTES = 16 * 1024**3  # one /view file (a long 1080p video is hundreds of MB)
REQUEST_TOTAL_S = 600  # one JSON answer, however slowly it trickles in
ERROR_BODY_BYTES = 64 * 1024


class ComfyServerError(WanFitError):
    """The server could not be reached or answered with an HTTP error."""


class ComfyUnreachableError(ComfyServerError):
    """Nothing answered at the server URL (connection refused, unknown host, timeout)."""


class PromptRejectedError(WanFitError):
    """/prompt refused the workflow (validation failed); the text is the server's."""

    def __init__(self, response):
        self.response = response
        error = response.get("error", {}) if isinstance(response, dict) else {}
        error = error if isinstance(error, dict) else {"message": error}
        lines = [f"ComfyUI rejected the workflow: {bounded_text(error.get('message', response))}"]
        if error.get("details"):
            lines.append(f"  {bounded_text(error['details'])}")
        node_errors = response.get("node_errors") if isinstance(response, dict) else None
        for node_id, node_error in (node_errors if isinstance(node_errors, dict) else {}).items():
            items = node_error.get("errors") if isinstance(node_error, dict) else None
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    lines.append(f"  node {bounded_text(node_id, 40)} ({bounded_text(node_error.get('class_type'), 80)}): "
                                 f"{bounded_text(item.get('message'))}: {bounded_text(item.get('details'))}")
        super().__init__("\n".join(lines))


class PromptFailedError(WanFitError):
    """The prompt ran and raised; the text is the node's exception as the server reported it."""

    def __init__(self, prompt_id, history_entry):
        self.prompt_id = prompt_id
        self.history_entry = history_entry
        self.execution_error = {}
        status = history_entry.get("status") if isinstance(history_entry.get("status"), dict) else {}
        messages = status.get("messages") if isinstance(status.get("messages"), list) else []
        for message in messages:
            if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error" and \
                    isinstance(message[1], dict):
                self.execution_error = message[1]
        error = self.execution_error
        message = (f"prompt {prompt_id} failed in node {bounded_text(error.get('node_id'), 40)} "
                   f"({bounded_text(error.get('node_type'), 80)}): {bounded_text(error.get('exception_type'), 200)}: "
                   f"{bounded_text(str(error.get('exception_message') or '').strip(), 4000)}")
        super().__init__(message)


class ComfyClient:
    """`deadline` (a time.monotonic() value, or None) bounds every request and download, `request_timeout_s`
    each wait for data; answers are read within MAX_JSON_BYTES, /view files within MAX_DOWNLOAD_BYTES."""

    def __init__(self, server="http://127.0.0.1:8188", request_timeout_s=60, deadline=None,
                 max_download_bytes=MAX_DOWNLOAD_BYTES):
        self.server = server.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.deadline = deadline
        self.max_json_bytes = MAX_JSON_BYTES
        self.max_download_bytes = max_download_bytes
        self.client_id = uuid.uuid4().hex

    def _deadline(self):
        own = time.monotonic() + REQUEST_TOTAL_S
        return own if self.deadline is None else min(own, self.deadline)

    def _wait_s(self):
        """How long one connect or read may wait: the request timeout, or less when the deadline is near."""
        if self.deadline is None:
            return self.request_timeout_s
        return max(0.01, min(self.request_timeout_s, self.deadline - time.monotonic()))

    def _open(self, method, path, data=None, headers=None):
        """The open response; ComfyUnreachableError when nothing answers, ComfyServerError when the server
        accepted the connection but did not answer in time. HTTP errors come back as HTTPError."""
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers or {})
        wait_s = self._wait_s()
        try:
            return urllib.request.urlopen(request, timeout=wait_s)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise ComfyServerError(f"ComfyUI at {self.server} did not answer {method} {bounded_text(path, 200)} "
                                       f"within {wait_s:.3g} s. Fix: check that the server is not stuck, or pass "
                                       f"a larger --timeout.") from None
            raise ComfyUnreachableError(f"cannot reach ComfyUI at {self.server}{bounded_text(path, 200)}: {error}. "
                                        "Fix: start ComfyUI or pass the right --server URL.") from error

    def _request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        try:
            with self._open(method, path, data, {"Content-Type": "application/json"} if data else {}) as response:
                return response.status, read_body(response, self._wait_s(), self._deadline(), self.max_json_bytes)
        except urllib.error.HTTPError as error:
            return error.code, error.read(ERROR_BODY_BYTES)
        except TransferLimit as limit:
            raise ComfyServerError(f"ComfyUI's answer to {method} {bounded_text(path, 200)} was cut off: "
                                   f"{_limit_text(limit)}. Fix: check that --server {self.server} is a ComfyUI, "
                                   f"or pass a larger --timeout.") from None
        except (OSError, http.client.HTTPException) as error:
            raise ComfyServerError(f"ComfyUI's answer to {method} {bounded_text(path, 200)} broke off ({error}). Fix: "
                                   f"check the server's log and run the command again.") from None

    def get_json(self, path):
        """The parsed answer of GET path, which must be a JSON object."""
        status, payload = self._request("GET", path)
        if status != 200:
            raise ComfyServerError(f"GET {path} answered HTTP {status}: {payload[:500].decode(errors='replace')}")
        parsed, problem = parse_json_object(payload)
        if problem:
            raise ComfyServerError(f"ComfyUI answered GET {bounded_text(path, 200)} with {problem}. Fix: check that "
                                   f"--server {self.server} is a ComfyUI.")
        return parsed

    def post_json(self, path, body):
        status, payload = self._request("POST", path, body)
        text = payload.decode(errors="replace")
        try:
            parsed = json.loads(text) if text else {}
        except json.JSONDecodeError:
            parsed = {"error": {"message": text}}
        return status, parsed

    def queue_prompt(self, workflow):
        status, response = self.post_json("/prompt", {"prompt": workflow, "client_id": self.client_id})
        if status == 200 and isinstance(response, dict) and isinstance(response.get("prompt_id"), (str, int)) \
                and not isinstance(response.get("prompt_id"), bool):
            return str(response["prompt_id"])
        if status == 200:
            raise ComfyServerError(f"ComfyUI answered POST /prompt without a prompt_id: "
                                   f"{bounded_text(json.dumps(response), 300)}. Fix: check that --server {self.server} "
                                   f"is a ComfyUI.")
        raise PromptRejectedError(response)

    def history(self, prompt_id):
        """The prompt's /history entry (an object), or None while the server has none."""
        entry = self.get_json(f"/history/{urllib.parse.quote(str(prompt_id))}").get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise ComfyServerError(f"ComfyUI's /history/{prompt_id} holds {type(entry).__name__}, not an object. "
                                   f"Fix: check that --server {self.server} is a ComfyUI.")
        if entry is not None and not isinstance(entry.get("status", {}), dict):
            raise ComfyServerError(f"ComfyUI's /history/{prompt_id} has a \"status\" that is "
                                   f"{type(entry['status']).__name__}, not an object. Fix: check that --server "
                                   f"{self.server} is a ComfyUI.")
        if entry is not None and not isinstance(entry.get("outputs", {}), dict):
            raise ComfyServerError(f"ComfyUI's /history/{prompt_id} has \"outputs\" that are "
                                   f"{type(entry['outputs']).__name__}, not an object. Fix: check that --server "
                                   f"{self.server} is a ComfyUI.")
        return entry

    def wait_for(self, prompt_id, timeout_s=600, poll_s=0.25):
        """Block until the prompt finished; return its /history entry or raise PromptFailedError."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") == "error":
                    raise PromptFailedError(prompt_id, entry)
                return entry
            time.sleep(poll_s)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout_s} s")

    def run(self, workflow, timeout_s=600):
        return self.wait_for(self.queue_prompt(workflow), timeout_s)

    @staticmethod
    def output_files(history_entry, node_id=None):
        """Every file a node reported in its UI output (images, videos, latents...)."""
        files = []
        outputs = history_entry.get("outputs")
        for output_node, output in (outputs if isinstance(outputs, dict) else {}).items():
            if node_id is not None and str(output_node) != str(node_id):
                continue
            for value in (output if isinstance(output, dict) else {}).values():
                if isinstance(value, list):
                    files += [item for item in value if is_file_ref(item)]
        return files

    def download(self, file_ref, destination_dir, filename=None):
        """Stream a file from /view into destination_dir (as `filename`, default the server's name, reduced
        to one plain name inside the folder), within the size cap, the read timeout and the deadline;
        a failed or cut-off transfer leaves nothing under the final name."""
        if not is_file_ref(file_ref):
            raise ComfyServerError(f"ComfyUI listed an output that is not a file reference: "
                                   f"{bounded_text(json.dumps(file_ref, default=str), 200)}. Fix: check that --server "
                                   f"{self.server} is a ComfyUI.")
        server_name = file_ref["filename"]
        query = urllib.parse.urlencode({"filename": server_name, "subfolder": str(file_ref.get("subfolder") or ""),
                                        "type": str(file_ref.get("type") or "output")})
        destination = Path(destination_dir) / safe_file_name(filename or server_name, "comfyui_output")
        shown = bounded_text(server_name, 120)
        try:
            with self._open("GET", f"/view?{query}") as response:
                return stream_to_file(response, destination, self._wait_s(), self.deadline, self.max_download_bytes)
        except urllib.error.HTTPError as error:
            raise ComfyServerError(f"/view of {shown} answered HTTP {error.code}. Fix: check the server's "
                                   f"output folder and log.") from None
        except TransferLimit as limit:
            raise ComfyServerError(f"download of {shown} from {self.server}/view stopped: {_limit_text(limit)}. "
                                   f"Nothing was saved as {destination}. Fix: check the server, or pass a larger "
                                   f"--timeout.") from None
        except (OSError, http.client.HTTPException) as error:
            raise ComfyServerError(f"download of {shown} from {self.server}/view broke off ({error}). Nothing "
                                   f"was saved as {destination}. Fix: run the command again.") from None

    def upload_image(self, path, subfolder="", overwrite=True, image_type="input"):
        """POST a local image to /upload/image (multipart, as the front end does); return the value a
        LoadImage node takes ("name" or "subfolder/name")."""
        path = Path(path)
        fields = {"type": image_type, "overwrite": "true" if overwrite else "false", "subfolder": subfolder}
        body, content_type = encode_multipart(fields, {"image": (path.name, path.read_bytes())})
        request = urllib.request.Request(self.server + "/upload/image", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self._wait_s()) as response:
                payload = read_body(response, self._wait_s(), self._deadline(), self.max_json_bytes)
        except urllib.error.HTTPError as error:
            raise ComfyServerError(f"/upload/image refused {path.name}: HTTP {error.code} "
                                   f"{error.read(300).decode(errors='replace')}") from error
        except TransferLimit as limit:
            raise ComfyServerError(f"ComfyUI's answer to the upload of {path.name} was cut off: "
                                   f"{_limit_text(limit)}. Fix: pass a larger --timeout.") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ComfyUnreachableError(f"cannot reach ComfyUI at {self.server}/upload/image: {error}. "
                                        "Fix: start ComfyUI or pass the right --server URL.") from error
        try:
            uploaded = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            uploaded = None
        if not isinstance(uploaded, dict) or not isinstance(uploaded.get("name"), str) or \
                not isinstance(uploaded.get("subfolder") or "", str):
            raise ComfyServerError(f"ComfyUI answered the upload of {path.name} with "
                                   f"{payload[:200].decode(errors='replace')!r}, expected "
                                   f'{{"name": ..., "subfolder": ...}}. Fix: check that --server {self.server} '
                                   f"is a ComfyUI.")
        return f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded.get("subfolder") else uploaded["name"]

    def websocket_url(self):
        """/ws for this client's id: the server sends progress for our prompts only to this socket."""
        base = "ws" + self.server[len("http"):] if self.server.startswith("http") else self.server
        return f"{base}/ws?{urllib.parse.urlencode({'clientId': self.client_id})}"

    def interrupt(self, prompt_id):
        """Best effort: drop the prompt from the queue and stop it if it is the one running."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self.post_json(path, body)
            except ComfyServerError:
                pass

    def free(self, unload_models=True, free_memory=True):
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def object_info(self):
        return self.get_json("/object_info")


def encode_multipart(fields, files):
    """A multipart/form-data body (stdlib has no encoder): fields {name: str}, files {name: (filename, bytes)}."""
    boundary = "wanfit" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, payload) in files.items():
        filename = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n".encode() + payload + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def is_file_ref(item):
    """A /history output entry that names a file: {"filename": str, "subfolder"?: str, "type"?: str}."""
    return isinstance(item, dict) and isinstance(item.get("filename"), str) and \
        all(isinstance(item.get(key) or "", str) for key in ("subfolder", "type"))


def _limit_text(limit):
    if isinstance(limit, TransferDeadline):
        return "the time limit (--timeout) ran out"
    return str(limit)
