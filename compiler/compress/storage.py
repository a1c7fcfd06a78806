"""Compact storage of a quantised graph's weights, and weight sharing.

`storage_report` chooses, per int8 weight tensor of the quantised MAC ops (qconv, qdense,
qlstm W and R, and V as NAME.RV when R is factored: then NAME.R is U), the smallest stream
format of runtime/weightcodec.py and records what each step saved: dense int8 -> sparse format (bitmask / csr) -> codebook indices -> Huffman.
`kmeans_codebook` is the weight sharing of Deep Compression in the int8 domain: k centroids
(0 is always one, so pruned weights stay zero and sparse formats apply), linear init, Lloyd
iterations on the value histogram; `share-weights` (passes/share_weights.py) applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ocrc.compiler.ir.graph import Graph, Value
from ocrc.runtime import weightcodec as wc

WEIGHT_OPERANDS = {"qconv": ("w",), "qdense": ("w",), "qlstm": ("w", "r", "rv")}
LLOYD_ITERATIONS = 50


def kmeans_codebook(values: np.ndarray, k: int) -> np.ndarray:
    """int8[k] codebook for int8 `values` (0 included; unused slots repeat the last entry)."""
    v = np.asarray(values, np.int8).reshape(-1)
    hist = np.bincount(v.astype(np.int64) + 128, minlength=256).astype(np.float64)
    levels = np.arange(-128, 128, dtype=np.float64)
    hist[128] = 0  # zero is its own centroid
    nz = levels[hist > 0]
    if len(nz) <= k - 1:
        cb = np.concatenate([[0], nz]).astype(np.int64)
    else:
        cent = np.linspace(nz.min(), nz.max(), k - 1)
        for _ in range(LLOYD_ITERATIONS):
            edges = (cent[1:] + cent[:-1]) / 2
            idx = np.searchsorted(edges, levels)
            w = np.bincount(idx, weights=hist, minlength=k - 1)
            s = np.bincount(idx, weights=hist * levels, minlength=k - 1)
            new = np.where(w > 0, s / np.maximum(w, 1e-300), cent)
            if np.allclose(new, cent):
                break
            cent = new
        cb = np.unique(np.concatenate([[0], np.clip(np.rint(cent), -127, 127)])).astype(np.int64)
    cb = np.sort(cb)
    out = np.full(k, cb[-1], np.int8)
    out[:len(cb)] = cb
    return out


def quantize_to_codebook(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Each nonzero value replaced by its nearest nonzero codebook entry (ties: the smaller);
    zero stays zero and nothing else becomes zero (the sparsity pattern is kept)."""
    cb = np.unique(codebook.astype(np.int64))
    cb = cb[cb != 0]
    v = values.astype(np.int64)
    if len(cb) == 0:
        return np.zeros(values.shape, np.int8)
    idx = np.clip(np.searchsorted(cb, v), 1, len(cb) - 1) if len(cb) > 1 else \
        np.zeros(v.shape, np.int64)
    lo, hi = cb[np.maximum(idx - 1, 0)], cb[idx]
    out = np.where(np.abs(v - lo) <= np.abs(hi - v), lo, hi)
    return np.where(v == 0, 0, out).astype(np.int8)


def weight_values(g: Graph) -> list[tuple[str, Value]]:
    """(layer name, const value) of every int8 weight of the quantised MAC ops, in order."""
    consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
    out = []
    for n in g.nodes:
        for operand in WEIGHT_OPERANDS.get(n.op.name, ()):
            v = n.operand(operand)
            if v is not None and v in consts and v.type.dtype.np == np.int8:
                suffix = {"qlstm": "." + operand.upper()}.get(n.op.name, "")
                out.append(((n.name or n.outputs[0].name) + suffix, v))
    return out


@dataclass(frozen=True)
class LayerStorage:
    """One weight tensor: elements, zero fraction, the chosen format and the bytes per step."""

    layer: str
    count: int
    sparsity: float
    fmt: str
    dense: int  # int8 bytes
    sparse: int  # best of dense / bitmask / csr (raw values)
    shared: int  # ... with codebook indices (== sparse without sharing)
    nbytes: int  # final (with Huffman when asked and smaller)


def storage_report(g: Graph, huffman: bool = False,
                   codebooks: dict[str, np.ndarray] | None = None) -> list[LayerStorage]:
    """Per weight tensor, the smallest storage (see the module doc)."""
    rows = []
    codebooks = codebooks or {}
    for layer, v in weight_values(g):
        w = g.const_value(v)
        assert w is not None
        flat = w.reshape(-1)
        sparse = wc.choose(flat)
        cb = codebooks.get(layer)
        shared = wc.choose(flat, cb) if cb is not None else sparse
        final = wc.choose(flat, cb, huffman=True) if huffman else shared
        if final.nbytes > shared.nbytes:
            final = shared
        rows.append(LayerStorage(layer, flat.size, float(np.mean(flat == 0)), str(final.fmt),
                                 flat.size, sparse.nbytes, shared.nbytes, final.nbytes))
    return rows


def other_const_bytes(g: Graph) -> int:
    """Bytes of every constant that is not an int8 MAC weight (biases, multipliers, tables)."""
    weights = {v for _, v in weight_values(g)}
    return int(sum(n.attrs["value"].nbytes for n in g.nodes
                   if n.op.name == "const" and n.outputs[0] not in weights))
