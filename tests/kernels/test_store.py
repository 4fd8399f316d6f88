"""The kernel store: hits, misses, atomic publish, corruption -> rebuild with a warning, gc."""

import json
import logging
import os
import time

import pytest

from dcopt.errors import DcoptError
from dcopt.kernels import KernelStore, default_root
from tests.kernels.conftest import FakeBuild, age_entry, load_source, make_key


def test_build_once_then_hit(store):
    key, build = make_key(), FakeBuild()
    first = store.get_or_build(key, build, load=load_source, provenance={"model": "m", "node": "n1"})
    second = store.get_or_build(key, build, load=load_source)
    assert first.built and not second.built and build.calls == 1
    assert first.value == second.value == build.text
    entry = second.entry
    assert entry.path == store.root / key.digest[:2] / key.digest
    assert entry.meta["components"] == key.components()
    assert entry.provenance == {"model": "m", "node": "n1"}
    assert entry.build_info == {"kind": "fake"}
    assert set(entry.meta["files"]) == {"source.py", "kernel.o"}
    assert entry.size == sum(f["size"] for f in entry.meta["files"].values())
    assert store.get(key).key == key.digest
    assert store.get(make_key("other")) is None


def test_different_option_is_a_different_entry(store):
    a = store.get_or_build(make_key(), FakeBuild("a = 1\n"), load=load_source)
    b = store.get_or_build(make_key(options={"fastmath": False}), FakeBuild("b = 1\n"), load=load_source)
    assert a.entry.path != b.entry.path and b.built and b.value == "b = 1\n"


def test_build_failure_leaves_nothing(store):
    def broken(staging):
        (staging / "source.py").write_text("half")
        raise RuntimeError("codegen bug")

    with pytest.raises(RuntimeError, match="codegen bug"):
        store.get_or_build(make_key(), broken)
    assert store.get(make_key()) is None
    assert list(store.entries()) == []
    assert not any((store.root / "tmp").iterdir())


def _damage_flip(entry):
    path = entry.path / "kernel.o"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_truncate(entry):
    path = entry.path / "kernel.o"
    path.write_bytes(path.read_bytes()[:10])


def _damage_delete(entry):
    (entry.path / "source.py").unlink()


def _damage_meta_garbage(entry):
    (entry.path / "meta.json").write_bytes(b"\x00\x17garbage{")


def _damage_meta_deleted(entry):
    (entry.path / "meta.json").unlink()


def _damage_meta_other_key(entry):
    meta = json.loads((entry.path / "meta.json").read_text())
    meta["key"] = "0" * 64
    (entry.path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [_damage_flip, _damage_truncate, _damage_delete, _damage_meta_garbage,
                                    _damage_meta_deleted, _damage_meta_other_key])
def test_damaged_entry_is_rebuilt_with_a_warning(store, damage, caplog):
    key, build = make_key(), FakeBuild()
    entry = store.get_or_build(key, build).entry
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="dcopt.kernels"):
        again = store.get_or_build(key, build, load=load_source)
    assert again.built and build.calls == 2 and again.value == build.text
    assert any("damaged" in r.getMessage() and key.short in r.getMessage() for r in caplog.records)
    assert store.verify(key.digest) is None  # intact again


def test_get_reports_damage_as_none(store, caplog):
    key = make_key()
    _damage_flip(store.get_or_build(key, FakeBuild()).entry)
    with caplog.at_level(logging.WARNING, logger="dcopt.kernels"):
        assert store.get(key) is None
    assert "does not match its recorded sha256" in caplog.text
    assert "does not match" in store.verify(key.digest)


def test_load_failure_on_stored_entry_rebuilds_but_not_on_fresh(store, caplog):
    key, build = make_key(), FakeBuild()
    store.get_or_build(key, build)
    calls = []

    def flaky_load(entry):
        calls.append(entry)
        if len(calls) == 1:
            raise ValueError("machine code rejected")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="dcopt.kernels"):
        fetched = store.get_or_build(key, build, load=flaky_load)
    assert fetched.built and fetched.value == "ok" and "machine code rejected" in caplog.text

    def always_fails(entry):
        raise ValueError("bad codegen")

    with pytest.raises(ValueError, match="bad codegen"):
        store.get_or_build(make_key("fresh"), FakeBuild(), load=always_fails)


def test_loader_never_sees_unlisted_partial_entries(store):
    """A directory without meta.json (e.g. copied by hand) is damaged, not an entry."""
    key = make_key()
    path = store.entry_dir(key.digest)
    path.mkdir(parents=True)
    (path / "source.py").write_text("stale")
    fetched = store.get_or_build(key, FakeBuild(), load=load_source)
    assert fetched.built and fetched.value != "stale"


def test_explain_miss_names_the_component(store):
    store.get_or_build(make_key(), FakeBuild(), provenance={"model": "bert", "node": "gelu"})
    store.get_or_build(make_key("unrelated-ir", codegen_version="cg-0"), FakeBuild())
    lines = store.explain_miss(make_key(options={"fastmath": False}))
    text = "\n".join(lines)
    assert "not stored; nearest of 2 entries" in lines[0]
    assert lines[1].strip().startswith(make_key().short) and "bert/gelu" in lines[1]
    assert lines[2].strip() == "options.fastmath: true -> false"
    assert "codegen_version" in text  # the farther entry also differs in codegen_version
    assert store.explain_miss(make_key()) == [f"kernel {make_key().short} is stored and intact"]
    assert "empty" in KernelStore(store.root / "void").explain_miss(make_key())[0]


def test_miss_is_explained_in_debug_log(store, caplog):
    store.get_or_build(make_key(), FakeBuild())
    with caplog.at_level(logging.DEBUG, logger="dcopt.kernels"):
        store.get_or_build(make_key(codegen_version="cg-2"), FakeBuild())
    assert 'codegen_version: "cg-1" -> "cg-2"' in caplog.text


def test_find_by_prefix(store):
    key = make_key()
    store.get_or_build(key, FakeBuild())
    assert store.find(key.digest[:6]).key == key.digest
    with pytest.raises(DcoptError, match="no kernel"):
        store.find("zzzz")


def _fake_sized(size):
    def build(staging):
        (staging / "source.py").write_bytes(b"#" * size)
    return build


def test_gc_by_age_size_and_damage(store):
    # meta.json holds no hash of itself, so aging it in place keeps the entry intact
    old = store.get_or_build(make_key("old"), _fake_sized(1000)).entry
    mid = store.get_or_build(make_key("mid"), _fake_sized(1000)).entry
    new = store.get_or_build(make_key("new"), _fake_sized(1000)).entry
    bad = store.get_or_build(make_key("bad"), _fake_sized(1000)).entry
    age_entry(old, 10)
    age_entry(mid, 5)
    _damage_delete(bad)
    abandoned = store.root / "tmp" / "deadbeef-1-0a1b2c3d"  # a staging directory's name
    abandoned.mkdir(parents=True)
    os.utime(abandoned, (time.time() - 7200,) * 2)
    theirs = store.root / "tmp" / "notes"  # not a name dcopt stages under: never swept
    theirs.mkdir()
    os.utime(theirs, (time.time() - 7200,) * 2)

    planned = store.gc(older_than_days=7, dry_run=True)
    assert {r.path for r in planned} == {old.path, bad.path, abandoned}
    assert old.path.exists() and bad.path.exists()  # dry run

    removed = store.gc(older_than_days=7, max_bytes=1500)
    reasons = {r.path: r.reason for r in removed}
    assert reasons[old.path].startswith("unused for 10")
    assert reasons[bad.path].startswith("damaged")
    assert reasons[mid.path].startswith("over the size limit")  # least recently used of the rest
    assert not abandoned.exists() and theirs.exists()
    assert [e.key for e in store.entries()] == [new.key]


def test_gc_skips_an_entry_being_built(store):
    entry = store.get_or_build(make_key(), FakeBuild()).entry
    with store._lock(entry.key):
        assert store.gc(max_bytes=0) == []
    assert [r.path for r in store.gc(max_bytes=0)] == [entry.path]


def test_hit_refreshes_last_use(store):
    key = make_key()
    entry = store.get_or_build(key, FakeBuild()).entry
    age_entry(entry, 30)
    store.get_or_build(key, FakeBuild())
    assert store.gc(older_than_days=1) == []


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DCOPT_CACHE_DIR", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" / "kernels"
    assert KernelStore().root == tmp_path / "c" / "kernels"
    assert KernelStore(tmp_path / "explicit").root == tmp_path / "explicit"  # explicit beats the env
    monkeypatch.delenv("DCOPT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_root() == default_root().home() / ".cache" / "dcopt" / "kernels"


def test_damage_warns_once(store, caplog):
    key = make_key()
    _damage_flip(store.get_or_build(key, FakeBuild()).entry)
    with caplog.at_level(logging.WARNING, logger="dcopt.kernels"):
        store.get_or_build(key, FakeBuild())
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_gc_skips_entries_in_use_and_a_held_damaged_entry_is_still_rebuilt(store):
    held_key, free_key = make_key("held"), make_key("free")
    for key in (held_key, free_key):
        store.get_or_build(key, FakeBuild())
    holds = store.hold([held_key.digest])
    assert store.in_use(held_key.digest) and not store.in_use(free_key.digest)
    assert [r.entry.key for r in store.gc(max_bytes=0, dry_run=True)] == [free_key.digest]
    assert [r.entry.key for r in store.gc(max_bytes=0)] == [free_key.digest]
    assert store.get(held_key) is not None
    (store.entry_dir(held_key.digest) / "kernel.o").write_bytes(b"damaged")  # the holder can rebuild it
    build = FakeBuild()
    assert store.get_or_build(held_key, build).built and build.calls == 1
    holds.close()
    assert not store.in_use(held_key.digest)
    assert [r.entry.key for r in store.gc(max_bytes=0)] == [held_key.digest]
