"""Fetch multi-GB model files so that a dropped connection costs nothing and a bad file never lands.

Rules (each one answers a real deployment pain):
- Bytes go to `<name>.partial`; only a complete, verified file is renamed (os.replace, atomic on
  one filesystem) to `<name>`. ComfyUI lists every file in its model folders, so a half-written
  file under the final name would be offered to the user and fail mid-load.
- A second run resumes the `.partial` with an HTTP Range request; a server that ignores Range
  (200 instead of 206) makes us start over rather than append a second copy.
- Size (from the manifest, else from the server's Content-Length / Content-Range) and sha256
  (when the manifest knows it) are checked before the rename.
- A resumed answer must start where we asked (its Content-Range start equals the offset; a 206 from
  byte 0 is taken as a fresh start), and the bytes received never exceed the size the manifest or the
  server announced: a server that sends more is cut off and the bytes of that answer are dropped.
- A model file is never a page: an answer whose Content-Type is HTML, JSON, XML or text, or whose first
  bytes are markup or JSON, is refused and its bytes deleted, verifier or not (a login page served with
  HTTP 200 never becomes `wan2.2_ti2v_5B_fp16.safetensors`, and a JSON error never becomes a .partial to resume).
- A caller-supplied `verify(path)` (the models command passes a safetensors header check of the
  expected model) must accept the complete file before it takes the final name: an HTML login page
  served with HTTP 200 never becomes `wan2.2_ti2v_5B_fp16.safetensors`.
- A wrong size, checksum or header DELETES the `.partial`: its bytes are complete but wrong, so
  resuming it could only ever reproduce the same wrong file. The error says expected vs actual.
- An interrupted transfer KEEPS the `.partial` for the next run to resume.
- `timeout_s` bounds inactivity: no byte for that long, or less than `min_bytes_per_s` over that long
  (a server trickling 1 byte/s), ends the transfer; `total_timeout_s` bounds the whole transfer.
Standard library only (urllib), so it runs on a bare RunPod image before anything is installed.
"""

import hashlib
import http.client
import os
from pathlib import Path
import re
import sys
import time
import urllib.error
import urllib.request

from ..errors import WanFitError
from .transfer import TransferLimit, TransferTooLarge, iter_body
from ..units import BYTES_PER_GIB, BYTES_PER_MIB, format_gib

PARTIAL_SUFFIX = ".partial"
CHUNK_BYTES = 4 * BYTES_PER_MIB
PROGRESS_INTERVAL_S = 0.25
USER_AGENT = "ComfyUI-WanFit-downloader"
MIN_BYTES_PER_S = 1024  # slower than this over a whole timeout_s window counts as stalled
TOTAL_TIMEOUT_S = 12 * 3600  # a 28.6 GB expert at 1 MB/s takes 8 h
MAX_SIZE_BYTES = 64 * BYTES_PER_GIB  # when neither the manifest nor the server says how big the file is
SNIFF_BYTES = 64  # the first bytes that tell a page (HTML, JSON, XML) from a file


class DownloadError(WanFitError):
    """The transfer failed (network, HTTP status); a resumable .partial may be kept."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(message)


class ChecksumError(DownloadError):
    """The downloaded bytes are complete but not the expected file (size or sha256 differ)."""

    def __init__(self, path, message, expected, actual):
        self.expected = expected
        self.actual = actual
        super().__init__(path, message)


class PageInsteadOfFileError(DownloadError):
    """The server answered with a page (HTML, JSON, XML, text) instead of the file; none of it was kept."""


def page_kind(content_type, first_bytes=b""):
    """'an HTML page', 'a JSON document', ... when an answer is a page rather than a model file, else None.

    A model file is binary: a safetensors file starts with an 8-byte length whose high bytes are zero, so
    16 bytes of printable text that open with markup or a JSON object are a page, whatever the headers say."""
    media = (content_type or "").split(";")[0].strip().lower()
    if "html" in media:
        return "an HTML page"
    if "json" in media:
        return "a JSON document"
    if "xml" in media:
        return "an XML document"
    if media.startswith("text/"):
        return f"a text page ({media})"
    head = first_bytes.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head or not all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head[:16]):
        return None
    if head[:5].lower() == b"<?xml":
        return "an XML document"
    if head[:1] == b"<":
        return "an HTML page"
    if head[:1] in b"{[" and head[1:].lstrip()[:1] in (b'"', b"{", b"[", b"}", b"]"):
        return "a JSON document"
    return None


def _page_error(url, dest_path, kind, content_type, kept_bytes):
    kept = f"; the partial file of {kept_bytes} bytes from before is kept" if kept_bytes else ""
    return PageInsteadOfFileError(dest_path, (
        f"Download of {dest_path.name} refused: {url} answered with {kind} (Content-Type: "
        f"{content_type or 'none'}) instead of the file. Nothing was saved{kept}. Fix: open the URL in a browser: "
        f"a login page means the file is gated (log in, download it there and copy it into {dest_path.parent}); "
        f"an error page means the file moved and WanFit's manifest needs updating."))


def partial_path(dest_path):
    dest_path = Path(dest_path)
    return dest_path.with_name(dest_path.name + PARTIAL_SUFFIX)


class _Progress:
    """One self-overwriting stderr line: name, percent, GB done/total, MB/s."""

    def __init__(self, label, total_bytes, stream, start_bytes):
        self.label, self.total_bytes, self.stream = label, total_bytes, stream
        self.start_bytes = start_bytes
        self.started_s = time.monotonic()
        self.last_s = 0.0

    def update(self, done_bytes, final=False):
        if self.stream is None:
            return
        now_s = time.monotonic()
        if not final and now_s - self.last_s < PROGRESS_INTERVAL_S:
            return
        self.last_s = now_s
        speed_mib_s = (done_bytes - self.start_bytes) / BYTES_PER_MIB / max(now_s - self.started_s, 1e-6)
        if self.total_bytes:
            line = (f"\r{self.label}: {done_bytes / self.total_bytes:6.1%} {format_gib(done_bytes)} / "
                    f"{format_gib(self.total_bytes)}  {speed_mib_s:7.1f} MB/s")
        else:
            line = f"\r{self.label}: {format_gib(done_bytes)}  {speed_mib_s:7.1f} MB/s"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def _hash_existing(path, hasher):
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK_BYTES)
            if not block:
                return
            hasher.update(block)


def _range_start(response):
    """The first byte of a 206 answer ('bytes a-b/total' -> a), or None when the header is missing or odd."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", response.headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _total_from_response(response, offset_bytes):
    """Full file size from Content-Range ('bytes a-b/total') or Content-Length, else None."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length")
    if length and length.isdigit():
        return int(length) + (offset_bytes if response.status == 206 else 0)
    return None


def download_file(url, dest_path, expected_size_bytes=None, expected_sha256=None, progress_stream="stderr",
                  timeout_s=60.0, label=None, verify=None, total_timeout_s=TOTAL_TIMEOUT_S,
                  min_bytes_per_s=MIN_BYTES_PER_S, max_size_bytes=MAX_SIZE_BYTES):
    """Download `url` to `dest_path` (resuming `<dest>.partial`), verify, and atomically rename.

    Returns a dict: path, size_bytes, sha256, resumed_from_bytes. `progress_stream` is a text stream,
    "stderr" (the default) or None for silence. `verify(partial_path)` returns None when the complete file
    is acceptable, else a sentence saying what it is instead.
    """
    deadline = time.monotonic() + total_timeout_s if total_timeout_s else None
    dest_path = Path(dest_path)
    partial = partial_path(dest_path)
    label = label or dest_path.name
    stream = sys.stderr if progress_stream == "stderr" else progress_stream
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None

    offset_bytes = partial.stat().st_size if partial.exists() else 0
    if expected_size_bytes is not None and offset_bytes > expected_size_bytes:
        partial.unlink()  # longer than the real file: cannot be a prefix of it
        offset_bytes = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset_bytes:
        request.add_header("Range", f"bytes={offset_bytes}-")
    hasher = hashlib.sha256()
    total_bytes = expected_size_bytes
    resumed_from_bytes = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset_bytes:
            # Range past the end: the .partial already holds the whole file; verify it below.
            response = None
            resumed_from_bytes = offset_bytes
        else:
            raise DownloadError(dest_path, _http_message(url, dest_path, error.code, error.reason)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(dest_path, f"Download of {dest_path.name} failed: cannot reach {url} ({reason}). "
                                       f"Fix: check the network/proxy and run the same command again"
                                       f"{'; the partial file is kept and will resume' if offset_bytes else ''}.") from None
    if response is not None:
        with response:
            range_start = _range_start(response) if response.status == 206 else None
            if offset_bytes and response.status == 206 and range_start == offset_bytes:
                resumed_from_bytes = offset_bytes
                _hash_existing(partial, hasher)
                mode = "ab"
            elif offset_bytes and response.status == 206 and range_start != 0:
                raise DownloadError(dest_path, f"Download of {dest_path.name} failed: asked {url} for the bytes "
                                               f"from {offset_bytes} on, it answered with Content-Range "
                                               f"{response.headers.get('Content-Range')!r}. Nothing was appended; "
                                               f"the partial file is kept at {partial}. Fix: run the command again;"
                                               f" if it repeats, delete the partial file to start over.")
            else:
                offset_bytes = 0  # server ignored Range (or resent the file from byte 0): start over
                mode = "wb"
            content_type = response.headers.get("Content-Type")
            kind = page_kind(content_type)
            if kind:  # refused before the .partial is opened: nothing written, an earlier .partial untouched
                raise _page_error(url, dest_path, kind, content_type, partial.stat().st_size if partial.exists() else 0)
            server_total = _total_from_response(response, offset_bytes)
            total_bytes = total_bytes or server_total
            if expected_size_bytes is not None and server_total is not None and server_total != expected_size_bytes:
                stream and stream.write(f"{label}: server says {server_total} bytes, manifest says "
                                        f"{expected_size_bytes}; the size check below decides.\n")
            bar = _Progress(label, total_bytes, stream, offset_bytes)
            done_bytes = offset_bytes
            # never more than the file has: the manifest's size, else the server's, else a generous cap
            size_cap_bytes = min(size for size in (expected_size_bytes, server_total, max_size_bytes)
                                 if size is not None)
            first_bytes = b"" if mode == "wb" else None  # a resumed answer starts mid-file: nothing to sniff
            with open(partial, mode) as handle:
                try:
                    for block in iter_body(response, timeout_s, deadline, size_cap_bytes, min_bytes_per_s,
                                           start_bytes=offset_bytes, chunk_bytes=CHUNK_BYTES):
                        handle.write(block)
                        hasher.update(block)
                        done_bytes += len(block)
                        bar.update(done_bytes)
                        if first_bytes is not None and len(first_bytes) < SNIFF_BYTES:
                            first_bytes += block[:SNIFF_BYTES]
                            if len(first_bytes) >= SNIFF_BYTES:
                                _refuse_page(url, dest_path, partial, handle, content_type, first_bytes, stream)
                except TransferTooLarge as limit:
                    handle.truncate(offset_bytes)  # drop this answer's bytes, keep what was verified before
                    if stream is not None:
                        stream.write("\n")
                    if not offset_bytes:
                        handle.close()
                        partial.unlink(missing_ok=True)
                    kept = f"; the first {offset_bytes} bytes are kept" if offset_bytes else ""
                    raise DownloadError(dest_path, f"Download of {dest_path.name} failed: {url} sent more than the "
                                                   f"file has ({limit}; expected {size_cap_bytes} bytes in all). "
                                                   f"Its bytes were dropped{kept}. Fix: run the command again; if it "
                                                   f"repeats, the server is misbehaving or the manifest's size is "
                                                   f"out of date.") from None
                except (OSError, http.client.HTTPException, ValueError, TransferLimit) as error:
                    # reset, stall, too slow, total time limit, IncompleteRead
                    handle.flush()
                    if stream is not None:
                        stream.write("\n")  # end the progress line before the error is printed
                    raise _interrupted(url, dest_path, partial, done_bytes, total_bytes, error) from None
                if first_bytes is not None and len(first_bytes) < SNIFF_BYTES:  # a body shorter than the sniff
                    _refuse_page(url, dest_path, partial, handle, content_type, first_bytes, stream)
                handle.flush()
                os.fsync(handle.fileno())
            if server_total is not None and done_bytes < server_total:
                raise _interrupted(url, dest_path, partial, done_bytes, server_total, "connection closed early")
            bar.update(done_bytes, final=True)
    else:
        _hash_existing(partial, hasher)

    actual_size_bytes = partial.stat().st_size
    if expected_size_bytes is not None and actual_size_bytes != expected_size_bytes:
        partial.unlink()
        raise ChecksumError(dest_path, f"Downloaded file has the wrong size: {dest_path.name} is {actual_size_bytes} "
                                       f"bytes, expected {expected_size_bytes} bytes (from {url}). The partial file "
                                       f"was deleted. Fix: run the command again; if it repeats, the file at the URL "
                                       f"changed and WanFit's manifest needs updating.",
                            expected_size_bytes, actual_size_bytes)
    actual_sha256 = hasher.hexdigest()
    if expected_sha256 and actual_sha256 != expected_sha256:
        partial.unlink()
        raise ChecksumError(dest_path, f"Checksum mismatch for {dest_path.name}: expected sha256 {expected_sha256}, "
                                       f"got {actual_sha256} (from {url}). The downloaded file was deleted, not "
                                       f"installed. Fix: run the command again; if it repeats, the file at the URL "
                                       f"changed and WanFit's manifest needs updating.",
                            expected_sha256, actual_sha256)
    problem = verify(partial) if verify is not None else None
    if problem:
        partial.unlink()
        raise ChecksumError(dest_path, f"Downloaded file is not the expected model: {dest_path.name} from {url}: "
                                       f"{problem} The download was deleted, not installed. Fix: check the URL in "
                                       f"a browser (a login or error page is served instead of gated files); if "
                                       f"it repeats, WanFit's manifest needs updating.", "a valid model header",
                            problem)
    os.replace(partial, dest_path)
    return {"path": str(dest_path), "size_bytes": actual_size_bytes, "sha256": actual_sha256,
            "resumed_from_bytes": resumed_from_bytes}


def _refuse_page(url, dest_path, partial, handle, content_type, first_bytes, stream):
    """Delete what a page answer wrote (it was written from byte 0) and raise, when the first bytes are a page."""
    kind = page_kind(content_type, first_bytes)
    if kind is None:
        return
    handle.close()
    partial.unlink(missing_ok=True)
    if stream is not None:
        stream.write("\n")
    raise _page_error(url, dest_path, kind, content_type, 0)


def _interrupted(url, dest_path, partial, done_bytes, total_bytes, error):
    of_total = f" of {total_bytes}" if total_bytes else ""
    return DownloadError(dest_path, f"Download of {dest_path.name} was interrupted at {done_bytes}{of_total} bytes "
                                    f"({error or 'connection lost'}). The partial file is kept at {partial}. Fix: run "
                                    f"the same command again to resume from byte {done_bytes} (source: {url}).")


def _http_message(url, dest_path, code, reason):
    hint = {401: "the file needs a login (gated); download it in a browser and copy it into place",
            403: "access denied; the file may be gated or the URL expired",
            404: "the file is not at that URL any more; WanFit's manifest needs updating"}.get(code, "try again later")
    return f"Download of {dest_path.name} failed: {url} returned HTTP {code} {reason}. Fix: {hint}."
