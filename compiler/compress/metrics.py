"""Output metrics for sensitivity analysis and budgets: each compares a variant's outputs with
the reference model's on the same samples (higher score is better; loss = reference score -
score, in the metric's points).

sqnr: 10 log10(signal / noise) in dB of the first output (loss: noise/signal in percent);
cosine: mean cosine similarity of the first output per sample, in percent; agreement: percent
of sequences whose greedy CTC decoding (argmax over classes, collapse repeats, drop blank 0)
equals the reference's; custom: any function of the outputs (e.g. accuracy on labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ocrc.compiler.errors import PassError

Outputs = Sequence[Sequence[np.ndarray]]  # per sample (or batch), the graph's outputs
METRICS = ("agreement", "cosine", "sqnr")


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Outputs, Outputs], float]
    noise_loss: bool = False  # sqnr: losses are noise percentages, not score differences

    def score(self, ref: Outputs, outs: Outputs) -> float:
        return float(self.fn(ref, outs))

    def loss(self, ref_score: float, score: float) -> float:
        if self.noise_loss:
            return 100.0 * 10 ** (-score / 10) if math.isfinite(score) else 0.0
        return ref_score - score


def _sqnr(ref: Outputs, outs: Outputs) -> float:
    s = sum(float(np.sum(r[0].astype(np.float64) ** 2)) for r in ref)
    n = sum(float(np.sum((r[0].astype(np.float64) - o[0]) ** 2)) for r, o in zip(ref, outs))
    return math.inf if n == 0 else 10 * math.log10(max(s, 1e-300) / n)


def _cosine(ref: Outputs, outs: Outputs) -> float:
    vals = []
    for r, o in zip(ref, outs):
        a, b = r[0].reshape(-1).astype(np.float64), o[0].reshape(-1).astype(np.float64)
        d = np.linalg.norm(a) * np.linalg.norm(b)
        vals.append(1.0 if d == 0 else float(a @ b / d))
    return 100.0 * float(np.mean(vals))


def ctc_sequences(out: np.ndarray, layout: str = "TNC", blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of logits laid out TNC ([time, batch, classes]) or NTC."""
    best = out.argmax(axis=-1)
    if layout == "NTC":
        best = best.T
    if best.ndim == 1:
        best = best[:, None]
    seqs = []
    for col in best.T:
        keep = [int(c) for i, c in enumerate(col) if c != blank and (i == 0 or c != col[i - 1])]
        seqs.append(tuple(keep))
    return seqs


def agreement_metric(layout: str = "TNC") -> Metric:
    def fn(ref: Outputs, outs: Outputs) -> float:
        a = [s for r in ref for s in ctc_sequences(r[0], layout)]
        b = [s for o in outs for s in ctc_sequences(o[0], layout)]
        return 100.0 * float(np.mean([x == y for x, y in zip(a, b)])) if a else 100.0
    return Metric("agreement", fn)


def custom_metric(name: str, fn: Callable[[Outputs], float]) -> Metric:
    """A user metric of the outputs alone (higher is better), e.g. accuracy against labels."""
    return Metric(name, lambda ref, outs: fn(outs))


def get_metric(name: str, layout: str = "TNC") -> Metric:
    if name == "sqnr":
        return Metric("sqnr", _sqnr, noise_loss=True)
    if name == "cosine":
        return Metric("cosine", _cosine)
    if name == "agreement":
        return agreement_metric(layout)
    raise PassError(f"metric {name!r}: expected one of {', '.join(METRICS)}")
