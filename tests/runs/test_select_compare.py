"""Naming runs (index, range, id prefix, label), the compare table, and the run diff."""

from __future__ import annotations

import pytest

from dcopt.errors import InputError
from dcopt.runs.compare import compare, default_columns
from dcopt.runs.diff import diff_runs
from dcopt.runs.select import list_runs, select_one, select_runs
from tests.runs.conftest import fake_run


@pytest.fixture
def three(home):
    ids = [fake_run(options={"threads": lvl, "reps": 20}, metrics={"latency_ms": ms, "speedup.onnxruntime": sp},
                    home=home, label=label)
           for lvl, ms, sp, label in (("2", 2.0, 0.9, "slow"), ("3", 1.5, 1.2, "fast"), ("3", 1.8, 1.0, ""))]
    return ids  # oldest first


def test_select_by_index_range_prefix_label(home, three):
    rows = list_runs(home)
    assert [r.id for r in rows] == three[::-1]  # 1 = latest
    assert select_one("1", rows).id == three[2]
    assert [r.id for r in select_runs(["2:3"], rows)] == three[1::-1]
    assert select_one(three[0][:6], rows).id == three[0]
    assert select_one("fast", rows).id == three[1]
    # an index past the run count, as a digit no random run id starts with (else it is an id prefix)
    absent = next(d for d in "987654" if not any(r.id.startswith(d) for r in rows))
    with pytest.raises(InputError, match="there are 3 run"):
        select_one(absent, rows)
    with pytest.raises(InputError, match="no run 'nope'"):
        select_one("nope", rows)


def test_compare_filters_sorts_and_shows_what_varied(home, three):
    rows = list_runs(home)
    positions = {r.id: i for i, r in enumerate(rows, 1)}
    assert "option:threads" in default_columns(rows) and "option:reps" not in default_columns(rows)
    headers, cells = compare(rows, positions, minimize="latency", top=2, columns=["label", "latency_ms"])
    assert headers == ["#", "label", "latency_ms"]
    assert cells == [[2, "fast", 1.5], [1, "", 1.8]]
    _, cells = compare(rows, positions, wheres=["threads=3", "speedup.onnxruntime>1.1"], columns=["id"])
    assert cells == [[2, three[1][:8]]]
    _, cells = compare(rows, positions, maximize="speedup", columns=["speedup.onnxruntime"])
    assert [c[1] for c in cells] == [1.2, 1.0, 0.9]
    with pytest.raises(InputError, match="no column 'nonsense'.*latency_ms"):
        compare(rows, positions, columns=["nonsense"])
    with pytest.raises(InputError, match="NAME OP VALUE"):
        compare(rows, positions, wheres=["level"])


def test_diff_says_which_was_faster_and_what_differed(home, three):
    d = diff_runs(home, three[0], three[1])
    assert d.verdict() == "b is 25.0% faster than a (latency_ms 2 -> 1.5)"
    assert d.options == [("threads", "2", "3")]
    text = "\n".join(d.lines())
    assert "option threads: \"2\" -> \"3\"" in text and "speedup.onnxruntime" in text
    assert d.to_json()["metrics"][0]["name"] == "latency_ms"


def test_a_thousand_runs_list_and_compare_quickly(home):
    import time

    from click.testing import CliRunner

    from dcopt.cli import app
    from dcopt.runs.index import RunIndex, RunRow

    now = time.time()
    RunIndex(home).put_many([RunRow(id=f"{i:032x}", started=now - i, finished=now - i, kind="bench", model="m",
                                    status="completed", options={"threads": i % 3}, sha="x",
                                    metrics={"latency_ms": 1 + (i * 7919) % 1000 / 1000})
                             for i in range(1000)])
    for args in (["runs", "ls"], ["runs", "compare"], ["runs", "compare", "--min", "latency", "--top", "5"]):
        start = time.perf_counter()
        result = CliRunner().invoke(app, args)
        elapsed = time.perf_counter() - start
        assert result.exit_code == 0, result.output
        assert elapsed < 1.0, f"dcopt {' '.join(args)} took {elapsed:.2f} s"
    assert len(CliRunner().invoke(app, ["runs", "ls"]).output.splitlines()) == 1002  # header, rule, 1000 rows


def test_reindex_rebuilds_from_the_directories(home, three):
    import shutil

    from dcopt.runs.home import INDEX, runs_dir
    from dcopt.runs.select import reindex

    before = [(r.id, r.label, r.metrics, r.sha) for r in list_runs(home)]
    shutil.rmtree(runs_dir(home) / three[0])  # a run deleted by hand
    (home / INDEX).unlink()
    assert reindex(home) == (2, 0)
    assert [(r.id, r.label, r.metrics, r.sha) for r in list_runs(home)] == before[:2]
    from dcopt.runs.index import RunIndex, RunRow

    RunIndex(home).put(RunRow(id="f" * 32, started=0.0, status="completed"))  # a row without a directory
    assert reindex(home) == (2, 1)


def test_an_all_digit_id_prefix_beyond_the_run_count_selects_by_id():
    """A 6-character id prefix is all digits about 6% of the time: past the last index it is an id."""
    from dcopt.runs.index import RunRow

    rows = [RunRow(id="761402" + "a" * 26, started=2.0), RunRow(id="bc4099" + "b" * 26, started=1.0)]
    assert select_one("761402", rows).id == rows[0].id
    assert select_one("2", rows).id == rows[1].id  # an index while it is one
    with pytest.raises(InputError, match="there are 2 run"):
        select_one("999999", rows)
