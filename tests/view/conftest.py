"""Fixtures of the viewer tests: a live ``dcopt view`` server on real models, and a headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

from click.testing import CliRunner

from dcopt.examples import TINY_RESNET
from dcopt.testing import export_transformer, light_zoo_path
from dcopt.view.api import ViewerAPI
from dcopt.view.server import ViewServer
from dcopt.view.session import ViewSession

RESNET50 = str(light_zoo_path("resnet50"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class Client:
    """JSON over HTTP to a running server, as the page talks to it."""

    def __init__(self, url: str):
        self.url = url

    def raw(self, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str):
        status, body = self.raw(path)
        assert status == 200, body
        return json.loads(body)

    def post(self, path: str, body: dict | None = None):
        status, out = self.raw(path, body or {})
        assert status == 200, out
        return json.loads(out)

    def op_stage(self, name: str) -> int:
        """Index of the last op-level stage called ``name`` (the tests name stages, so a pass added
        to O3 does not shift what they look at)."""
        session = self.get("/api/session")
        op_level = session["stages"][:session["editable_until"] + 1]
        return max(i for i, stage in enumerate(op_level) if stage["name"] == name)


def serve(model: str):
    server = ViewServer(ViewerAPI(ViewSession(model))).start()
    return server, Client(server.url)


@pytest.fixture(scope="module")
def resnet_server():
    server, client = serve(RESNET50)
    yield server, client
    server.stop()


@pytest.fixture(scope="session")
def bert_path(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return str(export_transformer("bert", tmp_path_factory.mktemp("bert") / "bert.onnx", hidden=64, layers=2,
                                  heads=4, seq=32))


def chromium_executable() -> str | None:
    """Debian's chromium (``apt-get install chromium``), or one named by $DCOPT_CHROMIUM."""
    for candidate in (os.environ.get("DCOPT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in dcopt[test])")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium executable found (apt-get install chromium, or set DCOPT_CHROMIUM)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def build_and_run(tmp_path_factory):
    """(build directory, bench run id) of the tiny ResNet, made by the real commands (5 s)."""
    from dcopt.cli import app
    from dcopt.runs.select import list_runs

    build = tmp_path_factory.mktemp("builds") / "tiny.dcopt"
    result = CliRunner().invoke(app, ["compile", str(TINY_RESNET), "-o", str(build), "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["bench", str(TINY_RESNET), "--reps", "10", "--runtimes", "dcopt,onnxruntime",
                                      "-q"])
    assert result.exit_code == 0, result.output
    run = next(r for r in list_runs() if r.kind == "bench" and r.model == "tiny_resnet")
    return build, run.id
