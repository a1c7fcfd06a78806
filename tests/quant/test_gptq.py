"""GPTQ weight rounding (compiler/quant/gptq.py): on the quantiser's grid, lower output error
than round-to-nearest, deterministic, only conv/dense weights change."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from ocrc.compiler.cli import main
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, graph_text, run
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.gptq import gptq, gptq_round, gptq_weights
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.qparams import quantize_weights
from tests.quant.helpers import demo_graph, demo_samples


def _correlated(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    return rng.standard_normal((rows, k)) @ mix


def test_gptq_round_is_on_the_grid_and_beats_nearest() -> None:
    rng = np.random.default_rng(0)
    x = _correlated(rng, 512, 48)
    w = rng.standard_normal((16, 48))
    q0, s = quantize_weights(w)
    q = gptq_round(w, x.T @ x, s)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    # Q * s is on the grid quantize_weights computes: it gives back Q and s.
    wq = q.astype(np.float64) * s.reshape(-1, 1)
    q2, s2 = quantize_weights(wq)
    assert np.array_equal(q2, q) and np.allclose(s2, s, rtol=1e-12)
    err_rtn = np.linalg.norm(x @ (w - q0 * s.reshape(-1, 1)).T)
    err_gptq = np.linalg.norm(x @ (w - wq).T)
    assert err_gptq < 0.8 * err_rtn


def test_gptq_round_keeps_pruned_weights_at_zero() -> None:
    """Exact zeros (pruned weights) keep code 0; the error feedback still beats nearest
    rounding of the same sparse weights (without the mask it would fill the zeros)."""
    rng = np.random.default_rng(1)
    x = _correlated(rng, 512, 48)
    w = rng.standard_normal((16, 48))
    w[rng.random(w.shape) < 0.6] = 0.0
    q0, s = quantize_weights(w)
    q = gptq_round(w, x.T @ x, s)
    assert np.all(q[w == 0] == 0)
    wq = q.astype(np.float64) * s.reshape(-1, 1)
    err_rtn = np.linalg.norm(x @ (w - q0 * s.reshape(-1, 1)).T)
    assert np.linalg.norm(x @ (w - wq).T) < err_rtn


def test_gptq_graph_changes_only_mac_weights_and_is_deterministic() -> None:
    g = prepare(demo_graph())
    ws = gptq_weights(g, demo_samples(4))
    # every conv/dense weight, and (centred: the mean error into the bias) each bias
    assert ws and {v.ndim for v in ws.values()} == {1, 2, 4}
    assert sum(v.ndim == 1 for v in ws.values()) == sum(v.ndim > 1 for v in ws.values())
    assert all(np.array_equal(ws[k], v) for k, v in gptq_weights(g, demo_samples(4)).items())
    g2 = gptq(g, demo_samples(4))
    changed = [a.outputs[0].type.rank for a, b in zip(g.nodes, g2.nodes)
               if a.op.name == "const" and not np.array_equal(a.attrs["value"], b.attrs["value"])]
    assert len(changed) == len(ws) and set(changed) <= {1, 2, 4}
    def shape_of(t: str) -> list[str]:  # the text without the constants' values
        return [re.sub(r"dense<[^>]*>", "dense<>", ln) for ln in t.splitlines()[1:]]
    assert shape_of(graph_text(g2)) == shape_of(graph_text(g))
    names = {n.outputs[0].name for n in g.nodes}
    assert names == {n.outputs[0].name for n in g2.nodes}
    s = demo_samples(1, seed=5)[0]
    f, f2 = run(g, s)["prob"], run(g2, s)["prob"]
    assert np.abs(f - f2).max() < 0.1
    q = quantize_graph(g2, calibrate(g2, demo_samples(4), progress=False)).graph
    assert np.isfinite(run(q, s)["prob"]).all()


def test_quantize_pass_option_gptq() -> None:
    ctx = PassContext(options={"calibration": demo_samples(4), "progress": False})
    q = run_passes(demo_graph(), build_pipeline("float,quantize{gptq=true}"), ctx)
    verify_quantized(q)
    plain = PassContext(options={"calibration": demo_samples(4), "progress": False})
    run_passes(demo_graph(), build_pipeline("float,quantize"), plain)
    w_g = ctx.options["quant_result"].weights
    w_p = plain.options["quant_result"].weights
    assert w_g.keys() == w_p.keys()
    assert any(not np.array_equal(w_g[k][0], w_p[k][0]) for k in w_g if k.endswith(".w"))
    with pytest.raises(PassError, match="gptq need calibration samples"):
        run_passes(demo_graph(), build_pipeline("quantize{gptq=true}"),
                   PassContext(options={"calibration": calibrate(
                       prepare(demo_graph()), demo_samples(2), progress=False)}))


def test_cli_quant_gptq_compiles_for_the_npu(tmp_path: Path) -> None:
    """--quant-gptq changes which int8 codes the weights take (the program differs from the
    nearest-rounded one, and from --quant-gptq-plain's: the first conv has a bias to centre)
    and the program runs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "gq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2, b1])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **{f"s{i}": rng.random((1, 3, 8, 8)).astype(np.float32)
                                        for i in range(4)})
    np.save(tmp_path / "x.npy", rng.random((1, 3, 8, 8)).astype(np.float32))
    progs = []
    for i, flag in enumerate(([], ["--quant-gptq"])):
        progs.append(tmp_path / f"p{i}.npu")
        assert main(["compile", str(tmp_path / "m.onnx"), "-t", "npu", "--calib",
                     str(tmp_path / "calib.npz"), *flag, "-o", str(progs[-1]),
                     "--target-config", "npu-lite"]) == 0
    assert progs[0].read_bytes() != progs[1].read_bytes()
    progs.append(tmp_path / "p2.npu")  # --quant-gptq-plain: GPTQ without centring
    assert main(["compile", str(tmp_path / "m.onnx"), "-t", "npu", "--calib",
                 str(tmp_path / "calib.npz"), "--quant-gptq-plain", "-o", str(progs[-1]),
                 "--target-config", "npu-lite"]) == 0
    assert len({p.read_bytes() for p in progs}) == 3
    assert main(["run", str(progs[1]), "--input", f"x={tmp_path / 'x.npy'}"]) == 0


def _dw_graph(w: np.ndarray, bias: bool) -> Graph:
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, w.shape[0], 12, 40)))
    ops = [x, b.const(w.astype(np.float32))]
    if bias:
        ops.append(b.const(np.zeros(w.shape[0], np.float32)))
    b.output(b.op("conv", *ops, pads=(1, 1, 1, 1), group=w.shape[0], out_name="y"))
    return b.graph


def test_gptq_centres_and_moves_the_mean_error_into_the_bias() -> None:
    """A depthwise kernel that is a small difference of large weights over a smooth input far
    from zero (PP-OCRv2's second conv): with a bias to absorb the mean error, centred GPTQ's
    output error is a fraction of plain GPTQ's (which a layer without a bias still gets)."""
    rng = np.random.default_rng(3)
    k = rng.standard_normal((4, 1, 3, 3)) * 40
    k -= k.mean(axis=(2, 3), keepdims=True)  # kernels sum to ~0
    yy, xx = np.mgrid[0:12, 0:40]
    samples = [{"x": (30 + 5 * np.sin(xx / 7 + i) * np.cos(yy / 5 - i)
                      + rng.standard_normal((4, 12, 40)) * 0.05)[None].astype(np.float32)}
               for i in range(6)]
    errs = {}
    for bias in (True, False):
        g = _dw_graph(k, bias)
        g2 = gptq(g, samples[:4])
        errs[bias] = np.mean([np.abs(run(g2, s)["y"] - run(g, s)["y"]).mean()
                              for s in samples[4:]])
        ws = gptq_weights(g, samples[:4])
        assert len(ws) == (2 if bias else 1)
        plain = gptq_weights(g, samples[:4], center=False)  # the bias stays as it was
        assert len(plain) == 1 and plain.keys() <= ws.keys()
    assert errs[True] < 0.5 * errs[False]  # 1.4 vs 4.0; the zero-padded border is most of it
