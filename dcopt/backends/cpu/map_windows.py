"""The loop structure of a generated map kernel over windows: which outer levels are split into
border and interior segments, when a short-rowed plane's interior runs as one flat loop, and when
a window's taps are written out one by one (:class:`WindowLevels`, mixed into the renderer of
:mod:`map_codegen`).

Why a module of its own: these are the decisions that make padded, strided and small windows
(pooling, LRN, convolutions written as maps) vectorize -- each measured against the plain loop
nest and taken only where it won -- while :mod:`map_codegen` writes loads, tasklets and stores.
The rendering itself is the renderer's; this part says which loops there are.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from dcopt.ir.loops import LoopSpec, Range
from dcopt.ir.tasklet import IndexExpr

IND = "    "


def constant_param_bounds(m: LoopSpec) -> dict[str, tuple[int, int]] | None:
    """Inclusive bounds of a map's params whose ranges are constants; a param over a symbol (a
    batch a run binds) has none. None when a constant range is empty (nothing runs then)."""
    bounds = {}
    for p, (b, e) in zip(m.params, m.ranges):
        if b.names or e.names:
            continue
        lo, hi = int(b.evaluate({})), int(e.evaluate({})) - 1
        if hi < lo:
            return None
        bounds[p] = (lo, hi)
    return bounds


#: Most iterations a register max/min reduction's inner loops may take for the select form.
SMALL_WINDOW = 32
#: Most trips of a small window's innermost loop written out in the source (:meth:`WindowLevels._unrolled_param`).
UNROLL_WINDOW = 8
#: Fewest iterations of a loop LLVM vectorizes (16 fp32 lanes) for a written-out window to pay.
VECTOR_TRIPS = 16
#: Column interiors shorter than this run as one loop over the flattened plane (:meth:`WindowLevels._flat_plan`).
FLAT_MAX_COLUMNS = 32
#: Fewest iterations of that flat loop for it to pay.
FLAT_MIN_TRIPS = 48


def small_window(m: LoopSpec, inner: Sequence[int]) -> int | None:
    """Trip count of a map's inner loops when they are constants totalling at most
    :data:`SMALL_WINDOW` (a pooling window: unrolled and vectorized across outputs), else None."""
    bounds = constant_param_bounds(m)
    if bounds is None or any(m.params[j] not in bounds for j in inner):
        return None
    trips = 1
    for j in inner:
        lo, hi = bounds[m.params[j]]
        trips *= hi - lo + 1
    return trips if trips <= SMALL_WINDOW else None


def stays_inside(dim: IndexExpr, bounds: Mapping[str, tuple[int, int]], size: int | str) -> bool:
    """Whether index ``dim`` lies in ``[0, size)`` for every param value within ``bounds`` (not
    provable from bounds along an axis a run sizes: a symbolic ``size``)."""
    if not isinstance(size, int):
        return False
    lo, hi = dim.bounds(bounds)
    return 0 <= lo and hi < size


def _pieces(interior: tuple[int, int], whole: tuple[int, int]) -> list[tuple[int, int]]:
    """A level's inclusive segments: before its interior, the interior, after it (empty ones dropped)."""
    (a, b), (lo, hi) = interior, whole
    return [p for p in ((lo, a - 1), (a, b), (b + 1, hi)) if p[0] <= p[1]]


class WindowLevels:
    """The outer levels of a kernel, for :class:`map_codegen._Renderer`, whose state it reads
    (``spec``, ``outer_names``, ``local_var``, ``arg_var``, ``_segment``, ``_flat``) and whose
    ``_map``, ``_bound`` and ``_inside_dims`` it calls."""

    # -- outer loops, peeled at borders ---------------------------------------------------------
    def _outer_levels(self, j: int, depth: int, segment: dict[int, tuple[int, int]]) -> list[str]:
        """Outer loop ``j`` and everything inside it. Where guarded reads (padding, windows) leave
        their container only near the ends of level ``j``'s range, the level is split into border
        and interior segments and the body is written once per segment: inside the interior the
        guards are provably true and vanish, so the window loops unroll into straight vector
        loads along the innermost outer level (a 3x3 max pool with padding ran 6 ns per output
        with clamps and selects on every load)."""
        if j == self.spec.outer:
            self._segment = segment
            lines = []
            for m_index, m in enumerate(self.spec.maps):
                lines.extend(self._map(m_index, m, depth))
            return lines
        name = self.outer_names[j]
        if j == 0 and self._joined_outer():
            e1 = self._bound(self.spec.maps[0].ranges[1][1])
            return [f"{IND * depth}for f0 in range(lo, hi):", f"{IND * (depth + 1)}{name} = f0 // {e1}",
                    f"{IND * (depth + 1)}{self.outer_names[1]} = f0 - {name} * {e1}",
                    *self._outer_levels(2, depth + 1, segment)]
        if j == 0:
            return [f"{IND * depth}for {name} in range(lo, hi):", *self._outer_levels(1, depth + 1, segment)]
        b, e = self.spec.maps[0].ranges[j]
        plan = self._flat_plan(j, segment)
        if plan is not None:
            return self._flat_levels(j, depth, segment, plan)
        pieces = self._peel(j, segment)
        if pieces is None:
            return [f"{IND * depth}for {name} in range({self._bound(b)}, {self._bound(e)}):",
                    *self._outer_levels(j + 1, depth + 1, segment)]
        lines = []
        for lo, hi in pieces:
            lines.append(f"{IND * depth}for {name} in range({lo}, {hi + 1}):")
            lines.extend(self._outer_levels(j + 1, depth + 1, {**segment, j: (lo, hi)}))
        return lines

    def _joined_outer(self) -> bool:
        """Whether outer levels 0 and 1 run as one loop over their product (``f0`` split into
        ``o0, o1`` per iteration). Why: a build for every size keeps ``batch`` as level 0, which
        is 1 at run time, so the pool had one task; the static build drops size-1 loops and
        splits over the sequence. Only for a symbolic level 0 over a level 1 that starts at 0
        and is written as one plain loop (no peeled or flattened segments)."""
        if self.spec.outer < 2:
            return False
        (b0, e0), (b1, _) = self.spec.maps[0].ranges[:2]
        if not (b0.names or e0.names) or b1.names or int(b1.evaluate({})) != 0:
            return False
        return self._peel(1, {}) is None and self._flat_plan(1, {}) is None

    def _peel(self, j: int, segment: Mapping[int, tuple[int, int]]) -> list[tuple[int, int]] | None:
        """Inclusive (lo, hi) segments of outer level ``j``: [begin, a), [a, b], (b, end] where
        every guarded read that moves with level ``j`` stays inside its container for level-``j``
        values in [a, b]; None when nothing is gained (no such read, no interior, symbolic ranges).
        Only the innermost outer level is peeled (three copies of the body): the guards of the
        levels outside it are invariant in its loop, so it vectorizes with them. Peeling rows too
        (nine copies) took Inception-v1's 13x13 pools from 0.14 to 0.10 ms but cost 3-4 s more
        compile time (cold compile 6.4 s unpeeled, 7.3 s innermost, 10.2 s both)."""
        if j != self.spec.outer - 1:
            return None
        found = self._interior(j, segment)
        return None if found is None else _pieces(*found)

    def _interior(self, j: int, segment: Mapping[int, tuple[int, int]]):
        """``((a, b), (lo, hi))``: the values [a, b] of outer level ``j`` for which every guarded
        read that moves with it stays inside its container, and the level's whole range; None when
        there is no such read, no interior, nothing outside it, or a symbolic range."""
        interior = None
        for m in self.spec.maps:
            bounds = self._bounds_of(m, segment)
            param = m.params[j]
            if bounds is None or param not in bounds:
                return None
            lo, hi = bounds[param]
            for memlet in m.inputs:
                shape = self.spec.shapes.get(memlet.container)
                if memlet.outside is None or memlet.container in self.local_var or shape is None \
                        or len(shape) != len(memlet.subset):
                    continue
                for k, dim in enumerate(memlet.subset):
                    if isinstance(dim, Range) or param not in dim.names or not dim.names <= bounds.keys():
                        continue

                    def inside(v, dim=dim, k=k):
                        return stays_inside(dim, {**bounds, param: (v, v)}, shape[k])

                    a = next((v for v in range(lo, hi + 1) if inside(v)), None)
                    if a is None:
                        return None
                    z = next(v for v in range(hi, a - 1, -1) if inside(v))
                    interior = (a, z) if interior is None else (max(interior[0], a), min(interior[1], z))
        if interior is None or interior[0] > interior[1]:
            return None
        whole = self._bounds_of(self.spec.maps[0], segment)[self.spec.maps[0].params[j]]
        return None if interior == whole else (interior, whole)

    # -- small planes: the interior as one flat loop ---------------------------------------------
    def _flat_plan(self, j: int, segment: Mapping[int, tuple[int, int]]) -> dict | None:
        """How to write a short-rowed padded window's interior as one loop over the flattened
        plane, or None. Why: a 3x3 stride-1 pool on a 13x13 plane has 11 interior columns per
        row, under the 16 lanes of a vector, so every output ran scalar (Inception-v1's
        512x13x13 pools: 100 us on two cores, onnxruntime 30). Over the flattened plane a tap
        ``x[o1 + u - 1, o2 + v - 1]`` is ``x_flat[q + (u - 1) * W + (v - 1)]``, one unit-stride
        loop of ~(H-2)*W iterations. Its positions in the border columns read neighbouring rows
        (inside the plane: the offsets are linear and the loop's ends are interior points) and
        are written again by the border code that follows, which runs as before.

        Conditions: ``j`` is the row level (the level above the innermost); every map has
        constant ranges; both levels have interiors (_interior) and the column
        interior is shorter than :data:`FLAT_MAX_COLUMNS` and the flat loop takes at least
        :data:`FLAT_MIN_TRIPS` iterations; every memlet that uses the row or
        column param indexes a container's last two axes with exactly ``row + f(inner)`` and
        ``col + g(inner)`` over planes ``W`` wide, and its leading axes use neither them nor
        inner params; outputs are stored or reduced in registers, and no map reads an array another
        writes (registers carry values between the maps of one position)."""
        spec = self.spec
        if j != spec.outer - 2 or self._flat:
            return None
        rows, cols = self._interior(j, segment), self._interior(j + 1, segment)
        if rows is None or cols is None or cols[0][1] - cols[0][0] + 1 >= FLAT_MAX_COLUMNS:
            return None
        read = {x.container for m in spec.maps for x in m.inputs}
        width, views = None, {}
        for m in spec.maps:
            row, col = m.params[j], m.params[j + 1]
            inner = set(m.params[spec.outer:])
            if {row, col} & m.tasklet.reads:  # a tasklet computing with the position (no o1/o2 in the flat loop)
                return None
            if any(out.init or (out.container in read and out.container not in self.local_var)
                   or (out.wcr and any(self._names_of(d) & inner for d in out.subset)) for out in m.outputs):
                return None
            for memlet in (*m.inputs, *m.outputs):
                if memlet.container in self.local_var:  # a register: the same position in every map
                    continue
                shape = spec.shapes.get(memlet.container)
                uses = [k for k, d in enumerate(memlet.subset) if self._names_of(d) & {row, col}]
                if not uses:
                    continue
                if shape is None or len(shape) != len(memlet.subset) or len(shape) < 2 \
                        or uses != [len(shape) - 2, len(shape) - 1] or not all(isinstance(d, int) for d in shape[-2:]):
                    return None
                for k, param in ((len(shape) - 2, row), (len(shape) - 1, col)):
                    d = memlet.subset[k]
                    other = col if param == row else row
                    if isinstance(d, Range) or other in d.names or not d.names <= set(m.params):
                        return None
                    coeffs = d.linear({}, m.params)
                    if coeffs is None or coeffs.get(param) != 1:
                        return None
                if any(isinstance(d, Range) or self._names_of(d) & (inner | {row, col}) for d in memlet.subset[:-2]):
                    return None
                if width not in (None, shape[-1]) or views.get(memlet.container, shape) != shape:
                    return None
                width = shape[-1]
                views[memlet.container] = shape
        if width is None:
            return None
        (a1, b1), (r0, r1) = rows
        (a2, b2), _ = cols
        if (b1 - a1 + 1) * width < FLAT_MIN_TRIPS:  # a 6x6 plane's 22 flat iterations ran slower (64 -> 92 us)
            return None
        return {"width": width, "rows": (a1, b1), "whole_rows": (r0, r1), "first": a1 * width + a2,
                "last": b1 * width + b2, "views": views}

    def _flat_levels(self, j: int, depth: int, segment: dict[int, tuple[int, int]], plan: dict) -> list[str]:
        """Levels ``j`` (rows) and ``j + 1`` (columns) as :meth:`_flat_plan` says: plane views,
        the flat interior loop, then the rows again with only their border columns (rows outside
        the interior get every column)."""
        width, lines = plan["width"], []
        self._flat = {}
        for c, shape in plan["views"].items():
            view = f"F{len(self._flat)}_{self.arg_var[c]}"
            var = self.arg_var[c]  # leading sizes from the array: a pool task's array is the whole buffer
            flat_shape = ", ".join([*(f"{var}.shape[{k}]" for k in range(len(shape) - 2)), "1", str(shape[-2] * width)])
            lines.append(f"{IND * depth}{view} = {self.arg_var[c]}.reshape(({flat_shape},))")
            self._flat[c] = view
        lines.append(f"{IND * depth}for q in range({plan['first']}, {plan['last'] + 1}):")
        self._segment = {**segment, j: plan["rows"]}
        for m_index, m in enumerate(self.spec.maps):
            lines.extend(self._map(m_index, m, depth + 1))
        self._flat = {}
        name = self.outer_names[j]
        (a1, b1), (r0, r1) = plan["rows"], plan["whole_rows"]
        for lo, hi, borders_only in ((r0, a1 - 1, False), (a1, b1, True), (b1 + 1, r1, False)):
            if lo > hi:
                continue
            lines.append(f"{IND * depth}for {name} in range({lo}, {hi + 1}):")
            rows = {**segment, j: (lo, hi)}
            found = self._interior(j + 1, rows)  # the columns' segments in these rows
            pieces = [self._bounds_of(self.spec.maps[0], rows)[self.spec.maps[0].params[j + 1]]] if found is None \
                else _pieces(*found)
            col = self.outer_names[j + 1]
            for clo, chi in pieces:
                if borders_only and found is not None and (clo, chi) == found[0]:
                    continue  # the flat loop wrote these
                lines.append(f"{IND * (depth + 1)}for {col} in range({clo}, {chi + 1}):")
                lines.extend(self._outer_levels(j + 2, depth + 2, {**segment, j: (lo, hi), j + 1: (clo, chi)}))
        return lines

    def _bounds_of(self, m: LoopSpec, segment: Mapping[int, tuple[int, int]]) -> dict[str, tuple[int, int]] | None:
        """Constant inclusive bounds of ``m``'s params, with the outer levels narrowed to the
        peeled segment being written; None when a range is symbolic or empty."""
        bounds = constant_param_bounds(m)
        if bounds is None:
            return None
        return {**bounds, **{m.params[j]: seg for j, seg in segment.items()}}

    def _unrolled_param(self, m: LoopSpec, inner: Sequence[int], window: int | None) -> str | None:
        """The window param whose loop is written out as copies of the body (its value a literal
        in each), or None. Why: a read whose overlapping window moves by a stride of 2 or more along
        the vectorized loop (``x[2 * o2 + p - 1]``, p in 0..2: a 3x3 stride-2 max pool) became three
        gathers per vector when LLVM unrolled the window loop itself; written out, the three loads
        form one interleaved group (wide loads and shuffles): ResNet's stem pool (64x112x112 to
        56x56) 433 -> 176 us on one core (onnxruntime 124-139). Only then: elsewhere the loop form
        was as fast or faster (3x3 stride-1 pools, 2x2 stride-2 ones, whose reads interleave
        without it), and on outputs under 16 wide no vector loop runs at all.

        Conditions: a small fixed window (:func:`small_window`) whose innermost loop takes at most
        :data:`UNROLL_WINDOW` trips; the vectorized level (the innermost outer one) runs at least
        :data:`VECTOR_TRIPS` times; an input dim is ``s * o + c * p + k`` in that level's param
        ``o`` and the window param ``p`` with ``s >= 2`` and ``trips * c > s``; the read is
        guarded somewhere (padding). Unpadded stride-2 pools vectorized as loops, and written out
        ran 2x slower (SqueezeNet's 96x109x109 pool: 91 -> 199 us)."""
        if window is None or not inner or self.spec.outer == 0:
            return None
        bounds = constant_param_bounds(m)
        param, level = m.params[inner[-1]], m.params[self.spec.outer - 1]
        if bounds is None or param not in bounds or level not in bounds:
            return None
        lo, hi = bounds[param]
        trips = hi - lo + 1
        vlo, vhi = bounds[level]
        if trips > UNROLL_WINDOW or vhi - vlo + 1 < VECTOR_TRIPS:
            return None
        for memlet in m.inputs:
            if memlet.outside is None or len(self._inside_dims(memlet, bounds)) == len(memlet.subset):
                continue  # no guard anywhere (an unpadded window): as a loop it vectorized well
            for dim in memlet.subset:
                if isinstance(dim, Range) or not {param, level} <= dim.names:
                    continue
                coeffs = dim.linear({}, m.params) if dim.names <= set(m.params) else None
                if coeffs is None:
                    continue
                s, c = abs(coeffs.get(level, 0)), abs(coeffs.get(param, 0))
                if s >= 2 and trips * c > s:
                    return param
        return None

    @staticmethod
    def _names_of(d) -> set:
        return set(d.begin.names | d.end.names) if isinstance(d, Range) else set(d.names)
