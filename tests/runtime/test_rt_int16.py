"""The int16 instruction forms against their qmath pseudo-code (isa.py): CONV with the wide
accumulator (in_dt=i16, int64 bias qp) and int16 results clamped on the high byte, the
interpolated LUT (in_dt=i16, per-channel windowed tables), RESCALE to int32, POOL on int16;
the verifier's rules for them; cycles as isa.py states them (int16 MACs at 1/int16_rate)."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.runtime import qmath as q
from ocrc.runtime.cycles import gemm_cycles
from ocrc.runtime.errors import ProgramError
from ocrc.runtime.isa import DType, Opcode, PoolMode
from ocrc.runtime.target import load_target

from tests.runtime.rtutil import Image, run_single, single
from tests.runtime.test_rt_vm_ops import _cycles_of, _vec


def test_conv_wide_accumulator_int16_out() -> None:
    rng = np.random.default_rng(11)
    h, w, cin, cout = 4, 5, 6, 7
    x = rng.integers(-32768, 32768, (1, cin, h, w)).astype(np.int16)
    wt = rng.integers(-128, 128, (cout, cin, 3, 3)).astype(np.int8)
    bias = rng.integers(-2**40, 2**40, cout)
    mult = rng.integers(2**14, 2**15, cout).astype(np.int32)
    shift = rng.integers(30, 40, cout).astype(np.int32)
    img = Image()
    img.put(0, x[0].transpose(1, 2, 0))  # HWC int16
    img.put(1024, np.ascontiguousarray(wt.transpose(0, 2, 3, 1)))  # OHWI
    img.put(2048, bias.astype(np.int64))
    img.put(2048 + 8 * cout, np.concatenate([mult, shift]))
    f = dict(src=0, wgt=1024, qp=2048, dst=4096, h=h, w=w, cin=cin, cout=cout, kh=3, kw=3,
             sh=1, sw=1, dh=1, dw=1, pt=1, pb=1, pl=1, pr=1, groups=1, in_dt=DType.I16,
             out=DType.I16, lo=0, hi=60)  # clamp [0, 60*256 + 255]
    out, stats = run_single(Opcode.CONV, img.b, **f)
    want = q.conv_ref(x, wt, bias, mult, shift, 0, 0, 0, 60 * 256 + 255, pads=(1, 1, 1, 1))
    got = Image.get(out, 4096, h * w * cout, np.int16).reshape(h, w, cout)
    assert np.array_equal(got, want[0].transpose(1, 2, 0))
    assert _cycles_of(stats) == 4 * gemm_cycles(h * w, cout, 9 * cin, 32, 32, 0, 0)
    with pytest.raises(ProgramError, match="wide .* accumulator has no int32 form"):
        single(Opcode.CONV, image=img.b, **{**f, "out": DType.I32})
    with pytest.raises(ProgramError, match="must be a multiple of 8"):
        single(Opcode.CONV, image=img.b, **{**f, "qp": 2052})
    with pytest.raises(ProgramError, match="has no int16 MAC mode"):
        single(Opcode.CONV, load_target("npu-lite"), img.b, **f)


def test_lut_interpolated_per_channel() -> None:
    rng = np.random.default_rng(12)
    nch, n = 3, 300
    x = rng.integers(-32768, 32768, n).astype(np.int16)
    # windowed tables (and one with an arbitrary header: k is clamped, every x stays in bounds)
    tabs = np.stack([q.lut16_table(np.sort(rng.integers(-32768, 32768, q.LUT16_KNOTS)), x0, k,
                                   int(rng.integers(-2**31, 2**31)),
                                   int(rng.integers(-2**31, 2**31)))
                     for x0, k in ((-300, 0), (-32768, 7), (1000, 3))])
    tabs[2, q.LUT16_KNOTS + 1] = 99
    img = Image()
    img.put(0, x)
    img.put(1024, tabs)
    got = _vec(Opcode.LUT, img, n, np.int16, src=0, table=1024, count=n, out_dt=DType.I16,
               in_dt=DType.I16, tables=nch)
    want = [q.lut16_ref(np.int64(v), tabs[i % nch].astype(np.int64), -32768, 32767)
            for i, v in enumerate(x)]
    assert np.array_equal(got, want)
    small = q.lut16_table(np.sort(rng.integers(-128, 128, q.LUT16_KNOTS)), -5000, 4, 1 << 14,
                          -(1 << 15))  # i8 results, extrapolated past the int8 range: clamped
    img.put(1024, small)
    got = _vec(Opcode.LUT, img, n, np.int8, src=0, table=1024, count=n, out_dt=DType.I8,
               in_dt=DType.I16)
    assert np.array_equal(got, q.lut16_ref(x.astype(np.int64), small.astype(np.int64), -128,
                                           127))


def test_rescale_to_int32_and_pool_int16() -> None:
    rng = np.random.default_rng(13)
    n = 200
    x = rng.integers(-32768, 32768, n).astype(np.int16)
    img = Image()
    img.put(0, x)
    m, s = q.quantize_multiplier(300.7)
    got = _vec(Opcode.RESCALE, img, n, np.int32, src=0, count=n, in_dt=DType.I16,
               out_dt=DType.I32, mult=m, shift=s, zx=0, zy=-32768)
    assert np.array_equal(got, q.rescale_ref(x.astype(np.int64), 0, m, s, -32768, -2**31,
                                             2**31 - 1))
    h, w, c = 5, 6, 3
    xp = rng.integers(-32768, 32768, (1, c, h, w)).astype(np.int16)
    img.put(0, xp[0].transpose(1, 2, 0))
    f = dict(src=0, h=h, w=w, c=c, kh=2, kw=2, sh=2, sw=2, pt=0, pb=1, pl=0, pr=0,
             lo=-30000, hi=30000, mode=PoolMode.MAX, in_dt=DType.I16, out_dt=DType.I16)
    want = q.maxpool_ref(xp, (2, 2), (2, 2), (0, 0, 1, 0), -30000, 30000)
    ho, wo = want.shape[2:]
    got = _vec(Opcode.POOL, img, ho * wo * c, np.int16, **f).reshape(ho, wo, c)
    assert np.array_equal(got, want[0].transpose(1, 2, 0))
    mult, shift = q.avgpool_multipliers(1 / 300, 4)
    img.put(4000, np.concatenate([mult, shift]).astype(np.int32))
    f.update(mode=PoolMode.AVG, qp=4000, out_dt=DType.I8, zy=3, lo=-128, hi=127)
    want = q.avgpool_ref(xp, (2, 2), (2, 2), (0, 0, 1, 0), 0, 3, mult, shift, lo=-128, hi=127)
    got = _vec(Opcode.POOL, img, ho * wo * c, np.int8, **f).reshape(ho, wo, c)
    assert np.array_equal(got, want[0].transpose(1, 2, 0))
    with pytest.raises(ProgramError, match="max pooling keeps the input type"):
        single(Opcode.POOL, image=img.b, dst=8192, **{**f, "mode": PoolMode.MAX})
