"""ATen op coverage: small functions using the ops the whole-model tests do not, each exported,
imported and run three ways -- dcopt's reference executor, onnxruntime on the exported ONNX, and
dcopt's compiled path -- against eager PyTorch (fp32 rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from dcopt.frontends.torch_import import import_exported_program  # noqa: E402
from dcopt.frontends.torch_lowering import supported_ops  # noqa: E402
from tests.frontends.test_torch import ATOL, RTOL, assert_matches, eager, run_imported, tensors  # noqa: E402

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


def test_lowering_table_size():
    assert len(supported_ops()) >= 150
