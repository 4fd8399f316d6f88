"""``dcopt view --export`` and ``dcopt report --html``: one self-contained HTML file (no server, no
network), holding every stage and every node's details."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from dcopt.cli import app
from dcopt.examples import TINY_RESNET


def embedded_data(page: str) -> dict:
    start = page.index("window.DCOPT_DATA = ") + len("window.DCOPT_DATA = ")
    return json.loads(page[start:page.index(";</script>", start)])


def test_export_is_self_contained_and_complete(tmp_path):
    out = tmp_path / "view.html"
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "--export", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)  # assets inlined, nothing fetched
    assert "cytoscape" in page and "cytoscapeDagre" in page
    data = embedded_data(page)
    assert data["static"] and [s["name"] for s in data["session"]["stages"]][:2] == ["input", "canonicalize"]
    for index, ids in data["nodes"].items():  # every node of every stage has its details
        nodes = [n["id"] for n in data["stages"][index]["elements"]["nodes"] if n["kind"] != "io"]
        assert sorted(nodes) == sorted(ids)
    fused = [d for d in data["details"].values() if d["op"] == "conv group"]
    assert fused and all(d["kernels"] and d["loops"] for d in fused)
    assert all((k["name"] or k["step"]) in data["sources"] for d in fused for k in d["kernels"])


def test_report_html_is_the_viewer_export(tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(TINY_RESNET), "-O", "3", "--html", str(out)])
    assert result.exit_code == 0, result.output
    data = embedded_data(out.read_text())
    names = [s["name"] for s in data["session"]["stages"]]
    assert "fuse" in names and "plan-memory" in names


def test_export_path_errors_name_the_path(tmp_path):
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "--export", str(tmp_path / "nowhere" / "v.html")])
    assert result.exit_code != 0 and "nowhere" in result.output
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "--export", str(tmp_path / "v.txt")])
    assert result.exit_code != 0 and "must end in .html" in result.output
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "--dim", "Q=2", "--export", str(tmp_path / "v.html")])
    assert result.exit_code != 0 and "no symbolic dim 'Q'" in result.output and not (tmp_path / "v.html").exists()


def test_profile_times_the_kernels_a_node_ended_in():
    """--profile compiles the model (sizes specialized first, as dcopt compile does) and each node
    shows the measured time of the build steps it ended in."""
    from dcopt.cli.view_cmd import open_session

    api = open_session(str(TINY_RESNET), (["O3"], "O3"), (), lower=True, profile=True)
    fuse = len(api.session.steps)  # the last op-level stage
    kernels = api.node(fuse, "conv_Conv__7")["kernels"]  # conv + residual add + relu, fused
    assert [k["step"] for k in kernels] == ["Conv__7/conv", "block1/relu/map"]
    assert all(k["seconds"] and k["seconds"] > 0 for k in kernels)
