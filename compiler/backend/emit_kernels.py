"""Emitters of the tiled kernels: conv and pool (output row bands x cout blocks), matmul (row x
column blocks), elementwise chains (flat chunks), concat and layout copies. Each kernel's fused
elementwise tail runs on the tile in SRAM before it is put to its home. Tilings (the `params`)
come from tiling.py; buffers that the tiles of a loop take turns with are double (ping-pong).
Layout copies and the other data movement kernels are in moves.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ocrc.compiler.backend import layout as L
from ocrc.compiler.backend.emit import KernelEmitter, View
from ocrc.compiler.backend.moves import CopyEmitter
from ocrc.compiler.backend.schedule import SRAM
from ocrc.compiler.backend.weights import MacWeights
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Node, Value
from ocrc.runtime.isa import DType, Opcode, PoolMode


class Misfit(Exception):
    """A candidate tiling the kernel cannot use (e.g. a broadcast operand misaligned)."""


def identity_rescale(zx: int, zy: int, mult: int, shift: int) -> bool:
    return zx == zy and mult == 1 << 30 and shift == 30


class TailMixin(KernelEmitter):
    """The fused elementwise ops of a kernel, applied to a dense tile [rows][cb] of the
    output view in SRAM."""

    def prepare_tail(self, nodes: list[Node], out: View, rows: int, cb: int) -> None:
        self._tail: list[tuple[Node, Any]] = []
        for n in nodes:
            aux: Any = None
            if n.op.name == "npu.lut":
                table = self.ctx.array(n.inputs[1])
                if table.ndim == 2 and out.c > 1:  # per-channel: each tile loads its block
                    aux = (self.const(f"{n.output.name}.table", table),
                           [self.alloc(cb * 256) for _ in range(2)])
                else:
                    aux = self.load_const(f"{n.output.name}.table", table)
            elif n.op.name in ("npu.add", "npu.mul"):
                b = n.inputs[1]
                assert b is not None
                if b.type.shape == n.output.type.shape:
                    bv = self.ctx.view(b, out.c)
                    bufs = [self.alloc(rows * cb) for _ in range(2)] \
                        if self.needs_buf(bv, rows, cb) else [None, None]
                    aux = ("full", bv, bufs)
                else:
                    aux = ("periodic", self.periodic(b), b.type.size)
            self._tail.append((n, aux))

    def channel_tables(self, n: Node, aux: Any, box: tuple[int, int, int, int], out: View,
                       parity: int) -> tuple[int, int]:
        """(table address, tables) of a per-channel LUT on a tile of the NHWC output: a
        [rows][c0:c1] box of channels loads tables c0..c1-1 into a tile buffer; a flat chunk
        (one column, all tables resident) starts at a multiple of the channel count
        (tiling.candidates keeps chunks so)."""
        p0, _, c0, c1 = box
        nch = n.inputs[1].type.shape[0]  # type: ignore[union-attr]
        if out.c == 1:
            assert p0 % nch == 0, f"{n.label()}: chunk at {p0} is not channel-aligned"
            return aux, nch
        assert out.c == nch, f"{n.label()}: per-channel tables on a {out.c}-column view"
        dram, bufs = aux
        self.dma(Opcode.LOAD, dram + 256 * c0, bufs[parity], 256 * (c1 - c0))
        return bufs[parity], c1 - c0

    def periodic(self, b: Value) -> int:
        """A broadcast operand loaded whole into the workspace (SRAM address)."""
        if b in self.ctx.values:
            return self.load_const(f"{b.name}.b", self.ctx.array(b).astype(np.int8))
        v = self.ctx.flat(b)
        buf = self.alloc(b.type.size)
        return self.fetch(v, 0, v.p, 0, 1, buf)

    def apply(self, n: Node, aux: Any, src: int, dst: int, box: tuple[int, int, int, int],
              out: View, parity: int) -> None:
        """One elementwise op: src -> dst (count = the box's elements)."""
        p0, p1, c0, c1 = box
        count = (p1 - p0) * (c1 - c0)
        a = n.all_attrs
        if n.op.name == "npu.lut":
            table, tables = aux, 0
            if n.inputs[1].type.rank == 2:  # type: ignore[union-attr]
                table, tables = self.channel_tables(n, aux, box, out, parity)
            self.ins(Opcode.LUT, src=src, dst=dst, count=count, table=table, tables=tables,
                     out_dt=DType.I8)
            return
        if n.op.name == "npu.rescale":
            self.ins(Opcode.RESCALE, src=src, dst=dst, count=count, in_dt=DType.I8,
                     out_dt=DType.I8, mult=a["mult"], shift=a["shift"], zx=a["x_zp"],
                     zy=a["y_zp"], lo=a["lo"], hi=a["hi"])
            return
        kind, bref, extra = aux
        if kind == "full":
            b, period = self.fetch(bref, p0, p1, c0, c1, extra[parity]), count
        else:
            period_total = extra
            cb = c1 - c0
            if cb == out.c and (p0 * out.c) % period_total == 0 and count % period_total == 0:
                b, period = bref, period_total
            elif period_total == out.c:
                b, period = bref + c0, cb
            else:
                raise Misfit(f"{n.label()}: broadcast operand does not align with the tile")
        common = dict(a=src, b=b, dst=dst, count=count, b_period=period, za=a["a_zp"],
                      zb=a["b_zp"], zy=a["y_zp"], lo=a["lo"], hi=a["hi"])
        if n.op.name == "npu.add":
            self.ins(Opcode.ADD, ma=a["a_mult"], sa=a["a_shift"], mb=a["b_mult"],
                     sb=a["b_shift"], **common)
        else:
            self.ins(Opcode.MUL, mult=a["mult"], shift=a["shift"], **common)

    def tail(self, dst: int, box: tuple[int, int, int, int], out: View, parity: int) -> None:
        for n, aux in self._tail:
            self.apply(n, aux, dst, dst, box, out, parity)


def _bands(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, step)]


class ConvEmitter(TailMixin):
    """npu.conv / npu.pool: params rb (output rows per band), cb (cout per block), order."""

    def run(self) -> None:
        n = self.kernel.anchor
        a = n.all_attrs
        is_conv = n.op.name == "npu.conv"
        x = n.inputs[0]
        assert x is not None
        _, cin, h, w = x.type.shape
        _, cout, ho, wo = n.output.type.shape
        xv, ov = self.ctx.view(x, cin), self.ctx.view(self.kernel.outputs[0], cout)
        rb, cb = self.params["rb"], self.params["cb"]
        if is_conv:
            kh, kw = self.ctx.array(n.inputs[1]).shape[1:3]
            (sh, sw), (dh, dw), g = a["strides"], a["dilations"], a["group"]
        else:
            (kh, kw), (sh, sw), (dh, dw), g = a["kernel_shape"], a["strides"], (1, 1), 1
        pt, pl, _, pr = a["pads"]
        bands, blocks = _bands(ho, rb), _bands(cout, cb)
        # Channel blocks of grouped convs and pools take whole groups and read only their
        # groups' input channels (a pool is a depthwise op: one channel per group).
        ng, cg = (cout // g, cin // g) if is_conv else (1, 1)
        split_in = (g > 1 or not is_conv) and len(blocks) > 1
        # sub: blocks inside one group of a grouped conv (alexnet's conv2: a group's weights
        # alone crowd npu-lite), each run as an ungrouped conv of that group's input channels
        sub = split_in and g > 1 and cb < ng and ng % cb == 0
        if split_in and cb % ng and not sub:
            raise Misfit("a channel block must hold whole groups")
        cin_b = cg if sub else cb // ng * cg if split_in else cin
        # reduction split (ungrouped convs): input channels in chunks of kc, the int32 partial
        # sums accumulate in SRAM (CONV acc=1) and one REQUANT per tile finishes them
        kc = self.params.get("kc", cin) if is_conv and g == 1 else cin_b
        chunks = _bands(cin_b, kc) if not split_in else [(0, cin_b)]
        red = len(chunks) > 1
        cin_b = chunks[0][1] - chunks[0][0]
        geo = []
        for oy0, oy1 in bands:
            iy0 = max(0, oy0 * sh - pt)
            iy1 = min(h, (oy1 - 1) * sh - pt + dh * (kh - 1) + 1)
            tpt = iy0 - (oy0 * sh - pt)
            tpb = max(0, (oy1 - oy0 - 1) * sh + dh * (kh - 1) + 1 - (iy1 - iy0) - tpt)
            if max(tpt, tpb, pl, pr) > 15:
                raise UnsupportedOpError(f"{n.label()}: padding > 15 does not fit the ISA")
            geo.append((oy0, oy1, iy0, iy1, tpt, tpb))
        lim = 7 if is_conv else 15  # CONV strides are 3-bit fields, POOL's 4-bit
        if (sh > lim and rb > 1) or sw > lim:
            raise Misfit("the stride does not fit the instruction's field")
        hmax = max(g_[3] - g_[2] for g_ in geo)
        nbuf = 2 if self.params.get("db", True) else 1  # double-buffered staging
        self.overlap = nbuf == 2
        xbufs = [self.alloc(hmax * w * cin_b) for _ in range(nbuf)] \
            if self.needs_buf(xv, 2, cin_b) else [None]
        gi_of = (lambda c0, c1: 1) if sub else (lambda c0, c1: (c1 - c0) // ng) if split_in \
            else (lambda c0, c1: g)
        load = self._weights(n, blocks, is_conv, gi_of, rb * wo, chunks)
        in_place = self.in_place(ov, cb)
        obufs = [None] if in_place else [self.alloc(rb * wo * cb) for _ in range(nbuf)]
        accbuf = self.alloc(rb * wo * cb * 4) if red else None
        zq = self.load_const("zero_qp", np.zeros(3 * cb, np.int32)) if red else None
        self.prepare_tail(self.kernel.nodes[1:], ov, rb * wo, cb)
        inner_bands = self.params.get("order", "bands") == "bands" or len(blocks) == 1
        order = ([(j, i) for j in range(len(blocks)) for i in range(len(bands))] if inner_bands
                 else [(j, i) for i in range(len(bands)) for j in range(len(blocks))])
        loaded, t, nfetch, xa, xband = -1, 0, 0, None, (-1, -1)
        for j, i in order:
            self.tile()
            oy0, oy1, iy0, iy1, tpt, tpb = geo[i]
            c0, c1 = blocks[j]
            dst = ov.at(oy0 * wo, c0) if in_place else obufs[t % len(obufs)]
            for q, (k0, k1) in enumerate(chunks):
                if (j, q) != loaded:
                    wb, qb, mac = load(j, q)
                    loaded = (j, q)
                ic0, ic1 = ((c0 // ng * cg, c0 // ng * cg + cg) if sub else
                            (c0 // ng * cg, c1 // ng * cg) if split_in else (k0, k1))
                if xband != (i, ic0):
                    xa = self.fetch(xv, iy0 * w, iy1 * w, ic0, ic1,
                                    xbufs[nfetch % len(xbufs)])
                    xband, nfetch = (i, ic0), nfetch + 1
                # A band of one output row has exactly one window: any stride gives it, and 1
                # fits the ISA's stride field whatever the layer's stride.
                f = dict(src=xa, h=iy1 - iy0, w=w, kh=kh, kw=kw,
                         sh=1 if oy1 - oy0 == 1 else sh, sw=sw, pt=tpt,
                         pb=tpb, pl=pl, pr=pr, lo=a["lo"], hi=a["hi"])
                if not is_conv:
                    break
                common = dict(cin=ic1 - ic0, cout=c1 - c0, dh=dh, dw=dw, groups=gi_of(c0, c1),
                              zx=a["x_zp"], **f)
                if red:
                    self.ins(Opcode.CONV, mac, wgt=wb, qp=zq, dst=accbuf, zy=0, out=DType.I32,
                             acc=int(q > 0), **common)
                else:
                    self.ins(Opcode.CONV, mac, wgt=wb, qp=qb, dst=dst, zy=a["y_zp"],
                             out=DType.I8, **common)
            if red:
                self.ins(Opcode.REQUANT, src=accbuf, dst=dst, count=(oy1 - oy0) * wo * (c1 - c0),
                         chan=c1 - c0, qp=qb, zy=a["y_zp"], lo=a["lo"], hi=a["hi"],
                         out_dt=DType.I8)
            if not is_conv:
                f["dst"] = dst
                mode = {"max": PoolMode.MAX, "avg": PoolMode.AVG,
                        "avg_pad": PoolMode.AVG_PAD}[a["mode"]]
                self.ins(Opcode.POOL, qp=qb, c=ic1 - ic0, zx=a["x_zp"], zy=a["y_zp"], mode=mode,
                         **f)
            box = (oy0 * wo, oy1 * wo, c0, c1)
            self.tail(dst, box, ov, t % 2)
            self.put(ov, oy0 * wo, oy1 * wo, c0, c1, dst)
            t += 1

    def _weights(self, n: Node, blocks: list[tuple[int, int]], is_conv: bool, gi_of: Any,
                 m: int, chunks: list[tuple[int, int]]) -> Any:
        """A function (block, input-channel chunk) -> (SRAM weights, SRAM qp, sparsity plan)
        that loads them (ping-pong; the qp with a block's first chunk); each (block, chunk) is
        its own stream in its smallest format."""
        if not is_conv:
            qp = 0
            if n.inputs[1] is not None:
                qp = self.load_const(f"{n.output.name}.qp", self.ctx.array(n.inputs[1]))
            return lambda j, q: (0, qp, None)
        wv = n.inputs[1]
        w = self.ctx.array(wv).astype(np.int8)
        qp_all = self.ctx.array(n.inputs[2])
        whole = len(chunks) == 1 and chunks[0] == (0, w.shape[3])
        cb = blocks[0][1] - blocks[0][0]
        kk = int(np.prod(w.shape[1:3])) * (chunks[0][1] - chunks[0][0])
        qblob = np.concatenate([qp_all[:, c0:c1].ravel() for c0, c1 in blocks]).astype(np.int32)
        if whole:  # the key names a block across tilings (the unsplit form as before)
            parts = [((wv, c0, c1), w[c0:c1]) for c0, c1 in blocks]
        else:
            parts = [((wv, c0, c1, k0, k1), w[c0:c1, :, :, k0:k1]) for c0, c1 in blocks
                     for k0, k1 in chunks]
        wd, streams = self.weight_streams(f"{n.output.name}.w", parts)
        qd = self.const(f"{n.output.name}.qp", qblob)
        nb = 1 if len(parts) == 1 else 2
        nq = 1 if len(blocks) == 1 else 2
        wbufs = [self.alloc(cb * kk) for _ in range(nb)]
        qbufs = [self.alloc(12 * cb) for _ in range(nq)]
        count = [0, -1, 0]  # weight loads, block of the loaded qp, qp loads

        def load(j: int, q: int) -> tuple[int, int, MacWeights]:
            c0, c1 = blocks[j]
            k = count[0] % nb
            count[0] += 1
            self.loadw(wd, streams[j * len(chunks) + q], wbufs[k])
            if count[1] != j:
                count[1], count[2] = j, count[2] + 1
                self.dma(Opcode.LOAD, qd + 12 * c0, qbufs[count[2] % nq], 12 * (c1 - c0))
            gi = gi_of(c0, c1)
            key = (wv, c0, c1, m) if whole else (wv, c0, c1, *chunks[q], m)
            blk = parts[j * len(chunks) + q][1]
            mac = self.ctx.weights.mac(key, blk.reshape(gi, (c1 - c0) // gi, -1), m)
            return wbufs[k], qbufs[count[2] % nq], mac
        return load


class MatmulEmitter(TailMixin):
    """npu.matmul: params mb (rows per block), nb (columns per block), kb (reduction block:
    below K the int32 partial sums accumulate in SRAM and a REQUANT finishes each tile)."""

    def run(self) -> None:
        n = self.kernel.anchor
        a = n.all_attrs
        x = n.inputs[0]
        assert x is not None
        wt, qp = self.ctx.array(n.inputs[1]).astype(np.int8), self.ctx.array(n.inputs[2])
        nn_, k = wt.shape
        m = x.type.size // k
        xv = self.ctx.view(x, k)
        ov = self.ctx.view(self.kernel.outputs[0], nn_)
        i32 = a["out"] == "i32"
        oe = 4 if i32 else 1
        mb, nb, kb = self.params["mb"], self.params["nb"], self.params.get("kb", k)
        rows, cols, ks = _bands(m, mb), _bands(nn_, nb), _bands(k, kb)
        split = len(ks) > 1
        tail = self.kernel.nodes[1:]
        xbufs = [self.alloc(mb * k) for _ in range(2 if len(rows) > 1 else 1)] \
            if self.needs_buf(xv, 2, k) else [None]
        nwb = 1 if len(cols) == 1 and not split else 2
        wbufs = [self.alloc(nb * kb) for _ in range(nwb)]
        qbufs = [self.alloc(12 * nb) for _ in range(1 if len(cols) == 1 else 2)]
        # requantised in the MATMUL itself (i8, one K block) or by a REQUANT after it
        via_acc = i32 or split
        direct = ov.mem == SRAM and not tail and (not via_acc or nb == nn_)
        obufs = [None, None] if direct else [self.alloc(mb * nb * oe) for _ in range(2)]
        accbuf = self.alloc(mb * nb * 4) if split else None
        zq = self.load_const("zero_qp", np.zeros(3 * nb, np.int32)) if via_acc else None
        self.prepare_tail(tail, ov, mb, nb)
        # one stream per weight block [col block][k block], in load order
        wv = n.inputs[1]
        wd, streams = self.weight_streams(f"{n.output.name}.w", [
            ((wv, c0, c1, k0, k1), wt[c0:c1, k0:k1]) for c0, c1 in cols for k0, k1 in ks])
        qblob = np.concatenate([qp[:, c0:c1].ravel() for c0, c1 in cols]).astype(np.int32)
        qd = self.const(f"{n.output.name}.qp", qblob)
        t, nw = 0, 0
        for j, (c0, c1) in enumerate(cols):
            qb = qbufs[j % len(qbufs)]
            self.dma(Opcode.LOAD, qd + 12 * c0, qb, 12 * (c1 - c0))
            for i, (r0, r1) in enumerate(rows):
                self.tile()
                xa = self.fetch(xv, r0, r1, 0, k, xbufs[i % len(xbufs)])
                if direct:
                    dst, d_rs = ov.at(r0, c0), ov.c * oe
                else:
                    dst, d_rs = obufs[t % 2], (c1 - c0) * oe
                for kk, (k0, k1) in enumerate(ks):
                    if i == 0 or split:
                        wb = wbufs[nw % nwb]
                        nw += 1
                        self.loadw(wd, streams[j * len(ks) + kk], wb)
                    mac = self.ctx.weights.mac((wv, c0, c1, k0, k1, mb),
                                               wt[None, c0:c1, k0:k1], mb)
                    mm = dict(a=xa + k0, b=wb, m=r1 - r0, n=c1 - c0, k=k1 - k0, a_rs=k,
                              zx=a["x_zp"])
                    if split:
                        self.ins(Opcode.MATMUL, mac, qp=zq, dst=accbuf, d_rs=4 * (c1 - c0),
                                 out=DType.I32, acc=int(kk > 0), **mm)
                    elif i32:
                        self.ins(Opcode.MATMUL, mac, qp=zq, dst=dst, d_rs=d_rs, out=DType.I32,
                                 **mm)
                    else:
                        self.ins(Opcode.MATMUL, mac, qp=qb, dst=dst, d_rs=d_rs, zy=a["y_zp"],
                                 lo=a["lo"], hi=a["hi"], out=DType.I8, **mm)
                if via_acc:
                    src = accbuf if split else dst
                    rq = dict(zy=0, lo=0, hi=0, out_dt=DType.I32) if i32 else dict(
                        zy=a["y_zp"], lo=a["lo"], hi=a["hi"], out_dt=DType.I8)
                    self.ins(Opcode.REQUANT, src=src, dst=dst, count=(r1 - r0) * (c1 - c0),
                             chan=c1 - c0, qp=qb, **rq)
                box = (r0, r1, c0, c1)
                self.tail(dst, box, ov, t % 2)
                if not direct:
                    self.put(ov, r0, r1, c0, c1, dst)
                t += 1


class EltwiseEmitter(TailMixin):
    """An unfused elementwise op and its tail over flat chunks: params ce (elements)."""

    def run(self) -> None:
        first = self.kernel.anchor
        x = first.inputs[0]
        assert x is not None
        xv, ov = self.ctx.flat(x), self.ctx.flat(self.kernel.outputs[0])
        size, ce = x.type.size, self.params["ce"]
        chunks = _bands(size, ce)
        xbufs = [self.alloc(ce) for _ in range(2)] if xv.mem != SRAM else [None, None]
        obufs = [self.alloc(ce) for _ in range(2)] if ov.mem != SRAM else [None, None]
        self.prepare_tail(self.kernel.nodes, ov, ce, 1)
        head, rest = self._tail[0], self._tail[1:]
        for t, (e0, e1) in enumerate(chunks):
            self.tile()
            src = self.fetch(xv, e0, e1, 0, 1, xbufs[t % 2])
            dst = ov.at(e0) if ov.mem == SRAM else obufs[t % 2]
            box = (e0, e1, 0, 1)
            self.apply(head[0], head[1], src, dst, box, ov, t % 2)
            for nd, aux in rest:
                self.apply(nd, aux, dst, dst, box, ov, t % 2)
            self.put(ov, e0, e1, 0, 1, dst)


class ConcatEmitter(KernelEmitter):
    """npu.concat: every operand rescaled (unless identity) into its slice; params rc (rows)."""

    def run(self) -> None:
        n = self.kernel.anchor
        a = n.all_attrs
        out = self.kernel.outputs[0]
        lay = self.ctx.plan.layout[out]
        outer, inner = L.concat_view(out.type.shape, lay, a["axis"])
        ov = self.ctx.view(out)
        ov = View(ov.mem, ov.addr, outer, out.type.shape[a["axis"]] * inner, 1)
        rc = self.params["rc"]
        off = 0
        for i, x in enumerate(n.inputs):
            assert x is not None
            ci = x.type.shape[a["axis"]] * inner
            base = self.ctx.view(x)
            xv = View(base.mem, base.addr, outer, ci, 1)
            ident = identity_rescale(a["x_zps"][i], a["y_zp"], a["mults"][i], a["shifts"][i])
            mark = self.top
            xb = self.alloc(rc * ci) if xv.mem != SRAM else None
            rbuf = None if ident else self.alloc(rc * ci)
            for r0, r1 in _bands(outer, rc):
                self.tile()
                src = self.fetch(xv, r0, r1, 0, ci, xb)
                if not ident:
                    self.ins(Opcode.RESCALE, src=src, dst=rbuf, count=(r1 - r0) * ci,
                             in_dt=DType.I8, out_dt=DType.I8, mult=a["mults"][i],
                             shift=a["shifts"][i], zx=a["x_zps"][i], zy=a["y_zp"], lo=-128,
                             hi=127)
                    src = rbuf
                self.put(ov, r0, r1, off, off + ci, src)
            self.top = mark
            off += ci


EMITTERS = {"npu.conv": ConvEmitter, "npu.pool": ConvEmitter, "npu.matmul": MatmulEmitter,
            "npu.concat": ConcatEmitter, "npu.copy": CopyEmitter}
for _op in ("npu.lut", "npu.rescale", "npu.add", "npu.mul"):
    EMITTERS[_op] = EltwiseEmitter
