"""What a test reads from and does in the live graph editor (ComfyUI front end 1.27, 1.49 and 1.58)."""

import json
from pathlib import Path
import time

from workflows.layout import overlaps as overlapping  # noqa: F401  (pairs of intersecting labelled boxes)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_URL = "/extensions/ComfyUI-WanFit/"
NODE_TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT in both front ends

READ_NODES = """() => app.canvas.graph.nodes.map((node) => ({
    id: Number(node.id), type: node.type, title: node.title, mode: node.mode,
    pos: Array.from(node.pos), size: Array.from(node.size), collapsed: !!node.flags?.collapsed,
    registered: !!LiteGraph.registered_node_types[node.type],
}))"""
READ_GROUPS = """() => (app.canvas.graph.groups ?? app.canvas.graph._groups).map((group) => ({
    title: group.title, bounding: Array.from(group._bounding ?? [...group.pos, ...group.size]),
}))"""
READ_LINKS = """() => {
    const links = app.canvas.graph.links;
    const all = links instanceof Map ? [...links.values()] : Object.values(links ?? {});
    return all.filter(Boolean).map((link) => ({origin: Number(link.origin_id), target: Number(link.target_id)}));
}"""
READ_VIEW = """() => {
    const ds = app.canvas.ds;
    const rect = app.canvas.canvas.getBoundingClientRect();
    return {scale: ds.scale, offset: Array.from(ds.offset), canvas: [rect.left, rect.top, rect.width, rect.height]};
}"""
# The report area of a node: its text, where it is on screen, whether anything covers it.
READ_REPORT = """(id) => {
    const node = app.canvas.graph.getNodeById(id);
    const widget = node?.widgets?.find((w) => w.name === "wanfit_report");
    if (!widget) return null;
    const area = widget.element;
    const box = area.getBoundingClientRect();
    const ds = app.canvas.ds;
    const canvas = app.canvas.canvas.getBoundingClientRect();
    const toScreen = (x, y) => [canvas.left + (x + ds.offset[0]) * ds.scale, canvas.top + (y + ds.offset[1]) * ds.scale];
    const [left, top] = toScreen(node.pos[0], node.pos[1]);
    const [right, bottom] = toScreen(node.pos[0] + node.size[0], node.pos[1] + node.size[1]);
    const probes = [[0.5, 0.5], [0.05, 0.08], [0.95, 0.08], [0.05, 0.92], [0.95, 0.92]].map(([fx, fy]) => {
        const hit = document.elementFromPoint(box.left + fx * box.width, box.top + fy * box.height);
        return hit === area || area.contains(hit);
    });
    const style = getComputedStyle(area);
    return {
        text: area.value, tag: area.tagName, box: [box.left, box.top, box.width, box.height],
        node_box: [left, top, right - left, bottom - top], probes_on_area: probes,
        visible: style.display !== "none" && style.visibility !== "hidden" && box.width > 0 && box.height > 0,
        overflow_y: style.overflowY, white_space: style.whiteSpace,
        scroll_height: area.scrollHeight, client_height: area.clientHeight, scroll_width: area.scrollWidth,
        client_width: area.clientWidth,
    };
}"""


def ui_workflow(name):
    return json.loads((REPO_ROOT / "workflows" / "ui" / f"{name}.json").read_text())


def node_box(node):
    """[x, y, w, h] of a node as drawn: its title bar sits above pos."""
    x, y = node["pos"]
    width, height = node["size"]
    return [x, y - NODE_TITLE_HEIGHT, width, height + NODE_TITLE_HEIGHT]


def inside(inner, outer, slack=1.0):
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return x >= ox - slack and y >= oy - slack and x + w <= ox + ow + slack and y + h <= oy + oh + slack


class Editor:
    def __init__(self, page, url):
        self.page = page
        self.url = url
        self.console = []  # (type, text, url)
        self.failed_answers = []  # (status, url)
        page.on("console", lambda message: self.console.append(
            (message.type, message.text, (message.location or {}).get("url", ""))))
        page.on("pageerror", lambda error: self.console.append(("pageerror", f"{error}\n{error.stack or ''}", "")))
        page.on("response", lambda response: response.status >= 400 and self.failed_answers.append(
            (response.status, response.url)))

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_function("() => window.app?.extensionManager !== undefined && !!window.app.graph",
                                    timeout=90_000)
        self.page.wait_for_function("() => app.extensions.some((e) => e.name === 'WanFit.Editor')")
        return self

    def console_lines(self):
        return [f"[{kind}] {text[:400]} ({where})" for kind, text, where in self.console]

    def package_errors(self):
        """Console errors raised by the package's script, and failed answers of its routes and files."""
        errors = [line for (kind, text, where), line in zip(self.console, self.console_lines())
                  if kind in ("error", "pageerror")
                  and ("wanfit" in where.lower() or "wanfit" in text.lower())]
        errors += [f"HTTP {status} {url}" for status, url in self.failed_answers
                   if "/wanfit/" in url or PACKAGE_URL in url]
        return errors

    def evaluate(self, script, argument=None):
        return self.page.evaluate(script, argument)

    def load(self, name, workflow=None):
        """Open a shipped UI workflow (or `workflow`, a UI-format dict, under that name) as a new tab would."""
        self.evaluate("async ([workflow, name]) => { await app.loadGraphData(workflow, true, true, name); }",
                      [workflow or ui_workflow(name), name])
        self.page.wait_for_timeout(800)  # a frame or two for the canvas and the DOM widgets

    def nodes(self):
        return self.evaluate(READ_NODES)

    def groups(self):
        return self.evaluate(READ_GROUPS)

    def links(self):
        return self.evaluate(READ_LINKS)

    def view(self):
        return self.evaluate(READ_VIEW)

    def canvas_shows(self, box, node_id=None):
        """Whether the canvas itself (or the node's own DOM widgets; no panel, bar or dialog of the
        editor) is at each corner and the centre of a graph-space [x, y, w, h] box on screen."""
        return self.evaluate("""([[x, y, w, h], id]) => {
            const node = id === null ? null : app.canvas.graph.getNodeById(id);
            const own = (node?.widgets ?? []).map((widget) => widget.element).filter(Boolean);
            const ds = app.canvas.ds; const rect = app.canvas.canvas.getBoundingClientRect();
            const points = [[0.5, 0.5], [0.02, 0.02], [0.98, 0.02], [0.02, 0.98], [0.98, 0.98]];
            return points.map(([fx, fy]) => {
                const sx = rect.left + (x + fx * w + ds.offset[0]) * ds.scale;
                const sy = rect.top + (y + fy * h + ds.offset[1]) * ds.scale;
                const hit = document.elementFromPoint(sx, sy);
                return hit === app.canvas.canvas || own.some((element) => element.contains(hit));
            });
        }""", [box, node_id])

    def report(self, node_id):
        return self.evaluate(READ_REPORT, node_id)

    def wait_for_report(self, node_id, predicate, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        report = None
        while time.monotonic() < deadline:
            report = self.report(node_id)
            if report and predicate(report["text"]):
                return report
            self.page.wait_for_timeout(200)
        raise AssertionError(f"node {node_id}'s report never matched; last: {report and report['text']!r}")

    def set_widget(self, node_id, name, value):
        """Change a widget as the editor does on an edit: its value, then its callback."""
        self.evaluate("""([id, name, value]) => {
            const node = app.canvas.graph.getNodeById(id);
            const widget = node.widgets.find((w) => w.name === name);
            if (typeof widget.setValue === "function") widget.setValue(value, {node, canvas: app.canvas});
            else { widget.value = value; widget.callback?.(value, app.canvas, node); }
        }""", [node_id, name, value])

    def queue_api_prompt(self, prompt):
        """POST a prompt from the page, as this editor's client, so its nodes get the run's messages."""
        return self.evaluate("""async (prompt) => {
            const api = window.comfyAPI?.api?.api ?? app.api;
            const response = await api.fetchApi("/prompt", {method: "POST", headers: {"Content-Type": "application/json"},
                body: JSON.stringify({prompt, client_id: api.clientId ?? api.initialClientId})});
            return {status: response.status, body: await response.json()};
        }""", prompt)

    def screenshot(self, path, **options):
        self.page.screenshot(path=str(path), **options)
        return path
