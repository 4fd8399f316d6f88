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
from dcopt.frontends.torch_lowering import supported_ops  # noqa: E402
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


@pytest.fixture
def dcopt_runs():
    """Records each graph the torch.compile backend builds a runner for, and turns a fallback to
    eager into an error, so a compile test proves dcopt did the work."""
    built = []
    original = torch_backend.make_runner

    def spy(graph):
        built.append(graph)
        return original(graph)

    torch_backend.make_runner = spy
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="dcopt: running this graph eagerly")
        yield built
    torch_backend.make_runner = original
    torch._dynamo.reset()


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
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        assert_matches(compiled(x), eager(model, (x,)))


def test_torch_compile_dynamic_shapes(models, dcopt_runs):
    model, _ = models("bert-sdpa")
    compiled = torch.compile(model, backend="dcopt", dynamic=True)
    for b, s in [(2, 8), (3, 5)]:
        ids = torch.randint(0, 100, (b, s))
        with torch.no_grad():
            assert_matches(compiled(ids), eager(model, (ids,)))
    assert len(dcopt_runs) == 1  # one symbolic graph served both shapes


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


# ---------------------------------------------------------------------------------------------
# Op coverage beyond the models: small functions, each exported, imported and run


_GENERATOR = torch.Generator().manual_seed(0)  # the inputs below are made at import: keep them fixed


def _x(*shape):
    return torch.randn(*shape, generator=_GENERATOR)


_sdpa = nn.functional.scaled_dot_product_attention

OPS = {
    "clamp_hardtanh_relu6": (lambda x: x.clamp(-0.5, 0.7) + nn.functional.hardtanh(x) + nn.functional.relu6(x),
                             (_x(4, 5),)),
    "clamp_tensor": (lambda x, lo: torch.clamp(x, min=lo), (_x(4, 5), _x(5))),
    "where_masked_fill": (lambda x: torch.where(x > 0, x, 0.5).masked_fill(x < -1, -3.0), (_x(4, 5),)),
    "arith_scalars": (lambda x: (2 - x) * 3 / (x.abs() + 1) - x ** 2 + 1 / (x.abs() + 2), (_x(4, 5),)),
    "int_division": (lambda a, b: (a // b, torch.div(a, b, rounding_mode="trunc"), a % b, a / b),
                     (torch.tensor([7, -7, 9, -3]), torch.tensor([2, 2, -4, 5]))),
    "float_rounding_div": (lambda a, b: (torch.div(a, b, rounding_mode="floor"), torch.div(a, b, rounding_mode="trunc"),
                                         torch.remainder(a, b), torch.fmod(a, b)), (_x(6), _x(6).abs() + 0.5)),
    "unary": (lambda x: torch.exp(x) + torch.log(x.abs() + 1) + torch.rsqrt(x.abs() + 1) + torch.sqrt(x.abs())
              + torch.sigmoid(x) + torch.erf(x) + torch.sin(x) - torch.cos(x) + x.sign() + x.floor() + x.ceil()
              + x.round() + x.reciprocal(), (_x(3, 4),)),
    "activations": (lambda x: nn.functional.silu(x) + nn.functional.gelu(x) + nn.functional.leaky_relu(x, 0.2)
                    + nn.functional.elu(x) + nn.functional.hardswish(x) + nn.functional.hardsigmoid(x)
                    + nn.functional.softplus(x) + nn.functional.softplus(x, beta=2), (_x(3, 4),)),
    "softmax_family": (lambda x: torch.log_softmax(x, 1) + torch.softmax(x, 0), (_x(3, 4),)),
    "reductions": (lambda x: (x.sum(), x.sum(1), x.mean((0, 2), keepdim=True), x.amax(-1), x.amin(0),
                              x.max(1).values, x.min(1).indices, x.argmax(), x.argmax(2, keepdim=True),
                              x.var(1), x.std(), x.prod(2)), (_x(2, 3, 4),)),
    "any_all_logical": (lambda x: ((x > 0).any(1), (x > -2).all(), torch.logical_not(x > 0), ~(x > 0),
                                   (x > 0) & (x < 1), (x > 0) | (x < -1), (x > 0) ^ (x < 1), ~x.long()), (_x(3, 4),)),
    "comparisons": (lambda x, y: (x == y, x != 0.5, x < y, x <= 0, x > 1, x >= y, torch.maximum(x, y),
                                  torch.minimum(x, 0.1 * y)), (_x(3, 4), _x(3, 4))),
    "int_float_promotion": (lambda i, x: (i + x, i * 2.5, i.float() / 3, i > 1.5, torch.where(i > 1, x, i)),
                            (torch.arange(12).reshape(3, 4), _x(3, 4))),
    "cumsum_triu_tril": (lambda x: (torch.cumsum(x, 1), torch.triu(x, 1), torch.tril(x), torch.cumsum(x > 0, 0)),
                         (_x(4, 4),)),
    "split_chunk_unbind": (lambda x: (*torch.split(x, [1, 3], 1), *torch.chunk(x, 2, 0), *torch.unbind(x, 1),
                                      *torch.split(x, 3, 1)), (_x(4, 4),)),
    "cat_stack": (lambda x, y: (torch.cat([x, y], 0), torch.stack([x, y], -1), torch.cat([x, y.int()], 1)),
                  (_x(2, 3), _x(2, 3))),
    "indexing": (lambda x, i: (x[1], x[:, 1:3], x[..., ::2], x.index_select(0, i), x[i], x[:, i], x[i, i],
                                torch.gather(x, 1, i.view(1, -1).expand(4, -1)), x.flip(0), x[-1, -2]),
                 (_x(4, 4), torch.tensor([3, 0, 1]))),
    "advanced_indexing": (lambda x, i, j: (x[i, j], x[:, i, j], x[i, :, j]), (_x(4, 5, 6), torch.tensor([[0], [2]]),
                                                                            torch.tensor([1, 3, 4]))),
    "views": (lambda x: (x.view(6, 4), x.reshape(-1), x.permute(2, 0, 1), x.transpose(0, 2), x[0].t(), x.unsqueeze(1),
                         x[:, :1].squeeze(1), x[:, :1].squeeze(), x.flatten(1), x.unflatten(2, (2, 2)),
                         x[:, :1].expand(2, 3, 4), x.repeat(2, 1, 1, 1), x.contiguous(), x.clone()), (_x(2, 3, 4),)),
    "factories": (lambda x: (torch.zeros(2, 3), torch.ones_like(x), torch.full((2,), 7.0), torch.arange(5),
                             torch.arange(1, 10, 2.5), x.new_zeros(3), torch.full_like(x, 2, dtype=torch.int64),
                             torch.zeros_like(x, dtype=torch.bool), x + torch.tensor(3.0)), (_x(2, 3),)),
    "casts": (lambda x: (x.to(torch.float64), x.long(), x.int() + 1, (x > 0).float(), x.half().float(), x.type_as(x)),
              (_x(3, 3),)),
    "matmuls": (lambda a, b, c: (a @ b, torch.mm(a[0], b[0]), torch.baddbmm(c, a, b, beta=0.5, alpha=2.0),
                                 torch.baddbmm(c, a, b, beta=0), torch.addmm(c[0, :1], a[0], b[0], alpha=0.5),
                                 torch.einsum("bij,bjk->bik", a, b), a[0, 0] @ b[0, :, 0]),
                (_x(2, 3, 4), _x(2, 4, 5), _x(2, 3, 5))),
    "attention_variants": (lambda q, k, v, m: (_sdpa(q, k, v, is_causal=True), _sdpa(q, k, v, attn_mask=m > 0),
                                               _sdpa(q, k, v, attn_mask=m, scale=0.3),
                                               _sdpa(q, k[:, :, :3], v[:, :, :3]),
                                               _sdpa(q, k[:, :, :3], v[:, :, :3], is_causal=True)),
                           (_x(2, 2, 5, 8), _x(2, 2, 5, 8), _x(2, 2, 5, 8), _x(5, 5).abs() + torch.eye(5))),
    "layer_norm_no_affine": (lambda x: (nn.functional.layer_norm(x, (4,)),
                                        nn.functional.layer_norm(x, (3, 4), eps=1e-3)), (_x(2, 3, 4),)),
    "convs_and_pools": (lambda x, w, wt: (nn.functional.conv2d(x, w, stride=2, padding=1, dilation=1),
                                          nn.functional.conv2d(x, w[:3, :1], groups=3),
                                          nn.functional.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1),
                                          nn.functional.max_pool2d(x, 3, 2, 1), nn.functional.avg_pool2d(x, 2),
                                          nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                                          nn.functional.adaptive_avg_pool2d(x, 2),
                                          nn.functional.conv1d(x[:, :, 0], w[:, :, 0])),
                        (_x(1, 3, 8, 8), _x(4, 3, 3, 3), _x(3, 2, 3, 3))),
    "batch_norm_functional": (lambda x, m, v: nn.functional.batch_norm(x, m, v, eps=1e-3),
                              (_x(2, 3, 4), _x(3), _x(3).abs() + 0.5)),
    "pad_upsample_topk": (lambda x: (nn.functional.pad(x, (1, 2, 0, 1), value=0.5), nn.functional.pad(x, (-1, 1)),
                                     nn.functional.interpolate(x, scale_factor=2, mode="nearest"),
                                     nn.functional.interpolate(x, size=(6, 10), mode="bilinear", align_corners=False),
                                     nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                                     torch.topk(x, 2, dim=-1)), (_x(1, 2, 3, 5),)),
    "group_norm": (lambda x, w, b: (nn.functional.group_norm(x, 2, w, b, eps=1e-3), nn.functional.group_norm(x, 4),
                                    nn.functional.group_norm(x[:, :, 0], 1, w, b)),
                   (_x(2, 4, 3, 5), _x(4), _x(4))),
    "vector_norms": (lambda x: (torch.linalg.vector_norm(x, dim=-1), x.norm(dim=1, keepdim=True),
                                nn.functional.normalize(x, dim=-1), torch.linalg.vector_norm(x, 1),
                                torch.linalg.vector_norm(x, float("inf"), dim=0),
                                torch.linalg.vector_norm(x, float("-inf"), dim=(0, 1)),
                                torch.linalg.vector_norm(x, 3, dim=1), torch.linalg.vector_norm(x.round(), 0, dim=2)),
                     (_x(2, 3, 4),)),
    "slice_scatter": (lambda x, y: (torch.slice_scatter(x, y, dim=1, start=1, end=3),
                                    torch.slice_scatter(x, y, dim=1, start=0, step=2),
                                    torch.slice_scatter(x, y[:, :1], dim=1, start=-1)), (_x(3, 4), _x(3, 2))),
    "batch_norm_batch_statistics": (lambda x, w, b: (nn.functional.batch_norm(x, None, None, w, b, training=True,
                                                                               momentum=0.0, eps=1e-5),
                                                     nn.functional.batch_norm(x[:, :, :, 0], None, None, training=True)),
                                    (_x(2, 3, 4, 5) * 3 + 1, _x(3), _x(3))),
    "embedding_dropout": (lambda i, w: nn.functional.dropout(nn.functional.embedding(i, w), 0.5, training=False),
                          (torch.tensor([[1, 0, 3]]), _x(4, 6))),
}


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _onnxruntime_outputs(graph, args):
    """The graph exported to ONNX and run by onnxruntime (None when it is not installed): an
    oracle independent of dcopt's own reference executor for the lowering's ONNX semantics."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from dcopt.frontends.onnx_export import export_model
    from dcopt.testing import run_onnxruntime

    return run_onnxruntime(export_model(graph), {name: a.numpy() for name, a in zip(graph.inputs, args)})


def _compiled_outputs(graph, args):
    """The graph through dcopt's compiled CPU backend (fusion, generated kernels)."""
    from dcopt.compiled import compile as compile_graph

    feeds = {name: a.numpy() for name, a in zip(graph.inputs, args)}
    return compile_graph(graph, example_feeds=feeds).run(None, feeds)


@pytest.mark.parametrize("case", list(OPS))
def test_op_coverage(case):
    fn, args = OPS[case]
    module = _Fn(fn)
    graph = import_exported_program(torch.export.export(module, args, strict=False))
    expected = tensors(eager(module, args))
    actual = run_imported(graph, args)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype, case
        np.testing.assert_allclose(a.numpy().astype(np.float64), e.numpy().astype(np.float64), rtol=RTOL, atol=ATOL)
    for a, e in zip(_onnxruntime_outputs(graph, args) or [], expected):
        np.testing.assert_allclose(a.astype(np.float64), e.numpy().astype(np.float64), rtol=RTOL, atol=ATOL)
    for a, e in zip(_compiled_outputs(graph, args), expected):  # the product: generated code
        assert a.dtype == e.numpy().dtype, case
        np.testing.assert_allclose(a.astype(np.float64), e.numpy().astype(np.float64), rtol=RTOL, atol=ATOL)


def test_gelu_is_an_onnx_op_from_opset_20():
    module = _Fn(lambda x: nn.functional.gelu(x))
    args = (_x(3, 4),)
    ep = torch.export.export(module, args)
    assert "Gelu" not in import_exported_program(ep).op_histogram()
    graph = import_exported_program(ep, opset=20)
    assert graph.op_histogram().get("Gelu") == 1 and graph.opset_of("") == 20
    assert_matches(run_imported(graph, args), eager(module, args))


def test_dynamic_sizes_become_shape_arithmetic():
    """Sizes computed from a dynamic dim (arange, view with products, full) work at any size."""
    module = _Fn(lambda x: (torch.arange(x.shape[0]) * 2, x.view(x.shape[0] * 2, -1), torch.full((x.shape[0], 2), 3.0),
                            x.new_ones(x.shape[0] // 2 + 1), x[: x.shape[0] - 1]))
    ep = torch.export.export(module, (_x(4, 6),), dynamic_shapes=(({0: torch.export.Dim("n", min=3, max=64)},),))
    graph = import_exported_program(ep)
    for n in (3, 7):
        x = _x(n, 6)
        assert_matches(run_imported(graph, (x,)), eager(module, (x,)))


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


def test_lowering_table_size():
    assert len(supported_ops()) >= 150


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
