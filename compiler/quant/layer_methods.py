"""Per-layer range methods (`quantize{layer_methods=...}`, `--quant-layer-method LAYER=METHOD`):
parsing the option and resolving layer names to the values of the prepared graph."""

from __future__ import annotations

from collections.abc import Mapping

from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.quant.observers import METHODS
from ocrc.compiler.quant.qparams import QuantizeError


def parse_layer_methods(spec: str) -> dict[str, str]:
    """'NAME:METHOD+NAME:METHOD...' ('' for none) -> {name: method}; NAME is a layer (node
    name) or a value of the prepared graph, METHOD one of observers.METHODS."""
    out: dict[str, str] = {}
    for item in (s for s in spec.strip().split("+") if s):
        name, sep, method = item.rpartition(":")
        if not sep or not name:
            raise QuantizeError(f"layer_methods={spec!r}: item {item!r} is not NAME:METHOD")
        if method not in METHODS:
            raise QuantizeError(f"layer_methods={spec!r}: method {method!r} of {name!r} is "
                                f"not one of {', '.join(METHODS)}")
        out[name] = method
    return out


def resolve_layer_methods(g: Graph, methods: Mapping[str, str]) -> dict[str, str]:
    """{layer or value name: method} -> {value name: method} for the prepared graph g: a layer
    name stands for every value its nodes produce (a conv and the activation `prepare` split
    from it share the layer's name). An unknown name is an error naming some valid ones."""
    by_layer: dict[str, list[str]] = {}
    values: set[str] = set(v.name for v in g.inputs)
    for n in g.nodes:
        if n.op.name == "const":
            continue
        outs = [v.name for v in n.outputs if v.name]
        values.update(outs)
        if n.name:
            by_layer.setdefault(n.name, []).extend(outs)
    out: dict[str, str] = {}
    for name, method in methods.items():
        if name in by_layer:
            out.update(dict.fromkeys(by_layer[name], method))
        elif name in values:
            out[name] = method
        else:
            some = ", ".join(list(by_layer)[:8])
            raise QuantizeError(f"layer_methods: {name!r} is neither a layer nor a value of "
                                f"the graph (layers: {some}{', ...' if len(by_layer) > 8 else ''})")
    return out
