"""The template browser: names that say what each workflow does and needs, and thumbnails that are
pictures of the graph, made here.

    WANFIT_WRITE_PICTURES=1 bash tests/run.sh --core 0.3.64 tests/browser

writes the thumbnails into example_workflows/ (made on the oldest supported core, whose front end
the committed workflows are built against, see conftest.PICTURE_CORE); otherwise they go to the
artifacts folder only.
"""

import io
import json
from pathlib import Path
import urllib.parse
import urllib.request

import pytest

from tests.browser.conftest import PICTURE_CORE
from tests.browser.editor import ui_workflow
from workflows.build import TEMPLATE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "ComfyUI-WanFit"
THUMBNAIL_SIZE = (800, 500)


def get(server, path):
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_the_server_lists_every_template_under_its_name_with_its_thumbnail(server):
    _, _, body = get(server, "/api/workflow_templates")
    assert sorted(json.loads(body)[PACKAGE]) == sorted(TEMPLATE_NAMES.values())
    for title in TEMPLATE_NAMES.values():
        status, kind, data = get(server, f"/api/workflow_templates/{PACKAGE}/{urllib.parse.quote(title)}.jpg")
        assert status == 200 and kind == "image/jpeg" and data[:3] == b"\xff\xd8\xff", title


@pytest.mark.parametrize("name", sorted(TEMPLATE_NAMES))
def test_a_template_name_says_what_the_workflow_does_and_needs(name):
    title = TEMPLATE_NAMES[name]
    assert ("text to video" in title or "image to video" in title or "Decode" in title), title
    assert " GB GPU" in title or "any GPU" in title, "the card it needs"
    assert title.split()[0].isdigit(), "a number keeps the list in order when sorted by name"
    assert not set(title) & set("#?%/\\"), "characters a URL or file name cannot carry"


def test_the_template_browser_shows_the_titles_under_the_package_label(editor, artifacts):
    labels = json.loads((REPO_ROOT / "locales" / "en" / "main.json").read_text())["templateWorkflows"]["category"]
    editor.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    label = editor.page.get_by_text(labels[PACKAGE], exact=True).first
    label.wait_for(state="visible", timeout=20_000)
    label.click()
    for title in TEMPLATE_NAMES.values():
        editor.page.get_by_text(title, exact=True).first.wait_for(state="attached", timeout=20_000)
    editor.page.wait_for_timeout(1500)  # thumbnails
    editor.screenshot(artifacts / "template_browser.png")
    broken = editor.evaluate("""() => [...document.querySelectorAll('img')]
        .filter((img) => img.src.includes('/workflow_templates/') && img.complete && img.naturalWidth === 0)
        .map((img) => img.src)""")
    assert broken == []


def capture_thumbnail(editor, name, path):
    """The workflow as it opens (its initial view: the note, the plan and the loaders), canvas only; the
    plan shows what it says for a 24 GB card (on a card that small it fits every shipped job)."""
    editor.load(name)
    if editor.report(10) is not None:
        editor.set_widget(10, "mode", "PROSUMER_24GB")
        editor.wait_for_report(10, lambda text: "[PROSUMER_24GB]" in text)
    editor.page.wait_for_timeout(500)
    box = editor.evaluate("() => { const r = app.canvas.canvas.getBoundingClientRect(); return [r.left, r.top]; }")
    left, top = box[0] + 60, box[1] + 60  # clear of the editor's floating bars
    editor.page.screenshot(path=str(path), type="jpeg", quality=85,
                           clip={"x": left, "y": top, "width": THUMBNAIL_SIZE[0] * 1.6, "height": THUMBNAIL_SIZE[1] * 1.6})
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").resize(THUMBNAIL_SIZE, Image.LANCZOS).save(path, quality=85)


@pytest.mark.parametrize("name", sorted(TEMPLATE_NAMES))
def test_a_thumbnail_is_a_picture_of_its_graph(workflow_editor, artifacts, version, publish, name):
    from PIL import Image, ImageStat

    editor = workflow_editor
    fresh = artifacts / "thumbnails" / f"{TEMPLATE_NAMES[name]}.jpg"
    fresh.parent.mkdir(exist_ok=True)
    capture_thumbnail(editor, name, fresh)
    committed = REPO_ROOT / "example_workflows" / f"{TEMPLATE_NAMES[name]}.jpg"
    publish(fresh, committed.relative_to(REPO_ROOT), THUMBNAIL_SIZE[0])
    with Image.open(committed) as image:
        assert image.format == "JPEG" and image.size == THUMBNAIL_SIZE
        picture = image.convert("L")
        assert ImageStat.Stat(picture).stddev[0] > 10, "not a blank or single-colour card"
    if version == PICTURE_CORE:
        # the same front end draws the same graph: the committed picture matches a fresh one
        with Image.open(committed) as old, Image.open(fresh) as new:
            difference = ImageStat.Stat(Image.frombytes("L", THUMBNAIL_SIZE, bytes(
                abs(a - b) for a, b in zip(old.convert("L").tobytes(), new.convert("L").tobytes())))).mean[0]
        assert difference < 12, (f"example_workflows/{committed.name} is not what the graph looks like now "
                                 f"(mean difference {difference:.1f}): rerun with WANFIT_WRITE_PICTURES=1")
    assert len(ui_workflow(name)["nodes"]) > 3
