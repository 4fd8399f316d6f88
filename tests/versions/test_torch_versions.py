"""PyTorch state dicts in the version store: payloads keyed by state-dict key (not zip member), so
a fine-tune is a low-rank/sparse delta of the same parameter, and every version rebuilds byte for
byte."""

import io

import numpy as np
import pytest
from click.testing import CliRunner

from dcopt.cli import app

from dcopt.versions import manifest as manifests
from dcopt.versions.diff import diff_models
from dcopt.versions.params import ModelFile
from dcopt.versions.store import ObjectStore
from dcopt.versions.torch_pickle import tensor_refs

torch = pytest.importorskip("torch")


def saved(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def base_state(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"embed.weight": torch.randn(64, 48, generator=g), "fc.weight": torch.randn(48, 32, generator=g),
            "fc.bias": torch.zeros(32), "norm.weight": torch.ones(48, dtype=torch.float16),
            "steps": torch.tensor(1000), "config": {"lr": 0.1}}


def test_payloads_are_named_by_state_dict_key_with_dtype_and_shape():
    state = base_state()
    state["head.weight"] = state["embed.weight"]        # tied: one storage, named by its first key
    state["fc_t"] = state["fc.weight"].t()               # a view: not a payload of its own
    data = saved(state)
    found = {p.name: (p.dtype, p.shape) for p in ModelFile(data, "m.pt").payloads}
    assert found == {"embed.weight": ("float32", (64, 48)), "fc.weight": ("float32", (48, 32)),
                     "fc.bias": ("float32", (32,)), "norm.weight": ("float16", (48,)), "steps": ("int64", ())}
    import zipfile
    pkl = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    assert tensor_refs(pkl)["fc_t"].stride == (1, 32)
    assert tensor_refs(b"\x80\x02cos\nsystem\n(S'echo pwned'\ntR.") == {}  # nothing is called


def test_fine_tune_is_stored_as_deltas_of_the_same_parameter_and_rebuilds_exactly(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    base = base_state()
    tuned = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in base.items()}
    g = torch.Generator().manual_seed(1)
    tuned["fc.weight"] += torch.randn(48, 2, generator=g) @ torch.randn(2, 32, generator=g) * 0.01
    tuned["fc.bias"][:3] = 0.5
    # a new key first in the dict renumbers every zip member: the names still match
    tuned = {"adapter.scale": torch.ones(4), **tuned, "steps": torch.tensor(1200)}
    a, b = saved(base), saved(tuned)
    first = manifests.build(ModelFile(a, "a.pt"), store)
    before = store.size()
    second = manifests.build(ModelFile(b, "b.pt"), store, first)
    kinds = {p["name"]: p["update"]["type"] for p in second["params"]}
    recipes = {p["name"]: p["update"] for p in second["params"]}
    assert kinds["fc.weight"] == "low-rank" and recipes["fc.weight"]["rank"] == 2, kinds
    assert kinds["fc.bias"] == "sparse" and kinds["embed.weight"] == "dense" and kinds["adapter.scale"] == "dense"
    assert next(p for p in second["params"] if p["name"] == "embed.weight")["update"] == \
        next(p for p in first["params"] if p["name"] == "embed.weight")["update"]  # unchanged: the same object
    assert store.size() - before < 48 * 32 * 4  # less than the tuned matrix alone, stored whole
    assert manifests.rebuild(first, store) == a and manifests.rebuild(second, store) == b

    d = diff_models(ModelFile(a, "a.pt"), ModelFile(b, "b.pt"))
    changes = {p.name: p for p in d.params}
    assert changes["fc.weight"].kind == "modified" and changes["fc.weight"].rank == 2
    assert changes["fc.bias"].frac_changed == pytest.approx(3 / 32)
    assert changes["adapter.scale"].kind == "added" and changes["steps"].max_abs == 200
    np.testing.assert_array_equal(ModelFile(b).arrays["fc.bias"][:3], [0.5] * 3)

    (tmp_path / "a.pt").write_bytes(a)
    (tmp_path / "b.pt").write_bytes(b)
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    assert result.exit_code == 0 and "format: torch" in result.output, result.output
    assert "~ fc.weight  float32[48, 32]" in result.output and "rank 2" in result.output
    assert "+ adapter.scale  float32[4]" in result.output
