"""Cross-layer equalisation (float semantics kept, per-channel tables), bias correction, and the
ONNX export (float and QDQ) run by onnxruntime against our interpreter."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from ocrc.compiler.errors import PassError
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, graph_text, run, verify
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.bias_correction import bias_correct
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from tests.quant.helpers import demo_graph, demo_samples


def mobilenet_block(seed: int = 0) -> Graph:
    """1x1 conv -> hard_swish -> depthwise 3x3 -> relu -> 1x1, with channel scales spread over
    three decades (what BN folding leaves in MobileNetV3)."""
    rng = np.random.default_rng(seed)
    spread = np.logspace(-2, 1, 8).astype(np.float32)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4, 6, 6)))
    w1 = rng.standard_normal((8, 4, 1, 1)).astype(np.float32) * spread.reshape(-1, 1, 1, 1)
    c1 = b.op("conv", x, b.const(w1), b.const(spread * 0.1), act="hard_swish", out_name="c1")
    w2 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32) / spread.reshape(-1, 1, 1, 1)
    c2 = b.op("conv", c1, b.const(w2), group=8, pads=(1, 1, 1, 1), act="relu", out_name="c2")
    w3 = rng.standard_normal((5, 8, 1, 1)).astype(np.float32)
    b.output(b.op("conv", c2, b.const(w3), out_name="c3"))
    return b.graph


def samples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(n)]


def sqnr(f: np.ndarray, q: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((f - q) ** 2)))


def transposed_block(batch: int, width: int) -> Graph:
    """conv -> relu -> conv, then a [W, N, C, H] transpose (as before a CRNN's reshape): a 4-D
    value whose axis 1 is the batch, not a channel axis."""
    rng = np.random.default_rng(3)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (batch, 2, 3, width)))
    c1 = b.op("conv", x, b.const(rng.standard_normal((4, 2, 1, 1)).astype(np.float32)),
              act="relu", out_name="c1")
    c2 = b.op("conv", c1, b.const(rng.standard_normal((3, 4, 1, 1)).astype(np.float32)),
              out_name="c2")
    b.output(b.op("transpose", c2, perm=(3, 0, 1, 2), out_name="t"))
    return b.graph


def test_channel_absmax_merges_batches_and_widths() -> None:
    """Statistics of graphs of other batch sizes and widths merge (the compression benchmark
    calibrates batches of several widths): only the pairs' channel values are recorded."""
    rng = np.random.default_rng(0)
    absmax: dict[str, np.ndarray] = {}
    for batch, width in ((2, 5), (3, 7)):
        g = transposed_block(batch, width)
        channel_absmax(g, [{"x": rng.standard_normal((batch, 2, 3, width)).astype(np.float32)}],
                       absmax)
    assert set(absmax) == {"c1"} and absmax["c1"].shape == (4,)


def test_equalize_keeps_float_semantics_and_helps_int8() -> None:
    g = prepare(mobilenet_block())
    eq = equalize(g, channel_absmax(g, samples(4)))
    verify(eq)
    assert sum(n.op.name == "mul" for n in eq.nodes) == 2  # the hard_swish chain
    for s in samples(2, seed=5):
        np.testing.assert_allclose(run(eq, s)["c3"], run(g, s)["c3"], rtol=1e-4, atol=1e-4)
    results = {}
    for name, graph in (("plain", g), ("equalised", eq)):
        res = quantize_graph(graph, calibrate(graph, samples(8), progress=False))
        verify_quantized(res.graph)
        luts = [n for n in res.graph.nodes if n.op.name == "lut"]
        if name == "equalised":
            assert any(res.graph.const_value(n.inputs[1]).ndim == 2 for n in luts)
        results[name] = np.mean([sqnr(run(g, s)["c3"], run(res.graph, s)["c3"])
                                 for s in samples(3, seed=9)])
    assert results["equalised"] > results["plain"] + 3.0


def test_pass_options_equalize_and_bias_correction() -> None:
    ctx = PassContext(options={"calibration": samples(6), "progress": False})
    q = run_passes(mobilenet_block(), build_pipeline(
        "quantize{equalize=true,bias_correction=true}"), ctx)
    verify_quantized(q)
    g = mobilenet_block()
    s = samples(1, seed=3)[0]
    assert sqnr(run(g, s)["c3"], run(q, s)["c3"]) > 20.0


def test_bias_correction_keeps_the_graph_valid(quantized_demo: object) -> None:
    g = prepare(demo_graph())
    res = quantize_graph(g, calibrate(g, demo_samples(4), progress=False))
    fixed = bias_correct(g, res, demo_samples(3))
    verify(fixed.graph)
    verify_quantized(fixed.graph)


def _ort(model: object) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(),  # type: ignore[attr-defined]
                                providers=["CPUExecutionProvider"])


def test_onnx_export_float_and_qdq(quantized_demo: object) -> None:
    g = prepare(demo_graph())
    f_sess = _ort(export_onnx(g))
    q_sess = _ort(export_onnx(g, quantized_demo))  # type: ignore[arg-type]
    qg = quantized_demo.graph  # type: ignore[attr-defined]
    for s in demo_samples(3, seed=11):
        np.testing.assert_allclose(f_sess.run(None, s)[0], run(g, s)["prob"], rtol=1e-4,
                                   atol=1e-5)
        golden = run(qg, s)["prob"]
        qdq = q_sess.run(None, s)[0]
        assert np.mean(qdq.argmax(-1) == golden.argmax(-1)) >= 0.75
        assert sqnr(golden, qdq) > 20.0


def test_equalize_and_bias_correct_as_passes() -> None:
    """`equalize` keeps the float function (interpreter before and after); `equalize,quantize`
    and `quantize,bias-correct` give the very graphs of quantize's options."""
    ctx = PassContext(options={"calibration": samples(6), "progress": False})
    eq = run_passes(mobilenet_block(), build_pipeline("equalize"), ctx)
    verify(eq)
    assert sum(n.op.name == "mul" for n in eq.nodes) == 2
    for s in samples(2, seed=5):
        np.testing.assert_allclose(run(eq, s)["c3"], run(mobilenet_block(), s)["c3"],
                                   rtol=1e-4, atol=1e-5)
    texts = {}
    for pipe in ("quantize{equalize=true,bias_correction=true}",
                 "equalize,quantize,bias-correct", "equalize,quantize{bias_correction=true}"):
        c = PassContext(options={"calibration": samples(6), "progress": False})
        texts[pipe] = graph_text(run_passes(mobilenet_block(), build_pipeline(pipe), c))
    assert len(set(texts.values())) == 1
    c = PassContext(options={"calibration": samples(6), "progress": False})
    plain = graph_text(run_passes(mobilenet_block(), build_pipeline("equalize,quantize"), c))
    assert plain != texts["equalize,quantize,bias-correct"]  # the biases moved


def test_bias_correct_pass_needs_its_quantize() -> None:
    ctx = PassContext(options={"calibration": samples(2), "progress": False})
    with pytest.raises(PassError, match="bias-correct: needs the int8 graph of a `quantize`"):
        run_passes(mobilenet_block(), build_pipeline("bias-correct"), ctx)
    with pytest.raises(PassError, match="bias-correct: needs the int8 graph"):
        run_passes(mobilenet_block(), build_pipeline("quantize,share-weights,bias-correct"),
                   ctx)
    with pytest.raises(PassError, match="equalize: no calibration data"):
        run_passes(mobilenet_block(), build_pipeline("equalize"), PassContext())
