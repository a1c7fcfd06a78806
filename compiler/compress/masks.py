"""Pruning masks: magnitude (per layer or one global threshold), N:M along the reduction axis,
and masks read from a file. A mask is a bool array of the weight's shape; True keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ocrc.compiler.compress.sites import Site, from_rows, group_of, to_rows
from ocrc.compiler.errors import PassError


def check_sparsity(value: float, what: str) -> None:
    if not 0.0 <= value < 1.0:
        raise PassError(f"{what}: sparsity={value} must be in [0, 1) (the fraction of weights "
                        "set to zero)")


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the largest |w|; exactly round(sparsity * size) zeros (introselect: O(size),
    deterministic; which of equal magnitudes at the threshold go is unspecified)."""
    k = round(sparsity * w.size)
    keep = np.ones(w.size, bool)
    if k:
        keep[np.argpartition(np.abs(w).reshape(-1), k - 1)[:k]] = False
    return keep.reshape(w.shape)


def global_masks(ws: Sequence[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """One magnitude threshold over all weights together (layers end with different sparsity)."""
    flat = np.concatenate([np.abs(w).reshape(-1) for w in ws])
    k = round(sparsity * flat.size)
    keep = np.ones(flat.size, bool)
    if k:
        keep[np.argpartition(flat, k - 1)[:k]] = False
    out, at = [], 0
    for w in ws:
        out.append(keep[at:at + w.size].reshape(w.shape))
        at += w.size
    return out


def parse_nm(text: str, what: str) -> tuple[int, int]:
    n, sep, m = text.partition(":")
    try:
        nn, mm = int(n), int(m)
    except ValueError:
        nn = mm = 0
    if not sep or not 0 < nn < mm:
        raise PassError(f"{what}: nm={text!r} must be N:M with 0 < N < M (e.g. 2:4)")
    return nn, mm


def nm_mask(site: Site, w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest |w| of every m consecutive weights along the NPU's reduction axis."""
    rows = to_rows(w, site.kind, group_of(site))
    k = rows.shape[-1]
    kin = w.shape[1] if site.kind == "conv" else k  # conv: the input channels are innermost
    if kin % m:
        raise PassError(f"prune: nm={n}:{m} on {site.layer} ({site.kind} weight "
                        f"{list(w.shape)}): M={m} does not divide the reduction axis ({kin})")
    blocks = np.abs(rows).reshape(-1, m)
    order = np.argsort(-blocks, axis=1, kind="stable")
    keep = np.zeros(blocks.shape, bool)
    np.put_along_axis(keep, order[:, :n], True, axis=1)
    return from_rows(keep.reshape(rows.shape), site.kind, w.shape)


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise PassError(f"prune: cannot read masks file {path}: {e}") from None


def check_masks(masks: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                where: str) -> dict[str, np.ndarray]:
    """Masks as bool arrays; PassError for an unknown tensor or a wrong shape."""
    out = {}
    for name, mk in masks.items():
        if name not in weights:
            known = ", ".join(sorted(weights)[:12])
            raise PassError(f"{where}: mask for unknown tensor {name!r}; weight tensors: "
                            f"{known}{' ...' if len(weights) > 12 else ''}")
        if mk.shape != weights[name].shape:
            raise PassError(f"{where}: mask {name!r} has shape {list(mk.shape)}, the weight "
                            f"is {list(weights[name].shape)}")
        out[name] = np.asarray(mk) != 0
    return out
