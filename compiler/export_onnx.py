"""`ocrc compile -t onnx`: a float IR graph (optionally with its int8 QuantResult) -> ONNX.

Float graphs become plain opset-17 ONNX (conv/dense epilogues expanded into Add and activation
nodes). A quantised model is written as QDQ: the prepared float graph with QuantizeLinear ->
DequantizeLinear pairs on every value the int8 graph quantises, int8 per-channel weights and
int32 biases behind DequantizeLinear. The integer LSTM, which has no QDQ form, is written as
`qlstm` itself in standard ONNX ops (`_qlstm_cell`: MatMulInteger, int64 rescales, Gather
tables, a Scan per direction; docs/quantization.md §6), so that it reads the golden model's
codes; the float export keeps ONNX's LSTM op (a factored R, U V, multiplied back out). int16
activations (mixed precision) are QuantizeLinear/DequantizeLinear with int16 zero points of the
`com.microsoft` domain (onnxruntime's; the standard ops take int16 only from opset 21, and
onnxruntime 1.31's QDQ propagation rejects opset-21 graphs with a Reshape after a
DequantizeLinear); the wide int64 biases of their MACs are float constants (their exact values).
The file runs in onnxruntime and opens in Netron.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ocrc.compiler.errors import UnsupportedOpError
from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.ops.reduce import REDUCTIONS
from ocrc.compiler.quant.quantizer import QuantResult
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.fileio import atomic_write_bytes

OPSET = 17
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib QuantizeLinear/DequantizeLinear (int16)
_ONNX_DTYPE = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i8": TensorProto.INT8,
               "u8": TensorProto.UINT8, "i16": TensorProto.INT16, "i32": TensorProto.INT32,
               "i64": TensorProto.INT64, "bool": TensorProto.BOOL}
_SIMPLE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "matmul": "MatMul", "pow": "Pow", "sqrt": "Sqrt", "relu": "Relu", "sigmoid": "Sigmoid",
           "tanh": "Tanh", "prelu": "PRelu", "global_avg_pool": "GlobalAveragePool",
           "global_max_pool": "GlobalMaxPool"}


class _Writer:
    def __init__(self, g: Graph, qres: QuantResult | None) -> None:
        self.g, self.qres = g, qres
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
        self.counter = 0
        self.int16 = qres is not None and any(qp.bits == 16 for qp in qres.qparams.values())

    def fresh(self, base: str) -> str:
        base = base or "t"
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def init(self, arr: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, ins: list[str], base: str, n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self.fresh(f"{base}.{op}" if n_out == 1 else f"{base}.{op}{i}")
                for i in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=self.fresh(f"{op}_{base}"),
                                           **attrs))
        return outs

    def qdq(self, name: str, scale: float, zp: int, base: str, bits: int = 8) -> str:
        """name -> QuantizeLinear -> DequantizeLinear (per tensor; int16 when bits is 16)."""
        s = self.init(np.array(scale, np.float32), f"{base}.scale")
        z = self.init(np.array(zp, np.int16 if bits == 16 else np.int8), f"{base}.zp")
        domain = {"domain": MS_DOMAIN} if bits == 16 else {}
        q = self.node("QuantizeLinear", [name, s, z], base, **domain)[0]
        return self.node("DequantizeLinear", [q, s, z], base, **domain)[0]

    def ref(self, v: Value | None) -> str:
        if v is None:
            return ""
        if v not in self.names:
            if v in self.consts:
                self.names[v] = self.init(self.consts[v], v.name or "c")
            else:
                raise AssertionError(f"value %{v.name} used before definition")
        return self.names[v]

    def bind(self, v: Value, name: str) -> None:
        """Record v's ONNX name, wrapped in Q/DQ when the int8 model quantises v."""
        if self.qres is not None and v.name in self.qres.qparams and v not in self.consts:
            qp = self.qres.qparams[v.name]
            name = self.qdq(name, qp.scale, qp.zp, v.name, qp.bits)
        self.names[v] = name

    def weight(self, n: Node, v: Value | None, what: str) -> str:
        """A weight/bias operand: int8/int32 + DequantizeLinear when quantised."""
        if v is None:
            return ""
        key = f"{n.outputs[0].name}.{what}"
        if self.qres is None or key not in self.qres.weights:
            return self.ref(v)
        q, scale, axis = self.qres.weights[key]
        if q.dtype == np.int64:  # a wide bias (int16 input): its exact value as a float
            return self.init((q * scale).astype(np.float32), key)
        shape = q.shape
        if scale.ndim > 1:  # per (direction, row) scales: DQ a [D*4H, K] view, reshape back
            q, scale, axis = q.reshape(scale.size, -1), scale.reshape(-1), 0
        zp = np.zeros(scale.shape, q.dtype if q.dtype == np.int8 else np.int32)
        args = [self.init(q, key), self.init(scale.astype(np.float32), f"{key}.scale"),
                self.init(zp, f"{key}.zp")]
        y = self.node("DequantizeLinear", args, key, axis=axis)[0]
        if q.shape != shape:
            y = self.node("Reshape", [y, self.init(np.array(shape, np.int64), f"{key}.shape")],
                          key)[0]
        return y


def _act(w: _Writer, x: str, act: str, params: tuple[float, ...], base: str) -> str:
    if act == "none":
        return x
    if act == "clip":
        lo = w.init(np.array(params[0], np.float32), f"{base}.min")
        hi = w.init(np.array(params[1], np.float32), f"{base}.max")
        return w.node("Clip", [x, lo, hi], base)[0]
    if act == "silu":
        return w.node("Mul", [x, w.node("Sigmoid", [x], base)[0]], base)[0]
    if act == "hard_swish":
        return w.node("HardSwish", [x], base)[0]
    if act == "hard_sigmoid":
        return w.node("HardSigmoid", [x], base, alpha=params[0], beta=params[1])[0]
    if act == "leaky_relu":
        return w.node("LeakyRelu", [x], base, alpha=params[0])[0]
    if act in _SIMPLE:
        return w.node(_SIMPLE[act], [x], base)[0]
    raise UnsupportedOpError(f"ONNX export: activation '{act}' has no ONNX form")


def _mac(w: _Writer, n: Node) -> list[str]:
    base = n.outputs[0].name
    x = w.ref(n.inputs[0])
    wt, b = w.weight(n, n.operand("w"), "w"), w.weight(n, n.operand("b"), "bias")
    if n.op.name == "conv":
        a = n.all_attrs
        y = w.node("Conv", [x, wt] + ([b] if b else []), base, strides=list(a["strides"]),
                   pads=list(a["pads"]), dilations=list(a["dilations"]), group=a["group"])[0]
    else:
        wt_t = w.node("Transpose", [wt], base, perm=[1, 0])[0]
        y = w.node("MatMul", [x, wt_t], base)[0]
        if b:
            y = w.node("Add", [y, b], base)[0]
    res = n.operand("res")
    if res is not None:
        y = w.node("Add", [y, w.ref(res)], base)[0]
    act = n.attr("act")
    if act == "prelu":
        return [w.node("PRelu", [y, w.ref(n.operand("slope"))], base)[0]]
    return [_act(w, y, act, tuple(n.attr("act_params")), base)]


def _lstm(w: _Writer, n: Node) -> list[str]:
    base = n.outputs[0].name
    x = w.ref(n.inputs[0])
    x_name = n.inputs[0].name if n.inputs[0] is not None else ""
    if w.qres is not None and x_name in w.qres.narrowed:  # int16 input rescaled to int8
        qp = w.qres.narrowed[x_name]
        x = w.qdq(x, qp.scale, qp.zp, f"{x_name}.i8")
    q = _qlstm_node(w, base)
    if q is not None:
        return _qlstm_cell(w, n, q, x)
    rv = n.inputs[7] if len(n.inputs) > 7 else None
    if rv is None:
        r = w.weight(n, n.inputs[2], "R")
    else:  # ONNX's LSTM has no factored R: write R = U V
        u, v = w.g.const_value(n.inputs[2]), w.g.const_value(rv)
        if u is None or v is None:
            raise UnsupportedOpError(f"{n.label()}: a factored R needs constant U and V")
        r = w.init(np.matmul(u.astype(np.float64), v).astype(np.float32), f"{base}.R")
    ins = [x, w.weight(n, n.inputs[1], "W"), r]
    ins += [w.ref(v) for v in n.inputs[3:7]]
    while ins and not ins[-1]:
        ins.pop()
    if len(ins) > 4:
        ins.insert(4, "")  # sequence_lens
    return w.node("LSTM", ins, base, n_out=3, hidden_size=n.attr("hidden_size"),
                  direction=n.attr("direction"))


def _qlstm_node(w: _Writer, name: str) -> Node | None:
    """The `qlstm` of the int8 graph that produces the value `name`, if any."""
    qres = w.qres
    if qres is None or name not in qres.qvalue:
        return None
    v = qres.qvalue[name]
    return next((n for n in qres.graph.nodes if n.op.name == "qlstm" and v in n.outputs), None)


def _qlstm_cell(w: _Writer, n: Node, q: Node, x: str) -> list[str]:
    """The integer LSTM `q` (docs §4) on the float x: QuantizeLinear at q's input parameters,
    then q itself in standard ONNX integer ops (export_qops.qlstm_steps: MatMulInteger, int64
    rescales, Gather tables, a Scan per direction), then DequantizeLinear of Y and Y_h and the
    cell in float. It reads the golden model's codes, not a float LSTM's (ONNX's LSTM op has
    none of these roundings; the unquantised export keeps it)."""
    from ocrc.compiler.export_qops import qlstm_steps

    qres = w.qres
    assert qres is not None
    base = n.outputs[0].name
    a = q.all_attrs
    x_name = n.inputs[0].name  # type: ignore[union-attr]
    qpx = qres.narrowed.get(x_name) or qres.qparams[x_name]
    qph = qres.qparams[base]
    xq = w.node("QuantizeLinear", [x, w.init(np.array(qpx.scale, np.float32), f"{base}.xs"),
                                   w.init(np.array(a["x_zp"], np.int8), f"{base}.xzp")],
                f"{base}.x")[0]
    y, hn, cn = qlstm_steps(w, q, xq, base, qres.graph)
    sh = w.init(np.array(qph.scale, np.float32), f"{base}.hs")
    zp = w.init(np.array(a["h_zp"], np.int8), f"{base}.hzp")
    cscale = np.exp2(-np.asarray(a["cell_frac"], np.float32)).reshape(-1, 1, 1)
    cell = w.node("Mul", [w.node("Cast", [cn], base, to=TensorProto.FLOAT)[0],
                          w.init(cscale.astype(np.float32), f"{base}.cscale")], base)[0]
    return [w.node("DequantizeLinear", [v, sh, zp], base)[0] for v in (y, hn)] + [cell]


def _shape_op(op: str, key: str) -> Callable[[_Writer, Node], list[str]]:
    def emit(w: _Writer, n: Node) -> list[str]:
        arr = w.init(np.array(n.attr(key), np.int64), f"{n.outputs[0].name}.{key}")
        return w.node(op, [w.ref(n.inputs[0]), arr], n.outputs[0].name)
    return emit


def _pool(w: _Writer, n: Node) -> list[str]:
    a = n.all_attrs
    extra = {"count_include_pad": a["count_include_pad"]} if n.op.name == "avg_pool" else {}
    if n.op.name == "max_pool":
        extra["dilations"] = list(a["dilations"])
    return w.node("MaxPool" if n.op.name == "max_pool" else "AveragePool", [w.ref(n.inputs[0])],
                  n.outputs[0].name, kernel_shape=list(a["kernel_shape"]),
                  strides=list(a["strides"]), pads=list(a["pads"]), ceil_mode=a["ceil_mode"],
                  **extra)


def _slice(w: _Writer, n: Node) -> list[str]:
    a, base = n.all_attrs, n.outputs[0].name
    args = [w.ref(n.inputs[0])] + [w.init(np.array(a[k], np.int64), f"{base}.{k}")
                                   for k in ("starts", "ends")]
    if a["axes"]:
        args.append(w.init(np.array(a["axes"], np.int64), f"{base}.axes"))
        if a["steps"]:
            args.append(w.init(np.array(a["steps"], np.int64), f"{base}.steps"))
    return w.node("Slice", args, base)


def _pad(w: _Writer, n: Node) -> list[str]:
    a, base = n.all_attrs, n.outputs[0].name
    args = [w.ref(n.inputs[0]), w.init(np.array(a["pads"], np.int64), f"{base}.pads"),
            w.init(np.array(a["value"], n.inputs[0].type.dtype.np), f"{base}.value")]
    return w.node("Pad", args, base, mode=a["mode"])


def _reduce(w: _Writer, n: Node) -> list[str]:
    """reduce_* -> Reduce*: at OPSET 17 ReduceSum takes its axes as an input, the others as an
    attribute."""
    base, axes = n.outputs[0].name, [int(a) for a in n.attr("axes")]
    onnx_op = REDUCTIONS[n.op.name][3]
    if onnx_op == "ReduceSum":
        ax = w.init(np.array(axes, np.int64), f"{base}.axes")
        return w.node(onnx_op, [w.ref(n.inputs[0]), ax], base, keepdims=n.attr("keepdims"))
    return w.node(onnx_op, [w.ref(n.inputs[0])], base, axes=axes, keepdims=n.attr("keepdims"))


EMITTERS: dict[str, Callable[[_Writer, Node], list[str]]] = {
    **{name: _reduce for name in REDUCTIONS},
    "conv": _mac, "dense": _mac, "lstm": _lstm, "max_pool": _pool, "avg_pool": _pool,
    "reshape": _shape_op("Reshape", "shape"), "expand": _shape_op("Expand", "shape"),
    "tile": _shape_op("Tile", "repeats"), "slice": _slice, "pad": _pad,
    "transpose": lambda w, n: w.node("Transpose", [w.ref(n.inputs[0])], n.outputs[0].name,
                                     perm=list(n.attr("perm"))),
    "concat": lambda w, n: w.node("Concat", [w.ref(v) for v in n.inputs], n.outputs[0].name,
                                  axis=n.attr("axis")),
    "softmax": lambda w, n: w.node("Softmax", [w.ref(n.inputs[0])], n.outputs[0].name,
                                   axis=n.attr("axis")),
    "matmul": lambda w, n: w.node("MatMul", [w.ref(n.inputs[0]), w.weight(n, n.inputs[1], "b")],
                                  n.outputs[0].name),
    "gather": lambda w, n: w.node("Gather", [w.ref(v) for v in n.inputs], n.outputs[0].name,
                                  axis=n.attr("axis")),
}


def export_onnx(g: Graph, qres: QuantResult | None = None) -> onnx.ModelProto:
    """The ONNX model of float graph `g`; with `qres` (from quantize_graph on this prepared
    graph), the QDQ model of its int8 quantisation. An int8 graph itself (`quantize_graph`'s
    result, without `qres`) is written in its integer form (compiler/export_qops.py)."""
    from ocrc.compiler.export_qops import QEMITTERS  # it builds on this module's _Writer

    w = _Writer(g, qres)
    inputs = []
    for v in g.inputs:
        w.taken.add(v.name)
        inputs.append(helper.make_tensor_value_info(v.name, _ONNX_DTYPE[v.type.dtype.value],
                                                    list(v.type.shape)))
        w.bind(v, v.name)
    for n in g.nodes:
        name = n.op.name
        if name == "const":
            continue
        if name in EMITTERS:
            outs = EMITTERS[name](w, n)
        elif name in QEMITTERS:  # an int8 graph: the integer form
            outs = QEMITTERS[name](w, n)
        elif name in _SIMPLE:
            outs = w.node(_SIMPLE[name], [w.ref(v) for v in n.inputs], n.outputs[0].name)
        elif "activation" in n.op.traits:
            params = tuple(n.all_attrs[p] for p in sorted(n.op.attrs))
            if name == "hard_sigmoid":
                params = (n.attr("alpha"), n.attr("beta"))
            outs = [_act(w, w.ref(n.inputs[0]), name, params, n.outputs[0].name)]
        else:
            raise UnsupportedOpError(f"ONNX export: {n.label()} has no ONNX form")
        for v, o in zip(n.outputs, outs):
            w.bind(v, o)
    outputs = []
    for v in g.outputs:
        src = w.ref(v)
        if src != v.name:  # an output that is a graph input is declared as it is
            w.nodes.append(helper.make_node("Identity", [src], [v.name], name=f"out_{v.name}"))
        outputs.append(helper.make_tensor_value_info(v.name, _ONNX_DTYPE[v.type.dtype.value],
                                                     list(v.type.shape)))
    graph = helper.make_graph(w.nodes, g.name or "main", inputs, outputs, w.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if w.int16:
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ocrc")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


ONNX_FORMS = ("qdq", "integer")


def check_onnx_form(form: str) -> None:
    """OcrcError naming `form` unless it is one of ONNX_FORMS."""
    if form not in ONNX_FORMS:
        raise OcrcError(f"--onnx-form {form!r}: expected one of {', '.join(ONNX_FORMS)}")


def save_onnx(graph: Graph, options: Mapping[str, Any], path: str | os.PathLike[str],
              form: str = "qdq") -> None:
    """Write the pipeline's result as ONNX: when the quantize pass ran, QDQ (form "qdq": its
    QuantResult and prepared float graph are in `options`) or the int8 graph's integer form
    (form "integer", compiler/export_qops.py); else the float graph itself."""
    check_onnx_form(form)
    qres = options.get("quant_result")
    if form == "integer" and qres is None:
        raise OcrcError("--onnx-form integer: the integer form writes an int8 graph; add "
                        "--quant int8")
    if qres is None:
        model = export_onnx(graph)
    elif form == "integer":
        model = export_onnx(qres.graph)
    else:
        model = export_onnx(options["quant_float_graph"], qres)
    atomic_write_bytes(path, model.SerializeToString())
