"""The `## CRNN compression study (training)` section of benchmarks/RESULTS.md, written from
benchmarks/train/compression_study.json (torch-free)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from benchmarks.ocr.report import markdown_table, write_section

STUDY_JSON = Path(__file__).resolve().parent / "compression_study.json"
HEADING = "CRNN compression study (training)"
# The literature's CRNN compression study: latency (ms) per sparsity, size, accuracy loss.
LITERATURE_LATENCY_MS = {0.0: 55.1, 0.2: 53.3, 0.5: 48.6, 0.625: 45.2, 0.78: 38.7}
LITERATURE_SIZE_MB = (15.87, 3.13)  # float -> compressed, 5.07x, under 3 points lost


def _est_bytes(rec: dict[str, Any], bytes_per_weight: float) -> float:
    """Estimated storage: non-weight floats as float32, plus, for the weights, a bitmask and
    the nonzeros at `bytes_per_weight` (or dense, whichever is smaller)."""
    other = rec["float_bytes"] - 4 * rec["weights"]
    nonzero = rec["weights"] - rec["zero_weights"]
    weights = min(rec["weights"] * bytes_per_weight,
                  rec["weights"] / 8 + nonzero * bytes_per_weight)
    return other + weights


def section(study: dict[str, Any]) -> str:
    models = study["models"]
    dense = models.get("dense")
    rows = []
    for tag, rec in models.items():
        acc = rec["test"]["accuracy"]
        drop = "" if dense is None else f"{100 * (dense['test']['accuracy'] - acc):+.1f}"
        lit = LITERATURE_LATENCY_MS.get(rec["target"]) if tag.startswith("mag") or \
            tag == "dense" else None
        rows.append([
            tag, rec["method"], f"{100 * rec['sparsity']:.1f}%", f"{rec['params']:,}",
            f"{rec['float_bytes'] / 1e6:.3f}", f"{_est_bytes(rec, 4) / 1e6:.3f}",
            f"{rec['float_bytes'] / _est_bytes(rec, 1):.1f}x",
            f"{100 * acc:.1f}%", f"{100 * rec['test']['cer']:.2f}%", drop,
            f"{rec['train_seconds']:.0f}", "" if lit is None else f"{lit}", "(compiler)"])
    header = ["model", "pruning", "weight sparsity", "params", "float MB (dense storage)",
              "float MB (bitmask+nonzeros, est.)", "int8+bitmask vs float (est.)",
              "fp32 accuracy", "CER", "points vs dense", "train/fine-tune s",
              "literature latency ms", "ocrc NPU latency"]
    first = next(iter(models.values()), None)
    text = [
        "Command: `pip install -e .[train]` then `python -m benchmarks.train` (stages `dense`, "
        "`prune`, `nm`, `report`; checkpoints are cached under the ocrc cache and keyed by their "
        "recipe, so a rerun only re-exports and re-evaluates). "
        f"PyTorch {study.get('torch', '?')}, CPU, 1 thread, Python {platform.python_version()}; "
        "wall times are on a 2-core machine shared with other jobs.",
        "",
        "Model (`benchmarks/train/model.py`): 5 Conv3x3(no bias)-BN-ReLU stages with 32, 64, 96, "
        "96, 128 channels and max pools 2x2, 2x2, -, 2x1, 2x1 (height 32 -> 2, width W -> W/4); "
        "the bridge [1, 128, 2, T] -> [T, 1, 256]; a bidirectional LSTM (hidden 128); a linear "
        "CTC head 256 -> 37 (blank + [0-9a-z]). Exported with the TorchScript exporter (opset "
        f"{first['opset'] if first else 13}, BN folded into the convs), input `image` "
        "[1, 1, 32, 'width'], output `logits` [T, 1, 37].",
        "",
        "Training: CTC, AdamW with a one-cycle schedule, batches of 32 clean images rendered on "
        "the fly by `benchmarks.ocr.datasets.generate('clean', 32, seed)` with seeds from "
        "1,000,000 up (the same renderer and font as the `clean` set, other seeds), resized to "
        "height 32 keeping the aspect ratio. Pruning: iterative **global** magnitude pruning "
        "(one threshold over all conv, LSTM W/R and head weights together; BN and biases are "
        "not pruned) to 20, 50, 62.5 and 78%, each step starting from the previous one and "
        "fine-tuned (masks re-applied after every step); 2:4 keeps the 2 largest of every 4 "
        "consecutive weights along the reduction axis (the first conv, reduction 9, stays "
        "dense), one shot from dense, then fine-tuned. Accuracy: onnxruntime fp32 on the "
        "held-out `clean` set (n=300, seed 1; never used in training), exact match.",
        "",
        markdown_table(header, rows),
        "Sparsity is counted on the exported ONNX (exact zeros among the weight initializers "
        "of rank >= 2). The two 'est.' columns are storage estimates (a 1-bit mask per weight "
        "plus the nonzeros, float32 or int8; other tensors float32), not measured program "
        "sizes: the ocrc program bytes and the NPU latency on the default preset are filled in "
        "by the compiler's benchmark (issue 8 §3) once the pipeline compiles these models.",
        "",
        "Literature (the CRNN compression study we reproduce): latency "
        + ", ".join(f"{v} ms at {100 * k:g}%" for k, v in LITERATURE_LATENCY_MS.items())
        + f" (1.42x at 78%); size {LITERATURE_SIZE_MB[0]} MB -> {LITERATURE_SIZE_MB[1]} MB "
        "(5.07x) with under 3 points of accuracy lost. Our float model is smaller to start "
        "with (see the table), so the ratios, not the megabytes, are the comparable figures.",
    ]
    if dense is not None:
        per = dense.get("history") or []
        if per:
            text += ["", "Dense training curve (step, smoothed CTC loss, validation accuracy on "
                     "`clean` n=200 seed 7): " + "; ".join(
                         f"{s}: {loss:.3f}, {100 * a:.1f}%" for s, loss, a in per) + "."]
    return "\n".join(text)


def write_report(path: Path = STUDY_JSON) -> None:
    """Rewrite the study's section of RESULTS.md (no-op without a study JSON)."""
    if not path.is_file():
        return
    write_section(HEADING, section(json.loads(path.read_text())))
