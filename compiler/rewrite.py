"""The pattern-rewrite driver every pass uses: Graph + patterns -> rewritten Graph.

A pattern is a function `(rw, node) -> replacement | None`: it reads the graph through the
Rewriter, emits new nodes with `rw.emit`/`rw.const`, and returns the value(s) that replace the
node's outputs. Patterns never mutate, delete or rewire anything; the driver owns the traversal
(program order, deterministic), the repetition to a fixpoint, rewiring and dead-code removal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ocrc.compiler.errors import PassError
from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.opdef import OPS, OpDef, attr_equal

log = logging.getLogger(__name__)

Pattern = Callable[["Rewriter", Node], Any]

MAX_SWEEPS = 64
# Per sweep, at most this many rewrites per node of the graph: a pattern pair that undoes
# each other's work must fail loudly instead of spinning.
REWRITES_PER_NODE = 16


class Rewriter:
    """A pattern's view of the current graph and its only way to create nodes."""

    def __init__(self, state: _State, root: Node) -> None:
        self._state = state
        self.root = root
        self.pending: list[Node] = []

    # --- navigation ------------------------------------------------------------------------
    def producer(self, v: Value | None) -> Node | None:
        """The node defining `v` (None for graph inputs and absent operands)."""
        return None if v is None else self._state.producer.get(v)

    def users(self, v: Value) -> list[Node]:
        """The nodes reading `v`, each once, in no particular meaning of order."""
        return list(dict.fromkeys(self._state.users.get(v, ())))

    def is_output(self, v: Value) -> bool:
        return v in self._state.output_set

    def single_use(self, v: Value) -> bool:
        """True if exactly one node reads `v` and it is not a graph output."""
        return len(self.users(v)) == 1 and not self.is_output(v)

    def const_value(self, v: Value | None) -> np.ndarray | None:
        """The array of `v` when a `const` node defines it, else None."""
        n = self.producer(v)
        return n.attrs["value"] if n is not None and n.op.name == "const" else None

    def op_of(self, v: Value | None, *names: str) -> Node | None:
        """The producer of `v` if it is one of the ops `names`, else None."""
        n = self.producer(v)
        return n if n is not None and n.op.name in names else None

    # --- emission ---------------------------------------------------------------------------
    def emit_multi(self, op: OpDef | str, inputs: Sequence[Value | None],
                   attrs: Mapping[str, Any] | None = None, name: str | None = None,
                   ) -> tuple[Value, ...]:
        """Create `op(inputs) {attrs}` (types inferred); it lands before the root node."""
        opdef = OPS[op] if isinstance(op, str) else op
        attrs = dict(attrs or {})
        types = opdef.infer([v.type if v is not None else None for v in inputs],
                            opdef.with_defaults(attrs))
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # trailing absent optionals print as nothing
            inputs.pop()
        node = Node(opdef, tuple(inputs), attrs, tuple(Value(t) for t in types),
                    self.root.name if name is None else name)
        self.pending.append(node)
        return node.outputs

    def emit(self, op: OpDef | str, inputs: Sequence[Value | None],
             attrs: Mapping[str, Any] | None = None, name: str | None = None) -> Value:
        """Single-output form of `emit_multi`."""
        outs = self.emit_multi(op, inputs, attrs, name)
        assert len(outs) == 1, f"{op} has {len(outs)} outputs"
        return outs[0]

    def const(self, array: np.ndarray | float, dtype: Any = np.float32) -> Value:
        """A new `const` (float32 unless `dtype` says otherwise)."""
        arr = np.array(array, dtype=dtype, order="C")  # ascontiguousarray would make 0-d 1-d
        return self.emit("const", (), {"value": arr}, name="")


class _State:
    """The driver's mutable working copy of a graph (patterns only see it via Rewriter)."""

    def __init__(self, g: Graph) -> None:
        self.name = g.name
        self.inputs = list(g.inputs)
        self.outputs = list(g.outputs)
        self.output_set = set(self.outputs)
        self.nodes: list[Node | None] = list(g.nodes)
        self.producer: dict[Value, Node] = {v: n for n in g.nodes for v in n.outputs}
        self.users: dict[Value, list[Node]] = {}
        for n in g.nodes:
            self._add_uses(n)

    def _add_uses(self, n: Node) -> None:
        for v in n.inputs:
            if v is not None:
                self.users.setdefault(v, []).append(n)

    def _drop_uses(self, n: Node) -> None:
        for v in n.inputs:
            if v is not None:
                lst = self.users[v]
                lst.remove(n)
                if not lst:
                    del self.users[v]

    def graph(self) -> Graph:
        return Graph(list(self.inputs), [n for n in self.nodes if n is not None],
                     list(self.outputs), self.name)

    # --- edits ------------------------------------------------------------------------------
    def insert(self, index: int, new: Sequence[Node]) -> None:
        self.nodes[index:index] = list(new)
        for n in new:
            for v in n.outputs:
                self.producer[v] = n
            self._add_uses(n)

    def replace_value(self, old: Value, new: Value) -> None:
        """Make every reader of `old` read `new` instead."""
        for u in list(dict.fromkeys(self.users.get(old, ()))):
            u2 = Node(u.op, tuple(new if v is old else v for v in u.inputs), u.attrs,
                      u.outputs, u.name)
            self.nodes[self.nodes.index(u)] = u2
            self._drop_uses(u)
            self._add_uses(u2)
            for v in u.outputs:
                self.producer[v] = u2
        if old in self.output_set:
            self.outputs = [new if v is old else v for v in self.outputs]
            self.output_set = set(self.outputs)

    def remove_if_dead(self, n: Node) -> None:
        """Remove `n` and then, transitively, producers left without readers."""
        work = [n]
        while work:
            m = work.pop()
            if not m.outputs or self.producer.get(m.outputs[0]) is not m:
                continue  # already removed, or replaced by a rewired copy
            if any(v in self.users or v in self.output_set for v in m.outputs):
                continue
            self.nodes[self.nodes.index(m)] = None
            self._drop_uses(m)
            for v in m.outputs:
                del self.producer[v]
            work.extend(p for p in (self.producer.get(v) for v in m.inputs if v is not None)
                        if p is not None)

    def clone_for_output(self, r: Value, out_name: str) -> tuple[Node, Value] | None:
        """A copy of r's producer whose copy of `r` is named `out_name`, so that a graph output
        keeps its name when a pattern replaces it by an existing value; None if impossible."""
        p = self.producer.get(r)
        if p is None or r in self.output_set:
            return None
        outs = tuple(Value(v.type, out_name if v is r else v.name) for v in p.outputs)
        return Node(p.op, p.inputs, p.attrs, outs, p.name), outs[p.outputs.index(r)]

    def apply(self, index: int, root: Node, pending: list[Node],
              repl: Sequence[Value]) -> bool:
        """Install a pattern's result; False if it cannot be installed (output naming)."""
        fresh = {v for n in pending for v in n.outputs}
        pairs = [(o, r) for o, r in zip(root.outputs, repl) if o is not r]
        for k, (o, r) in enumerate(pairs):
            if r in fresh:
                if not r.name:
                    r.name = o.name  # a fresh Value is ours to name
            elif o in self.output_set and r.name != o.name:
                cloned = self.clone_for_output(r, o.name)
                if cloned is None:
                    return False
                pending = pending + [cloned[0]]
                pairs[k] = (o, cloned[1])
                old = self.producer[r]
                pairs.extend((a, b) for a, b in zip(old.outputs, cloned[0].outputs)
                             if a is not r)
        self.insert(index, pending)
        for o, r in pairs:
            self.replace_value(o, r)
        for o, _ in pairs:
            p = self.producer.get(o)
            if p is not None:
                self.remove_if_dead(p)
        return True

    def compact(self) -> None:
        self.nodes = [n for n in self.nodes if n is not None]
        seen = set(self.inputs)
        for n in self.nodes:
            if any(v is not None and v not in seen for v in n.inputs):
                log.debug("rewrite left nodes out of order; re-sorting")
                g = self.graph().toposorted()
                self.nodes = list(g.nodes)
                return
            seen.update(n.outputs)


def _normalize(root: Node, result: Any) -> tuple[Value, ...]:
    repl = (result,) if isinstance(result, Value) else tuple(result)
    if len(repl) != len(root.outputs):
        raise AssertionError(f"pattern replaced {root.label()} ({len(root.outputs)} outputs) "
                             f"by {len(repl)} values")
    for o, r in zip(root.outputs, repl):
        if o.type != r.type:
            raise AssertionError(f"pattern replaced {root.label()}: {o.type} by {r.type}")
    return repl


def _sweep(st: _State, patterns: Sequence[Pattern], budget: int) -> int:
    """One program-order walk; returns the number of rewrites made."""
    done = 0
    i = 0
    while i < len(st.nodes):
        n = st.nodes[i]
        if n is None:
            i += 1
            continue
        for p in patterns:
            rw = Rewriter(st, n)
            result = p(rw, n)
            if result is None:
                continue
            repl = _normalize(n, result)
            if repl == n.outputs:
                continue
            if not st.apply(i, n, rw.pending, repl):
                continue
            done += 1
            if done > budget:
                raise PassError(f"rewrite did not converge: pattern {p.__name__} keeps firing "
                                f"(last at {n.label()})")
            break
        else:
            i += 1  # no pattern fired: move on; after a rewrite, revisit the new nodes at i
    st.compact()
    return done


def apply_patterns(g: Graph, patterns: Sequence[Pattern], max_sweeps: int = MAX_SWEEPS) -> Graph:
    """Rewrite `g` with `patterns` until none fires, then drop dead nodes.

    Nodes are visited in program order; at each node the patterns are tried in the order given
    and the first that returns a replacement wins. Deterministic for deterministic patterns."""
    st = _State(g)
    budget = REWRITES_PER_NODE * (len(g.nodes) + 16)
    for _ in range(max_sweeps):
        if not _sweep(st, patterns, budget):
            return st.graph().dce()
    names = ", ".join(p.__name__ for p in patterns)
    raise PassError(f"rewrite did not reach a fixpoint in {max_sweeps} sweeps ({names})")


# --- generic patterns and graph-level clean-ups -------------------------------------------------
FOLD_LIMIT = 1 << 22  # elements; folding must not materialise huge tensors (Expand, Tile)


def fold_constants(rw: Rewriter, node: Node, limit: int = FOLD_LIMIT) -> Any:
    """Evaluate a node whose operands are all constants with the op table's `ref`."""
    if node.op.name == "const" or not any(v is not None for v in node.inputs):
        return None
    args = [None if v is None else rw.const_value(v) for v in node.inputs]
    if any(a is None and v is not None for a, v in zip(args, node.inputs)):
        return None
    if sum(v.type.size for v in node.outputs) > limit:
        return None
    outs = node.op.ref(args, node.all_attrs)
    return tuple(rw.const(np.asarray(a), dtype=v.type.dtype.np)
                 for a, v in zip(outs, node.outputs))


def _attr_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, _fingerprint(value))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return value


def _fingerprint(a: np.ndarray) -> str:
    """A cheap digest of at most 4096 evenly spaced elements: arrays with different
    fingerprints differ; equal fingerprints are confirmed with array_equal (hashing every
    byte of a 400 MB classifier weight on every CSE round is what this avoids)."""
    flat = a.reshape(-1)
    sample = flat[:: max(1, flat.size // 4096)]
    return hashlib.sha1(np.asarray(sample, order="C").tobytes()).hexdigest()


def node_key(n: Node, inputs: Iterable[Value | None]) -> tuple[Any, ...]:
    """Structural identity of a node: op, operand identities and all attributes (arrays by a
    sampled fingerprint; confirm with `same_attrs`)."""
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in n.all_attrs.items()))
    return (n.op.name, tuple(id(v) if v is not None else None for v in inputs), attrs,
            len(n.outputs))


def same_attrs(a: Node, b: Node) -> bool:
    """Exact attribute equality (arrays compared element by element)."""
    aa, ba = a.all_attrs, b.all_attrs
    return aa.keys() == ba.keys() and all(
        attr_equal(aa[k], ba[k]) if isinstance(aa[k], np.ndarray) else aa[k] == ba[k]
        for k in aa)


def eliminate_common_subexpressions(g: Graph) -> Graph:
    """Merge nodes with the same op, operands and attributes (constants by content).

    A node defining a graph output is never merged away, so output names stay stable."""
    subst: dict[Value, Value] = {}
    seen: dict[tuple[Any, ...], Node] = {}
    out_set = set(g.outputs)
    nodes: list[Node] = []
    for n in g.nodes:
        inputs = tuple(subst.get(v, v) if v is not None else None for v in n.inputs)
        key = node_key(n, inputs)
        prev = seen.get(key)
        if (prev is not None and not any(v in out_set for v in n.outputs)
                and same_attrs(prev, n)):
            subst.update(zip(n.outputs, prev.outputs))
            continue
        if inputs != n.inputs:
            n = Node(n.op, inputs, n.attrs, n.outputs, n.name)
        seen.setdefault(key, n)
        nodes.append(n)
    return Graph(list(g.inputs), nodes, [subst.get(v, v) for v in g.outputs], g.name)


# --- matching helpers shared by the patterns ------------------------------------------------------
def scalar_of(rw: Rewriter, v: Value | None) -> float | None:
    """The value of a one-element float constant, else None."""
    c = rw.const_value(v)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    return float(c.reshape(-1)[0])


def is_exactly(rw: Rewriter, v: Value | None, value: float) -> bool:
    """True if `v` is a one-element constant equal to `value` in its own dtype (exact)."""
    c = rw.const_value(v)
    return (c is not None and c.size == 1 and c.dtype.kind == "f"
            and c.reshape(-1)[0] == np.asarray(value, dtype=c.dtype))


def axis_vector(c: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """If constant `c` broadcast against `out_shape` varies at most along `axis` and leaves the
    shape unchanged, the vector of its values along that axis (length out_shape[axis])."""
    axis %= len(out_shape)
    if c.ndim > len(out_shape):
        return None
    try:
        if np.broadcast_shapes(c.shape, out_shape) != tuple(out_shape):
            return None
    except ValueError:
        return None
    full = (1,) * (len(out_shape) - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != axis):
        return None
    return np.broadcast_to(c.reshape(-1), (out_shape[axis],)).astype(c.dtype)


def other_operand(node: Node, v: Value) -> Value | None:
    """The operand of binary `node` that is not `v` (the first if both are `v`)."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a is v else a


def with_operands(node: Node, **new: Value | None) -> list[Value | None]:
    """`node`'s operand list with the named operands replaced (absent ones padded as None)."""
    names = [i.rstrip("?*") for i in node.op.inputs]
    ins = list(node.inputs) + [None] * (len(names) - len(node.inputs))
    for key, v in new.items():
        ins[names.index(key)] = v
    return ins
