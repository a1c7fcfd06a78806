"""Every weight-stream format round-trips (property tests) and corrupt streams are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from ocrc.runtime import weightcodec as wc
from ocrc.runtime.weightcodec import CodecError, StreamFormat

FORMATS = [StreamFormat(b, k, h) for b in wc.BASES for k in wc.CODEBOOK_SIZES
           for h in (False, True)]


def _sparse(draw: st.DrawFn, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    n = draw(st.integers(0, 300))
    density = draw(st.sampled_from([0.0, 0.03, 0.3, 1.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if k:
        cb = np.unique(np.concatenate([[0], rng.integers(-128, 128, k - 1)])).astype(np.int8)
        cb = np.concatenate([cb, np.full(k - len(cb), cb[-1], np.int8)])
        v = cb[rng.integers(0, k, n)]
    else:
        cb = None
        v = rng.integers(-128, 128, n).astype(np.int8)
    v = np.where(rng.random(n) < density, v, 0).astype(np.int8)
    return v, cb


@st.composite
def streams(draw: st.DrawFn) -> tuple[np.ndarray, StreamFormat, np.ndarray | None]:
    fmt = draw(st.sampled_from(FORMATS))
    v, cb = _sparse(draw, fmt.codebook)
    return v, fmt, cb


@settings(max_examples=150, deadline=None)
@given(streams())
def test_round_trip(case: tuple[np.ndarray, StreamFormat, np.ndarray | None]) -> None:
    v, fmt, cb = case
    data = wc.encode(v, fmt, cb)
    np.testing.assert_array_equal(wc.decode(data, fmt, len(v)), v)
    assert StreamFormat.from_code(fmt.code) == fmt


@settings(max_examples=40, deadline=None)
@given(arrays(np.int8, st.integers(0, 200)))
def test_choose_picks_the_smallest(v: np.ndarray) -> None:
    c = wc.choose(v, huffman=True)
    assert c.nbytes == min(c.sizes.values()) == len(wc.encode(v, c.fmt))
    np.testing.assert_array_equal(wc.decode(wc.encode(v, c.fmt), c.fmt, len(v)), v)


def test_dense_and_bitmask_match_the_loadw_layout() -> None:
    v = np.array([0, 5, 0, 0, -3, 0, 0, 0, 7], np.int8)
    assert wc.encode(v, StreamFormat("dense")) == v.tobytes()
    mask = sum(1 << i for i in (1, 4)) .to_bytes(1, "little") + b"\x01"
    assert wc.encode(v, StreamFormat("bitmask")) == mask + bytes([5, 253, 7])


def test_long_zero_runs_use_fillers() -> None:
    v = np.zeros(100, np.int8)
    v[[0, 40, 99]] = [1, 2, 3]
    data = wc.encode(v, StreamFormat("csr"))
    np.testing.assert_array_equal(wc.decode(data, StreamFormat("csr"), 100), v)


def test_sizes_sparse_formats_win_when_sparse() -> None:
    rng = np.random.default_rng(0)
    v = np.where(rng.random(4096) < 0.05, rng.integers(1, 127, 4096), 0).astype(np.int8)
    c = wc.choose(v)
    assert c.fmt.base == "csr" and c.nbytes < c.sizes["bitmask"] < c.sizes["dense"] == 4096


@pytest.mark.parametrize("fmt", [StreamFormat("bitmask"), StreamFormat("csr"),
                                 StreamFormat("dense", 16, True)])
def test_truncated_stream_is_refused(fmt: StreamFormat) -> None:
    v = np.arange(-50, 50, dtype=np.int8)
    cb = np.unique(v)[:16] if fmt.codebook else None
    if cb is not None:
        v = cb[np.arange(100) % 16]
    data = wc.encode(v, fmt, cb)
    with pytest.raises(CodecError, match="truncated|corrupt|accounts"):
        wc.decode(data[:-3], fmt, len(v))


def test_bad_requests() -> None:
    with pytest.raises(CodecError, match="not in the 16-entry codebook"):
        wc.encode(np.array([1, 2], np.int8), StreamFormat("dense", 16), np.zeros(16, np.int8))
    with pytest.raises(CodecError, match="codebook size 8"):
        StreamFormat("dense", 8)
    with pytest.raises(CodecError, match="int8 values"):
        wc.encode(np.zeros(3, np.float32), StreamFormat())
    with pytest.raises(CodecError, match="not a valid format"):
        StreamFormat.from_code(3)
