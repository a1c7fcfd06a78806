"""Emitter of npu.lstm, the recurrent part of the integer LSTM (docs/quantization.md §4); the
input projections of all steps are an npu.matmul (out=i32) before it.

Per step and direction: MATMUL h @ R^T -> int32 (the first `res` rows of R resident in SRAM
for all steps, the others streamed in blocks of `nb` rows every step, each part stored as a
compressed stream), REQUANT by (h_mult, h_shift), IADD with the step's input projection and
>> 8 to the int8 pre-activations, one LUT per gate (int16 Q0.15), IMUL/IMUL/IADD
for the int16 cell, RESCALE to the tanh(c) table index, LUT, IMUL to the int8 h. h is written
straight into its row of Y when Y lives in SRAM (the next step reads it there). Directions are
interleaved step by step. params: res (resident rows of R per direction), nb (R rows per
streamed block). A factored R (U V) adds one MATMUL per step and direction before the others:
t = V h (out=i8, requantised by rvqp), and the row blocks of U then multiply t (k long) in
place of h; V stays resident when R's rows do (res > 0), else it streams every step in blocks
of nb rows (through the buffers of R's streamed blocks).
"""

from __future__ import annotations

import numpy as np
from ocrc.compiler.backend.emit import KernelEmitter
from ocrc.compiler.backend.schedule import SRAM
from ocrc.compiler.ir.ops.qlstm import GATE_FRAC
from ocrc.compiler.ir.ops.rnn import LSTM_DIRECTIONS
from ocrc.runtime import qmath
from ocrc.runtime.isa import DType, Opcode

I16 = dict(lo=qmath.INT16_MIN, hi=qmath.INT16_MAX, out_dt=DType.I16)


class LstmEmitter(KernelEmitter):
    def run(self) -> None:
        n = self.kernel.anchor
        a = n.all_attrs
        ctx = self.ctx
        tx, r_v, rqp_v, tab_v = n.inputs[:4]
        h0_v, c0_v, rv_v, rvqp_v = (list(n.inputs) + [None] * 4)[4:8]
        assert tx is not None
        d_n, hs = LSTM_DIRECTIONS[a["direction"]], a["hidden_size"]
        g4 = 4 * hs
        t_n = tx.type.shape[0]
        r = ctx.array(r_v).astype(np.int8)
        kr = r.shape[2]  # the recurrent GEMM's K: H, or k with a factored R (r = U)
        rqp = ctx.array(rqp_v)
        tables = ctx.array(tab_v).astype(np.int16)
        txv = ctx.view(tx, d_n * g4)
        y, yh, yc = self.kernel.outputs
        yv = ctx.view(y, hs) if y in ctx.plan.of else None
        res, nb = self.params["res"], self.params["nb"]
        # R rows [0, res) of each direction stay in SRAM for all steps; the rest stream in
        # blocks of nb rows every step. Each part of R is a stream in its smallest format.
        parts = [(0, res)] if res else []
        parts += [(c0, min(c0 + nb, g4)) for c0 in range(res, g4, nb)]
        tab = self.load_const("tables", tables)
        # REQUANT blocks [bias 0][h_mult][h_shift] per part: the resident parts of all
        # directions first, then the streamed blocks in load order
        order = [(d, 0) for d in range(d_n) if res] + [(d, j) for d in range(d_n)
                                                       for j in range(1 if res else 0, len(parts))]
        rq_blob = np.concatenate([np.concatenate([
            np.zeros(parts[j][1] - parts[j][0], np.int32), rqp[d, 0, parts[j][0]:parts[j][1]],
            rqp[d, 1, parts[j][0]:parts[j][1]]]) for d, j in order]).astype(np.int32)
        rq_off = dict(zip(order, np.cumsum([0] + [12 * (parts[j][1] - parts[j][0])
                                                  for d, j in order]).tolist()))
        zq = self.load_const("zero_qp", np.zeros(3 * max(c1 - c0 for c0, c1 in parts), np.int32))
        rd, streams = self.weight_streams("r", [((r_v, d, c0, c1), r[d, c0:c1])
                                                for d in range(d_n) for c0, c1 in parts])
        rq = self.const("rqp", rq_blob)
        macs = [self.ctx.weights.mac((r_v, d, c0, c1), r[None, d, c0:c1], 1)
                for d in range(d_n) for c0, c1 in parts]
        if rv_v is not None:  # V [D, k, H] and its MATMUL qp [D, 3, k]
            rv = ctx.array(rv_v).astype(np.int8)
            vparts = [(0, kr)] if res else [(c0, min(c0 + nb, kr)) for c0 in range(0, kr, nb)]
            vkeys = [(d, c0, c1) for d in range(d_n) for c0, c1 in vparts]
            vd, vstreams = self.weight_streams("rv", [((rv_v, d, c0, c1), rv[d, c0:c1])
                                                      for d, c0, c1 in vkeys])
            vmacs = [self.ctx.weights.mac((rv_v, d, c0, c1), rv[None, d, c0:c1], 1)
                     for d, c0, c1 in vkeys]
            # the qp blocks of V h: [bias][mult][shift] of each part, in the order of vkeys
            vqp_blob = np.concatenate([ctx.array(rvqp_v)[d, :, c0:c1].reshape(-1)
                                       for d, c0, c1 in vkeys]).astype(np.int32)
            vqp = self.load_const("rvqp", vqp_blob) if res else self.const("rvqp", vqp_blob)
            vqp_off = np.cumsum([0] + [12 * (c1 - c0) for _, c0, c1 in vkeys]).tolist()
            vbufs = [self.alloc(kr * hs) for _ in range(d_n if res else 0)]
            tbuf = self.alloc(kr)
        rres, qres = [], []
        for _ in range(d_n if res else 0):
            rres.append(self.alloc(res * kr))
            qres.append(self.alloc(12 * res))
        streamed = list(range(1 if res else 0, len(parts)))
        if streamed:  # R's (U's) streamed blocks, and V's when it streams
            rows = nb * (hs if rv_v is not None and not res else kr)
            rbufs = [self.alloc(rows) for _ in range(2)]
            rqbufs = [self.alloc(12 * nb) for _ in range(2)]
        # state and temporaries
        cbuf = [self.alloc(2 * hs) for _ in range(d_n)]
        in_y = yv is not None and yv.mem == SRAM
        hbuf = [[self.alloc(hs) for _ in range(1 if in_y else 2)] for _ in range(d_n)]
        ah, p, gates = self.alloc(4 * g4), self.alloc(g4), self.alloc(2 * g4)
        t1, t2, u, tc = self.alloc(2 * hs), self.alloc(2 * hs), self.alloc(hs), self.alloc(2 * hs)
        txbufs = [self.alloc(4 * g4) for _ in range(2)] if txv.mem != SRAM else []
        for d in range(d_n):
            if h0_v is not None:
                self.dma(Opcode.LOAD, self.const("h0", ctx.array(h0_v).astype(np.int8)) + d * hs,
                         hbuf[d][0], hs)
            else:
                self.ins(Opcode.FILL, dst=hbuf[d][0], count=hs, value=a["h_zp"], dt=DType.I8)
            if c0_v is not None:
                self.dma(Opcode.LOAD, self.const("c0", ctx.array(c0_v).astype(np.int16))
                         + 2 * d * hs, cbuf[d], 2 * hs)
            else:
                self.ins(Opcode.FILL, dst=cbuf[d], count=hs, value=0, dt=DType.I16)
        hprev = [hbuf[d][0] for d in range(d_n)]
        nrb = 0
        for s in range(t_n):
            for d in range(d_n):
                self.tile()
                t = t_n - 1 - s if (a["direction"] == "reverse" or d == 1) else s
                txa = self.fetch(txv, t, t + 1, d * g4, (d + 1) * g4,
                                 txbufs[(s * d_n + d) % len(txbufs)] if txbufs else None)
                mm = dict(a=hprev[d], qp=zq, m=1, k=hs, a_rs=hs, zx=a["h_zp"], out=DType.I32)
                if rv_v is not None:  # t = requantize(V (h - h_zp)) to int8, then U t
                    for j, (c0, c1) in enumerate(vparts):
                        i = d * len(vparts) + j
                        if not res:
                            vb, vq = rbufs[nrb % 2], rqbufs[nrb % 2]
                            nrb += 1
                            self.loadw(vd, vstreams[i], vb)
                            self.dma(Opcode.LOAD, vqp + vqp_off[i], vq, 12 * (c1 - c0))
                        else:
                            vb, vq = vbufs[d], vqp + vqp_off[i]
                            if s == 0:
                                self.loadw(vd, vstreams[i], vb)
                        self.ins(Opcode.MATMUL, vmacs[i], b=vb, dst=tbuf + c0, n=c1 - c0,
                                 d_rs=kr, **{**mm, "qp": vq, "out": DType.I8,
                                             "zy": 0, "lo": qmath.INT8_MIN,
                                             "hi": qmath.INT8_MAX})
                    mm = dict(a=tbuf, qp=zq, m=1, k=kr, a_rs=kr, zx=0, out=DType.I32)
                rqd = dict(dst=ah, zy=0, lo=0, hi=0, out_dt=DType.I32)
                if res:
                    if s == 0:  # loaded once, overlapping the other direction's first step
                        self.loadw(rd, streams[d * len(parts)], rres[d])
                        self.dma(Opcode.LOAD, rq + rq_off[d, 0], qres[d], 12 * res)
                    self.ins(Opcode.MATMUL, macs[d * len(parts)], b=rres[d], dst=ah, n=res,
                             d_rs=4 * res, **mm)
                    self.ins(Opcode.REQUANT, src=ah, count=res, chan=res, qp=qres[d], **rqd)
                for j in streamed:
                    c0, c1 = parts[j]
                    buf, qbuf = rbufs[nrb % 2], rqbufs[nrb % 2]
                    nrb += 1
                    i = d * len(parts) + j
                    self.loadw(rd, streams[i], buf)
                    self.dma(Opcode.LOAD, rq + rq_off[d, j], qbuf, 12 * (c1 - c0))
                    self.ins(Opcode.MATMUL, macs[i], b=buf, dst=ah + 4 * c0, n=c1 - c0,
                             d_rs=4 * (c1 - c0), **mm)
                    self.ins(Opcode.REQUANT, src=ah + 4 * c0, count=c1 - c0, chan=c1 - c0,
                             qp=qbuf, **{**rqd, "dst": ah + 4 * c0})
                self.step(d, a, txa, ah, p, gates, t1, t2, u, tc, cbuf[d], tab, hs)
                if in_y:
                    hnew = yv.at(t * d_n + d)  # type: ignore[union-attr]
                else:
                    hnew = hbuf[d][(s + 1) % 2]
                self.ins(Opcode.IMUL, a=gates + 2 * hs, b=tc, dst=hnew, count=hs, b_period=hs,
                         a_dt=DType.I16, b_dt=DType.I16, out_dt=DType.I8,
                         mult=a["out_mult"][d], shift=a["out_shift"][d], zy=a["h_zp"],
                         lo=qmath.INT8_MIN, hi=qmath.INT8_MAX)
                if yv is not None and not in_y:
                    self.put(yv, t * d_n + d, t * d_n + d + 1, 0, hs, hnew)
                hprev[d] = hnew
        for v, bufs in ((yh, hprev), (yc, cbuf)):
            if v in ctx.plan.of:
                ov = ctx.view(v, hs)
                for d in range(d_n):
                    self.put(ov, d, d + 1, 0, hs, bufs[d])

    def step(self, d: int, a: dict, txa: int, ah: int, p: int, gates: int, t1: int, t2: int,
             u: int, tc: int, c: int, tab: int, hs: int) -> None:
        """From the rescaled recurrent projections ah to tc = tanh(c) (the gates stay in
        `gates`: i, o, f, c~ as int16 rows of hs)."""
        g4 = 4 * hs
        self.ins(Opcode.IADD, a=txa, b=ah, dst=p, count=g4, b_period=g4, a_dt=DType.I32,
                 b_dt=DType.I32, out_dt=DType.I8, shift=qmath.ADD_FRAC_BITS,
                 lo=qmath.INT8_MIN, hi=qmath.INT8_MAX)
        tables = tab + d * 5 * 512
        for k in range(4):
            self.ins(Opcode.LUT, src=p + k * hs, dst=gates + 2 * k * hs, count=hs,
                     table=tables + 512 * k, out_dt=DType.I16)
        gi, gf, gc = gates, gates + 4 * hs, gates + 6 * hs
        ew = dict(count=hs, b_period=hs, a_dt=DType.I16, b_dt=DType.I16, **I16)
        self.ins(Opcode.IMUL, a=gf, b=c, dst=t1, mult=1, shift=GATE_FRAC, zy=0, **ew)
        self.ins(Opcode.IMUL, a=gi, b=gc, dst=t2, mult=1,
                 shift=2 * GATE_FRAC - a["cell_frac"][d], zy=0, **ew)
        self.ins(Opcode.IADD, a=t1, b=t2, dst=c, shift=0, **ew)
        self.ins(Opcode.RESCALE, src=c, dst=u, count=hs, in_dt=DType.I16, out_dt=DType.I8,
                 mult=a["cell_mult"][d], shift=a["cell_shift"][d], zx=0, zy=0,
                 lo=qmath.INT8_MIN, hi=qmath.INT8_MAX)
        self.ins(Opcode.LUT, src=u, dst=tc, count=hs, table=tables + 512 * 4, out_dt=DType.I16)
