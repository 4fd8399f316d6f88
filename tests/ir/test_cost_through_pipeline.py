"""FLOPs totals before and after every pass of O3 and of the loop-level lowering, on real models.

Why: fusion groups used to be costed as one opaque op (1 FLOP per output element), so ResNet-50
"went" from 8.21 GFLOPs to 0.76 GFLOPs at ``fuse`` and fused conv kernels showed ~25 kFLOPs. A
group does its members' arithmetic; passes that only regroup work (fuse, fuse-epilogues,
fuse-maps, form-kernels, collapse-dims, select-impl) must leave the total unchanged. The totals are
pinned exactly so any change to a formula or a pass's arithmetic shows up here.
"""

import onnx
import pytest

from dcopt.driver import LOWERING
from dcopt.frontends.onnx_import import import_model
from dcopt.frontends.onnx_shapes import fill_types_from_folding
from dcopt.ir.cost import graph_cost
from dcopt.ir.groups import groups
from dcopt.passes.base import get_pass
from dcopt.passes.manager import PassManager
from dcopt.passes.movement import MovementInstrument
from dcopt.passes.pipelines import build_pipeline
from dcopt.testing import export_transformer, light_zoo_path

#: Passes that regroup or reschedule work without changing the arithmetic.
REGROUPING = {"fuse", "fuse-epilogues", "fuse-maps", "form-kernels", "collapse-dims", "select-impl",
              "simplify-maps", "merge-sibling-convs", "subsample-strided-pointwise", "eliminate-transients",
              "plan-memory", "cse", "dce"}

RESNET50 = [
    ("input", 8239865200), ("fold-constants", 8239865200), ("cse", 8239865200), ("dce", 8239865200),
    ("fold-batchnorm", 8206523248), ("cse", 8206523248), ("merge-sibling-convs", 8206523248),
    ("select-impl", 8206523248), ("fuse", 8206523248),
    # expand counts the tasklets' real operations (Softmax 15/element, not the customary 5;
    # AveragePool with padding), then nothing changes the arithmetic again
    ("expand", 8206535296), ("simplify-maps", 8206535296), ("fuse-epilogues", 8206535296),
    ("fuse-maps", 8206535296), ("form-kernels", 8206535296), ("collapse-dims", 8206535296),
]

BERT = [
    ("input", 7202849), ("fold-constants", 7202816), ("remove-noops", 7202816), ("cse", 7202816),
    ("dce", 7202816), ("simplify-algebra", 7200768), ("simplify-chains", 7200768),
    ("recognize-ops", 6623232),  # decomposed LayerNorm/Gelu/Softmax become one op each
    ("select-impl", 6623232), ("fuse", 6623232),
    ("expand", 7283136), ("simplify-maps", 7283136), ("fuse-epilogues", 7283136), ("fuse-maps", 7283136),
    ("form-kernels", 7283136), ("collapse-dims", 7283136),
]


def flops_through_pipeline(model: onnx.ModelProto):
    """(pass, total FLOPs) after the input and every modifying pass of O3 then the lowering."""
    graph = fill_types_from_folding(import_model(model))
    instrument = MovementInstrument()
    optimized = PassManager(build_pipeline("O3").steps, name="O3", instruments=[instrument])(graph).graph
    fused = optimized.copy()
    lowered = PassManager([get_pass(name, **extra) for name, extra in LOWERING], name="lower",
                          instruments=[instrument])(optimized).graph
    assert all(s.unknown_nodes == 0 for s in instrument.snapshots)
    return [(s.after, s.flops) for s in instrument.snapshots], fused, lowered


def check_groups(graph) -> None:
    """Every group's FLOPs are its members' sum, and its bytes plus what fusion saved are theirs."""
    cost = {c.node: c for c in graph_cost(graph).nodes}
    assert groups(graph)
    for group in groups(graph):
        members = graph_cost(group.attrs["body"])
        c = cost[group.label]
        assert c.flops == members.total_flops, group.label
        assert c.fusion_bytes_saved >= 0
        assert c.bytes_moved + c.fusion_bytes_saved == members.total_bytes, group.label


def check_regrouping_keeps_flops(totals) -> None:
    for (_, before), (name, after) in zip(totals, totals[1:]):
        if name in REGROUPING:
            assert after == before, f"{name} changed the FLOPs: {before} -> {after}"


def test_resnet50_flops_through_o3_and_lowering():
    totals, fused, lowered = flops_through_pipeline(onnx.load(light_zoo_path("resnet50")))
    assert totals == RESNET50
    check_regrouping_keeps_flops(totals)
    check_groups(fused)
    convs = [c for c in graph_cost(fused).nodes if c.op == "dcopt.FusedGroup" and c.node.startswith("conv_")]
    assert convs and min(c.flops for c in convs) > 10**7  # not the ~25 kFLOPs of a 1-FLOP-per-output guess
    check_groups(lowered)


def test_bert_flops_through_o3_and_lowering(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    path = export_transformer("bert", tmp_path / "bert.onnx", hidden=64, layers=2, heads=4, seq=32)
    totals, fused, lowered = flops_through_pipeline(onnx.load(path))
    assert totals == BERT
    check_regrouping_keeps_flops(totals)
    check_groups(fused)
    check_groups(lowered)
