"""Empirical bias correction: sequential (each layer measured after the earlier corrections),
measured once and applied to graphs of any shape;
it removes a conv's mean output error; `ocrc compile --quant-bias-correction`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ocrc.compiler.cli import main
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, run
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.bias_correction import (apply_bias_errors, bias_correct,
                                                 measure_bias_errors)


def dc_block(width: int) -> Graph:
    """A depthwise 3x3 conv whose kernels nearly sum to zero on a near-constant input (a
    text image's background), then a 1x1 conv: the first conv's output is a small difference of
    large terms, so the int8 rounding of its weights shifts the output's mean (what breaks
    PP-OCRv2 rec's early depthwise convs)."""
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w1 -= w1.mean(axis=(2, 3), keepdims=True) - np.float32(0.01)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4, 6, width)))
    c1 = b.op("conv", x, b.const(w1), b.const(np.zeros(4, np.float32)), group=4,
              pads=(1, 1, 1, 1), out_name="c1")
    w2 = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    b.output(b.op("conv", c1, b.const(w2), out_name="y"))
    return b.graph


def samples(width: int, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (1.0 + 0.02 * rng.standard_normal((1, 4, 6, width))).astype(np.float32)}
            for _ in range(n)]


def mean_error(g: Graph, q: Graph, data: list[dict[str, np.ndarray]]) -> float:
    return float(abs(np.mean([run(g, s)["y"] - run(q, s)["y"] for s in data])))


def test_measured_on_one_shape_corrects_another() -> None:
    g8, g12 = prepare(dc_block(8)), prepare(dc_block(12))
    table = calibrate(g8, samples(8, 8), progress=False)
    errors = measure_bias_errors(g8, quantize_graph(g8, table), samples(8, 8))
    assert set(errors) == {"c1"} and errors["c1"].shape == (4,)  # y has no bias to shift
    plain = quantize_graph(g12, table)
    fixed = apply_bias_errors(quantize_graph(g12, table), errors)
    held_out = samples(12, 4, seed=3)
    assert mean_error(g12, fixed.graph, held_out) < 0.5 * mean_error(g12, plain.graph, held_out)
    # bias_correct is measure + apply on the same graph
    same = bias_correct(g8, quantize_graph(g8, table), samples(8, 8))
    again = apply_bias_errors(quantize_graph(g8, table), errors)
    for k in same.weights:
        np.testing.assert_array_equal(same.weights[k][0], again.weights[k][0])


def test_no_errors_is_the_identity() -> None:
    g = prepare(dc_block(8))
    res = quantize_graph(g, calibrate(g, samples(8, 2), progress=False))
    before = res.graph
    assert apply_bias_errors(res, {}).graph is before


def test_cli_quant_bias_correction(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w -= w.mean(axis=(2, 3), keepdims=True)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=4)]
    g = helper.make_graph(nodes, "bc", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 6, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 6, 8])], [numpy_helper.from_array(w, "w"),
                                                     numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **{f"s{i}": s["x"] for i, s in enumerate(samples(8, 4))})
    outs = []
    for i, flag in enumerate(([], ["--quant-bias-correction"])):
        outs.append(tmp_path / f"q{i}.ir")
        assert main(["compile", str(tmp_path / "m.onnx"), "-t", "ir", "--quant", "int8",
                     "--calib", str(tmp_path / "calib.npz"), *flag, "-o", str(outs[-1])]) == 0
    texts = [o.read_text().splitlines() for o in outs]
    diff = [(a, b) for a, b in zip(*texts) if a != b]
    assert len(texts[0]) == len(texts[1]) and diff and all("y.bias" in a for a, _ in diff)


def table_chain() -> Graph:
    """conv a -> silu (an int8 table) -> conv b: the table's rounding gives each channel of a
    fixed offset, which b sums coherently."""
    rng = np.random.default_rng(11)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4, 6, 8)))
    a = b.op("conv", x, b.const(rng.standard_normal((8, 4, 1, 1)).astype(np.float32)),
             b.const(np.zeros(8, np.float32)), act="silu", out_name="a")
    b.output(b.op("conv", a, b.const(rng.standard_normal((3, 8, 1, 1)).astype(np.float32)),
                  b.const(np.zeros(3, np.float32)), out_name="y"))
    return b.graph


def chain_samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (0.3 + 0.5 * rng.standard_normal((1, 4, 6, 8))).astype(np.float32)}
            for _ in range(n)]


def channel_error(g: Graph, q: Graph, res: object, data: list[dict[str, np.ndarray]],
                  name: str) -> np.ndarray:
    """Mean per-channel error (float clipped to the int8 range) - int8 of value `name`."""
    qp = res.qparams[name]  # type: ignore[attr-defined]
    qv = res.qvalue[name]  # type: ignore[attr-defined]
    errs = []
    got: dict[str, np.ndarray] = {}

    def hook(n, outs):  # type: ignore[no-untyped-def]
        if qv in n.outputs:
            got["q"] = outs[0]
        elif n.outputs[0].name == name:
            got["f"] = outs[0]
    for s in data:
        run(q, s, hook)
        run(g, s, hook)
        errs.append((np.clip(got["f"], *qp.real_range()) - qp.dequantize(got["q"]))
                    .mean(axis=(0, 2, 3)))
    return np.mean(errs, axis=0)


def test_sequential_each_layer_measured_after_the_earlier_corrections() -> None:
    g = prepare(table_chain())
    data = chain_samples(6, 1)
    table = calibrate(g, data, progress=False)
    errors = measure_bias_errors(g, quantize_graph(g, table), data)
    assert set(errors) == {"a.conv", "y"}
    # y's correction is y's mean error once a's correction is in place
    after_a = apply_bias_errors(quantize_graph(g, table), {"a.conv": errors["a.conv"]})
    np.testing.assert_allclose(errors["y"], channel_error(g, after_a.graph, after_a, data, "y"),
                               rtol=1e-5)
    # and on held-out inputs the corrected model's offsets at y are far smaller
    held = chain_samples(4, 2)
    plain = quantize_graph(g, table)
    fixed = apply_bias_errors(quantize_graph(g, table), errors)
    before = np.abs(channel_error(g, plain.graph, plain, held, "y")).mean()
    after = np.abs(channel_error(g, fixed.graph, fixed, held, "y")).mean()
    assert after < 0.5 * before, (before, after)
