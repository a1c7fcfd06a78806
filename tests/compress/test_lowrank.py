"""lowrank: the SVD error bound, the rewritten graph's numbers, rank rounding and skips, and
the errors of bad specs."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.compiler.compress import svd
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.verify import verify
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from tests.compress.tiny import inputs, tiny_crnn


def _run(text: str, ctx: PassContext | None = None):
    ctx = ctx or PassContext()
    g = tiny_crnn()
    out = run_passes(g, parse_pipeline(text), ctx)
    verify(out)
    return g, out, ctx.options["reports"]["lowrank"]


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.95, 0.999])
def test_svd_error_within_discarded_energy(energy: float) -> None:
    rng = np.random.default_rng(0)
    decay = np.diag(0.8 ** np.arange(24))
    w = rng.standard_normal((60, 24)) @ decay @ rng.standard_normal((24, 24))
    for mat in (w, w.T):
        d = svd.decompose(mat)
        r = svd.energy_rank(d.s, energy)
        u, v = d.factor(r)
        err = np.linalg.norm(mat - u.astype(np.float64) @ v) / np.linalg.norm(mat)
        assert err <= np.sqrt(1 - energy) + 1e-5
        assert err == pytest.approx(svd.relative_error(d.s, r), abs=1e-5)
        np.testing.assert_allclose(d.s, np.linalg.svd(mat, compute_uv=False), rtol=1e-6, atol=1e-8)


def test_whitened_svd_is_better_on_its_inputs() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16))
    x = rng.standard_normal((500, 16)) * np.geomspace(10, 0.01, 16)  # anisotropic inputs
    plain = svd.factor(w, 4)
    aware = svd.factor(w, 4, x.T @ x)
    def out_err(uv):
        return np.linalg.norm(x @ (w - uv[0].astype(np.float64) @ uv[1]).T)
    assert out_err(aware) < 0.5 * out_err(plain)


def test_dense_split_matches_the_factors() -> None:
    g, out, rows = _run("lowrank{rank=8,ops=dense,multiple=1}")
    assert [r.status for r in rows] == ["split"]
    assert [n.op.name for n in out.nodes if n.op.name == "dense"] == ["dense", "dense"]
    ref_w = next(n for n in g.nodes if n.name == "fc").inputs[1]
    d = svd.decompose(g.const_value(ref_w))
    assert rows[0].rel_error == pytest.approx(svd.relative_error(d.s, 8), abs=1e-6)
    x = inputs()[0]
    a, b = interp.run(g, x)["logits"], interp.run(out, x)["logits"]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.6


def test_full_rank_split_is_exact_and_skipped_when_useless() -> None:
    g, out, rows = _run("lowrank{ratio=1.0,multiple=1}")
    assert all(r.status.startswith("skipped") for r in rows)  # full rank never saves MACs
    assert len(out.nodes) == len(g.nodes)


def test_conv_and_lstm_splits_keep_the_numbers_at_high_energy() -> None:
    g, out, rows = _run("lowrank{layers=conv1:8;lstm.W:8;fc:8,multiple=1}")
    status = {r.layer: r.status for r in rows}
    assert status["conv1"] == "split" and status["lstm.W"] == "split"
    assert "lstm.R" not in status  # only the named layers
    rows = {r.layer: r for r in _run("lowrank{rank=4}")[2]}  # 4 -> 16 (the MAC width) = H
    assert rows["lstm.R"].status.startswith("skipped: saves nothing")
    assert sum(n.op.name == "conv" for n in out.nodes) == 5


def _low_rank_weights(g, rank: int):
    """The graph with every weight of conv1, lstm W and fc replaced by a rank-`rank` one."""
    from ocrc.compiler.compress.sites import from_rows, to_rows, weight_sites
    from ocrc.compiler.ir.graph import Graph, Node
    rng = np.random.default_rng(3)
    new = {}
    for s in weight_sites(g):
        if s.layer in ("conv1", "lstm.W", "fc"):
            rows = to_rows(g.const_value(s.value), s.kind)
            p, m, n = rows.shape
            lr = rng.standard_normal((p, m, rank)) @ rng.standard_normal((p, rank, n)) / n
            new[s.value] = from_rows(lr.astype(np.float32), s.kind, s.value.type.shape)
    nodes = [Node(n.op, n.inputs, {"value": new[n.outputs[0]]}, n.outputs, n.name)
             if n.op.name == "const" and n.outputs[0] in new else n for n in g.nodes]
    return Graph(g.inputs, nodes, g.outputs, g.name)


def test_split_of_low_rank_weights_is_exact() -> None:
    g = _low_rank_weights(tiny_crnn(), 4)
    ctx = PassContext()
    out = run_passes(g, parse_pipeline("lowrank{layers=conv1:4;lstm.W:4;fc:4,multiple=1}"), ctx)
    assert [r.status for r in ctx.options["reports"]["lowrank"]] == ["split"] * 3
    x = inputs()[0]
    np.testing.assert_allclose(interp.run(out, x)["logits"], interp.run(g, x)["logits"],
                               rtol=1e-4, atol=1e-4)


def test_ranks_round_up_to_the_mac_width() -> None:
    _, _, rows = _run("lowrank{rank=3,ops=dense,multiple=4}")
    assert rows[0].ranks == (4,)
    _, _, rows = _run("lowrank{rank=3,ops=dense,multiple=32}")
    assert rows[0].ranks == (32,) and rows[0].status.startswith("skipped: saves nothing")


def test_budget_keeps_at_most_that_share_of_the_macs() -> None:
    _, _, rows = _run("lowrank{budget=0.5,multiple=1,ops=dense+conv}")
    assert sum(r.macs_after for r in rows) <= 0.5 * sum(r.macs for r in rows)


def test_whiten_uses_calibration() -> None:
    ctx = PassContext(options={"calibration": inputs(n=2)})
    _, out, rows = _run("lowrank{rank=4,multiple=1,whiten=true,ops=dense+conv}", ctx)
    assert any(r.status == "split" for r in rows)
    with pytest.raises(PassError, match="needs calibration data"):
        _run("lowrank{rank=4,whiten=true}")


@pytest.mark.parametrize("text,match", [
    ("lowrank{rank=33,ops=dense}", "above min\\(m, n\\) = 32"),
    ("lowrank{layers=fc:99}", "outside \\[1, 32\\]"),
    ("lowrank{layers=nope:4}", "no layer 'nope'"),
    ("lowrank{energy=1.5}", "must be in"),
    ("lowrank{ops=conv+gru,rank=2}", "unknown op kind 'gru'"),
    ("lowrank{layers=fc}", "expected 'layer:value"),
])
def test_bad_specs(text: str, match: str) -> None:
    with pytest.raises(PassError, match=match):
        _run(text)
