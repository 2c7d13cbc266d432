"""Follow a queued prompt: ComfyUI's /ws messages (or /history polling) -> a progress line on stderr.

The websocket is opened before the prompt is queued, with the same client id as the /prompt body,
so no early message ("execution_start", cached nodes) is missed. aiohttp (a ComfyUI dependency) is
imported lazily; without it, or when the socket cannot be opened (a proxy without websockets),
we poll /history instead. Whatever the socket says, the final result always comes from /history,
which is what holds the outputs and the node's exception text.
"""

import asyncio
import json
import math
import sys
import time

from .client import ComfyServerError
from .transfer import bounded_text

FINAL_EVENTS = {"execution_success", "execution_error", "execution_interrupted"}
IDLE_CHECK_S = 2.0
POLL_S = 1.0
QUIET_REPEAT_S = 30.0  # in a log, "still waiting" at most this often
MAX_PROGRESS_STEPS = 10**9  # a /ws "max" above this is clamped (no sampler has a billion steps)
MAX_WS_MESSAGE_BYTES = 64 * 1024**2  # a bigger /ws message ends the socket; we poll /history instead


class RunTimeoutError(ComfyServerError):
    """The prompt did not finish within --timeout."""


class WebSocketUnavailable(Exception):
    """No websocket (aiohttp missing, or /ws refused): fall back to polling /history."""


class ProgressPrinter:
    """ComfyUI events as one updating stderr line on a terminal, plain lines in logs and CI."""

    def __init__(self, workflow=None, stream=None, tty=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.node_names = {str(node_id): (node.get("_meta") or {}).get("title") or node.get("class_type", "?")
                           for node_id, node in (workflow or {}).items()}
        self.started = time.monotonic()
        self.open_line_length = 0  # chars of an unfinished \r line on the terminal
        self.printed_progress = {}  # node -> last tenth printed (plain mode)
        self.last_repeat_at = None  # when plain mode last printed an unchanged waiting/queued line

    def node_name(self, node_id, class_type=None):
        name = self.node_names.get(str(node_id)) or class_type or "?"
        return f"node {bounded_text(node_id, 40)} ({bounded_text(name, 80)})"

    def __call__(self, kind, data):
        line, keep = self._describe(kind, data or {})
        if line is None:
            return
        if not self.tty and not keep and kind in ("waiting", "runpod"):
            now = time.monotonic()
            if self.last_repeat_at is not None and now - self.last_repeat_at < QUIET_REPEAT_S:
                return
            self.last_repeat_at = now
        self._emit(line, keep)

    def _describe(self, kind, data):
        """(text, keep) for an event; keep=False lines are overwritten on a terminal."""
        if kind == "queued":
            return f"queued as prompt {data.get('prompt_id')}", True
        if kind == "polling":
            return f"following progress by polling /history ({data.get('reason')})", True
        if kind == "waiting":
            return f"waiting for prompt {data.get('prompt_id')}", False
        if kind == "execution_start":
            return "started", True
        if kind == "execution_cached":
            nodes = data.get("nodes") or []
            if not isinstance(nodes, list):
                return None, False
            return (f"{len(nodes)} node(s) cached from an earlier run", True) if nodes else (None, False)
        if kind == "executing":
            return (self.node_name(data["node"]), False) if data.get("node") is not None else (None, False)
        if kind == "progress":
            value, maximum = _step_count(data.get("value", 0)), _step_count(data.get("max", 1))
            if value is None or maximum is None:
                return None, False
            maximum = min(max(1, maximum), MAX_PROGRESS_STEPS)  # the server's numbers, clamped
            value = min(max(0, value), maximum)
            node = data.get("node")
            if not self.tty:  # a log gets a line per tenth, not one per step
                tenth = value * 10 // maximum
                if self.printed_progress.get(node) == tenth:
                    return None, False
                self.printed_progress[node] = tenth
            filled = value * 20 // maximum
            return f"{self.node_name(node)} [{'#' * filled}{'.' * (20 - filled)}] {value}/{maximum}", False
        if kind == "execution_success":
            return "finished", True
        if kind == "execution_interrupted":
            return "interrupted on the server", True
        if kind == "execution_error":
            return (f"{self.node_name(data.get('node_id'), data.get('node_type'))} failed: "
                    f"{bounded_text(data.get('exception_type'), 200)}", True)
        if kind == "runpod":
            return (f"RunPod job {bounded_text(data.get('job_id'), 80)}: {bounded_text(data.get('status'), 40)}",
                    data.get("changed", True))
        if kind == "malformed":
            return f"ignoring malformed /ws messages ({data.get('reason')}); the result comes from /history", True
        return None, False

    def _emit(self, line, keep):
        text = f"[{time.monotonic() - self.started:6.1f}s] {line}"
        if self.tty:
            padding = " " * max(0, self.open_line_length - len(text))
            self.stream.write("\r" + text + padding + ("\n" if keep else ""))
            self.open_line_length = 0 if keep else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and self.open_line_length:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line_length = 0


def _step_count(value):
    """A /ws progress number as an int, or None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(max(-1, min(value, MAX_PROGRESS_STEPS + 1)))


class PromptRun:
    """Queue one workflow and follow it to the end. `prompt_id` is set as soon as it is queued,
    so a Ctrl-C handler can take it off the server."""

    def __init__(self, client, workflow, on_event=None):
        self.client = client
        self.workflow = workflow
        self.on_event = on_event or (lambda kind, data: None)
        self.prompt_id = None
        self.reported_malformed = False

    def run(self, timeout_s):
        """The prompt's /history entry; PromptRejectedError / PromptFailedError carry the server's text."""
        deadline = time.monotonic() + timeout_s
        try:
            asyncio.run(self._follow_websocket(deadline))
        except WebSocketUnavailable as reason:
            if self.prompt_id is None:
                self.on_event("polling", {"reason": str(reason)})
        if self.prompt_id is None:
            self._queue()
        return self._wait_for_history(deadline, timeout_s)

    def _queue(self):
        self.prompt_id = self.client.queue_prompt(self.workflow)
        self.on_event("queued", {"prompt_id": self.prompt_id})

    def _finished(self):
        entry = self.client.history(self.prompt_id)
        return bool(entry and entry.get("status", {}).get("completed") is not None)

    def _wait_for_history(self, deadline, timeout_s):
        while time.monotonic() < deadline:
            if self._finished():
                return self.client.wait_for(self.prompt_id, timeout_s=30)
            self.on_event("waiting", {"prompt_id": self.prompt_id})
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        raise RunTimeoutError(f"prompt {self.prompt_id} did not finish within {timeout_s:g} s; it may still be "
                              f"running on the server ({self.client.server}). Fix: pass a larger --timeout.")

    async def _follow_websocket(self, deadline):
        """Read /ws until our prompt ends; the socket going away mid-run just means: poll the rest."""
        try:
            import aiohttp
        except ImportError as error:
            raise WebSocketUnavailable("aiohttp is not installed") from error
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                socket = await session.ws_connect(self.client.websocket_url(), heartbeat=30,
                                                  max_msg_size=MAX_WS_MESSAGE_BYTES)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                raise WebSocketUnavailable(f"no websocket at {self.client.server}/ws: {error}") from error
            async with socket:
                self._queue()
                while time.monotonic() < deadline:
                    wait_s = min(IDLE_CHECK_S, max(0.01, deadline - time.monotonic()))
                    try:
                        message = await socket.receive(timeout=wait_s)
                    except asyncio.TimeoutError:
                        if self._finished():  # the end was sent before we listened, or got lost
                            return
                        continue
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        return
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue  # binary preview images
                    if self._handle(message.data):
                        return

    def _handle(self, text):
        """Pass one /ws message on; True when it ends our prompt."""
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return self._malformed("not JSON")
        if not isinstance(message, dict):
            return self._malformed(f"a {type(message).__name__} where an object belongs")
        kind, data = message.get("type"), message.get("data")
        data = {} if data is None else data
        if not isinstance(data, dict):
            return self._malformed(f"\"data\" is a {type(data).__name__}, not an object")
        if data.get("prompt_id", self.prompt_id) != self.prompt_id:
            return False
        self.on_event(kind, data)
        if kind in FINAL_EVENTS:
            return True
        return kind == "executing" and data.get("node") is None and data.get("prompt_id") == self.prompt_id

    def _malformed(self, reason):
        """Progress is advisory: a bad /ws message is reported once and skipped, never fatal."""
        if not self.reported_malformed:
            self.reported_malformed = True
            self.on_event("malformed", {"reason": reason})
        return False
