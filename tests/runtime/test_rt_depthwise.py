"""The depthwise CONV kernel (kernels_dw.conv_dw) writes the very bytes and counts the very
cycles of the general kernels.conv on the same SRAM image, for every output form, geometry and
sparsity mode; the VM takes it only when the output overlaps none of the operands, and with an
overlapping output the program still gives the general kernel's result."""

from __future__ import annotations

import numpy as np
import pytest
from ocrc.runtime import kernels as K
from ocrc.runtime import kernels_dw as D
from ocrc.runtime import qmath as q
from ocrc.runtime.isa import DType, Opcode, Sparse
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM

from tests.runtime.rtutil import IMAGE, Image, run_single, single

NPU = load_target("npu")
SRC, WGT, QP, DST = 0, 6144, 7168, 8192


def _image(rng: np.random.Generator, c: int, h: int, w: int, k: int) -> np.ndarray:
    img = Image()
    img.b[:] = rng.integers(0, 256, IMAGE)  # garbage everywhere, operands below
    img.put(SRC, rng.integers(-128, 128, h * w * c).astype(np.int8))
    wt = rng.integers(-128, 128, (c, k)).astype(np.int8)
    wt[0] = -128
    wt[-1, ::2] = 0  # zero blocks / 2:4 patterns for the sparse cycle counts
    img.put(WGT, wt)
    mult, shift = zip(*(q.quantize_multiplier(v) for v in rng.uniform(1e-4, 1e-2, c)))
    bias = rng.integers(-5000, 5000, c)
    img.put(QP, np.concatenate([bias, mult, shift]).astype(np.int32))
    return img.b


def _both(img: np.ndarray, **fields: int) -> None:
    """Run the general and the depthwise kernel on copies of img: same bytes, same result."""
    vm = VM(single(Opcode.CONV, NPU, img, **fields))
    f = vm.fields[1]
    assert D.dw_applies(f)
    a = np.zeros(NPU.sram_bytes, np.uint8)  # the whole SRAM: outputs may pass the image
    a[:img.size] = img
    b = a.copy()
    ra = K.conv(a, f, vm.params)
    rb = D.conv_dw(b, f, vm.params)
    assert tuple(ra) == tuple(rb)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("c", "h", "w", "kh", "kw", "s", "d", "pads"), [
    (32, 6, 20, 3, 3, 1, 1, (1, 1, 1, 1)),
    (16, 8, 12, 3, 3, 2, 1, (1, 0, 1, 1)),  # stride 2, asymmetric padding
    (8, 5, 15, 5, 5, 1, 1, (2, 2, 2, 2)),
    (7, 9, 9, 3, 3, 1, 2, (2, 2, 2, 2)),  # dilation, an odd channel count
    (1, 4, 30, 1, 3, 1, 1, (0, 0, 1, 1)),  # one channel
    (64, 3, 4, 3, 3, 3, 1, (0, 3, 0, 3)),  # windows wholly in the padding
])
@pytest.mark.parametrize("out", ["i8", "i16", "i32", "i32acc"])
def test_depthwise_matches_the_general_kernel(c: int, h: int, w: int, kh: int, kw: int, s: int,
                                              d: int, pads: tuple[int, int, int, int],
                                              out: str) -> None:
    rng = np.random.default_rng(c * h + kw)
    img = _image(rng, c, h, w, kh * kw)
    pt, pb, pl, pr = pads
    form = {"i8": {"out": DType.I8, "zy": -5, "lo": -100, "hi": 120},
            "i16": {"out": DType.I16, "zy": 3, "lo": -90, "hi": 90},
            "i32": {"out": DType.I32}, "i32acc": {"out": DType.I32, "acc": 1}}[out]
    for zx in (-128, 0, 127):
        for sparse in (Sparse.DENSE, Sparse.ZERO_BLOCK, Sparse.TWO_FOUR):
            _both(img, src=SRC, wgt=WGT, qp=QP, dst=DST, h=h, w=w, cin=c, cout=c, kh=kh, kw=kw,
                  sh=s, sw=s, dh=d, dw=d, pt=pt, pb=pb, pl=pl, pr=pr, groups=c, zx=zx,
                  sparse=sparse, **form)


def test_overlapping_output_takes_the_general_kernel() -> None:
    """Output over the input (in place), over the weights, over the qp block: not the
    depthwise kernel, and the program gives the general kernel's bytes."""
    rng = np.random.default_rng(3)
    c, h, w = 16, 4, 6
    img = _image(rng, c, h, w, 9)
    geom = {"src": SRC, "wgt": WGT, "qp": QP, "h": h, "w": w, "cin": c, "cout": c, "kh": 3,
            "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 1, "pb": 1, "pl": 1, "pr": 1,
            "groups": c, "zx": -3, "zy": 2, "lo": -128, "hi": 127, "out": DType.I8}
    for dst in (SRC, SRC + 8, WGT - 16, QP - 4):
        vm = VM(single(Opcode.CONV, NPU, img, dst=dst, **geom))
        f = vm.fields[1]
        assert not D.dw_applies(f)
        want = np.zeros(NPU.sram_bytes, np.uint8)
        want[:img.size] = img
        K.conv(want, f, vm.params)
        got, _ = run_single(Opcode.CONV, img, NPU, dst=dst, **geom)
        assert np.array_equal(got, want[:img.size])


def test_not_depthwise() -> None:
    """Grouped convolutions with several channels per group, int16 input: not this kernel."""
    rng = np.random.default_rng(4)
    img = _image(rng, 8, 4, 4, 9)
    geom = {"src": SRC, "wgt": WGT, "qp": QP, "dst": DST, "h": 4, "w": 4, "kh": 1, "kw": 1,
            "sh": 1, "sw": 1, "dh": 1, "dw": 1, "out": DType.I8, "lo": -128, "hi": 127}
    for extra in ({"cin": 8, "cout": 8, "groups": 4}, {"cin": 4, "cout": 8, "groups": 4},
                  {"cin": 8, "cout": 4, "groups": 4},
                  {"cin": 8, "cout": 8, "groups": 8, "in_dt": DType.I16}):
        vm = VM(single(Opcode.CONV, NPU, img, **geom, **extra))
        assert not D.dw_applies(vm.fields[1])


def test_plain_python_runs_the_same_code() -> None:
    """conv_dw as plain Python (what NUMBA_DISABLE_JIT=1 runs) gives the jitted bytes."""
    rng = np.random.default_rng(6)
    img = _image(rng, 5, 3, 4, 9)
    vm = VM(single(Opcode.CONV, NPU, img, src=SRC, wgt=WGT, qp=QP, dst=DST, h=3, w=4, cin=5,
                   cout=5, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pt=1, pb=1, pl=1, pr=1, groups=5,
                   zx=-128, zy=1, lo=-128, hi=127, out=DType.I8))
    a = np.zeros(NPU.sram_bytes, np.uint8)
    a[:img.size] = img
    b = a.copy()
    assert tuple(D.conv_dw(a, vm.fields[1], vm.params)) == tuple(
        D.conv_dw.py_func(b, vm.fields[1], vm.params))
    assert np.array_equal(a, b)
