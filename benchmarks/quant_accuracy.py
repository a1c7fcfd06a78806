"""int8 acceptance benchmark (issue 4): ocrc's all-integer models (convs, LSTM, Gemm) against
fp32, onnxruntime's quantize_static next to them, the QDQ export and the integer ONNX export
against the golden int8 interpreter, and the per-layer error reports.

Run from the repository root: `python -m benchmarks.quant_accuracy` (writes the "Quantisation"
section of benchmarks/RESULTS.md and per-layer JSON reports under benchmarks/out/;
`--no-write` only prints, `--limit N` evaluates the first N images).

Input widths vary per image (ddddocr keeps the aspect ratio), and the IR is static: the model
is imported once per distinct input shape; one calibration table (keyed by value names, which
do not depend on the width) serves every shape. Mixed precision (`--settings mse+eq+int16@30`,
docs/quantization.md §8) chooses its int16 values once, on the most common calibration shape,
and applies them to every shape.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.ocr.datasets import load_dataset
from benchmarks.ocr.harness import OrtRecognizer, recognize
from benchmarks.ocr.metrics import accuracy, agreement, agreement_ci, cer, kept_correct
from benchmarks.ocr.ort_quant import ort_int8_model
from benchmarks.ocr.report import markdown_table, write_section
from benchmarks.quant_sensitivity import InputGrid, fp16_weights
from benchmarks.ocr.shapes import (
    BC_SAMPLES,
    INT16_SAMPLES,
    group_by_shape,
    most_common_shape,
    shared_gptq_weights,
)
from benchmarks.ocr.tasks import TASKS, OcrTask
from ocrc.compiler.export_onnx import export_onnx
from ocrc.compiler.ir import Graph, run
from ocrc.compiler.pipeline import optimize
from ocrc.compiler.quant import CalibTable, QuantResult, calibrate, prepare, quantize_graph
from ocrc.compiler.quant.bias_correction import apply_bias_errors, measure_bias_errors
from ocrc.compiler.quant.equalize import channel_absmax, equalize
from ocrc.compiler.quant.gptq import with_weights
from ocrc.compiler.quant.mixed import DEFAULT_THRESHOLD, Int16Plan, select_int16
from ocrc.compiler.quant.report import quant_report
from ocrc.frontend import import_onnx
from ocrc.frontend.zoo import fetch_model

SECTION = "Quantisation"
EVAL_SET, CALIB_SET = "clean", "calib-clean"
REPORT_SAMPLES = 4
OUT = Path(__file__).parent / "out"


class OcrcInt8:
    """The task's model through ocrc: float passes, prepare, calibration, int8 rewrite; one
    graph per input shape. Callable as a Recognizer running the golden int8 interpreter."""

    def __init__(self, task: OcrTask, method: str, equalize: bool, int16: str = "none",
                 threshold: float = DEFAULT_THRESHOLD, gptq: str = "",
                 bias_correction: bool = False) -> None:
        self.path = fetch_model(task.model)
        self.input = onnx.load(str(self.path), load_external_data=False).graph.input[0].name
        self.method = method
        self.equalize = equalize
        self.int16, self.threshold = int16, threshold
        self.gptq = gptq  # "", "centred" or "plain" (compiler/quant/gptq.py)
        self.gptq_w: dict[str, np.ndarray] = {}
        self.bias_correction = bias_correction
        self.bias_errors: dict[str, np.ndarray] = {}
        self.plan = Int16Plan()
        self.prepared: dict[tuple[int, ...], Graph] = {}
        self.absmax: dict[str, np.ndarray] = {}
        self.floats: dict[tuple[int, ...], Graph] = {}
        self.quants: dict[tuple[int, ...], QuantResult] = {}
        self.qdq: dict[tuple[int, ...], OrtRecognizer] = {}
        self.integer: dict[tuple[int, ...], OrtRecognizer] = {}
        self.table = CalibTable()

    def prepared_graph(self, shape: tuple[int, ...]) -> Graph:
        if shape not in self.prepared:
            g = import_onnx(str(self.path), {self.input: list(shape)})
            self.prepared[shape] = prepare(optimize(g))
        return self.prepared[shape]

    def reference_graph(self, shape: tuple[int, ...]) -> Graph:
        """The prepared (and, with equalize, equalised: float-equivalent) float graph; the
        equalisation statistics come from every calibration shape."""
        g = self.prepared_graph(shape)
        return equalize(g, self.absmax) if self.equalize else g

    def float_graph(self, shape: tuple[int, ...]) -> Graph:
        """The float graph the int8 model derives from: the reference graph, with gptq its
        weights GPTQ-rounded (compiler/quant/gptq.py; one set, from the most common shape)."""
        if shape not in self.floats:
            g = self.reference_graph(shape)
            self.floats[shape] = with_weights(g, self.gptq_w) if self.gptq else g
        return self.floats[shape]

    def calibrate(self, inputs: list[np.ndarray]) -> None:
        by_shape = group_by_shape(inputs, self.input)
        if self.equalize:
            for shape in sorted(by_shape):
                channel_absmax(self.prepared_graph(shape), by_shape[shape], self.absmax)
        if self.gptq:  # one set, from the most common shape (benchmarks/ocr/shapes.py)
            self.gptq_w = shared_gptq_weights(self.reference_graph, by_shape,
                                              center=self.gptq == "centred")
        for shape in sorted(by_shape):
            calibrate(self.float_graph(shape), by_shape[shape], self.table, progress=False)
        if self.int16 != "none":  # front: the threshold slot holds the MAC budget
            shape = most_common_shape(by_shape)
            front = self.int16 == "front"
            self.plan = select_int16(self.float_graph(shape), self.table, self.int16,
                                     by_shape[shape][:INT16_SAMPLES], self.method,
                                     threshold=DEFAULT_THRESHOLD if front else self.threshold,
                                     budget=self.threshold if front else float("inf"))
        if self.bias_correction:  # measured once, on the most common shape, applied to all
            shape = most_common_shape(by_shape)
            self.bias_errors = measure_bias_errors(self.float_graph(shape), self.quant(shape),
                                                   by_shape[shape][:BC_SAMPLES])
            self.quants.clear()

    def quant(self, shape: tuple[int, ...]) -> QuantResult:
        if shape not in self.quants:
            res = quantize_graph(self.float_graph(shape), self.table, self.method,
                                 int16=self.plan.values)
            self.quants[shape] = apply_bias_errors(res, self.bias_errors)
        return self.quants[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return next(iter(run(self.quant(x.shape).graph, {self.input: x}).values()))

    def integer_recognizer(self, x: np.ndarray) -> np.ndarray:
        """The integer ONNX form of the same int8 graph (`--onnx-form integer`), run by
        onnxruntime: the golden model's arithmetic in ONNX integer ops."""
        if x.shape not in self.integer:
            model = export_onnx(self.quant(x.shape).graph)
            self.integer[x.shape] = OrtRecognizer(model.SerializeToString(), threads=1)
        return self.integer[x.shape](x)

    def qdq_recognizer(self, x: np.ndarray) -> np.ndarray:
        """The QDQ export of the same int8 model, run by onnxruntime."""
        if x.shape not in self.qdq:
            model = export_onnx(self.float_graph(x.shape), self.quant(x.shape))
            self.qdq[x.shape] = OrtRecognizer(model.SerializeToString(), threads=1)
        return self.qdq[x.shape](x)


def parse_setting(text: str) -> tuple[str, bool, str, float, str, bool]:
    """METHOD[+eq][+int16[@DB]|+int16all|+int16front@B][+gptq|+gptqplain][+bc] -> (method,
    equalise, int16 spec, threshold (front: the MAC budget B), gptq ("", "centred" or
    "plain"), bias correction)."""
    method, *flags = text.split("+")
    eq, int16, threshold, gptq, bc = False, "none", DEFAULT_THRESHOLD, "", False
    for f in flags:
        if f == "eq":
            eq = True
        elif f == "bc":
            bc = True
        elif f in ("gptq", "gptqplain"):
            gptq = "centred" if f == "gptq" else "plain"
        elif f == "int16all":
            int16 = "all"
        elif f.startswith("int16front@"):
            int16, threshold = "front", float(f.removeprefix("int16front@"))
        elif f.startswith("int16"):
            int16 = "auto"
            if f.startswith("int16@"):
                threshold = float(f.removeprefix("int16@"))
        else:
            raise SystemExit(f"--settings {text!r}: unknown flag {f!r} (eq, int16[@DB], "
                             "int16all, int16front@B, gptq, gptqplain, bc)")
    return method, eq, int16, threshold, gptq, bc


def evaluate(task_name: str, settings: list[str],
             limit: int | None) -> tuple[list[list[str]], str]:
    """fp32 and onnxruntime int8 once, then per (method, equalise) setting the golden int8
    interpreter, its QDQ export and its integer ONNX export; the per-layer report is of the last
    setting."""
    task = TASKS[task_name]()
    samples = load_dataset(EVAL_SET)[:limit]
    labels = [s.text for s in samples]
    calib = [task.preprocess(s.image) for s in load_dataset(CALIB_SET)]
    fp32_rec = OrtRecognizer(fetch_model(task.model), threads=1)
    fp32 = recognize(task, fp32_rec, (s.image for s in samples))
    fp16w = recognize(task, OrtRecognizer(fp16_weights(fetch_model(task.model)), threads=1),
                      (s.image for s in samples))
    grid = recognize(task, InputGrid(fp32_rec, calib), (s.image for s in samples))
    ort8 = recognize(task, OrtRecognizer(ort_int8_model(task, CALIB_SET), threads=1),
                     (s.image for s in samples))
    runs: list[tuple[str, list[str], list[str] | None]] = [
        ("fp32 (onnxruntime)", fp32, None),
        ("noise floor: fp32 with float16-rounded weights", fp16w, None),
        ("noise floor: fp32 with its input on an 8-bit grid (min-max)", grid, None),
        ("ort quantize_static int8 QDQ, LSTM float", ort8, None)]
    mixed = []
    for text in settings:
        method, eq, int16, threshold, gptq, bc = parse_setting(text)
        ocrc = OcrcInt8(task, method, eq, int16, threshold, gptq, bc)
        t0 = time.perf_counter()
        ocrc.calibrate(calib)
        t_cal = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = recognize(task, ocrc, (s.image for s in samples))
        t_run = (time.perf_counter() - t0) / len(samples)
        qdq = recognize(task, ocrc.qdq_recognizer, (s.image for s in samples))
        t0 = time.perf_counter()
        integer = recognize(task, ocrc.integer_recognizer, (s.image for s in samples))
        t_int = (time.perf_counter() - t0) / len(samples)
        label = (f"{method}{', equalised' if eq else ''}{f', {gptq} GPTQ weights' if gptq else ''}"
                 f"{', bias-corrected' if bc else ''}")
        kind = "int8"
        if int16 != "none":
            p = ocrc.plan
            how = {"all": "all", "front": f"front, budget {threshold:g}"}.get(
                int16, f"auto < {threshold:g} dB")
            label += (f", int16 {how}: "
                      f"{len(p.layers)} layers, MAC cycles x{p.cost:.2f}")
            kind = "int8/int16"
            mixed.append(f"{text}: {p.summary()} ({', '.join(p.layers[:12])}"
                         f"{', ...' if len(p.layers) > 12 else ''})")
        runs += [(f"ocrc {kind} golden interpreter, all integer ({label})", ours, None),
                 (f"ocrc QDQ export ({label}) in onnxruntime", qdq, ours),
                 (f"ocrc integer ONNX export ({label}) in onnxruntime", integer, ours)]
    rows = []
    for variant, preds, vs in runs:
        rows.append([task.name, variant, str(len(samples)), f"{100 * accuracy(preds, labels):.1f}%",
                     f"{100 * cer(preds, labels):.2f}%", _agree(preds, fp32),
                     f"{100 * kept_correct(preds, fp32, labels):.1f}%",
                     _agree(preds, vs) if vs is not None else ""])
    OUT.mkdir(exist_ok=True)
    (OUT / f"quant-preds-{task.name}.json").write_text(json.dumps(
        {"labels": labels, "runs": {v: p for v, p, _ in runs}}, indent=0, sort_keys=True))
    # Per-layer report on the most common calibration shape.
    shape = collections.Counter(x.shape for x in calib).most_common(1)[0][0]
    xs = [{ocrc.input: x} for x in calib if x.shape == shape][:REPORT_SAMPLES]
    # Against the reference float graph: GPTQ's weights are part of the quantisation error.
    rep = quant_report(ocrc.reference_graph(shape), ocrc.quant(shape), xs)
    rep.write(OUT / f"quant-report-{task.name}.json")
    worst = ", ".join(f"{r.layer} ({r.op} `{r.value}`: {r.sqnr_entire:.1f} dB entire, "
                      f"{r.sqnr_single:.1f} dB single)" for r in rep.rows[:5])
    note = (f"- **{task.name}** ({label}): calibration {t_cal:.1f} s over {len(calib)} images "
            f"({len(ocrc.floats)} input shapes); golden interpreter {1e3 * t_run:.0f} ms/image, its "
            f"integer ONNX export in onnxruntime {1e3 * t_int:.0f} ms/image. "
            f"Per-layer report (`benchmarks/out/quant-report-{task.name}.json`, input "
            f"{'x'.join(map(str, shape))}, {len(xs)} images), worst layers: {worst}.\n")
    for m in mixed:
        note += f"  - mixed precision {m}.\n"
    return rows, note


def _agree(a: list[str], b: list[str]) -> str:
    """"case-insensitive % (exact %)"."""
    return f"{100 * agreement_ci(a, b):.1f}% ({100 * agreement(a, b):.1f}%)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--settings", nargs="+", default=["minmax", "mse", "mse+eq"],
                    metavar="METHOD[+eq][+int16[@DB]|+int16all|+int16front@B]"
                            "[+gptq|+gptqplain][+bc]",
                    help="activation range methods to evaluate (minmax, percentile, entropy, "
                         "mse, auto), +eq for cross-layer equalisation first, +int16@DB for "
                         "mixed precision (int16 where the all-int8 single-mode SQNR is below "
                         "DB; default 30), +int16all for every activation in int16, "
                         "+int16front@B for the earliest layers within B of extra MAC cycles, "
                         "+gptq for error-feedback (GPTQ) int8 weight rounding (centred; "
                         "+gptqplain without centring), +bc for empirical bias correction "
                         "(default: minmax mse mse+eq)")
    ap.add_argument("--limit", type=int, help="evaluate only the first N images")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows, notes = [], []
    for text in args.settings:
        parse_setting(text)  # fail before the slow part
    for name in args.tasks:
        r, note = evaluate(name, args.settings, args.limit)
        rows += r
        notes.append(note)
    cmd = "python -m benchmarks.quant_accuracy" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    body = (f"Command: `{cmd}` ({time.perf_counter() - t0:.0f} s). Data: `{EVAL_SET}` "
            f"(300 rendered images, seed 1), calibration on `{CALIB_SET}` (32 images, seed 101). "
            "Agreement: the fraction of images on which two models read the same string, "
            "compared as accuracy compares with labels (case-insensitively; the data sets are "
            "lowercase), exact equality in parentheses. The noise-floor rows perturb fp32 far "
            "less than int8 does and show how much agreement the model keeps under any "
            "perturbation. *fp32's correct readings kept*: of the images fp32 reads right, the "
            "fraction this variant also reads right. Predictions: "
            "`benchmarks/out/quant-preds-MODEL.json`. ocrc int8: every conv, the LSTM and the "
            "Gemm in "
            "integers (docs/quantization.md); fp32 and onnxruntime int8 as in the baselines "
            "section.\n\n"
            + markdown_table(["model", "variant", "n", "accuracy", "CER", "agreement with fp32",
                              "fp32's correct readings kept", "agreement with ocrc golden int8"],
                             rows)
            + "\n" + "".join(notes))
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
