"""`affine` and `lrn` have no integer form: `prepare` decomposes them (compiler/quant/decompose.py)
into ops that do. Checked against onnxruntime in float, against the float model in int8, and
bit-exact on the NPU."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import run
from ocrc.compiler.passes import parse_pipeline
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant import prepare
from ocrc.frontend import import_onnx
from onnx import TensorProto, helper, numpy_helper

from tests.backend.helpers import TARGETS, check_exact, quantise


def model() -> onnx.ModelProto:
    """x -> Conv -> Relu -> BatchNormalization -> Relu -> LRN: the BN sits between two relus,
    so it cannot fold into the conv (it stays an `affine`)."""
    rng = np.random.default_rng(0)
    c = 8
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w", rng.standard_normal((c, 3, 3, 3)) * 0.4), ("b", rng.standard_normal(c) * 0.1),
        ("g", rng.uniform(0.5, 2, c)), ("beta", rng.standard_normal(c) * 0.2),
        ("m", rng.standard_normal(c) * 0.1), ("v", rng.uniform(0.5, 2, c)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "g", "beta", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r2"]),
             helper.make_node("LRN", ["r2"], ["y"], size=5, alpha=0.5, beta=0.75, bias=1.5)]
    g = helper.make_graph(nodes, "lrn_affine",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 10, 12])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_prepare_decomposes_and_matches_onnxruntime() -> None:
    m = model()
    g = optimize(import_onnx(m))
    assert {"affine", "lrn"} <= {n.op.name for n in g.nodes}
    p = prepare(g)
    ops = {n.op.name for n in p.nodes}
    assert not ops & {"affine", "lrn"} and {"pow", "conv", "mul"} <= ops
    x = np.random.default_rng(1).random((1, 3, 10, 12), dtype=np.float32)
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = run(p, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_int8_close_to_float_and_bit_exact_on_the_npu() -> None:
    g = optimize(import_onnx(model()))
    qg = quantise(g, n=4)
    assert not {n.op.name for n in qg.nodes} & {"affine", "lrn", "pow", "conv", "mul"}
    x = np.random.default_rng(2).random((1, 3, 10, 12), dtype=np.float32)
    f, q = run(g, {"x": x})["y"], run(qg, {"x": x})["y"]
    sqnr = 10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((q - f) ** 2))
    assert sqnr > 25.0, sqnr
    for t in ("npu", "tiny"):
        check_exact(qg, TARGETS[t]())


def test_bad_ops_option() -> None:
    with pytest.raises(PassError, match="unknown op 'bn'"):
        from ocrc.compiler.ir import Graph
        parse_pipeline("decompose{ops=bn}")[0].run(Graph([], [], []), None)  # type: ignore[arg-type]
