"""How much string agreement a float model keeps under small perturbations (issue 4).

Each row perturbs one thing in the fp32 model and runs it in onnxruntime: every float
initializer rounded to float16; the input rounded to an 8-bit grid spanning the calibration
inputs (what an int8 model's input `quantize` does); the conv/gemm weights of ocrc's optimised
float graph (batch norms folded, as the quantiser sees them) rounded per output channel to a
symmetric B-bit grid, for each B of `--bits`. Nothing else is quantised, so a row is a lower
bound on the error of any quantised model that makes that perturbation: if int8 weights alone
already cost a model its agreement, no activation range method can win it back. The `--gptq`
rows take the int8 weights that `quantize{method=mse,equalize=true,gptq=true}` would use
(equalised, GPTQ-rounded on the calibration inputs, centred or plain: compiler/quant/gptq.py)
with every activation float, run by the reference interpreter: the same bound for the
weights ocrc actually emits.

`--per-layer MODE` (centred or plain) adds a table per model: for each conv and gemm layer, the
agreement when only that layer's weights take their GPTQ int8 values (the rest float), and when
every layer but that one does. It tells whether a model's weight error sits in a few layers
(which a wider weight format there would buy back) or is spread over all of them. Those
graphs are exported to ONNX (`export_onnx` of the float graph) and run by onnxruntime.

    python -m benchmarks.quant_sensitivity [--tasks ddddocr ppocr-v2-rec] [--bits 8 10 12]
                                           [--gptq centred plain] [--per-layer MODE]
                                           [--limit N]

Agreement is printed as in the quantisation table: case-insensitive (as accuracy compares
with labels), exact in parentheses. Prints only; the lead copies the table into RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.harness import OrtRecognizer, recognize
from benchmarks.ocr.metrics import accuracy, agreement, agreement_ci
from benchmarks.ocr.report import markdown_table
from benchmarks.ocr.tasks import TASKS
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import run
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant.gptq import bias_keys, target_keys, targets, with_weights
from ocrc.frontend import import_onnx
from ocrc.frontend.zoo import fetch_model

EVAL_SET, CALIB_SET = "clean", "calib-clean"


def fp16_weights(path: Path) -> bytes:
    """The float model with every float initializer rounded to float16 and back."""
    m = onnx.load(str(path))
    for init in m.graph.initializer:
        a = onnx.numpy_helper.to_array(init)
        if a.dtype == np.float32:
            r = a.astype(np.float16).astype(np.float32)
            init.CopyFrom(onnx.numpy_helper.from_array(r, init.name))
    return m.SerializeToString()


class InputGrid:
    """fp32 with only its input rounded to an 8-bit grid spanning the calibration inputs'
    range (what the int8 model's input `quantize` does, with a min-max range)."""

    def __init__(self, fp32: OrtRecognizer, calib: list[np.ndarray]) -> None:
        lo = min(0.0, min(float(x.min()) for x in calib))
        hi = max(0.0, max(float(x.max()) for x in calib))
        self.fp32, self.scale = fp32, (hi - lo) / 255
        self.zero = np.round(-lo / self.scale) - 128

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(x / self.scale) + self.zero, -128, 127)
        return self.fp32(((q - self.zero) * self.scale).astype(np.float32))


def round_per_channel(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-output-channel rounding to `bits` (codes +-(2**(bits-1) - 1)), the int8
    weight format of docs/quantization.md at other widths."""
    q = 2 ** (bits - 1) - 1
    s = np.abs(w).reshape(w.shape[0], -1).max(1) / q
    s = np.where(s == 0, 1, s).reshape((-1,) + (1,) * (w.ndim - 1))
    return (np.clip(np.rint(w / s), -q, q) * s).astype(np.float32)


class RoundedWeights:
    """ocrc's optimised float graph, exported per input shape, with the weight operand of
    every Conv and Gemm (and MatMul by a constant) rounded to `bits`."""

    def __init__(self, path: Path, bits: int) -> None:
        self.path, self.bits = path, bits
        self.input = onnx.load(str(path), load_external_data=False).graph.input[0].name
        self.sessions: dict[tuple[int, ...], OrtRecognizer] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape not in self.sessions:
            m = export_onnx(optimize(import_onnx(str(self.path), {self.input: list(x.shape)})))
            inits = {i.name: i for i in m.graph.initializer}
            for n in m.graph.node:
                idx = {"Conv": 1, "Gemm": 1, "MatMul": 1}.get(n.op_type)
                if idx is None or n.input[idx] not in inits:
                    continue
                init = inits[n.input[idx]]
                w = onnx.numpy_helper.to_array(init)
                trans = n.op_type == "MatMul" or (n.op_type == "Gemm" and not any(
                    a.name == "transB" and a.i for a in n.attribute))
                r = round_per_channel(w.T if trans else w, self.bits)  # rows = out channels
                init.CopyFrom(onnx.numpy_helper.from_array(r.T if trans else r, init.name))
            self.sessions[x.shape] = OrtRecognizer(m.SerializeToString(), threads=1)
        return self.sessions[x.shape](x)


def gptq_float(task_name: str, calib: list[np.ndarray], mode: str) -> Callable:
    """The float graph of quantize{method=mse,equalize=true,gptq=true[,gptq_center=false]}
    with its GPTQ int8 weights (mode 'centred' or 'plain') and float activations, as a
    recognizer run by the reference interpreter."""
    from benchmarks.quant_accuracy import OcrcInt8  # it imports this module

    model = OcrcInt8(TASKS[task_name](), "mse", True, gptq=mode)
    model.calibrate(calib)
    return lambda x: next(iter(run(model.float_graph(x.shape), {model.input: x}).values()))


class LayerWeights:
    """The float graph the int8 model derives from (prepared, equalised) with the GPTQ int8
    weights (and absorbing biases) of some layers only, exported per input shape and run by
    onnxruntime."""

    def __init__(self, model: object, keys: frozenset[str]) -> None:
        self.model, self.keys = model, keys
        self.sessions: dict[tuple[int, ...], OrtRecognizer] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape not in self.sessions:
            m = self.model
            w = {k: v for k, v in m.gptq_w.items() if k in self.keys}  # type: ignore[attr-defined]
            g = with_weights(m.reference_graph(x.shape), w)  # type: ignore[attr-defined]
            self.sessions[x.shape] = OrtRecognizer(export_onnx(g).SerializeToString())
        return self.sessions[x.shape](x)


def layer_rows(task_name: str, calib: list[np.ndarray], mode: str, images: list,
               fp32: list[str]) -> list[list[str]]:
    """Per conv/gemm layer (graph order): agreement with fp32 when only it has GPTQ int8
    weights, and when all layers but it have them (module docstring)."""
    from benchmarks.quant_accuracy import OcrcInt8  # it imports this module

    task = TASKS[task_name]()
    model = OcrcInt8(task, "mse", True, gptq=mode)
    model.calibrate(calib)
    g = model.reference_graph(task.preprocess(images[0]).shape)
    wkeys, bkeys = target_keys(g), bias_keys(g)
    consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
    every = frozenset(model.gptq_w)
    rows = []
    for n in targets(g):
        w, b = n.operand("w"), n.operand("b")
        mine = frozenset(k for k in (wkeys.get(w), bkeys.get(b)) if k in every)
        if not mine:
            continue
        only = recognize(task, LayerWeights(model, mine), images)
        rest = recognize(task, LayerWeights(model, every - mine), images)
        group = f", {n.attr('group')} groups" if n.op.name == "conv" and n.attr("group") > 1 else ""
        rows.append([task.name, f"{n.name} ({n.op.name}{group})",
                     "x".join(map(str, consts[w].shape)),
                     f"{100 * agreement_ci(only, fp32):.1f}%",
                     f"{100 * agreement_ci(rest, fp32):.1f}%"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def evaluate(task_name: str, bits: list[int], limit: int | None,
             gptq: Sequence[str] = (), per_layer: str = "") -> tuple[list[list[str]],
                                                                   list[list[str]]]:
    task = TASKS[task_name]()
    samples = load_dataset(EVAL_SET)[:limit]
    images, labels = [s.image for s in samples], [s.text for s in samples]
    calib = [task.preprocess(s.image) for s in load_dataset(CALIB_SET)]
    path = fetch_model(task.model)
    fp32_rec = OrtRecognizer(path, threads=1)
    fp32 = recognize(task, fp32_rec, images)
    runs = [("fp32", fp32_rec), ("float16 initializers", OrtRecognizer(fp16_weights(path))),
            ("input on an 8-bit grid (min-max)", InputGrid(fp32_rec, calib))]
    runs += [(f"conv/gemm weights rounded to int{b} per channel", RoundedWeights(path, b))
             for b in bits]
    runs += [(f"conv/gemm weights int8 by {m} GPTQ (equalised, as ocrc emits them)",
              gptq_float(task_name, calib, m)) for m in gptq]
    rows = []
    for name, rec in runs:
        preds = fp32 if rec is fp32_rec else recognize(task, rec, images)
        rows.append([task.name, name, str(len(samples)), f"{100 * accuracy(preds, labels):.1f}%",
                     f"{100 * agreement_ci(preds, fp32):.1f}% "
                     f"({100 * agreement(preds, fp32):.1f}%)"])
        print(" | ".join(rows[-1]), flush=True)
    layers = layer_rows(task_name, calib, per_layer, images, fp32) if per_layer else []
    return rows, layers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 10, 12])
    ap.add_argument("--gptq", nargs="*", default=["centred", "plain"],
                    choices=["centred", "plain"],
                    help="rows with ocrc's GPTQ int8 weights (default: both forms)")
    ap.add_argument("--per-layer", choices=["centred", "plain"], default="",
                    help="also a per-layer table with this GPTQ form's weights")
    ap.add_argument("--limit", type=int, help="evaluate only the first N images")
    args = ap.parse_args(argv)
    if any(not 2 <= b <= 16 for b in args.bits):
        ap.error(f"--bits {args.bits}: each width must be in 2..16")
    t0 = time.perf_counter()
    results = [evaluate(t, args.bits, args.limit, args.gptq, args.per_layer)
               for t in args.tasks]
    rows = [r for rs, _ in results for r in rs]
    layers = [r for _, ls in results for r in ls]
    cmd = "python -m benchmarks.quant_sensitivity" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print(f"\nCommand: `{cmd}` ({time.perf_counter() - t0:.0f} s)\n")
    print(markdown_table(["model", "fp32 perturbed by", "n", "accuracy", "agreement with fp32"],
                         rows))
    if layers:
        print(f"\nPer layer, {args.per_layer} GPTQ int8 weights, every activation float:\n")
        print(markdown_table(["model", "layer", "weight", "agreement, only this layer int8",
                              "agreement, every layer but this int8"], layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
