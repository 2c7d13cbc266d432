"""One misbehaving HTTP server for the tests: a real server on 127.0.0.1 in a thread, whose routes are
functions, so each test states the fault it needs (a page instead of a file, a dropped connection, a
stall, a trickle, a lying header, a redirect) and the code under test meets it over a real socket.

    def answer(exchange):
        exchange.reply(200, b"<html>log in</html>", content_type="text/html")

    with MisbehavingServer({"/model.safetensors": answer}, timeout_s=5) as server:
        download_file(server.url("/model.safetensors"), dest)

Every server has its own `timeout_s`: a connection the client leaves open, or a handler that waits,
ends after it, so no test hangs on its server.
"""

import base64
import contextlib
from dataclasses import dataclass, field
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import socket
import struct
import threading
import time
import urllib.parse


@dataclass
class Request:
    """What the server received: the test asserts on these (the Range asked for, the key sent, the body)."""

    method: str
    path: str  # without the query
    query: dict  # name -> first value
    headers: dict  # as sent (names as the client spelled them)
    body: bytes = b""
    raw_query: str = ""
    header_names: list = field(default_factory=list)

    def header(self, name, default=None):
        """A header by name, whatever its case."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), default)


class Exchange:
    """One request and the means to answer it, well or badly."""

    def __init__(self, handler, request, server):
        self.handler, self.request, self.server = handler, request, server

    def reply(self, status=200, body=b"", headers=None, content_type=None, length=None):
        """A whole answer; `length` overrides Content-Length (a server that lies about it)."""
        self.head(status, headers, content_type, len(body) if length is None else length)
        self.write(body)

    def reply_json(self, value, status=200, headers=None):
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.reply(status, body, headers, content_type="application/json")

    def head(self, status=200, headers=None, content_type=None, length=None):
        """The status line and headers only; the body follows with write(), trickle() or nothing."""
        self.handler.send_response(status)
        if content_type:
            self.handler.send_header("Content-Type", content_type)
        if length is not None:
            self.handler.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.handler.send_header(name, str(value))
        self.handler.end_headers()

    def write(self, data):
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError:
            return
        self.server.sent_bytes += len(data)

    def drop(self):
        """Cut the connection here (a reset mid-body, a crashed server)."""
        self.handler.close_connection = True
        try:
            self.handler.wfile.flush()
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def trickle(self, data, interval_s):
        """One byte per `interval_s` until the data runs out or the client leaves."""
        for byte in data:
            if self.server.closed.is_set():
                return
            try:
                self.handler.wfile.write(bytes([byte]))
                self.handler.wfile.flush()
            except OSError:
                return
            self.server.sent_bytes += 1
            time.sleep(interval_s)

    def stall(self, seconds=None):
        """Say nothing for `seconds` (default: the server's timeout), or until the server closes."""
        self.server.closed.wait(self.server.timeout_s if seconds is None else seconds)

    def websocket(self):
        """Answer the upgrade and return a WebSocket (RFC 6455, unfragmented frames): enough for a ComfyUI /ws."""
        key = self.request.header("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.handler.send_response(101)
        self.handler.send_header("Upgrade", "websocket")
        self.handler.send_header("Connection", "Upgrade")
        self.handler.send_header("Sec-WebSocket-Accept", accept)
        self.handler.end_headers()
        self.handler.wfile.flush()
        self.handler.close_connection = True
        return WebSocket(self.handler, self.server)

    def endless(self, chunk=b"\0" * 65536, limit_bytes=1024**3):
        """Send until the client stops reading (a body with no end), or `limit_bytes` (a client that never
        stops fails its test instead of running forever)."""
        sent = 0
        while not self.server.closed.is_set() and sent < limit_bytes:
            try:
                self.handler.wfile.write(chunk)
            except OSError:
                return
            sent += len(chunk)
            self.server.sent_bytes += len(chunk)


WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """The server end of one websocket. Sends may come from any thread; `serve()` reads the client's frames
    (answering pings and the close) until the client leaves or the server closes."""

    def __init__(self, handler, server):
        self.handler, self.server = handler, server
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def _frame(self, opcode, payload):
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 2**16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        with self.lock:
            if self.closed.is_set():
                return
            try:
                self.handler.wfile.write(header + payload)
                self.handler.wfile.flush()
            except OSError:
                self.closed.set()

    def send_text(self, text):
        self._frame(0x1, text.encode())

    def send_json(self, value):
        self.send_text(json.dumps(value))

    def send_bytes(self, data):
        self._frame(0x2, data)

    def serve(self):
        """Read frames until a close, the client leaving, or the server closing (checked each second)."""
        self.handler.connection.settimeout(1.0)
        reader = self.handler.rfile
        while not self.closed.is_set() and not self.server.closed.is_set():
            try:
                head = reader.read(2)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
            if len(head) < 2:
                break
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", reader.read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", reader.read(8))
            mask = reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(reader.read(length)))
            if opcode == 0x9:
                self._frame(0xA, payload)
            elif opcode == 0x8:
                self._frame(0x8, payload[:2])
                break
        self.closed.set()


class MisbehavingServer:
    """routes: {path: handler} or {(method, path): handler}; handler(exchange). Other paths go to
    `fallback(exchange)` (an API with ids in its paths), else get a 404. `requests` lists every Request in
    arrival order; `sent_bytes` counts the body bytes written."""

    def __init__(self, routes=None, host="127.0.0.1", timeout_s=10.0, fallback=None):
        self.routes = {}
        self.fallback = fallback
        for key, handler in (routes or {}).items():
            method, path = key if isinstance(key, tuple) else ("GET", key)
            self.route(path, handler, method)
        self.timeout_s = timeout_s
        self.requests = []
        self.sent_bytes = 0
        self.closed = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = timeout_s  # a client that leaves its connection open cannot hold the thread

            def log_message(self, *args):
                pass

            def answer(self):
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, parsed.path,
                                  {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()},
                                  dict(self.headers.items()), body, parsed.query, list(self.headers.keys()))
                server.requests.append(request)
                handler = server.routes.get((self.command, parsed.path), server.fallback)
                exchange = Exchange(self, request, server)
                if handler is None:
                    exchange.reply(404, b"not found", content_type="text/plain")
                else:
                    handler(exchange)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = answer

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, path, handler, method="GET"):
        self.routes[(method, path)] = handler

    def url(self, path=""):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def close(self):
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileServer:
    """Serves `payload` at /model.safetensors; `drop_after_bytes` cuts the connection mid-body once.
    Misbehaviour on demand: `range_answer` "from_zero" (206 with the whole file and an honest Content-Range
    from byte 0), "lying" (206 with the whole file under the Content-Range asked for), "other_start" (206
    from a byte other than the one asked for); `trickle_s` (one byte per that many seconds, endless);
    `content_type` (the header sent with the file)."""

    def __init__(self, payload, timeout_s=10.0):
        self.payload = payload
        self.drop_after_bytes = None
        self.ignore_range = False
        self.range_answer = None
        self.trickle_s = None
        self.content_type = None
        self.server = MisbehavingServer({"/model.safetensors": self.answer}, timeout_s=timeout_s)
        self.url = self.server.url("/model.safetensors")

    @property
    def requests(self):
        """The Range header of every request (None when absent)."""
        return [request.header("Range") for request in self.server.requests]

    @property
    def sent_bytes(self):
        return self.server.sent_bytes

    def answer(self, exchange):
        payload, range_header = self.payload, exchange.request.header("Range")
        if self.trickle_s is not None:
            exchange.head(200, content_type=self.content_type, length=len(payload))
            return exchange.trickle(payload[:2000], self.trickle_s)
        start, status, headers = 0, 200, {}
        if range_header and not self.ignore_range:
            start = int(range_header.split("=")[1].split("-")[0])
            if start >= len(payload):
                return exchange.reply(416, headers={"Content-Range": f"bytes */{len(payload)}"})
            status = 206
            shown_start = {"from_zero": 0, "other_start": start // 2}.get(self.range_answer, start)
            headers["Content-Range"] = f"bytes {shown_start}-{len(payload) - 1}/{len(payload)}"
            if self.range_answer in ("from_zero", "lying"):
                start = 0
            elif self.range_answer == "other_start":
                start = shown_start
        body = payload[start:]
        if self.drop_after_bytes is not None:
            cut, self.drop_after_bytes = self.drop_after_bytes, None
            exchange.head(status, headers, self.content_type, len(body))
            exchange.write(body[:cut])
            return exchange.drop()
        exchange.reply(status, body, headers, self.content_type)

    def close(self):
        self.server.close()


def closed_port(host="127.0.0.1"):
    """A port nothing listens on (bound, then released): an unreachable server."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refusing_url(host="127.0.0.1"):
    """http://host:port of a port held bound but never listening: refused for as long as the block runs,
    even for a subprocess, and no other program can take the port meanwhile."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield f"http://{host}:{sock.getsockname()[1]}"
