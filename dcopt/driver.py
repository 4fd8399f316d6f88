"""The compiler driver: model in, lowered graph out, then a backend's code -- one screen.

    frontend -> Graph -> specialize sizes -> idea patches -> pass pipeline (O3: level 1-3
    decisions on ops) -> select-impl (routines not chosen yet) -> expand (ops become maps,
    reductions and library calls) -> simplify-maps
    -> fuse-epilogues -> fuse-maps -> form-kernels -> collapse-dims -> plan-memory -> backend codegen -> build

:func:`lower` is every backend-neutral stage; a backend implements ``codegen`` (lowered graph ->
program) and a runtime, nothing else: the fusion, the kernels' loop structure, the library
implementations and the memory plan are written into the graph by the passes here (STYLE points
11-13; DaCe's ``codegen/codegen.py`` expands library nodes before generating code the same way).

Each stage is a registered pass, so ``dcopt opt --passes`` runs any prefix of this on its own
and the report shows what every stage did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from dcopt.ir.graph import Graph

#: The stages :func:`lower` runs after the user's pipeline, in order (pass name, options).
LOWERING = (
    ("select-impl", {}),  # keeps the pipeline's choices; gives every Conv/MatMul/Gemm left a routine
    ("expand", {"keep_views": True, "group": True}),
    ("simplify-maps", {}),
    ("fuse-epilogues", {}),
    ("fuse-maps", {}),
    ("form-kernels", {}),
    ("collapse-dims", {}),
    ("plan-memory", {"inplace": False, "outputs": True, "concat": True}),
)


@dataclass
class Lowered:
    """A graph ready for code generation, and what each stage reported."""

    graph: Graph
    pipeline: str  # the pipeline that ran, as a label
    reports: list = field(default_factory=list)  # PassResult reports of the stages, in order


def lower(graph: Graph, *, bindings: Mapping[str, int] | None = None, values=None, pipeline="O3",
          patches: Sequence[str] = (), target: str = "cpu", example_feeds=None, verify: bool = False,
          dynamic: frozenset = frozenset()) -> Lowered:
    """Every backend-neutral stage of compilation, on a copy of ``graph``. ``values``: inputs
    whose values decide sizes, compiled as constants (:mod:`dcopt.ir.specialization`).
    ``dynamic``: input symbols kept symbolic (one lowered graph for every size of them; their
    ``bindings`` are only the example sizes limits are checked at)."""
    from dcopt.ir.specialization import bind_values
    from dcopt.limits import check_graph_sizes

    from dcopt.backends.cpu.specialize import input_bindings, specialize, unknown_to_dynamic

    from dcopt.passes.manager import PassManager

    if values:
        graph = bind_values(graph, values)                                   # value inputs -> constants
    bindings = input_bindings(graph, bindings)
    check_graph_sizes(graph, bindings)                                      # int64 and memory limits
    graph = specialize(graph, bindings, example_feeds, dynamic)            # every size known (or kept)
    graph, label, report = optimize(graph, pipeline, patches)              # patches, then O0..O3
    if dynamic:
        check_sizes_at_run_time(graph)                                      # kernels for every size?
    unknown_to_dynamic(graph, dynamic)                                      # data-sized values
    stages = PassManager(lowering_passes(target), name="lower", verify=verify)
    result = stages(graph)                                                  # the loop level
    return Lowered(result.graph, label, [report, result.report])


def check_sizes_at_run_time(graph: Graph) -> None:
    """Refuse (:class:`~dcopt.errors.StaticSizesNeeded`) a build for every size where it would
    be slow rather than general: a convolution whose image or channel dims are symbolic has no
    generated kernel (those are specialized per image size) and would run as plain loops. A
    symbolic batch is fine: convolutions run image by image."""
    from dcopt.errors import StaticSizesNeeded
    from dcopt.ops.shapes.dims import per_sample

    for node in graph.nodes:
        for body in node.subgraphs:  # fused groups hold their convs inside
            check_sizes_at_run_time(body)
        if node.op in ("Conv", "ConvTranspose") and node.domain in ("", "ai.onnx"):
            t = graph.type_of(node.inputs[0])
            if t is not None and t.shape is not None and per_sample(t.shape) is None:
                raise StaticSizesNeeded(f"the convolution's input is {t}: generated convolutions need fixed "
                                        "channel and image sizes (only the batch may vary)", node=node.label,
                                        op=node.op)


def lowering_passes(target: str = "cpu") -> list:
    """The :data:`LOWERING` stages as passes configured for ``target`` (``dcopt view`` shows each)."""
    from dcopt.passes.base import get_pass

    options = {"expand": {"dtypes": target_dtypes(target)}, "fuse-epilogues": {"target": target},
               "select-impl": {"target": target}}
    return [get_pass(name, **{**extra, **options.get(name, {})}) for name, extra in LOWERING]


def target_dtypes(target: str):
    """Element types the target's generated kernels handle (ops on others are not expanded)."""
    if target == "cpu":
        from dcopt.backends.cpu.scalar_code import KERNEL_DTYPES

        return KERNEL_DTYPES
    return None


def optimize(graph: Graph, pipeline, patches: Sequence[str]):
    """Apply idea patches, then the pass pipeline: (graph, label of what ran, report or None).

    ``pipeline`` is a spec string (pipeline or pass names) or ``(steps, label)`` as
    :func:`dcopt.cli.pipeline_options.resolve_pipeline` returns it (a user pipeline file's Pass
    objects included); an unknown name is an error listing the valid ones."""
    from dcopt.passes.manager import PassManager
    from dcopt.passes.pipelines import build_pipeline

    if patches:
        from dcopt.passes.patches import apply_patches

        graph = apply_patches(graph, list(patches)).graph
    if isinstance(pipeline, tuple):
        steps, label = pipeline
        if not all(isinstance(s, str) for s in steps):  # a user pipeline file: Pass objects
            result = PassManager(steps, name=label)(graph)
            return result.graph, label, result.report
        pipeline = ",".join(steps) or "O0"
    if pipeline == "O0":
        return graph, "O0", None
    result = build_pipeline(pipeline)(graph)
    return result.graph, pipeline, result.report
