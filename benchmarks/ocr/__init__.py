"""The OCR benchmark harness: seeded data sets, each recogniser's pre/post-processing as its
package does it, metrics, and a Recognizer interface that onnxruntime, ocrc's interpreter and
the VM all plug into. See benchmarks/baselines.py for a complete use.
"""

from benchmarks.ocr.datasets import DATASETS, Sample, generate, load_dataset, load_samples
from benchmarks.ocr.harness import (Latency, OrtRecognizer, Recognizer, Scores,
                                    calibration_inputs, evaluate, measure_latency, recognize)
from benchmarks.ocr.metrics import accuracy, agreement, cer, edit_distance
from benchmarks.ocr.tasks import TASKS, OcrTask, ctc_greedy, ddddocr_task, ppocr_rec_task

__all__ = [
    "DATASETS", "TASKS", "Latency", "OcrTask", "OrtRecognizer", "Recognizer", "Sample", "Scores",
    "accuracy", "agreement", "calibration_inputs", "cer", "ctc_greedy", "ddddocr_task",
    "edit_distance", "evaluate", "generate", "load_dataset", "load_samples", "measure_latency",
    "ppocr_rec_task", "recognize",
]
