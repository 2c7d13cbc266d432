"""Resumable, verified downloads against a real HTTP server on 127.0.0.1 (Range support, drops on demand)."""

import hashlib
import io
import os
import time
import pytest

from wanfit.remote.download import ChecksumError, DownloadError, download_file, partial_path
from tests.misbehaving_server import FileServer, MisbehavingServer, closed_port
from wanfit.errors import WanFitError

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # a few chunks, not a multiple of anything
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    file_server = FileServer(PAYLOAD)
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
    url = f"http://127.0.0.1:{closed_port()}/model.safetensors"
    with pytest.raises(DownloadError, match=rf"cannot reach {url}"):
        download_file(url, dest, progress_stream=None, timeout_s=2)
    assert not dest.exists()


def test_download_errors_are_wanfit_errors():
    assert issubclass(ChecksumError, DownloadError) and issubclass(DownloadError, WanFitError)


# --- a misbehaving download host: wrong bytes never take the final name, no hang ----------------------

SMALL = os.urandom(2048)


@pytest.fixture
def small_server():
    file_server = FileServer(SMALL)
    yield file_server
    file_server.close()


def test_resume_answered_from_byte_0_is_a_fresh_start_not_an_append(small_server, tmp_path):
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(SMALL[:1000])
    small_server.range_answer = "from_zero"
    result = download_file(small_server.url, dest, progress_stream=None)
    assert small_server.requests == ["bytes=1000-"]
    assert result["resumed_from_bytes"] == 0 and result["size_bytes"] == 2048
    assert dest.read_bytes() == SMALL


def test_resume_with_a_lying_content_range_is_cut_off(small_server, tmp_path):
    # Content-Range says "from byte 1000" but the body is the whole file: 1000 + 2048 > 2048
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(SMALL[:1000])
    small_server.range_answer = "lying"
    with pytest.raises(DownloadError, match=r"sent more than the file has .*expected 2048 bytes in all\)\. Its bytes "
                                            r"were dropped; the first 1000 bytes are kept"):
        download_file(small_server.url, dest, progress_stream=None)
    assert not dest.exists() and partial_path(dest).read_bytes() == SMALL[:1000]


def test_resume_from_another_byte_is_refused(small_server, tmp_path):
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(SMALL[:1000])
    small_server.range_answer = "other_start"
    with pytest.raises(DownloadError, match=r"asked .* for the bytes from 1000 on, it answered with Content-Range "
                                            r"'bytes 500-2047/2048'\. Nothing was appended"):
        download_file(small_server.url, dest, progress_stream=None)
    assert not dest.exists() and partial_path(dest).read_bytes() == SMALL[:1000]


def test_more_bytes_than_the_manifest_size_are_refused(small_server, tmp_path):
    dest = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError, match=r"it announced 2048 bytes, more than the 1000-byte limit"):
        download_file(small_server.url, dest, expected_size_bytes=1000, progress_stream=None)
    assert not dest.exists() and not partial_path(dest).exists()
    assert small_server.sent_bytes <= 2048


def test_verify_refuses_the_file_before_it_takes_the_final_name(small_server, tmp_path):
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ChecksumError, match=r"Downloaded file is not the expected model: model.safetensors from "
                                            r".*: an HTML page\. The download was deleted, not installed"):
        download_file(small_server.url, dest, progress_stream=None, verify=lambda path: "an HTML page.")
    assert not dest.exists() and not partial_path(dest).exists()


def test_a_trickling_server_is_a_stall(small_server, tmp_path):
    small_server.trickle_s = 0.05  # 20 bytes/s, endless as far as the client can tell
    dest = tmp_path / "model.safetensors"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"was interrupted at \d+ of 2048 bytes \(only \d+ bytes in [\d.]+ s, below "
                                            r"1024 bytes/s\)\. The partial file is kept"):
        download_file(small_server.url, dest, progress_stream=None, timeout_s=0.5)
    # bounded, not timed: an endless trickle would run until the test's own timeout
    assert time.monotonic() - started < 20 and not dest.exists()


def test_a_total_time_limit_ends_even_a_fast_enough_transfer(small_server, tmp_path):
    small_server.trickle_s = 0.01
    dest = tmp_path / "model.safetensors"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"\(the time limit ran out\)"):
        download_file(small_server.url, dest, progress_stream=None, timeout_s=5, min_bytes_per_s=1,
                      total_timeout_s=0.5)
    assert time.monotonic() - started < 20 and not dest.exists()


# --- a page instead of the file: refused without a verifier, nothing under the final name, no partial ---

LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Log in to download</body></html>"
JSON_ERROR = b'{"error": "Access to model Wan-AI/Wan2.2 is restricted. You must be authenticated."}'
PAGES = [
    # (case, body, Content-Type sent, the kind named in the message)
    ("html page labelled html", LOGIN_PAGE, "text/html; charset=utf-8", "an HTML page (Content-Type: text/html"),
    ("html page labelled as a file", LOGIN_PAGE, "application/octet-stream", "an HTML page (Content-Type: "
                                                                            "application/octet-stream)"),
    ("html page without a type", b"  \n" + LOGIN_PAGE * 3, None, "an HTML page (Content-Type: none)"),
    ("json error labelled json", JSON_ERROR, "application/json", "a JSON document (Content-Type: application/json)"),
    ("json error without a type", JSON_ERROR, None, "a JSON document (Content-Type: none)"),
    ("short json error", b'{"detail":"x"}', "binary/octet-stream", "a JSON document"),
    ("xml error from s3", b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>", None, "an XML document"),
    ("plain text", b"Entry not found", "text/plain", "a text page (text/plain)"),
]


@pytest.mark.parametrize("case, body, content_type, kind", PAGES, ids=[row[0] for row in PAGES])
def test_a_page_served_with_200_is_refused_without_a_verifier(tmp_path, case, body, content_type, kind):
    with MisbehavingServer({"/model.safetensors": lambda exchange: exchange.reply(200, body, content_type=content_type)},
                           timeout_s=5) as server:
        url = server.url("/model.safetensors")
        dest = tmp_path / "wan2.2_ti2v_5B_fp16.safetensors"
        with pytest.raises(DownloadError) as raised:
            download_file(url, dest, progress_stream=None, timeout_s=5)
    message = str(raised.value)
    assert message.startswith(f"Download of {dest.name} refused: {url} answered with {kind}"), message
    assert "instead of the file. Nothing was saved. Fix: open the URL in a browser" in message
    assert list(tmp_path.iterdir()) == [], "nothing under the final name, no partial"


def test_a_page_answering_a_resume_leaves_the_earlier_partial_alone(small_server, tmp_path):
    dest = tmp_path / "model.safetensors"
    partial_path(dest).write_bytes(SMALL[:1000])
    small_server.payload, small_server.content_type = LOGIN_PAGE, "text/html"
    small_server.ignore_range = True  # a login page answers whatever was asked
    with pytest.raises(DownloadError, match="answered with an HTML page .* the partial file of 1000 bytes from "
                                            "before is kept"):
        download_file(small_server.url, dest, progress_stream=None, timeout_s=5)
    assert not dest.exists() and partial_path(dest).read_bytes() == SMALL[:1000]


@pytest.mark.parametrize("first_bytes", [
    b"\x7b\x01\x00\x00\x00\x00\x00\x00{\"a\"",  # a safetensors length prefix whose first byte is "{"
    b"<\x00\x00\x00\x00\x00\x00\x00{\"a\"",  # ... or "<"
    b"GGUF\x03\x00\x00\x00",
    b"PK\x03\x04",
])
def test_binary_files_that_open_like_text_are_still_files(first_bytes, tmp_path):
    body = first_bytes + bytes(range(256)) * 4
    with MisbehavingServer({"/f": lambda exchange: exchange.reply(200, body, content_type="application/octet-stream")},
                           timeout_s=5) as server:
        result = download_file(server.url("/f"), tmp_path / "f.bin", progress_stream=None, timeout_s=5)
    assert (tmp_path / "f.bin").read_bytes() == body and result["size_bytes"] == len(body)
