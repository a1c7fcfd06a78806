"""Truncated SVD: W [m, n] ~ U [m, r] @ V [r, n], rank chosen by energy, ratio or explicitly.

Plain SVD minimises ||W - UV||_F; the relative error is then sqrt(discarded energy), with
energy = the fraction of sum(s**2) kept. The data-aware variant minimises the error on the
layer's inputs instead, ||(W - UV) X^T||_F, by whitening with the Cholesky factor of the
input Gram matrix X^T X (a small ridge keeps it positive definite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RIDGE = 1e-4  # relative to the mean diagonal of the Gram matrix


def energy_rank(s: np.ndarray, energy: float) -> int:
    """The smallest r whose leading singular values keep `energy` of sum(s**2)."""
    e = np.cumsum(s.astype(np.float64) ** 2)
    if e[-1] == 0:
        return 1
    return int(min(np.searchsorted(e / e[-1], energy - 1e-12) + 1, len(s)))


def round_rank(r: int, multiple: int, limit: int) -> int:
    """r rounded up to a multiple of the MAC-array width (a rank that does not fill the array
    costs the same cycles as the full multiple), capped at `limit`."""
    return min(int(math.ceil(r / multiple) * multiple), limit) if multiple > 1 else min(r, limit)


def break_even(m: int, n: int) -> float:
    """Ranks at or above mn/(m+n) cost at least as many MACs and parameters as W itself."""
    return m * n / (m + n)


@dataclass(frozen=True)
class Decomposition:
    """The SVD of one matrix (whitened when built with a Gram matrix): singular values s
    (descending) and the orthonormal basis of the smaller side, from an eigendecomposition of
    the smaller Gram matrix (much faster than a full SVD; truncation only needs the leading
    vectors, and U V stays an orthogonal projection of W, so the error bound is exact)."""

    s: np.ndarray
    basis: np.ndarray  # columns: right vectors [n, k] if rows >= cols, else left [m, k]
    a: np.ndarray  # the (whitened) matrix, float64
    lower: np.ndarray | None  # Cholesky factor of the Gram matrix, when whitened

    def factor(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """U [m, r], V [r, n] (float32): U @ V is the best rank-r approximation of W (on the
        calibration inputs, when whitened)."""
        b = self.basis[:, :r]
        if self.a.shape[0] >= self.a.shape[1]:
            u, v = self.a @ b, b.T
        else:
            u, v = b, b.T @ self.a
        if self.lower is not None:
            v = np.linalg.solve(self.lower.T, v.T).T  # V L^-1
        return u.astype(np.float32), v.astype(np.float32)


def decompose(w: np.ndarray, gram: np.ndarray | None = None) -> Decomposition:
    a = w.astype(np.float64)
    lower = None
    if gram is not None:
        lower = cholesky(gram)
        a = a @ lower
    small = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    ev, vec = np.linalg.eigh(small)
    order = np.argsort(ev)[::-1]
    s = np.sqrt(np.clip(ev[order], 0.0, None))
    return Decomposition(s, vec[:, order], a, lower)


def factor(w: np.ndarray, r: int, gram: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """U [m, r], V [r, n] with U @ V the best rank-r approximation of w [m, n] (float32);
    with `gram` (n x n input Gram matrix) the best one on those inputs."""
    return decompose(w, gram).factor(r)


def cholesky(gram: np.ndarray) -> np.ndarray:
    g = gram.astype(np.float64)
    ridge = RIDGE * max(float(np.trace(g)) / len(g), 1e-12)
    return np.linalg.cholesky(g + ridge * np.eye(len(g)))


def singular_values(w: np.ndarray, gram: np.ndarray | None = None) -> np.ndarray:
    """Singular values of w, or of w whitened by the input statistics."""
    return decompose(w, gram).s


def relative_error(s: np.ndarray, r: int) -> float:
    """||W - W_r||_F / ||W||_F of plain truncation: the square root of the discarded energy."""
    e = s.astype(np.float64) ** 2
    return float(math.sqrt(e[r:].sum() / max(e.sum(), 1e-300)))
