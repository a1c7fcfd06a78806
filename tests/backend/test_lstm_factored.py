"""A factored LSTM recurrence (lowrank of R: U V) through the int8 path: the qlstm's extra int8
matmul per step against the float model, the NPU program bit-exact with the golden interpreter
on the bundled demo CRNN, the storage report, the QDQ export, and a clear error without the
calibration of V h."""

from __future__ import annotations

from importlib import resources

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ocrc.compiler.compress.storage import storage_report
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import run
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.qparams import QuantizeError
from ocrc.frontend.onnx_import import import_onnx

from tests.backend.helpers import TARGETS, check_exact, quantise
from tests.quant.helpers import demo_graph, demo_samples

MIN_SQNR_DB = 25.0  # int8 vs float probabilities of the demo graph (unfactored: ~30 dB)


def _factor(g: Graph, layer: str, rank: int) -> Graph:
    ctx = PassContext()
    out = run_passes(g, parse_pipeline(f"lowrank{{layers={layer}:{rank},multiple=1}}"), ctx)
    assert [r.status for r in ctx.options["reports"]["lowrank"]] == ["split"]
    return out


def _sqnr(f: np.ndarray, q: np.ndarray) -> float:
    return float(10 * np.log10((f ** 2).sum() / max(((f - q) ** 2).sum(), 1e-30)))


@pytest.fixture(scope="module")
def factored_demo():
    g = prepare(_factor(demo_graph(), "Y.R", 3))
    return g, quantize_graph(g, calibrate(g, demo_samples(6), progress=False))


def test_int8_factored_lstm_tracks_the_float_one(factored_demo) -> None:
    g, res = factored_demo
    q = next(n for n in res.graph.nodes if n.op.name == "qlstm")
    rv, vm, vsh = (res.graph.const_value(v) for v in q.inputs[11:14])
    assert rv.dtype == np.int8 and rv.shape == (2, 3, 6) and vm.shape == vsh.shape == (2, 3)
    assert q.inputs[2].type.shape == (2, 24, 3)
    for s in demo_samples(3, seed=11):
        assert _sqnr(run(g, s)["prob"], run(res.graph, s)["prob"]) > MIN_SQNR_DB


def test_storage_report_and_qdq_export(factored_demo) -> None:
    g, res = factored_demo
    rows = {r.layer: r for r in storage_report(res.graph)}
    assert rows["Y.R"].count == 2 * 24 * 3 and rows["Y.RV"].count == 2 * 3 * 6
    sess = ort.InferenceSession(export_onnx(g, res).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for s in demo_samples(3, seed=11):
        golden = run(res.graph, s)["prob"]
        qdq = sess.run(None, s)[0]
        assert np.mean(qdq.argmax(-1) == golden.argmax(-1)) >= 0.75


def test_missing_calibration_of_v_h_is_named() -> None:
    plain = prepare(demo_graph())
    table = calibrate(plain, demo_samples(2), progress=False)
    with pytest.raises(QuantizeError, match="factored R's V h was not calibrated"):
        quantize_graph(prepare(_factor(demo_graph(), "Y.R", 3)), table)


@pytest.fixture(scope="module")
def demo_crnn() -> Graph:
    path = resources.files("ocrc.frontend") / "models" / "crnn_dense.onnx"
    return optimize(import_onnx(onnx.load(str(path)), {"image": [1, 1, 32, 48]}))


@pytest.mark.parametrize("rank,target", [(16, "npu"), (16, "tiny"), (37, "tiny-ws")])
def test_npu_bit_exact_on_the_demo_crnn(demo_crnn: Graph, rank: int, target: str) -> None:
    qg = quantise(_factor(demo_crnn, "/rnn/LSTM.R", rank))
    assert any(n.op.name == "qlstm" and len(n.inputs) > 11 for n in qg.nodes)
    res, stats = check_exact(qg, TARGETS[target]())
    lstm = [layer for layer in stats.layers if layer.name.endswith("[npu.lstm]")]
    t = demo_crnn.nodes[-1].outputs[0].type.shape[0]
    assert lstm and lstm[0].macs == 2 * t * rank * 5 * 128  # V h, then U t, per step
