"""Data movement kernels: `npu.copy` (relayout, tiled along the outermost destination dim) and
`npu.move`: pad (constant), slice, split, gather (constant indices), expand and tile of quantised
graphs as strided boxes copied from the row-major input into the row-major output (FILL, then
COPY per box; negative steps and long dims looped), the operands staged whole in SRAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ocrc.compiler.backend import layout as L
from ocrc.compiler.backend.emit import DT, KernelEmitter
from ocrc.compiler.backend.schedule import SRAM
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Node
from ocrc.compiler.ir.opdef import AttrDef, Attrs, defop
from ocrc.compiler.ir.ops.tensor import slice_bounds
from ocrc.compiler.ir.types import TensorType
from ocrc.runtime.isa import Opcode

Box = tuple[int, int, list[tuple[int, int, int]]]  # src offset, dst offset, (count, ss, ds)
MAX16 = 65535
CHUNK = 32768


def encode(boxes: Sequence[Box]) -> tuple[int, ...]:
    """Flat ints: per box src offset, dst offset, rank, then (count, src stride, dst stride)."""
    out: list[int] = []
    for so, do, dims in boxes:
        out += [so, do, len(dims)]
        for d in dims:
            out += list(d)
    return tuple(out)


def decode(flat: Sequence[int]) -> list[Box]:
    out: list[Box] = []
    i = 0
    while i < len(flat):
        so, do, r = flat[i:i + 3]
        dims = [tuple(flat[i + 3 + 3 * k:i + 6 + 3 * k]) for k in range(r)]
        out.append((so, do, dims))  # type: ignore[arg-type]
        i += 3 + 3 * r
    return out


def _infer(types: Sequence[TensorType | None], a: Attrs) -> list[TensorType]:
    x = types[0]
    assert x is not None
    return [TensorType(x.dtype, tuple(a["shape"]))]


def _index(off: int, dims: Sequence[tuple[int, int, int]], which: int) -> np.ndarray:
    idx = np.full((1,) * len(dims), off, np.int64)
    for k, d in enumerate(dims):
        shape = [1] * len(dims)
        shape[k] = d[0]
        idx = idx + (np.arange(d[0], dtype=np.int64) * d[which]).reshape(shape)
    return idx.ravel()


def _ref(xs: Sequence[np.ndarray | None], a: Attrs) -> list[np.ndarray]:
    x = xs[0]
    assert x is not None
    out = np.full(int(np.prod(a["shape"], dtype=np.int64)), a["fill"], x.dtype)
    flat = np.ascontiguousarray(x).ravel()
    for so, do, dims in decode(a["boxes"]):
        out[_index(do, dims, 2)] = flat[_index(so, dims, 1)]
    return [out.reshape(a["shape"])]


MOVE = defop(
    "npu.move", ("x",), _infer, _ref,
    "Copy strided boxes of the row-major x into the row-major result (shape), every element "
    "no box writes being `fill` (filled = 1): pad, slice, split, gather, expand, tile.",
    attrs={"shape": AttrDef("ints"), "boxes": AttrDef("ints"), "fill": AttrDef("int", 0),
           "filled": AttrDef("int", 0), "layout": AttrDef("ints", ()),
           "fused": AttrDef("int", 0)}, traits=("npu",))


def strides(shape: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


# ---- the boxes of each op (offsets and strides in elements) ----------------------------------
def slice_boxes(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int],
                axes: Sequence[int], steps: Sequence[int]) -> tuple[list[int], Box]:
    sl = [slice(0, d, 1) for d in shape]
    axes = axes or tuple(range(len(starts)))
    steps = steps or (1,) * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        sl[ax % len(shape)] = slice_bounds(shape[ax % len(shape)], s, e, st)
    xs = strides(shape)
    out = [len(range(*s.indices(d))) for s, d in zip(sl, shape)]
    ys = strides(out)
    so = sum(s.indices(d)[0] * st for s, d, st in zip(sl, shape, xs))
    dims = [(n, s.indices(d)[2] * st, y) for n, s, d, st, y in zip(out, sl, shape, xs, ys)]
    return out, (so, 0, dims)


def pad_box(shape: Sequence[int], pads: Sequence[int]) -> tuple[list[int], Box]:
    r = len(shape)
    out = [d + pads[i] + pads[i + r] for i, d in enumerate(shape)]
    xs, ys = strides(shape), strides(out)
    inner = [d - max(-pads[i], 0) - max(-pads[i + r], 0) for i, d in enumerate(shape)]
    so = sum(max(-pads[i], 0) * xs[i] for i in range(r))
    do = sum(max(pads[i], 0) * ys[i] for i in range(r))
    return out, (so, do, [(n, xs[i], ys[i]) for i, n in enumerate(inner)])


def expand_box(shape: Sequence[int], out: Sequence[int]) -> Box:
    full = [1] * (len(out) - len(shape)) + list(shape)
    xs, ys = strides(full), strides(out)
    return 0, 0, [(o, xs[i] if full[i] == o else 0, ys[i]) for i, o in enumerate(out)]


def tile_box(shape: Sequence[int], reps: Sequence[int]) -> tuple[list[int], Box]:
    out = [d * r for d, r in zip(shape, reps)]
    xs, ys = strides(shape), strides(out)
    dims = []
    for i, (d, r) in enumerate(zip(shape, reps)):
        dims += [(r, 0, d * ys[i]), (d, xs[i], ys[i])]
    return out, (0, 0, dims)


def gather_boxes(shape: Sequence[int], idx: np.ndarray, axis: int) -> tuple[list[int], list[Box]]:
    ax = axis % len(shape)
    ks = np.where(idx < 0, idx + shape[ax], idx).ravel().astype(np.int64).tolist()
    out = list(shape[:ax]) + list(idx.shape) + list(shape[ax + 1:])
    xs = strides(shape)
    inner = int(np.prod(shape[ax + 1:], dtype=np.int64))
    outer_n = int(np.prod(shape[:ax], dtype=np.int64))
    ys_outer = len(ks) * inner
    boxes: list[Box] = []
    p = 0
    while p < len(ks):  # runs of consecutive indices are one box
        q = p + 1
        while q < len(ks) and ks[q] == ks[q - 1] + 1:
            q += 1
        dims = [(outer_n, shape[ax] * inner, ys_outer), (q - p, xs[ax], inner), (inner, 1, 1)]
        boxes.append((ks[p] * xs[ax], p * inner, dims))
        p = q
    return out, boxes


def merge(dims: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Unit dims dropped, adjacent dims contiguous on both sides merged."""
    out: list[tuple[int, int, int]] = []
    for c, s, d in dims:
        if c == 1:
            continue
        if out and out[-1][1] == c * s and out[-1][2] == c * d:
            out[-1] = (out[-1][0] * c, s, d)
        else:
            out.append((c, s, d))
    return out or [(1, 1, 1)]


def lower_move(n: Node, x_shape: Sequence[int], consts: dict[Any, Any]
               ) -> list[tuple[list[int], list[Box], int | None]]:
    """(output shape, boxes, fill or None) per result of a data-movement node."""
    a = n.all_attrs
    name = n.op.name
    shape = list(x_shape)
    if name == "slice":
        out, box = slice_boxes(shape, a["starts"], a["ends"], a["axes"], a["steps"])
        return [(out, [box], None)]
    if name == "split":
        ax = a["axis"] % len(shape)
        res, off = [], 0
        for s in a["sizes"]:
            out, box = slice_boxes(shape, [off], [off + s], [ax], [1])
            res.append((out, [box], None))
            off += s
        return res
    if name == "pad":
        if a["mode"] != "constant":
            raise UnsupportedOpError(f"{n.label()}: pad mode {a['mode']!r} on the NPU (only "
                                     "constant padding is lowered)")
        out, box = pad_box(shape, a["pads"])
        fill = int(np.asarray(a["value"]).astype(n.output.type.dtype.np))
        return [(out, [box], fill)]
    if name == "expand":
        out = list(n.output.type.shape)
        return [(out, [expand_box(shape, out)], None)]
    if name == "tile":
        out, box = tile_box(shape, a["repeats"])
        return [(out, [box], None)]
    if name == "gather":
        iv = n.inputs[1]
        if iv not in consts:
            raise UnsupportedOpError(f"{n.label()}: gather indices must be constant on the NPU")
        out, boxes = gather_boxes(shape, np.asarray(consts[iv]), a["axis"])
        return [(out, boxes, None)]
    raise AssertionError(name)


MOVE_OPS = ("pad", "slice", "split", "gather", "expand", "tile")


class MoveEmitter(KernelEmitter):
    """npu.move: x and y staged whole in SRAM (unless resident), FILL, one COPY per box (dims
    beyond three, negative strides and counts above 16 bits become loops)."""

    def run(self) -> None:
        n = self.kernel.anchor
        x, y = n.inputs[0], self.kernel.outputs[0]
        assert x is not None
        item = x.type.dtype.np.itemsize
        xv, yv = self.ctx.view(x), self.ctx.view(y)
        self.tile()
        src = xv.addr
        if xv.mem != SRAM:
            src = self.alloc(x.type.size * item)
            self.dma(Opcode.LOAD, xv.addr, src, x.type.size * item)
        dst = yv.addr if yv.mem == SRAM else self.alloc(y.type.size * item)
        if n.attr("filled"):
            for e0 in range(0, y.type.size, 1 << 23):
                self.ins(Opcode.FILL, dst=dst + e0 * item, count=min(1 << 23, y.type.size - e0),
                         value=n.attr("fill"), dt=DT[item])
        for so, do, dims in decode(n.attr("boxes")):
            self._box(src + so * item, dst + do * item, merge(dims), item)
        if yv.mem != SRAM:
            self.dma(Opcode.STORE, yv.addr, dst, y.type.size * item)

    def _box(self, src: int, dst: int, dims: list[tuple[int, int, int]], item: int) -> None:
        for i, (c, s, d) in enumerate(dims):
            if c > MAX16:
                for k0 in range(0, c, CHUNK):
                    part = (min(CHUNK, c - k0), s, d)
                    self._box(src + k0 * s * item, dst + k0 * d * item,
                              dims[:i] + [part] + dims[i + 1:], item)
                return
        neg = [i for i, (_, s, _) in enumerate(dims) if s < 0]
        if len(dims) > 3 or neg:
            i = neg[0] if neg else 0
            c, s, d = dims[i]
            rest = dims[:i] + dims[i + 1:] or [(1, 1, 1)]
            for k in range(c):
                self._box(src + k * s * item, dst + k * d * item, rest, item)
            return
        dims = [(1, 0, 0)] * (3 - len(dims)) + dims
        (c2, s2, d2), (c1, s1, d1), (c0, s0, d0) = dims
        self.ins(Opcode.COPY, src=src, dst=dst, n0=c0, n1=c1, n2=c2, ss0=s0 * item,
                 ds0=d0 * item, ss1=s1 * item, ds1=d1 * item, ss2=s2 * item, ds2=d2 * item,
                 esize=int(DT[item]))


def copy_plan(shape: tuple[int, ...], src_lay: L.Layout, dst_lay: L.Layout,
              item: int) -> list[tuple[int, int, int]]:
    """Dims of the copy in the destination's memory order, innermost last, as (count, src
    stride, dst stride) in bytes, with unit dims dropped and contiguous dims merged."""
    sst = L.byte_strides(shape, src_lay, item)
    dst = L.byte_strides(shape, dst_lay, item)
    dims = [(shape[a], sst[a], dst[a]) for a in L.full(dst_lay, len(shape)) if shape[a] != 1]
    merged: list[tuple[int, int, int]] = []
    for cnt, s, d in dims:
        if merged and merged[-1][1] == cnt * s and merged[-1][2] == cnt * d:
            pc = merged.pop()[0]
            cnt *= pc
        merged.append((cnt, s, d))
    return merged or [(1, item, item)]


class CopyEmitter(KernelEmitter):
    """npu.copy: relayout (strided COPYs). Untiled, the whole tensor is staged; with param
    parts = k, the outermost destination dim is cut into k chunks: each chunk's source box is
    gathered from DRAM by strided LOADs (dense, in source order), relaid by COPY into a dense
    slice of the destination and stored (double-buffered)."""

    def run(self) -> None:
        n = self.kernel.anchor
        x, y = n.inputs[0], self.kernel.outputs[0]
        assert x is not None
        item = x.type.dtype.np.itemsize
        dims = copy_plan(x.type.shape, self.ctx.plan.layout[x], self.ctx.plan.layout[y], item)
        xv, yv = self.ctx.view(x), self.ctx.view(y)
        parts = min(self.params.get("parts", 1), dims[0][0])
        step = -(-dims[0][0] // parts)
        chunks = _bands(dims[0][0], step)
        nbuf = 1 if len(chunks) == 1 else 2
        box_bytes = step * (x.type.size * item // dims[0][0])
        sbufs = [self.alloc(box_bytes) for _ in range(nbuf)] if xv.mem != SRAM else []
        dbufs = [self.alloc(box_bytes) for _ in range(nbuf)] if yv.mem != SRAM else []
        for t, (i0, i1) in enumerate(chunks):
            self.tile()
            box = [(i1 - i0, dims[0][1], dims[0][2])] + dims[1:]
            if xv.mem == SRAM:
                src, sbox = xv.addr + i0 * dims[0][1], box
            else:
                src = sbufs[t % nbuf]
                sbox = self._gather(xv.addr + i0 * dims[0][1], src, box, item)
            dst = yv.addr + i0 * dims[0][2] if yv.mem == SRAM else dbufs[t % nbuf]
            self._relayout(n, src, dst, sbox, item)
            if yv.mem != SRAM:
                self.dma(Opcode.STORE, yv.addr + i0 * dims[0][2], dst, (i1 - i0) * dims[0][2])

    def _gather(self, dram: int, sram: int, box: list[tuple[int, int, int]], item: int
                ) -> list[tuple[int, int, int]]:
        """LOAD the box (count, src stride, dst stride) at dram densely into sram, in source
        memory order; returns the box with the source strides replaced by the dense ones."""
        order = sorted(range(len(box)), key=lambda a: -box[a][1])
        dense = [0] * len(box)
        acc = item
        for a in reversed(order):
            dense[a] = acc
            acc *= box[a][0]
        # merge source-contiguous dims (outer stride == count * inner stride on both sides)
        runs: list[list[int]] = []  # [count, dram stride, sram stride]
        for a in order:
            c, s_, d_ = box[a][0], box[a][1], dense[a]
            if runs and runs[-1][1] == c * s_ and runs[-1][2] == c * d_:
                runs[-1] = [runs[-1][0] * c, s_, d_]
            else:
                runs.append([c, s_, d_])
        if runs[-1][1] != item:
            runs.append([1, item, item])
        n0 = runs[-1][0] * item
        outer = runs[:-1]
        if not outer:
            outer = [[1, 0, 0]]
        *loops, (n1, ds1, ss1) = outer
        idx = [0] * len(loops)
        while True:
            do = sum(i * r[1] for i, r in zip(idx, loops))
            so = sum(i * r[2] for i, r in zip(idx, loops))
            self.dma(Opcode.LOAD, dram + do, sram + so, n0, n1, ds1, ss1)
            if not _advance(idx, [r[0] for r in loops]):
                break
        return [(c, dense[a], d) for a, (c, _, d) in enumerate(box)]

    def _relayout(self, n: Node, src: int, dst: int, dims: list[tuple[int, int, int]],
                  item: int) -> None:
        dims = list(dims)
        while len(dims) < 3:
            dims.insert(0, (1, 0, 0))
        outer, (c2, s2, d2), (c1, s1, d1), (c0, s0, d0) = dims[:-3], *dims[-3:]
        if c0 > 65535 or c2 > 65535:
            raise UnsupportedOpError(f"{n.label()}: a copy dim exceeds 65535 elements")
        idx = [0] * len(outer)
        while True:
            so = sum(i * s for i, (_, s, _) in zip(idx, outer))
            do = sum(i * d for i, (_, _, d) in zip(idx, outer))
            self.copy(src + so, dst + do, c0, c1, s1, d1, item, n2=c2, ss2=s2, ds2=d2,
                      ss0=s0, ds0=d0)
            if not _advance(idx, [c for c, _, _ in outer]):
                break


def _bands(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _advance(idx: list[int], counts: list[int]) -> bool:
    """Next multi-index (last fastest); False after the last."""
    k = len(idx) - 1
    while k >= 0:
        idx[k] += 1
        if idx[k] < counts[k]:
            return True
        idx[k] = 0
        k -= 1
    return False
