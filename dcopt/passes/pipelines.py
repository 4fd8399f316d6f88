"""Named pipelines and the comma-separated spec parser (``"fold,cse,dce"``).

A pipeline is a flat, named list of registered passes; reading ``PIPELINES`` tells what each
level does. Specs mix pass names, their short aliases and pipeline names::

    build_pipeline("canonicalize", check_equivalence=True)(graph)
    build_pipeline("fold,noops,cse,dce", verify=True)(graph)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dcopt.passes.base import (Pass, UnknownPassError, available_passes, get_pass, resolve_name,
                               unknown_name_message, valid_names)
from dcopt.passes.manager import PassManager


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[str, ...]
    fixed_point: bool = False
    description: str = ""


PIPELINES: dict[str, Pipeline] = {}
_PIPELINE_ALIASES: dict[str, str] = {}


def register_pipeline(name: str, steps: Sequence[str], *, fixed_point: bool = False,
                      aliases: Sequence[str] = (), description: str = "") -> Pipeline:
    """Add (or replace) a named pipeline; its steps may name passes or other pipelines."""
    pipeline = Pipeline(tuple(steps), fixed_point, description)
    PIPELINES[name] = pipeline
    for alias in aliases:
        _PIPELINE_ALIASES[alias] = name
    return pipeline


register_pipeline(
    "canonicalize", ["fold-constants", "infer-shapes", "remove-noops", "cse", "dce"], fixed_point=True,
    aliases=("canon",),
    description="level 2 cleanup: fold constants and shape arithmetic, re-infer the shapes that folding made "
                "static, drop no-ops, merge duplicates, remove dead code; repeated until nothing changes",
)

register_pipeline("O1", ["canonicalize"], description="level 2 cleanup only")
register_pipeline(
    "O2", ["canonicalize", "simplify-algebra", "simplify-chains", "fold-batchnorm", "fold-channel-affine",
           "fold-pad", "recognize-ops", "simplify-chains", "canonicalize"],
    description="level 2: canonicalize; algebraic identities and layout/cast chains put decomposed ops into "
                "the spelling the recognizers expect; fold BatchNorm and per-channel scale/shift into weights; fold explicit Pads into the padding of the "
                "convs and pools that read them; recognize LayerNorm/Gelu/"
                "Softmax/attention; then merge the transposes recognition leaves and clean up",
)
register_pipeline(
    "O3", ["O2", "merge-sibling-convs", "subsample-strided-pointwise", "eliminate-transients", "select-impl", "fuse"],
    description="levels 1-3 on ops: O2, then stack sibling 1x1 convs into one, turn strided 1x1 convs into a "
                "subsample and a GEMM, drop copies that can be views, "
                "choose per-op routines, tiles and vector widths (dcopt.* schedule properties), and fuse by the "
                "bytes-moved cost model. Compiling continues with the loop-level stages of dcopt.driver "
                "(expand, fuse-epilogues, fuse-maps, form-kernels, collapse-dims, plan-memory)",
)


def parse_spec(spec: str | Sequence[str]) -> list[str]:
    """Canonical names of the passes/pipelines in ``spec``; UnknownPassError for a bad name."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise UnknownPassError(f"empty pass list {spec!r}; valid names: {valid_names(_pipeline_names())}")
    resolved = []
    for name in names:
        name = _PIPELINE_ALIASES.get(name, name)
        if name in PIPELINES:
            resolved.append(name)
            continue
        key = resolve_name(name)
        if key not in available_passes():
            raise UnknownPassError(unknown_name_message(name, "pass", _pipeline_names()) + f" (in spec {spec!r})")
        resolved.append(key)
    return resolved


def _pipeline_names() -> dict[str, tuple[str, ...]]:
    return {n: tuple(sorted(a for a, t in _PIPELINE_ALIASES.items() if t == n)) for n in PIPELINES}


def build_steps(spec: str | Sequence[str], _seen: tuple[str, ...] = ()) -> list[Pass]:
    """Passes for ``spec``; a pipeline name becomes a nested :class:`PassManager`."""
    steps: list[Pass] = []
    for name in parse_spec(spec):
        if name in PIPELINES:
            if name in _seen:
                raise ValueError(f"pipeline '{name}' includes itself (via {' -> '.join(_seen)})")
            p = PIPELINES[name]
            steps.append(PassManager(build_steps(list(p.steps), _seen + (name,)), name=name,
                                     fixed_point=p.fixed_point))
        else:
            steps.append(get_pass(name))
    return steps


def build_pipeline(spec: str | Sequence[str], **settings) -> PassManager:
    """A :class:`PassManager` running ``spec``; ``settings`` are PassManager keywords
    (verify, check_equivalence, rtol, atol, dump_dir, fixed_point, max_iterations, ...)."""
    return PassManager(build_steps(spec), name=spec if isinstance(spec, str) else ",".join(spec), **settings)
