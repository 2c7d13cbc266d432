"""Host tier: a real ComfyUI server on 127.0.0.1, started once per session, driven over HTTP."""

import pytest

from tests.comfy_import import comfyui_path
from tests.fixtures.generate import ensure_fixtures, fixture_dir
from tests.host.server import ComfyServer
from wanfit.remote.client import ComfyClient


@pytest.fixture(scope="session")
def comfyui():
    path = comfyui_path()
    if path is None:
        pytest.fail("No ComfyUI checkout at $COMFYUI_PATH or ~/ComfyUI; see README.md, 'Running the tests'.")
    return path


@pytest.fixture(scope="session")
def fixtures(comfyui):
    return ensure_fixtures(comfyui)


@pytest.fixture(scope="session")
def server(comfyui, fixtures, tmp_path_factory):
    comfy_server = ComfyServer(comfyui, fixture_dir(), tmp_path_factory.mktemp("comfyui"))
    comfy_server.start()
    yield comfy_server
    comfy_server.stop()


@pytest.fixture(scope="session")
def client(server):
    return ComfyClient(server.url, request_timeout_s=120)


@pytest.fixture(scope="session")
def object_info(client):
    return client.object_info()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "server" in item.funcargs:
        report.sections.append(("ComfyUI server log (tail)", item.funcargs["server"].log_tail(120)))
