"""The viewer's JSON API on ResNet-50 (no browser): stages, node details, candidates, edits, exports,
and the exported pipeline replayed by ``dcopt opt --pipeline``."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dcopt.cli import app
from dcopt.ir import serialize

from tests.view.conftest import RESNET50


def test_stages_follow_the_o3_pipeline_then_the_lowering(resnet_server):
    _, client = resnet_server
    session = client.get("/api/session")
    names = [s["name"] for s in session["stages"]]
    op_level = names[:session["editable_until"] + 1]
    assert op_level == ["input", "canonicalize", "simplify-algebra", "simplify-chains", "fold-batchnorm",
                        "fold-channel-affine", "fold-pad", "recognize-ops", "simplify-chains", "canonicalize",
                        "merge-sibling-convs", "subsample-strided-pointwise", "eliminate-transients",
                        "select-impl", "fuse"]
    assert names[len(op_level):] == ["select-impl", "expand", "simplify-maps", "fuse-epilogues", "fuse-maps",
                                     "form-kernels", "collapse-dims", "plan-memory"]
    assert "swap_activation" in {p["name"] for p in session["patches"]} and "fuse" in session["passes"]


def test_a_stage_shows_its_graph_changes_and_report(resnet_server):
    _, client = resnet_server
    fold = client.get("/api/stage?i=4")  # fold-batchnorm
    assert fold["name"] == "fold-batchnorm" and fold["modified"]
    before = {n["id"]: n for n in client.get("/api/stage?i=3")["elements"]["nodes"]}
    removed = [before[i]["op"] for i in fold["changes"]["removed"]]  # each Conv + BatchNorm pair -> one new Conv
    assert removed.count("BatchNormalization") == removed.count("Conv") == len(fold["changes"]["added"]) == 53
    assert fold["records"][0]["stats"]
    fuse = client.get(f"/api/stage?i={client.op_stage('fuse')}")
    groups = [n for n in fuse["elements"]["nodes"] if n["kind"] == "group"]
    members = [n for n in fuse["elements"]["nodes"] if n.get("parent")]
    assert len(groups) == 48 and members and all(m["parent"] in {g["id"] for g in groups} for m in members)
    assert fuse["elements"]["totals"]["flops"] == fold["elements"]["totals"]["flops"] == 8206523248
    assert any(r["refusals"] for r in fuse["records"])  # refusals with reasons are part of the report


def test_node_details_reach_loops_kernel_and_cost(resnet_server):
    _, client = resnet_server
    node = client.get(f"/api/node?i={client.op_stage('fuse')}&id=conv_Conv__211")  # the stem conv + relu, fused
    assert node["cost"]["flops"] == 237633536 and node["cost"]["fusion_bytes_saved"] > 0
    assert any("map[" in line and "max(a, 0)" in line for line in node["loops"])
    kernel = node["kernels"][0]
    assert kernel["kind"] == "conv" and kernel["language"] == "LLVM IR" and "define" in kernel["source"]
    bn = client.get("/api/node?i=0&id=n1")
    assert bn["op"] == "BatchNormalization" and bn["removed_by"] == "fold-batchnorm" and not bn["loops"]
    status, body = client.raw("/api/node?i=0&id=no-such-node")
    assert status == 400 and b"no node 'no-such-node' at stage 0" in body


def test_candidates_apply_undo_redo_and_replay(resnet_server, tmp_path):
    _, client = resnet_server
    # edits go after select-impl (before fuse): only fuse and the lowering re-run
    at = client.op_stage("select-impl")
    found = client.get(f"/api/candidates?i={at}&id=n2")  # the first Relu
    applies = {c["spec"] for c in found["applies"]}
    assert {"swap_activation", "fuse"} <= applies
    near = {c["spec"]: c["reasons"] for c in found["near"]}
    assert "not shape-preserving" in near["add_skip_connections"][0]
    preview = client.post("/api/preview", {"after": at, "kind": "patch", "spec": "swap_activation?to=Gelu"})
    assert preview["modified"] and "n2" in preview["changes"]["removed"] + preview["changes"]["rewired"]
    assert client.get("/api/session")["edits"] == []  # a preview changes nothing

    applied = client.post("/api/apply", {"after": at, "kind": "patch", "spec": "swap_activation?to=Gelu"})
    assert applied["stage"] == at + 1 and applied["session"]["stages"][at + 1]["name"] == "patch:swap_activation?to=Gelu"
    assert [e["spec"] for e in applied["session"]["edits"]] == ["swap_activation?to=Gelu"]
    pipeline = client.raw("/api/export/pipeline")[1].decode()
    assert "PatchPass('swap_activation?to=Gelu')" in pipeline
    edited = tmp_path / "edited.json"
    edited.write_bytes(client.raw("/api/export/model?format=json")[1])
    assert serialize.load(edited).op_histogram().get("Relu", 0) == 0

    pipeline_file = tmp_path / "pipeline.py"
    pipeline_file.write_text(pipeline)
    replayed = tmp_path / "replayed.json"
    result = CliRunner().invoke(app, ["opt", RESNET50, "--pipeline", str(pipeline_file), "-o", str(replayed)])
    assert result.exit_code == 0, result.output
    assert json.loads(serialize.dumps(serialize.load(replayed))) == json.loads(serialize.dumps(serialize.load(edited)))

    undone = client.post("/api/undo")
    assert undone["stage"] == at and undone["session"]["edits"] == [] and undone["session"]["can_redo"]
    redone = client.post("/api/redo")
    assert [e["spec"] for e in redone["session"]["edits"]] == ["swap_activation?to=Gelu"]
    client.post("/api/undo")


def test_bad_requests_are_located_errors(resnet_server):
    _, client = resnet_server
    status, body = client.raw("/api/apply", {"after": 0, "kind": "patch", "spec": "no_such_patch"})
    assert status == 400 and b"no_such_patch" in body
    status, body = client.raw("/api/apply", {"after": 15, "kind": "pass", "spec": "cse"})
    assert status == 400 and b"op level" in body
    assert client.raw("/static/../session.py")[0] == 404
    assert client.get("/api/session")["edits"] == []


def test_bert_opens_and_recognizes_its_ops(bert_path):
    from tests.view.conftest import serve

    server, client = serve(bert_path)
    try:
        stages = client.get("/api/session")["stages"]
        recognize = next(s for s in stages if s["name"] == "recognize-ops")
        assert recognize["modified"]
        ops = {n["op"] for n in client.get(f"/api/stage?i={recognize['index']}")["elements"]["nodes"]}
        assert {"LayerNormalization", "Softmax"} <= ops or "dcopt.Attention" in ops or any("Attention" in o for o in ops)
    finally:
        server.stop()
