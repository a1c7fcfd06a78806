"""The reference interpreter: runs any IR graph with the op table's numpy semantics.

It is the oracle for every pass, for the quantiser (the golden int8 model) and for the VM.
A hook sees every node's outputs (calibration and per-layer error reports use it); values are
freed after their last use unless the hook keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.runtime.errors import OcrcError

Hook = Callable[[Node, Sequence[np.ndarray]], None]


def check_inputs(g: Graph, inputs: Mapping[str, np.ndarray]) -> dict[Value, np.ndarray]:
    """Match named arrays to the graph inputs; OcrcError on a missing, extra or ill-typed one."""
    by_name = {v.name: v for v in g.inputs}
    missing = [n for n in by_name if n not in inputs]
    extra = [n for n in inputs if n not in by_name]
    if missing or extra:
        raise OcrcError(f"inputs: missing {missing}, unexpected {extra}; the graph takes "
                        + ", ".join(f"{v.name}: {v.type}" for v in g.inputs))
    env: dict[Value, np.ndarray] = {}
    for name, v in by_name.items():
        arr = np.asarray(inputs[name])
        if arr.shape != v.type.shape or arr.dtype != v.type.dtype.np:
            raise OcrcError(f"input '{name}': got {arr.dtype}{list(arr.shape)}, expected "
                            f"{v.type.dtype.np}{list(v.type.shape)} ({v.type})")
        env[v] = arr
    return env


def run(g: Graph, inputs: Mapping[str, np.ndarray], hook: Hook | None = None) -> dict[str, np.ndarray]:
    """Execute `g` on named inputs; returns the outputs by value name."""
    env = check_inputs(g, inputs)
    last_use: dict[Value, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v is not None:
                last_use[v] = i
    keep = set(g.outputs)
    for i, n in enumerate(g.nodes):
        args = [env[v] if v is not None else None for v in n.inputs]
        outs = n.op.ref(args, n.all_attrs)
        if len(outs) != len(n.outputs):
            raise AssertionError(f"{n.label()}: ref returned {len(outs)} values")
        for v, arr in zip(n.outputs, outs):
            arr = np.asarray(arr)
            if arr.shape != v.type.shape or arr.dtype != v.type.dtype.np:
                raise AssertionError(f"{n.label()}: ref gave {arr.dtype}{list(arr.shape)} for "
                                     f"{v.type}")
            env[v] = arr
        if hook is not None:
            hook(n, [env[v] for v in n.outputs])
        for v in n.inputs:
            if v is not None and last_use.get(v) == i and v not in keep:
                env.pop(v, None)
    return {v.name: env[v] for v in g.outputs}
