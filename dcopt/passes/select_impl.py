"""select-impl (level 1, local): choose each Conv/MatMul/Gemm's implementation, tiling and
vector width, and record them as schedule properties (:mod:`dcopt.ir.schedule`).

Nothing here changes what a node computes; ``expand`` and the backends read the properties.
The choices come from the cost model (:func:`dcopt.ir.cost.node_cost`: FLOPs and bytes of the
op at batch 1) plus the column buffer im2col would add, and from the host's caches and SIMD:

A target may answer first: with ``target="cpu"`` (the default) the CPU backend's chooser
(:mod:`dcopt.backends.cpu.choose`) names one of its routines (``direct``, ``pointwise``,
``blas``, ``generated``, ``matvec``) when one applies to the node's static sizes, dtype and
constant weights. Otherwise the target-independent model below decides between expansions.

**Conv** (decided per sample; the batch dim may be symbolic)

* ``library`` for 1x1 kernels: the convolution *is* a GEMM on the image, no unfolding needed.
* ``loops`` for depthwise / one-channel-per-group convs: unfolded, each group's GEMM has one
  row of the reduction per tap, nothing for a GEMM microkernel to block.
* otherwise im2col's arithmetic intensity ``F / (B + 2*col + 2*y)`` is computed -- the op's
  FLOPs ``F`` over its bytes ``B`` plus the column buffer written and read back and the GEMM
  result written and read by the epilogue. Roughly ``(M/G) / itemsize``: few output channels
  per group make the unfolded GEMM memory-bound. ``im2col`` when it reaches ``min_intensity``
  (default 4 FLOP/byte, about where one AVX-512 core's FMA rate outruns the bandwidth of the
  cache level a layer-sized column buffer lives in), else ``loops``.

**MatMul / Gemm**: ``library`` (the backend's default GEMM). Symbolic dims take their value
from ``bindings``, or ``assume_dim`` (default 1: batch-1 inference, where latency matters most).

**Tiles** for every GEMM-like node (MatMul, Gemm, im2col and 1x1 convs), the BLIS analytical
model (Low et al., TOMS 2016) with a register micro-tile ``MR x NR``:

* ``NR = 2 * lanes`` (two vector registers wide), ``MR = (regs - NR/lanes - 1) // (NR/lanes)``
  accumulator rows (32 vector registers with AVX-512, 16 otherwise; ``6 x 16`` on AVX2);
* ``KC = (L1/2) // (NR * itemsize)``: a ``KC x NR`` sliver of B fills half of L1 (the other
  half streams A's ``MR x KC`` sliver and C's micro-tile);
* ``MC = (L2/2) // (KC * itemsize)``, a multiple of MR: an ``MC x KC`` panel of A fits in half
  of L2;
* ``NC = (L3/2) // (KC * itemsize)``, a multiple of NR: a ``KC x NC`` panel of B in half of L3;
* each is clamped to the problem (``KC <= K``, ``MC <= M``, ``NC <= N`` rounded up to MR/NR).

``dcopt.tile = (MC, KC, NC)``; ``dcopt.vector = lanes`` (SIMD width / itemsize: 16 floats with
AVX-512). Cache sizes come from ``/sys/devices/system/cpu/cpu0/cache``, SIMD width from
llvmlite's host CPU features (``/proc/cpuinfo`` flags otherwise), with fallbacks.

Options force a choice (``conv="im2col"``, ``matmul="loops"``); a node that already has
``dcopt.impl`` keeps it unless ``overwrite=True``. Stats count choices (``conv.im2col: 3``);
refusals name each node left at the library default because its sizes are unknown.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from dcopt.ir import dtypes
from dcopt.ir.cost import node_cost
from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.schedule import IMPLS, ScheduleError, schedule_of, with_schedule
from dcopt.ops.shapes.dims import per_sample
from dcopt.passes.base import Pass, PassResult, register_pass

CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
FALLBACK_CACHES = {1: 32 * 1024, 2: 512 * 1024, 3: 8 * 1024 * 1024}


@dataclass(frozen=True)
class Host:
    """What the cache model needs of a CPU: data cache sizes (bytes) and SIMD width."""

    l1: int
    l2: int
    l3: int
    vector_bytes: int
    registers: int

    def lanes(self, itemsize: int) -> int:
        return max(1, self.vector_bytes // itemsize)


def _size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _caches() -> dict[int, int]:
    found = dict(FALLBACK_CACHES)
    for entry in sorted(CACHE_DIR.glob("index*")):
        try:
            if (entry / "type").read_text().strip() in ("Data", "Unified"):
                found[int((entry / "level").read_text())] = _size((entry / "size").read_text())
        except (OSError, ValueError):
            continue
    return found


def _cpu_features() -> set[str]:
    try:
        import llvmlite.binding as llvm

        return {k for k, on in llvm.get_host_cpu_features().items() if on}
    except Exception:  # llvmlite missing or unable to query: the kernel's view of the CPU
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
        except OSError:
            pass
    return set()


@functools.lru_cache(maxsize=None)
def host() -> Host:
    """This machine (cached): caches from sysfs, SIMD width from the CPU features."""
    caches, features = _caches(), _cpu_features()
    wide = "avx512f" in features
    vector = 64 if wide else 32 if features & {"avx", "avx2"} else 16
    return Host(caches[1], caches[2], caches[3], vector, 32 if wide else 16)


def gemm_tiles(m: int | None, k: int | None, n: int | None, itemsize: int, machine: Host) -> tuple[int, int, int]:
    """``(MC, KC, NC)`` by the cache model in the module docstring (None: a dim not known)."""
    lanes = machine.lanes(itemsize)
    nr = 2 * lanes
    mr = max(1, (machine.registers - 3) // 2)

    def fit(cache: int, per: int, multiple: int) -> int:
        return max(multiple, cache // 2 // per // multiple * multiple)

    kc = fit(machine.l1, nr * itemsize, 1)
    kc = min(kc, k) if k else kc
    mc, nc = fit(machine.l2, kc * itemsize, mr), fit(machine.l3, kc * itemsize, nr)
    if m:
        mc = min(mc, -(-m // mr) * mr)
    if n:
        nc = min(nc, -(-n // nr) * nr)
    return mc, kc, nc


class _Unknown(Exception):
    """A size the decision needs is not known (the message says which)."""


@register_pass
class SelectImplPass(Pass):
    """Choose implementations, tiles and vector widths (see module docstring)."""

    name = "select-impl"
    in_place = True
    description = "level 1: choose per-op implementation (the target's routines, else conv loops/im2col/library, gemm library), " \
                  "tiling and vector width as dcopt.* schedule properties"

    def __init__(self, conv: str | None = None, matmul: str | None = None, min_intensity: float = 4.0,
                 bindings: Mapping[str, int] | None = None,
                 assume_dim: int = 1, tiles: bool = True, overwrite: bool = False, machine: Host | None = None,
                 target: str | None = "cpu"):
        for op, forced in (("Conv", conv), ("MatMul", matmul)):
            if forced is not None and forced not in IMPLS[op]:
                raise ScheduleError(f"{op} implementation {forced!r} is not one of {', '.join(IMPLS[op])}")
        self.forced = {"Conv": conv, "MatMul": matmul, "Gemm": matmul}
        self.min_intensity = min_intensity
        self.bindings = dict(bindings or {})
        self.assume_dim = assume_dim
        self.tiles = tiles
        self.overwrite = overwrite
        self.machine = machine
        self.target = target

    def run(self, graph: Graph, ctx) -> PassResult:
        stats: dict[str, int] = {}
        refusals: list[tuple[str, str]] = []
        modified = self._select(graph, stats, refusals)
        return PassResult(graph, modified, dict(sorted(stats.items())), refusals)

    def _select(self, graph: Graph, stats: dict, refusals: list) -> bool:
        nodes, modified = [], False
        for node in graph.nodes:
            new = node
            if is_group(node):
                body = node.attrs["body"].copy()
                if self._select(body, stats, refusals):
                    new = node.replace(attrs={**node.attrs, "body": body})
            elif node.domain == "" and node.op in IMPLS:
                new = self._choose(graph, node, stats, refusals)
            modified |= new is not node
            nodes.append(new)
        if modified:
            graph.nodes = nodes
        return modified

    def _choose(self, graph: Graph, node: Node, stats: dict, refusals: list) -> Node:
        machine = self.machine or host()
        family = "conv" if node.op == "Conv" else "matmul"
        try:
            current = schedule_of(node).impl
        except ScheduleError as exc:  # a malformed property someone wrote: say so, leave the node alone
            refusals.append((node.label, f"{node.op}: {exc.message}"))
            return node
        if current is not None and not self.overwrite:  # chosen before (by a user or an earlier run)
            stats[f"{family}.{current}"] = stats.get(f"{family}.{current}", 0) + 1
            return node
        impl, why = self.forced[node.op], None
        if impl is None:
            try:
                impl = self._decide(graph, node)
            except _Unknown as exc:
                impl, why = IMPLS[node.op][0], str(exc)
        try:
            tile = self._tile(graph, node, impl, machine) if self.tiles else None
        except _Unknown as exc:
            tile, why = None, why or str(exc)
        if why:
            refusals.append((node.label, f"{node.op}: keeps the '{impl}' default: {why}"))
        stats[f"{family}.{impl}"] = stats.get(f"{family}.{impl}", 0) + 1
        vector = machine.lanes(self._itemsize(graph, node)) if self.tiles else None
        new = with_schedule(node, impl=impl, tile=tile, vector=vector)
        return node if dict(new.attrs) == dict(node.attrs) else new

    # -- sizes ---------------------------------------------------------------------------------
    def _itemsize(self, graph: Graph, node: Node) -> int:
        """Bytes per element of the node's data (float32 when unknown; sub-byte types count 1)."""
        t = graph.type_of(node.inputs[0])
        return max(1, math.ceil(dtypes.itemsize(t.dtype if t is not None else "float32")))

    def _dims(self, graph: Graph, name: str) -> tuple[int, ...]:
        """Static dims of ``name``: symbols from ``bindings``, else ``assume_dim``."""
        t = graph.type_of(name)
        if t is None or t.shape is None or None in t.shape:
            raise _Unknown(f"the shape of '{name}' is not known ({t})")
        return tuple(int(self.bindings.get(d, self.assume_dim)) if isinstance(d, str) else int(d) for d in t.shape)

    def _gemm_dims(self, graph: Graph, node: Node) -> tuple[int, int, int]:
        """(M, K, N) of one product (per batch item)."""
        a, b = (self._dims(graph, i) for i in node.inputs[:2])
        if node.op == "Gemm":
            m, k = reversed(a) if graph.attr(node, "transA", 0) else a
            n = b[0] if graph.attr(node, "transB", 0) else b[1]
            return m, k, n
        m = a[-2] if len(a) > 1 else 1
        n = b[-1] if len(b) > 1 else 1
        return m, a[-1], n

    # -- decisions ---------------------------------------------------------------------------------
    def _decide(self, graph: Graph, node: Node) -> str:
        from dcopt.backends import library_chooser

        chooser = library_chooser(self.target)
        if chooser is not None:  # the target's routines, first that applies (None: none does)
            choice = chooser.choose(graph, node)
            if choice is not None:
                return choice
        if node.op != "Conv":
            return "library"
        return self._decide_conv(graph, node)

    def _conv_sizes(self, graph: Graph, node: Node) -> dict[str, tuple[int, ...]]:
        """Shapes of x, w, y with the batch dim set to 1 (a conv is decided per sample)."""
        shapes = {}
        for role, name in (("x", node.inputs[0]), ("w", node.inputs[1]), ("y", node.outputs[0])):
            t = graph.type_of(name)
            sample = per_sample(t.shape) if t is not None else None
            if sample is None:
                raise _Unknown(f"the shape of '{name}' is not static beyond the batch dim ({t})")
            shapes[role] = sample if role != "w" else tuple(t.shape)
        return shapes

    def _decide_conv(self, graph: Graph, node: Node) -> str:
        s = self._conv_sizes(graph, node)
        w, y = s["w"], s["y"]
        if math.prod(w[2:]) == 1:
            return "library"
        if w[1] == 1:
            return "loops"
        batch = {d: 1 for name in (node.inputs[0], node.outputs[0]) for d in graph.type_of(name).shape[:1]
                 if isinstance(d, str)}
        cost = node_cost(graph, node, {**batch, **self.bindings})
        if not cost.known:
            raise _Unknown("the cost model cannot size it")
        itemsize = dtypes.itemsize(graph.type_of(node.outputs[0]).dtype)
        col = w[1] * math.prod(w[2:]) * int(graph.attr(node, "group", 1)) * math.prod(y[2:]) * itemsize
        intensity = cost.flops / (cost.bytes_moved + 2 * col + 2 * math.prod(y) * itemsize)
        return "im2col" if intensity >= self.min_intensity else "loops"

    def _tile(self, graph: Graph, node: Node, impl: str, machine: Host) -> tuple[int, int, int] | None:
        """Tiles of the node's GEMM (None for loop and direct convs, which have no GEMM)."""
        if node.op != "Conv":
            m, k, n = self._gemm_dims(graph, node)
        elif impl in ("loops", "direct", "pointwise", "depthwise"):
            return None
        else:  # conv as GEMM per group: [M/G, C/G * taps] @ [C/G * taps, out positions]
            s = self._conv_sizes(graph, node)
            group = int(graph.attr(node, "group", 1))
            m, k, n = s["w"][0] // group, math.prod(s["w"][1:]), math.prod(s["y"][2:])
        return gemm_tiles(m, k, n, self._itemsize(graph, node), machine)
