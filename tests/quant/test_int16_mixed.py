"""Mixed precision (docs/quantization.md §8) on the demo graph: the int16 plans (none, all, names,
auto with its threshold and budget), the verifier rule, the text round trip of i16/i64
constants, FileCheck of a small mixed graph, the QDQ export in onnxruntime, the NPU backend's
bit-exact int16 programs (VM == interpreter), the CLI options, and method=auto."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.cli import main
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import Builder, DType, TensorType, parse_graph, print_graph, run
from ocrc.compiler.quant import CalibTable, QuantizeError, calibrate, prepare, quantize_graph
from ocrc.compiler.quant.checks import verify_quantized
from ocrc.compiler.quant.mixed import Int16Plan, quantize_mixed, select_int16
from ocrc.runtime.program import load_program
from ocrc.runtime.target import load_target
from tests.quant.helpers import demo_crnn_compile_args, demo_graph, demo_samples

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def calibrated() -> tuple[object, CalibTable, list[dict[str, np.ndarray]]]:
    g = prepare(demo_graph())
    samples = demo_samples(6)
    return g, calibrate(g, samples, progress=False), samples


def sqnr(f: np.ndarray, q: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(f.astype(np.float64) ** 2) / np.sum((f - q) ** 2)))


def logits_sqnr(g: object, res: object, n: int = 3) -> float:
    """Mean SQNR of the dequantised logits against the float ones."""
    outs = []
    for s in demo_samples(n, seed=11):
        f, q = {}, {}
        run(g, s, lambda nd, o: f.update({v.name: a for v, a in zip(nd.outputs, o)}))
        run(res.graph, s, lambda nd, o: q.update(  # type: ignore[attr-defined]
            {v.name: a for v, a in zip(nd.outputs, o)}))
        outs.append(sqnr(f["logits"], res.qparams["logits"].dequantize(q["logits"])))  # type: ignore
    return float(np.mean(outs))


def i16_values(qg: object) -> set[str]:
    return {v.name for n in qg.nodes if n.op.name != "const" for v in n.outputs  # type: ignore
            if v.type.dtype == DType.I16 and n.op.name != "qlstm"}


def test_all_keeps_every_own_value_int16_and_helps(calibrated) -> None:  # type: ignore
    g, table, samples = calibrated
    res8 = quantize_graph(g, table)
    res, plan = quantize_mixed(g, table, "all", samples[:4])
    verify_quantized(res.graph)
    assert set(plan.values) == set(res.int16)
    # own parameters: convs, tables, adds, pools, concat and the input; not the LSTM results
    assert {"x", "c1", "c2", "gap", "hs", "se", "cat", "logits"} <= set(plan.values)
    assert not {"Y", "Yh", "y2", "rs"} & set(plan.values)
    assert {"p", "rs", "tr"} <= i16_values(res.graph)  # inherited through max pool / reshapes
    assert "tr" in res.narrowed  # the LSTM reads an int8 rescale of its int16 input
    assert plan.macs_int16 > 0 and plan.cost > 1.0
    assert logits_sqnr(g, res) > logits_sqnr(g, res8)


def test_names_and_errors(calibrated) -> None:  # type: ignore
    g, table, samples = calibrated
    plan = select_int16(g, table, "hs+c1", samples[:2])
    assert set(plan.values) == {"gap", "hs", "x", "c1"}  # a layer's inputs and results
    assert plan.layers == ["hs", "c1"]
    with pytest.raises(QuantizeError, match="'Y' is not a layer or value"):
        select_int16(g, table, "Y", samples[:2])
    assert select_int16(g, table, "none") == Int16Plan()
    with pytest.raises(QuantizeError, match="needs calibration samples"):
        select_int16(g, table, "auto")


def test_auto_threshold_budget_and_cost_order(calibrated) -> None:  # type: ignore
    g, table, samples = calibrated
    assert select_int16(g, table, "auto", samples[:4], threshold=0.0).values == []
    plan = select_int16(g, table, "auto", samples[:4], threshold=40.0)
    failing = {v for v, db in plan.sqnr.items() if db < 40.0}
    assert plan.layers and failing
    assert all(plan.sqnr.get(layer, 0.0) < 40.0 or layer not in plan.sqnr
               for layer in plan.layers)
    everything = select_int16(g, table, "auto", samples[:4], threshold=99.0)
    assert len(everything.layers) > len(plan.layers)
    assert everything.cost >= plan.cost
    free = select_int16(g, table, "auto", samples[:4], threshold=99.0, budget=0.0)
    assert free.cost == 1.0 and free.layers  # only layers without int16 MAC work
    # cheapest first: the layers a zero budget admits come first in the unlimited plan
    assert everything.layers[:len(free.layers)] == free.layers


def test_text_round_trip_of_int16_graph(calibrated) -> None:  # type: ignore
    g, table, samples = calibrated
    res, _ = quantize_mixed(g, table, "all", samples[:2])
    text, blobs = print_graph(res.graph)
    assert "bits = 16" in text and "y_bits = 16" in text
    back = parse_graph(text, blobs)
    assert print_graph(back)[0] == text
    consts = [n.attrs["value"] for n in back.nodes if n.op.name == "const"]
    assert any(c.dtype == np.int16 for c in consts) and any(c.dtype == np.int64 for c in consts)
    for s in demo_samples(2, seed=4):
        a, b = run(res.graph, s), run(back, s)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_small_int16_constants_print_inline() -> None:
    bld = Builder()
    x = bld.input("x", TensorType(DType.I16, (4,)))
    t = bld.const(np.array([-32768, -1, 0, 32767], np.int16), "t")
    bld.output(bld.op("qmul", x, t, mult=1 << 30, shift=30, y_bits=16, lo=-32768, hi=32767))
    text, blobs = print_graph(bld.graph)
    assert not blobs and "-32768" in text and "i16[4]" in text
    back = parse_graph(text)
    assert print_graph(back)[0] == text
    assert back.nodes[0].attrs["value"].dtype == np.int16


def test_filecheck_mixed_graph() -> None:
    path = HERE / "int16_mixed.ir"
    cmd = (f"{shlex.quote(sys.executable)} -m ocrc.compiler.cli opt {shlex.quote(str(path))} "
           f"-p 'quantize{{calib=synthetic:4,int16=c}}' | {shlex.quote(sys.executable)} "
           f"-m filecheck {shlex.quote(str(path))}")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_qdq_export_runs_in_onnxruntime(calibrated) -> None:  # type: ignore
    g, table, samples = calibrated
    res, _ = quantize_mixed(g, table, "all", samples[:2])
    model = export_onnx(g, res)
    assert any(n.domain == "com.microsoft" and n.op_type == "QuantizeLinear"
               for n in model.graph.node)
    sess = ort.InferenceSession(model.SerializeToString())
    for s in demo_samples(3, seed=7):
        ours = run(res.graph, s)["prob"]
        np.testing.assert_allclose(sess.run(None, s)[0], ours, atol=0.02)


@pytest.mark.parametrize("spec", ["hs", "all", "c2+cat"])
def test_npu_backend_runs_int16_bit_exact(calibrated, spec: str) -> None:  # type: ignore
    """Every op kind of the demo graph (conv, tables, residual add, pools, the SE gate's mul,
    concat, the rescale before the LSTM, dense) with int16 activations compiles for the NPU and
    the VM equals the interpreter bit for bit; a target without mac.int16 refuses."""
    g, table, samples = calibrated
    res, _ = quantize_mixed(g, table, spec, samples[:2])
    prog = compile_program(res.graph, load_target("npu")).program
    for s in demo_samples(2, seed=5):
        ref = run(res.graph, s)
        out, _ = run_program(prog, s)
        for k, want in ref.items():
            np.testing.assert_array_equal(out[k], want)
    with pytest.raises(UnsupportedOpError, match="int16 activations need a target with "
                       "mac.int16"):
        compile_program(res.graph, load_target("npu-lite"))


def test_method_auto_chooses_per_value(calibrated) -> None:  # type: ignore
    g, table, _ = calibrated
    res = quantize_graph(g, table, "auto")
    verify_quantized(res.graph)
    assert res.methods and set(res.methods.values()) <= {"minmax", "percentile", "entropy",
                                                         "mse"}
    for name, m in res.methods.items():
        ob = table.observers[name]
        chosen = ob.hist_mse(*ob.choose_range(m))
        assert all(chosen <= ob.hist_mse(*ob.choose_range(k)) for k in
                   ("minmax", "percentile", "entropy", "mse"))


def test_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = demo_crnn_compile_args(tmp_path, 3)
    rng = np.random.default_rng(0)
    assert main(base + ["--quant-int16", "all", "-o", str(tmp_path / "m.ir")]) == 0
    err = capsys.readouterr().err
    assert "mixed precision:" in err and "MAC cycles" in err
    assert "y_bits = 16" in (tmp_path / "m.ir").read_text()
    assert main(base + ["--quant-int16", "all", "--target-config", "npu-lite", "-o",
                        str(tmp_path / "x.ir")]) == 2
    assert "declares no int16 MAC mode" in capsys.readouterr().err
    assert main(base + ["--quant-int16", "auto", "--target-config", "npu-lite", "-o",
                        str(tmp_path / "y.ir")]) == 0  # a warning; stays int8
    assert "y_bits = 16" not in (tmp_path / "y.ir").read_text()
    assert main(base + ["--quant-int16", "all", "-t", "npu", "-o", str(tmp_path / "m.npu")]) == 0
    assert load_program(tmp_path / "m.npu").inputs[0].dtype == "int16"
    capsys.readouterr()
    # auto measures the layers (quant_report) of the demo CRNN, whose LSTM leaves Y_h/Y_c
    # unnamed, then compiles for the NPU
    assert main(base + ["--quant-int16", "auto", "-t", "npu", "-o", str(tmp_path / "a.npu")]) == 0
    np.save(tmp_path / "x.npy", rng.random((1, 1, 32, 32)).astype(np.float32))
    assert main(["run", str(tmp_path / "m.npu"), "--input", f"image={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "out.npz")]) == 0
    assert main(["compile", str(tmp_path / "demo.onnx"), "--quant-int16", "auto"]) == 2
    assert "needs --quant int8" in capsys.readouterr().err
    assert main(base + ["--int16-threshold", "20", "-o", str(tmp_path / "z.ir")]) == 2
    capsys.readouterr()
    assert main(base + ["--quant-int16", "front", "-o", str(tmp_path / "f.ir")]) == 2
    assert "front needs a MAC-cost budget" in capsys.readouterr().err
    assert main(base + ["--quant-int16", "front", "--int16-budget", "1", "-o",
                        str(tmp_path / "f.ir")]) == 0
    assert "y_bits = 16" in (tmp_path / "f.ir").read_text()


def test_front_takes_layers_in_graph_order_within_the_budget(calibrated) -> None:  # type: ignore
    g, table, _ = calibrated
    with pytest.raises(QuantizeError, match="front needs a MAC-cost budget"):
        select_int16(g, table, "front")
    small = select_int16(g, table, "front", budget=1.0)
    big = select_int16(g, table, "front", budget=10.0)
    assert small.layers and small.cost <= 2.0 and big.cost <= 11.0
    assert len(big.layers) > len(small.layers) and big.cost > small.cost
    order = [layer or v for v, layer in quantize_graph(g, table).layers]
    for plan in (small, big):  # in graph order
        assert [order.index(x) for x in plan.layers] == sorted(order.index(x)
                                                                for x in plan.layers)
    everything = select_int16(g, table, "all")
    assert set(big.values) <= set(everything.values)
