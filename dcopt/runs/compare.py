"""``runs compare``: chosen columns across runs, filtered and sorted.

A column names a run field (``id``, ``kind``, ``model``, ``status``, ``started``, ``label``,
``tags``, ``build_key``), a metric (``latency_ms``, ``speedup.onnxruntime``, ``compile_s`` ...) or
an option (``level``, ``patches``, ``reps`` ...); ``metric:NAME`` / ``option:NAME`` say which when
both exist. A name that is a prefix of metric names picks the shortest one (``latency`` ->
``latency_ms``). Without chosen columns, compare shows the fields, every option whose value
differs between the runs shown (what was varied), and the headline metrics.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Callable

from dcopt.errors import InputError
from dcopt.runs.index import RunRow

FIELDS = ("id", "kind", "model", "status", "started", "label", "tags", "build_key")
#: Metrics shown by default when some run has them: latency, spread, speedups, compile figures.
HEADLINE = ("latency_ms", "p10_ms", "p90_ms", "speedup.onnxruntime", "compile_s", "generated_kernels", "nodes_after")
#: Options that say nothing about what was compared (where output went, display switches).
_NOT_VARIED = {"output", "json_path", "force", "explain", "as_json", "max_lines", "dump_dir", "plot", "no_record"}
#: How the pipeline was asked for; the effective ``pipeline`` option says it once for every command.
_PIPELINE_ASKED = {"level", "passes", "pipeline_file"}


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


@dataclass(frozen=True)
class Column:
    name: str
    get: Callable[[RunRow], object]


def _field(name: str) -> Column:
    if name == "id":
        return Column("id", lambda r: r.short_id)
    if name == "started":
        return Column("started", lambda r: when(r.started))
    if name == "tags":
        return Column("tags", lambda r: ",".join(r.tags))
    return Column(name, lambda r: getattr(r, name))


def resolve_column(name: str, rows: list[RunRow]) -> Column:
    """The column ``name`` means for these runs; InputError listing what exists otherwise."""
    kind, _, bare = name.partition(":") if name.startswith(("metric:", "option:")) else ("", "", name)
    metrics = sorted({m for r in rows for m in r.metrics})
    options = sorted({o for r in rows for o in r.options})
    if not kind and bare in FIELDS:
        return _field(bare)
    if kind != "option" and bare in metrics:
        return Column(bare, lambda r: r.metrics.get(bare))
    if kind != "metric" and bare in options:
        return Column(bare, lambda r: r.options.get(bare))
    if kind != "option":
        prefixed = [m for m in metrics if m.startswith(bare)]
        if prefixed:
            best = min(prefixed, key=len)
            return Column(best, lambda r: r.metrics.get(best))
    raise InputError(f"no column '{name}' in these runs; fields: {', '.join(FIELDS)}; metrics: "
                     f"{', '.join(metrics) or '-'}; options: {', '.join(options) or '-'}")


def varied_options(rows: list[RunRow]) -> list[str]:
    """Options whose value differs between ``rows`` (what the runs varied), in a stable order."""
    names = sorted({o for r in rows for o in r.options} - _NOT_VARIED - _PIPELINE_ASKED)
    return [n for n in names if len({json.dumps(r.options[n], sort_keys=True) for r in rows if n in r.options}) > 1]


def default_columns(rows: list[RunRow]) -> list[str]:
    present = {m for r in rows for m in r.metrics}
    return (["id", "started", "kind", "model", "status", "label"] + [f"option:{o}" for o in varied_options(rows)]
            + [m for m in HEADLINE if m in present])


_WHERE = re.compile(r"^\s*([\w.:\-]+)\s*(!=|>=|<=|=|<|>|~)\s*(.*?)\s*$")


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def where_filter(expression: str, rows: list[RunRow]) -> Callable[[RunRow], bool]:
    """``NAME OP VALUE`` with OP one of = != < <= > >= ~ (contains); numbers compare as numbers."""
    m = _WHERE.match(expression)
    if not m:
        raise InputError(f"--where '{expression}': expected NAME OP VALUE with OP one of = != < <= > >= ~ "
                         f"(e.g. model=resnet50, latency_ms<2)")
    column, op, want = resolve_column(m.group(1), rows), m.group(2), m.group(3)

    def keep(row: RunRow) -> bool:
        value = column.get(row)
        if op == "~":
            return want in _text(value)
        a, b = _number(value), _number(want)
        if a is not None and b is not None:
            return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        text = _text(value)
        if op in ("=", "!="):
            return (text == want) == (op == "=")
        return False if value is None else {"<": text < want, "<=": text <= want, ">": text > want,
                                            ">=": text >= want}[op]

    return keep


def sort_rows(rows: list[RunRow], column: Column, descending: bool) -> list[RunRow]:
    """Sorted by ``column`` (numbers as numbers); runs without a value go last either way."""
    have = [r for r in rows if column.get(r) is not None]
    missing = [r for r in rows if column.get(r) is None]
    numeric = all(_number(column.get(r)) is not None for r in have)
    key = (lambda r: _number(column.get(r))) if numeric else (lambda r: _text(column.get(r)))
    return sorted(have, key=key, reverse=descending) + missing


def compare(rows: list[RunRow], positions: dict[str, int], *, columns=(), wheres=(), minimize=None, maximize=None,
            top=None) -> tuple[list[str], list[list]]:
    """(headers, cells) of the compare table; ``positions``: run id -> its index in ``runs ls``."""
    for expression in wheres:
        keep = where_filter(expression, rows)
        rows = [r for r in rows if keep(r)]
    if minimize and maximize:
        raise InputError("give only one of --min and --max")
    if minimize or maximize:
        rows = sort_rows(rows, resolve_column(minimize or maximize, rows), descending=bool(maximize))
    if top is not None:
        rows = rows[:top]
    cols = [resolve_column(c, rows) for c in (columns or default_columns(rows))]
    return ["#"] + [c.name for c in cols], [[positions.get(r.id)] + [c.get(r) for c in cols] for r in rows]


def cell(value) -> str:
    """How a value reads in a table: 3-4 significant digits for floats, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value) if value != "" else "-"
