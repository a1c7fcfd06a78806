"""Each VM instruction against its numpy pseudo-code (the qmath reference functions), and the
VM's counted cycles against the cycle formulas on single-instruction programs."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.runtime import qmath as q
from ocrc.runtime.cycles import gemm_cycles, insn_cycles
from ocrc.runtime.isa import COL, DType, Opcode, PoolMode, Sparse
from ocrc.runtime.target import load_target
from tests.runtime.rtutil import Image, run_single

NPU = load_target("npu")


def _qp(rng: np.random.Generator, n: int, lo: float = 1e-3, hi: float = 1e-2) -> tuple:
    bias = rng.integers(-2000, 2000, n)
    mult, shift = zip(*(q.quantize_multiplier(s) for s in rng.uniform(lo, hi, n)))
    return bias, np.array(mult), np.array(shift)


def _cycles_of(stats, pc: int = 1) -> int:  # type: ignore[no-untyped-def]
    return int(stats.ends[pc] - stats.starts[pc])


def _static(prog_fields: dict) -> int:  # type: ignore[type-arg]
    row = np.zeros(len(COL), np.int64)
    for k, v in prog_fields.items():
        row[COL[k]] = v
    return int(insn_cycles(row, NPU.vm_params(), NPU.vector_overheads()))


@pytest.mark.parametrize("geom", [
    {"h": 6, "w": 7, "cin": 3, "cout": 5, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 1, "pb": 1, "pl": 1, "pr": 1,
         "groups": 1},
    {"h": 9, "w": 8, "cin": 4, "cout": 6, "kh": 3, "kw": 2, "sh": 2, "sw": 1, "dh": 1, "dw": 2, "pt": 0, "pb": 2, "pl": 1, "pr": 0,
         "groups": 2},
    {"h": 5, "w": 6, "cin": 4, "cout": 4, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 1, "pb": 1, "pl": 1, "pr": 1,
         "groups": 4},  # depthwise
    {"h": 4, "w": 5, "cin": 16, "cout": 8, "kh": 1, "kw": 1, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 0, "pb": 0, "pl": 0, "pr": 0,
         "groups": 1},  # the direct 1x1 path
])
def test_conv_matches_conv_ref(geom: dict) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(0)
    g = geom["groups"]
    x = rng.integers(-128, 128, (1, geom["cin"], geom["h"], geom["w"])).astype(np.int8)
    w = rng.integers(-128, 128, (geom["cout"], geom["cin"] // g, geom["kh"], geom["kw"]))
    w = w.astype(np.int8)
    bias, mult, shift = _qp(rng, geom["cout"])
    zx, zy = 5, -3
    pads = (geom["pt"], geom["pl"], geom["pb"], geom["pr"])
    args = {"strides": (geom["sh"], geom["sw"]), "pads": pads, "dilations": (geom["dh"], geom["dw"]),
                "group": g}
    want = q.conv_ref(x, w, bias, mult, shift, zx, zy, -100, 120, **args)
    img = Image()
    img.put(0, x[0].transpose(1, 2, 0))
    img.put(2048, w.transpose(0, 2, 3, 1))
    img.put(4096, np.concatenate([bias, mult, shift]).astype(np.int32))
    out, stats = run_single(Opcode.CONV, img.b, src=0, wgt=2048, qp=4096, dst=8192, zx=zx,
                            zy=zy, lo=-100, hi=120, out=DType.I8, **geom)
    ho, wo = want.shape[2:]
    got = Image.get(out, 8192, ho * wo * geom["cout"], np.int8).reshape(ho, wo, -1)
    assert np.array_equal(got, want[0].transpose(1, 2, 0))
    m, n, k = ho * wo, geom["cout"] // g, geom["kh"] * geom["kw"] * geom["cin"] // g
    assert _cycles_of(stats) == g * gemm_cycles(m, n, k, 32, 32, 0, 0)
    # raw int32 accumulators, then accumulate a second time on top
    acc = q.conv_ref(x, w, bias, None, None, zx, 0, 0, 0, requant=False, **args)
    out, _ = run_single(Opcode.CONV, img.b, src=0, wgt=2048, qp=4096, dst=8192, zx=zx,
                        out=DType.I32, **geom)
    got = Image.get(out, 8192, ho * wo * geom["cout"], np.int32).reshape(ho, wo, -1)
    assert np.array_equal(got, acc[0].transpose(1, 2, 0))


def test_matmul_strided_accumulate_and_int16() -> None:
    rng = np.random.default_rng(1)
    m, n, k = 3, 20, 40
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    bias, mult, shift = _qp(rng, n)
    img = Image()
    for i in range(m):
        img.put(i * 64, a[i])  # a_rs = 64
    img.put(1024, w)
    img.put(4096, np.concatenate([bias, mult, shift]).astype(np.int32))
    prev = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    for i in range(m):
        img.put(8192 + i * 96, prev[i])  # d_rs = 96 bytes
    f = {"a": 0, "b": 1024, "qp": 4096, "dst": 8192, "m": m, "n": n, "k": k, "a_rs": 64, "d_rs": 96, "zx": -7}
    out, stats = run_single(Opcode.MATMUL, img.b, out=DType.I8, zy=2, lo=-128, hi=127, **f)
    want = q.dense_ref(a, w, bias, mult, shift, -7, 2, -128, 127)
    got = np.stack([Image.get(out, 8192 + i * 96, n, np.int8) for i in range(m)])
    assert np.array_equal(got, want)
    assert _cycles_of(stats) == gemm_cycles(m, n, k, 32, 32, 0, 0)
    out, _ = run_single(Opcode.MATMUL, img.b, out=DType.I32, acc=1, **f)
    got = np.stack([Image.get(out, 8192 + i * 96, n, np.int32) for i in range(m)])
    assert np.array_equal(got, prev + (a.astype(np.int64) + 7) @ w.T.astype(np.int64))
    a16 = rng.integers(-30000, 30000, (m, k)).astype(np.int16)
    for i in range(m):
        img.put(i * 128, a16[i])
    # in_dt=i16: the wide accumulator, int64 bias + int32 mult (15-bit) and shift, int16 out
    bias64 = rng.integers(-2**40, 2**40, n)
    mult15 = rng.integers(2**14, 2**15, n).astype(np.int32)
    shift_w = rng.integers(20, 40, n).astype(np.int32)
    img.put(4096, bias64.astype(np.int64))
    img.put(4096 + 8 * n, np.concatenate([mult15, shift_w]))
    f.update(a_rs=128, zx=0)
    out, stats = run_single(Opcode.MATMUL, img.b, out=DType.I16, in_dt=DType.I16, lo=-128,
                            hi=127, **f)
    got = np.stack([Image.get(out, 8192 + i * 96, n, np.int16) for i in range(m)])
    want = q.dense_ref(a16, w, bias64, mult15, shift_w, 0, 0, -32768, 32767)
    assert np.array_equal(got, want)
    assert _cycles_of(stats) == 4 * gemm_cycles(m, n, k, 32, 32, 0, 0)  # int16_rate 0.25


def test_sparsity_cycles() -> None:
    rng = np.random.default_rng(2)
    m, n, k = 4, 64, 128
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[:32, :64] = 0  # column fold 0: two zero K-blocks of 32
    img = Image()
    img.put(1024, w)
    f = {"a": 0, "b": 1024, "qp": 12288, "dst": 14000 // 4 * 4, "m": m, "n": n, "k": k, "a_rs": k, "d_rs": n,
             "out": DType.I8, "lo": -128, "hi": 127}
    _, s = run_single(Opcode.MATMUL, img.b, sparse=Sparse.ZERO_BLOCK, **f)
    kf = np.array([k - 64, k])
    from ocrc.runtime.cycles import gemm_cycles_kf
    assert _cycles_of(s) == gemm_cycles_kf(m, n, kf, 32, 32, 0, 0) < gemm_cycles(m, n, k, 32,
                                                                                  32, 0, 0)
    w24 = w.copy()
    w24.reshape(n, k // 4, 4)[:, :, 2:] = 0
    img.put(1024, w24)
    _, s = run_single(Opcode.MATMUL, img.b, sparse=Sparse.TWO_FOUR, **f)
    assert _cycles_of(s) == gemm_cycles(m, n, k // 2, 32, 32, 0, 0)
    img.put(1024, w)
    from ocrc.runtime.errors import VMError
    with pytest.raises(VMError, match=r"instruction 1 `MATMUL .*not 2:4 sparse"):
        run_single(Opcode.MATMUL, img.b, sparse=Sparse.TWO_FOUR, **f)


def _vec(op: Opcode, img: Image, n_out: int, npdt: type, dst: int = 8192,
         **f: int) -> np.ndarray:
    out, stats = run_single(op, img.b, dst=dst, **f)
    want_cyc = _static(dict(opcode=int(op), dst=dst, **f))
    assert _cycles_of(stats) == want_cyc
    return Image.get(out, dst, n_out, npdt)


def test_vector_ops_match_qmath() -> None:
    rng = np.random.default_rng(3)
    n = 300
    xa = rng.integers(-128, 128, n).astype(np.int8)
    xb = rng.integers(-128, 128, 60).astype(np.int8)
    img = Image()
    img.put(0, xa)
    img.put(1024, xb)
    ma, sa = q.quantize_multiplier(0.7 * 2**q.ADD8_FRAC_BITS)
    mb, sb = q.quantize_multiplier(1.3 * 2**q.ADD8_FRAC_BITS)
    bidx = np.arange(n) % 60
    got = _vec(Opcode.ADD, img, n, np.int8, a=0, b=1024, count=n, b_period=60, za=3, zb=-2,
               zy=1, lo=-128, hi=100, ma=ma, sa=sa, mb=mb, sb=sb)
    want = q.add_ref(xa.astype(np.int64), 3, ma, sa, xb[bidx].astype(np.int64), -2, mb, sb, 1,
                     -128, 100, q.ADD8_FRAC_BITS)
    assert np.array_equal(got, want)
    m, s = q.quantize_multiplier(0.01)
    got = _vec(Opcode.MUL, img, n, np.int8, a=0, b=1024, count=n, b_period=60, za=3, zb=-2,
               zy=1, lo=-128, hi=127, mult=m, shift=s)
    assert np.array_equal(got, q.mul_ref(xa.astype(np.int64), 3, xb[bidx].astype(np.int64), -2,
                                         m, s, 1, -128, 127))
    got = _vec(Opcode.RESCALE, img, n, np.int16, src=0, count=n, in_dt=DType.I8,
               out_dt=DType.I16, mult=m, shift=s - 8, zx=4, zy=-9, lo=-1000, hi=1000)
    assert np.array_equal(got, q.rescale_ref(xa.astype(np.int64), 4, m, s - 8, -9, -1000, 1000))
    table = rng.integers(-32768, 32768, 256).astype(np.int16)
    img.put(2048, table)
    got = _vec(Opcode.LUT, img, n, np.int16, src=0, table=2048, count=n, out_dt=DType.I16)
    assert np.array_equal(got, table[xa.astype(np.int64) + 128])


def test_requant_and_int_ops() -> None:
    rng = np.random.default_rng(4)
    n, ch = 96, 32
    acc = rng.integers(-2**20, 2**20, n).astype(np.int32)
    bias, mult, shift = _qp(rng, ch, 1e-4, 1e-3)
    img = Image()
    img.put(0, acc)
    img.put(1024, np.concatenate([bias, mult, shift]).astype(np.int32))
    c = np.arange(n) % ch
    for dt, lo, hi in ((DType.I8, -128, 127), (DType.I16, -300, 300), (DType.I32, 0, 0)):
        npdt = {DType.I8: np.int8, DType.I16: np.int16, DType.I32: np.int32}[dt]
        got = _vec(Opcode.REQUANT, img, n, npdt, src=0, count=n, chan=ch, qp=1024, zy=5,
                   lo=lo, hi=hi, out_dt=dt)
        if dt == DType.I32:
            lo, hi = -2**31, 2**31 - 1
        assert np.array_equal(got, q.requantize(acc + bias[c], mult[c], shift[c], 5, lo, hi))
    a = rng.integers(-32768, 32768, 64).astype(np.int16)
    b = rng.integers(-32768, 32768, 64).astype(np.int16)
    img.put(4096, a)
    img.put(4608, b)
    i16 = {"a": 4096, "b": 4608, "count": 64, "b_period": 64, "a_dt": DType.I16, "b_dt": DType.I16,
               "out_dt": DType.I16, "lo": -32768, "hi": 32767}
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    got = _vec(Opcode.IMUL, img, 64, np.int16, mult=1, shift=15, **i16)
    assert np.array_equal(got, q.mul16_ref(a64, b64, 1, 15, -32768, 32767))
    got = _vec(Opcode.IADD, img, 64, np.int16, **i16)
    assert np.array_equal(got, q.add16_ref(a64, b64, -32768, 32767))
    i16.update(out_dt=DType.I8, lo=-128, hi=127)
    got = _vec(Opcode.IADD, img, 64, np.int8, shift=8, **i16)
    assert np.array_equal(got, q.add_shift_ref(a64, b64, 8, -128, 127))
    got = _vec(Opcode.IMUL, img, 64, np.int8, mult=1 << 30, shift=52, zy=-4, **i16)
    assert np.array_equal(got, q.mul16_ref(a64, b64, 1 << 30, 52, -128, 127, -4))


@pytest.mark.parametrize("mode", list(PoolMode))
def test_pool(mode: PoolMode) -> None:
    rng = np.random.default_rng(5)
    h, w, c = 5, 6, 3
    x = rng.integers(-128, 128, (1, c, h, w)).astype(np.int8)
    img = Image()
    img.put(0, x[0].transpose(1, 2, 0))
    mult, shift = q.avgpool_multipliers(0.8, 6)
    img.put(1024, np.concatenate([mult, shift]).astype(np.int32))
    f = {"src": 0, "qp": 1024, "h": h, "w": w, "c": c, "kh": 2, "kw": 3, "sh": 2, "sw": 2, "pt": 1, "pb": 0, "pl": 1, "pr": 1,
             "zx": -3, "zy": 2, "lo": -120, "hi": 127, "mode": mode}
    pads = (1, 1, 0, 1)
    if mode == PoolMode.MAX:
        want = q.maxpool_ref(x, (2, 3), (2, 2), pads, -120, 127)
    else:
        want = q.avgpool_ref(x, (2, 3), (2, 2), pads, -3, 2, mult, shift,
                             count_include_pad=mode == PoolMode.AVG_PAD, lo=-120, hi=127)
    ho, wo = want.shape[2:]
    got = _vec(Opcode.POOL, img, ho * wo * c, np.int8, **f).reshape(ho, wo, c)
    assert np.array_equal(got, want[0].transpose(1, 2, 0))


def test_copy_and_fill() -> None:
    x = np.arange(24, dtype=np.int16).reshape(4, 6)
    img = Image()
    img.put(0, x)
    # transpose [4, 6] -> [6, 4] of int16
    got = _vec(Opcode.COPY, img, 24, np.int16, src=0, n0=4, n1=6, n2=1, ss0=12, ss1=2, ds0=2,
               ds1=8, esize=DType.I16)
    assert np.array_equal(got.reshape(6, 4), x.T)
    got = _vec(Opcode.FILL, img, 10, np.int32, count=10, value=-7, dt=DType.I32)
    assert got.tolist() == [-7] * 10
