"""OCR metrics: exact-match accuracy and CER against labels, agreement between two runs.

Accuracy and CER compare case-insensitively (the data sets are lowercase, ddddocr's charset
has both cases); `agreement` compares two predictions exactly, `agreement_ci` the way accuracy
compares a prediction with its label (case-insensitively).
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _check(a: Sequence[str], b: Sequence[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} predictions vs {len(b)} references")
    if not a:
        raise ValueError("no predictions to score")


def accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of predictions equal to their label, case-insensitively."""
    _check(preds, labels)
    return sum(p.lower() == t.lower() for p, t in zip(preds, labels)) / len(preds)


def cer(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Character error rate: total edit distance / total label length (case-insensitive)."""
    _check(preds, labels)
    dist = sum(edit_distance(p.lower(), t.lower()) for p, t in zip(preds, labels))
    return dist / max(1, sum(len(t) for t in labels))


def agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Fraction of positions where two runs produced exactly the same string."""
    _check(a, b)
    return sum(x == y for x, y in zip(a, b)) / len(a)


def agreement_ci(a: Sequence[str], b: Sequence[str]) -> float:
    """Fraction of positions where two runs produced the same string up to letter case (the
    comparison `accuracy` scores with)."""
    _check(a, b)
    return sum(x.lower() == y.lower() for x, y in zip(a, b)) / len(a)


def kept_correct(preds: Sequence[str], ref: Sequence[str], labels: Sequence[str]) -> float:
    """Of the images `ref` reads correctly, the fraction `preds` also reads correctly (both
    case-insensitively): what a quantised model keeps of its float model's right answers."""
    _check(preds, labels)
    _check(ref, labels)
    right = [i for i, (r, t) in enumerate(zip(ref, labels)) if r.lower() == t.lower()]
    if not right:
        raise ValueError("the reference reads no image correctly")
    return sum(preds[i].lower() == labels[i].lower() for i in right) / len(right)
