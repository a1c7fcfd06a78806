"""Where the QDQ export (`ocrc compile -t onnx --quant int8`) leaves the golden int8 model:
every quantised value of the int8 graph, compared code for code with the same value of the
QDQ file in onnxruntime (the output of its QuantizeLinear), in graph order.

Run from the repository root, e.g.
`python -m benchmarks.qdq_drift --task ppocr-v2-rec --setting mse+eq+gptq --images 3`.
Per image it prints the first value whose codes differ and, for the values after it, the
fraction of codes that differ and the largest difference; when that first value is a conv's or
dense's, the exact value the golden model rounds at each differing code, its distance to a
rounding tie and float32's spacing there (`explain_mac`); a value the export does not carry
under its own name (an LSTM's internals, a narrowed int16 value) is skipped. Nothing is written.
The export rounds in float where the golden model uses fixed point (docs/quantization.md §6), so
single-code differences appear wherever a float result lands within float32 rounding of a
boundary, and grow with depth.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.report import markdown_table
from benchmarks.ocr.tasks import TASKS
from benchmarks.quant_accuracy import CALIB_SET, EVAL_SET, OcrcInt8, parse_setting
from ocrc.compiler.export_onnx import MS_DOMAIN, export_onnx
from ocrc.compiler.ir import Graph, Node, run
from ocrc.compiler.quant import QuantResult


@dataclass(frozen=True)
class Drift:
    """One quantised value on one input: its producing op, the fraction of its codes that
    differ between the golden model and the export, and the largest difference."""

    value: str
    op: str
    frac: float
    top: int


@dataclass(frozen=True)
class Element:
    """One differing code of a qconv/qdense output: where, the golden and exported codes, the
    exact value the golden model rounds (acc * mult * 2**-shift + zero point), its distance to
    the nearest rounding tie (k + 0.5) and float32's spacing at that value."""

    index: tuple[int, ...]
    golden: int
    export: int
    exact: Fraction
    from_tie: float
    ulp32: float


def _patch(x: np.ndarray, w: np.ndarray, a: Mapping[str, Any], idx: tuple[int, ...]
           ) -> tuple[np.ndarray, np.ndarray]:
    """(input codes under the kernel, its weights) of conv output element idx = (n, c, oh, ow);
    the input is padded with its zero point (padding contributes 0)."""
    n, c, oh, ow = idx
    m, cin, kh, kw = w.shape
    g0 = (c // (m // a["group"])) * cin
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["strides"], a["dilations"], a["pads"]
    xp = np.pad(x[n, g0:g0 + cin].astype(np.int64), ((0, 0), (pt, pb), (pl, pr)),
                constant_values=a["x_zp"])
    taps = xp[:, oh * sh:oh * sh + (kh - 1) * dh + 1:dh, ow * sw:ow * sw + (kw - 1) * dw + 1:dw]
    return taps, w[c].astype(np.int64)


def explain_mac(node: Node, vals: Mapping[str, np.ndarray], export: np.ndarray,
                limit: int = 3) -> list[Element]:
    """The first `limit` codes of a qconv/qdense output where the export differs from the
    golden model, each with the exact value both round (module docstring)."""
    y = vals[node.outputs[0].name]
    x, w, bias, mult, shift = (vals[v.name] for v in node.inputs[:5])  # type: ignore[union-attr]
    a = node.all_attrs
    out = []
    for idx in (tuple(int(i) for i in row) for row in np.argwhere(y != export)[:limit]):
        if node.op.name == "qconv":
            c, (taps, wc) = idx[1], _patch(x, w, a, idx)
        else:
            c, taps, wc = idx[-1], x[idx[:-1]].astype(np.int64), w[idx[-1]].astype(np.int64)
        acc = int(((taps - a["x_zp"]) * wc).sum())
        acc += int(bias[c])
        exact = Fraction(acc * int(mult[c]), 2 ** int(shift[c])) + a["y_zp"]
        tie = exact.numerator // exact.denominator + Fraction(1, 2)
        out.append(Element(idx, int(y[idx]), int(export[idx]), exact, float(abs(exact - tie)),
                           float(abs(np.spacing(np.float32(float(exact - a["y_zp"])))))))
    return out


def _golden_and_export(g: Graph, res: QuantResult, inputs: Mapping[str, np.ndarray]
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                  dict[str, Node]]:
    """Every value of the golden run (by name), the export's quantised codes (by value name)
    and each golden value's producing node."""
    model = export_onnx(g, res)
    qouts = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0].endswith(".QuantizeLinear"):
            dtype = onnx.TensorProto.INT16 if n.domain == MS_DOMAIN else onnx.TensorProto.INT8
            qouts[n.output[0].removesuffix(".QuantizeLinear")] = (n.output[0], dtype)
    del model.graph.output[:]
    for name, dtype in qouts.values():
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(qouts, sess.run(None, dict(inputs))))
    vals: dict[str, np.ndarray] = dict(inputs)
    nodes: dict[str, Node] = {}

    def hook(node, outs):  # type: ignore[no-untyped-def]
        for v, arr in zip(node.outputs, outs):
            vals[v.name], nodes[v.name] = arr, node

    run(res.graph, dict(inputs), hook)
    return vals, got, nodes


def drift_of(res: QuantResult, vals: Mapping[str, np.ndarray],
             got: Mapping[str, np.ndarray]) -> list[Drift]:
    """Per golden value (graph order) the export carries under its own name, with the same
    shape: the fraction of its codes that differ and the largest difference."""
    out = []
    for n in res.graph.nodes:
        for v in n.outputs:
            a, b = vals.get(v.name), got.get(v.name)
            if a is not None and b is not None and a.shape == b.shape:
                d = np.abs(a.astype(np.int64) - b.astype(np.int64))
                out.append(Drift(v.name, n.op.name, float(np.mean(d > 0)),
                                 int(d.max(initial=0))))
    return out


def qdq_drift(g: Graph, res: QuantResult, inputs: Mapping[str, np.ndarray]) -> list[Drift]:
    """Per quantised value of `res.graph` (graph order) that the QDQ export of (g, res) writes
    under its own name, how far the export's codes are from the golden interpreter's."""
    vals, got, _ = _golden_and_export(g, res, inputs)
    return drift_of(res, vals, got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="ddddocr", choices=list(TASKS))
    ap.add_argument("--setting", default="mse+eq+gptqplain",
                    help="as quant_accuracy's --settings (one)")
    ap.add_argument("--images", type=int, default=3, help="the first N clean images")
    ap.add_argument("--rows", type=int, default=8, help="values shown after the first drift")
    args = ap.parse_args(argv)
    method, eq, int16, threshold, gptq, bc = parse_setting(args.setting)
    task = TASKS[args.task]()
    ocrc = OcrcInt8(task, method, eq, int16, threshold, gptq, bc)
    ocrc.calibrate([task.preprocess(s.image) for s in load_dataset(CALIB_SET)])
    for i, s in enumerate(load_dataset(EVAL_SET)[:args.images]):
        x = task.preprocess(s.image)
        res = ocrc.quant(x.shape)
        vals, got, nodes = _golden_and_export(ocrc.float_graph(x.shape), res, {ocrc.input: x})
        drift = drift_of(res, vals, got)
        first = next((k for k, d in enumerate(drift) if d.frac > 0), None)
        print(f"\nimage {i} ({'x'.join(map(str, x.shape))}): {len(drift)} values compared; "
              + ("every code matches" if first is None else
                 f"first difference at value {first + 1}, `{drift[first].value}`"))
        if first is not None:
            rows = [[str(first + 1 + k), d.value, d.op, f"{100 * d.frac:.3f}%", str(d.top)]
                    for k, d in enumerate(drift[first:first + args.rows])]
            print(markdown_table(["#", "value", "op", "codes differing", "max diff"], rows))
            node = nodes[drift[first].value]
            if node.op.name in ("qconv", "qdense"):
                for e in explain_mac(node, vals, got[drift[first].value]):
                    print(f"  element {list(e.index)}: golden {e.golden}, export {e.export}; "
                          f"exact value {float(e.exact):.8f} (zero point included), "
                          f"{e.from_tie:.2e} from a rounding tie = "
                          f"{e.from_tie / e.ulp32:.2f} float32 spacings there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
