"""Where the QDQ export (`ocrc compile -t onnx --quant int8`) leaves the golden int8 model:
every quantised value of the int8 graph, compared code for code with the same value of the
QDQ file in onnxruntime (the output of its QuantizeLinear), in graph order.

Run from the repository root, e.g.
`python -m benchmarks.qdq_drift --task ppocr-v2-rec --setting mse+eq+gptq --images 3`.
Per image it prints the first value whose codes differ and, for the values after it, the
fraction of codes that differ and the largest difference; a value the export does not carry
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

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.report import markdown_table
from benchmarks.ocr.tasks import TASKS
from benchmarks.quant_accuracy import CALIB_SET, EVAL_SET, OcrcInt8, parse_setting
from ocrc.compiler.export_onnx import MS_DOMAIN, export_onnx
from ocrc.compiler.ir import Graph, run
from ocrc.compiler.quant import QuantResult


@dataclass(frozen=True)
class Drift:
    """One quantised value on one input: its producing op, the fraction of its codes that
    differ between the golden model and the export, and the largest difference."""

    value: str
    op: str
    frac: float
    top: int


def qdq_drift(g: Graph, res: QuantResult, inputs: Mapping[str, np.ndarray]) -> list[Drift]:
    """Per quantised value of `res.graph` (graph order) that the QDQ export of (g, res) writes
    under its own name, how far the export's codes are from the golden interpreter's."""
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
    got = dict(zip((name for name, _ in qouts.values()), sess.run(None, dict(inputs))))
    out = []

    def hook(node, outs):  # type: ignore[no-untyped-def]  # the interpreter runs in order
        for v, a in zip(node.outputs, outs):
            b = got[qouts[v.name][0]] if v.name in qouts else None
            if b is not None and a.shape == b.shape:
                d = np.abs(a.astype(np.int64) - b.astype(np.int64))
                out.append(Drift(v.name, node.op.name, float(np.mean(d > 0)),
                                 int(d.max(initial=0))))

    run(res.graph, dict(inputs), hook)
    return out


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
        drift = qdq_drift(ocrc.float_graph(x.shape), ocrc.quant(x.shape), {ocrc.input: x})
        first = next((k for k, d in enumerate(drift) if d.frac > 0), None)
        print(f"\nimage {i} ({'x'.join(map(str, x.shape))}): {len(drift)} values compared; "
              + ("every code matches" if first is None else
                 f"first difference at value {first + 1}, `{drift[first].value}`"))
        if first is not None:
            rows = [[str(first + 1 + k), d.value, d.op, f"{100 * d.frac:.3f}%", str(d.top)]
                    for k, d in enumerate(drift[first:first + args.rows])]
            print(markdown_table(["#", "value", "op", "codes differing", "max diff"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
