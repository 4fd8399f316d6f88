"""Runs remember their model's sha256 in the index, so the viewer finds a model's runs by content
(a renamed copy's included, another model saved under the same name excluded), and an index
written before that column existed is upgraded when opened."""

from __future__ import annotations

import shutil
import sqlite3

import onnx
from click.testing import CliRunner

from dcopt.cli import app
from dcopt.examples import TINY_RESNET
from dcopt.runs.index import RunIndex
from dcopt.view.run_panel import runs_of


def _compile(model, out):
    result = CliRunner().invoke(app, ["compile", str(model), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output


def test_runs_are_matched_to_a_model_by_its_digest(home, tmp_path):
    copy = tmp_path / "renamed.onnx"
    shutil.copyfile(TINY_RESNET, copy)
    other = tmp_path / "other" / "tiny_resnet.onnx"  # same name, other bytes
    other.parent.mkdir()
    model = onnx.load(str(TINY_RESNET))
    model.doc_string = "another model"
    onnx.save(model, str(other))
    for source, out in ((TINY_RESNET, "a"), (copy, "b"), (other, "c")):
        _compile(source, tmp_path / f"{out}.dcopt")
    rows = RunIndex(home).rows()
    assert len(rows) == 3 and all(r.model_sha and len(r.model_sha) == 64 for r in rows)
    assert len(runs_of(str(TINY_RESNET))) == 2  # itself and the renamed copy
    assert len(runs_of(str(copy))) == 2
    assert len(runs_of(str(other))) == 1


def test_an_index_from_before_the_digest_column_is_upgraded(home):
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / "runs.sqlite")
    db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, started REAL, finished REAL, kind TEXT, model TEXT, "
               "status TEXT, pid INTEGER, pid_start TEXT, host TEXT, label TEXT, tags TEXT, options TEXT, "
               "metrics TEXT, build_key TEXT, sha TEXT)")
    db.execute("INSERT INTO runs VALUES ('a' , 1.0, 2.0, 'compile', 'tiny_resnet', 'completed', NULL, NULL, "
               "'h', '', '[]', '{}', '{}', '', '')")
    db.commit()
    db.close()
    (row,) = RunIndex(home).rows()
    assert row.model == "tiny_resnet" and row.model_sha is None
    assert len(runs_of(str(TINY_RESNET))) == 1  # no digest recorded: matched by name
