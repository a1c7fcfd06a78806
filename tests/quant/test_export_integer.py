"""The integer ONNX form of an int8 graph (`-t onnx --onnx-form integer`,
compiler/export_qops.py): onnxruntime runs every op of the golden model in ONNX integer ops and
must produce every one of its codes, bit for bit: int8 and int16 activations, every op the
quantiser emits, odd window geometries, the LSTM in all its forms, the CLI's demo CRNN."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocrc.compiler.cli import main
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.compiler.quant import calibrate, prepare, quantize_graph
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from tests.quant.helpers import (LSTM_DIMS, demo_crnn_compile_args, demo_graph, demo_samples,
                                 lstm_graph)
from tests.quant.test_equalize_export import mobilenet_block
from tests.quant.test_equalize_export import samples as block_samples

INT_TYPES = (DType.I8, DType.I16, DType.I32)


def differing_codes(qg: Graph, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, int]:
    """Per named integer or dequantised value of int8 graph qg ("op: value" -> count), the
    elements where the integer export in onnxruntime differs from the golden interpreter over
    `samples` (every such value made a graph output of the file)."""
    taken = {v.name for v in qg.inputs} | {v.name for v in qg.outputs}
    vals = []
    for n in (n for n in qg.nodes if n.op.name != "const"):
        for v in n.outputs:
            if (v.type.dtype in INT_TYPES or n.op.name == "dequantize") and v.name and \
                    (v in qg.outputs or v.name not in taken):
                taken.add(v.name)
                vals.append(v)
    assert vals, "no integer values"
    g = Graph(list(qg.inputs), list(qg.nodes), list(qg.outputs)
              + [v for v in vals if v not in qg.outputs], qg.name)
    sess = ort.InferenceSession(export_onnx(g).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    bad: dict[str, int] = {}
    got: dict[str, np.ndarray] = {}

    def hook(n, outs):  # type: ignore[no-untyped-def]
        for v, a in zip(n.outputs, outs):
            if v in vals:
                o = got[v.name]
                assert o.dtype == a.dtype and o.shape == a.shape, (v.name, o.dtype, a.dtype)
                k = int(np.sum(o != a))
                if k:
                    key = f"{n.op.name}: {v.name}"
                    bad[key] = bad.get(key, 0) + k
    for s in samples:
        got.update(zip(names, sess.run(None, s)))
        run(g, s, hook)
    return bad


def _quantized(g: Graph, samples: list[dict[str, np.ndarray]],
               int16: Sequence[str] = ()) -> Graph:
    g = prepare(g)
    return quantize_graph(g, calibrate(g, samples, progress=False), int16=tuple(int16)).graph


DEMO_INT16 = [(), ("c1", "c2"), ("gap", "hs", "se"), ("p", "cat"), ("c2.conv", "c2.res"),
              ("x", "c1", "c2.conv", "c2", "c2.res", "p", "hs", "gap", "plus", "se", "cat", "rs",
               "tr", "y2")]


@pytest.mark.parametrize("int16", DEMO_INT16, ids=lambda v: "+".join(v) or "int8")
def test_every_code_of_the_demo_graph(int16: tuple[str, ...]) -> None:
    qg = _quantized(demo_graph(), demo_samples(8), int16)
    ops = {n.op.name for n in qg.nodes}
    assert {"qconv", "lut", "qadd", "qmul", "qconcat", "qmax_pool", "qavg_pool", "qlstm",
            "qdense"} <= ops
    if int16:
        assert any(v.type.dtype == DType.I16 for n in qg.nodes for v in n.outputs)
    assert differing_codes(qg, demo_samples(3, seed=5)) == {}


def test_per_channel_tables_of_an_equalised_graph() -> None:
    g = prepare(mobilenet_block())
    data = block_samples(8)
    eq = equalize(g, channel_absmax(g, data))
    for int16 in ((), ("c1", "c2"), ("x", "c1.conv", "c1", "c2")):
        qg = quantize_graph(eq, calibrate(eq, data, progress=False), int16=int16).graph
        assert any(n.op.name == "lut" and np.ndim(qg.const_value(n.inputs[1])) == 2
                   for n in qg.nodes), "no per-channel table"
        assert differing_codes(qg, block_samples(3, seed=6)) == {}


def _windows_graph(k: int, s: int, p: int, dil: int, group: int, ceil: int, incl: int,
                   act: str, seed: int) -> Graph:
    """conv (stride, pads, dilation, groups, an activation) -> avg pool -> max pool (ceil
    mode) -> a second conv with asymmetric pads, on an odd-sized image."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 4, 13, 11)))
    c1 = b.op("conv", x, b.const((rng.standard_normal((8, 4 // group, k, k)) * 0.4)
                                 .astype(np.float32)),
              b.const((rng.standard_normal(8) * 0.1).astype(np.float32)), strides=(s, s),
              pads=(p, p, p, p), dilations=(dil, dil), group=group, act=act, out_name="c1")
    ap = b.op("avg_pool", c1, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
              ceil_mode=ceil, count_include_pad=incl if not ceil else 0, out_name="ap")
    mp = b.op("max_pool", ap, kernel_shape=(2, 2), strides=(2, 1), pads=(0, 1, 0, 0),
              ceil_mode=1, out_name="mp")
    c2 = b.op("conv", mp, b.const((rng.standard_normal((3, 8, 2, 3)) * 0.3).astype(np.float32)),
              b.const(np.zeros(3, np.float32)), pads=(0, 1, 1, 0), out_name="c2")
    b.output(c2)
    return b.graph


@settings(max_examples=10, deadline=None, derandomize=True)
@given(k=st.sampled_from([1, 3]), s=st.integers(1, 2), p=st.integers(0, 1), dil=st.integers(1, 2),
       group=st.sampled_from([1, 2, 4]), ceil=st.integers(0, 1), incl=st.integers(0, 1),
       act=st.sampled_from(["none", "relu", "silu", "tanh", "hard_swish"]),
       wide=st.sampled_from([(), ("c1",), ("x", "c1", "ap", "mp")]), seed=st.integers(0, 99))
def test_window_geometries(k: int, s: int, p: int, dil: int, group: int, ceil: int, incl: int,
                           act: str, wide: tuple[str, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = [{"x": (rng.standard_normal((1, 4, 13, 11)) * 2).astype(np.float32)}
               for _ in range(5)]
    g = _windows_graph(k, s, p, dil, group, ceil, incl, act, seed)
    qg = _quantized(g, samples[:3], wide)
    assert differing_codes(qg, samples[3:]) == {}


def _lstm_samples(n: int, seed: int, dims: tuple[int, int, int, int] = LSTM_DIMS
                  ) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(dims[:3]) * 1.5).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("direction,states,factored",
                         [("forward", False, False), ("reverse", True, False),
                          ("bidirectional", True, False), ("bidirectional", False, True)])
def test_lstm(direction: str, states: bool, factored: bool) -> None:
    g = lstm_graph(direction, states)
    if factored:
        ctx = PassContext()
        g = run_passes(g, parse_pipeline("lowrank{layers=Y.R:6,multiple=1}"), ctx)
        assert [r.status for r in ctx.options["reports"]["lowrank"]] == ["split"]
    qg = _quantized(g, _lstm_samples(6, 1))
    assert any(n.op.name == "qlstm" for n in qg.nodes)
    assert differing_codes(qg, _lstm_samples(3, 2)) == {}


def test_the_file_is_integer_arithmetic() -> None:
    qg = _quantized(demo_graph(), demo_samples(4))
    model = export_onnx(qg)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"ConvInteger", "MatMulInteger", "Scan", "Gather"} <= ops
    assert not ops & {"Conv", "QLinearConv", "DequantizeLinear", "LSTM", "HardSigmoid",
                      "Sigmoid"}, ops


def test_cli_integer_form_of_the_demo_crnn_equals_the_golden_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ocrc compile -t onnx --quant int8 --onnx-form integer` and `-t ir` of the same model
    and calibration: the file in onnxruntime gives the golden interpreter's logits exactly."""
    base = demo_crnn_compile_args(tmp_path, 4)
    assert main(base + ["-t", "onnx", "--onnx-form", "integer", "-o",
                        str(tmp_path / "i.onnx")]) == 0
    assert main(base + ["-t", "ir", "-o", str(tmp_path / "q.ir")]) == 0
    sess = ort.InferenceSession(str(tmp_path / "i.onnx"), providers=["CPUExecutionProvider"])
    golden = load_ir(tmp_path / "q.ir")
    name = golden.inputs[0].name
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.random((1, 1, 32, 32)).astype(np.float32)
        want = next(iter(run(golden, {name: x}).values()))
        np.testing.assert_array_equal(sess.run(None, {name: x})[0], want)
    # bad options: one line each, exit status 2, nothing written
    capsys.readouterr()
    assert main(base + ["-t", "onnx", "--onnx-form", "qlinear", "-o",
                        str(tmp_path / "x.onnx")]) == 2
    assert "--onnx-form 'qlinear': expected one of qdq, integer" in capsys.readouterr().err
    assert main(base + ["-t", "ir", "--onnx-form", "integer", "-o", str(tmp_path / "x.ir")]) == 2
    assert "applies to -t onnx" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "demo.onnx"), "-t", "onnx", "--onnx-form",
                 "integer", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "add --quant int8" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.ir").exists()
