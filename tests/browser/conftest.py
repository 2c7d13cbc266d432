"""Browser tier: ComfyUI's own front end in headless Chromium (Debian's package, driven by Playwright),
against a real ComfyUI server with the package installed.

Screenshots go to $WANFIT_ARTIFACTS_DIR (default artifacts/browser/<core version>, ignored by git).
With WANFIT_FRONTEND_ROOT set to a front end's static folder (tests/run.sh unpacks PyPI's newest
comfyui-frontend-package into ~/.cache/wanfit/frontend/<version>), the server serves that front end
(--front-end-root) instead of the core's own, and the screenshots go to <core version>-frontend-<folder name>.
"""

import json
import os
from pathlib import Path
import re
import shutil

import pytest

from tests.fixtures.generate import ensure_fixtures, fixture_dir
from tests.host.conftest import comfyui  # noqa: F401  (the same checkout fixture as the host tier)
from tests.host.server import ComfyServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WANFIT_CHROMIUM", "/usr/bin/chromium")
FRONTEND_ROOT = os.environ.get("WANFIT_FRONTEND_ROOT") or None
# Flags that work on a machine with no screen, no GPU and a closed network (no background fetches).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
# The committed pictures (template thumbnails, README screenshots) are made on this core's front end:
#   WANFIT_WRITE_PICTURES=1 bash tests/run.sh --core 0.3.64 tests/browser
PICTURE_CORE = "0.3.64"
# A fresh user folder as a returning user has it: no first-run template dialog, no release check,
# the classic canvas nodes both front ends draw by default, no minimap or canvas info over the graph.
EDITOR_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.VersionCompatibility.DisableWarnings": True,
    "Comfy.VueNodes.Enabled": False,
    "Comfy.Locale": "en",
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.OnboardingCoachmarks.Seen": ["appMode", "firstRun"],
}


def core_version(path):
    text = (Path(path) / "comfyui_version.py").read_text()
    return re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text).group(1)


@pytest.fixture(scope="session")
def version(comfyui):
    return core_version(comfyui)


def frontend_label():
    """'' for the core's own front end, else '-frontend-<folder name>' (the cache names it by version)."""
    return f"-frontend-{Path(FRONTEND_ROOT).name}" if FRONTEND_ROOT else ""


@pytest.fixture(scope="session")
def artifacts(version):
    root = Path(os.environ.get("WANFIT_ARTIFACTS_DIR") or REPO_ROOT / "artifacts" / "browser")
    folder = root / (version + frontend_label())
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def publish(version):
    """publish(screenshot, repo path, width): with WANFIT_WRITE_PICTURES=1 on PICTURE_CORE, a resized
    JPEG copy goes into the repository (README pictures, template thumbnails). Returns whether it did."""
    def write(source, target, width):
        if os.environ.get("WANFIT_WRITE_PICTURES") != "1" or version != PICTURE_CORE or FRONTEND_ROOT:
            return False
        from PIL import Image

        with Image.open(source) as image:
            if width and width != image.width:
                image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
            image.convert("RGB").save(REPO_ROOT / target, quality=88)
        return True
    return write


@pytest.fixture(scope="session")
def server(comfyui, tmp_path_factory):
    ensure_fixtures(comfyui)
    work_dir = tmp_path_factory.mktemp("comfyui")
    settings = work_dir / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(EDITOR_SETTINGS))
    if FRONTEND_ROOT and not (Path(FRONTEND_ROOT) / "index.html").is_file():
        pytest.fail(f"WANFIT_FRONTEND_ROOT={FRONTEND_ROOT} holds no front end (no index.html). Fix: unset it, or "
                    "let tests/run.sh fetch one (README, Running the tests).")
    extra_args = ["--front-end-root", str(Path(FRONTEND_ROOT).resolve())] if FRONTEND_ROOT else []
    comfy_server = ComfyServer(comfyui, fixture_dir(), work_dir, extra_args=extra_args).start()
    yield comfy_server
    comfy_server.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"No Chromium at {CHROMIUM}. Fix: apt-get install chromium (tests/run.sh does it), "
                    "or set WANFIT_CHROMIUM to a Chromium binary.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives Chromium a fresh, temporary --user-data-dir
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def opened_editor(browser, server):
    """(context, Editor): the graph editor opened in a new browser context, console messages and failed answers
    recorded from the start."""
    from tests.browser.editor import Editor

    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    return context, Editor(context.new_page(), server.url).open()


@pytest.fixture
def editor(browser, server):
    """The graph editor, freshly opened in a new browser context (no tabs or storage from another test)."""
    context, session = opened_editor(browser, server)
    yield session
    context.close()


@pytest.fixture(scope="module")
def workflow_editor(browser, server):
    """One editor for a module's tests that each open a shipped workflow in a new tab and read what is drawn: the
    front end starts (4-5 s of this 2-core CPU) once a module rather than once a test."""
    context, session = opened_editor(browser, server)
    yield session
    context.close()


@pytest.fixture(scope="module")
def hostile_answers_editor(browser, server):
    """One editor for the misbehaving-answer cases, apart from workflow_editor: the failed answers they provoke
    must not reach another test's checks."""
    context, session = opened_editor(browser, server)
    yield session
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    sessions = [value for name, value in getattr(item, "funcargs", {}).items() if name.endswith("editor")]
    if report.when == "call" and report.failed and sessions:
        session = sessions[0]
        report.sections.append(("browser console", "\n".join(session.console_lines()[-60:])))
        if "artifacts" in item.funcargs:
            session.page.screenshot(path=str(item.funcargs["artifacts"] / f"FAILED_{item.name}.png"))
