"""Reading from servers WanFit does not control: where a request may go, how much and how long it may read,
and what a server-chosen file name may become on disk.

Every server here (a ComfyUI, RunPod, a download host, an S3 bucket) can be wrong, broken or hostile, so:
- A request that carries a key never follows a redirect to another origin (scheme, host, port): urllib
  copies every header, `Authorization` included, onto the redirected request.
- A URL the server hands us to fetch (RunPod's `s3_url`) must be https, or http to a loopback address
  (tests, a local proxy); file://, ftp:// and the rest are refused, on every redirect hop too.
- A body is read in pieces into a file or a capped buffer, never whole: a server that announces or sends
  more than the cap is cut off. Each read waits at most the inactivity timeout, the whole transfer at
  most until its deadline, and a trickle below a minimum rate counts as a stall.
- A file name chosen by a server becomes one plain name inside the target folder, or a fallback name.
Standard library only (urllib), like the rest of the client side.
"""

import contextlib
import ipaddress
import json
import os
from pathlib import Path
import time
import urllib.error
import urllib.parse
import urllib.request

CHUNK_BYTES = 1024 * 1024


class TransferLimit(Exception):
    """A limit cut the transfer short; str() is a phrase for the caller's message ("no data for 5 s")."""


class TransferStalled(TransferLimit):
    pass


class TransferDeadline(TransferLimit):
    pass


class TransferTooLarge(TransferLimit):
    pass


class RedirectRefused(urllib.error.URLError):
    """A redirect to a place the request may not go; `.reason` says where and why."""


def origin(url):
    """(scheme, host, port) with the default port filled in: what "the same server" means for a key."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def is_loopback_host(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def fetchable_url_problem(url):
    """None when WanFit may fetch `url` for the user (https, or http to loopback), else why not."""
    if not isinstance(url, str):
        return f"it is {type(url).__name__}, not a URL"
    scheme, host, _port = origin(url)
    if scheme == "https" and host:
        return None
    if scheme == "http" and host and is_loopback_host(host):
        return None
    if scheme == "http":
        return "plain http is only allowed to this machine (127.0.0.1, ::1, localhost)"
    return f"only https:// URLs are fetched, not {scheme + '://' if scheme else 'a URL without a scheme'}"


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where `allowed(new_url)` returns None; else raises RedirectRefused."""

    def __init__(self, allowed):
        super().__init__()
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        problem = self.allowed(newurl)
        if problem:
            fp.close()
            raise RedirectRefused(f"{req.full_url} redirected (HTTP {code}) to {newurl}, which WanFit does not "
                                  f"follow: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def same_origin_opener(url):
    """An opener whose redirects stay on the origin of `url` (use it for every request that carries a key)."""
    home = origin(url)

    def allowed(new_url):
        if origin(new_url) != home:
            return (f"it leaves {home[0]}://{home[1]}:{home[2]}, and the request carries the API key, which is "
                    f"only ever sent to that origin")
        return None

    return urllib.request.build_opener(_GuardedRedirects(allowed))


def fetchable_opener():
    """An opener for server-given URLs: every hop must pass fetchable_url_problem."""
    return urllib.request.build_opener(_GuardedRedirects(fetchable_url_problem))


def announced_length(response):
    length = response.headers.get("Content-Length") if response.headers else None
    return int(length) if length and length.strip().isdigit() else None


def _set_read_timeout(response, seconds):
    """Best effort: the socket timeout of an http.client response, so one read waits at most `seconds`."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def iter_body(response, idle_timeout_s, deadline=None, max_bytes=None, min_bytes_per_s=0, start_bytes=0,
              chunk_bytes=CHUNK_BYTES):
    """Yield the body in pieces. Raises TransferStalled (no byte for idle_timeout_s, or fewer than
    min_bytes_per_s * idle_timeout_s in any idle_timeout_s window), TransferDeadline (time.monotonic() passed
    `deadline`), TransferTooLarge (start_bytes + bytes read, or the announced length, above max_bytes)."""
    length = announced_length(response)
    if max_bytes is not None and length is not None and start_bytes + length > max_bytes:
        raise TransferTooLarge(f"it announced {start_bytes + length} bytes, more than the {max_bytes}-byte limit")
    total = start_bytes
    window_start, window_bytes = time.monotonic(), 0
    min_window_bytes = min_bytes_per_s * idle_timeout_s
    reader = getattr(response, "read1", None) or response.read
    while True:
        now = time.monotonic()
        wait_s = idle_timeout_s
        if deadline is not None:
            if now >= deadline:
                raise TransferDeadline("the time limit ran out")
            wait_s = min(wait_s, deadline - now)
        _set_read_timeout(response, wait_s)
        try:
            block = reader(chunk_bytes)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise TransferDeadline("the time limit ran out") from None
            raise TransferStalled(f"no data for {idle_timeout_s:g} s") from None
        if not block:
            return
        total += len(block)
        if max_bytes is not None and total > max_bytes:
            raise TransferTooLarge(f"it sent more than the {max_bytes}-byte limit")
        yield block
        window_bytes += len(block)
        now = time.monotonic()
        if now - window_start >= idle_timeout_s:
            if window_bytes < min_window_bytes:
                raise TransferStalled(f"only {window_bytes} bytes in {now - window_start:.1f} s, below "
                                      f"{min_bytes_per_s} bytes/s")
            window_start, window_bytes = now, 0


def read_body(response, idle_timeout_s, deadline=None, max_bytes=None):
    """The whole body as bytes, for small answers (JSON) that must still be bounded."""
    return b"".join(iter_body(response, idle_timeout_s, deadline, max_bytes))


@contextlib.contextmanager
def partial_then_rename(destination):
    """Yield `<destination>.partial` to write; rename it to `destination` when the block ends cleanly. On
    any failure (a limit, a reset, Ctrl-C) the partial file is removed, so nothing incomplete ever sits
    under the final name."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    try:
        yield partial
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomically(destination, payload):
    """Bytes (or text, as UTF-8) under `destination`, whole or not at all."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    with partial_then_rename(destination) as partial:
        partial.write_bytes(payload)
    return Path(destination)


def stream_to_file(response, destination, idle_timeout_s, deadline=None, max_bytes=None):
    """Write the body under `destination`, whole or not at all (see partial_then_rename)."""
    written = 0
    with partial_then_rename(destination) as partial:
        with open(partial, "wb") as handle:
            for block in iter_body(response, idle_timeout_s, deadline, max_bytes):
                handle.write(block)
                written += len(block)
        length = announced_length(response)
        if length is not None and written < length:
            raise TransferStalled(f"the connection closed after {written} of {length} bytes")
    return Path(destination)


def parse_json_object(payload):
    """-> (the parsed JSON object, None), or (None, what is wrong with the payload, quoting its start)."""
    try:
        parsed = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"something that is not JSON ({error}): {payload[:200].decode(errors='replace')!r}"
    if not isinstance(parsed, dict):
        return None, (f"JSON that is {type(parsed).__name__}, not an object: "
                      f"{payload[:200].decode(errors='replace')!r}")
    return parsed, None


def safe_file_name(name, fallback):
    """One plain file name from a server-chosen `name`: its last path component (either slash), without
    control characters; `fallback` when nothing usable is left ("", ".", "..", a non-string)."""
    if isinstance(name, str):
        last = name.replace("\\", "/").rsplit("/", 1)[-1]
        last = "".join("_" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in last).strip()
        if len(last.encode()) > 200:  # most filesystems stop at 255 bytes
            suffix = Path(last).suffix[:16]
            last = last.encode()[:150].decode(errors="ignore") + suffix
        if last not in ("", ".", ".."):
            return last
    return fallback


def bounded_text(value, limit=1000):
    """A server-given value as text of bounded length, so a broken or hostile server cannot flood a message."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def unused_path(directory, filename):
    """directory/filename, or name_1.ext, name_2.ext... so a rerun never overwrites an earlier video
    (a restarted server or a fresh RunPod worker numbers its outputs from 00001 again)."""
    candidate = Path(directory) / filename
    stem, suffix, counter = candidate.stem, candidate.suffix, 1
    while candidate.exists():
        candidate = candidate.with_name(f"{stem}_{counter}{suffix}")
        counter += 1
    return candidate
