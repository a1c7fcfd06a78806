"""Helpers of benchmarks/compression.py: width batching and the RESULTS.md section."""

from __future__ import annotations

import numpy as np

from benchmarks.compression import ROWS, Result, batches, section


def test_batches_group_by_width_and_pad_singletons() -> None:
    xs = [np.full((1, 1, 2, w), i, np.float32) for i, w in enumerate([4, 8, 4, 6, 4])]
    out = batches(xs, size=2)
    assert [(idx, a.shape) for idx, a in out] == [([0, 2], (2, 1, 2, 4)), ([4], (2, 1, 2, 4)),
                                                  ([3], (2, 1, 2, 6)), ([1], (2, 1, 2, 8))]
    assert (out[1][1] == 4).all()  # the singleton is duplicated


def test_section_lists_every_row() -> None:
    rs = [Result(r.name, r.float_passes, weight_bytes=1000, macs=10**6) for r in ROWS]
    text = section(rs, 90.0, 300, 60.0)
    assert all(r.name in text for r in ROWS) and "54,088,400" in text
