"""Cross-layer equalisation (data-driven) of conv -> [activation] -> conv pairs.

Per-tensor int8 activations lose the small channels of a tensor whose channel ranges differ by
orders of magnitude (BN-folded MobileNetV3 blocks: 0.04 next to 106). For a pair A -> f -> B
the channel c of A's output is divided by s_c (A's row c and bias c), B's input channel c is
multiplied by s_c, and f becomes f_c(x) = f(s_c x) / s_c: written as mul(s) -> f -> mul(1/s),
which the quantiser turns into one per-channel table (homogeneous f such as relu stays as is).
Float semantics are unchanged up to rounding. s_c equalises the activation channel ranges fully
when B is depthwise (its per-channel weight scales absorb s_c), else balances activation and
weight-column ranges as in Nagel et al. 2019: s_c = sqrt(r_c / w_c).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ocrc.compiler.ir.graph import Builder, Graph, Node, Value
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS, MUL

HOMOGENEOUS = ("relu",)  # f(s x) = s f(x) for s > 0
MIN_FACTOR = 1e-3  # s_c relative to the largest: bounds how far a channel is blown up


def channel_absmax(g: Graph, data: Iterable[Mapping[str, np.ndarray]],
                   into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """max |x| per channel (axis 1) over `data` of every value that `equalize` reads: the
    output feeding the second conv of each pair (axis 1 is a channel axis there; other 4-D
    values, such as a [W, N, C, H] transpose before the CNN-to-RNN reshape, are not recorded,
    so statistics of graphs of other batch sizes or widths merge)."""
    out = into if into is not None else {}
    wanted = {(f or a).output for a, f, _ in _pairs(g)}

    def hook(n: Node, outs: list[np.ndarray]) -> None:
        for v, a in zip(n.outputs, outs):
            if v in wanted and a.ndim == 4 and a.dtype.kind == "f":
                m = np.abs(a).max(axis=(0, 2, 3)).astype(np.float64)
                out[v.name] = np.maximum(out[v.name], m) if v.name in out else m
    for sample in data:
        run(g, sample, hook)
    return out


def _pairs(g: Graph) -> list[tuple[Node, Node | None, Node]]:
    """(A, f or None, B): conv A (act none/relu) whose output feeds only f (an activation,
    itself feeding only B) or only B, a conv with constant weights."""
    users = g.users()
    consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
    found = []
    for a in g.nodes:
        if a.op.name != "conv" or a.attr("act") not in ("none", "relu") or \
                a.operand("res") is not None or a.operand("w") not in consts:
            continue
        out = a.output
        us = users.get(out, [])
        if len(us) != 1 or out in g.outputs:
            continue
        f, nxt = None, us[0]
        if nxt.op.name in ACTIVATIONS and len(nxt.inputs) == 1:
            f = nxt
            us = users.get(f.output, [])
            if len(us) != 1 or f.output in g.outputs:
                continue
            nxt = us[0]
        if nxt.op.name == "conv" and nxt.inputs[0] is (f.output if f else out) and \
                nxt.operand("w") in consts:
            found.append((a, f, nxt))
    return found


def equalize(g: Graph, absmax: Mapping[str, np.ndarray]) -> Graph:
    """The equalised graph (see module docstring); pairs without statistics are left alone."""
    consts = {n.outputs[0]: n.attrs["value"] for n in g.nodes if n.op.name == "const"}
    new_const: dict[Value, np.ndarray] = {}
    chains: dict[Node, np.ndarray] = {}  # f -> its factors, for non-homogeneous f
    for a, f, b in _pairs(g):
        fed = (f or a).output.name
        if fed not in absmax:
            continue
        r = np.maximum(absmax[fed], 1e-12)
        wb = np.asarray(new_const.get(b.operand("w"), consts[b.operand("w")]), np.float64)
        c = r.size
        depthwise = b.attr("group") == c and wb.shape[1] == 1
        if depthwise:
            s = r / r.max()
        else:
            cols = np.abs(wb).max(axis=(0, 2, 3))
            s = np.sqrt(r / np.maximum(cols, 1e-12))
            s = s / s.max()
        s = np.maximum(s, MIN_FACTOR)
        wa = np.asarray(new_const.get(a.operand("w"), consts[a.operand("w")]), np.float64)
        new_const[a.operand("w")] = (wa / s.reshape(-1, 1, 1, 1)).astype(np.float32)
        if a.operand("b") is not None:
            ba = np.asarray(new_const.get(a.operand("b"), consts[a.operand("b")]), np.float64)
            new_const[a.operand("b")] = (ba / s).astype(np.float32)
        if depthwise:
            mult = wb.shape[0] // c
            wb = wb * np.repeat(s, mult).reshape(-1, 1, 1, 1)
        else:
            wb = wb * s.reshape(1, -1, 1, 1)
        new_const[b.operand("w")] = wb.astype(np.float32)
        if f is not None and f.op.name not in HOMOGENEOUS:
            chains[f] = s
    bld = Builder(Graph(list(g.inputs), [], list(g.outputs), g.name))
    for n in g.nodes:
        if n.op.name == "const" and n.outputs[0] in new_const:
            bld.graph.nodes.append(Node(n.op, (), {"value": new_const[n.outputs[0]]}, n.outputs,
                                        n.name))
        elif n in chains:
            s = chains[n].astype(np.float32).reshape(1, -1, 1, 1)
            x = bld.op("mul", n.inputs[0], bld.const(s, f"{n.output.name}.eq_in"),
                       name=n.name, out_name=f"{n.output.name}.eq")
            y = bld.emit(n.op, [x], dict(n.attrs), n.name, (f"{n.output.name}.act",))[0]
            bld.graph.nodes.append(Node(MUL, (y, bld.const(
                (1 / s).astype(np.float32), f"{n.output.name}.eq_out")), {}, n.outputs, n.name))
        else:
            bld.graph.nodes.append(n)
    return bld.graph
