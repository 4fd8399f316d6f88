"""Fuzz target: the build loader. A build directory with a damaged, edited, missing or swapped
file loads as a session that computes what the original computed, or is refused with a DcoptError
-- never another exception, never a silently different result."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import dcopt
from dcopt.errors import DcoptError
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.models import seeds
from tests.fuzz.mutations import json_edit

FILES = ["manifest.json", "program.json", "kernels.py", "kernels.ll", "weights.bin", "model.onnx"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(build directory, cache dir, feeds, expected outputs) of a small compiled MLP."""
    root = tmp_path_factory.mktemp("fuzz-build")
    cache = root / "cache"
    sess = dcopt.compile(seeds()[0], cache_dir=cache)
    sess.save(root / "model.dcopt")
    feeds = {"x": np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4)}
    return root / "model.dcopt", cache, feeds, sess.run(None, feeds)


@st.composite
def damage(draw, directory: Path):
    """A function that damages one file of a copy of ``directory`` (and what it did, for the report)."""
    name = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["json", "json", "bytes", "truncate", "delete", "directory", "symlink", "swap"]))
    if kind == "json" and name.endswith(".json"):
        doc = json_edit(json.loads((directory / name).read_text()))
        edited = draw(doc)
        return f"edit {name}", lambda d: (d / name).write_text(json.dumps(edited))
    if kind in ("bytes", "json"):
        at, bit = draw(st.integers(0, 10**6)), draw(st.integers(0, 7))

        def flip(d):
            data = bytearray((d / name).read_bytes())
            if data:
                data[at % len(data)] ^= 1 << bit
            (d / name).write_bytes(bytes(data))

        return f"flip a bit of {name}", flip
    if kind == "truncate":
        keep = draw(st.floats(0, 0.99))
        return f"truncate {name}", lambda d: (d / name).write_bytes((d / name).read_bytes()[:int(keep * (d / name).stat().st_size)])
    if kind == "delete":
        return f"delete {name}", lambda d: (d / name).unlink()
    if kind == "directory":
        return f"{name} a directory", lambda d: ((d / name).unlink(), (d / name).mkdir())
    if kind == "symlink":
        return f"{name} a symlink out", lambda d: ((d / name).unlink(), (d / name).symlink_to("/etc/hostname"))
    other = draw(st.sampled_from([f for f in FILES if f != name]))
    return f"swap {name} and {other}", lambda d: (os.replace(d / name, d / "tmp"), os.replace(d / other, d / name),
                                                  os.replace(d / "tmp", d / other))


@fuzz_settings(ci_examples=25)
@given(st.data())
def test_load_damaged_builds(build, data):
    directory, cache, feeds, expected = build
    what, apply = data.draw(damage(directory))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model.dcopt"
        shutil.copytree(directory, copy, symlinks=True)
        apply(copy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                got = dcopt.load(copy, cache_dir=cache).run(None, feeds)
            except DcoptError as exc:
                event(f"refused: {type(exc).__name__}")
                return
    event("loaded and ran")
    for a, b in zip(got, expected):  # it loaded and ran: then it is the same program
        np.testing.assert_array_equal(a, b, err_msg=what)
