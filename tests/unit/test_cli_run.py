"""`python -m wanfit run` without ComfyUI: checks and messages, filling, the multipart upload, atomic
writes, and the whole /prompt -> /ws -> /history -> /view round trip against a fake ComfyUI on
127.0.0.1 (tests/misbehaving_server.py; the client's websocket is aiohttp's, as in real use)."""

import _thread
from email.parser import BytesParser
from email.policy import HTTP
import json
from pathlib import Path
import threading
import time

import pytest

import wanfit.cli.run as cli_run
from tests.misbehaving_server import MisbehavingServer, closed_port
from wanfit.__main__ import COMMANDS
from wanfit.cli.run import main
from wanfit.remote.client import ComfyClient, encode_multipart
from wanfit.remote.transfer import unused_path, write_atomically
from wanfit.workflows import fill_workflow

FAKE_MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8
NODE_ERROR = "frames=8 is invalid: expected 4n+1 (5, 9, ..., 81, ..., 121)"


def tiny_graph(with_image=False):
    """The shape of a WAN graph (stock node names), small enough to read in a failure message."""
    graph = {
        "3": {"class_type": "WanFitTestTextEncode", "inputs": {"text": "default prompt", "seed": 1}},
        "4": {"class_type": "WanFitTestTextEncode", "inputs": {"text": "default negative", "seed": 2}},
        "6": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                  "batch_size": 1, "vae": ["2", 0]}},
        "7": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 5.0, "latent_image": ["6", 0]}},
        "9": {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 24}},
        "10": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "video/wanfit"}},
    }
    if with_image:
        graph["11"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
        graph["6"]["inputs"]["start_image"] = ["11", 0]
    return graph


def tiny_input_map(with_image=False):
    fields = {"prompt": [["3", "text"]], "negative": [["4", "text"]], "width": [["6", "width"]],
              "height": [["6", "height"]], "frames": [["6", "length"]], "steps": [["7", "steps"]],
              "seed": [["7", "seed"]], "cfg": [["7", "cfg"]], "fps": [["9", "fps"]],
              "filename_prefix": [["10", "filename_prefix"]]}
    if with_image:
        fields["image"] = [["11", "image"]]
    return {"fields": fields, "needs_image": with_image, "size_multiple": 32, "fps": 24, "video_node": "10",
            "title": "tiny " + ("i2v" if with_image else "t2v")}


def write_workflows_dir(root):
    """A workflows folder like the shipped one: api/inputs.json + api/<name>.json."""
    api = Path(root) / "api"
    api.mkdir(parents=True, exist_ok=True)
    (api / "inputs.json").write_text(json.dumps({"tiny_t2v": tiny_input_map(), "tiny_i2v": tiny_input_map(True)}))
    (api / "tiny_t2v.json").write_text(json.dumps(tiny_graph()))
    (api / "tiny_i2v.json").write_text(json.dumps(tiny_graph(True)))
    return Path(root)


@pytest.fixture
def workflows(tmp_path, monkeypatch):
    root = write_workflows_dir(tmp_path / "workflows")
    monkeypatch.setenv("WANFIT_WORKFLOWS_DIR", str(root))
    return root


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "start frame.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"pixels" * 10)
    return path


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- bad inputs: exit 2, a message naming the field and the fix, nothing written -------------------

BAD_INPUTS = [
    # (case, extra argv, expected text on stderr)
    ("unknown workflow", ["--workflow", "nope"],
     "workflow='nope' is invalid: expected one of tiny_i2v, tiny_t2v."),
    ("i2v without image", ["--workflow", "tiny_i2v"],
     "image=None is invalid: expected an input image: tiny_i2v is image-to-video. Fix: pass --image PATH"),
    ("image not found", ["--workflow", "tiny_i2v", "--image", "/nonexistent/start.png"],
     "image='/nonexistent/start.png' is invalid: expected an existing image file (PNG, JPEG or WEBP)."),
    ("frames not 4n+1", ["--workflow", "tiny_t2v", "--frames", "8"],
     "frames=8 is invalid: expected 4n+1 (5, 9, ..., 81, ..., 121): the VAE packs 4 frames into one latent "
     "frame. Fix: use 5 or 9"),
    ("width not a multiple", ["--workflow", "tiny_t2v", "--width", "100"],
     "width=100 is invalid: expected a positive multiple of 32 for tiny_t2v. Fix: use 96"),
    ("image for a t2v workflow", ["--workflow", "tiny_t2v", "--image", "x.png"],
     "image='x.png' is invalid: expected one of the fields of workflow tiny_t2v:"),
    ("workflow file missing", ["--workflow", "tiny_t2v", "--workflow-file", "/nonexistent/graph.json"],
     "workflow-file='/nonexistent/graph.json' is invalid: expected an existing API-format workflow JSON file."),
    ("server without scheme", ["--workflow", "tiny_t2v", "--server", "localhost:8188"],
     "server='localhost:8188' is invalid: expected an http:// or https:// URL. "
     "Fix: e.g. --server http://127.0.0.1:8188"),
    ("timeout not positive", ["--workflow", "tiny_t2v", "--timeout", "0"],
     "timeout=0.0 is invalid: expected a positive number of seconds."),
]


@pytest.mark.parametrize("case, argv, expected", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(workflows, tmp_path, capsys, case, argv, expected):
    out_dir = tmp_path / "out"
    server = f"http://127.0.0.1:{closed_port()}"  # never contacted: checks come first
    code, out, err = run_cli(capsys, "--prompt", "a fox", "--server", server, "--out", str(out_dir), *argv)
    # (a later --server in argv wins)
    assert code == 2, f"{case}: expected exit 2, got {code}; stderr: {err}"
    assert expected in err, f"{case}: expected {expected!r} in stderr, got: {err}"
    assert err.startswith("wanfit run: ") and out == ""
    assert not out_dir.exists()


def test_unreachable_server_names_the_url_and_how_to_start_comfyui(workflows, tmp_path, capsys):
    server = f"http://127.0.0.1:{closed_port()}"
    code, out, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server,
                             "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert f"server='{server}' is unreachable: no ComfyUI answered there" in err
    assert "Connection refused" in err
    assert "Fix: start ComfyUI with WanFit installed (cd ~/ComfyUI && python main.py --listen 127.0.0.1" in err
    assert "or pass --server URL of a running ComfyUI" in err
    assert not (tmp_path / "out").exists()


def test_missing_input_map_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANFIT_WORKFLOWS_DIR", str(tmp_path / "empty"))
    code, _, err = run_cli(capsys, "--workflow", "ti2v_5b_t2v", "--prompt", "a fox")
    assert code == 2
    assert f"no workflow input map at {tmp_path / 'empty' / 'api' / 'inputs.json'}. Fix: update WanFit" in err


@pytest.mark.parametrize("content, expected", [
    ("{not json", "expected readable JSON"),
    (json.dumps({"nodes": [], "links": []}), "expected an API-format workflow, not the editor's UI format. "
                                             "Fix: in ComfyUI use Workflow > Export (API)"),
    (json.dumps({"1": {"inputs": {}}}), 'expected an API-format workflow: {"<node id>": {"class_type": ...'),
    (json.dumps({"1": {"class_type": "KSampler", "inputs": {}}}),
     "expected node 3 with input 'text', where workflow tiny_t2v keeps prompt. Fix: pass the --workflow whose "
     "input map matches the file, or leave --prompt out"),
], ids=["not json", "ui format", "not api format", "fields missing"])
def test_bad_workflow_file(workflows, tmp_path, capsys, content, expected):
    path = tmp_path / "graph.json"
    path.write_text(content)
    code, _, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--workflow-file", str(path))
    assert code == 2
    assert f"workflow-file='{path}' is invalid: " in err and expected in err, err


def test_argparse_refuses_a_non_number(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--workflow", "tiny_t2v", "--prompt", "x", "--frames", "many"])
    assert exit_info.value.code == 2
    assert "argument --frames: invalid int value: 'many'" in capsys.readouterr().err


def test_run_is_a_registered_command():
    assert COMMANDS["run"][0] == "wanfit.cli.run"


# --- filling ------------------------------------------------------------------------------------

def test_fill_sets_each_field_where_the_input_map_says(workflows):
    args = cli_run.parse_args(["--workflow", "tiny_i2v", "--prompt", "a fox", "--negative", "blur", "--image",
                               "dir/cat.png", "--width", "96", "--height", "64", "--frames", "9", "--steps", "3",
                               "--seed", "42", "--cfg", "3.5", "--fps", "16"])
    workflow = cli_run.fill("tiny_i2v", cli_run.field_values(args))
    assert workflow["3"]["inputs"]["text"] == "a fox" and workflow["4"]["inputs"]["text"] == "blur"
    assert workflow["11"]["inputs"]["image"] == "cat.png"  # the name it has once uploaded
    assert {key: workflow["6"]["inputs"][key] for key in ("width", "height", "length")} == \
        {"width": 96, "height": 64, "length": 9}
    assert (workflow["7"]["inputs"]["steps"], workflow["7"]["inputs"]["seed"], workflow["7"]["inputs"]["cfg"]) == \
        (3, 42, 3.5)
    assert workflow["9"]["inputs"]["fps"] == 16 and isinstance(workflow["9"]["inputs"]["fps"], int)
    assert workflow["6"]["inputs"]["vae"] == ["2", 0], "links stay links"


def test_workflow_file_is_filled_by_the_same_code_as_the_shipped_one(workflows, tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(tiny_graph()))
    values = {"prompt": "a fox", "negative": None, "image": None, "width": 128, "height": None, "frames": 13,
              "steps": None, "seed": 7, "cfg": None, "fps": None}
    assert cli_run.fill("tiny_t2v", values, path) == fill_workflow("tiny_t2v", **values)
    assert cli_run.fill("tiny_t2v", values, path)["6"]["inputs"]["width"] == 128


def test_unset_fields_keep_the_workflow_defaults(workflows):
    workflow = cli_run.fill("tiny_t2v", {"prompt": "a fox"})
    assert workflow["4"]["inputs"]["text"] == "default negative" and workflow["7"]["inputs"]["steps"] == 2


def shipped_workflow_names():
    from wanfit.workflows import WORKFLOWS_DIR

    path = WORKFLOWS_DIR / "api" / "inputs.json"
    input_map = json.loads(path.read_text()) if path.exists() else {}
    return sorted(name for name, spec in input_map.items() if "prompt" in spec["fields"])  # generating workflows


@pytest.mark.parametrize("name", shipped_workflow_names())
def test_every_shipped_workflow_fills_from_the_command_line(name, tmp_path, image, monkeypatch):
    monkeypatch.delenv("WANFIT_WORKFLOWS_DIR", raising=False)
    args = cli_run.parse_args(["--workflow", name, "--prompt", "a fox", "--negative", "blur", "--image", str(image),
                               "--width", "832", "--height", "480", "--frames", "9", "--steps", "4", "--seed", "5",
                               "--cfg", "3.5", "--fps", "16"])
    if not cli_run.input_spec(name).get("needs_image"):
        args.image = None
    workflow, spec = cli_run.prepare(args)
    for field, value in cli_run.field_values(args).items():
        for node_id, input_name in spec["fields"].get(field, []) if value is not None else []:
            assert workflow[node_id]["inputs"][input_name] == value, (field, node_id, input_name)
    assert {"SaveVideo"} <= {node["class_type"] for node in workflow.values()}, "videos reach /history outputs"


def test_video_files_picks_savevideo_output_and_skips_previews():
    entry = {"outputs": {
        "10": {"images": [{"filename": "wanfit_00001_.mp4", "subfolder": "video", "type": "output"}],
               "animated": [True]},
        "12": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
        "13": {"images": [{"filename": "frame.png", "subfolder": "", "type": "output"}], "animated": [False]},
        "14": {"latents": [{"filename": "l.latent", "subfolder": "", "type": "output"}]},
    }}
    assert [item["filename"] for item in cli_run.video_files(entry)] == ["wanfit_00001_.mp4"]
    del entry["outputs"]["10"]
    assert [item["filename"] for item in cli_run.video_files(entry)] == ["frame.png"], "no video: saved images"


# --- multipart and atomic writes ------------------------------------------------------------------

def parse_multipart(body, content_type):
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}


def test_multipart_body_parses_back_to_fields_and_file():
    payload = b"\x89PNG\r\n--not-a-boundary\r\n\x00\xff"
    body, content_type = encode_multipart({"type": "input", "overwrite": "true", "subfolder": ""},
                                          {"image": ('my "cat".png', payload)})
    parts = parse_multipart(body, content_type)
    assert parts["type"].get_content() == "input" and parts["overwrite"].get_content() == "true"
    assert parts["subfolder"].get_content() == ""
    assert parts["image"].get_filename() == "my %22cat%22.png"
    assert parts["image"].get_content_type() == "image/png"
    assert parts["image"].get_payload(decode=True) == payload


def test_write_atomically_replaces_and_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    destination = tmp_path / "deep" / "video.mp4"
    assert write_atomically(destination, b"first") == destination and destination.read_bytes() == b"first"

    def interrupted_write(self, data):
        with open(self, "wb") as handle:
            handle.write(data[:2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", interrupted_write)
    fresh = tmp_path / "fresh.mp4"
    with pytest.raises(KeyboardInterrupt):
        write_atomically(fresh, b"second")
    assert not fresh.exists() and not (tmp_path / "fresh.mp4.partial").exists()
    assert destination.read_bytes() == b"first"


def test_unused_path_never_overwrites(tmp_path):
    assert unused_path(tmp_path, "v.mp4") == tmp_path / "v.mp4"
    (tmp_path / "v.mp4").write_bytes(b"x")
    (tmp_path / "v_1.mp4").write_bytes(b"x")
    assert unused_path(tmp_path, "v.mp4") == tmp_path / "v_2.mp4"


# --- the round trip against a fake ComfyUI ----------------------------------------------------------

class FakeComfyUI:
    """Just enough of ComfyUI's server: /system_stats, /upload/image, /prompt, /ws, /history, /view,
    /queue, /interrupt. mode "ok" saves a video; mode "fail" raises in node 50 as a node would.
    `hostile` misbehaves on purpose: system_stats / history / prompt (a raw body: bytes, or anything JSON),
    outputs (the history entry's "outputs"), ws (raw texts sent after execution_start), view ("endless",
    "huge", "stall", "trickle", or "ctrl_c": some bytes, then Ctrl-C), history "ctrl_c" (Ctrl-C while the
    client waits for the prompt). Ctrl-C is the real thing: KeyboardInterrupt raised in the main thread."""

    def __init__(self, mode="ok", websocket=True, **hostile):
        self.mode = mode
        self.websocket = websocket
        self.hostile = hostile
        self.ctrl_c_sent = False
        self.sockets = {}
        self.history = {}
        self.prompts = []
        self.uploads = []
        self.posts = []
        self.server = MisbehavingServer({
            "/system_stats": self.system_stats, ("POST", "/upload/image"): self.upload,
            ("POST", "/prompt"): self.prompt, "/ws": self.ws, "/view": self.view,
            ("POST", "/queue"): self.record_post, ("POST", "/interrupt"): self.record_post,
        }, fallback=self.get_history, timeout_s=10)
        self.url = self.server.url()

    @property
    def view_sent_bytes(self):
        return self.server.sent_bytes  # the JSON answers add a few hundred bytes

    def close(self):
        self.server.close()

    def ctrl_c(self):
        """Ctrl-C in the client, once: KeyboardInterrupt in the main thread."""
        if not self.ctrl_c_sent:
            self.ctrl_c_sent = True
            _thread.interrupt_main()

    def system_stats(self, exchange):
        exchange.reply_json(self.hostile.get("system_stats", {"system": {}, "devices": []}))

    def upload(self, exchange):
        parts = parse_multipart(exchange.request.body, exchange.request.header("Content-Type"))
        image = parts["image"]
        self.uploads.append({**{name: parts[name].get_content() for name in ("type", "overwrite", "subfolder")},
                             "filename": image.get_filename(), "bytes": image.get_payload(decode=True)})
        exchange.reply_json({"name": image.get_filename(), "subfolder": "", "type": "input"})

    def ws(self, exchange):
        if not self.websocket:
            return exchange.reply(404, b"no websocket", content_type="text/plain")
        socket = exchange.websocket()
        self.sockets[exchange.request.query.get("clientId")] = socket
        socket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
        socket.serve()

    def prompt(self, exchange):
        if "prompt" in self.hostile:
            return exchange.reply_json(self.hostile["prompt"])
        body = json.loads(exchange.request.body)
        prompt_id = f"p{len(self.prompts) + 1}"
        self.prompts.append(body)
        exchange.reply_json({"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}})
        threading.Thread(target=self.execute, args=(prompt_id, body), daemon=True).start()

    def execute(self, prompt_id, body):
        socket = self.sockets.get(body.get("client_id"))

        def send(kind, data):
            if socket is not None:
                socket.send_json({"type": kind, "data": {**data, "prompt_id": prompt_id}})
                socket.send_bytes(b"\x00\x00\x00\x01preview")  # a binary preview frame

        send("execution_start", {"timestamp": 0})
        for text in self.hostile.get("ws", []):
            if socket is not None:
                socket.send_text(text)
        send("execution_cached", {"nodes": ["3", "4"]})
        send("executing", {"node": "7", "display_node": "7"})
        for value in (1, 2):
            send("progress", {"value": value, "max": 2, "node": "7"})
        messages = [["execution_start", {"prompt_id": prompt_id}]]
        if self.mode == "fail":
            error = {"prompt_id": prompt_id, "node_id": "50", "node_type": "WanFitOffloadPlan",
                     "exception_type": "wanfit.errors.InvalidInputError", "exception_message": NODE_ERROR}
            send("execution_error", error)
            messages.append(["execution_error", error])
            status = {"status_str": "error", "completed": False, "messages": messages}
            outputs = {}
        else:
            send("executed", {"node": "10", "output": {}})
            send("execution_success", {})
            messages.append(["execution_success", {"prompt_id": prompt_id}])
            status = {"status_str": "success", "completed": True, "messages": messages}
            outputs = {"10": {"images": [{"filename": "wanfit_00001_.mp4", "subfolder": "video", "type": "output"}],
                              "animated": [True]}}
            outputs = self.hostile.get("outputs", outputs)
        self.history[prompt_id] = {"prompt": [], "outputs": outputs, "status": status}
        send("executing", {"node": None})

    def get_history(self, exchange):
        request = exchange.request
        if request.method != "GET" or not request.path.startswith("/history/"):
            return exchange.reply(404, b"not found", content_type="text/plain")
        if self.hostile.get("history") == "ctrl_c":
            self.ctrl_c()  # raised in the client once this answer reaches it
            return exchange.reply_json({})
        if "history" in self.hostile:
            return exchange.reply_json(self.hostile["history"])
        prompt_id = request.path[len("/history/"):]
        exchange.reply_json({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})

    def view(self, exchange):
        how = self.hostile.get("view")
        if how is None:
            if not self.hostile.get("view_any_name"):
                query = exchange.request.query
                assert query["filename"] == "wanfit_00001_.mp4" and query["subfolder"] == "video"
            return exchange.reply(200, FAKE_MP4, content_type="video/mp4")
        # hostile: each stops when the client hangs up (or after a bound, so a broken client fails the test)
        exchange.handler.close_connection = True  # no length: the body ends when the connection does
        exchange.head(200, content_type="video/mp4", length=10**12 if how == "huge" else None)
        if how in ("endless", "huge"):
            exchange.endless(limit_bytes=2000 * 65536)
        elif how == "trickle":
            exchange.trickle(b"x" * 2000, 0.1)
        elif how == "ctrl_c":  # some bytes of the video reach the partial file, then Ctrl-C
            exchange.write(FAKE_MP4[:100])
            time.sleep(0.5)  # the client is writing the partial file by now
            self.ctrl_c()
        else:  # stall: a few bytes, then silence
            exchange.write(FAKE_MP4[:10])
            exchange.stall()

    def record_post(self, exchange):
        self.posts.append((exchange.request.path, json.loads(exchange.request.body)))
        exchange.reply_json({})


@pytest.fixture
def fake_comfy():
    servers = []

    def start(**options):
        servers.append(FakeComfyUI(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_run_uploads_queues_follows_the_websocket_and_downloads(workflows, fake_comfy, image, tmp_path, capsys):
    server = fake_comfy()
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "--workflow", "tiny_i2v", "--prompt", "a fox", "--image", str(image),
                             "--frames", "9", "--server", server.url, "--out", str(out_dir))
    assert code == 0, err
    assert out.splitlines() == [str(out_dir / "wanfit_00001_.mp4")]
    assert (out_dir / "wanfit_00001_.mp4").read_bytes() == FAKE_MP4
    assert sorted(path.name for path in out_dir.iterdir()) == ["wanfit_00001_.mp4"]

    assert server.uploads == [{"type": "input", "overwrite": "true", "subfolder": "", "filename": image.name,
                               "bytes": image.read_bytes()}]
    [body] = server.prompts
    assert body["client_id"] in server.sockets, "the /ws clientId is the /prompt client_id"
    assert body["prompt"]["11"]["inputs"]["image"] == image.name
    assert body["prompt"]["3"]["inputs"]["text"] == "a fox" and body["prompt"]["6"]["inputs"]["length"] == 9

    lines = err.splitlines()  # not a TTY: plain lines
    assert any(line.endswith("queued as prompt p1") for line in lines), err
    assert any(line.endswith("2 node(s) cached from an earlier run") for line in lines), err
    assert any(line.endswith("node 7 (KSampler) [##########..........] 1/2") for line in lines), err
    assert any(line.endswith("node 7 (KSampler) [####################] 2/2") for line in lines), err
    assert lines[-1].endswith("finished"), err
    assert "\r" not in err


def test_second_run_does_not_overwrite_the_first_video(workflows, fake_comfy, tmp_path, capsys):
    server = fake_comfy()
    out_dir = tmp_path / "out"
    for _ in range(2):
        assert run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                       "--out", str(out_dir))[0] == 0
    assert sorted(path.name for path in out_dir.iterdir()) == ["wanfit_00001_.mp4", "wanfit_00001__1.mp4"]


def test_without_websocket_it_polls_history(workflows, fake_comfy, tmp_path, capsys):
    server = fake_comfy(websocket=False)
    code, out, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                             "--out", str(tmp_path))
    assert code == 0, err
    assert "following progress by polling /history (no websocket at" in err
    assert (tmp_path / "wanfit_00001_.mp4").read_bytes() == FAKE_MP4


def test_without_aiohttp_it_polls_history(workflows, fake_comfy, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_aiohttp(name, *args, **kwargs):
        if name == "aiohttp":
            raise ImportError("No module named 'aiohttp'")
        return real_import(name, *args, **kwargs)

    server = fake_comfy()
    monkeypatch.setattr(builtins, "__import__", no_aiohttp)
    code, _, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                           "--out", str(tmp_path))
    assert code == 0, err
    assert "following progress by polling /history (aiohttp is not installed)" in err


def test_node_error_reaches_the_user_with_exit_1(workflows, fake_comfy, tmp_path, capsys):
    server = fake_comfy(mode="fail")
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                             "--out", str(out_dir))
    assert code == 1 and out == ""
    assert (f"wanfit run: prompt p1 failed in node 50 (WanFitOffloadPlan): wanfit.errors.InvalidInputError: "
            f"{NODE_ERROR}") in err
    assert not out_dir.exists()


def test_tty_progress_is_one_updating_line():
    import io

    from wanfit.remote.progress import ProgressPrinter

    stream = io.StringIO()
    printer = ProgressPrinter({"7": {"class_type": "KSampler", "inputs": {}}}, stream=stream, tty=True)
    printer("executing", {"node": "7"})
    for value in (1, 2, 3, 4):
        printer("progress", {"value": value, "max": 4, "node": "7"})
    printer("execution_success", {})
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 6
    assert "node 7 (KSampler) [###############.....] 3/4" in text
    assert text.endswith("finished" + " " * 36 + "\n"), "the final line overwrites the progress line, blanks its tail"


def test_a_log_gets_waiting_lines_rarely_a_terminal_gets_them_all():
    import io

    from wanfit.remote.progress import ProgressPrinter

    log, terminal = io.StringIO(), io.StringIO()
    for stream, tty in ((log, False), (terminal, True)):
        printer = ProgressPrinter(stream=stream, tty=tty)
        for _ in range(50):
            printer("waiting", {"prompt_id": "p1"})
            printer("runpod", {"job_id": "j1", "status": "IN_QUEUE", "changed": False})
    assert log.getvalue().count("\n") == 1, log.getvalue()
    assert terminal.getvalue().count("\r") == 100


def test_ctrl_c_while_running_takes_the_prompt_off_the_server(workflows, fake_comfy, tmp_path, capsys):
    server = fake_comfy(websocket=False, history="ctrl_c")
    code, out, err = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                             "--out", str(tmp_path / "out"))
    assert code == 130 and out == ""
    assert "wanfit run: interrupted; the prompt (or RunPod job) was cancelled and no file was saved" in err
    assert server.posts == [("/queue", {"delete": ["p1"]}), ("/interrupt", {"prompt_id": "p1"})]
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_downloading_leaves_no_file(workflows, fake_comfy, tmp_path, capsys):
    server = fake_comfy(view="ctrl_c")
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                           "--out", str(out_dir))
    assert code == 130 and out == ""
    assert list(out_dir.iterdir()) == []


def test_upload_image_returns_the_name_loadimage_takes(fake_comfy, image):
    server = fake_comfy()
    assert ComfyClient(server.url).upload_image(image) == image.name
    assert server.uploads[0]["bytes"] == image.read_bytes()


# --- a hostile or broken ComfyUI: bounded memory and time, nothing under a final name, one clear line -----

def run_hostile(capsys, server, out_dir, *extra):
    return run_cli(capsys, "--workflow", "tiny_t2v", "--prompt", "a fox", "--server", server.url,
                   "--out", str(out_dir), *extra)


def test_view_is_streamed_within_a_size_cap(fake_comfy, tmp_path):
    from wanfit.remote.client import ComfyServerError

    server = fake_comfy(view="endless")
    out_dir = tmp_path / "out"
    file_ref = {"filename": "wanfit_00001_.mp4", "subfolder": "video", "type": "output"}
    with pytest.raises(ComfyServerError) as raised:
        ComfyClient(server.url, max_download_bytes=1024**2).download(file_ref, out_dir)
    assert (f"download of wanfit_00001_.mp4 from {server.url}/view stopped: it sent more than the 1048576-byte "
            f"limit. Nothing was saved as {out_dir / 'wanfit_00001_.mp4'}") in str(raised.value)
    assert list(out_dir.iterdir()) == [], "no partial file, nothing under the final name"
    assert server.view_sent_bytes < 24 * 1024**2, "the client stopped reading near the cap"


def test_view_announcing_more_than_the_cap_is_refused_before_reading(workflows, fake_comfy, tmp_path, capsys):
    from wanfit.remote.client import MAX_DOWNLOAD_BYTES

    server = fake_comfy(view="huge")
    out_dir = tmp_path / "out"
    code, out, err = run_hostile(capsys, server, out_dir)
    assert code == 1 and out == ""
    assert (f"download of wanfit_00001_.mp4 from {server.url}/view stopped: it announced 1000000000000 bytes, more "
            f"than the {MAX_DOWNLOAD_BYTES}-byte limit") in err, err
    assert f"Nothing was saved as {out_dir / 'wanfit_00001_.mp4'}" in err
    assert list(out_dir.iterdir()) == [], "no partial file, nothing under the final name"


@pytest.mark.parametrize("how", ["stall", "trickle"])
def test_timeout_covers_a_stalled_or_trickling_view(workflows, fake_comfy, tmp_path, capsys, how):
    import time

    server = fake_comfy(view=how)
    started = time.monotonic()
    code, out, err = run_hostile(capsys, server, tmp_path / "out", "--timeout", "1.5")
    assert time.monotonic() - started < 5, "--timeout bounds the download"
    assert code == 1 and out == ""
    assert "download of wanfit_00001_.mp4 from" in err and "the time limit (--timeout) ran out" in err, err
    assert "start ComfyUI" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_view_that_stops_answering_is_not_called_unreachable(fake_comfy, tmp_path):
    from wanfit.remote.client import ComfyServerError

    server = fake_comfy(view="stall")
    file_ref = {"filename": "wanfit_00001_.mp4", "subfolder": "video", "type": "output"}
    with pytest.raises(ComfyServerError) as raised:
        ComfyClient(server.url, request_timeout_s=0.5).download(file_ref, tmp_path / "out")
    message = str(raised.value)
    assert "stopped: no data for 0.5 s" in message and "start ComfyUI" not in message, message


def test_progress_numbers_from_the_server_are_clamped():
    import io

    from wanfit.remote.progress import ProgressPrinter

    for tty in (True, False):
        stream = io.StringIO()
        printer = ProgressPrinter({"7": {"class_type": "KSampler", "inputs": {}}}, stream=stream, tty=tty)
        for value, maximum in ((1e12, 2), (5e7, 1), (-5, 3), (float("nan"), 3), ("9", 3), (2, 1e300),
                               (True, 2), (3, float("inf")), ([1], 2)):
            printer("progress", {"value": value, "max": maximum, "node": "7"})
        printer("progress", {"value": 1, "max": 2, "node": "x" * 10**6})
        assert len(stream.getvalue()) < 2000, stream.getvalue()[:300]
    assert "[####################] 2/2" in stream.getvalue()


HOSTILE_ANSWERS = [
    # (case, hostile server options, exit code, expected text on stderr)
    ("system_stats not json", {"system_stats": b"<html>hi</html>"}, 1,
     "ComfyUI answered GET /system_stats with something that is not JSON"),
    ("history not json", {"history": b"{\"p1\": "}, 1,
     "ComfyUI answered GET /history/p1 with something that is not JSON"),
    ("history a list", {"history": [1, 2]}, 1,
     "ComfyUI answered GET /history/p1 with JSON that is list, not an object"),
    ("history entry a string", {"history": {"p1": "done"}}, 1, "ComfyUI's /history/p1 holds str, not an object"),
    ("status a list", {"history": {"p1": {"status": [], "outputs": {}}}}, 1,
     "ComfyUI's /history/p1 has a \"status\" that is list, not an object"),
    ("outputs a list", {"history": {"p1": {"status": {"completed": True}, "outputs": []}}}, 1,
     "ComfyUI's /history/p1 has \"outputs\" that are list, not an object"),
    ("error messages of odd shapes", {"history": {"p1": {"status": {"completed": False, "status_str": "error",
                                                                    "messages": [1, ["execution_error", 5], []]}}}},
     1, "prompt p1 failed in node None (None): None: "),
    ("images a dict", {"outputs": {"10": {"images": {"filename": "a.mp4"}}}}, 1, "finished but saved no video"),
    ("filename a number", {"outputs": {"10": {"images": [{"filename": 5, "type": "output"}]}}}, 1,
     "finished but saved no video"),
    ("prompt answer a list", {"prompt": [1]}, 1, "ComfyUI answered POST /prompt without a prompt_id: [1]"),
    ("prompt answer without id", {"prompt": {"prompt_id": None}}, 1,
     "ComfyUI answered POST /prompt without a prompt_id"),
    ("ws list", {"ws": ["[1, 2]"]}, 0, "ignoring malformed /ws messages (a list where an object belongs)"),
    ("ws data a string", {"ws": ['{"type": "progress", "data": "x"}']}, 0,
     "ignoring malformed /ws messages (\"data\" is a str, not an object)"),
    ("ws not json", {"ws": ["{{{"]}, 0, "ignoring malformed /ws messages (not JSON)"),
    ("ws odd progress", {"ws": ['{"type": "progress", "data": {"value": 1e12, "max": 2, "node": "7"}}',
                                '{"type": "progress", "data": {"value": "x", "max": {}, "node": "7"}}',
                                '{"type": "execution_cached", "data": {"nodes": 5}}']}, 0, "finished"),
]


@pytest.mark.parametrize("case, hostile, expected_code, expected", HOSTILE_ANSWERS, ids=[r[0] for r in HOSTILE_ANSWERS])
def test_malformed_answers_give_one_clear_line(workflows, fake_comfy, tmp_path, capsys, case, hostile, expected_code,
                                              expected):
    server = fake_comfy(**hostile)
    code, out, err = run_hostile(capsys, server, tmp_path / "out", "--timeout", "10")
    assert code == expected_code, f"{case}: exit {code}, stderr: {err}"
    assert expected in err, f"{case}: expected {expected!r} in: {err}"
    assert len(err) < 5000
    if expected_code:
        assert err.count("wanfit run: ") == 1 and out == ""
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_nul_or_a_path_in_the_file_name_stays_inside_out(workflows, fake_comfy, tmp_path, capsys):
    for name, saved_as in (("wan\x00fit.mp4", "wan_fit.mp4"), ("../../escape.mp4", "escape.mp4"), (".", None)):
        server = fake_comfy(outputs={"10": {"images": [{"filename": name, "subfolder": "", "type": "output"}],
                                            "animated": [True]}})
        server.hostile["view_any_name"] = True
        out_dir = tmp_path / "out"
        code, out, err = run_hostile(capsys, server, out_dir)
        assert code == 0, err
        [path] = [Path(line) for line in out.splitlines()]
        assert path.parent == out_dir and (saved_as is None or path.name == saved_as), path
        assert path.read_bytes() == FAKE_MP4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "workflows"]
