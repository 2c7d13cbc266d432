"""The graph editor as a person sees it: the shipped workflows, the plan before Run, errors, reports, help."""

import json
import urllib.request

import pytest

from tests.browser.editor import inside, node_box, overlapping, ui_workflow
from tests.fixtures.workflows import for_tiny_fixtures
from wanfit.workflows import workflow_names

NAMES = workflow_names()
GENERATING = [name for name in NAMES if name != "decode_saved_latent"]
PLAN_NODE = 10
PLAN_WIDGETS = ["model_variant", "width", "height", "frames", "batch", "cfg", "mode", "reserve_vram_gb", "weight_dtype",
                "text_encoder_device"]
LOW_QUALITY_SCALE = 0.6  # below this zoom LiteGraph draws nodes without their text


def test_the_package_loads_with_no_console_error(editor, artifacts):
    for name in NAMES:
        editor.load(name)
    editor.page.wait_for_timeout(1500)  # the plan previews the loads asked for
    assert editor.package_errors() == []
    node_types = editor.evaluate("() => Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith('WanFit'))")
    assert len(node_types) >= 12, node_types


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_workflow_is_readable_as_loaded(workflow_editor, artifacts, name):
    editor = workflow_editor
    editor.load(name)
    nodes = editor.nodes()
    assert len(nodes) == len(ui_workflow(name)["nodes"])
    missing = [node["type"] for node in nodes if not node["registered"]]
    assert missing == [], f"missing node types: {missing}"
    page_text = editor.page.inner_text("body").lower()
    assert "nodes are missing" not in page_text and "missing node" not in page_text, "a missing-node dialog or notice"

    boxes = [(f"{node['id']} {node['type']}", node_box(node)) for node in nodes]
    assert overlapping(boxes) == [], "nodes overlap as drawn"

    groups = editor.groups()
    assert len(groups) >= 2 and all(group["title"] for group in groups)
    assert overlapping([(group["title"], group["bounding"]) for group in groups]) == [], "groups overlap"
    notes = [node for node in nodes if node["type"] == "MarkdownNote"]
    for node in nodes:
        if node["type"] == "MarkdownNote":
            continue
        holders = [group["title"] for group in groups if inside(node_box(node), group["bounding"])]
        assert len(holders) == 1, f"{node['type']} {node['id']} is in groups {holders}"

    by_id = {node["id"]: node for node in nodes}
    backwards = [(link["origin"], link["target"]) for link in editor.links()
                 if by_id[link["origin"]]["pos"][0] + by_id[link["origin"]]["size"][0] > by_id[link["target"]]["pos"][0]]
    assert backwards == [], "links that run right to left (origin, target)"

    view = editor.view()
    assert view["scale"] >= LOW_QUALITY_SCALE, "text is drawn at the initial zoom"
    left, top, width, height = view["canvas"]
    visible = [-view["offset"][0], -view["offset"][1], width / view["scale"], height / view["scale"]]
    assert len(notes) == 1 and inside(node_box(notes[0]), visible), "the model-files note is in the initial view"
    assert all(editor.canvas_shows(node_box(notes[0]), notes[0]["id"])), "no panel or bar of the editor covers the note"
    plan = by_id.get(PLAN_NODE)
    if plan:
        assert inside(node_box(plan), visible), "the plan node is in the initial view"
        # the body only: the editor's DOM report area sits over the canvas there
        assert all(editor.canvas_shows(node_box(plan), plan["id"])), "no panel or bar of the editor covers the plan"
    editor.screenshot(artifacts / f"workflow_{name}.png")


def wait_for_preview(editor, says, timeout_s=30):
    return editor.wait_for_report(PLAN_NODE, lambda text: says in text, timeout_s)


def test_the_plan_shows_before_run_and_follows_the_widgets(editor, artifacts, publish):
    editor.load("ti2v_5b_t2v")
    report = editor.wait_for_report(PLAN_NODE, lambda text: "1280x704x121" in text or "(before Run)" in text)
    assert "TI2V-5B 1280x704x121" in report["text"]
    # the plan text names the choices and what there is, or what would fit
    assert "Before Run, on this machine" in report["text"] or "What would fit" in report["text"]
    # the README's picture of the editor: this workflow alone, as it opens (workflow_editor's tabs accumulate)
    editor.screenshot(artifacts / "editor_ti2v_5b_t2v.png")
    publish(artifacts / "editor_ti2v_5b_t2v.png", "docs/images/editor_ti2v_5b_t2v.jpg", 1200)

    editor.set_widget(PLAN_NODE, "width", 320)
    editor.set_widget(PLAN_NODE, "height", 192)
    editor.set_widget(PLAN_NODE, "frames", 9)
    report = wait_for_preview(editor, "320x192x9")
    assert report["text"].startswith("Before Run, on this machine:\nWanFit plan: TI2V-5B 320x192x9")
    assert "Predicted" in report["text"] or "predicted" in report["text"]

    # one width-change later, a new answer
    editor.set_widget(PLAN_NODE, "width", 352)
    assert "352x192x9" in wait_for_preview(editor, "352x192x9")["text"]

    # the official size, planned for an 8 GB card (mode names a tier: this machine's RAM, that card)
    for widget, value in (("width", 1280), ("height", 704), ("frames", 121), ("mode", "CONSUMER_8GB")):
        editor.set_widget(PLAN_NODE, widget, value)
    report = wait_for_preview(editor, "[CONSUMER_8GB]")
    assert "TI2V-5B 1280x704x121" in report["text"] and "Predicted peak VRAM" in report["text"]
    box = editor.evaluate("""() => { const node = app.canvas.graph.getNodeById(10); const ds = app.canvas.ds;
        const rect = app.canvas.canvas.getBoundingClientRect();
        return [rect.left + (node.pos[0] - 10 + ds.offset[0]) * ds.scale, rect.top + (node.pos[1] - 40 + ds.offset[1]) * ds.scale,
                (node.size[0] + 20) * ds.scale, (node.size[1] + 50) * ds.scale]; }""")
    editor.screenshot(artifacts / "plan_preview_8gb.png", clip=dict(zip(("x", "y", "width", "height"), box)))
    publish(artifacts / "plan_preview_8gb.png", "docs/images/plan_preview.jpg", None)
    assert editor.package_errors() == []


def test_a_plan_node_added_from_the_library_shows_its_plan_at_once(editor):
    editor.load("decode_saved_latent")  # a graph with no plan node
    node_id = editor.evaluate("""() => { const node = LiteGraph.createNode("WanFitOffloadPlan");
        node.pos = [600, 700]; app.canvas.graph.add(node); return Number(node.id); }""")
    report = editor.wait_for_report(node_id, lambda text: "TI2V-5B 1280x704x121" in text)
    assert report["text"].startswith(("Before Run, on this machine:", "Does not fit this machine (before Run):"))
    node = next(node for node in editor.nodes() if node["id"] == node_id)
    assert node["size"][1] >= 600, "the node is tall enough for its widgets and its report area"
    assert editor.package_errors() == []


def test_a_width_off_the_grid_shows_the_plans_message_on_the_node_before_run(editor):
    editor.load("ti2v_5b_t2v")
    editor.set_widget(PLAN_NODE, "width", 1008)  # the widget steps by 16; TI2V-5B needs a multiple of 32
    report = wait_for_preview(editor, "width=1008 is invalid: expected a multiple of 32 for TI2V-5B. Fix: use 992 or 1024")
    assert report["text"].startswith("Cannot plan this (width) (before Run):")
    assert editor.package_errors() == [], "a 400 from the plan is text on the node, not a console error"


@pytest.mark.parametrize("name, widget, value, says", [
    ("a14b_t2v", "width", 1000, "width=1000 is invalid: expected a multiple of 16"),
    ("ti2v_5b_t2v", "frames", 80, "frames=80 is invalid: expected 4n+1"),
])
def test_a_saved_workflow_with_a_bad_size_shows_the_plans_message_before_run(editor, name, widget, value, says):
    """The widgets step in valid sizes, but a workflow file (older, hand-edited, from elsewhere) may hold any."""
    workflow = ui_workflow(name)
    plan = next(node for node in workflow["nodes"] if node["id"] == PLAN_NODE)
    plan["widgets_values"][PLAN_WIDGETS.index(widget)] = value
    editor.load(name, workflow)
    report = wait_for_preview(editor, says)
    assert report["text"].startswith(f"Cannot plan this ({widget}) (before Run):")
    assert editor.package_errors() == [], "a 400 from the plan is text on the node, not a console error"


def test_a_job_that_cannot_fit_says_what_would(editor, artifacts):
    editor.load("a14b_t2v")
    editor.set_widget(PLAN_NODE, "mode", "CONSUMER_8GB")
    editor.set_widget(PLAN_NODE, "frames", 961)
    report = wait_for_preview(editor, "does not fit")
    assert report["text"].startswith("Does not fit this machine (before Run):")
    assert "What would fit" in report["text"]
    assert editor.package_errors() == [], "a 422 from the plan is text on the node, not a console error"
    editor.screenshot(artifacts / "plan_does_not_fit.png")


def error_text_on_screen(editor, says, timeout_s=30):
    """Wait until the page shows `says`. Front end 1.27 shows a dialog with every node's message; 1.49
    shows an overlay whose "View details" opens its Errors panel, where each node's (i) shows its message;
    1.58's "View details" opens the Issues tab of its Workflow Overview panel, the same (i) per node."""
    deadline_ms = timeout_s * 1000
    waited = 0
    while waited < deadline_ms:
        located = editor.page.get_by_text(says, exact=False)
        for index in range(located.count()):
            if located.nth(index).is_visible():
                return located.nth(index).inner_text()
        for opener in ('[data-testid="error-overlay-see-errors"]', 'button:has-text("View details")',
                       'button:has-text("See Errors")'):
            button = editor.page.locator(opener)
            if button.count() and button.first.is_visible():
                button.first.click()
                break
        details = editor.page.locator('button[aria-label^="Info for "][aria-expanded="false"]')
        for index in range(details.count()):
            if details.nth(index).is_visible():
                details.nth(index).click()
        editor.page.wait_for_timeout(500)
        waited += 500
    raise AssertionError(f"{says!r} never appeared on screen; page text: {editor.page.inner_text('body')[:2000]}")


def test_a_missing_model_shows_the_loaders_message_and_nothing_runs(editor, server, artifacts):
    history_before = json.loads(urllib.request.urlopen(server.url + "/history", timeout=10).read())
    editor.load("ti2v_5b_t2v")
    editor.evaluate("() => app.queuePrompt(0, 1)")
    text = error_text_on_screen(editor, "Model file missing: wan2.2_ti2v_5B_fp16.safetensors")
    assert "python -m wanfit models --download" in editor.page.inner_text("body") or "download" in text
    editor.screenshot(artifacts / "missing_model.png")
    queue = json.loads(urllib.request.urlopen(server.url + "/queue", timeout=10).read())
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    history = json.loads(urllib.request.urlopen(server.url + "/history", timeout=10).read())
    assert history.keys() == history_before.keys(), "no part of the graph ran (no green success)"


def test_a_finished_runs_reports_are_fully_visible_on_their_nodes(editor, server, artifacts):
    editor.load("ti2v_5b_t2v")
    prompt, _ = for_tiny_fixtures("ti2v_5b_t2v", server.work_dir / "input", filename_prefix="video/browser_run")
    answer = editor.queue_api_prompt(prompt)
    assert answer["status"] == 200, answer
    report = editor.wait_for_report(60, lambda text: "decode" in text.lower() or "tile" in text.lower(),
                                    timeout_s=600)
    reporting = [10, 11, 24, 41, 60]
    editor.screenshot(artifacts / "after_run.png")
    texts = {}
    for node_id in reporting:
        # bring the node into view at 100 % (the editor hides DOM widgets of nodes off screen)
        editor.evaluate("""(id) => { const node = app.canvas.graph.getNodeById(id); const ds = app.canvas.ds;
            ds.scale = 1; ds.offset[0] = 300 - node.pos[0]; ds.offset[1] = 200 - node.pos[1];
            app.canvas.setDirty(true, true); }""", node_id)
        editor.page.wait_for_timeout(500)
        report = editor.wait_for_report(node_id, lambda text: len(text) > 20, timeout_s=60)
        texts[node_id] = report["text"]
        assert report["tag"] == "TEXTAREA" and report["visible"], node_id
        assert report["white_space"] in ("pre-wrap", "pre-line"), "long lines wrap instead of running off the node"
        assert report["scroll_width"] <= report["client_width"] + 1, "no line is cut off at the side"
        assert report["overflow_y"] in ("auto", "scroll"), "a long report scrolls"
        assert inside(report["box"], report["node_box"], slack=2), f"node {node_id}'s report sits on its node"
        assert all(report["probes_on_area"]), f"something covers node {node_id}'s report: {report['probes_on_area']}"
        if report["scroll_height"] > report["client_height"]:
            scrolled = editor.evaluate("""(id) => { const area = app.canvas.graph.getNodeById(id).widgets
                .find((w) => w.name === "wanfit_report").element; area.scrollTop = area.scrollHeight;
                return area.scrollTop; }""", node_id)
            assert scrolled > 0, f"node {node_id}'s long report scrolls"
        editor.screenshot(artifacts / f"report_{node_id}.png")
    assert texts[10].startswith("WanFit plan: TI2V-5B 64x64x5"), "the run's plan replaces the preview"
    nodes = editor.nodes()
    assert overlapping([(f"{n['id']} {n['type']}", node_box(n)) for n in nodes]) == [], "a report grew a node over another"
    assert editor.package_errors() == []


@pytest.mark.parametrize("node_id, says", [
    (10, "From the device (total and free VRAM"),  # WanFit Offload Plan's help page, not its description
    (24, "Runs the WAN model's transformer blocks over"),  # WanFit Lean Forward
])
def test_a_nodes_help_opens_from_its_info_button_and_renders(editor, artifacts, node_id, says):
    editor.load("ti2v_5b_t2v")
    editor.evaluate("""(id) => { const node = app.canvas.graph.getNodeById(id); const ds = app.canvas.ds;
        ds.scale = 1; ds.offset[0] = 500 - node.pos[0]; ds.offset[1] = 350 - node.pos[1];
        app.canvas.deselectAll?.(); app.canvas.selectNode(node); app.canvas.setDirty(true, true); }""", node_id)
    editor.page.locator('[data-testid="info-button"]').first.click()
    shown = editor.page.get_by_text(says, exact=False).first
    shown.wait_for(state="visible", timeout=20_000)
    assert "**" not in shown.inner_text(), "markdown is rendered, not shown raw"
    editor.page.wait_for_timeout(500)  # a frame or two for the DOM widgets
    editor.screenshot(artifacts / f"help_{node_id}.png")
    # selecting the node and opening its help leave its report area as wide as the node (front end 1.58's
    # side panel once narrowed it to two thirds, for good)
    report = editor.report(node_id)
    assert report["box"][2] >= 0.85 * report["node_box"][2], f"report {report['box']} on node {report['node_box']}"
    assert not [url for status, url in editor.failed_answers if "/docs/" in url], "no help request went unanswered"


HOSTILE_ANSWERS = [
    # (status, content type, body, what the node says)
    (200, "text/html", "<html><body>Bad gateway</body></html>", "is not a WanFit plan"),
    (200, "application/json", '{"status": 200, "summary": 12345}', "is not a WanFit plan"),
    (200, "application/json", '["a", "list"]', "is not a WanFit plan"),
    (502, "text/html", "<html>proxy error</html>", "Plan preview unavailable: the server answered 502"),
    (200, "application/json",
     '{"status": 200, "summary": "<img src=x onerror=\\"window.wanfitInjected=1\\">" }', "<img src=x onerror="),
    (200, "application/json", json.dumps({"status": 422, "error": "x" * 200_000}), "[... cut]"),
]


@pytest.mark.parametrize("status, content_type, body, says", HOSTILE_ANSWERS)
def test_a_misbehaving_answer_to_the_preview_is_shown_as_text_and_breaks_nothing(hostile_answers_editor, status,
                                                                                content_type, body, says):
    """A proxy page, a wrong shape, markup or a huge body where the plan should be (a reverse proxy, a
    stale server): the node says so in plain text; nothing of it runs or fills the page."""
    editor = hostile_answers_editor
    editor.page.unroute("**/wanfit/plan/preview*")
    editor.page.route("**/wanfit/plan/preview*", lambda route: route.fulfill(
        status=status, content_type=content_type, body=body))
    editor.load("ti2v_5b_t2v")
    report = editor.wait_for_report(PLAN_NODE, lambda text: says in text)
    assert len(report["text"]) <= 20_100
    assert editor.evaluate("() => window.wanfitInjected") is None, "markup from the server never runs"
    # (front end 1.27 itself throws one settings error at start-up; none may come from the package)
    assert [line for line in editor.console_lines() if line.startswith("[pageerror]") and "wanfit" in line.lower()] == []
