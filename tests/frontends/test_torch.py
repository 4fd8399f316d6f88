"""PyTorch frontend: torch.export import, the torch.compile backend and compile_module.

Every path is checked against eager PyTorch on the same random weights (fp32, rtol 1e-4,
atol 1e-5): an MLP, a CNN with BatchNorm, and small random-weight BERT and GPT-2 from
transformers (skipped when transformers is missing). A table of small functions covers the
ATen ops those models do not use.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import dcopt.frontends.torch_backend as torch_backend  # noqa: E402
from dcopt.errors import InputError, ModelLoadError, UnsupportedError  # noqa: E402
from dcopt.frontends.torch_backend import compile_module  # noqa: E402
from dcopt.frontends.torch_import import import_exported_program, load_pt2  # noqa: E402
from dcopt.ir.executor import run_graph  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------------------------
# Models


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return torch.softmax(self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh")), dim=-1)


class CNN(nn.Module):
    """conv-bn-relu-pool twice, adaptive pooling, linear; BN stats randomized so they matter."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)
        for bn in (self.features[1], self.features[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.fc(self.features(x))


def _bert(attn):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                     vocab_size=100, max_position_embeddings=64, attn_implementation=attn)
    return transformers.BertModel(config).eval()


def _gpt2(attn):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                                     use_cache=False, attn_implementation=attn)
    return transformers.GPT2Model(config).eval()


MODELS = {
    "mlp": (MLP, lambda: (torch.randn(3, 16),)),
    "cnn": (CNN, lambda: (torch.randn(2, 3, 16, 16),)),
    "bert-eager": (lambda: _bert("eager"), lambda: (torch.randint(0, 100, (2, 8)),)),
    "bert-sdpa": (lambda: _bert("sdpa"), lambda: (torch.randint(0, 100, (2, 8)),)),
    "gpt2-eager": (lambda: _gpt2("eager"), lambda: (torch.randint(0, 100, (2, 8)),)),
    "gpt2-sdpa": (lambda: _gpt2("sdpa"), lambda: (torch.randint(0, 100, (2, 8)),)),
}


@pytest.fixture(scope="module")
def models():
    """Built once per module (random weights, eval mode), keyed like MODELS."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            make_model, make_inputs = MODELS[name]
            model = make_model()
            cache[name] = (model.eval(), make_inputs())
        return cache[name]

    return get


def tensors(value):
    """The tensors in a (possibly nested / ModelOutput) result, in order."""
    return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def assert_matches(actual, expected):
    actual, expected = tensors(actual), tensors(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a.detach()), e.detach().numpy(), rtol=RTOL, atol=ATOL)


def eager(model, args):
    with torch.no_grad():
        return model(*args)


def run_imported(graph, args):
    outputs = run_graph(graph, {name: a.numpy() for name, a in zip(graph.inputs, args)})
    return [torch.from_numpy(np.array(outputs[o])) for o in graph.outputs]  # a copy: results may be read-only


def _recording(keep):
    """Records ``keep(graph, runner)`` for each graph the torch.compile backend builds a runner
    for, and turns a fallback to eager into an error, so a compile test proves dcopt did the work."""
    built = []
    original = torch_backend.make_runner

    def spy(graph):
        runner = original(graph)
        built.append(keep(graph, runner))
        return runner

    torch_backend.make_runner = spy
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="dcopt: running this graph eagerly")
        yield built
    torch_backend.make_runner = original
    torch._dynamo.reset()


@pytest.fixture
def dcopt_runs():
    """The graphs the torch.compile backend built runners for (see :func:`_recording`)."""
    yield from _recording(lambda graph, runner: graph)


# ---------------------------------------------------------------------------------------------
# The three paths on whole models


@pytest.mark.parametrize("name", list(MODELS))
def test_export_import_matches_eager(models, name):
    model, args = models(name)
    graph = import_exported_program(torch.export.export(model, args, strict=False))
    assert_matches(run_imported(graph, args), eager(model, args))
    n_weights = len(dict(model.named_parameters()))
    assert len(graph.parameters) >= n_weights  # weights are IR parameters, not inputs
    assert len(graph.inputs) == len(args)
    assert graph.containers[graph.inputs[0]].type.dtype == str(args[0].dtype).removeprefix("torch.")


@pytest.mark.parametrize("name", ["mlp", "cnn", "bert-sdpa", "gpt2-eager"])
def test_torch_compile_backend_matches_eager(models, name, dcopt_runs):
    model, args = models(name)
    compiled = torch.compile(model, backend="dcopt")
    with torch.no_grad():
        result = compiled(*args)
    assert_matches(result, eager(model, args))
    assert dcopt_runs, "the dcopt backend never compiled a graph"


@pytest.mark.parametrize("name", ["mlp", "cnn", "bert-eager", "gpt2-sdpa"])
def test_compile_module_matches_eager(models, name):
    model, args = models(name)
    compiled = compile_module(model, args)
    expected = eager(model, args)
    result = compiled(*args)
    assert type(result) is type(expected)  # the output structure survives (ModelOutput, tensor)
    assert_matches(result, expected)


def test_import_without_decomposition_lowers_high_level_ops(models):
    """decompose=False keeps linear, layer_norm, conv2d, batch_norm, dropout... as exported."""
    for name in ("mlp", "cnn", "bert-sdpa"):
        model, args = models(name)
        graph = import_exported_program(torch.export.export(model, args, strict=False), decompose=False)
        assert_matches(run_imported(graph, args), eager(model, args))


# ---------------------------------------------------------------------------------------------
# Dynamic shapes


def test_dynamic_batch_export_keeps_symbolic_dim(models):
    model, args = models("gpt2-eager")
    batch, seq = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("seq", min=2, max=32)
    ep = torch.export.export(model, args, dynamic_shapes=({0: batch, 1: seq},), strict=False)
    traced = next(n for n in ep.graph.nodes if n.name == "input_ids").meta["val"]
    symbols = [str(d) for d in traced.shape]  # torch's names, e.g. s72, s70
    graph = import_exported_program(ep, symbol_names=dict(zip(symbols, ["batch", "seq"])))
    assert graph.containers[graph.inputs[0]].type.shape == ("batch", "seq")
    assert graph.containers[graph.outputs[0]].type.shape == ("batch", "seq", 64)
    for b, s in [(1, 5), (4, 13)]:
        ids = torch.randint(0, 100, (b, s))
        assert_matches(run_imported(graph, (ids,)), eager(model, (ids,)))


def test_symbols_default_to_torch_names(models):
    model, args = models("bert-sdpa")
    ep = torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},), strict=False)
    dim = import_exported_program(ep).containers["input_ids"].type.shape[0]
    assert isinstance(dim, str) and dim.startswith("s")


def test_compile_module_dynamic_batch(models):
    model, args = models("cnn")
    compiled = compile_module(model, args, dynamic_batch=True)
    assert compiled.dcopt_graph.containers[compiled.dcopt_graph.inputs[0]].type.shape == ("batch", 3, 16, 16)
    keys = set()
    for batch in (1, 5, 3):
        x = torch.randn(batch, 3, 16, 16)
        assert_matches(compiled(x), eager(model, (x,)))
        keys.add(compiled.function.run.session.build_key)
    assert len(keys) == 1  # one build (convolutions image by image) served every batch


def test_torch_compile_dynamic_shapes(models, dcopt_runners):
    model, _ = models("bert-sdpa")
    compiled = torch.compile(model, backend="dcopt", dynamic=True)
    for b, s in [(2, 8), (3, 5), (2, 13)]:
        ids = torch.randint(0, 100, (b, s))
        with torch.no_grad():
            assert_matches(compiled(ids), eager(model, (ids,)))
    (runner,) = dcopt_runners  # one symbolic graph served every shape ...
    builds = {built.directory.name for built, _ in runner.session._variants.values()}
    assert len(runner.session._variants) == 3 and len(builds) == 1  # ... and one build of it: no recompile
    assert runner.session.manifest["dynamic"]


# ---------------------------------------------------------------------------------------------
# Module wrapper details


def test_compile_module_snapshots_parameters():
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(3, 16)
    compiled = compile_module(model, (x,))
    before = compiled(x)
    with torch.no_grad():
        model.fc2.weight *= 2.0
    assert not torch.allclose(eager(model, (x,)), before)
    assert_matches(compiled(x), before)  # still the weights of compile time


def test_compile_module_outputs_do_not_alias_parameters():
    class ReturnsWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x + 1, self.w

    compiled = compile_module(ReturnsWeight(), (torch.zeros(3),))
    _, w = compiled(torch.zeros(3))
    w += 5  # writing a returned weight must not corrupt the compiled graph
    assert torch.equal(compiled(torch.zeros(3))[1], torch.ones(3))


def test_compile_module_rejects_mismatched_arguments(models):
    model, args = models("mlp")
    compiled = compile_module(model, args)
    with pytest.raises(InputError):
        compiled(*args, *args)
    with pytest.raises(InputError, match="expected shape"):
        compiled(torch.randn(3, 17))


def test_torch_compile_in_grad_mode_runs_eagerly_with_one_warning(models):
    model, _ = models("mlp")
    x = torch.randn(3, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    torch._dynamo.reset()
    with pytest.warns(UserWarning, match="dcopt: running this graph eagerly: it needs gradients.*torch.no_grad"):
        torch.compile(model, backend="dcopt")(x).sum().backward()
    model(x_ref).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), x_ref.grad.numpy(), rtol=RTOL, atol=ATOL)
    torch._dynamo.reset()


def test_bert_training_under_torch_compile_gets_eager_gradients():
    """The case that used to be silently wrong: BERT in train mode (dropout 0) under
    torch.compile had a right forward and wrong gradients on 34 parameters. Every parameter's
    gradient now matches eager."""
    import copy

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                     vocab_size=100, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(config).train()
    reference = copy.deepcopy(model)
    ids = torch.randint(0, 100, (2, 16))
    torch._dynamo.reset()
    with pytest.warns(UserWarning, match="needs gradients"):
        torch.compile(model, backend="dcopt")(input_ids=ids).last_hidden_state.pow(2).sum().backward()
    reference(input_ids=ids).last_hidden_state.pow(2).sum().backward()
    compared = 0
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        if q.grad is None:  # the pooler: not on the path to last_hidden_state
            assert p.grad is None or not p.grad.any(), name
            continue
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
        compared += 1
    assert compared >= 30
    torch._dynamo.reset()


def test_torch_compile_under_no_grad_compiles_with_dcopt(models, dcopt_runs):
    model, args = models("mlp")
    with torch.no_grad():
        result = torch.compile(model, backend="dcopt")(*args)
    assert_matches(result, eager(model, args))
    assert dcopt_runs


class WithConstant(nn.Module):
    """A linear layer, a BatchNorm's buffers and a tensor built in forward (an FX get_attr)."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(8, 8), nn.BatchNorm1d(8)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)

    def forward(self, x):
        return self.bn(self.fc(x)) * torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])


def test_torch_compile_bakes_weights_in_and_recompiles_when_they_change(dcopt_runs):
    torch.manual_seed(0)
    model, x = WithConstant().eval(), torch.randn(4, 8)
    compiled = torch.compile(model, backend="dcopt")
    with torch.no_grad():
        assert_matches(compiled(x), model(x))
        (graph,) = dcopt_runs
        assert len(graph.inputs) == 1  # x only: weights, buffers and the get_attr constant are parameters
        assert len(graph.parameters) >= 5
        model.fc.weight.mul_(2.0)  # an in-place update (what optimizer.step() does)
        with pytest.warns(UserWarning, match="parameters or buffers changed"):
            assert_matches(compiled(x), model(x))
        assert len(dcopt_runs) == 2
        assert_matches(compiled(x), model(x))  # no further change: no further compile
        assert len(dcopt_runs) == 2
        model.bn.running_var.fill_(4.0)  # buffers are guarded too
        with pytest.warns(UserWarning, match="parameters or buffers changed"):
            assert_matches(compiled(x), model(x))


def test_torch_compile_recompiles_when_a_weight_is_replaced(dcopt_runs):
    """``param.data = other`` bumps no version counter of the new storage; the guard's data_ptr
    check sees it."""
    torch.manual_seed(0)
    model, x = WithConstant().eval(), torch.randn(4, 8)
    compiled = torch.compile(model, backend="dcopt")
    with torch.no_grad():
        assert_matches(compiled(x), model(x))
        model.fc.weight.data = torch.randn(8, 8)
        with pytest.warns(UserWarning, match="parameters or buffers changed"):
            assert_matches(compiled(x), model(x))
        assert len(dcopt_runs) == 2


@pytest.fixture
def dcopt_runners():
    """The runners (:class:`~dcopt.frontends.torch_backend.CompiledRunner`) the torch.compile
    backend builds, so a test can read their sessions' build manifests."""
    yield from _recording(lambda graph, runner: runner)


def test_torch_compile_runs_on_torch_num_threads(models, dcopt_runners):
    model, args = models("mlp")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            assert_matches(torch.compile(model, backend="dcopt")(*args), eager(model, args))
    finally:
        torch.set_num_threads(before)
    (runner,) = dcopt_runners
    assert runner.session.threads == 1


def test_torch_compile_bert_builds_like_its_onnx_export(models, dcopt_runners, tmp_path):
    """The ATen graph of a BERT gives the same build as the ONNX export of the same module: no
    fallback or dynamic steps, and the same GEMM library calls and attention products."""
    import dcopt.compiled as dc

    model, args = models("bert-sdpa")
    mask = torch.ones_like(args[0])

    class LastHidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.core = model

        def forward(self, ids, mask):
            return self.core(input_ids=ids, attention_mask=mask).last_hidden_state

    wrapper = LastHidden().eval()
    with torch.inference_mode():
        expected = wrapper(args[0], mask)
        assert_matches(torch.compile(wrapper, backend="dcopt")(args[0], mask), expected)
    (runner,) = dcopt_runners
    path = tmp_path / "bert.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (args[0], mask), str(path), input_names=["ids", "mask"], output_names=["y"],
                          opset_version=17, dynamo=False)
    onnx_session = dc.compile(str(path), example_feeds={"ids": args[0].numpy(), "mask": mask.numpy()})
    from_torch, from_onnx = runner.session.manifest, onnx_session.manifest
    assert from_torch["not_native"] == from_onnx["not_native"] == {}
    assert set(from_torch["steps"]) == set(from_onnx["steps"]) <= {"gemm", "matmul", "kernel", "view"}
    assert from_torch["steps"]["gemm"] == from_onnx["steps"]["gemm"]
    assert from_torch["steps"]["matmul"] == from_onnx["steps"]["matmul"]


# ---------------------------------------------------------------------------------------------
# Unsupported ops, fallback, .pt2 files


class Exotic(nn.Module):
    """Four ops dcopt does not lower (sort, cumprod, lgamma, digamma)."""

    def forward(self, x):
        a = torch.sort(x, dim=-1).values
        b = torch.cumprod(x, dim=0)
        return torch.lgamma(a + b) + torch.digamma(x)


def test_unsupported_ops_are_reported_together():
    ep = torch.export.export(Exotic(), (torch.rand(3, 4) + 0.5,))
    with pytest.raises(UnsupportedError) as info:
        import_exported_program(ep)
    message = str(info.value)
    for op in ("aten.sort", "aten.cumprod", "aten.lgamma", "aten.digamma"):
        assert op in message
    assert len(info.value.offenders) == 4
    assert "node 'cumprod'" in message and "test_torch.py" in message and "torch.cumprod(x, dim=0)" in message


def test_torch_compile_falls_back_to_eager_with_warning():
    torch._dynamo.reset()
    x = torch.rand(3, 4) + 0.5
    with pytest.warns(UserWarning, match="dcopt: running this graph eagerly.*aten.lgamma"):
        result = torch.compile(Exotic(), backend="dcopt")(x)
    assert_matches(result, Exotic()(x))
    torch._dynamo.reset()


def test_pt2_round_trip(models, tmp_path):
    model, args = models("cnn")
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(model, args), path)
    graph = load_pt2(path)
    assert graph.name == "cnn"
    assert_matches(run_imported(graph, args), eager(model, args))


@pytest.mark.parametrize("content", [None, b"", b"not a zip archive", b"PK\x03\x04 truncated zip"])
def test_load_pt2_bad_files(tmp_path, content):
    path = tmp_path / "bad.pt2"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_pt2(path)
    assert str(path) in str(info.value)


def test_load_pt2_of_another_zip(tmp_path):
    import zipfile

    path = tmp_path / "other.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a program")
    with pytest.raises(ModelLoadError, match="not a readable torch.export program"):
        load_pt2(path)


def test_onnx_export_of_imported_graph_runs_in_onnxruntime(models):
    """The lowering is valid ONNX at its opset: checker and onnxruntime agree with torch."""
    pytest.importorskip("onnxruntime")
    import onnx

    from dcopt.frontends.onnx_export import export_model
    from dcopt.testing import run_onnxruntime

    model, args = models("gpt2-eager")
    ep = torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},), strict=False)
    proto = export_model(import_exported_program(ep))
    onnx.checker.check_model(proto, full_check=True)
    ids = torch.randint(0, 100, (3, 8))
    assert_matches([torch.from_numpy(a) for a in run_onnxruntime(proto, {"input_ids": ids.numpy()})],
                   eager(model, (ids,)))


def test_cli_compiles_and_runs_a_saved_program(tmp_path):
    """`dcopt compile model.pt2` (torch.export.save) builds, and the build matches eager PyTorch."""
    import subprocess
    import sys

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))

    net = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "net.pt2")
    np.save(tmp_path / "x.npy", x.numpy())
    for args in (["compile", tmp_path / "net.pt2", "-o", tmp_path / "net.dcopt"],
                 ["run", tmp_path / "net.dcopt", "-i", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "out"]):
        result = subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
    (out,) = list((tmp_path / "out").glob("*.npy"))
    with torch.no_grad():
        np.testing.assert_allclose(np.load(out), net(x).numpy(), rtol=1e-4, atol=1e-5)
