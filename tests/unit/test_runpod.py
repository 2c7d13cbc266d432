"""`wanfit run --runpod` against a fake RunPod serverless API on 127.0.0.1 that follows RunPod's
/run + /status contract and worker-comfyui's input/output format (see wanfit/remote/runpod.py)."""

import _thread
import base64
import json
from pathlib import Path

import pytest

import wanfit.remote.runpod as runpod
from wanfit.remote.runpod import RunPodClient, RunPodError, RunPodJobError, job_error_text, output_files
from tests.misbehaving_server import MisbehavingServer, closed_port
from tests.unit.test_cli_run import FAKE_MP4, NODE_ERROR, run_cli, workflows  # noqa: F401  (fixture)

API_KEY = "rp_test_key"
ENDPOINT = "wanfit-endpoint"
WORKER_FAILURE = (f"Workflow execution error: Node Type: WanFitOffloadPlan, Node ID: 50, Message: {NODE_ERROR}")


class FakeRunPod:
    """Each job goes IN_QUEUE -> IN_PROGRESS -> its final status, one step per /status call. The job's
    outcome is picked by the prompt text: "fail", "crash", "old output", "s3" or anything (a base64 mp4)."""

    def __init__(self):
        self.jobs = {}
        # misbehaviour on demand: a raw /run or /status answer, a final "output" to return, a redirect of
        # /status, Ctrl-C (a real KeyboardInterrupt in the client) at the first /status, and extra routes
        # (path -> handler(exchange)) for hostile s3_url hosts
        self.raw_run = None
        self.raw_status = None
        self.final_output = None
        self.redirect_status_to = None
        self.ctrl_c_at_status = False
        self.server = MisbehavingServer({"/s3/video.mp4": lambda exchange: exchange.reply(200, FAKE_MP4,
                                                                                          content_type="video/mp4")},
                                        fallback=self.answer, timeout_s=10)
        self.routes = self.server.routes
        self.base = self.server.url("/v2")

    @property
    def requests(self):
        """(method, path, JSON body or None) of every request, in order."""
        return [(r.method, r.path if not r.raw_query else f"{r.path}?{r.raw_query}",
                 json.loads(r.body or b"{}") if r.method == "POST" else None) for r in self.server.requests]

    def route(self, path, handler):
        self.server.route(path, handler)

    def answer(self, exchange):
        request = exchange.request
        if request.header("Authorization") != f"Bearer {API_KEY}":
            return exchange.reply_json({"error": "Unauthorized"}, 401)
        parts = request.path.strip("/").split("/")  # v2/<endpoint>/run | status/<id> | cancel/<id>
        if request.method == "POST":
            if parts[1] != ENDPOINT:
                return exchange.reply_json({"error": "endpoint not found"}, 404)
            if parts[2] == "run" and self.raw_run is not None:
                return exchange.reply_json(self.raw_run)
            if parts[2] == "run":
                job_id = f"job-{len(self.jobs) + 1}"
                self.jobs[job_id] = {"body": json.loads(request.body or b"{}"), "polls": 0, "cancelled": False}
                return exchange.reply_json({"id": job_id, "status": "IN_QUEUE"})
            if parts[2] == "cancel":
                self.jobs[parts[3]]["cancelled"] = True
                return exchange.reply_json({"id": parts[3], "status": "CANCELLED"})
            return exchange.reply_json({"error": "no such route"}, 404)
        if self.redirect_status_to:
            return exchange.reply(302, headers={"Location": self.redirect_status_to})
        if self.raw_status is not None:
            return exchange.reply_json(self.raw_status)
        job = self.jobs[parts[3]]
        job["polls"] += 1
        if self.ctrl_c_at_status:
            self.ctrl_c_at_status = False
            _thread.interrupt_main()  # raised in the client once this answer reaches it
        state = {1: "IN_QUEUE", 2: "IN_PROGRESS"}.get(job["polls"])
        if state:
            return exchange.reply_json({"id": parts[3], "status": state, "delayTime": 10})
        exchange.reply_json(self.final_status(parts[3], job["body"]))

    def final_status(self, job_id, body):
        prompt = json.dumps(body["input"]["workflow"])
        done = {"id": job_id, "status": "COMPLETED", "delayTime": 10, "executionTime": 4567}
        if self.final_output is not None:
            return {**done, "output": self.final_output}
        if "fail" in prompt:  # worker-comfyui's handler returned {"error": ..., "details": [...]}
            return {"id": job_id, "status": "FAILED", "error": "Job processing failed",
                    "output": {"details": [WORKER_FAILURE]}}
        if "crash" in prompt:  # the handler raised: runpod-python sends the exception as a JSON string
            return {"id": job_id, "status": "FAILED", "error": json.dumps(
                {"error_type": "<class 'RuntimeError'>", "error_message": "CUDA out of memory",
                 "error_traceback": "Traceback ..."})}
        if "old output" in prompt:  # worker-comfyui < 5.0.0
            return {**done, "output": {"status": "success", "message": base64.b64encode(FAKE_MP4).decode()}}
        if "s3" in prompt:
            return {**done, "output": {"images": [{"filename": "wanfit_00001_.mp4", "type": "s3_url",
                                                   "data": self.base.replace("/v2", "/s3/video.mp4")}]}}
        return {**done, "output": {"images": [{"filename": "wanfit_00001_.mp4", "type": "base64",
                                               "data": base64.b64encode(FAKE_MP4).decode()}],
                                   "errors": ["Node 9 produced unhandled output keys: ['text']."]}}

    def close(self):
        self.server.close()


@pytest.fixture
def fake_runpod(monkeypatch):
    fake = FakeRunPod()
    monkeypatch.setenv("RUNPOD_API_BASE", fake.base)
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setattr(runpod, "POLL_S", 0.01)
    yield fake
    fake.close()


def run_runpod(capsys, out_dir, prompt="a red fox", *extra):
    return run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", prompt, "--runpod", ENDPOINT,
                   "--out", str(out_dir), *extra)


def test_completed_job_saves_the_base64_video(workflows, fake_runpod, tmp_path, capsys):
    code, out, err = run_runpod(capsys, tmp_path / "out", "a red fox", "--frames", "9")
    assert code == 0, err
    saved = tmp_path / "out" / "wanfit_00001_.mp4"
    assert out.splitlines() == [str(saved)] and saved.read_bytes() == FAKE_MP4
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["wanfit_00001_.mp4"]

    method, path, body = fake_runpod.requests[0]
    assert (method, path) == ("POST", f"/v2/{ENDPOINT}/run")
    assert set(body) == {"input"} and set(body["input"]) == {"workflow"}, "no images for text-to-video"
    assert body["input"]["workflow"]["3"]["inputs"]["text"] == "a red fox"
    assert body["input"]["workflow"]["6"]["inputs"]["length"] == 9
    assert [request[1] for request in fake_runpod.requests[1:]] == [f"/v2/{ENDPOINT}/status/job-1"] * 3
    for status in ("submitted", "IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
        assert f"RunPod job job-1: {status}" in err, err
    assert "wanfit run: RunPod worker warning: Node 9 produced unhandled output keys" in err


def test_image_goes_in_input_images_and_the_workflow_names_it(workflows, fake_runpod, image, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--workflow", "tiny_i2v", "--prompt", "a fox", "--image", str(image),
                           "--runpod", ENDPOINT, "--out", str(tmp_path))
    assert code == 0, err
    body = fake_runpod.requests[0][2]
    assert body["input"]["workflow"]["11"]["inputs"]["image"] == image.name
    [sent] = body["input"]["images"]
    assert sent["name"] == image.name
    assert sent["image"] == "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()


def test_failed_job_prints_the_workers_error_and_exits_1(workflows, fake_runpod, tmp_path, capsys):
    code, out, err = run_runpod(capsys, tmp_path / "out", "fail please")
    assert code == 1 and out == ""
    assert "wanfit run: RunPod job job-1 ended FAILED: Job processing failed" in err
    assert WORKER_FAILURE in err
    assert not (tmp_path / "out").exists()


def test_handler_exception_text_is_unpacked(workflows, fake_runpod, tmp_path, capsys):
    code, _, err = run_runpod(capsys, tmp_path, "crash")
    assert code == 1
    assert "RunPod job job-1 ended FAILED: <class 'RuntimeError'>: CUDA out of memory" in err


def test_pre_5_0_output_message_is_saved_with_the_right_extension(workflows, fake_runpod, tmp_path, capsys):
    code, out, err = run_runpod(capsys, tmp_path, "old output")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "runpod_job-1.mp4")
    assert (tmp_path / "runpod_job-1.mp4").read_bytes() == FAKE_MP4


def test_s3_url_output_is_downloaded_without_the_key(workflows, fake_runpod, tmp_path, capsys):
    code, _, err = run_runpod(capsys, tmp_path, "s3")
    assert code == 0, err
    assert (tmp_path / "wanfit_00001_.mp4").read_bytes() == FAKE_MP4


def test_missing_api_key_is_a_clear_error(workflows, fake_runpod, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    code, _, err = run_runpod(capsys, tmp_path / "out")
    assert code == 2
    assert ("wanfit run: RUNPOD_API_KEY is not set: --runpod needs a RunPod API key. Fix: create one under "
            "RunPod > Settings > API Keys and run `export RUNPOD_API_KEY=...` before this command.") in err
    assert fake_runpod.requests == [] and not (tmp_path / "out").exists()


def test_wrong_key_and_unknown_endpoint_say_what_to_fix(workflows, fake_runpod, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong")
    code, _, err = run_runpod(capsys, tmp_path)
    assert code == 2 and "RunPod refused the API key (HTTP 401)" in err and "Fix: check RUNPOD_API_KEY" in err
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    code, _, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "x", "--runpod", "nope",
                           "--out", str(tmp_path))
    assert code == 2 and "RunPod has no endpoint 'nope' (HTTP 404" in err
    assert "Fix: check the --runpod endpoint id" in err


def test_unreachable_runpod(workflows, tmp_path, capsys, monkeypatch):

    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_API_BASE", f"http://127.0.0.1:{closed_port()}/v2")
    code, _, err = run_runpod(capsys, tmp_path)
    assert code == 2 and "cannot reach RunPod at http://127.0.0.1:" in err and "Connection refused" in err


def test_bad_inputs_are_refused_before_anything_is_sent(workflows, fake_runpod, tmp_path, capsys):
    code, _, err = run_runpod(capsys, tmp_path, "a fox", "--frames", "10")
    assert code == 2 and "frames=10 is invalid: expected 4n+1" in err
    assert fake_runpod.requests == []


def test_ctrl_c_cancels_the_job(workflows, fake_runpod, tmp_path, capsys):
    fake_runpod.ctrl_c_at_status = True
    code, _, _ = run_runpod(capsys, tmp_path / "out")
    assert code == 130
    assert fake_runpod.jobs["job-1"]["cancelled"] and not (tmp_path / "out").exists()


def test_two_jobs_do_not_overwrite_each_other(workflows, fake_runpod, tmp_path, capsys):
    for _ in range(2):
        assert run_runpod(capsys, tmp_path / "out")[0] == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["wanfit_00001_.mp4", "wanfit_00001__1.mp4"]


def test_timeout_while_queued(workflows, fake_runpod, tmp_path, capsys):
    # the fake job moves IN_QUEUE -> IN_PROGRESS on each poll, so either state may be the last one seen
    code, _, err = run_runpod(capsys, tmp_path, "a fox", "--timeout", "0.001")
    assert code == 1
    assert any(f"RunPod job job-1 is still {state} after 0.001 s" in err for state in ("IN_QUEUE", "IN_PROGRESS")), err
    assert "it keeps running and billing" in err


OUTPUT_SHAPES = [
    ("5.x base64", {"output": {"images": [{"filename": "a.mp4", "type": "base64", "data": "QQ=="}]}},
     [("a.mp4", "base64", "QQ==")]),
    ("5.x s3", {"output": {"images": [{"filename": "a.mp4", "type": "s3_url", "data": "https://b/a.mp4"}]}},
     [("a.mp4", "s3_url", "https://b/a.mp4")]),
    ("4.x message", {"output": {"status": "success", "message": "QQ=="}}, [(None, "base64", "QQ==")]),
    ("4.x s3 message", {"output": {"status": "success", "message": "https://b/a.png"}},
     [(None, "s3_url", "https://b/a.png")]),
    ("no images", {"output": {"status": "success_no_images", "images": []}}, []),
    ("no output", {}, []),
]


@pytest.mark.parametrize("case, status, expected", OUTPUT_SHAPES, ids=[row[0] for row in OUTPUT_SHAPES])
def test_output_shapes(case, status, expected):
    assert output_files(status) == expected


def test_error_text_shapes():
    assert job_error_text({"status": "FAILED", "error": "boom"}) == "boom"
    assert job_error_text({"status": "TIMED_OUT"}) == "no error text (status TIMED_OUT)"
    assert job_error_text({"error": "Job processing failed", "output": {"details": ["a", "b"]}}) == \
        "Job processing failed\n  a\n  b"


def test_endpoint_id_must_be_an_id(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    with pytest.raises(RunPodError, match="is not an endpoint id"):
        RunPodClient("https://api.runpod.ai/v2/abc")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "start.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels" * 10)
    return path


# --- hostile RunPod answers: the key stays home, files stay in --out, no traceback ---------------------

@pytest.fixture
def other_origin():
    """A server on another origin (127.0.0.2 is loopback on Linux) that records what it is sent."""
    completed = {"id": "job-1", "status": "COMPLETED", "output": {}}
    with MisbehavingServer({f"/v2/{ENDPOINT}/status/job-1": lambda exchange: exchange.reply_json(completed)},
                           host="127.0.0.2", timeout_s=10) as server:
        yield server


def test_api_key_never_follows_a_redirect_to_another_origin(workflows, fake_runpod, other_origin, tmp_path, capsys):
    fake_runpod.redirect_status_to = other_origin.url(f"/v2/{ENDPOINT}/status/job-1")
    code, out, err = run_runpod(capsys, tmp_path / "out")
    sent_headers = [request.headers for request in other_origin.requests]
    assert all(API_KEY not in json.dumps(headers) for headers in sent_headers), sent_headers
    assert sent_headers == [], "the redirect is refused, not followed without the key"
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"redirected (HTTP 302) to {other_origin.url()}/v2/" in err and "carries the API key" in err
    assert "Fix: check RUNPOD_API_BASE" in err
    assert not (tmp_path / "out").exists()


def test_a_redirect_on_the_same_origin_is_followed(workflows, fake_runpod, tmp_path, capsys):
    fake_runpod.route("/moved", lambda exchange: exchange.reply_json(
        fake_runpod.final_status("job-1", fake_runpod.jobs["job-1"]["body"])))
    fake_runpod.redirect_status_to = fake_runpod.base.replace("/v2", "/moved")
    code, _, err = run_runpod(capsys, tmp_path)
    assert code == 0, err
    assert (tmp_path / "wanfit_00001_.mp4").read_bytes() == FAKE_MP4


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "only https:// URLs are fetched, not file://"),
    ("ftp://127.0.0.1/video.mp4", "only https:// URLs are fetched, not ftp://"),
    ("http://example.invalid/video.mp4", "plain http is only allowed to this machine"),
    ("/etc/passwd", "only https:// URLs are fetched, not a URL without a scheme"),
])
def test_s3_url_outside_https_is_refused(workflows, fake_runpod, tmp_path, capsys, url, reason):
    fake_runpod.final_output = {"images": [{"filename": "v.mp4", "type": "s3_url", "data": url}]}
    code, out, err = run_runpod(capsys, tmp_path / "out")
    assert code == 1 and out == ""
    assert f"which WanFit does not fetch: {reason}" in err and "Nothing was saved" in err, err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", [".", "..", "", "../escape.mp4", "/etc/cron.d/x.mp4", "..\\..\\x.mp4",
                                  "a\x00b.mp4", "dir/"])
def test_output_names_always_land_inside_out(workflows, fake_runpod, tmp_path, capsys, monkeypatch, name):
    fake_runpod.final_output = {"images": [{"filename": name, "type": "base64",
                                            "data": base64.b64encode(FAKE_MP4).decode()}]}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    for out_dir in ("out", "."):  # "." is the default --out
        code, out, err = run_runpod(capsys, out_dir)
        assert code == 0, err
        [saved] = [Path(line) for line in out.splitlines()]
        assert saved.resolve().parent == (tmp_path / out_dir).resolve(), saved
        assert saved.read_bytes() == FAKE_MP4 and "\x00" not in saved.name
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [saved.name]
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name + "_")] == []


MALFORMED = [
    ("data null", {"output": {"images": [{"filename": "a.mp4", "type": "base64", "data": None}]}},
     "output.images[0].data is null, expected a base64 string"),
    ("data numeric", {"output": {"images": [{"filename": "a.mp4", "type": "base64", "data": 12}]}},
     "output.images[0].data is 12, expected a base64 string"),
    ("image entry a list", {"output": {"images": [["a.mp4", "base64", "QQ=="]]}},
     "output.images[0] is list, expected an object"),
    ("filename numeric", {"output": {"images": [{"filename": 7, "type": "base64", "data": "QQ=="}]}},
     "output.images[0].filename is int, expected a file name"),
    ("unknown type", {"output": {"images": [{"filename": "a.mp4", "type": "ftp", "data": "QQ=="}]}},
     'output.images[0].type is "ftp", expected "base64" or "s3_url"'),
    ("status a list", [1, 2], "with JSON that is list, not an object"),
    ("status not json", b"<html>502 Bad Gateway</html>", "with something that is not JSON"),
    ("errors a number", {"output": {"images": [{"filename": "a.mp4", "type": "base64", "data": "QQ=="}],
                                    "errors": 5}}, None),
]


@pytest.mark.parametrize("case, answer, expected", MALFORMED, ids=[row[0] for row in MALFORMED])
def test_malformed_answers_give_one_clear_line(workflows, fake_runpod, tmp_path, capsys, case, answer, expected):
    if isinstance(answer, dict):
        fake_runpod.final_output = answer["output"]
    else:
        fake_runpod.raw_status = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    code, out, err = run_runpod(capsys, tmp_path / "out")
    if expected is None:
        assert code == 0 and "RunPod worker warning: 5" in err
        return
    assert code == 1 and out == "", err
    assert expected in err, err
    assert "Traceback" not in err and err.count("wanfit run: ") == 1
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_run_answer_that_is_a_list(workflows, fake_runpod, tmp_path, capsys):
    fake_runpod.raw_run = json.dumps([{"id": "job-1"}]).encode()
    code, _, err = run_runpod(capsys, tmp_path)
    assert code == 1 and "/run with JSON that is list, not an object" in err


def test_s3_output_is_capped_and_leaves_nothing(fake_runpod, tmp_path):
    fake_runpod.route("/s3/endless", lambda exchange: (exchange.head(200), exchange.endless()))
    url = fake_runpod.base.replace("/v2", "/s3/endless")
    status = {"id": "job-1", "status": "COMPLETED", "output": {"images": [{"filename": "v.mp4", "type": "s3_url",
                                                                           "data": url}]}}
    client = RunPodClient(ENDPOINT, API_KEY, fake_runpod.base, max_output_bytes=1024**2)
    with pytest.raises(RunPodJobError) as raised:
        client.save_outputs(status, tmp_path / "out")
    assert f"cannot download the job's output from {url}: it sent more than the 1048576-byte limit" in str(raised.value)
    assert list((tmp_path / "out").iterdir()) == []
    assert fake_runpod.server.sent_bytes < 24 * 1024**2, "the client stopped reading near the cap"


def test_s3_output_announcing_more_than_the_cap_is_refused(workflows, fake_runpod, tmp_path, capsys):
    fake_runpod.route("/s3/huge", lambda exchange: exchange.head(200, length=10**12))
    route_url = fake_runpod.base.replace("/v2", "/s3/huge")
    fake_runpod.final_output = {"images": [{"filename": "v.mp4", "type": "s3_url", "data": route_url}]}
    code, out, err = run_runpod(capsys, tmp_path / "out")
    assert code == 1 and out == ""
    assert (f"cannot download the job's output from {route_url}: it announced 1000000000000 bytes, more than the "
            f"{runpod.MAX_OUTPUT_BYTES}-byte limit") in err, err
    assert list((tmp_path / "out").iterdir()) == []


def test_s3_output_that_stalls_ends_with_the_timeout(workflows, fake_runpod, tmp_path, capsys):
    import time

    def trickle(exchange):
        exchange.head(200, length=1000000)
        exchange.trickle(b"x" * 100, 0.1)

    fake_runpod.route("/s3/slow", trickle)
    fake_runpod.final_output = {"images": [{"filename": "v.mp4", "type": "s3_url",
                                            "data": fake_runpod.base.replace("/v2", "/s3/slow")}]}
    started = time.monotonic()
    code, _, err = run_runpod(capsys, tmp_path / "out", "a fox", "--timeout", "1.5")
    assert code == 1 and time.monotonic() - started < 5
    assert "the time limit ran out" in err and "pass a larger --timeout" in err
    assert list((tmp_path / "out").iterdir()) == []
