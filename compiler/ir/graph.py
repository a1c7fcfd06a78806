"""The IR graph: SSA values, immutable nodes and an ordered graph.

A `Graph` is a function: named inputs, an ordered list of nodes (a topological order), named
outputs. Constants are `const` nodes whose `value` attribute holds the array. Nodes are never
mutated: passes build new nodes and a new graph (see ocrc.compiler.rewrite). Use lists and
dicts keyed by values (identity); producer and user maps are computed on demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from ocrc.compiler.errors import IRVerifyError
from ocrc.compiler.ir.opdef import OPS, OpDef, coerce_attr
from ocrc.compiler.ir.types import TensorType


class Value:
    """An SSA value: a name hint (may be empty) and a type. Hashed and compared by identity."""

    __slots__ = ("name", "type")

    def __init__(self, type: TensorType, name: str = "") -> None:
        self.type = type
        self.name = name

    def __repr__(self) -> str:
        return f"%{self.name or '?'}: {self.type}"


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. `inputs` may hold None for an absent optional operand; `attrs`
    holds only the attributes given explicitly (defaults come from the op table); `name` is
    provenance (the ONNX node name) used in messages and per-layer reports."""

    op: OpDef
    inputs: tuple[Value | None, ...]
    attrs: Mapping[str, Any]
    outputs: tuple[Value, ...]
    name: str = ""

    @property
    def output(self) -> Value:
        assert len(self.outputs) == 1, f"{self.op.name} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def attr(self, key: str) -> Any:
        """The attribute's value, or the op table's default."""
        if key in self.attrs:
            return self.attrs[key]
        return self.op.attrs[key].default

    @property
    def all_attrs(self) -> dict[str, Any]:
        return self.op.with_defaults(self.attrs)

    def operand(self, name: str) -> Value | None:
        i = self.op.operand_index(name)
        return self.inputs[i] if i < len(self.inputs) else None

    def label(self) -> str:
        """How messages name the node: `conv 'Conv_0' -> %12`."""
        src = f" {self.name!r}" if self.name else ""
        outs = ", ".join(f"%{v.name}" for v in self.outputs if v.name)
        return f"{self.op.name}{src}" + (f" -> {outs}" if outs else "")


@dataclass
class Graph:
    """A function of tensors: inputs, nodes in a topological order, outputs."""

    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    name: str = "main"

    # --- navigation (computed on demand; the graph is small enough) ---------------------
    def producers(self) -> dict[Value, Node]:
        return {v: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(v, []).append(n)
        return out

    def const_value(self, v: Value | None) -> np.ndarray | None:
        """The array of `v` if a `const` node produces it, else None."""
        for n in self.nodes:
            if v in n.outputs:
                return n.attrs["value"] if n.op.name == "const" else None
        return None

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def count_ops(self, include_const: bool = False) -> int:
        return sum(1 for n in self.nodes if include_const or n.op.name != "const")

    def to_nx(self) -> nx.DiGraph:
        """The node dependency graph (node index -> node index), for graph algorithms."""
        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.nodes)))
        where = {v: i for i, n in enumerate(self.nodes) for v in n.outputs}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                if v is not None and v in where:
                    g.add_edge(where[v], i)
        return g

    def toposorted(self) -> Graph:
        """The same graph with its nodes in a deterministic topological order (stable: ties
        keep the current order). Raises IRVerifyError on a cycle."""
        g = self.to_nx()
        try:
            order = list(nx.lexicographical_topological_sort(g))
        except nx.NetworkXUnfeasible:
            cyc = nx.find_cycle(g)
            names = [self.nodes[a].label() for a, _ in cyc]
            raise IRVerifyError(f"graph has a cycle through {', '.join(names)}") from None
        return Graph(list(self.inputs), [self.nodes[i] for i in order], list(self.outputs),
                     self.name)

    def dce(self) -> Graph:
        """Drop nodes none of whose outputs reach a graph output. Never touches outputs."""
        live: set[Value] = set(self.outputs)
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(v in live for v in n.outputs):
                kept.append(n)
                live.update(v for v in n.inputs if v is not None)
        kept.reverse()
        return Graph(list(self.inputs), kept, list(self.outputs), self.name)


class Builder:
    """Appends nodes to a graph, inferring output types through the op table."""

    def __init__(self, graph: Graph | None = None) -> None:
        self.graph = graph if graph is not None else Graph()

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, name)
        self.graph.inputs.append(v)
        return v

    def emit(self, op: OpDef | str, inputs: Sequence[Value | None],
             attrs: Mapping[str, Any] | None = None, name: str = "",
             out_names: Sequence[str] = ()) -> tuple[Value, ...]:
        """Append `op(inputs) {attrs}`; returns its output values (types inferred)."""
        opdef = OPS[op] if isinstance(op, str) else op
        # Canonical attribute values (tuples, floats), so printing stays canonical.
        attrs = {k: coerce_attr(opdef.attrs[k].kind, v) if k in opdef.attrs else v
                 for k, v in (attrs or {}).items()}
        full = opdef.with_defaults(attrs)
        types = opdef.infer([v.type if v is not None else None for v in inputs], full)
        names = list(out_names) + [""] * (len(types) - len(out_names))
        outs = tuple(Value(t, nm) for t, nm in zip(types, names))
        self.graph.nodes.append(Node(opdef, tuple(inputs), attrs, outs, name))
        return outs

    def op(self, op: OpDef | str, *inputs: Value | None, name: str = "",
           out_name: str = "", **attrs: Any) -> Value:
        """Single-output convenience form of `emit`."""
        outs = self.emit(op, inputs, attrs, name, (out_name,) if out_name else ())
        assert len(outs) == 1
        return outs[0]

    def const(self, array: np.ndarray | float | int, name: str = "",
              dtype: Any = None) -> Value:
        arr = np.asarray(array, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        return self.op("const", out_name=name, value=np.asarray(arr, order="C"))

    def output(self, *values: Value) -> None:
        self.graph.outputs.extend(values)


def walk_values(nodes: Iterable[Node]) -> Iterator[Value]:
    for n in nodes:
        yield from (v for v in n.inputs if v is not None)
        yield from n.outputs
