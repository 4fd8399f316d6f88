"""The viewer's build & run panel (a real ``dcopt compile -o`` build and a real ``dcopt bench`` run of
the tiny ResNet), steps with parameters (patch parameters, pass options) replayed by
``dcopt opt --pipeline``, and where nodes came from (ONNX nodes, PyTorch source lines)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dcopt.cli import app
from dcopt.errors import DcoptError
from dcopt.examples import TINY_RESNET
from dcopt.ir import serialize
from dcopt.view.api import ViewerAPI
from dcopt.view.session import ViewSession

from tests.view.test_export import embedded_data


@pytest.fixture(scope="module")
def tiny_api(build_and_run):
    build, run = build_and_run
    return ViewerAPI(ViewSession(str(TINY_RESNET)), build=str(build), run=run[:8])


def test_build_panel_links_every_kernel_to_its_source_and_nodes(tiny_api, build_and_run):
    b = tiny_api.build(tiny_api.build_ref)
    assert b["same_model"] and b["same_pipeline"] and b["pipeline"] == "O3" and b["passes"]
    kernels = [s for s in b["steps_list"] if s["kernel"]]
    assert {s["kind"] for s in kernels} == {"conv", "kernel", "matvec"}
    assert all(s["source"] for s in kernels)  # every numba kernel, not only the last one of kernels.py
    assert sum(s["source"].startswith("@njit") for s in kernels) == 3
    stage = tiny_api.stage(b["link_stage"])
    ids = {n["id"] for n in stage["elements"]["nodes"]}
    by_label = {s["label"]: s["nodes"] for s in b["steps_list"]}
    assert by_label["Conv__7/conv"] == ["conv_Conv__7::Conv__7"] and by_label["head/fc/gemm"] == ["head/fc"]
    assert all(set(s["nodes"]) <= ids for s in kernels) and all(s["nodes"] for s in kernels)


def test_run_panel_has_the_latency_of_every_runtime(tiny_api, build_and_run):
    r = tiny_api.run(tiny_api.run_ref)
    assert r["id"] == build_and_run[1] and r["kind"] == "bench" and r["metrics"]["latency_ms"] > 0
    (model,) = r["charts"]["models"]
    assert [x["runtime"] for x in model["runtimes"]] == ["dcopt", "onnxruntime"]
    for x in model["runtimes"]:
        assert x["reps"] == len(x["dots"]) == 10 and x["p10"] <= x["p25"] <= x["median"] <= x["p75"] <= x["p90"]
    assert r["charts"]["axis_ms"] >= max(x["p95"] for x in model["runtimes"])
    assert model["speedups"]["onnxruntime"]["speedup"] > 0
    records = tiny_api.builds_and_runs()
    assert build_and_run[1] in {x["ref"] for x in records["runs"]}
    assert str(build_and_run[0]) in {x["path"] for x in records["builds"]}


def test_export_holds_the_build_and_the_run(build_and_run, tmp_path):
    build, run = build_and_run
    out = tmp_path / "view.html"
    result = CliRunner().invoke(app, ["view", str(TINY_RESNET), "-O", "1", "--no-lower", "--build", str(build),
                                      "--run", run[:10], "--export", str(out)])
    assert result.exit_code == 0, result.output
    data = embedded_data(out.read_text())
    assert data["session"]["open"] == {"build": str(build), "run": run}
    assert data["build"]["ref"] == str(build) and data["run"]["charts"]["models"]
    assert not data["build"]["same_pipeline"]  # O1 shown, O3 built: the panel says links are by name


def test_a_wrong_build_or_run_is_an_error_naming_it(tmp_path):
    out = tmp_path / "v.html"
    cases = [(["--build", str(tmp_path / "missing.dcopt")], "missing.dcopt"),
             (["--build", str(tmp_path)], "not a dcopt build directory (no manifest.json)"),
             (["--run", "no-such-run"], "no run 'no-such-run'")]
    for args, message in cases:
        result = CliRunner().invoke(app, ["view", str(TINY_RESNET), *args, "--export", str(out)])
        assert result.exit_code != 0 and message in result.output, result.output
        assert not out.exists()


def test_steps_with_parameters_replay_with_dcopt_opt(tmp_path):
    api = ViewerAPI(ViewSession(str(TINY_RESNET), lower=False))
    fields = {p["name"]: p for p in next(p for p in api.overview()["patches"] if p["name"] == "swap_activation")["params"]}
    assert fields["to"]["default"] == "Gelu" and "Sigmoid" in fields["to"]["choices"]
    assert {"min_saving", "elementwise"} <= {f["name"] for f in api.overview()["pass_options"]["fuse"]}
    preview = api.preview(3, "patch", "swap_activation", {"from": "Relu", "to": "Sigmoid"})
    assert preview["name"] == "patch:swap_activation?to=Sigmoid" and preview["modified"]
    api.apply(3, "patch", "swap_activation", {"from": "Relu", "to": "Sigmoid"})  # 'from' is the default: left out
    out = api.apply(1, "pass", "fold-constants", {"max_elements": "1000", "max_growth": "4"})
    assert [s["label"] for s in out["session"]["edits"]] == ["fold-constants(max_elements=1000)",
                                                           "patch:swap_activation?to=Sigmoid"]
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(api.pipeline_file())
    assert "get_pass('fold-constants', max_elements=1000)" in pipeline.read_text()
    replayed = tmp_path / "replayed.json"
    result = CliRunner().invoke(app, ["opt", str(TINY_RESNET), "--pipeline", str(pipeline), "-o", str(replayed)])
    assert result.exit_code == 0, result.output
    assert json.loads(serialize.dumps(serialize.load(replayed))) == json.loads(serialize.dumps(api.session.final))
    again = ViewSession(str(TINY_RESNET), _pipeline_steps(pipeline), lower=False)
    assert [s.label for s in again.steps] == [s.label for s in api.session.steps]  # options read back
    with pytest.raises(DcoptError, match="parameter 'to' of patch 'swap_activation'"):
        api.preview(3, "patch", "swap_activation", {"to": "Nope"})
    with pytest.raises(DcoptError, match="option 'max_growth' of pass 'fold-constants': expected a float"):
        api.preview(1, "pass", "fold-constants", {"max_growth": "lots"})
    with pytest.raises(DcoptError, match="pass 'cse' has no option 'x'"):
        api.preview(1, "pass", "cse", {"x": "1"})


def _pipeline_steps(path):
    from dcopt.passes.user_files import load_pipeline_file

    return load_pipeline_file(path)


def test_nodes_say_where_they_came_from():
    api = ViewerAPI(ViewSession(str(TINY_RESNET), lower=False))
    (entry,) = api.node(0, "stem/conv")["origin"]["entries"]
    assert (entry["format"], entry["op"], entry["index"], entry["outputs"]) == ("onnx", "Conv", 0, ["stem.conv"])
    fuse = len(api.session.steps)  # the last op-level stage
    assert api.session.stages[fuse].name == "fuse"
    origin = api.node(fuse, "conv_Conv__7")["origin"]  # Conv__7 + block1/add + block1/relu, fused
    assert [e["name"] for e in origin["entries"]] == ["block1/add", "block1/relu"]
    assert origin["created"] == [{"label": "Conv__7", "index": 4, "name": "fold-batchnorm"}]


def test_a_torch_program_node_points_at_its_python_line(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x)  # the line the Gemm comes from
            return torch.relu(y) * 2

    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(Net(), (torch.randn(2, 4),)), str(path))
    api = ViewerAPI(ViewSession(str(path), lower=False))
    gemm = next(n["id"] for n in api.stage(0)["elements"]["nodes"] if n["op"] == "Gemm")
    (entry,) = api.node(0, gemm)["origin"]["entries"]
    assert entry["format"] == "torch.export" and entry["op"] == "aten.addmm.default"
    assert entry["location"].startswith(f'File "{__file__}"') and "y = self.fc(x)" in entry["location"]
