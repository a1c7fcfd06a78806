"""Evaluate variants of a graph cheaply: values a variant shares with the reference graph (the
same node objects all the way up) are taken from a cache of the reference run, so a variant
that only changes the LSTM or the head reruns only the tail. Results equal a full `interp.run`
(the same reference semantics, node by node).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ocrc.compiler.ir import interp
from ocrc.compiler.ir.graph import Graph, Node, Value

Sample = Mapping[str, np.ndarray]


def shared_values(ref: Graph, g: Graph) -> set[Value]:
    """Values of g computed exactly as in ref: same producer node object, same inputs."""
    ref_nodes = set(ref.nodes)
    same: set[Value] = set(g.inputs) & set(ref.inputs)
    for n in g.nodes:
        if n in ref_nodes and all(v is None or v in same for v in n.inputs):
            same.update(n.outputs)
    return same


def frontier(ref: Graph, g: Graph) -> set[Value]:
    """The shared values g's recomputed nodes (or its outputs) read: what to cache."""
    same = shared_values(ref, g)
    out = {v for n in g.nodes if not set(n.outputs) <= same
           for v in n.inputs if v is not None and v in same}
    out.update(v for v in g.outputs if v in same)
    return {v for v in out if v not in set(g.inputs)}


def run_seeded(g: Graph, sample: Sample, seed: Mapping[Value, np.ndarray]) -> list[np.ndarray]:
    """g's outputs, taking the values in `seed` as given and computing only what is needed."""
    env: dict[Value, np.ndarray] = {v: np.asarray(sample[v.name]) for v in g.inputs}
    env.update(seed)
    needed: set[Value] = set(g.outputs) - set(env)
    todo: list[Node] = []
    for n in reversed(g.nodes):
        if any(v in needed for v in n.outputs):
            todo.append(n)
            needed.update(v for v in n.inputs if v is not None and v not in env)
    for n in reversed(todo):
        args = [env[v] if v is not None else None for v in n.inputs]
        for v, a in zip(n.outputs, n.op.ref(args, n.all_attrs)):
            env[v] = np.asarray(a)
    return [env[v] for v in g.outputs]


class Evaluator:
    """The reference graph, its samples, and a cache of the reference values variants need.

    `prepare(variants)` runs the reference once per sample and keeps the union of the
    variants' frontiers; `outputs(variant)` then reruns only each variant's own nodes."""

    def __init__(self, ref: Graph, samples: Sequence[Sample]) -> None:
        self.ref = ref
        self.samples = list(samples)
        self.cache: list[dict[Value, np.ndarray]] = [{} for _ in self.samples]
        self.reference: list[list[np.ndarray]] = []

    def prepare(self, variants: Iterable[Graph]) -> None:
        keep: set[Value] = set()
        for g in variants:
            keep |= frontier(self.ref, g)
        self.reference = []
        for i, s in enumerate(self.samples):
            store = self.cache[i]

            def hook(n: Node, outs: list[np.ndarray], store: dict = store) -> None:
                for v, a in zip(n.outputs, outs):
                    if v in keep:
                        store[v] = a

            res = interp.run(self.ref, s, hook)
            self.reference.append([res[v.name] for v in self.ref.outputs])

    def outputs(self, g: Graph) -> list[list[np.ndarray]]:
        seeds = shared_values(self.ref, g)
        out = []
        for s, cache in zip(self.samples, self.cache):
            seed = {v: a for v, a in cache.items() if v in seeds}
            out.append(run_seeded(g, s, seed))
        return out
