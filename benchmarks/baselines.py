"""onnxruntime baselines of the real OCR recognisers: fp32 and int8 (quantize_static, QDQ,
per channel) accuracy, CER and agreement on the seeded data sets, and single-thread latency.

Run from the repository root: `python -m benchmarks.baselines` (prints the tables and writes
the "Baselines: onnxruntime" section of benchmarks/RESULTS.md; `--no-write` only prints).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

from benchmarks.ocr.datasets import DATASETS, load_dataset
from benchmarks.ocr.harness import OrtRecognizer, measure_latency, recognize
from benchmarks.ocr.metrics import accuracy, agreement, cer
from benchmarks.ocr.ort_quant import ort_int8_model
from benchmarks.ocr.report import markdown_table, write_section
from benchmarks.ocr.tasks import TASKS
from ocrc.frontend.zoo import fetch_model

SECTION = "Baselines: onnxruntime"
EVAL_SETS = ("clean", "captcha")
CALIB_SET = "calib-clean"
# Latency input shapes: ddddocr at the width its latency is usually quoted at, PP-OCR fixed.
LATENCY_SHAPES = {"ddddocr": (1, 1, 64, 160), "ppocr-v2-rec": (1, 3, 32, 320)}


def accuracy_rows(tasks: list[str], limit: int | None) -> list[list[str]]:
    """One row per (model, variant, data set): n, accuracy, CER, agreement with fp32."""
    rows = []
    for task_name in tasks:
        task = TASKS[task_name]()
        fp32 = OrtRecognizer(fetch_model(task.model), threads=1)
        int8 = OrtRecognizer(ort_int8_model(task, CALIB_SET), threads=1)
        for ds in EVAL_SETS:
            samples = load_dataset(ds)[:limit]
            labels = [s.text for s in samples]
            ref = recognize(task, fp32, (s.image for s in samples))
            q = recognize(task, int8, (s.image for s in samples))
            for variant, preds in (("ort fp32", ref), ("ort int8 QDQ", q)):
                rows.append([task.name, variant, ds, str(len(samples)),
                             f"{100 * accuracy(preds, labels):.1f}%",
                             f"{100 * cer(preds, labels):.2f}%",
                             f"{100 * agreement(preds, ref):.1f}%"])
    return rows


def latency_rows(tasks: list[str], runs: int) -> list[list[str]]:
    """Single-thread onnxruntime latency, fp32 and int8, on a seeded input."""
    rows = []
    rng = np.random.default_rng(0)
    for task_name in tasks:
        task = TASKS[task_name]()
        shape = LATENCY_SHAPES[task_name]
        x = rng.random(shape, dtype=np.float32)
        for variant, path in (("ort fp32", fetch_model(task.model)),
                              ("ort int8 QDQ", ort_int8_model(task, CALIB_SET))):
            lat = measure_latency(OrtRecognizer(path, threads=1), x, runs=runs)
            rows.append([task.name, variant, "x".join(map(str, shape)), "1",
                         f"{lat.median_ms:.2f}", f"{lat.min_ms:.2f}", str(lat.runs)])
    return rows


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma list of %(default)s")
    ap.add_argument("--limit", type=int, default=None,
                    help="score only the first N samples of each set (never written)")
    ap.add_argument("--runs", type=int, default=200, help="timed latency runs")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    tasks = args.tasks.split(",")
    onnxruntime.set_default_logger_severity(3)

    t0 = time.perf_counter()
    acc = markdown_table(["model", "variant", "data set", "n", "accuracy", "CER",
                          "agreement with fp32"], accuracy_rows(tasks, args.limit))
    lat = markdown_table(["model", "variant", "input", "threads", "median ms", "min ms",
                          "runs"], latency_rows(tasks, args.runs))
    elapsed = time.perf_counter() - t0
    sets = ", ".join(f"{k}: {v.kind} n={v.n} seed={v.seed}" for k, v in DATASETS.items())
    body = (
        f"Command: `python -m benchmarks.baselines` ({elapsed:.0f} s). onnxruntime "
        f"{onnxruntime.__version__}, CPU execution provider, 1 thread, Python "
        f"{platform.python_version()} on {platform.machine()}.\n\n"
        f"Data sets ({sets}). Accuracy: exact match, case-insensitive; CER: edit distance / "
        f"label length. int8: `quantize_static` QDQ, per-channel int8 weights, int8 "
        f"activations, MinMax on the {DATASETS[CALIB_SET].n} images of `{CALIB_SET}` "
        f"(onnxruntime leaves the LSTM in float; PP-OCRv2 rec does not survive this "
        f"recipe). PP-OCRv2 rec runs at 3x32x320, zero-padded as upstream PaddleOCR does.\n\n"
        f"{acc}\nLatency (median / min of the timed runs after 10 warm-up runs; the machine "
        f"is shared, so treat the median as noisy):\n\n{lat}"
    )
    print(body)
    if not args.no_write and args.limit is None and tasks == list(TASKS):
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
