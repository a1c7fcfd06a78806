"""The evaluation harness: any Recognizer (a callable model-input -> model-output) on a task.

The same harness scores onnxruntime, ocrc's reference interpreter and the VM: each only has
to wrap itself as `Recognizer`, a callable taking the model's input tensor (batch of 1) and
returning its first output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.ocr.datasets import Sample
from benchmarks.ocr.metrics import accuracy, cer
from benchmarks.ocr.tasks import OcrTask

Recognizer = Callable[[np.ndarray], np.ndarray]


class OrtRecognizer:
    """onnxruntime on the CPU as a Recognizer; `threads` bounds intra- and inter-op threads."""

    def __init__(self, model: str | Path | bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # ddddocr declares its output [1, seqlen]: silence that
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


@dataclass(frozen=True)
class Scores:
    """Accuracy and CER of one recogniser on one data set."""

    n: int
    accuracy: float
    cer: float


def recognize(task: OcrTask, recognizer: Recognizer,
              images: Iterable[Image.Image]) -> list[str]:
    """Run every image through preprocess -> recognizer -> decode, one at a time."""
    preds = []
    for image in images:
        (text,) = task.decode(recognizer(task.preprocess(image)))
        preds.append(text)
    return preds


def evaluate(task: OcrTask, recognizer: Recognizer,
             samples: Sequence[Sample]) -> tuple[list[str], Scores]:
    """Predictions and their scores against the samples' labels."""
    preds = recognize(task, recognizer, (s.image for s in samples))
    labels = [s.text for s in samples]
    return preds, Scores(len(samples), accuracy(preds, labels), cer(preds, labels))


def calibration_inputs(task: OcrTask, samples: Sequence[Sample]) -> list[np.ndarray]:
    """The preprocessed model inputs of `samples`, for calibration."""
    return [task.preprocess(s.image) for s in samples]


@dataclass(frozen=True)
class Latency:
    """Wall time of one recogniser call in milliseconds over `runs` timed calls."""

    runs: int
    median_ms: float
    min_ms: float


def measure_latency(recognizer: Recognizer, x: np.ndarray, *, warmup: int = 10,
                    runs: int = 100) -> Latency:
    """Median and minimum wall time of recognizer(x) after `warmup` untimed calls."""
    for _ in range(warmup):
        recognizer(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        recognizer(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return Latency(runs, float(np.median(times)), float(np.min(times)))
