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
from ocrc.compiler.backend.emit_tail import (  # noqa: F401 (Misfit: the tiler's name for it)
    Misfit,
    TailMixin,
    dt,
    identity_rescale,
    item,
)
from ocrc.compiler.backend.moves import CopyEmitter
from ocrc.compiler.backend.schedule import SRAM
from ocrc.compiler.backend.weights import MacWeights
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Node, Value
from ocrc.runtime import qmath
from ocrc.runtime.isa import DType, Opcode, PoolMode


def _pack_qp(qp: np.ndarray) -> bytes:
    """The bytes of a (bias, mult, shift) block as CONV/MATMUL read it: int32 [3][n], or for an
    i64 qp (int16 input, wide accumulator) int64 bias[n] then int32 mult[n], shift[n]."""
    if qp.dtype != np.int64:
        return np.ascontiguousarray(qp, np.int32).tobytes()
    return qp[0].astype(np.int64).tobytes() + np.ascontiguousarray(qp[1:], np.int32).tobytes()


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
        wide = item(x) == 2  # int16 input: the wide accumulator has no int32 partial sums
        if red and wide:
            raise Misfit("an int16-input conv does not split its reduction")
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
        xbufs = [self.alloc(hmax * w * cin_b * xv.item) for _ in range(nbuf)] \
            if self.needs_buf(xv, 2, cin_b) else [None]
        gi_of = (lambda c0, c1: 1) if sub else (lambda c0, c1: (c1 - c0) // ng) if split_in \
            else (lambda c0, c1: g)
        load = self._weights(n, blocks, is_conv, gi_of, rb * wo, chunks)
        in_place = self.in_place(ov, cb)
        obufs = [None] if in_place else [self.alloc(rb * wo * cb * ov.item)
                                         for _ in range(nbuf)]
        # the result's type (fused tails keep it: lower.mark_fusion); an i16 MAC result clamps
        # on the high byte (isa.py; lower.mac_clamp made the clamp so)
        ydt, idt = dt(n.outputs[0]), dt(x)
        clo, chi = (a["lo"] // 256, a["hi"] // 256) if ydt == DType.I16 else (a["lo"], a["hi"])
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
                if is_conv:
                    f.update(lo=clo, hi=chi, in_dt=idt)
                if not is_conv:
                    break
                common = dict(cin=ic1 - ic0, cout=c1 - c0, dh=dh, dw=dw, groups=gi_of(c0, c1),
                              zx=a["x_zp"], **f)
                if red:
                    self.ins(Opcode.CONV, mac, wgt=wb, qp=zq, dst=accbuf, zy=0, out=DType.I32,
                             acc=int(q > 0), **common)
                else:
                    self.ins(Opcode.CONV, mac, wgt=wb, qp=qb, dst=dst, zy=a["y_zp"],
                             out=ydt, **common)
            if red:
                self.ins(Opcode.REQUANT, src=accbuf, dst=dst, count=(oy1 - oy0) * wo * (c1 - c0),
                         chan=c1 - c0, qp=qb, zy=a["y_zp"], lo=a["lo"], hi=a["hi"],
                         out_dt=ydt)
            if not is_conv:
                f["dst"] = dst
                mode = {"max": PoolMode.MAX, "avg": PoolMode.AVG,
                        "avg_pad": PoolMode.AVG_PAD}[a["mode"]]
                self.ins(Opcode.POOL, qp=qb, c=ic1 - ic0, zx=a["x_zp"], zy=a["y_zp"], mode=mode,
                         in_dt=idt, out_dt=ydt, **f)
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
        qpe = 16 if qp_all.dtype == np.int64 else 12  # bytes per channel (isa.py CONV qp)
        qblob = b"".join(_pack_qp(qp_all[:, c0:c1]) for c0, c1 in blocks)
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
        qbufs = [self.alloc(qpe * cb) for _ in range(nq)]
        count = [0, -1, 0]  # weight loads, block of the loaded qp, qp loads

        def load(j: int, q: int) -> tuple[int, int, MacWeights]:
            c0, c1 = blocks[j]
            k = count[0] % nb
            count[0] += 1
            self.loadw(wd, streams[j * len(chunks) + q], wbufs[k])
            if count[1] != j:
                count[1], count[2] = j, count[2] + 1
                self.dma(Opcode.LOAD, qd + qpe * c0, qbufs[count[2] % nq], qpe * (c1 - c0))
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
        ydt, idt, xe = DType[a["out"].upper()], dt(x), xv.item
        oe = 1 << int(ydt)
        # an i16 MAC result clamps on the high byte (isa.py; lower.mac_clamp made it so)
        clo, chi = (a["lo"] // 256, a["hi"] // 256) if ydt == DType.I16 else (a["lo"], a["hi"])
        mb, nb, kb = self.params["mb"], self.params["nb"], self.params.get("kb", k)
        rows, cols, ks = _bands(m, mb), _bands(nn_, nb), _bands(k, kb)
        split = len(ks) > 1
        if split and idt == DType.I16:
            raise Misfit("an int16-input matmul does not split its reduction")
        tail = self.kernel.nodes[1:]
        xbufs = [self.alloc(mb * k * xe) for _ in range(2 if len(rows) > 1 else 1)] \
            if self.needs_buf(xv, 2, k) else [None]
        nwb = 1 if len(cols) == 1 and not split else 2
        wbufs = [self.alloc(nb * kb) for _ in range(nwb)]
        qpe = 16 if qp.dtype == np.int64 else 12  # qp bytes per column (isa.py MATMUL qp)
        qbufs = [self.alloc(qpe * nb) for _ in range(1 if len(cols) == 1 else 2)]
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
        qblob = b"".join(_pack_qp(qp[:, c0:c1]) for c0, c1 in cols)
        qd = self.const(f"{n.output.name}.qp", qblob)
        t, nw = 0, 0
        for j, (c0, c1) in enumerate(cols):
            qb = qbufs[j % len(qbufs)]
            self.dma(Opcode.LOAD, qd + qpe * c0, qb, qpe * (c1 - c0))
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
                    mm = dict(a=xa + k0 * xe, b=wb, m=r1 - r0, n=c1 - c0, k=k1 - k0,
                              a_rs=k * xe, zx=a["x_zp"], in_dt=idt)
                    if split:
                        self.ins(Opcode.MATMUL, mac, qp=zq, dst=accbuf, d_rs=4 * (c1 - c0),
                                 out=DType.I32, acc=int(kk > 0), **mm)
                    elif i32:
                        self.ins(Opcode.MATMUL, mac, qp=zq, dst=dst, d_rs=d_rs, out=DType.I32,
                                 **mm)
                    else:
                        self.ins(Opcode.MATMUL, mac, qp=qb, dst=dst, d_rs=d_rs, zy=a["y_zp"],
                                 lo=clo, hi=chi, out=ydt, **mm)
                if via_acc:
                    src = accbuf if split else dst
                    rq = dict(zy=0, lo=0, hi=0, out_dt=DType.I32) if i32 else dict(
                        zy=a["y_zp"], lo=a["lo"], hi=a["hi"], out_dt=ydt)
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
        xbufs = [self.alloc(ce * xv.item) for _ in range(2)] if xv.mem != SRAM else [None, None]
        obufs = [self.alloc(ce * ov.item) for _ in range(2)] if ov.mem != SRAM else [None, None]
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
        oi = item(out)
        ov = View(ov.mem, ov.addr, outer, out.type.shape[a["axis"]] * inner, oi)
        lo, hi = (qmath.INT16_MIN, qmath.INT16_MAX) if oi == 2 else (-128, 127)
        rc = self.params["rc"]
        off = 0
        for i, x in enumerate(n.inputs):
            assert x is not None
            ci = x.type.shape[a["axis"]] * inner
            base = self.ctx.view(x)
            xi = item(x)
            xv = View(base.mem, base.addr, outer, ci, xi)
            ident = xi == oi and identity_rescale(a["x_zps"][i], a["y_zp"], a["mults"][i],
                                                  a["shifts"][i])
            mark = self.top
            xb = self.alloc(rc * ci * xi) if xv.mem != SRAM else None
            rbuf = None if ident else self.alloc(rc * ci * oi)
            for r0, r1 in _bands(outer, rc):
                self.tile()
                src = self.fetch(xv, r0, r1, 0, ci, xb)
                if not ident:
                    self.ins(Opcode.RESCALE, src=src, dst=rbuf, count=(r1 - r0) * ci,
                             in_dt=dt(x), out_dt=dt(out), mult=a["mults"][i],
                             shift=a["shifts"][i], zx=a["x_zps"][i], zy=a["y_zp"], lo=lo,
                             hi=hi)
                    src = rbuf
                self.put(ov, r0, r1, off, off + ci, src)
            self.top = mark
            off += ci


EMITTERS = {"npu.conv": ConvEmitter, "npu.pool": ConvEmitter, "npu.matmul": MatmulEmitter,
            "npu.concat": ConcatEmitter, "npu.copy": CopyEmitter}
for _op in ("npu.lut", "npu.rescale", "npu.add", "npu.mul"):
    EMITTERS[_op] = EltwiseEmitter
