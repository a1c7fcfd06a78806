"""Weight sharing (k-means codebooks) and the per-layer storage report on a quantised graph."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.compiler.compress.storage import (
    kmeans_codebook,
    other_const_bytes,
    quantize_to_codebook,
    storage_report,
    weight_values,
)
from ocrc.compiler.errors import PassError
from ocrc.compiler.passes import PassContext, parse_pipeline, run_passes
from ocrc.runtime import weightcodec as wc

from tests.compress.tiny import inputs, tiny_crnn


def test_kmeans_codebook_keeps_zero_and_fits() -> None:
    rng = np.random.default_rng(0)
    v = np.clip(np.rint(rng.normal(0, 30, 5000)), -127, 127).astype(np.int8)
    v[rng.random(5000) < 0.5] = 0
    cb = kmeans_codebook(v, 16)
    assert cb.dtype == np.int8 and cb.shape == (16,) and 0 in cb
    q = quantize_to_codebook(v, cb)
    assert set(np.unique(q)) <= set(cb.tolist()) and ((q == 0) == (v == 0)).all()
    assert np.abs(q.astype(int) - v).max() <= 16
    data = wc.encode(q, wc.StreamFormat("bitmask", 16), cb)
    np.testing.assert_array_equal(wc.decode(data, wc.StreamFormat("bitmask", 16), q.size), q)
    few = np.array([0, 3, 3, -5], np.int8)
    assert sorted(set(kmeans_codebook(few, 16).tolist())) == [-5, 0, 3]


def test_share_weights_and_storage_report() -> None:
    ctx = PassContext(options={"calibration": inputs(n=2), "progress": False})
    q = run_passes(tiny_crnn(), parse_pipeline("prune{sparsity=0.6},quantize"), ctx)
    rows = storage_report(q)
    assert [r.layer for r in rows] == ["conv0", "conv1", "conv2", "conv3", "lstm.W", "lstm.R",
                                       "fc"]
    assert all(r.sparsity >= 0.59 and r.nbytes < r.dense for r in rows)
    assert other_const_bytes(q) > 0
    shared = run_passes(q, parse_pipeline("share-weights{centroids=16}"), ctx)
    books = ctx.options["codebooks"]
    rows2 = storage_report(shared, huffman=True, codebooks=books)
    for r, r2 in zip(rows, rows2):
        assert r2.shared < r2.sparse and r2.nbytes <= r2.shared and "+cb16" in r2.fmt
    for layer, v in weight_values(shared):
        assert len(np.unique(shared.const_value(v))) <= 16


def test_share_weights_needs_a_quantised_graph() -> None:
    with pytest.raises(PassError, match="run quantize first"):
        run_passes(tiny_crnn(), parse_pipeline("share-weights"), PassContext())
    with pytest.raises(PassError, match="must be 16 or 256"):
        parse_pipeline("share-weights{centroids=8}")
