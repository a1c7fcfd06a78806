"""Which float ops become int8 tables, and their functions (docs/quantization.md §3, §6).

`unary_fn`: the float function of an elementwise op of one tensor and scalar constants;
`channel_chains`/`chain_fns`: the per-channel mul -> f -> mul chains cross-layer equalisation
writes; `flat_clip`: the part of a table input's range where the table is not constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.ops.elementwise import ACTIVATIONS


def unary_fn(n: Node, consts: dict[Value, np.ndarray]) -> Any | None:
    """The float function x -> y of an elementwise op of one tensor (plus scalar constants),
    which can become a table; None for any other op."""
    if "activation" in n.op.traits and n.op.name in ACTIVATIONS:
        act, attrs = ACTIVATIONS[n.op.name], n.all_attrs
        params = [attrs[p] for p, _ in act.params]
        return lambda x: act.fn(x, *params)
    if n.op.name not in ("add", "sub", "mul", "div", "max", "min", "pow"):
        return None
    a, c = n.inputs
    scalar = [v for v in (a, c) if v in consts and consts[v].size == 1]
    if len(scalar) != 1 or (a in consts and c in consts):
        return None
    s = np.float32(consts[scalar[0]].reshape(()))
    ref, first = n.op.ref, scalar[0] is c
    return lambda x: ref([x, s] if first else [s, x], {})[0]


def channel_chains(g: Graph, consts: dict[Value, np.ndarray]) -> dict[Node, tuple[Node, Node,
                                                                                 np.ndarray]]:
    """mul(x, s) -> f -> mul(., 1/s) with per-channel constants [1, C, 1, 1] and single-use
    links (what `equalize` writes): head mul -> (f, tail mul, s)."""
    users = g.users()
    out = {}
    for n in g.nodes:
        if n.op.name != "mul" or n.inputs[1] not in consts:
            continue
        s = consts[n.inputs[1]]
        if s.ndim != 4 or s.shape[0] != 1 or s.shape[2:] != (1, 1) or s.size < 2:
            continue
        us = users.get(n.output, [])
        if len(us) != 1 or us[0].op.name not in ACTIVATIONS or n.output in g.outputs:
            continue
        f = us[0]
        us = users.get(f.output, [])
        if len(us) != 1 or us[0].op.name != "mul" or us[0].inputs[0] is not f.output or \
                us[0].inputs[1] not in consts or f.output in g.outputs:
            continue
        out[n] = (f, us[0], s.reshape(-1).astype(np.float64))
    return out


def chain_fns(f: Node, s: np.ndarray) -> list[Any]:
    """The per-channel functions x -> f(s_c x) / s_c of a chain."""
    fn = unary_fn(f, {})
    assert fn is not None
    return [lambda x, k=float(k): np.asarray(fn((x * k).astype(np.float32)), np.float64) / k
            for k in s]


def flat_clip(fn: Any, lo: float, hi: float, step: float) -> tuple[float, float]:
    """The part of [lo, hi] where the int8 table of fn is not constant: beyond the returned
    bounds rint(fn(x) / step) does not change, so clipping the input there changes no output
    and buys input resolution (docs §5)."""
    if hi - lo <= 0:
        return lo, hi
    x = np.linspace(lo, hi, 8193)
    yq = np.rint(np.asarray(fn(x.astype(np.float32)), np.float64) / step)
    left = int(np.argmax(yq != yq[0])) if (yq != yq[0]).any() else len(x)
    right = int(np.argmax(yq[::-1] != yq[-1])) if (yq != yq[-1]).any() else len(x)
    new_lo = float(x[max(left - 1, 0)])
    new_hi = float(x[len(x) - 1 - max(right - 1, 0)])
    return (new_lo, new_hi) if new_lo < new_hi else (lo, hi)
