"""A small client for ComfyUI's HTTP API (/prompt, /history, /view, /free, /object_info).

Standard library only, so the CLI and the tests use it in any interpreter.
"""

import json
import mimetypes
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import WanFitError


class ComfyServerError(WanFitError):
    """The server could not be reached or answered with an HTTP error."""


class ComfyUnreachableError(ComfyServerError):
    """Nothing answered at the server URL (connection refused, unknown host, timeout)."""


class PromptRejectedError(WanFitError):
    """/prompt refused the workflow (validation failed); the text is the server's."""

    def __init__(self, response):
        self.response = response
        error = response.get("error", {}) if isinstance(response, dict) else {}
        lines = [f"ComfyUI rejected the workflow: {error.get('message', response)}"]
        if error.get("details"):
            lines.append(f"  {error['details']}")
        for node_id, node_error in (response.get("node_errors") or {}).items():
            for item in node_error.get("errors", []):
                lines.append(f"  node {node_id} ({node_error.get('class_type')}): {item.get('message')}: "
                             f"{item.get('details')}")
        super().__init__("\n".join(lines))


class PromptFailedError(WanFitError):
    """The prompt ran and raised; the text is the node's exception as the server reported it."""

    def __init__(self, prompt_id, history_entry):
        self.prompt_id = prompt_id
        self.history_entry = history_entry
        self.execution_error = {}
        for kind, data in history_entry.get("status", {}).get("messages", []):
            if kind == "execution_error":
                self.execution_error = data
        message = (f"prompt {prompt_id} failed in node {self.execution_error.get('node_id')} "
                   f"({self.execution_error.get('node_type')}): {self.execution_error.get('exception_type')}: "
                   f"{self.execution_error.get('exception_message', '').strip()}")
        super().__init__(message)


class ComfyClient:
    def __init__(self, server="http://127.0.0.1:8188", request_timeout_s=60):
        self.server = server.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.client_id = uuid.uuid4().hex

    def _request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ComfyUnreachableError(f"cannot reach ComfyUI at {self.server}{path}: {error}. "
                                        "Fix: start ComfyUI or pass the right --server URL.") from error

    def get_json(self, path):
        status, payload = self._request("GET", path)
        if status != 200:
            raise ComfyServerError(f"GET {path} answered HTTP {status}: {payload[:500].decode(errors='replace')}")
        return json.loads(payload)

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
        if status != 200 or "prompt_id" not in response:
            raise PromptRejectedError(response)
        return response["prompt_id"]

    def history(self, prompt_id):
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

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
        for output_node, output in history_entry.get("outputs", {}).items():
            if node_id is not None and str(output_node) != str(node_id):
                continue
            for value in output.values():
                if isinstance(value, list):
                    files += [item for item in value if isinstance(item, dict) and "filename" in item]
        return files

    def download(self, file_ref, destination_dir, filename=None):
        """Fetch a file from /view into destination_dir (as `filename`, default the server's name),
        never leaving a half-written file under the final name."""
        query = urllib.parse.urlencode({"filename": file_ref["filename"], "subfolder": file_ref.get("subfolder", ""),
                                        "type": file_ref.get("type", "output")})
        status, payload = self._request("GET", f"/view?{query}")
        if status != 200:
            raise ComfyServerError(f"/view of {file_ref['filename']} answered HTTP {status}")
        destination = Path(destination_dir) / (filename or Path(file_ref["filename"]).name)
        return write_atomically(destination, payload)

    def upload_image(self, path, subfolder="", overwrite=True, image_type="input"):
        """POST a local image to /upload/image (multipart, as the front end does); return the value a
        LoadImage node takes ("name" or "subfolder/name")."""
        path = Path(path)
        fields = {"type": image_type, "overwrite": "true" if overwrite else "false", "subfolder": subfolder}
        body, content_type = encode_multipart(fields, {"image": (path.name, path.read_bytes())})
        request = urllib.request.Request(self.server + "/upload/image", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                uploaded = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ComfyServerError(f"/upload/image refused {path.name}: HTTP {error.code} "
                                   f"{error.read()[:300].decode(errors='replace')}") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ComfyUnreachableError(f"cannot reach ComfyUI at {self.server}/upload/image: {error}. "
                                        "Fix: start ComfyUI or pass the right --server URL.") from error
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


def write_atomically(destination, payload):
    """Write bytes as <name>.partial, then rename: an interrupted write never leaves a file under the
    final name, and the partial file is removed on any failure (Ctrl-C included)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    try:
        partial.write_bytes(payload)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return destination


def unused_path(directory, filename):
    """directory/filename, or name_1.ext, name_2.ext... so a rerun never overwrites an earlier video
    (a restarted server or a fresh RunPod worker numbers its outputs from 00001 again)."""
    candidate = Path(directory) / filename
    stem, suffix, counter = candidate.stem, candidate.suffix, 1
    while candidate.exists():
        candidate = candidate.with_name(f"{stem}_{counter}{suffix}")
        counter += 1
    return candidate
