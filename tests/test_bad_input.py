"""The bad-input corpus of issue 10: every case is a located DcoptError (API) or one error line and a
non-zero exit (CLI) -- never ``internal error: <Exception>``, never a traceback, never exit 0 with
nothing written. The CLI runs in process (click's runner) so the corpus stays fast.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import dcopt
from dcopt import api
from dcopt.cli import app
from dcopt.errors import ArgumentError, DcoptError, InputError, ModelLoadError, PassError, UnsupportedError
from dcopt.feeds_check import check_feeds
from dcopt.frontends.onnx_import import import_model
from dcopt.limits import SizeLimitError, check_tensor_size, max_tensor_bytes_set, parse_size
from dcopt.passes.patches import PatchURIError, parse_uri
from tests.conftest import make_model

F = TensorProto.FLOAT


def relu(shape=(2,), opset=17, elem=F, out_shape=None, domain=""):
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="r", domain=domain or None)],
                      [("x", elem, list(shape))], [("y", F, list(out_shape or shape))], opset=opset)


def save(model, path):
    onnx.save_model(model, str(path))
    return path


def cli(*args, env=None):
    """(exit code, stdout, stderr) of ``dcopt ARGS`` run in this process."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


def assert_clean_error(code, out, err, *needles):
    assert code not in (0, None), f"exit {code}; stdout: {out}"
    assert "internal error" not in err and "Traceback" not in err + out, err
    assert err.startswith("error: ") or "\nError: " in err, err  # ours, or click's own usage error
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCOPT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- models the frontend refuses, for every command (issue item 3) --------------------------------
def _external(tmp_path, offset="0", length=None):
    folder = tmp_path / "ext"
    folder.mkdir()
    np.ones(4, np.float32).tofile(folder / "w.bin")
    tensor = numpy_helper.from_array(np.ones(4, np.float32), "w")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    for key, value in [("location", "w.bin"), ("offset", offset)] + ([("length", length)] if length else []):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", F, [4])], [("y", F, [4])])
    model.graph.initializer.append(tensor)
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    return folder / "m.onnx"


def _undefined_input():
    return relu(elem=TensorProto.UNDEFINED)


def _duplicate_outputs():
    m = make_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
                   [("x", F, [2])], [("y", F, [2]), ("z", F, [2])])
    m.graph.output[1].name = "y"
    return m


def _impossible_reshape():
    return make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [("x", F, [2, 3])],
                      [("y", F, ["a", "b"])], {"s": np.array([4, 5], np.int64)})


def _constant_of_shape():
    return make_model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")], [], [("y", F, ["a", "b"])],
                      {"s": np.array([2**20, 2**20], np.int64)})


INVALID_MODELS = {  # name: (model builder, exception class, what the message must say)
    "opset 99": (lambda: relu(opset=99), UnsupportedError, ["domain 'ai.onnx'", "opset 99", "highest: "]),
    "UNDEFINED input": (_undefined_input, ModelLoadError, ["input 'x'", "UNDEFINED"]),
    "duplicate outputs": (_duplicate_outputs, ModelLoadError, ["output 'y' is listed twice"]),
    "unknown domain": (lambda: _with_opset(relu(domain="com.foo"), "com.foo", 1), UnsupportedError,
                       ["node 'r'", "op Relu of domain 'com.foo' (opset 1) is not supported", "not a domain"]),
    "unknown op": (lambda: make_model([helper.make_node("FooBar", ["x"], ["y"], name="f")], [("x", F, [2])],
                                      [("y", F, [2])]), UnsupportedError, ["node 'f'", "FooBar"]),
    "op newer than the opset": (lambda: make_model([helper.make_node("Gelu", ["x"], ["y"], name="g")],
                                                   [("x", F, [2])], [("y", F, [2])]),
                                UnsupportedError, ["Gelu", "opset 17", "from opset 20"]),
    "bad attribute": (lambda: make_model([helper.make_node("Relu", ["x"], ["y"], name="r", bogus=3)],
                                         [("x", F, [2])], [("y", F, [2])]), ModelLoadError, ["bogus", "op Relu"]),
    "attribute out of range": (lambda: make_model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=5)],
                                                  [("x", F, [2, 3])], [("y", F, [2, 3])]),
                               ModelLoadError, ["node 'sm'", "axis"]),
    "impossible reshape": (_impossible_reshape, ModelLoadError, ["node 'rs'", "cannot reshape 6 elements"]),
    "input [2**40]": (lambda: relu(shape=[2**40]), SizeLimitError, ["input 'x'", "4.0 TiB", "memory limit"]),
    "input [2**62, 2**62]": (lambda: relu(shape=[2**62, 2**62]), SizeLimitError, ["input 'x'", "int64"]),
    "negative dim": (lambda: relu(shape=[-3, 2]), SizeLimitError, ["input 'x'", "negative dim -3"]),
    "ConstantOfShape [2**20, 2**20]": (_constant_of_shape, SizeLimitError,
                                       ["node 'cos'", "[1048576, 1048576]", "4.0 TiB"]),
}


def _with_opset(model, domain, version):
    model.opset_import.append(helper.make_opsetid(domain, version))
    return model


@pytest.mark.parametrize("case", list(INVALID_MODELS))
def test_invalid_models_are_refused_at_import_naming_the_element(case, tmp_path):
    build, error, needles = INVALID_MODELS[case]
    path = save(build(), tmp_path / "m.onnx")
    with pytest.raises(error) as info:
        import_model(path)
    text = str(info.value)
    assert text.startswith(f"file {path}"), text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("command", ["inspect", "run", "compile"])
@pytest.mark.parametrize("case", ["opset 99", "UNDEFINED input", "duplicate outputs", "unknown domain",
                                  "bad attribute", "impossible reshape"])
def test_every_command_validates(case, command, tmp_path, cache):
    build, _, needles = INVALID_MODELS[case]
    path = save(build(), tmp_path / "m.onnx")
    extra = {"inspect": [], "run": ["--random-inputs", "-o", tmp_path / "out"], "compile": ["-o", tmp_path / "b"]}
    code, out, err = cli(command, path, *extra[command])
    assert_clean_error(code, out, err, *needles)
    assert not (tmp_path / "out").exists() and not (tmp_path / "b").exists()


def test_inspect_describes_a_model_too_big_to_run_but_refuses_int64_overflow(tmp_path):
    code, out, err = cli("inspect", save(relu(shape=[2**40]), tmp_path / "big.onnx"))
    assert code == 0 and "1099511627776" in out, err
    code, out, err = cli("inspect", save(relu(shape=[2**62, 2**62]), tmp_path / "huge.onnx"))
    assert_clean_error(code, out, err, "int64")


def test_unsupported_domains_are_listed_all_at_once():
    model = make_model([helper.make_node("Foo", ["x"], ["a"], name="n1", domain="acme"),
                        helper.make_node("Bar", ["a"], ["y"], name="n2", domain="acme")],
                       [("x", F, [2])], [("y", F, [2])])
    with pytest.raises(UnsupportedError) as info:
        import_model(_with_opset(model, "acme", 1))
    text = str(info.value)
    assert "2 node(s)" in text and "acme.Foo" in text and "acme.Bar" in text and "node 'n2'" in text


def test_valid_models_with_custom_dcopt_domains_and_functions_still_import(mlp_model):
    fn = helper.make_function("my.fns", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model = _with_opset(make_model([helper.make_node("Double", ["x"], ["y"], domain="my.fns")],
                                   [("x", F, [3])], [("y", F, [3])]), "my.fns", 1)
    model.functions.append(fn)
    assert [n.op for n in import_model(model).nodes] == ["Add"]
    assert len(import_model(mlp_model).nodes) == 4
    unranked = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, None)], [("y", F, None)])
    assert import_model(unranked).containers["x"].type.shape is None


def test_names_that_are_not_utf8_are_refused_naming_the_field():
    data = relu(shape=["ZZ"]).SerializeToString().replace(b"ZZ", b"\xff\xfe")
    model = onnx.ModelProto()
    model.ParseFromString(data)  # protobuf hands such a string over as bytes
    with pytest.raises(ModelLoadError, match=r"dim of 'x' b'\\xff\\xfe' is not valid UTF-8 text"):
        import_model(model)


# -- external data (issue item 4) ------------------------------------------------------------------
@pytest.mark.parametrize("offset, length, needle", [
    ("-8", None, "offset '-8' is not a non-negative integer"),
    ("abc", None, "offset 'abc' is not a non-negative integer"),
    ("4096", None, "offset 4096 lies past the end of 'w.bin' (16 bytes)"),
    ("0", "1000000", "[0, 1000000) lies past the end"),
    ("4", None, "holds 12 bytes (from offset 4 to the end), but its dims [4] need 16"),
    ("0", "1e3", "length '1e3' is not a non-negative integer"),
])
@pytest.mark.parametrize("command", ["inspect", "compile"])
def test_bad_external_data_is_a_located_error(tmp_path, cache, offset, length, needle, command):
    path = _external(tmp_path, offset, length)
    code, out, err = cli(command, path, *(["-o", tmp_path / "b"] if command == "compile" else []))
    assert_clean_error(code, out, err, f"file {path}", "tensor 'w'", needle)


def test_external_data_beyond_the_memory_cap_is_refused_before_reading(tmp_path):
    path = _external(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].dims[:] = [2**36]
    path.write_bytes(model.SerializeToString())
    with pytest.raises(SizeLimitError, match=r"initializer 'w' of shape \[68719476736\].*256.0 GiB"):
        import_model(path)


# -- sizes (issue item 4) --------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["compile", "{sym}", "-o", "{tmp}/b", "--dim", "N=99999999999999"], "memory limit"),
    (["run", "{sym}", "--random-inputs", "-o", "{tmp}/o", "--dim", "N=99999999999999"], "memory limit"),
    (["run", "{sym}", "--backend", "cpu", "--random-inputs", "-o", "{tmp}/o", "--dim", "N=99999999999999"],
     "memory limit"),
    (["run", "{sym}", "--random-inputs", "-o", "{tmp}/o", "--dim", "N=-1"], "non-negative integer"),
    (["run", "{sym}", "--random-inputs", "-o", "{tmp}/o", "--dim", "N=١"], "non-negative integer"),
    (["compile", "{big}", "-o", "{tmp}/b"], "4.0 TiB"),
    (["run", "{big}", "--random-inputs", "-o", "{tmp}/o"], "4.0 TiB"),
    (["compile", "{huge}", "-o", "{tmp}/b"], "int64"),
    (["compile", "{neg}", "-o", "{tmp}/b"], "negative dim -3"),
    (["compile", "{cos}", "-o", "{tmp}/b"], "node 'cos'"),
])
def test_sizes_beyond_the_limits_are_clear_errors(tmp_path, cache, args, needle):
    models = {"sym": relu(shape=["N", 4]), "big": relu(shape=[2**40]), "huge": relu(shape=[2**62, 2**62]),
              "neg": relu(shape=[-3, 2]), "cos": _constant_of_shape()}
    paths = {k: save(m, tmp_path / f"{k}.onnx") for k, m in models.items()}
    code, out, err = cli(*[a.format(tmp=tmp_path, **paths) for a in args])
    assert_clean_error(code, out, err, needle)
    assert not (tmp_path / "b").exists() and not (tmp_path / "o").exists()


def test_a_sized_symbol_is_checked_per_input_when_drawing_random_inputs():
    graph = import_model(relu(shape=["N", 2**20]))
    with max_tensor_bytes_set("1GiB"):
        with pytest.raises(SizeLimitError, match=r"input 'x' of shape \[1024, 1048576\] \(float32\) needs 4.0 GiB"):
            api.random_inputs(graph, bindings={"N": 1024})
        assert api.random_inputs(graph, bindings={"N": 2})["x"].shape == (2, 2**20)


def test_runtime_constant_of_shape_is_a_located_error_on_the_reference_executor(tmp_path):
    model = make_model([helper.make_node("Add", ["x", "s"], ["t"]), helper.make_node("ConstantOfShape", ["t"], ["y"],
                                                                                      name="cos")],
                       [("x", TensorProto.INT64, [2])], [("y", F, None)], {"s": np.array([2**20, 2**20], np.int64)})
    np.save(tmp_path / "x.npy", np.zeros(2, np.int64))
    code, out, err = cli("run", save(model, tmp_path / "m.onnx"), "-i", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "o")
    assert_clean_error(code, out, err, "node 'cos'", "ConstantOfShape")


def test_check_tensor_size_and_the_memory_cap(monkeypatch):
    assert check_tensor_size("t", [2, 3], "float32") == 24
    assert check_tensor_size("t", [0, 2**62], "float32") == 0
    assert check_tensor_size("t", ["N", 4], "float32") == 0  # symbolic: checked once bound
    with pytest.raises(SizeLimitError, match="negative dim"):
        check_tensor_size("t", [2, -1], "float32")
    with pytest.raises(SizeLimitError, match="more than int64 can address"):
        check_tensor_size("t", [2**60, 1], "float64", limit=2**63 - 1)
    with pytest.raises(SizeLimitError, match=r"output of Tile 't' of shape \[1024, 1024\] \(float32\) needs 4.0 MiB"):
        check_tensor_size("t", [1024, 1024], "float32", where="output of Tile", limit=2**20)
    monkeypatch.setenv("DCOPT_MAX_TENSOR_BYTES", "1MiB")
    with pytest.raises(SizeLimitError, match="memory limit of 1.0 MiB"):
        check_tensor_size("t", [1024, 1024], "float32")
    with max_tensor_bytes_set(8 * 2**20):
        assert check_tensor_size("t", [1024, 1024], "float32") == 4 * 2**20
    assert parse_size("64GiB") == 64 * 2**30 and parse_size("5e9") == 5 * 10**9 and parse_size("1.5 kb") == 1500
    for bad in ("lots", "-5", "0", "1e30"):
        with pytest.raises(DcoptError):
            parse_size(bad)


# -- output paths the run command writes (issue item 4) ----------------------------------------------
@pytest.mark.parametrize("target", ["/proc/dcopt-out", "/sys/dcopt-out", "{tmp}/afile/sub"])
@pytest.mark.parametrize("command", ["run", "compile"])
def test_output_paths_that_cannot_be_written_are_refused(tmp_path, cache, target, command):
    (tmp_path / "afile").write_text("mine")
    model = save(relu(), tmp_path / "m.onnx")
    args = [command, model, "-o", target.format(tmp=tmp_path)] + (["--random-inputs"] if command == "run" else [])
    code, out, err = cli(*args)
    assert_clean_error(code, out, err, "dcopt-out" if "dcopt-out" in target else "is a file, not a directory")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("command", ["opt", "convert"])
def test_model_outputs_that_cannot_be_written_are_refused(tmp_path, command):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "adir.onnx").mkdir()
    model = save(relu(), tmp_path / "m.onnx")
    for target, needle in ((tmp_path / "afile" / "x.onnx", "is a file"), (tmp_path / "adir.onnx", "is a directory"),
                           ("/proc/x.onnx", "pseudo file system"), (tmp_path / "missing" / "x.onnx", "does not exist")):
        code, out, err = cli(command, model, "-o", target)
        assert_clean_error(code, out, err, needle)


# -- user code: --pipeline, --patch-file, register_pass (issue items 4 and 6) ---------------------
PASS_HEADER = "from dcopt.passes.base import function_pass, register_pass\n"
USER_FILES = {
    "raises": PASS_HEADER + ("@register_pass(replace=True)\n@function_pass('explode')\ndef explode(graph, ctx):\n"
                             "    raise RuntimeError('boom')\nPIPELINE = ['explode']\n"),
    "corrupts": PASS_HEADER + ("@register_pass(replace=True)\n@function_pass('corrupt')\ndef corrupt(graph, ctx):\n"
                               "    graph.nodes[0] = graph.nodes[0].replace(inputs=('nowhere',))\n    return True\n"
                               "PIPELINE = ['corrupt']\n"),
    "exits at import": "import sys\nsys.exit(0)\n",
    "exits in a pass": PASS_HEADER + ("import sys\n@function_pass('quitter')\ndef quitter(graph, ctx):\n"
                                      "    sys.exit(0)\nPIPELINE = [quitter]\n"),
    "raises at import": "raise ValueError('bad file')\n",
    "bad PIPELINE": "PIPELINE = [42]\n",
}
EXPECTED = {
    "raises": ["pass 'explode' raised RuntimeError: boom", "(line 5)"],
    "corrupts": ["pass 'corrupt' left an invalid graph", "reads 'nowhere'"],
    "exits at import": ["called sys.exit(0)", "(line 2)"],
    "exits in a pass": ["pass 'quitter' called sys.exit(0)"],
    "raises at import": ["ValueError: bad file"],
    "bad PIPELINE": ["PIPELINE holds int 42"],
}


@pytest.mark.parametrize("case", list(USER_FILES))
@pytest.mark.parametrize("command", ["compile", "opt"])
def test_user_pipeline_files_that_fail_are_named_and_nothing_is_written(tmp_path, cache, case, command):
    user = tmp_path / f"user_{case.replace(' ', '_')}.py"
    user.write_text(USER_FILES[case])
    model = save(relu(), tmp_path / "m.onnx")
    out_path = tmp_path / ("b" if command == "compile" else "o.onnx")
    code, out, err = cli(command, model, "--pipeline", user, "-o", out_path)
    assert_clean_error(code, out, err, user.name, *EXPECTED[case])
    assert not out_path.exists()


@pytest.mark.parametrize("source, needle", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    ("from dcopt.passes.patches import patch\nimport sys\n@patch('quit_now', kind='idea')\n"
     "def quit_now(graph):\n    sys.exit(3)\n", "called sys.exit(3)"),
])
def test_patch_files_that_exit_are_errors_and_nothing_is_written(tmp_path, source, needle):
    user = tmp_path / "ideas.py"
    user.write_text(source)
    out_path = tmp_path / "p.onnx"
    code, out, err = cli("patch", save(relu(), tmp_path / "m.onnx"), "-p", "quit_now", "--patch-file", user,
                         "-o", out_path)
    assert_clean_error(code, out, err, "ideas.py", needle)
    assert not out_path.exists()


def test_registered_user_passes_are_verified_and_named_through_the_api(tmp_path):
    from dcopt.passes.base import function_pass
    from dcopt.passes.manager import PassManager

    @function_pass("drop-producer")
    def drop_producer(graph, ctx):
        graph.nodes.pop(0)
        return True

    graph = import_model(relu())
    with pytest.raises(PassError) as info:
        PassManager([drop_producer])(graph)
    assert "pass 'drop-producer' left an invalid graph" in str(info.value) and __file__ in str(info.value)


# -- builds (issue item 4) -------------------------------------------------------------------------
def test_a_garbage_model_inside_a_build_is_a_located_error(tmp_path, cache):
    code, out, err = cli("compile", save(relu(), tmp_path / "m.onnx"), "-o", tmp_path / "b")
    assert code == 0, err
    (tmp_path / "b" / "model.onnx").write_bytes(b"garbage\x00\xff" * 10)
    code, out, err = cli("run", tmp_path / "b", "--random-inputs", "-o", tmp_path / "o")
    assert_clean_error(code, out, err, str(tmp_path / "b"))
    with pytest.raises(ModelLoadError):
        dcopt.load(tmp_path / "b", cache_dir=cache)
    with pytest.raises(ModelLoadError, match="is not a dcopt build directory"):
        dcopt.load(tmp_path, cache_dir=cache)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(signature=None), lambda m: m.pop("bindings"), lambda m: m["signature"]["inputs"][0].pop("dtype"),
    lambda m: m.update(values=[1]),
])
def test_a_damaged_manifest_is_a_located_error(tmp_path, edit):
    """Found by the build-loader fuzzer: the manifest's own fields (not covered by the file hashes)."""
    import json

    sess = dcopt.compile(relu(), cache_dir=tmp_path / "cache")
    sess.save(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    edit(manifest)
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError) as info:
        dcopt.load(tmp_path / "b", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "b") in str(info.value)


# -- the Python API (issue item 5) -----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, argument, needle", [
    ({"model": 12345}, "model", "got int"),
    ({"dims": {"N": -1}}, "dims", ">= 0, got -1"),
    ({"dims": {"N": 99999999999999}}, "dims", "memory limit"),
    ({"dims": {"N": "4"}}, "dims", "must be an integer"),
    ({"dims": [("N", 4)]}, "dims", "expected a mapping"),
    ({"pipeline": 42}, "pipeline", "got int"),
    ({"pipeline": ""}, "pipeline", "is empty"),
    ({"threads": -3}, "threads", "got -3"),
    ({"threads": 2.5}, "threads", "got float"),
    ({"threads": True}, "threads", "got bool"),
    ({"patches": "fold_batchnorm"}, "patches", "one string"),
    ({"patches": [7]}, "patches", "got int"),
    ({"cache_dir": 3}, "cache_dir", "got 3"),
    ({"example_feeds": [np.zeros(2, np.float32)]}, "example_feeds", "expected a mapping"),
])
def test_compile_names_the_bad_argument(tmp_path, kwargs, argument, needle):
    kwargs = {"model": save(relu(shape=["N"]), tmp_path / "m.onnx"), "cache_dir": tmp_path / "cache", **kwargs}
    with pytest.raises(ArgumentError) as info:
        dcopt.compile(kwargs.pop("model"), **kwargs)
    assert info.value.location.argument == argument and f"argument '{argument}'" in str(info.value)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)  # the usual Python contract for a bad argument, too


def test_load_names_the_bad_argument(tmp_path):
    with pytest.raises(ArgumentError, match="argument 'path'"):
        dcopt.load(None)
    with pytest.raises(ArgumentError, match="argument 'threads'"):
        dcopt.load(tmp_path, threads=0)
    with pytest.raises(ModelLoadError, match="does not exist"):
        dcopt.load(tmp_path / "nope")


def test_api_load_and_run_name_their_bad_arguments(tmp_path):
    with pytest.raises(ArgumentError, match="argument 'path'"):
        api.load_graph(12345)
    with pytest.raises(ArgumentError, match="argument 'model'"):
        import_model(3.5)
    graph = import_model(relu())
    with pytest.raises(ArgumentError, match="argument 'feeds': expected a mapping"):
        api.run(graph, [np.zeros(2, np.float32)])
    with pytest.raises(ArgumentError, match="argument 'graph'"):
        api.run("m.onnx", {})
    with pytest.raises(InputError, match="input 'x'.*holds dict objects"):
        api.run(graph, {"x": np.array([{}, {}], dtype=object)})


@pytest.mark.parametrize("uri, needle", [
    ("add_skip_connections?ends=", "needs at least one value"),
    ("add_skip_connections?ends=Relu,", "empty item"),
    ("insert_squeeze_excitation?ratio=" + "1234567890" * 4, "does not fit in int64"),
    ("prune_attention_heads?ratio=0." + "1234567890" * 4, "more significant digits than a float64 keeps"),
    ("add_skip_connections?scale=inf", "not a finite number"),
    ("add_skip_connections?min_layers=1_000", "not a plain number"),
    ("add_skip_connections?ends=%00", "control characters"),
])
def test_patch_uri_values_a_patch_cannot_use_are_refused(uri, needle):
    with pytest.raises(PatchURIError, match=needle):
        parse_uri(uri)


def test_patch_uris_are_checked_by_compile_before_anything_runs(tmp_path):
    with pytest.raises(PatchURIError, match="needs at least one value"):
        dcopt.compile(relu(), patches=["add_skip_connections?ends="], cache_dir=tmp_path)


# -- feeds (issue items 5 and 6) -------------------------------------------------------------------
def test_check_feeds_refuses_non_mappings_and_names_inputs():
    inputs = [("x", import_model(relu()).containers["x"].type)]
    with pytest.raises(ArgumentError, match=r"argument 'feeds': expected a mapping .*got list \(pass a dict"):
        check_feeds([np.zeros(2, np.float32)], inputs)
    with pytest.raises(InputError, match=r"missing input\(s\) \['x'\]"):
        check_feeds({}, inputs)
    with pytest.raises(InputError, match=r"unknown input\(s\) \['z'\]"):
        check_feeds({"x": np.zeros(2, np.float32), "z": 1}, inputs)
    with pytest.raises(InputError, match="input 'x': expected dtype float32, got float64"):
        check_feeds({"x": np.zeros(2)}, inputs)
    with pytest.raises(InputError, match="input 'x': cannot be turned into an array"):
        check_feeds({"x": [[1.0], [1.0, 2.0]]}, inputs)


def test_big_endian_feeds_are_accepted_as_native_everywhere():
    x = np.array([-1.5, 2.25], dtype=">f4")
    checked = check_feeds({"x": x}, ["x"])["x"]
    assert checked.dtype.isnative and checked.dtype == np.float32
    np.testing.assert_array_equal(checked, x)
    graph = import_model(relu())
    np.testing.assert_array_equal(api.run(graph, {"x": x})["y"], [0.0, 2.25])
    assert check_feeds({"x": x.astype("<f4")}, ["x"])["x"].dtype.isnative


@pytest.fixture(scope="module")
def relu_session(tmp_path_factory):
    return dcopt.compile(relu(), cache_dir=tmp_path_factory.mktemp("cache"))


def test_compiled_session_refuses_a_list_of_feeds(relu_session):
    with pytest.raises(DcoptError, match="mapping"):
        relu_session.run(None, [np.zeros(2, np.float32)])


def test_compiled_session_converts_big_endian_feeds_like_the_reference_executor(relu_session):
    (y,) = relu_session.run(None, {"x": np.array([-1.0, 3.0], dtype=">f4")})
    np.testing.assert_array_equal(y, [0.0, 3.0])
