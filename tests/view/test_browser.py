"""``dcopt view`` driven in a real headless Chromium (Playwright): open ResNet-50 and a BERT, step
through the passes, select a node, preview and apply a patch, undo, export the pipeline and replay
it with ``dcopt opt --pipeline``; the static export opens with no server. Screenshots of the main
views go to the test's tmp dir (``pytest --basetemp DIR`` keeps them)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dcopt.cli import app
from dcopt.ir import serialize

from tests.view.conftest import RESNET50, Client, serve

RENDERED = "n => Number(document.body.dataset.rendered || 0) >= n"


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    page.goto(url)
    page.wait_for_function(RENDERED, arg=1, timeout=60_000)
    return page, errors


def click_stage(page, index: int) -> None:
    page.click(f".stage[data-index='{index}']")
    page.wait_for_function(f"document.body.dataset.stage === '{index}'", timeout=60_000)


def tap(page, node_id: str) -> None:
    page.evaluate("id => { window.dcoptCy.getElementById(id).emit('tap'); }", node_id)  # returns nothing: no element graph to serialize
    page.wait_for_function("id => document.body.dataset.detail === id", arg=node_id, timeout=60_000)


def export_and_replay(page, model: str, tmp_path) -> None:
    """Download the edited graph and the pipeline file; ``dcopt opt --pipeline`` on ``model``
    must give that same graph."""
    pipeline, edited, replayed = tmp_path / "pipeline.py", tmp_path / "edited.json", tmp_path / "replayed.json"
    for button, target in (("#export-pipeline", pipeline), ("#export-json", edited)):
        with page.expect_download() as download:
            page.click(button)
        download.value.save_as(target)
    result = CliRunner().invoke(app, ["opt", model, "--pipeline", str(pipeline), "-o", str(replayed)])
    assert result.exit_code == 0, result.output
    assert json.loads(serialize.dumps(serialize.load(replayed))) == json.loads(serialize.dumps(serialize.load(edited)))


def test_resnet50_passes_node_patch_undo_and_replay(browser, resnet_server, tmp_path):
    _, client = resnet_server
    page, errors = open_page(browser, client.url)
    first_paint = page.evaluate("window.dcoptTimings.firstPaint")
    fuse, select_impl = client.op_stage("fuse"), client.op_stage("select-impl")
    assert page.locator(".stage").count() == len(client.get("/api/session")["stages"])
    assert page.locator(".stage.selected .label").inner_text() == "fuse"
    page.screenshot(path=str(tmp_path / "1-after-fuse.png"))

    for index in range(fuse + 1):  # every op-level stage, in order
        click_stage(page, index)
        assert page.evaluate("window.dcoptCy.nodes().length") > 50
    click_stage(page, 4)
    assert "+53 added" in page.locator("#tab-report").inner_text()
    page.select_option("#side", "before")
    page.wait_for_function("window.dcoptCy.nodes('.removed').length === 106")
    page.screenshot(path=str(tmp_path / "2-fold-batchnorm-before.png"))
    page.select_option("#side", "after")

    click_stage(page, fuse)
    tap(page, "conv_Conv__211")
    node = page.locator("#tab-node").inner_text()
    assert "237.63 M" in node and "bytes fusion saved" in node and "LLVM IR" in node and "max(a, 0)" in node
    page.screenshot(path=str(tmp_path / "3-node-details.png"))

    click_stage(page, select_impl)
    page.fill("#search", "Relu")
    assert int(page.locator("#search-count").inner_text().split()[0]) == 49
    tap(page, "n2")
    page.click(".tabs button[data-tab='edit']")
    page.wait_for_selector(".cand[data-spec='swap_activation']", timeout=60_000)
    page.screenshot(path=str(tmp_path / "4-candidates.png"))
    page.click(".cand[data-spec='swap_activation'] button.preview")
    page.wait_for_function("document.body.dataset.preview === 'swap_activation'", timeout=60_000)
    assert page.evaluate("window.dcoptCy.nodes('.added').length") > 0
    page.screenshot(path=str(tmp_path / "5-preview.png"))
    page.click("#preview-apply")
    page.wait_for_function("document.body.dataset.edits === '1'", timeout=60_000)
    assert page.locator(".stage.user .label").inner_text() == "✎ patch:swap_activation"

    export_and_replay(page, RESNET50, tmp_path)

    page.click("#undo")
    page.wait_for_function("document.body.dataset.edits === '0'", timeout=60_000)
    assert page.locator(".stage.user").count() == 0 and not page.locator("#redo").is_disabled()
    assert errors == []
    print(f"ResNet-50 first paint {first_paint:.0f} ms, stage switches (ms): "
          f"{[round(t) for t in page.evaluate('window.dcoptTimings.switches')]}")
    page.close()


def test_bert_steps_through_its_passes(browser, bert_path, tmp_path):
    server, client = serve(bert_path)
    try:
        page, errors = open_page(browser, client.url)
        stages = page.locator(".stage").count()
        for index in range(stages):
            click_stage(page, index)
        page.check("#expand-groups")
        page.wait_for_function("window.dcoptCy.nodes(':parent').length > 0")
        page.screenshot(path=str(tmp_path / "bert-last-stage-expanded.png"))
        assert errors == []
        page.close()
    finally:
        server.stop()


def test_static_export_opens_without_a_server(browser, resnet_server, tmp_path):
    out = tmp_path / "resnet50.html"
    result = CliRunner().invoke(app, ["view", RESNET50, "--export", str(out)])
    assert result.exit_code == 0, result.output
    page, errors = open_page(browser, out.as_uri())
    assert page.locator(".live-only").first.is_hidden()
    click_stage(page, resnet_server[1].op_stage("fuse"))
    tap(page, "conv_Conv__211")
    assert "LLVM IR" in page.locator("#tab-node").inner_text()
    page.screenshot(path=str(tmp_path / "static-export.png"))
    assert errors == []
    page.close()


def test_build_and_run_side_by_side_and_a_parameterized_patch(browser, build_and_run, tmp_path):
    """The tiny ResNet with its build and a benchmark run: the panel opens over the graph with the
    build's schedule and the run's latency chart per runtime; a kernel's button shows its nodes in
    the graph; a patch's parameter set in its form is previewed, applied, exported and replayed."""
    from dcopt.examples import TINY_RESNET
    from dcopt.view.api import ViewerAPI
    from dcopt.view.server import ViewServer
    from dcopt.view.session import ViewSession

    build, run = build_and_run
    server = ViewServer(ViewerAPI(ViewSession(str(TINY_RESNET)), build=str(build), run=run)).start()
    try:
        page, errors = open_page(browser, server.url)
        page.wait_for_function("document.body.dataset.records === 'open' && document.body.dataset.run", timeout=60_000)
        steps = sum(json.loads((Path(build) / "manifest.json").read_text())["steps"].values())  # by kind
        assert page.locator("#build-col tr.step").count() == steps >= 12  # one row per step of the build
        assert page.locator("#run-col svg.latency g.runtime").count() == 2  # dcopt, onnxruntime
        assert page.locator("#run-col svg.latency circle.dot").count() == 20
        assert "vs onnxruntime" in page.locator("#run-col svg.speedup").inner_html()
        page.click("#build-col tr.step[data-step='Conv__7/conv'] button.source")
        assert "define" in page.locator("#build-col tr.source-row:not([hidden]) pre").inner_text()
        page.screenshot(path=str(tmp_path / "build-and-run.png"))

        page.click("#build-col tr.step[data-step='block1/relu/map'] button.nodes")
        page.wait_for_function("document.body.dataset.detail === 'conv_Conv__7'", timeout=60_000)
        assert page.evaluate("window.dcoptCy.nodes('.hit').map(n => n.id())") == ["conv_Conv__7"]
        node = page.locator("#tab-node").inner_text()
        assert "block1/relu Relu · onnx node #9" in node and "made by stage 4 (fold-batchnorm)" in node
        page.screenshot(path=str(tmp_path / "kernel-nodes.png"))
        page.click("#tab-node button.in-build")  # and back to that kernel's step in the build
        page.wait_for_selector("#build-col tr.step.flash", timeout=10_000)

        page.click("#records-toggle")
        click_stage(page, Client(server.url).op_stage("select-impl"))
        tap(page, "block1/relu")
        page.click(".tabs button[data-tab='edit']")
        form = ".cand[data-spec='swap_activation'] details.params"
        page.wait_for_selector(form, state="attached", timeout=60_000)
        page.click(f"{form} summary")
        page.select_option(f"{form} select[name='to']", "Sigmoid")
        page.screenshot(path=str(tmp_path / "parameterized-candidate.png"))
        page.click(".cand[data-spec='swap_activation'] button.preview")
        page.wait_for_function("document.body.dataset.preview === 'swap_activation'", timeout=60_000)
        assert "patch:swap_activation?to=Sigmoid" in page.locator("#banner").inner_text()
        page.click("#preview-apply")
        page.wait_for_function("document.body.dataset.edits === '1'", timeout=60_000)
        assert page.locator(".stage.user .label").inner_text() == "✎ patch:swap_activation?to=Sigmoid"
        export_and_replay(page, str(TINY_RESNET), tmp_path)
        assert errors == []
        page.close()
    finally:
        server.stop()

    out = tmp_path / "static.html"  # the static export opens the same panel, no server
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "--build", str(build), "--run", run, "--export", str(out)])
    assert result.exit_code == 0, result.output
    page, errors = open_page(browser, out.as_uri())
    page.wait_for_function("document.body.dataset.records === 'open' && document.body.dataset.run", timeout=60_000)
    assert page.locator("#run-col svg.latency g.runtime").count() == 2 and page.locator("#build-picker").count() == 0
    page.screenshot(path=str(tmp_path / "static-build-and-run.png"))
    assert errors == []
    page.close()
