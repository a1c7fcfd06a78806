"""Lowering: the quantised IR (docs/quantization.md) -> NPU-level ops (compiler/ir/ops/npu.py).

Each quantised op becomes the npu op the emitter tiles, with its constants packed the way the
instructions read them (OHWI weights, i32[3, N] bias/mult/shift blocks, the LSTM split into one
input-projection GEMM for all steps and the recurrent step loop). Memory layouts are decided
here: convs and pools work on NHWC, GEMMs on row-major rows; reshape/transpose stay as free
views where the layout allows and an `npu.copy` is inserted where it does not. Elementwise ops
that only post-process a kernel's tile are marked `fused`. `quantize`/`dequantize` stay: they are
the program's I/O descriptors; float ops after the output dequantise are the host tail.
int16 activations (docs/quantization.md §8) lower to the same npu ops with `y_bits` and, for an
int16 MAC input, an i64[3, N] block (the wide accumulator's i64 bias); elementwise ops fuse only
when they keep the element type. An op the NPU cannot run raises UnsupportedOpError naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ocrc.compiler.backend import layout as L
from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Builder, Graph, Node, Value
from ocrc.compiler.ir.ops.pool import _pool_geometry
from ocrc.compiler.ir.verify import verify

NHWC_OPS = ("qconv", "qmax_pool", "qavg_pool", "npu.conv", "npu.pool")
ELEMENTWISE = ("npu.lut", "npu.rescale", "npu.add", "npu.mul")
ANCHORS = ("npu.conv", "npu.matmul", "npu.pool") + ELEMENTWISE
HOST_OPS = ("softmax", "log_softmax", "cast")  # allowed after the output dequantise (host)


def infer_layouts(g: Graph) -> dict[Value, L.Layout]:
    """The memory order of every value of a lowered graph (see module docstring)."""
    users = g.users()
    lay: dict[Value, L.Layout] = {}
    for v in g.inputs:
        lay[v] = ()
    for n in g.nodes:
        name = n.op.name
        if name == "quantize":
            want_nhwc = n.output.type.rank == 4 and any(
                u.op.name in NHWC_OPS for u in users.get(n.output, []))
            lay[n.output] = L.canonical(L.NHWC, n.output.type.shape) if want_nhwc else ()
        elif name.startswith("npu."):
            for v in n.outputs:
                lay[v] = tuple(n.attr("layout"))
        elif name == "transpose":
            x = n.inputs[0]
            assert x is not None
            lay[n.output] = L.transposed(lay[x], n.attr("perm"), n.output.type.shape)
        else:
            for v in n.outputs:
                lay[v] = ()
    return lay


class _Lower:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.b = Builder(Graph(list(g.inputs), [], [], g.name))
        self.env: dict[Value, Value] = {v: v for v in g.inputs}
        self.lay: dict[Value, L.Layout] = {v: () for v in g.inputs}
        self.consts = {n.output: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
        self.users = g.users()

    # helpers ---------------------------------------------------------------------------------
    def v(self, old: Value | None) -> Value:
        assert old is not None
        return self.env[old]

    def const(self, old: Value | None, n: Node, what: str) -> np.ndarray:
        if old is None or old not in self.consts:
            raise UnsupportedOpError(f"{n.label()}: the {what} must be a constant on the NPU")
        return np.asarray(self.consts[old])

    def emit(self, n: Node, op: str, inputs: Sequence[Value | None], layout: L.Layout,
             **attrs: Any) -> tuple[Value, ...]:
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if layout:
            attrs["layout"] = list(layout)
        outs = self.b.emit(op, list(inputs), attrs, n.name)
        for o in outs:
            self.lay[o] = layout
        return outs

    def in_layout(self, x: Value, want: L.Layout, n: Node) -> Value:
        """x in memory order `want` (an npu.copy when it is stored otherwise)."""
        shape = x.type.shape
        if L.same(self.lay[x], want, shape):
            return x
        lay = L.canonical(want, shape)
        return self.emit(n, "npu.copy", [x], lay)[0]

    def bind(self, n: Node, outs: Sequence[Value]) -> None:
        for old, new in zip(n.outputs, outs):
            new.name = old.name
            self.env[old] = new

    @staticmethod
    def qp(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
           wide: bool = False) -> np.ndarray:
        """The packed (bias, mult, shift) operand: i32[3, N], or i64[3, N] for an i16 input
        (the wide accumulator's i64 bias)."""
        return np.stack([np.asarray(a, np.int64).reshape(-1) for a in (bias, mult, shift)]
                        ).astype(np.int64 if wide else np.int32)

    @staticmethod
    def y_bits(n: Node) -> int:
        return 16 if n.outputs[0].type.dtype.value == "i16" else 8

    def mac_clamp(self, n: Node, outs: tuple[Value, ...]) -> tuple[Value, ...]:
        """An i16 MAC result clamps on the high byte (isa.py): a clamp that is not
        [256*a, 256*b + 255] runs as the enclosing one plus an identity RESCALE with the exact
        clamp (fused into the MAC's tile)."""
        lo, hi = n.all_attrs["lo"], n.all_attrs["hi"]
        if self.y_bits(n) == 8 or (lo % 256 == 0 and hi % 256 == 255):
            return outs
        return self.emit(n, "npu.rescale", [outs[0]], self.lay[outs[0]], x_zp=0, y_zp=0,
                         mult=1 << 30, shift=30, lo=lo, hi=hi, y_bits=16)

    @staticmethod
    def coarse(n: Node) -> tuple[int, int]:
        """The clamp an i16 MAC result gets in the instruction (see mac_clamp)."""
        lo, hi = n.all_attrs["lo"], n.all_attrs["hi"]
        if n.outputs[0].type.dtype.value != "i16":
            return lo, hi
        return lo // 256 * 256, hi // 256 * 256 + 255

    # ops -------------------------------------------------------------------------------------
    def lower(self, n: Node) -> None:
        name = n.op.name
        fn = getattr(self, "op_" + name, None)
        if name == "const":
            return
        if fn is None:
            raise UnsupportedOpError(f"{n.label()}: op '{name}' cannot run on the NPU (no "
                                     "lowering; only softmax/log_softmax/cast may follow the "
                                     "output dequantize, on the host)")
        fn(n)

    def op_quantize(self, n: Node) -> None:
        out = self.b.emit("quantize", [self.v(n.inputs[0])], dict(n.attrs), n.name)
        want = n.output.type.rank == 4 and any(u.op.name in NHWC_OPS
                                               for u in self.users.get(n.output, []))
        self.lay[out[0]] = L.canonical(L.NHWC, n.output.type.shape) if want else ()
        self.bind(n, out)

    def op_dequantize(self, n: Node) -> None:
        self.bind(n, self.b.emit("dequantize", [self.v(n.inputs[0])], dict(n.attrs), n.name))

    def host(self, n: Node) -> None:
        ins = [self.env.get(v) if v is not None and v not in self.consts else
               (self.b.const(self.consts[v], name=v.name) if v is not None else None)
               for v in n.inputs]
        self.bind(n, self.b.emit(n.op, ins, dict(n.attrs), n.name))

    op_softmax = op_log_softmax = op_cast = host

    def op_qconv(self, n: Node) -> None:
        x = self.in_layout(self.v(n.inputs[0]), L.NHWC, n)
        w = self.const(n.inputs[1], n, "weight")
        qp = self.qp(*(self.const(v, n, "requant operand") for v in n.inputs[2:5]),
                     wide=x.type.dtype.value == "i16")
        wv = self.b.const(np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1))).astype(np.int8),
                          f"{n.output.name}.w")
        qv = self.b.const(qp, f"{n.output.name}.qp")
        a = n.all_attrs
        lo, hi = self.coarse(n)
        self.bind(n, self.mac_clamp(n, self.emit(
            n, "npu.conv", [x, wv, qv], L.NHWC, strides=a["strides"], pads=a["pads"],
            dilations=a["dilations"], group=a["group"], x_zp=a["x_zp"], y_zp=a["y_zp"], lo=lo,
            hi=hi, y_bits=self.y_bits(n))))

    def op_qdense(self, n: Node) -> None:
        x = self.in_layout(self.v(n.inputs[0]), (), n)
        w = self.const(n.inputs[1], n, "weight").astype(np.int8)
        qp = self.qp(*(self.const(v, n, "requant operand") for v in n.inputs[2:5]),
                     wide=x.type.dtype.value == "i16")
        a = n.all_attrs
        lo, hi = self.coarse(n)
        self.bind(n, self.mac_clamp(n, self.emit(
            n, "npu.matmul", [x, self.b.const(w, f"{n.output.name}.w"),
                              self.b.const(qp, f"{n.output.name}.qp")], (),
            x_zp=a["x_zp"], y_zp=a["y_zp"], lo=lo, hi=hi,
            out=n.outputs[0].type.dtype.value)))

    def op_lut(self, n: Node) -> None:
        x = self.v(n.inputs[0])
        tab = self.const(n.inputs[1], n, "table")  # i8/i16 as the quantiser made it
        lay = self.lay[x]
        if tab.ndim == 2:  # per-channel tables index the channel of a channel-innermost tile
            if x.type.rank != 4 or n.attr("axis") % 4 != 1:
                raise UnsupportedOpError(f"{n.label()}: per-channel tables run on the NPU only "
                                         f"along the channels of a 4-D tensor, got axis "
                                         f"{n.attr('axis')} of {x.type}")
            x = self.in_layout(x, L.NHWC, n)
            lay = self.lay[x]
        self.bind(n, self.emit(n, "npu.lut", [x, self.b.const(tab, f"{n.output.name}.table")],
                               lay, y_bits=self.y_bits(n)))

    def op_rescale(self, n: Node) -> None:
        x = self.v(n.inputs[0])
        a = n.all_attrs
        self.bind(n, self.emit(n, "npu.rescale", [x], self.lay[x], y_bits=self.y_bits(n), **{
            k: a[k] for k in ("x_zp", "y_zp", "mult", "shift", "lo", "hi")}))

    def binary(self, n: Node, op: str, keys_a: tuple[str, ...], keys_b: tuple[str, ...],
               common: tuple[str, ...]) -> None:
        a_old, b_old = n.inputs
        assert a_old is not None and b_old is not None
        at = n.all_attrs
        ka, kb = keys_a, keys_b
        if a_old.type.shape != n.output.type.shape:  # only b may broadcast: swap (commutative)
            a_old, b_old, ka, kb = b_old, a_old, kb, ka
        if a_old.type.shape != n.output.type.shape:
            raise UnsupportedOpError(f"{n.label()}: both operands broadcast ({a_old.type}, "
                                     f"{b_old.type}); the NPU broadcasts one operand only")
        if a_old in self.consts:
            raise UnsupportedOpError(f"{n.label()}: a constant full-size operand")
        xa = self.v(a_old)
        xb = self.env[b_old] if b_old in self.env else self.b.const(
            self.const(b_old, n, "operand").astype(b_old.type.dtype.np), b_old.name)
        if b_old not in self.env:
            self.lay[xb] = ()
        shape, lay = n.output.type.shape, self.lay[xa]
        if xb.type.shape == shape:
            xb = self.in_layout(xb, lay, n)
        elif not (L.is_rowmajor(self.lay[xb], xb.type.shape)
                  and L.periodic(xb.type.shape, shape, lay)):
            raise UnsupportedOpError(f"{n.label()}: operand {xb.type} does not broadcast "
                                     f"periodically over {n.output.type} in memory order "
                                     f"{list(L.full(lay, len(shape)))}")
        attrs = {new: at[old] for new, old in zip(("a_zp", "b_zp"), (ka[0], kb[0]))}
        for new, old in zip(keys_a[1:], ka[1:]):
            attrs[new] = at[old]
        for new, old in zip(keys_b[1:], kb[1:]):
            attrs[new] = at[old]
        attrs.update({k: at[k] for k in common})
        self.bind(n, self.emit(n, op, [xa, xb], lay, y_bits=self.y_bits(n), **attrs))

    def op_qadd(self, n: Node) -> None:
        self.binary(n, "npu.add", ("a_zp", "a_mult", "a_shift"), ("b_zp", "b_mult", "b_shift"),
                    ("y_zp", "lo", "hi"))

    def op_qmul(self, n: Node) -> None:
        self.binary(n, "npu.mul", ("a_zp",), ("b_zp",), ("mult", "shift", "y_zp", "lo", "hi"))

    def op_qconcat(self, n: Node) -> None:
        xs = [self.v(x) for x in n.inputs]
        lay = self.lay[xs[0]]
        xs = [self.in_layout(x, lay, n) for x in xs]
        a = n.all_attrs
        axis = a["axis"] % n.output.type.rank
        self.bind(n, self.emit(n, "npu.concat", xs, lay, axis=axis, x_zps=a["x_zps"],
                               mults=a["mults"], shifts=a["shifts"], y_zp=a["y_zp"],
                               y_bits=self.y_bits(n)))

    def pool(self, n: Node, mode: str, qp: Value | None) -> None:
        from ocrc.compiler.ir.ops.quant import _ceil_pads
        x = self.in_layout(self.v(n.inputs[0]), L.NHWC, n)
        a = n.all_attrs
        _pool_geometry(n.inputs[0].type, a)  # type: ignore[union-attr]
        pads = _ceil_pads(np.zeros(n.inputs[0].type.shape, np.int8), a)  # type: ignore
        self.bind(n, self.emit(n, "npu.pool", [x, qp], L.NHWC, kernel_shape=a["kernel_shape"],
                               strides=a["strides"], pads=list(pads), mode=mode,
                               x_zp=a.get("x_zp"), y_zp=a.get("y_zp"), lo=a["lo"], hi=a["hi"],
                               y_bits=self.y_bits(n)))

    def op_qmax_pool(self, n: Node) -> None:
        self.pool(n, "max", None)

    def op_qavg_pool(self, n: Node) -> None:
        m, s = (self.const(v, n, "multiplier table") for v in n.inputs[1:3])
        qp = self.b.const(np.stack([m, s]).astype(np.int32), f"{n.output.name}.qp")
        self.pool(n, "avg_pad" if n.attr("count_include_pad") else "avg", qp)

    def op_reshape(self, n: Node) -> None:
        x = self.in_layout(self.v(n.inputs[0]), (), n)
        self.bind(n, self.b.emit("reshape", [x], dict(n.attrs), n.name))
        self.lay[self.env[n.output]] = ()

    def op_transpose(self, n: Node) -> None:
        x = self.v(n.inputs[0])
        out = self.b.emit("transpose", [x], dict(n.attrs), n.name)
        self.lay[out[0]] = L.transposed(self.lay[x], n.attr("perm"), n.output.type.shape)
        self.bind(n, out)

    def move(self, n: Node) -> None:
        """pad/slice/split/gather/expand/tile: one npu.move per result (moves.py)."""
        from ocrc.compiler.backend.moves import encode, lower_move
        x = self.in_layout(self.v(n.inputs[0]), (), n)
        outs = []
        for i, (shape, boxes, fill) in enumerate(lower_move(n, x.type.shape, self.consts)):
            o = self.b.emit("npu.move", [x], {"shape": shape, "boxes": encode(boxes),
                                              "fill": fill or 0, "filled": int(fill is not None)},
                            n.name if i == 0 else f"{n.name}.{i}")[0]
            self.lay[o] = ()
            outs.append(o)
        self.bind(n, outs)

    op_pad = op_slice = op_split = op_gather = op_expand = op_tile = move

    def op_qlstm(self, n: Node) -> None:
        x_old = n.inputs[0]
        assert x_old is not None
        _, bs, _ = x_old.type.shape
        if bs != 1:
            raise UnsupportedOpError(f"{n.label()}: batch {bs}; the NPU LSTM runs batch 1")
        a = n.all_attrs
        w, r, bias, xm, xs, hm, hs, tab = (self.const(v, n, "operand") for v in n.inputs[1:9])
        d, hsz = r.shape[0], a["hidden_size"]
        x = self.in_layout(self.v(x_old), (), n)
        name = n.outputs[0].name
        wv = self.b.const(w.reshape(d * 4 * hsz, -1).astype(np.int8), f"{name}.w")
        qv = self.b.const(self.qp(bias, xm, xs), f"{name}.xqp")
        tx = self.emit(n, "npu.matmul", [x, wv, qv], (), x_zp=a["x_zp"], out="i32")[0]
        tx.name = f"{name}.tx"
        init = [self.const(v, n, "initial state") if v is not None else None
                for v in (list(n.inputs) + [None, None])[9:11]]
        extra = [self.b.const(arr, f"{name}.{k}") if arr is not None else None
                 for arr, k in zip(init, ("h0", "c0"))]
        if len(n.inputs) > 11 and n.inputs[11] is not None:  # factored R: V and its requant
            rv, vm, vsh = (self.const(v, n, "operand") for v in n.inputs[11:14])
            vqp = np.stack([self.qp(np.zeros(vm.shape[1]), vm[k], vsh[k]) for k in range(d)])
            extra += [self.b.const(rv.astype(np.int8), f"{name}.rv"),
                      self.b.const(vqp, f"{name}.rvqp")]
        rqp = np.stack([hm, hs], axis=1).astype(np.int32)
        outs = self.emit(n, "npu.lstm", [tx, self.b.const(r.astype(np.int8), f"{name}.r"),
                                         self.b.const(rqp, f"{name}.rqp"),
                                         self.b.const(tab.astype(np.int16), f"{name}.tables"),
                                         *extra], (),
                         **{k: a[k] for k in ("hidden_size", "direction", "h_zp", "cell_frac",
                                              "cell_mult", "cell_shift", "out_mult",
                                              "out_shift")})
        self.bind(n, outs)


def mark_fusion(g: Graph) -> Graph:
    """Set `fused = 1` on elementwise npu ops that only post-process the tile of the kernel
    producing their first operand (its single user, not a graph output), when their other
    operands exist before that kernel starts."""
    users = g.users()
    outs = set(g.outputs)
    root: dict[Value, int] = {}  # value -> index of the kernel whose tile loop computes it
    ready: dict[Value, int] = {v: -1 for v in g.inputs}  # value -> index where it is complete
    nodes: list[Node] = []
    for i, n in enumerate(g.nodes):
        x = n.inputs[0] if n.inputs else None
        r = root.get(x, -2) if x is not None else -2
        others = [v for v in n.inputs[1:] if v is not None]
        # the tile buffer holds the kernel's element type: only type-preserving ops fuse
        fusable = (n.op.name in ELEMENTWISE and r >= 0 and x not in outs
                   and n.outputs[0].type.dtype == x.type.dtype
                   and len(users.get(x, [])) == 1
                   and all(ready.get(v, -1) < r and v is not x for v in others))
        if fusable:
            n = Node(n.op, n.inputs, {**n.attrs, "fused": 1}, n.outputs, n.name)
        for v in n.outputs:
            if n.op.name in ANCHORS and not (n.op.name == "npu.matmul"
                                             and n.attr("out") == "i32"):
                root[v] = r if fusable else i
            ready[v] = -1 if n.op.name == "const" else i
        nodes.append(n)
    return Graph(list(g.inputs), nodes, list(g.outputs), g.name)


def lower(g: Graph) -> Graph:
    """The NPU-level graph of a quantised graph (verified); UnsupportedOpError for ops the
    NPU cannot run."""
    st = _Lower(g)
    for n in g.nodes:
        st.lower(n)
    st.b.output(*(st.v(v) for v in g.outputs))
    out = mark_fusion(st.b.graph.dce())
    verify(out)
    return out
