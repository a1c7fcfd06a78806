"""lowrank of the LSTM's recurrent R (U V per direction, the lstm's `rv` operand): the float
op against the same lstm with R = U V densified (interpreter and onnxruntime on the exported
ONNX), the SVD error bound, MAC counts, the text round trip and bad specs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from ocrc.compiler.compress import svd
from ocrc.compiler.errors import PassError
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Builder, Graph
from ocrc.compiler.ir.ops.counts import node_macs
from ocrc.compiler.ir.parser import parse_graph
from ocrc.compiler.ir.printer import print_graph
from ocrc.compiler.ir.types import DType, TensorType
from ocrc.compiler.ir.verify import verify
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes

from tests.compress.tiny import HIDDEN, inputs, tiny_crnn

RTOL = 1e-5


def _lowrank(g: Graph, text: str) -> tuple[Graph, dict]:
    ctx = PassContext()
    out = run_passes(g, parse_pipeline(text), ctx)
    verify(out)
    return out, {r.layer: r for r in ctx.options["reports"]["lowrank"]}


def _lstm(g: Graph):
    return next(n for n in g.nodes if n.op.name == "lstm")


def _densified(g: Graph) -> Graph:
    """g with its factored lstm's R = U V as a plain R (no rv)."""
    n = _lstm(g)
    u, v = g.const_value(n.inputs[2]), g.const_value(n.inputs[7])
    r = np.matmul(u.astype(np.float64), v).astype(np.float32)
    b = Builder()
    x = b.input("x", g.inputs[0].type)
    args = [x] + [b.const(g.const_value(a)) if a is not None else None for a in n.inputs[1:7]]
    args[2] = b.const(r)
    while args[-1] is None:
        args.pop()
    y, yh, yc = b.emit("lstm", args, n.attrs, out_names=("Y", "Yh", "Yc"))
    b.output(y, yh, yc)
    return b.graph


def _single_lstm(seed: int = 0, hs: int = 12, t: int = 7, i: int = 10,
                 direction: str = "bidirectional") -> Graph:
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (t, 1, i)))
    ws = [rng.standard_normal(s).astype(np.float32) * sc
          for s, sc in (((d, 4 * hs, i), 0.3), ((d, 4 * hs, hs), 0.4), ((d, 8 * hs), 0.1))]
    y, yh, yc = b.emit("lstm", [x] + [b.const(w) for w in ws],
                       {"hidden_size": hs, "direction": direction}, name="rnn",
                       out_names=("Y", "Yh", "Yc"))
    b.output(y, yh, yc)
    return b.graph


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_factored_r_equals_densified_r(direction: str) -> None:
    g = _single_lstm(direction=direction)
    out, rows = _lowrank(g, "lowrank{layers=rnn.R:5,multiple=1}")
    assert rows["rnn.R"].status == "split" and rows["rnn.R"].ranks[0] == 5
    n = _lstm(out)
    assert n.inputs[2].type.shape[-1] == 5 and n.inputs[7].type.shape[1:] == (5, 12)
    x = {"x": np.random.default_rng(0).standard_normal((7, 1, 10)).astype(np.float32)}
    dense = _densified(out)
    a, b = interp.run(out, x), interp.run(dense, x)
    for k in ("Y", "Yh", "Yc"):
        np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=1e-6)
    # and the densified lstm as ONNX in onnxruntime (also what the export writes)
    for model in (dense, out):
        sess = ort.InferenceSession(export_onnx(model).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        got = sess.run(None, x)
        for k, arr in zip(("Y", "Yh", "Yc"), got):
            np.testing.assert_allclose(arr, a[k], rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("energy", [0.6, 0.9, 0.99])
def test_r_error_within_discarded_energy(energy: float) -> None:
    g = _single_lstm(hs=24)
    r = g.const_value(_lstm(g).inputs[2])
    out, rows = _lowrank(g, f"lowrank{{energy={energy},multiple=1,ops=lstm}}")
    row = rows["rnn.R"]
    assert row.status == "split" or row.status.startswith("skipped: saves nothing")
    if row.status != "split":
        return
    n = _lstm(out)
    u, v = out.const_value(n.inputs[2]), out.const_value(n.inputs[7])
    err = np.linalg.norm(r - np.matmul(u.astype(np.float64), v)) / np.linalg.norm(r)
    assert err <= np.sqrt(1 - energy) + 1e-5
    assert err == pytest.approx(row.rel_error, abs=1e-5)
    spectra = [svd.decompose(m).s for m in r]
    assert row.ranks[0] == max(svd.energy_rank(s, energy) for s in spectra)


def test_w_and_r_split_together_and_macs() -> None:
    g = tiny_crnn()
    out, rows = _lowrank(g, "lowrank{layers=lstm.W:4;lstm.R:4,multiple=1}")
    assert rows["lstm.W"].status == rows["lstm.R"].status == "split"
    n = _lstm(out)
    assert n.inputs[7].type.shape == (2, 4, HIDDEN)
    t = n.inputs[0].type.shape[0]
    assert node_macs(n) == 2 * t * (4 * HIDDEN * 8 + 4 * 5 * HIDDEN)
    assert rows["lstm.R"].macs == 2 * t * 4 * HIDDEN * HIDDEN
    assert rows["lstm.R"].macs_after == 2 * t * 4 * 5 * HIDDEN
    x = inputs()[0]
    a, b = interp.run(g, x)["logits"], interp.run(out, x)["logits"]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1.0
    # already factored: a second lowrank leaves R alone
    _, again = _lowrank(out, "lowrank{rank=2,multiple=1,ops=lstm}")
    assert again["lstm.R"].status == "skipped: recurrent R is already factored"


def test_r_rank_rounds_to_the_mac_width_and_skips_when_useless() -> None:
    g = _single_lstm(hs=40)
    _, rows = _lowrank(g, "lowrank{rank=3,ops=lstm,multiple=8}")
    assert rows["rnn.R"].ranks == (8, 8) and rows["rnn.R"].status == "split"
    _, rows = _lowrank(g, "lowrank{layers=rnn.R:33,multiple=1}")  # 33 >= 160*40/200 = 32
    assert rows["rnn.R"].status.startswith("skipped: saves nothing")


def test_factored_lstm_round_trips_as_text() -> None:
    out, _ = _lowrank(_single_lstm(), "lowrank{layers=rnn.R:3,multiple=1}")
    text, blobs = print_graph(out)
    assert "lstm(%x, " in text
    again = parse_graph(text, blobs)
    verify(again)
    assert print_graph(again)[0] == text
    n = _lstm(again)
    assert n.inputs[7] is not None and n.inputs[4:7] == (None, None, None)


@pytest.mark.parametrize("text,match", [
    ("lowrank{layers=rnn.R:13}", "rank 13 for rnn.R is outside \\[1, 12\\]"),
    ("lowrank{rank=13,ops=lstm}", "above min\\(m, n\\) = 12 for rnn.R"),
])
def test_bad_r_specs(text: str, match: str) -> None:
    with pytest.raises(PassError, match=match):
        _lowrank(_single_lstm(i=20), text)


def test_verifier_names_bad_factors() -> None:
    g = _single_lstm(hs=4, direction="forward")
    b = Builder()
    x = b.input("x", g.inputs[0].type)
    n = _lstm(g)
    w, _, bias = (g.const_value(v) for v in n.inputs[1:4])
    u = np.zeros((1, 16, 3), np.float32)
    with pytest.raises(Exception, match="'rv' \\(V of a factored R\\) must be \\[1, k, 4\\]"):
        b.emit("lstm", [x, b.const(w), b.const(u), b.const(bias), None, None, None,
                        b.const(np.zeros((1, 3, 5), np.float32))], n.attrs)
    with pytest.raises(Exception, match="'r' \\(U of a factored R.*must be \\[1, 16, 2\\]"):
        b.emit("lstm", [x, b.const(w), b.const(u), b.const(bias), None, None, None,
                        b.const(np.zeros((1, 2, 4), np.float32))], n.attrs)


def test_sensitivity_sweeps_r_ranks() -> None:
    from ocrc.compiler.compress import sensitivity as S
    from ocrc.compiler.compress.evaluate import Evaluator
    from ocrc.compiler.compress.metrics import get_metric
    from ocrc.compiler.compress.sites import weight_sites
    g = tiny_crnn()
    cands = S.candidates(g, weight_sites(g, ("lstm",)), multiple=1)
    r_ranks = [c for c in cands if c.layer == "lstm.R" and c.kind == "lowrank"]
    assert r_ranks and all(c.nbytes == 2 * int(c.value) * (4 * HIDDEN + HIDDEN)
                           and int(c.value) < 0.8 * HIDDEN for c in r_ranks)
    variant = run_passes(g, r_ranks[0].passes(), PassContext())
    ev = Evaluator(g, inputs(n=2))
    ev.prepare([variant])
    for s, outs in zip(inputs(n=2), ev.outputs(variant)):
        np.testing.assert_array_equal(outs[0], interp.run(variant, s)["logits"])
    work = [(g, inputs(n=3))]
    sw = S.sweep(work, cands, get_metric("cosine"))
    pick, loss = S.choose(work, sw, get_metric("cosine"), 5.0)
    out = run_passes(g, parse_pipeline(S.settings_pipeline(pick) or "canonicalize"),
                     PassContext())
    verify(out)


def test_cli_low_rank_of_r(tmp_path, capsys) -> None:
    """`ocrc compile --low-rank` on R: to the NPU (calibrated on the factored graph), and the
    one-line error of a rank above min(m, n)."""
    import onnx
    from ocrc.compiler.cli import main
    from ocrc.frontend.demo import build_demo_crnn
    model = tmp_path / "demo.onnx"
    onnx.save(build_demo_crnn(width=64), model)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(calib / f"{i}.npy", rng.random((1, 1, 32, 64), dtype=np.float32))
    assert main(["compile", str(model), "-t", "npu", "--calib", str(calib), "--low-rank",
                 "layers=LSTM_0.R:8,multiple=1", "-o", str(tmp_path / "d.npu")]) == 0
    capsys.readouterr()
    assert main(["compile", str(model), "--low-rank", "layers=LSTM_0.R:99",
                 "-o", str(tmp_path / "d.ir")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ocrc: error: lowrank: rank 99 for LSTM_0.R is outside [1, 32] "
                   "(min(m, n) of its 32-rank matrices)"]


def test_whitened_r_split_is_better_on_the_hidden_states() -> None:
    g = tiny_crnn()
    errs = []
    for whiten in ("false", "true"):
        ctx = PassContext(options={"calibration": inputs(n=3)})
        out = run_passes(g, parse_pipeline(f"lowrank{{layers=lstm.R:4,multiple=1,"
                                           f"whiten={whiten}}}"), ctx)
        verify(out)
        x = inputs(seed=1, n=3)
        errs.append(sum(float(np.linalg.norm(interp.run(out, s)["logits"]
                                             - interp.run(g, s)["logits"])) for s in x))
    assert errs[1] < errs[0]


def test_activation_pruning_of_a_factored_r_weighs_u_by_v_h() -> None:
    from ocrc.compiler.compress.sites import weight_sites
    from ocrc.compiler.compress.stats import input_grams
    g, _ = _lowrank(tiny_crnn(), "lowrank{layers=lstm.R:4,multiple=1}")
    site = next(s for s in weight_sites(g, ("lstm",)) if s.layer == "lstm.R")
    gram = input_grams(g, [site], inputs(n=2))["lstm.R"]
    assert gram.shape == (2, 4, 4)
    ctx = PassContext(options={"calibration": inputs(n=2)})
    out = run_passes(g, parse_pipeline("prune{sparsity=0.5,criterion=activation,ops=lstm}"), ctx)
    u = out.const_value(_lstm(out).inputs[2])
    assert u.shape == (2, 4 * HIDDEN, 4) and 0.4 < np.mean(u == 0) < 0.6


def test_budget_counts_r() -> None:
    _, rows = _lowrank(_single_lstm(hs=40), "lowrank{budget=0.6,ops=lstm,multiple=1}")
    assert rows["rnn.R"].status == "split"
    assert sum(r.macs_after for r in rows.values()) <= 0.6 * sum(r.macs for r in rows.values())
