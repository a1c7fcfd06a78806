"""Observers, calibration (data loading and its errors), the quantize pass on Builder-made
graphs (SQNR thresholds, determinism, the verifier rule) and the per-layer report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ocrc.compiler.cli import main
from ocrc.compiler.errors import IRVerifyError, PassError
from ocrc.compiler.ir import Builder, DType, TensorType, graph_text, run, verify
from ocrc.compiler.passes import PassContext, run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.compiler.quant import (CalibrationError, QuantizeError, calibrate,
                                 load_calibration_set, prepare, quantize_graph)
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.observers import METHODS, Observer
from ocrc.compiler.quant.qparams import qparams_from_range
from ocrc.compiler.quant.layer_methods import parse_layer_methods, resolve_layer_methods
from ocrc.compiler.quant.report import quant_report
from tests.quant.helpers import demo_crnn_compile_args, demo_graph, demo_samples

MIN_SQNR_DB = 20.0  # whole demo network (LSTM included), int8 vs float, at the logits


def sqnr(f: np.ndarray, q: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((f - q) ** 2)))


def test_observer_is_independent_of_batching() -> None:
    rng = np.random.default_rng(0)
    data = [rng.standard_normal(1000) * s for s in (0.1, 1.0, 7.0, 0.5)]
    one, many = Observer(), Observer()
    one.update(np.concatenate(data))
    for d in data:
        many.update(d)
    for m in METHODS:
        assert one.choose_range(m) == many.choose_range(m)
    lo, hi = one.choose_range("minmax")
    for m in METHODS:
        a, b = one.choose_range(m)
        assert lo <= a < b <= hi
    assert one.choose_range("percentile", 99.0)[1] < hi


def test_observer_errors() -> None:
    with pytest.raises(Exception, match="never observed"):
        Observer().choose_range()
    ob = Observer()
    ob.update(np.ones(3))
    with pytest.raises(Exception, match="unknown calibration method"):
        ob.choose_range("magic")
    with pytest.raises(Exception, match="NaN"):
        ob.update(np.array([np.nan]))


def test_calibration_set_loading_and_errors(tmp_path: Path) -> None:
    g = demo_graph()
    good = demo_samples(3)
    d = tmp_path / "dir"
    d.mkdir()
    for i, s in enumerate(good):
        np.save(d / f"{i:03d}.npy", s["x"])
    loaded = load_calibration_set(d, g)
    assert [np.array_equal(a["x"], b["x"]) for a, b in zip(loaded, good)] == [True] * 3
    np.savez(tmp_path / "c.npz", **{f"s{i}": s["x"] for i, s in enumerate(good)})
    assert len(load_calibration_set(tmp_path / "c.npz", g)) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no .npy files"):
        load_calibration_set(empty, g)
    np.savez(tmp_path / "bad.npz", a=np.zeros((1, 3, 8, 15), np.float32))
    with pytest.raises(CalibrationError, match=r"shape \[1, 3, 8, 15\].*expects \[1, 3, 8, 16\]"):
        load_calibration_set(tmp_path / "bad.npz", g)
    with pytest.raises(CalibrationError, match="expected a directory"):
        load_calibration_set(tmp_path / "nothing.txt", g)
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(g, [], progress=False)
    with pytest.raises(CalibrationError, match="the model takes"):
        calibrate(g, [{"y": good[0]["x"]}], progress=False)


def test_quantized_graph_tracks_the_float_graph(quantized_demo: object) -> None:
    res = quantized_demo
    q = res.graph  # type: ignore[attr-defined]
    verify(q)
    verify_quantized(q)
    g = demo_graph()
    for s in demo_samples(3, seed=7):
        f, o = run(g, s)["prob"], run(q, s)["prob"]
        assert sqnr(f, o) > MIN_SQNR_DB
        assert np.mean(f.argmax(-1) == o.argmax(-1)) >= 0.75


def test_quantize_is_deterministic() -> None:
    texts = []
    for _ in range(2):
        g = prepare(demo_graph())
        texts.append(graph_text(quantize_graph(g, calibrate(g, demo_samples(3),
                                                            progress=False)).graph))
    assert texts[0] == texts[1]


def test_pass_through_the_pass_manager_and_its_errors() -> None:
    ctx = PassContext(options={"calibration": demo_samples(3), "progress": False})
    q = run_passes(demo_graph(), build_pipeline("float,quantize{method=percentile}"), ctx)
    verify_quantized(q)
    assert "quant_result" in ctx.options
    with pytest.raises(PassError, match="no calibration data"):
        run_passes(demo_graph(), build_pipeline("quantize"), PassContext())
    with pytest.raises(PassError, match="method"):
        run_passes(demo_graph(), build_pipeline("quantize{method=magic,calib=synthetic:1}"),
                   PassContext())


def test_verifier_rule_finds_a_float_op_inside() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (2, 3)))
    q = b.op("quantize", x, scale=0.1, zp=0)
    d = b.op("dequantize", q, scale=0.1, zp=0)
    s = b.op("sigmoid", d)
    q2 = b.op("quantize", s, scale=0.01, zp=0)
    b.output(b.op("dequantize", q2, scale=0.01, zp=0))
    verify_quantized(b.graph)  # float ops between regions are legal edges here
    b2 = Builder()
    x = b2.input("x", TensorType(DType.F32, (2, 3)))
    q = b2.op("quantize", x, scale=0.1, zp=0)
    bad = b2.op("add", q, q)  # an int op is fine...
    b2.output(b2.op("cast", bad, to="f32"))  # ...a float result inside the region is not
    with pytest.raises(IRVerifyError, match="float op between the input quantize"):
        verify_quantized(b2.graph)


def test_unsupported_layers_are_named() -> None:
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4)))
    y = b.op("div", x, x, name="Div_7")
    b.output(b.op("relu", y))
    g = prepare(b.graph)
    with pytest.raises(QuantizeError, match="Div_7"):
        quantize_graph(g, calibrate(g, [{"x": np.ones((1, 4), np.float32)}], progress=False))


def test_report_is_worst_first_and_json(tmp_path: Path, quantized_demo: object) -> None:
    g = prepare(demo_graph())
    rep = quant_report(g, quantized_demo, demo_samples(2, seed=3))  # type: ignore[arg-type]
    assert rep.rows and rep.rows == sorted(rep.rows, key=lambda r: (r.sqnr_entire, r.value))
    assert {r.op for r in rep.rows} >= {"qconv", "qlstm", "qdense", "lut"}
    assert all(r.cos_single > 0.9 for r in rep.rows)
    rep.write(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["modes"] == ["entire", "single"] and len(data["layers"]) == len(rep.rows)
    assert "SQNR entire" in rep.table(3)


def test_layer_methods_override_only_their_values() -> None:
    g = prepare(demo_graph())
    table = calibrate(g, demo_samples(3), progress=False)
    base = quantize_graph(g, table, "mse")
    over = quantize_graph(g, table, "mse", layer_methods={"c1": "minmax", "hs": "entropy"})
    for name, method in (("c1", "minmax"), ("hs", "entropy")):
        want = qparams_from_range(*table.observers[name].choose_range(method))
        assert over.qparams[name] == want != base.qparams[name]
    changed = {k for k in base.qparams if base.qparams[k] != over.qparams[k]}
    # gap feeds only hs's table: its range is clipped where that table is flat at hs's scale
    assert changed == {"c1", "hs", "gap"}
    verify_quantized(over.graph)


def test_an_int16_table_output_keeps_its_int8_input_range() -> None:
    """gap (int8) feeds only hs's table; with hs in int16 the table counts as flat at the
    step hs would have in int8, so gap keeps the all-int8 range instead of widening to where
    hard_sigmoid changes by one int16 code."""
    g = prepare(demo_graph())
    table = calibrate(g, demo_samples(3), progress=False)
    base = quantize_graph(g, table, "mse")
    wide = quantize_graph(g, table, "mse", int16=("hs",))
    assert wide.qparams["hs"].bits == 16 and wide.qparams["gap"].bits == 8
    assert wide.qparams["gap"] == base.qparams["gap"]
    lo, hi = table.observers["gap"].choose_range("mse")
    assert base.qparams["gap"] != qparams_from_range(lo, hi)  # the clip is in effect
    verify_quantized(wide.graph)


def test_layer_methods_resolve_layer_names_and_report_mistakes() -> None:
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 2, 4, 4)))
    w = b.const(rng.standard_normal((3, 2, 1, 1)).astype(np.float32))
    b.output(b.op("conv", x, w, act="silu", name="L1", out_name="y"))
    g = prepare(b.graph)  # the conv and its silu, both named L1
    assert resolve_layer_methods(g, {"L1": "mse"}) == {"y.conv": "mse", "y": "mse"}
    assert resolve_layer_methods(g, {"x": "entropy"}) == {"x": "entropy"}
    with pytest.raises(QuantizeError, match="'L2' is neither a layer nor a value.*L1"):
        resolve_layer_methods(g, {"L2": "mse"})
    assert parse_layer_methods("") == {}
    assert parse_layer_methods("a/b:mse+c:0:minmax") == {"a/b": "mse", "c:0": "minmax"}
    with pytest.raises(QuantizeError, match="is not NAME:METHOD"):
        parse_layer_methods("L1")
    with pytest.raises(QuantizeError, match="method 'magic' of 'L1'"):
        parse_layer_methods("L1:magic")
    ctx = PassContext(options={"calibration": demo_samples(3), "progress": False})
    q = run_passes(demo_graph(), build_pipeline(
        "float,quantize{method=mse,layer_methods=c1:minmax}"), ctx)
    verify_quantized(q)
    with pytest.raises(QuantizeError, match="'nope' is neither"):
        run_passes(demo_graph(), build_pipeline(
            "quantize{layer_methods=nope:mse,calib=synthetic:1}"), PassContext())


def test_cli_range_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = demo_crnn_compile_args(tmp_path, 3)
    assert main(base + ["--quant-method", "percentile", "-o", str(tmp_path / "p.ir")]) == 0
    text = (tmp_path / "p.ir").read_text()
    first = re.search(r'qconv\(.*loc\("([^"]+)"\)', text)
    assert first is not None
    assert main(base + ["--quant-method", "percentile", "--quant-percentile", "99",
                        "-o", str(tmp_path / "p99.ir")]) == 0
    a, b = np.load(tmp_path / "p.ir.npz"), np.load(tmp_path / "p99.ir.npz")
    assert any(not np.array_equal(a[k], b[k]) for k in a.files)
    assert main(base + ["--quant-method", "percentile", "--quant-layer-method",
                        f"{first.group(1)}=minmax", "-o", str(tmp_path / "l.ir")]) == 0
    c = np.load(tmp_path / "l.ir.npz")
    assert sorted(k for k in a.files if not np.array_equal(a[k], c[k]))  # some layer moved
    capsys.readouterr()
    for bad, msg in ((["--quant-percentile", "40"], "expected a percentile in (50, 100]"),
                     (["--quant-layer-method", "Conv_0"], "expected LAYER=METHOD"),
                     (["--quant-layer-method", "Conv_0=magic"], "method 'magic' is not one"),
                     (["--quant-layer-method", "nope=mse"], "'nope' is neither a layer")):
        assert main(base + bad + ["-o", str(tmp_path / "bad.ir")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "bad.ir").exists()
    assert main(["compile", str(tmp_path / "demo.onnx"), "--quant-percentile", "99"]) == 2
    assert "needs --quant int8" in capsys.readouterr().err


def test_cli_equalize_and_bias_correction_run_as_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = demo_crnn_compile_args(tmp_path, 3)
    dump = tmp_path / "dump"
    assert main(base + ["--quant-equalize", "--quant-bias-correction", "--dump-ir", str(dump),
                        "-o", str(tmp_path / "m.ir")]) == 0
    steps = [p.name.split("-", 1)[1] for p in sorted(dump.glob("*.ir"))]
    i = steps.index("equalize.ir")
    assert steps[i + 1:] == ["quantize.ir", "bias-correct.ir"]
    q, bc = (np.load(dump / f"{i + k:02d}-{steps[i + k]}.npz") for k in (1, 2))
    moved = [k for k in q.files if k.endswith(".bias") and not np.array_equal(q[k], bc[k])]
    assert moved and all(np.array_equal(q[k], bc[k]) for k in q.files
                         if not k.endswith(".bias"))  # only biases change
    capsys.readouterr()
    for flag in ("--quant-equalize", "--quant-bias-correction", "--quant-gptq"):
        assert main(["compile", str(tmp_path / "demo.onnx"), flag]) == 2
        assert f"{flag} needs --quant int8" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "demo.onnx"), "--quant-method", "mse"]) == 2
    assert "--quant-method needs --quant int8" in capsys.readouterr().err
