"""The QDQ export of the integer LSTM (compiler/export_onnx.py `_qlstm_cell`): `qlstm` step
for step in standard ONNX ops (MatMulInteger, int64 rescales, Gather tables, a Scan over time;
compiler/export_qops.py), so that onnxruntime reads the golden interpreter's hidden codes, not
a float LSTM's."""

from __future__ import annotations

import math
from fractions import Fraction

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrc.compiler.cli import main
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import Graph, run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from tests.quant.helpers import (LSTM_DIMS, demo_crnn_compile_args, demo_graph, demo_samples,
                                lstm_graph)

T, B, I, H = LSTM_DIMS


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((T, B, I)) * 1.5).astype(np.float32)} for _ in range(n)]


def _codes_vs_golden(g: Graph, int16: tuple[str, ...] = ()) -> tuple[float, int]:
    """(fraction of Y codes that differ, largest difference) between the golden model and the
    QDQ export in onnxruntime, over 4 samples."""
    g = prepare(g)
    res = quantize_graph(g, calibrate(g, _samples(8, 1), progress=False), int16=int16)
    sess = ort.InferenceSession(export_onnx(g, res).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    scale = res.qparams["Y"].scale
    diffs = []
    for s in _samples(4, 2):
        golden = np.rint(run(res.graph, s)["Y"] / scale)
        qdq = np.rint(sess.run(None, s)[0] / scale)
        assert golden.shape == qdq.shape and golden.shape[2:] == (B, H)
        diffs.append(np.abs(golden - qdq))
    d = np.concatenate([a.ravel() for a in diffs])
    return float(np.mean(d > 0)), int(d.max())


@pytest.mark.parametrize("direction,states", [("forward", False), ("reverse", True),
                                              ("bidirectional", False),
                                              ("bidirectional", True)])
def test_qdq_lstm_tracks_the_golden_codes(direction: str, states: bool) -> None:
    frac, top = _codes_vs_golden(lstm_graph(direction, states))
    assert frac == 0.0 and top == 0, (frac, top)


def test_qdq_lstm_of_a_narrowed_int16_input_tracks_the_golden_codes() -> None:
    frac, top = _codes_vs_golden(lstm_graph("bidirectional", True), int16=("x",))
    assert frac == 0.0 and top == 0, (frac, top)


def test_qdq_factored_lstm_tracks_the_golden_codes() -> None:
    ctx = PassContext()
    g = run_passes(lstm_graph("bidirectional", False),
                   parse_pipeline("lowrank{layers=Y.R:6,multiple=1}"), ctx)
    assert [r.status for r in ctx.options["reports"]["lowrank"]] == ["split"]
    frac, top = _codes_vs_golden(g)
    assert frac == 0.0 and top == 0, (frac, top)


def test_qdq_lstm_is_an_integer_scan() -> None:
    g = prepare(lstm_graph("bidirectional", False))
    res = quantize_graph(g, calibrate(g, _samples(4, 1), progress=False))
    model = export_onnx(g, res)
    ops = [n.op_type for n in model.graph.node]
    assert "LSTM" not in ops and ops.count("Scan") == 2 and ops.count("MatMulInteger") == 2
    body = next(n for n in model.graph.node if n.op_type == "Scan").attribute[0].g
    body_ops = [n.op_type for n in body.node]
    assert body_ops.count("MatMulInteger") == 1 and body_ops.count("Gather") == 2
    # The float model keeps ONNX's LSTM op.
    assert "LSTM" in [n.op_type for n in export_onnx(g).graph.node]


def test_cli_qdq_export_of_the_demo_crnn_reads_the_golden_codes(tmp_path: Path) -> None:
    """`ocrc compile -t onnx --quant int8` and `-t ir` of the same model and calibration: the
    QDQ file in onnxruntime and the golden interpreter of the int8 IR give the same logits'
    argmax (the backbone's QDQ convs round in float, so the logits may differ in a code)."""
    base = demo_crnn_compile_args(tmp_path, 4)
    rng = np.random.default_rng(1)
    assert main(base + ["-t", "onnx", "-o", str(tmp_path / "q.onnx")]) == 0
    assert main(base + ["-t", "ir", "-o", str(tmp_path / "q.ir")]) == 0
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert "Scan" in [n.op_type for n in model.graph.node]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    golden = load_ir(tmp_path / "q.ir")
    name = golden.inputs[0].name
    for _ in range(3):
        x = rng.random((1, 1, 32, 32)).astype(np.float32)
        want = next(iter(run(golden, {name: x}).values()))
        got = sess.run(None, {name: x})[0]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_drift_report_compares_every_named_value(quantized_demo) -> None:  # type: ignore
    """benchmarks/qdq_drift.py on the demo graph: the input codes match (float32 division, as
    QuantizeLinear), the LSTM's output is compared and matches, values come in graph order."""
    from benchmarks.qdq_drift import qdq_drift

    g = prepare(demo_graph())
    sample = demo_samples(1, seed=5)[0]
    drift = qdq_drift(g, quantized_demo, sample)
    names = [d.value for d in drift]
    assert names[0] == "x" and drift[0].frac == 0.0
    assert "Y" in names and "logits" in names and names.index("Y") < names.index("logits")
    assert all(0.0 <= d.frac <= 1.0 and d.top >= 0 for d in drift)


def test_drift_explanation_recomputes_the_golden_rounding(quantized_demo) -> None:  # type: ignore
    """explain_mac's exact value, recomputed from the conv's operands at any output element
    (padding, strides, groups), rounds half up to the golden code wherever it is not clamped."""
    from benchmarks.qdq_drift import _golden_and_export, explain_mac

    g = prepare(demo_graph())
    vals, got, nodes = _golden_and_export(g, quantized_demo, demo_samples(1, seed=6)[0])
    macs = [n for n in nodes.values() if n.op.name in ("qconv", "qdense")]
    assert {n.op.name for n in macs} == {"qconv", "qdense"}
    rng = np.random.default_rng(0)
    checked = 0
    for n in dict.fromkeys(macs):
        y = vals[n.outputs[0].name]
        fake = y.copy()
        flat = rng.choice(y.size, size=min(25, y.size), replace=False)
        fake.reshape(-1)[flat] ^= 1  # pretend the export differs there
        for e in explain_mac(n, vals, fake, limit=25):
            rounded = math.floor(e.exact + Fraction(1, 2))  # half up, exactly
            lo, hi = n.attr("lo"), n.attr("hi")
            assert e.golden == min(max(rounded, lo), hi), (n.label(), e)
            assert e.export == e.golden ^ 1 and 0 <= e.from_tie <= 0.5 and e.ulp32 > 0
            checked += 1
    assert checked >= 50


@settings(max_examples=12, deadline=None, derandomize=True)
@given(t=st.integers(1, 5), b=st.integers(1, 3), i=st.integers(1, 12), h=st.integers(1, 9),
       direction=st.sampled_from(["forward", "reverse", "bidirectional"]), states=st.booleans(),
       seed=st.integers(0, 1000))
def test_qdq_lstm_matches_the_golden_codes_for_any_shape(t: int, b: int, i: int, h: int,
                                                          direction: str, states: bool,
                                                          seed: int) -> None:
    g = prepare(lstm_graph(direction, states, seed, (t, b, i, h), sc=0.5))
    rng = np.random.default_rng(seed + 1)
    samples = [{"x": (rng.standard_normal((t, b, i)) * 1.5).astype(np.float32)}
               for _ in range(4)]
    res = quantize_graph(g, calibrate(g, samples[:3], progress=False))
    sess = ort.InferenceSession(export_onnx(g, res).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    scale = res.qparams["Y"].scale
    for s in samples:
        np.testing.assert_array_equal(np.rint(sess.run(None, s)[0] / scale),
                                      np.rint(run(res.graph, s)["Y"] / scale))
