"""prune: the pruned graph equals the masked reference exactly; N:M structure; masks files;
already-sparse weights; bad specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ocrc.compiler.compress.sites import to_rows, weight_sites
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from tests.compress.tiny import inputs, tiny_crnn


def _prune(text: str, g: Graph | None = None):
    ctx = PassContext()
    g = g or tiny_crnn()
    return g, run_passes(g, parse_pipeline(text), ctx), ctx.options["reports"]["prune"]


def _with_weights(g: Graph, arrays: dict) -> Graph:
    nodes = [Node(n.op, n.inputs, {"value": arrays[n.outputs[0].name]}, n.outputs, n.name)
             if n.op.name == "const" and n.outputs[0].name in arrays else n for n in g.nodes]
    return Graph(g.inputs, nodes, g.outputs, g.name)


def _masks_of(out: Graph) -> dict:
    return {s.tensor: out.const_value(s.value) != 0 for s in weight_sites(out)}


@pytest.mark.parametrize("text", ["prune{sparsity=0.5}", "prune{sparsity=0.78,ops=dense+lstm}",
                                  "prune{sparsity=0.6,scope=global}", "prune{nm=2:4,ops=lstm}"])
def test_pruned_graph_equals_masked_reference(text: str) -> None:
    g, out, rows = _prune(text)
    masks = _masks_of(out)
    ref = _with_weights(g, {s.tensor: g.const_value(s.value) * masks[s.tensor]
                            for s in weight_sites(g)})
    for x in inputs(n=2):
        a, b = interp.run(out, x)["logits"], interp.run(ref, x)["logits"]
        np.testing.assert_array_equal(a, b)


def test_sparsity_per_layer_and_global() -> None:
    _, out, rows = _prune("prune{sparsity=0.5}")
    assert all(abs(r.after - 0.5) < 0.01 for r in rows)
    _, out, rows = _prune("prune{sparsity=0.5,scope=global}")
    total = sum(np.prod(r.shape) * r.after for r in rows) / sum(np.prod(r.shape) for r in rows)
    assert abs(total - 0.5) < 0.01 and max(r.after for r in rows) > 0.55


def test_nm_keeps_n_of_every_m_along_k() -> None:
    g, out, rows = _prune("prune{nm=2:4}")
    how = {r.layer: r.how for r in rows}
    assert set(how.values()) == {"2:4"}
    _, _, rows = _prune("prune{nm=2:8}")
    how = {r.layer: r.how for r in rows}
    assert how["conv0"].startswith("skipped: 8 does not divide")  # 4 input channels
    assert how["conv1"] == "2:8"
    for s in weight_sites(out):
        if how[s.layer] != "2:4":
            continue
        blocks = to_rows(out.const_value(s.value), s.kind,
                         s.node.attr("group") if s.kind == "conv" else 1).reshape(-1, 4)
        assert ((blocks != 0).sum(axis=1) <= 2).all()


def test_nm_that_does_not_divide_a_named_layer_is_an_error() -> None:
    with pytest.raises(PassError, match="M=8 does not divide the reduction axis \\(4\\)"):
        _prune("prune{nm=2:8,layers=conv0:0.5}")


def test_masks_file_and_already_sparse_weights(tmp_path: Path) -> None:
    g = tiny_crnn()
    fc = next(s for s in weight_sites(g) if s.layer == "fc")
    rng = np.random.default_rng(0)
    mask = rng.random(fc.value.type.shape) < 0.3
    np.savez(tmp_path / "m.npz", **{fc.tensor: mask})
    _, out, rows = _prune(f"prune{{masks={tmp_path / 'm.npz'}}}", g)
    np.testing.assert_array_equal(out.const_value(next(
        s for s in weight_sites(out) if s.layer == "fc").value), g.const_value(fc.value) * mask)
    # pruning again: the existing zeros are detected and count towards the target
    _, out2, rows2 = _prune("prune{sparsity=0.5,ops=dense}", out)
    assert rows2[0].before == pytest.approx(1 - mask.mean(), abs=1e-6)
    assert rows2[0].after == pytest.approx(max(0.5, rows2[0].before), abs=0.01)


@pytest.mark.parametrize("content,match", [
    ({"nope": np.ones(3)}, "mask for unknown tensor 'nope'"),
    (None, "has shape \\[3\\], the weight is"),
])
def test_bad_masks(tmp_path: Path, content, match: str) -> None:
    g = tiny_crnn()
    if content is None:
        content = {weight_sites(g)[0].tensor: np.ones(3)}
    np.savez(tmp_path / "m.npz", **content)
    with pytest.raises(PassError, match=match):
        _prune(f"prune{{masks={tmp_path / 'm.npz'}}}", g)


@pytest.mark.parametrize("text,match", [
    ("prune{sparsity=1.5}", "sparsity=1.5 must be in \\[0, 1\\)"),
    ("prune{layers=fc:2}", "sparsity=2.0 must be in"),
    ("prune{nm=3:2}", "N:M with 0 < N < M"),
    ("prune{sparsity=0.5,layers=nope:0.5}", "no layer 'nope'"),
    ("prune", "give sparsity="),
])
def test_bad_specs(text: str, match: str) -> None:
    with pytest.raises(PassError, match=match):
        _prune(text)


def test_activation_criterion_and_row_scope() -> None:
    g = tiny_crnn()
    ctx = PassContext(options={"calibration": inputs(n=2)})
    out = run_passes(g, parse_pipeline("prune{sparsity=0.5,criterion=activation}"), ctx)
    rows = ctx.options["reports"]["prune"]
    assert all(abs(r.after - 0.5) < 0.01 and r.how == "activation" for r in rows)
    # the masked reference holds for this criterion too
    masks = _masks_of(out)
    ref = _with_weights(g, {s.tensor: g.const_value(s.value) * masks[s.tensor]
                            for s in weight_sites(g)})
    x = inputs()[0]
    np.testing.assert_array_equal(interp.run(out, x)["logits"], interp.run(ref, x)["logits"])
    # it differs from magnitude where inputs are uneven, and precomputed statistics are used
    _, mag, _ = _prune("prune{sparsity=0.5}", g)
    assert any((_masks_of(mag)[k] != v).any() for k, v in masks.items())
    _, rowwise, rows = _prune("prune{sparsity=0.5,scope=row,ops=dense}", g)
    w = next(rowwise.const_value(s.value) for s in weight_sites(rowwise) if s.layer == "fc")
    assert ((w == 0).sum(axis=1) == w.shape[1] // 2).all()
    with pytest.raises(PassError, match="needs calibration data"):
        _prune("prune{sparsity=0.5,criterion=activation}")
