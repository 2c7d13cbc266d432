"""Resumable, verified downloads against a real HTTP server on 127.0.0.1 (Range support, drops on demand)."""

import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import io
import os
import threading

import pytest

from wanfit.download import ChecksumError, DownloadError, download_file, partial_path
from wanfit.errors import WanFitError

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # a few chunks, not a multiple of anything
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves PAYLOAD at /model.safetensors; `drop_after_bytes` cuts the connection mid-body once."""

    def __init__(self):
        self.drop_after_bytes = None
        self.ignore_range = False
        self.requests = []  # the Range header of every request (None when absent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append(range_header)
                if self.path != "/model.safetensors":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if range_header and not server.ignore_range:
                    start = int(range_header.split("=")[1].split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after_bytes is not None:
                    cut, server.drop_after_bytes = server.drop_after_bytes, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.safetensors"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    file_server = FileServer()
    yield file_server
    file_server.close()


def test_download_verifies_and_renames(server, tmp_path):
    dest = tmp_path / "vae" / "model.safetensors"
    progress = io.StringIO()
    result = download_file(server.url, dest, expected_size_bytes=len(PAYLOAD), expected_sha256=PAYLOAD_SHA256,
                           progress_stream=progress)
    assert dest.read_bytes() == PAYLOAD and not partial_path(dest).exists()
    assert result == {"path": str(dest), "size_bytes": len(PAYLOAD), "sha256": PAYLOAD_SHA256, "resumed_from_bytes": 0}
    assert "100.0%" in progress.getvalue() and "model.safetensors" in progress.getvalue()


def test_interrupted_transfer_keeps_partial_and_second_run_resumes(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    cut_bytes = len(PAYLOAD) * 2 // 5
    server.drop_after_bytes = cut_bytes
    with pytest.raises(DownloadError) as caught:
        download_file(server.url, dest, expected_sha256=PAYLOAD_SHA256, progress_stream=None, timeout_s=5)
    message = str(caught.value)
    assert message.startswith(f"Download of model.safetensors was interrupted at {cut_bytes} of {len(PAYLOAD)} bytes")
    assert f"The partial file is kept at {partial_path(dest)}" in message and "run the same command again" in message
    assert not dest.exists(), "a half-written file must never sit under the final name"
    assert partial_path(dest).read_bytes() == PAYLOAD[:cut_bytes]

    result = download_file(server.url, dest, expected_sha256=PAYLOAD_SHA256, progress_stream=None)
    assert server.requests[-1] == f"bytes={cut_bytes}-"
    assert result["resumed_from_bytes"] == cut_bytes and result["sha256"] == PAYLOAD_SHA256
    assert dest.read_bytes() == PAYLOAD and not partial_path(dest).exists()


def test_wrong_checksum_deletes_partial_and_names_expected_and_actual(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        download_file(server.url, dest, expected_sha256=wrong, progress_stream=None)
    assert str(caught.value).startswith(f"Checksum mismatch for model.safetensors: expected sha256 {wrong}, "
                                        f"got {PAYLOAD_SHA256} (from {server.url}).")
    assert (caught.value.expected, caught.value.actual) == (wrong, PAYLOAD_SHA256)
    assert not dest.exists() and not partial_path(dest).exists()


def test_wrong_size_is_refused(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ChecksumError, match=rf"wrong size: model.safetensors is {len(PAYLOAD)} bytes, expected "
                                            rf"{len(PAYLOAD) + 1} bytes"):
        download_file(server.url, dest, expected_size_bytes=len(PAYLOAD) + 1, progress_stream=None)
    assert not dest.exists() and not partial_path(dest).exists()


def test_server_ignoring_range_restarts_instead_of_appending(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(PAYLOAD[:1000])
    server.ignore_range = True
    result = download_file(server.url, dest, expected_sha256=PAYLOAD_SHA256, progress_stream=None)
    assert result["resumed_from_bytes"] == 0 and dest.read_bytes() == PAYLOAD


def test_complete_partial_is_verified_and_installed(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(PAYLOAD)
    result = download_file(server.url, dest, expected_size_bytes=len(PAYLOAD), expected_sha256=PAYLOAD_SHA256,
                           progress_stream=None)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]
    assert result["resumed_from_bytes"] == len(PAYLOAD) and dest.read_bytes() == PAYLOAD


def test_http_404_and_unreachable_server(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError, match=r"returned HTTP 404 .* Fix: the file is not at that URL any more"):
        download_file(server.url.replace("model", "gone"), dest, progress_stream=None)
    port = server.httpd.server_address[1]
    server.close()
    with pytest.raises(DownloadError, match=rf"cannot reach http://127.0.0.1:{port}/"):
        download_file(server.url, dest, progress_stream=None, timeout_s=2)
    assert not dest.exists()
    server.close = lambda: None  # already closed


def test_download_errors_are_wanfit_errors():
    assert issubclass(ChecksumError, DownloadError) and issubclass(DownloadError, WanFitError)
