"""Two-term int8 weights (compiler/quant/split_weights.py): float-equivalent, the int8 model
reads the split layer far closer to float, and the pass/CLI option reaches the NPU program."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ocrc.compiler.cli import main
from ocrc.compiler.ir import Builder, DType, TensorType, run
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.split_weights import split_parts, split_weights
from tests.quant.helpers import demo_graph, demo_samples


def test_split_parts_hi_on_the_int8_grid_lo_the_residual() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3))
    hi, lo = split_parts(w)
    s = np.abs(w.reshape(6, -1)).max(axis=1) / 127
    codes = hi.reshape(6, -1) / s[:, None]
    assert np.allclose(codes, np.rint(codes), atol=1e-9) and np.abs(codes).max() <= 127 + 1e-9
    assert np.allclose(hi + lo, w, atol=1e-12)
    assert np.all(np.abs(lo.reshape(6, -1)) <= s[:, None] / 2 + 1e-12)


def _conv_graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 3, 10, 12)))
    w = b.const(rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    bias = b.const(rng.standard_normal(8).astype(np.float32))
    y = b.op("conv", x, w, bias, pads=(1, 1, 1, 1), out_name="y")
    b.output(b.op("relu", y, out_name="r"))
    return b.graph


def _samples(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 10, 12)).astype(np.float32)} for _ in range(n)]


def _sqnr(f: np.ndarray, q: np.ndarray) -> float:
    return float(10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum()))


def test_split_graph_is_float_equivalent_and_names_its_int16_values() -> None:
    g = prepare(_conv_graph())
    s, keep = split_weights(g, 1)
    assert keep == ["y.hi", "y.lo", "y"]
    assert [n.op.name for n in s.nodes if n.op.name != "const"] == ["conv", "conv", "add",
                                                                   "relu"]
    x = _samples(1)[0]
    assert np.allclose(run(s, x)["r"], run(g, x)["r"], rtol=1e-5, atol=1e-5)
    assert split_weights(g, 0) == (g, [])
    assert split_weights(s, 5)[1] == ["y.hi.hi", "y.hi.lo", "y.hi", "y.lo.hi", "y.lo.lo",
                                      "y.lo"]  # both halves are layers again: deterministic


def test_split_layer_quantises_far_closer_to_float() -> None:
    """The int8 model of the split conv (int16 partial sums) beats the plain int8 conv (int16
    input and output, so only the weights differ) by more than 30 dB at the layer's output."""
    g = prepare(_conv_graph())
    data, x = _samples(4), _samples(1, seed=9)[0]
    f = run(g, x)["r"]
    plain = quantize_graph(g, calibrate(g, data, progress=False), int16=["x", "y", "r"])
    s, keep = split_weights(g, 1)
    split = quantize_graph(s, calibrate(s, data, progress=False), int16=["x", *keep, "r"])
    verify_quantized(split.graph)
    e_plain, e_split = _sqnr(f, run(plain.graph, x)["r"]), _sqnr(f, run(split.graph, x)["r"])
    assert e_plain < 50 and e_split > e_plain + 30


def test_quantize_pass_option_split_weights() -> None:
    g = demo_graph()
    plain = PassContext(options={"calibration": demo_samples(4), "progress": False})
    q0 = run_passes(g, build_pipeline("float,quantize"), plain)
    ctx = PassContext(options={"calibration": demo_samples(4), "progress": False})
    q = run_passes(g, build_pipeline("float,quantize{split_weights=1}"), ctx)
    verify_quantized(q)
    res = ctx.options["quant_result"]
    assert len({"hi", "lo"} & {k.rsplit(".", 1)[-1] for k in res.int16}) == 2
    def macs(h):
        return sum(n.op.name in ("qconv", "qdense") for n in h.nodes)
    assert macs(q) == macs(q0) + 1 and ctx.options["int16_plan"].values == []


def test_cli_quant_split_weights_compiles_and_rejects_a_negative_count(
        tmp_path: Path, capsys) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["y"])]
    gr = helper.make_graph(nodes, "sp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 8, 8])], [w1, w2])
    onnx.save(helper.make_model(gr, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **{f"s{i}": rng.random((1, 3, 8, 8)).astype(np.float32)
                                        for i in range(4)})
    out = tmp_path / "m.ir"
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "ir", "--calib",
                 str(tmp_path / "calib.npz"), "--quant", "int8", "--quant-split-weights", "1",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "%a.hi" in text and "%a.lo" in text
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "ir", "--calib",
                 str(tmp_path / "calib.npz"), "--quant", "int8", "--quant-split-weights", "-1",
                 "-o", str(out)]) == 2
    assert "--quant-split-weights" in capsys.readouterr().err
