"""The int8 rewrite: a calibrated float graph -> the quantised graph (golden int8 model).

`prepare(g)` splits what must be observed separately (table activations out of conv/dense
epilogues, fused residuals); `calibrate` observes the prepared graph; `quantize_graph` then
walks it in order and emits for every float op its quantised op with explicit constants:
`quantize` after the inputs, `dequantize` before the outputs, and an optional float tail of
ops (softmax) after the output dequantise. Rules per op are in docs/quantization.md §3-§4.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ocrc.compiler.ir.graph import Builder, Graph, Node, Value
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS
from ocrc.compiler.ir.ops.quant import MAX_K
from ocrc.runtime import qmath
from ocrc.compiler.quant.calibrate import CalibTable
from ocrc.compiler.quant.decompose import PATTERNS as DECOMPOSE
from ocrc.compiler.quant.layer_methods import resolve_layer_methods
from ocrc.compiler.quant.lower_lstm import emit_qlstm
from ocrc.compiler.quant.tables import chain_fns, channel_chains, flat_clip, unary_fn
from ocrc.compiler.quant.qparams import (QParams, QuantizeError, build_lut,
                                         multiplier, multipliers, qparams_from_range,
                                         quantize_bias, quantize_weights)
from ocrc.compiler.rewrite import apply_patterns

CLAMP_ACTS = ("none", "relu", "clip")
# Ops that move int8 data unchanged: same scale and zero point in and out.
PASS_THROUGH = ("reshape", "transpose", "slice", "split", "expand", "tile", "gather", "pad",
                "squeeze", "unsqueeze", "flatten", "identity")
FLOAT_TAIL = ("softmax", "log_softmax", "cast")


@dataclass
class QuantResult:
    """The quantised graph and, for every float value that got an int8 counterpart, that
    value and its parameters (the per-layer report reads them)."""

    graph: Graph
    qvalue: dict[str, Value] = field(default_factory=dict)
    qparams: dict[str, QParams] = field(default_factory=dict)
    layers: list[tuple[str, str]] = field(default_factory=list)  # (float value, layer name)
    table_inputs: set[str] = field(default_factory=set)  # clipped where their tables are flat
    # "<output>.<operand>" -> (int8/int32 array, per-channel scales, channel axis): the
    # quantised weights and biases, for QDQ export.
    weights: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    int16: list[str] = field(default_factory=list)  # values kept in int16 (docs §8)
    # int16 values narrowed to int8 for an op without an int16 form (the LSTM input)
    narrowed: dict[str, QParams] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)  # range method per value (auto)


# --- prepare ---------------------------------------------------------------------------------
def prepare(g: Graph) -> Graph:
    """Split conv/dense epilogues the int8 ops cannot fuse: a residual becomes an `add`, an
    activation that is not a clamp becomes its own op; ops without an integer form (affine,
    lrn) are decomposed first (compiler/quant/decompose.py). Float semantics are unchanged."""
    g = apply_patterns(g, list(DECOMPOSE.values()))
    b = Builder(Graph(list(g.inputs), [], list(g.outputs), g.name))
    for n in g.nodes:
        if "epilogue" not in n.op.traits:
            b.graph.nodes.append(n)
            continue
        act, res = n.attr("act"), n.operand("res")
        if res is None and act in CLAMP_ACTS:
            b.graph.nodes.append(n)
            continue
        if act == "prelu":
            raise QuantizeError(f"{n.label()}: a fused prelu cannot be quantised")
        out = n.output
        keep_act = act in CLAMP_ACTS and res is None
        attrs = {k: v for k, v in n.attrs.items() if k not in ("act", "act_params")}
        inputs = list(n.inputs[:3])
        y = b.emit(n.op, inputs, attrs, n.name, (f"{out.name}.conv",))[0]
        if res is not None:
            last = act == "none"
            y = b.op("add", y, res, name=n.name, out_name=out.name if last else f"{out.name}.res")
            if last:
                _rebind(b.graph, y, out)
                continue
        if not keep_act:
            params = dict(zip((p for p, _ in ACTIVATIONS[act].params), n.attr("act_params")))
            y = b.op(act, y, name=n.name, out_name=out.name, **params)
        _rebind(b.graph, y, out)
    return b.graph


def _rebind(g: Graph, new: Value, old: Value) -> None:
    """Make the last node produce `old` (so users and outputs keep their Value)."""
    last = g.nodes[-1]
    assert last.outputs == (new,)
    g.nodes[-1] = Node(last.op, last.inputs, last.attrs, (old,), last.name)


# --- quantize --------------------------------------------------------------------------------
class _Q:
    """The state of one quantize_graph run."""

    def __init__(self, g: Graph, table: CalibTable, method: str, percentile: float,
                 int16: Collection[str] = (),
                 layer_methods: Mapping[str, str] | None = None) -> None:
        self.g, self.table, self.method, self.percentile = g, table, method, percentile
        self.methods = resolve_layer_methods(g, layer_methods or {})  # value -> method
        # The integer LSTM has int8 results only (docs §8): its outputs are never int16.
        self.int16 = frozenset(int16) - {v.name for n in g.nodes if n.op.name == "lstm"
                                         for v in n.outputs}
        self.b = Builder(Graph([], [], [], g.name))
        self.res = QuantResult(self.b.graph)
        self.consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
        self.env: dict[Value, Value] = {}  # float value -> int8 value
        self.fenv: dict[Value, Value] = {}  # float value -> float value in the new graph
        self.outputs = set(g.outputs)
        self.users = g.users()
        self.chains = channel_chains(g, self.consts)

    # parameters --------------------------------------------------------------------------
    def qp(self, v: Value) -> QParams:
        if v.name in self.res.qparams:
            return self.res.qparams[v.name]
        ob = self.table.observers.get(v.name)
        if ob is None or ob.empty:
            raise QuantizeError(f"value %{v.name} was not calibrated (no observer); run "
                                "calibration on the prepared graph")
        bits = 16 if v.name in self.int16 else 8
        # int16 values and the logits keep minmax: 65536 levels need no clipping, and the
        # argmax must never be clipped.
        method = "minmax" if v in self.outputs or bits == 16 else \
            self.methods.get(v.name, self.method)
        if method == "auto":  # per value: the method with the least histogram MSE
            method = self.res.methods[v.name] = ob.auto_method(self.percentile)
        lo, hi = ob.choose_range(method, self.percentile)
        fns = [(u, self.table_fns(u)) for u in self.users.get(v, [])]
        if fns and v not in self.outputs and all(f is not None for _, f in fns):
            # Only tables read v: its range may shrink to where every table is flat.
            bounds = [flat_clip(f, lo, hi, self.flat_step(u, bits))
                      for u, fs in fns for f in fs]  # type: ignore[union-attr]
            lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
            self.res.table_inputs.add(v.name)
        qp = qparams_from_range(lo, hi, bits)
        self.res.qparams[v.name] = qp
        if bits == 16:
            self.res.int16.append(v.name)
        return qp

    def flat_step(self, u: Node, in_bits: int) -> float:
        """The output resolution at which table u counts as flat (`flat_clip`): its output's
        scale; for an int16 output of an int8 input, the scale that output would have in int8.
        The int8 input cannot resolve finer changes, and clipping at the int16 output's
        resolution would widen the input's range where little of the function changes (SiLU's
        long negative tail: ddddocr's Conv_3 table input 0.445 -> 0.695 per code)."""
        w = self.table_output(u)
        qp = self.qp(w)
        if qp.bits == 8 or in_bits == 16:
            return qp.scale
        method = "minmax" if w in self.outputs else self.methods.get(w.name, self.method)
        lo, hi = self.table.observers[w.name].choose_range(method, self.percentile)
        return qparams_from_range(lo, hi).scale

    def narrow(self, fv: Value, n: Node) -> tuple[Value, QParams]:
        """fv as int8 for an op without an int16 form: a `rescale` of its int16 value to int8
        parameters of its own calibrated range (docs §8)."""
        qv, qp = self.q(fv, n), self.qp(fv)
        if qp.bits == 8:
            return qv, qp
        ob = self.table.observers[fv.name]
        method = self.methods.get(fv.name, self.method)
        qp8 = qparams_from_range(*ob.choose_range(method, self.percentile))
        m, s = multiplier(qp.scale / qp8.scale, n.label())
        self.res.narrowed[fv.name] = qp8
        y = self.b.op("rescale", qv, name=n.name, out_name=f"{fv.name}.i8", mult=m, shift=s,
                      y_zp=qp8.zp)
        return y, qp8

    def table_fns(self, u: Node) -> list[Any] | None:
        """The float functions u's int8 table(s) will hold, None if u is not a table."""
        if u in self.chains:
            f, _, s = self.chains[u]
            return chain_fns(f, s)
        fn = unary_fn(u, self.consts)
        return None if fn is None else [fn]

    def table_output(self, u: Node) -> Value:
        return self.chains[u][1].output if u in self.chains else u.outputs[0]

    def channel_lut(self, head: Node) -> None:
        """A per-channel table for an equalised mul -> f -> mul chain."""
        f, tail, s = self.chains[head]
        x, out = head.inputs[0], tail.output
        assert x is not None
        qpx, qpy = self.qp(x), self.qp(out)
        table = np.stack([build_lut(fn, qpx, qpy) for fn in chain_fns(f, s)])
        y = self.b.op("lut", self.q(x, head), self.b.const(table, f"{out.name}.table"),
                      name=f.name, axis=1, **_ybits(qpy))
        self.bind(out, y, qpy, f.name)

    def bind(self, fv: Value, qv: Value, qp: QParams, layer: str) -> None:
        qv.name = fv.name
        self.env[fv] = qv
        self.res.qvalue[fv.name] = qv
        self.res.qparams[fv.name] = qp
        self.res.layers.append((fv.name, layer))

    def q(self, fv: Value, n: Node) -> Value:
        if fv in self.env:
            return self.env[fv]
        if fv in self.consts:  # a constant activation operand: quantise it per tensor
            arr = self.consts[fv]
            qp = qparams_from_range(float(arr.min()), float(arr.max()))
            self.res.qparams[fv.name] = qp
            qv = self.b.const(qp.quantize(arr), name=fv.name)
            self.env[fv] = qv
            return qv
        raise QuantizeError(f"{n.label()}: operand %{fv.name} has no int8 form")

    def carry(self, v: Value | None, n: Node) -> Value | None:
        """A non-activation constant operand (gather indices), copied into the new graph."""
        if v is None:
            return None
        if v not in self.fenv:
            arr = self.const(v, n, "operand")
            assert arr is not None
            self.fenv[v] = self.b.const(arr, name=v.name)
        return self.fenv[v]

    def const(self, v: Value | None, n: Node, what: str) -> np.ndarray | None:
        if v is None:
            return None
        if v not in self.consts:
            raise QuantizeError(f"{n.label()}: the {what} must be a constant to be quantised")
        return np.asarray(self.consts[v])

    # ops -----------------------------------------------------------------------------------
    def mac(self, n: Node) -> None:
        """conv, dense, matmul with a constant right operand -> qconv / qdense."""
        x = n.inputs[0]
        assert x is not None
        if n.op.name == "matmul":
            b = self.const(n.inputs[1], n, "right operand")
            assert b is not None
            if b.ndim != 2:
                raise QuantizeError(f"{n.label()}: matmul by a {b.ndim}-D constant")
            w, bias, act, params = b.T, None, "none", ()
        else:
            w = self.const(n.operand("w"), n, "weight")
            bias = self.const(n.operand("b"), n, "bias")
            act, params = n.attr("act"), n.attr("act_params")
        assert w is not None
        k = int(np.prod(w.shape[1:]))
        if k > MAX_K:
            raise QuantizeError(f"{n.label()}: reduction length {k} exceeds MAX_K = {MAX_K}")
        qx, qpx = self.q(x, n), self.qp(x)
        out = n.outputs[0]
        qpy = self.qp(out)
        # Floor the weight scales so the multiplier stays representable (>= 2**-30; wide:
        # >= 2**-46) and the bias fits +-2**30 (wide: +-2**40), with a margin of 2.
        wide = qpx.bits == 16
        m_min, b_max = (2.0**-46, 2.0**39) if wide else (2.0**-30, 2.0**29)
        floor = np.maximum(qpy.scale * m_min, np.abs(bias if bias is not None else 0.0)
                           / b_max) / qpx.scale
        wq, sw = quantize_weights(w, axis=0, min_scale=floor)
        acc_scale = qpx.scale * sw
        bq = quantize_bias(bias, acc_scale, w.shape[0], wide)
        mult, shift = multipliers(acc_scale / qpy.scale, n.label(),
                                  qmath.WIDE_MULT_BITS if wide else qmath.MULT_BITS)
        lo, hi = _act_clamp(act, params, qpy, n)
        if n.op.name == "matmul":
            self.res.weights[f"{out.name}.b"] = (np.ascontiguousarray(wq.T), sw, 1)
        else:
            self.res.weights[f"{out.name}.w"] = (wq, sw, 0)
            if bias is not None:
                self.res.weights[f"{out.name}.bias"] = (bq, acc_scale, 0)
        consts = [self.b.const(wq, f"{out.name}.w"), self.b.const(bq, f"{out.name}.bias"),
                  self.b.const(mult, f"{out.name}.mult"), self.b.const(shift, f"{out.name}.shift")]
        attrs: dict[str, Any] = {"x_zp": qpx.zp, "y_zp": qpy.zp, "lo": lo, "hi": hi,
                                 **_ybits(qpy)}
        if n.op.name == "conv":
            for key in ("strides", "pads", "dilations", "group"):
                attrs[key] = n.attr(key)
            y = self.b.op("qconv", qx, *consts, name=n.name, **attrs)
        else:
            y = self.b.op("qdense", qx, *consts, name=n.name, **attrs)
        self.bind(out, y, qpy, n.name)

    def lut(self, n: Node, fn: Any) -> None:
        x = next(v for v in n.inputs if v is not None and v not in self.consts)
        qpx, out = self.qp(x), n.outputs[0]
        qpy = self.qp(out)
        table = build_lut(fn, qpx, qpy)
        y = self.b.op("lut", self.q(x, n), self.b.const(table, f"{out.name}.table"), name=n.name,
                      **_ybits(qpy))
        self.bind(out, y, qpy, n.name)

    def binary(self, n: Node) -> None:
        a, c = n.inputs
        assert a is not None and c is not None
        ca, cc = self.consts.get(a), self.consts.get(c)
        if ca is not None and cc is not None:
            raise QuantizeError(f"{n.label()}: both operands are constants (fold them first)")
        out = n.outputs[0]
        qpy = self.qp(out)
        qa, qc = self.q(a, n), self.q(c, n)
        qpa, qpc = self.res.qparams[a.name], self.res.qparams[c.name]
        if n.op.name == "add":
            frac = qmath.add_frac_bits(16 in (qpa.bits, qpc.bits, qpy.bits))
            ma, sa = multiplier(qpa.scale / qpy.scale * 2**frac, n.label())
            mc, sc = multiplier(qpc.scale / qpy.scale * 2**frac, n.label())
            y = self.b.op("qadd", qa, qc, name=n.name, a_zp=qpa.zp, a_mult=ma, a_shift=sa,
                          b_zp=qpc.zp, b_mult=mc, b_shift=sc, y_zp=qpy.zp, **_yrange(qpy))
        elif n.op.name == "mul":
            m, s = multiplier(qpa.scale * qpc.scale / qpy.scale, n.label())
            y = self.b.op("qmul", qa, qc, name=n.name, a_zp=qpa.zp, b_zp=qpc.zp, mult=m, shift=s,
                          y_zp=qpy.zp, **_yrange(qpy))
        else:
            raise QuantizeError(f"{n.label()}: '{n.op.name}' of two tensors has no int8 form")
        self.bind(out, y, qpy, n.name)

    def concat(self, n: Node) -> None:
        out = n.outputs[0]
        qpy = self.qp(out)
        xs = [self.q(v, n) for v in n.inputs if v is not None]
        qps = [self.res.qparams[v.name] for v in n.inputs if v is not None]
        ms = [multiplier(p.scale / qpy.scale, n.label()) for p in qps]
        y = self.b.op("qconcat", *xs, name=n.name, axis=n.attr("axis"),
                      x_zps=[p.zp for p in qps], mults=[m for m, _ in ms],
                      shifts=[s for _, s in ms], y_zp=qpy.zp, **_ybits(qpy))
        self.bind(out, y, qpy, n.name)

    def pool(self, n: Node) -> None:
        x, out = n.inputs[0], n.outputs[0]
        assert x is not None
        qx, qpx = self.q(x, n), self.qp(x)
        attrs = {k: n.attr(k) for k in ("kernel_shape", "strides", "pads", "ceil_mode")
                 } if n.op.name in ("max_pool", "avg_pool") else {
                     "kernel_shape": list(x.type.shape[2:])}
        if n.op.name in ("max_pool", "global_max_pool"):
            rng = {"lo": qpx.qmin, "hi": qpx.qmax} if qpx.bits == 16 else {}
            y = self.b.op("qmax_pool", qx, name=n.name, **attrs, **rng)
            self.bind(out, y, qpx, n.name)
            return
        qpy = self.qp(out)
        kh, kw = attrs["kernel_shape"]
        cip = n.attr("count_include_pad") if n.op.name == "avg_pool" else 0
        ratio = qpx.scale / qpy.scale
        m, s = multipliers(np.array([ratio] + [ratio / c for c in range(1, kh * kw + 1)]),
                           n.label())
        m[0], s[0] = 0, 1  # count 0 never occurs
        y = self.b.op("qavg_pool", qx, self.b.const(m, f"{out.name}.mult"),
                      self.b.const(s, f"{out.name}.shift"), name=n.name, x_zp=qpx.zp,
                      y_zp=qpy.zp, count_include_pad=cip, **attrs, **_yrange(qpy))
        self.bind(out, y, qpy, n.name)

    def pass_through(self, n: Node) -> None:
        x = n.inputs[0]
        assert x is not None
        qx, qpx = self.q(x, n), self.qp(x)
        attrs = dict(n.attrs)
        if n.op.name == "pad":
            attrs["value"] = float(qpx.zp + np.rint(n.attr("value") / qpx.scale))
        outs = self.b.emit(n.op, [qx] + [self.carry(v, n) for v in n.inputs[1:]], attrs, n.name)
        for fv, qv in zip(n.outputs, outs):
            self.bind(fv, qv, qpx, n.name)


def _ybits(qp: QParams) -> dict[str, int]:
    """The y_bits attribute of an op whose result has parameters qp (absent for int8, so int8
    graphs print as before)."""
    return {"y_bits": 16} if qp.bits == 16 else {}


def _yrange(qp: QParams) -> dict[str, int]:
    """y_bits and the full clamp of an int16 result (the attrs' defaults are int8's)."""
    return {"y_bits": 16, "lo": qp.qmin, "hi": qp.qmax} if qp.bits == 16 else {}


def _act_clamp(act: str, params: tuple[float, ...], qp: QParams, n: Node) -> tuple[int, int]:
    if act == "none":
        return qp.qmin, qp.qmax
    if act == "relu":
        return qp.clamp_of(0.0, None)
    if act == "clip":
        return qp.clamp_of(*params)
    raise QuantizeError(f"{n.label()}: act '{act}' cannot be a clamp (prepare() splits it)")


def quantize_graph(g: Graph, table: CalibTable, method: str = "minmax",
                   percentile: float = 99.99, int16: Collection[str] = (),
                   layer_methods: Mapping[str, str] | None = None) -> QuantResult:
    """The int8 graph of a prepared, calibrated float graph (see module docstring). Values
    named in `int16` (float value names whose parameters are computed, not inherited:
    compiler/quant/mixed.py) are kept in int16 (docs §8). `layer_methods` ({layer or value
    name: method}, `parse_layer_methods`) overrides `method` for those values (docs §5)."""
    st = _Q(g, table, method, percentile, int16, layer_methods)
    tail = _float_tail(g)
    for v in g.inputs:
        x = st.b.input(v.name, v.type)
        qp = st.qp(v)
        bits = {"bits": 16} if qp.bits == 16 else {}
        st.bind(v, st.b.op("quantize", x, scale=qp.scale, zp=qp.zp, **bits), qp, "input")
        st.fenv[v] = x
    skip = {m for f, t, _ in st.chains.values() for m in (f, t)}
    for n in g.nodes:
        name = n.op.name
        if name == "const" or n in skip:
            continue
        if n in st.chains:
            st.channel_lut(n)
        elif n in tail:
            _emit_float(st, n)
        elif name in ("conv", "dense") or (name == "matmul" and n.inputs[1] in st.consts):
            st.mac(n)
        elif (fn := unary_fn(n, st.consts)) is not None:
            st.lut(n, fn)
        elif name in ("add", "mul", "sub", "div"):
            st.binary(n)
        elif name == "concat":
            st.concat(n)
        elif name in ("max_pool", "avg_pool", "global_avg_pool", "global_max_pool"):
            st.pool(n)
        elif name in PASS_THROUGH:
            st.pass_through(n)
        elif name == "lstm":
            emit_qlstm(st, n)
        else:
            raise QuantizeError(f"{n.label()}: op '{name}' has no int8 form and feeds "
                                "quantised ops (only a float tail after the outputs is allowed)")
    outs = []
    for v in g.outputs:
        if v in st.fenv:
            outs.append(st.fenv[v])
        else:
            qp = st.res.qparams[v.name]
            outs.append(st.b.op("dequantize", st.env[v], scale=qp.scale, zp=qp.zp,
                                out_name=v.name))
    st.b.output(*outs)
    return st.res


def _float_tail(g: Graph) -> set[Node]:
    """Nodes left in float after the output dequantise: FLOAT_TAIL ops whose results reach only
    graph outputs or other tail nodes."""
    users = g.users()
    tail: set[Node] = set()
    for n in reversed(g.nodes):
        if n.op.name not in FLOAT_TAIL:
            continue
        if all(u in tail for v in n.outputs for u in users.get(v, [])):
            tail.add(n)
    return tail


def _emit_float(st: _Q, n: Node) -> None:
    ins = []
    for v in n.inputs:
        if v is None or v in st.fenv:
            ins.append(st.fenv.get(v) if v is not None else None)
        elif v in st.consts:
            ins.append(st.b.const(st.consts[v], name=v.name))
        else:
            qp = st.res.qparams[v.name]
            dq = st.b.op("dequantize", st.env[v], scale=qp.scale, zp=qp.zp,
                         out_name=f"{v.name}.dq")
            st.fenv[v] = dq
            ins.append(dq)
    outs = st.b.emit(n.op, ins, dict(n.attrs), n.name, [v.name for v in n.outputs])
    for fv, nv in zip(n.outputs, outs):
        st.fenv[fv] = nv
