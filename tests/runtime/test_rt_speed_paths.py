"""The VM's fast paths give the exact integer results: the float32 sgemm MAC path (K-chunks of
F32_MAX_K) and the int16 (x - zx) integer path agree with each other and with qmath's
references on random shapes, at the chunk boundaries, at the extreme values -128/127 and at
extreme zero points; the fused vector loops keep their results when the output overlaps the
inputs; the MAC output keeps its element order when it overlaps its own qp block."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.runtime import kernels as K
from ocrc.runtime import qmath as q
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.isa import DType, Opcode
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM

NPU = load_target("npu")
CHUNK = 2**24 // 2**14  # the largest K whose int8 product sums float32 holds exactly


def _run(image: np.ndarray, opcode: Opcode, **fields: int) -> np.ndarray:
    """LOAD image -> SRAM[0:len], one instruction, STORE it back: the SRAM bytes after."""
    b = ProgramBuilder(NPU)
    row = 4096  # rows of 4 KiB (n0 is a 16-bit field)
    image = np.concatenate([image, np.zeros(-image.size % row, np.uint8)])
    n = image.size
    src = b.const("image", image)
    out = b.output("sram", (n,), dtype="int8")
    dma = {"n0": row, "n1": n // row, "n2": 1, "ds1": row, "ss1": row}
    b.emit(Opcode.LOAD, dram=src, sram=0, push_next=1, **dma)
    b.emit(opcode, pop_prev=1, push_next=1, **fields)
    b.emit(Opcode.STORE, dram=out.addr, sram=0, pop_prev=1, **dma)
    outs, _ = VM(b.build()).run_raw({})
    return outs["sram"].view(np.uint8)


def _put(img: np.ndarray, addr: int, arr: np.ndarray) -> None:
    raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
    img[addr:addr + raw.size] = raw


def _get(img: np.ndarray, addr: int, n: int, dtype: type) -> np.ndarray:
    return img[addr:addr + n * np.dtype(dtype).itemsize].view(dtype).astype(np.int64)


def _operands(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """Random int8, all -128, all 127, or "edge": -128 for the first F32_MAX_K columns, then 1
    (products 2**14 up to exactly 2**24, then +1: unchunked float32 sums lose the +1)."""
    if kind == "edge":
        row = np.where(np.arange(shape[1]) < CHUNK, -128, 1).astype(np.int8)
        return np.repeat(row[None, :], shape[0], axis=0)
    if kind == "min":
        return np.full(shape, -128, np.int8)
    if kind == "max":
        return np.full(shape, 127, np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


@pytest.mark.parametrize("k", [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 3])
@pytest.mark.parametrize("kind", ["random", "min", "max", "edge"])
def test_sgemm_and_integer_dot_are_exact(k: int, kind: str) -> None:
    rng = np.random.default_rng(k)
    m, n = 5, 3
    x = _operands(rng, (m, k), kind)
    w = _operands(rng, (n, k), kind if kind in ("min", "edge") else "random")
    want = x.astype(np.int64) @ w.T.astype(np.int64)
    got = np.empty((m, n), np.int32)
    K._dot_f32(x.astype(np.float32), w.astype(np.float32), got)
    assert np.array_equal(got, want)
    for zx in (-128, 0, 127):
        K._dot_i32((x.astype(np.int16) - zx).astype(np.int16), w, got)
        assert np.array_equal(got, want - zx * w.astype(np.int64).sum(1))


def test_chunk_size_within_the_bound() -> None:
    assert 1 <= K.F32_MAX_K <= CHUNK


def test_chunk_bound_is_tight() -> None:
    """One more product of 2**14 than F32_MAX_K allows is no longer exact in float32: the bound
    of kernels.py is the real one, not a loose one."""
    k = CHUNK + 1
    acc = np.float32(0)
    for v in [16384.0] * (k - 1) + [1.0] * 2:  # 2**24 then +1 +1: float32 rounds the first +1
        acc = np.float32(acc + np.float32(v))
    assert int(acc) != 16384 * (k - 1) + 2


@pytest.mark.parametrize(("m", "n", "k", "zx", "kind"), [
    (40, 24, 100, 3, "random"),  # sgemm
    (64, 16, 2 * CHUNK + 5, -128, "min"),  # sgemm, three K-chunks, the largest products
    (32, 8, CHUNK + 1, 0, "edge"),  # sgemm, a sum that needs the chunks
    (33, 9, CHUNK, 127, "max"),  # sgemm at the chunk size
    (20, 40, 300, -128, "random"),  # integer path (M below BLAS_MIN_M)
    (1, 64, 3000, 127, "min"),  # integer path, m = 1
])
def test_matmul_paths(m: int, n: int, k: int, zx: int, kind: str) -> None:
    rng = np.random.default_rng(m * n + k)
    a = _operands(rng, (m, k), kind)
    w = _operands(rng, (n, k), kind)
    bias = rng.integers(-(2**20), 2**20, n)
    mult, shift = zip(*(q.quantize_multiplier(s) for s in rng.uniform(1e-6, 1e-3, n)))
    a_addr, w_addr = 0, m * k + 64 - (m * k) % 64
    qp = w_addr + n * k + 64 - (n * k) % 64
    dst = qp + 12 * n + 64
    img = np.zeros(dst + 4 * m * n + 64, np.uint8)
    _put(img, a_addr, a)
    _put(img, w_addr, w)
    _put(img, qp, np.concatenate([bias, mult, shift]).astype(np.int32))
    f = {"a": a_addr, "b": w_addr, "qp": qp, "dst": dst, "m": m, "n": n, "k": k, "a_rs": k,
         "zx": zx}
    acc = q.dense_ref(a, w, bias, mult, shift, zx, 0, 0, 0, requant=False)
    out = _run(img, Opcode.MATMUL, d_rs=4 * n, out=DType.I32, **f)
    assert np.array_equal(_get(out, dst, m * n, np.int32).reshape(m, n), acc)
    out = _run(img, Opcode.MATMUL, d_rs=n, out=DType.I8, zy=-3, lo=-100, hi=120, **f)
    want = q.dense_ref(a, w, bias, mult, shift, zx, -3, -100, 120)
    assert np.array_equal(_get(out, dst, m * n, np.int8).reshape(m, n), want)
    assert bool(K.use_blas(m, n, k)) == (m >= K.BLAS_MIN_M)


@pytest.mark.parametrize(("h", "w", "cin", "cout", "k", "s", "groups", "zx"), [
    (9, 10, 8, 16, 3, 1, 1, -128),  # sgemm, padded 3x3
    (12, 12, 128, 16, 3, 2, 1, 127),  # sgemm, K = 1152: two chunks
    (8, 8, 16, 32, 1, 1, 1, 5),  # sgemm, 1x1
    (6, 8, 16, 12, 3, 1, 4, -7),  # grouped: integer path per group
    (4, 5, 8, 8, 3, 1, 1, 127),  # integer path (M = 20)
])
def test_conv_paths(h: int, w: int, cin: int, cout: int, k: int, s: int, groups: int,
                    zx: int) -> None:
    rng = np.random.default_rng(h * w + cin)
    p = k // 2
    x = _operands(rng, (cin, h * w), "random").reshape(1, cin, h, w)
    x[0, 0] = -128  # an extreme plane
    wt = _operands(rng, (cout, cin // groups * k * k), "random").reshape(cout, cin // groups,
                                                                          k, k)
    wt[0] = -128
    bias = rng.integers(-5000, 5000, cout)
    mult, shift = zip(*(q.quantize_multiplier(v) for v in rng.uniform(1e-4, 1e-2, cout)))
    args = {"strides": (s, s), "pads": (p, p, p, p), "group": groups}
    want = q.conv_ref(x, wt, bias, mult, shift, zx, 4, -128, 127, **args)[0].transpose(1, 2, 0)
    acc = q.conv_ref(x, wt, bias, None, None, zx, 0, 0, 0, requant=False,
                     **args)[0].transpose(1, 2, 0)
    wq, qp = 32768, 98304
    dst = qp + 12 * cout + 52
    img = np.zeros(dst + 4 * acc.size + 64, np.uint8)
    _put(img, 0, x[0].transpose(1, 2, 0))
    _put(img, wq, wt.transpose(0, 2, 3, 1))
    _put(img, qp, np.concatenate([bias, mult, shift]).astype(np.int32))
    geom = {"src": 0, "wgt": wq, "qp": qp, "dst": dst, "h": h, "w": w, "cin": cin, "cout": cout,
            "kh": k, "kw": k, "sh": s, "sw": s, "dh": 1, "dw": 1, "pt": p, "pb": p, "pl": p,
            "pr": p, "groups": groups, "zx": zx}
    out = _run(img, Opcode.CONV, zy=4, lo=-128, hi=127, out=DType.I8, **geom)
    assert np.array_equal(_get(out, dst, want.size, np.int8).reshape(want.shape), want)
    out = _run(img, Opcode.CONV, out=DType.I32, **geom)
    assert np.array_equal(_get(out, dst, acc.size, np.int32).reshape(acc.shape), acc)


def test_mac_output_overlapping_its_qp_block_keeps_element_order() -> None:
    """int32 accumulators written over the bias block: later elements read the bias that
    earlier elements wrote (the reading order of the original element loop)."""
    rng = np.random.default_rng(5)
    m, n, k = 40, 8, 64  # the sgemm path
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    qp = 8192
    img = np.zeros(16384, np.uint8)
    _put(img, 0, a)
    _put(img, 4096, w)
    bias = rng.integers(-100, 100, n)
    _put(img, qp, np.concatenate([bias, np.ones(2 * n, np.int64)]).astype(np.int32))
    out = _run(img, Opcode.MATMUL, a=0, b=4096, qp=qp, dst=qp, m=m, n=n, k=k, a_rs=k,
               d_rs=4 * n, out=DType.I32)
    dot = a.astype(np.int64) @ w.T.astype(np.int64)
    mem = np.concatenate([bias, np.ones(2 * n, np.int64), np.zeros(m * n, np.int64)])
    for i in range(m):  # the reference: element order, bias read from memory each time
        for j in range(n):
            mem[i * n + j] = np.int32(np.int64(dot[i, j] + mem[j]))
    assert np.array_equal(_get(out, qp, m * n, np.int32), mem[:m * n])


@pytest.mark.parametrize("shift_by", [-2, 0, 1, 2])
def test_vector_ops_read_their_inputs_before_writing(shift_by: int) -> None:
    """ADD / IADD / REQUANT / LUT with the output overlapping the inputs at an offset: the
    result is the one computed from the inputs as they were before the instruction."""
    rng = np.random.default_rng(7)
    n = 96
    img = rng.integers(0, 256, 4096).astype(np.uint8)
    img[2048:2048 + 12 * 4] = 0
    _put(img, 2048 + 4 * 4, np.full(4, 1 << 30, np.int32))  # REQUANT qp: bias 0, mult,
    _put(img, 2048 + 8 * 4, np.full(4, 20, np.int32))  # and shift of 4 channels
    base = 512
    dst = base + 2 * shift_by
    xa = _get(img, base, n, np.int8)
    xb = _get(img, 1024, 32, np.int8)
    out = _run(img, Opcode.ADD, a=base, b=1024, dst=dst, count=n, b_period=32, za=3, zb=-2,
               zy=1, lo=-128, hi=127, ma=1 << 30, sa=22, mb=3 << 28, sb=21)
    want = q.add_ref(xa, 3, 1 << 30, 22, xb[np.arange(n) % 32], -2, 3 << 28, 21, 1, -128, 127,
                     q.ADD8_FRAC_BITS)
    assert np.array_equal(_get(out, dst, n, np.int8), want)
    a16 = _get(img, base, n, np.int16)
    out = _run(img, Opcode.IADD, a=base, b=base + 4, dst=dst, count=n, b_period=n,
               a_dt=DType.I16, b_dt=DType.I16, out_dt=DType.I16, lo=-30000, hi=30000)
    want = q.add16_ref(a16, _get(img, base + 4, n, np.int16), -30000, 30000)
    assert np.array_equal(_get(out, dst, n, np.int16), want)
    x32 = _get(img, base, 64, np.int32)
    out = _run(img, Opcode.REQUANT, src=base, dst=base + 4 * shift_by, count=64, chan=4,
               qp=2048, out_dt=DType.I32)
    want = q.requantize(x32, 1 << 30, 20, 0, -(2**31), 2**31 - 1)
    assert np.array_equal(_get(out, base + 4 * shift_by, 64, np.int32), want)
    table = _get(img, base + shift_by + 8, 256, np.int8)
    x8 = _get(img, base, n, np.int8)
    out = _run(img, Opcode.LUT, src=base, dst=base + shift_by, count=n, table=base + shift_by + 8,
               out_dt=DType.I8)
    assert np.array_equal(_get(out, base + shift_by, n, np.int8), q.lut_ref(x8, table))
