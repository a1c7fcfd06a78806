"""Deterministic printer of the generic text form (grammar: ir.lark).

`print_graph(g)` returns the text and the arrays of the constants too large to print inline
(> INLINE_LIMIT elements), keyed by the symbol the text uses for them. Names come from the
values' name hints (sanitised, made unique in program order), else from a counter. Attributes
are sorted and only non-default ones are printed; floats print so that they parse back
bit-identically. print(parse(print(g))) == print(g), byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ocrc.compiler.ir.graph import Graph, Value
from ocrc.compiler.ir.opdef import attr_equal

INLINE_LIMIT = 16
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def sanitize(name: str) -> str:
    return _BAD_CHARS.sub("_", name)


def assign_names(g: Graph) -> dict[Value, str]:
    """Unique printable names for every value, deterministic in program order."""
    names: dict[Value, str] = {}
    taken: set[str] = set()
    counter = 0
    for v in g.values():
        if v in names:
            continue
        base = sanitize(v.name)
        if base:
            cand, k = base, 1
            while cand in taken:
                cand, k = f"{base}_{k}", k + 1
        else:
            while str(counter) in taken:
                counter += 1
            cand = str(counter)
        taken.add(cand)
        names[v] = cand
    return names


def format_float(x: float, dtype: np.dtype | None = None) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if dtype is not None and dtype == np.float32:
        s = str(np.float32(x))  # shortest string that round-trips as float32
    else:
        s = repr(float(x))
    return s if any(c in s for c in ".en") else s + ".0"


def format_scalar(x: Any, dtype: np.dtype | None = None) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "1" if x else "0"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return format_float(float(x), dtype)
    if isinstance(x, str):
        return json.dumps(x)
    raise TypeError(f"cannot print attribute value {x!r}")


def format_attr(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    return format_scalar(value)


def format_dense(arr: np.ndarray) -> str:
    return "dense<[" + ", ".join(format_scalar(v, arr.dtype) for v in arr.reshape(-1)) + "]>"


def print_graph(g: Graph) -> tuple[str, dict[str, np.ndarray]]:
    """The text of `g` and the arrays its @symbols refer to."""
    names = assign_names(g)
    blobs: dict[str, np.ndarray] = {}

    def ref(v: Value | None) -> str:
        return "_" if v is None else f"%{names[v]}"

    def types(vs: Any) -> str:
        ts = [str(v.type) for v in vs]
        return ts[0] if len(ts) == 1 else "(" + ", ".join(ts) + ")"

    args = ", ".join(f"%{names[v]}: {v.type}" for v in g.inputs)
    outs = [str(v.type) for v in g.outputs]
    ret_types = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    lines = [f"func @{sanitize(g.name) or 'main'}({args}) -> {ret_types} {{"]
    for n in g.nodes:
        attrs = []
        for key in sorted(n.attrs):
            val = n.attrs[key]
            spec = n.op.attrs.get(key)
            if spec is not None and spec.default is not None and attr_equal(val, spec.default):
                continue
            if isinstance(val, np.ndarray):
                if val.size <= INLINE_LIMIT:
                    attrs.append(f"{key} = {format_dense(val)}")
                else:
                    sym = names[n.outputs[0]]
                    blobs[sym] = val
                    attrs.append(f"{key} = @{sym}")
            else:
                attrs.append(f"{key} = {format_attr(val)}")
        inputs = list(n.inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        line = (f"  {', '.join(ref(v) for v in n.outputs)} = {n.op.name}"
                f"({', '.join(ref(v) for v in inputs)})")
        if attrs:
            line += " {" + ", ".join(attrs) + "}"
        line += f" : {types(n.outputs)}"
        if n.name:
            line += f" loc({json.dumps(n.name)})"
        lines.append(line)
    lines.append("  return " + ", ".join(ref(v) for v in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n", blobs


def graph_text(g: Graph) -> str:
    """Only the text (for messages, tests and --print-ir-after-all)."""
    return print_graph(g)[0]
