"""Format and merge-strategy plugins, registered the way an installed package registers them: a
``*.dist-info`` directory with an ``entry_points.txt`` on a ``sys.path`` entry, which is what
``importlib.metadata.entry_points`` reads. The plugin modules below are real files imported from
that directory, so the test covers discovery, loading, ``dcopt diff``/``dcopt merge --strategy``
and the errors a broken plugin gives."""

import json
import struct
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from dcopt.cli import app
from dcopt.versions import formats, merge
from dcopt.versions.errors import PluginError

#: a complete third-party format: b"TOYW", u32 header length, JSON header, raw tensor bytes
TOY_FORMAT = '''
import json, struct
import numpy as np
from dcopt.versions.formats import ModelFormat, Payload, Structure

def _header(data):
    (size,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8:8 + size]), 8 + size

class ToyFormat(ModelFormat):
    """Toy weights: name -> [dtype, shape, offset, nbytes] in a JSON header."""
    name = "toyw"

    def sniff(self, head):
        return head[:4] == b"TOYW"

    def payloads(self, data, file):
        header, base = _header(data)
        return sorted((Payload(k, d, tuple(s), "raw", base + o, base + o + n) for k, (d, s, o, n) in header.items()),
                      key=lambda p: p.start)

    def arrays(self, data, file, path=None):
        return {p.name: np.frombuffer(data[p.start:p.end], p.dtype).reshape(p.shape)
                for p in self.payloads(data, file)}

    def structure(self, data, file):
        return Structure(metadata={"toy": "1"})

    def replace(self, data, arrays, file):
        out = bytearray(data)
        for p in self.payloads(data, file):
            if p.name in arrays:
                out[p.start:p.end] = np.ascontiguousarray(arrays[p.name], p.dtype).tobytes()
        return bytes(out)
'''

#: a merge strategy: elementwise maximum of the two sides
TOY_STRATEGY = '''
import numpy as np

def maximum(base, ours, theirs, weights, density):
    """elementwise max(ours, theirs)"""
    return np.maximum(ours, theirs)

def crashes(base, ours, theirs, weights, density):
    raise RuntimeError("boom")
'''


def toy_bytes(tensors: dict) -> bytes:
    header, blobs, pos = {}, [], 0
    for name, array in tensors.items():
        blob = array.tobytes()
        header[name] = [array.dtype.name, list(array.shape), pos, len(blob)]
        blobs.append(blob)
        pos += len(blob)
    text = json.dumps(header).encode()
    return b"TOYW" + struct.pack("<I", len(text)) + text + b"".join(blobs)


def install_plugin(root, modules: dict[str, str], entry_points: dict[str, dict[str, str]]):
    """A fake installed distribution: modules plus toy_plugins-0.1.dist-info on ``root``."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / "toy_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()))


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A sys.path entry for fake distributions; the plugin registries are re-read around each test."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    formats.registered.cache_clear()
    merge.strategies.cache_clear()
    yield root
    formats.registered.cache_clear()
    merge.strategies.cache_clear()


def dcopt(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_format_and_strategy_plugins_drive_diff_and_merge(plugin_dir, tmp_path):
    install_plugin(plugin_dir, {"toy_format_plugin": TOY_FORMAT, "toy_strategy_plugin": TOY_STRATEGY},
                   {"dcopt.model_formats": {"toyw": "toy_format_plugin:ToyFormat"},
                    "dcopt.merge_strategies": {"maximum": "toy_strategy_plugin:maximum"}})
    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal((8, 6)).astype(np.float32), "b": np.zeros(6, np.float32)}
    ours = {**base, "w": base["w"] + np.outer(np.ones(8), np.arange(6)).astype(np.float32)}
    theirs = {**base, "w": base["w"] - 1}
    paths = {}
    for name, tensors in (("base", base), ("ours", ours), ("theirs", theirs)):
        paths[name] = tmp_path / f"{name}.weights"  # the name says nothing: the plugin sniffs the content
        paths[name].write_bytes(toy_bytes(tensors))

    assert [f.name for f in formats.registered()][-1] == "toyw"
    result = dcopt("diff", paths["base"], paths["ours"], "--json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.output)
    assert diff["format"] == "toyw" and diff["model"] == "weights"
    assert [(p["name"], p["kind"], p["rank"]) for p in diff["params"]] == [("w", "modified", 1)]

    out = tmp_path / "merged.weights"
    result = dcopt("merge", paths["base"], paths["ours"], paths["theirs"], "-o", out, "--strategy", "maximum")
    assert result.exit_code == 0, result.output
    got = formats.by_name("toyw").arrays(out.read_bytes(), str(out))
    np.testing.assert_array_equal(got["w"], np.maximum(ours["w"], theirs["w"]))
    assert "maximum" in merge.strategies() and merge.strategies()["maximum"].doc == "elementwise max(ours, theirs)"


@pytest.mark.parametrize("modules, entry_points, message", [
    ({"toy_broken": "import not_a_module_anywhere\n"}, {"dcopt.model_formats": {"broken": "toy_broken:Fmt"}},
     r"model format plugin 'broken' \(dcopt.model_formats = toy_broken:Fmt, package toy-plugins\) failed to load: "
     r"ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    ({"toy_half": TOY_FORMAT.replace("    def replace", "    def _not_replace")},
     {"dcopt.model_formats": {"half": "toy_half:ToyFormat"}},
     r"model format plugin 'half' \(dcopt.model_formats = toy_half:ToyFormat.*\): ToyFormat does not implement "
     r"replace"),
    ({"toy_attr": "x = 1\n"}, {"dcopt.model_formats": {"wrong": "toy_attr:x"}},
     r"plugin 'wrong' \(dcopt.model_formats = toy_attr:x.*\) names a int, not a dcopt.versions.formats.ModelFormat"),
    ({"toy_clash": TOY_FORMAT.replace('name = "toyw"', 'name = "onnx"')},
     {"dcopt.model_formats": {"clash": "toy_clash:ToyFormat"}},
     r"plugin 'clash' .*format name 'onnx' is already taken by a built-in format"),
])
def test_broken_format_plugin_is_named(plugin_dir, tmp_path, modules, entry_points, message):
    install_plugin(plugin_dir, modules, entry_points)
    with pytest.raises(PluginError, match=message):
        formats.registered()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08")
    result = dcopt("diff", model, model)
    assert result.exit_code == 1 and "error: model format plugin" in result.output, result.output
    assert "Traceback" not in result.output


def test_broken_strategy_plugins_are_named(plugin_dir, tmp_path):
    install_plugin(plugin_dir, {"toy_strategy_plugin": TOY_STRATEGY},
                   {"dcopt.merge_strategies": {"crashes": "toy_strategy_plugin:crashes"}})
    from tests.versions.models import mlp, sparse_update, weights

    base = weights()
    files = []
    versions = (("base", base), ("ours", sparse_update(base, "w2", 3)), ("theirs", sparse_update(base, "w2", 7)))
    for name, params in versions:
        files.append(tmp_path / f"{name}.onnx")
        files[-1].write_bytes(mlp(params))
    result = dcopt("merge", *files, "-o", tmp_path / "out.onnx", "--strategy", "crashes")
    assert result.exit_code == 1 and not (tmp_path / "out.onnx").exists()
    assert ("error: merge strategy plugin 'crashes' (dcopt.merge_strategies = toy_strategy_plugin:crashes, "
            "package toy-plugins) failed on parameter 'w2': RuntimeError: boom") in result.output, result.output

    for value, message in (("toy_strategy_plugin:missing", "failed to load: AttributeError"),
                           ("toy_strategy_plugin:np", "names a module, not a callable")):
        (plugin_dir / "toy_plugins-0.1.dist-info" / "entry_points.txt").write_text(
            f"[dcopt.merge_strategies]\nbad = {value}\n")
        merge.strategies.cache_clear()
        result = dcopt("merge", *files, "-o", tmp_path / "out.onnx", "--strategy", "average")
        assert result.exit_code == 1 and f"merge strategy plugin 'bad' (dcopt.merge_strategies = {value}" in \
            result.output and message in result.output, result.output


def test_plugin_payloads_that_overlap_are_refused_not_stored(plugin_dir, tmp_path):
    overlapping = TOY_FORMAT.replace("        header, base = _header(data)\n        return sorted(",
                                     "        header, base = _header(data)\n        return 2 * sorted(")
    install_plugin(plugin_dir, {"toy_overlap": overlapping}, {"dcopt.model_formats": {"overlap": "toy_overlap:ToyFormat"}})
    from dcopt.versions import manifest as manifests
    from dcopt.versions.params import ModelFile
    from dcopt.versions.store import ObjectStore

    model = ModelFile(toy_bytes({"w": np.ones(4, np.float32)}), "w.toy")
    with pytest.raises(PluginError, match=r"file w.toy: model format plugin 'overlap' .*: payload 'w' bytes \d+..\d+ "
                                          "overlap the previous payload"):
        manifests.build(model, ObjectStore(tmp_path / "objects"))
    assert not (tmp_path / "objects").exists()
