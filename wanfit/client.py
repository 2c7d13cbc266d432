"""A small client for ComfyUI's HTTP API (/prompt, /history, /view, /free, /object_info).

Standard library only, so the CLI and the tests use it in any interpreter.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import WanFitError


class ComfyServerError(WanFitError):
    """The server could not be reached or answered with an HTTP error."""


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
            raise ComfyServerError(f"cannot reach ComfyUI at {self.server}{path}: {error}. "
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

    def download(self, file_ref, destination_dir):
        query = urllib.parse.urlencode({"filename": file_ref["filename"], "subfolder": file_ref.get("subfolder", ""),
                                        "type": file_ref.get("type", "output")})
        status, payload = self._request("GET", f"/view?{query}")
        if status != 200:
            raise ComfyServerError(f"/view of {file_ref['filename']} answered HTTP {status}")
        destination = Path(destination_dir) / Path(file_ref["filename"]).name
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        partial.write_bytes(payload)
        partial.replace(destination)
        return destination

    def free(self, unload_models=True, free_memory=True):
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def object_info(self):
        return self.get_json("/object_info")
