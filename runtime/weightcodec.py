"""Compact storage of int8 weight streams: what the program file holds and LOADW decompresses.

A stream is the flat int8 weights of one layer (count elements) stored as one of the base
formats of `runtime.isa.Comp` (dense; bitmask + nonzeros; run-length "csr": 4-bit zero gaps +
nonzeros), optionally with its values coded through a k-entry codebook (16 entries: 4-bit
indices; 256: 8-bit) and optionally Huffman coded. Layouts are below; dense and bitmask without
extras are byte-identical to what the VM's LOADW reads.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from numba import njit
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.isa import Comp

BASES = {"dense": Comp.DENSE, "bitmask": Comp.BITMASK, "csr": Comp.CSR}
CODEBOOK_SIZES = (0, 16, 256)
GAP_BITS = 4  # csr: zeros before each stored value (Deep Compression's relative index)
MAX_GAP = (1 << GAP_BITS) - 1
MAX_CODE_BITS = 15  # Huffman code lengths are limited so a decoder table has 2**15 entries

# Layout of a stream (all integers little-endian; `count` is known from the instruction):
#   dense:    values[count]
#   bitmask:  mask[ceil(count / 8)] (bit i = byte i//8 >> i%8 & 1), values[popcount(mask)]
#   csr:      n (uint32), gaps[ceil(n / 2)] (entry j in the low nibble of byte j//2 when j is
#             even, the high nibble when odd), values[n]; entry j writes gap_j zeros then its
#             value; a gap longer than 15 is bridged by filler entries (15, 0); zeros after the
#             last entry are implied by count.
#   values:   raw int8, or with a codebook: codebook[k] (int8) then indices (k = 16: two per
#             byte, low nibble first; k = 256: one byte each); with huffman the value or index
#             symbols become: code_lengths[k or 256] (uint8, canonical code) then the bit
#             stream (MSB first, zero-padded to a byte).


class CodecError(OcrcError):
    """A weight stream that cannot be encoded as asked, or that is corrupt or truncated."""


@dataclass(frozen=True)
class StreamFormat:
    """How a stream is stored: base format, codebook size (0 = none) and Huffman coding."""

    base: str = "dense"
    codebook: int = 0
    huffman: bool = False

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise CodecError(f"weight format {self.base!r}: expected one of {', '.join(BASES)}")
        if self.codebook not in CODEBOOK_SIZES:
            raise CodecError(f"weight format: codebook size {self.codebook} is not one of "
                             f"{CODEBOOK_SIZES[1:]} (or 0 for none)")

    @property
    def code(self) -> int:
        """One byte for the program file: base | codebook << 2 (1: 16, 2: 256) | huffman << 4."""
        return int(BASES[self.base]) | CODEBOOK_SIZES.index(self.codebook) << 2 | \
            int(self.huffman) << 4

    @staticmethod
    def from_code(code: int) -> StreamFormat:
        base = {int(v): k for k, v in BASES.items()}.get(code & 3)
        cb = (code >> 2) & 3
        if base is None or cb >= len(CODEBOOK_SIZES) or code >> 5:
            raise CodecError(f"weight stream format code {code} is not a valid format")
        return StreamFormat(base, CODEBOOK_SIZES[cb], bool(code >> 4 & 1))

    def __str__(self) -> str:
        return self.base + (f"+cb{self.codebook}" if self.codebook else "") + \
            ("+huffman" if self.huffman else "")


# --- public API ------------------------------------------------------------------------------
def encode(values: np.ndarray, fmt: StreamFormat, codebook: np.ndarray | None = None) -> bytes:
    """The stream of flat int8 `values` in `fmt`. With a codebook format every value (every
    nonzero, for bitmask/csr) must be one of `codebook`'s int8 entries (see weight sharing)."""
    v = _flat_int8(values)
    if fmt.base == "dense":
        head, vals = b"", v
    elif fmt.base == "bitmask":
        head, vals = np.packbits(v != 0, bitorder="little").tobytes(), v[v != 0]
    else:
        head, vals = _csr_encode(v)
    return head + _encode_values(vals, fmt, codebook)


def decode(stream: bytes | np.ndarray, fmt: StreamFormat, count: int) -> np.ndarray:
    """The `count` int8 weights of a stream (inverse of `encode`); CodecError if corrupt."""
    buf = np.frombuffer(bytes(stream), np.uint8)
    if fmt.base == "dense":
        vals, used = _decode_values(buf, fmt, count, "dense")
        out = vals
    elif fmt.base == "bitmask":
        mb = -(-count // 8)
        _need(buf, mb, "bitmask mask")
        mask = np.unpackbits(buf[:mb], bitorder="little")[:count].astype(bool)
        vals, used = _decode_values(buf[mb:], fmt, int(mask.sum()), "bitmask")
        out = np.zeros(count, np.int8)
        out[mask] = vals
        used += mb
    else:
        _need(buf, 4, "csr header")
        n = int(buf[:4].view("<u4")[0])
        gb = -(-n // 2)
        _need(buf, 4 + gb, "csr gaps")
        nib = np.empty(2 * gb, np.int64)
        nib[0::2], nib[1::2] = buf[4:4 + gb] & 15, buf[4:4 + gb] >> 4
        vals, used = _decode_values(buf[4 + gb:], fmt, n, "csr")
        pos = np.cumsum(nib[:n] + 1) - 1
        if n and pos[-1] >= count:
            raise CodecError(f"csr stream: entries reach index {int(pos[-1])} >= count {count}")
        out = np.zeros(count, np.int8)
        out[pos] = vals
        used += 4 + gb
    if used != len(buf):
        raise CodecError(f"{fmt} stream: {len(buf)} bytes, the format accounts for {used}")
    return out


@dataclass(frozen=True)
class Choice:
    """The format chosen for one stream and the sizes that led to it (bytes per format)."""

    fmt: StreamFormat
    nbytes: int
    sizes: dict[str, int]


def choose(values: np.ndarray, codebook: np.ndarray | None = None, huffman: bool = False,
           bases: tuple[str, ...] = tuple(BASES)) -> Choice:
    """The smallest of `bases` for `values` (with `codebook`'s size, and Huffman coding when
    asked and smaller); `sizes` lists every candidate's bytes, by format name."""
    k = 0 if codebook is None else len(codebook)
    sizes: dict[str, int] = {}
    best: tuple[int, int, StreamFormat] | None = None
    cands = [StreamFormat(b, k, h) for b in bases for h in ((False, True) if huffman else (False,))]
    for rank, f in enumerate(cands):
        try:
            n = len(encode(values, f, codebook))
        except CodecError:  # e.g. csr fillers need 0 in the codebook
            continue
        sizes[str(f)] = n
        if best is None or (n, rank) < best[:2]:
            best = (n, rank, f)
    assert best is not None
    return Choice(best[2], best[0], sizes)


# --- values: raw, codebook indices, Huffman ----------------------------------------------------
def _encode_values(vals: np.ndarray, fmt: StreamFormat, codebook: np.ndarray | None) -> bytes:
    if not fmt.codebook:
        syms, nsym, head = vals.view(np.uint8), 256, b""
    else:
        cb = _check_codebook(codebook, fmt.codebook)
        lut = np.full(256, -1, np.int64)
        lut[cb.view(np.uint8)[::-1]] = np.arange(len(cb))[::-1]  # first entry wins on repeats
        idx = lut[vals.view(np.uint8)]
        if (idx < 0).any():
            bad = int(vals[idx < 0][0])
            raise CodecError(f"value {bad} is not in the {fmt.codebook}-entry codebook")
        syms, nsym, head = idx.astype(np.uint8), fmt.codebook, cb.tobytes()
    if fmt.huffman:
        return head + _huffman_encode(syms, nsym)
    if fmt.codebook == 16:
        pad = np.zeros(len(syms) + len(syms) % 2, np.uint8)
        pad[:len(syms)] = syms
        return head + (pad[0::2] | pad[1::2] << 4).astype(np.uint8).tobytes()
    return head + syms.astype(np.uint8).tobytes()


def _decode_values(buf: np.ndarray, fmt: StreamFormat, n: int, what: str) -> tuple[np.ndarray, int]:
    """n values from the start of buf; returns them and the bytes consumed."""
    used = 0
    cb = None
    if fmt.codebook:
        _need(buf, fmt.codebook, f"{what} codebook")
        cb = buf[:fmt.codebook].view(np.int8)
        used = fmt.codebook
    nsym = fmt.codebook or 256
    if fmt.huffman:
        syms, m = _huffman_decode(buf[used:], nsym, n, what)
        used += m
    elif fmt.codebook == 16:
        nb = -(-n // 2)
        _need(buf, used + nb, f"{what} indices")
        b = buf[used:used + nb]
        syms = np.empty(2 * nb, np.uint8)
        syms[0::2], syms[1::2] = b & 15, b >> 4
        syms = syms[:n]
        used += nb
    else:
        _need(buf, used + n, f"{what} values")
        syms = buf[used:used + n]
        used += n
    vals = cb[syms] if cb is not None else syms.view(np.int8)
    return np.ascontiguousarray(vals, np.int8), used


def _check_codebook(codebook: np.ndarray | None, k: int) -> np.ndarray:
    if codebook is None:
        raise CodecError(f"format with a {k}-entry codebook needs the codebook")
    cb = np.asarray(codebook)
    if cb.shape != (k,) or cb.dtype != np.int8:
        raise CodecError(f"codebook must be int8[{k}], got {cb.dtype}{list(cb.shape)}")
    return cb


def _csr_encode(v: np.ndarray) -> tuple[bytes, np.ndarray]:
    nz = np.flatnonzero(v)
    gaps = np.diff(np.concatenate(([-1], nz))) - 1
    fill = gaps // (MAX_GAP + 1)  # filler entries (15, 0) before each value
    n = int(len(nz) + fill.sum())
    g = np.full(n, MAX_GAP, np.uint8)
    vals = np.zeros(n, np.int8)
    at = np.cumsum(fill + 1) - 1  # where the real entries land
    g[at] = gaps - fill * (MAX_GAP + 1)
    vals[at] = v[nz]
    pad = np.zeros(n + n % 2, np.uint8)
    pad[:n] = g
    packed = (pad[0::2] | pad[1::2] << 4).astype(np.uint8)
    return np.array([n], "<u4").tobytes() + packed.tobytes(), vals


def _need(buf: np.ndarray, n: int, what: str) -> None:
    if len(buf) < n:
        raise CodecError(f"truncated weight stream: {what} needs {n} bytes, has {len(buf)}")


def _flat_int8(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype != np.int8:
        raise CodecError(f"weight streams hold int8 values, got {v.dtype}")
    return np.ascontiguousarray(v.reshape(-1))


# --- canonical Huffman -----------------------------------------------------------------------
def code_lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code lengths (0 for unused symbols) limited to MAX_CODE_BITS; deterministic."""
    freq = np.asarray(freq, np.int64)
    used = np.flatnonzero(freq)
    lengths = np.zeros(len(freq), np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    f = freq.copy()
    while len(used):
        heap = [(int(f[s]), int(s), (int(s),)) for s in used]
        heapq.heapify(heap)
        lengths[:] = 0
        tick = len(f)
        while len(heap) > 1:
            fa, _, a = heapq.heappop(heap)
            fb, _, b = heapq.heappop(heap)
            for s in a + b:
                lengths[s] += 1
            heapq.heappush(heap, (fa + fb, tick, a + b))
            tick += 1
        if lengths.max() <= MAX_CODE_BITS:
            break
        f[used] = (f[used] + 1) // 2  # flatten the distribution and retry
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes: symbols sorted by (length, symbol) get consecutive codes."""
    codes = np.zeros(len(lengths), np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def _huffman_encode(syms: np.ndarray, nsym: int, chunk: int = 1 << 20) -> bytes:
    syms = syms.astype(np.int64)
    lengths = code_lengths(np.bincount(syms, minlength=nsym))
    codes = canonical_codes(lengths)
    ln = lengths[syms]
    ends = np.cumsum(ln)
    bits = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
    for lo in range(0, len(syms), chunk):  # bounded temporaries on large layers
        s, l_ = syms[lo:lo + chunk], ln[lo:lo + chunk]
        start = int(ends[lo] - ln[lo])
        owner = np.repeat(np.arange(len(s)), l_)
        bitpos = np.arange(len(owner)) - (np.cumsum(l_) - l_)[owner]
        bits[start:start + len(owner)] = (codes[s][owner] >> (l_[owner] - 1 - bitpos)) & 1
    return lengths.astype(np.uint8).tobytes() + np.packbits(bits).tobytes()


def _huffman_decode(buf: np.ndarray, nsym: int, n: int, what: str) -> tuple[np.ndarray, int]:
    _need(buf, nsym, f"{what} Huffman code lengths")
    lengths = buf[:nsym].astype(np.int64)
    if lengths.max(initial=0) > MAX_CODE_BITS:
        raise CodecError(f"{what} stream: Huffman code length {lengths.max()} > "
                         f"{MAX_CODE_BITS}")
    if n == 0:
        return np.zeros(0, np.uint8), nsym
    if not lengths.any():
        raise CodecError(f"{what} stream: empty Huffman code for {n} symbols")
    codes = canonical_codes(lengths)
    table_sym = np.full(1 << MAX_CODE_BITS, -1, np.int64)
    table_len = np.zeros(1 << MAX_CODE_BITS, np.int64)
    for s in np.flatnonzero(lengths):
        shift = MAX_CODE_BITS - int(lengths[s])
        lo = int(codes[s]) << shift
        table_sym[lo:lo + (1 << shift)] = s
        table_len[lo:lo + (1 << shift)] = lengths[s]
    data = np.ascontiguousarray(buf[nsym:])
    out = np.zeros(n, np.uint8)
    nbits = _huffman_loop(data, table_sym, table_len, out)
    if nbits < 0:
        raise CodecError(f"truncated or corrupt Huffman-coded {what} stream")
    return out, nsym + -(-nbits // 8)


@njit(cache=True)
def _huffman_loop(data, table_sym, table_len, out):  # type: ignore[no-untyped-def]
    """Table-driven decode of len(out) symbols; returns the bits consumed or -1 if corrupt."""
    total = data.shape[0] * 8
    pos = 0
    for j in range(out.shape[0]):
        window = 0
        for b in range(MAX_CODE_BITS):  # the next MAX_CODE_BITS bits, zero past the end
            p = pos + b
            bit = 0
            if p < total:
                bit = (data[p >> 3] >> (7 - (p & 7))) & 1
            window = (window << 1) | bit
        s = table_sym[window]
        if s < 0 or pos + table_len[window] > total:
            return -1
        out[j] = s
        pos += table_len[window]
    return pos
