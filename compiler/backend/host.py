"""The host fallback: float ops after the output dequantise (softmax, log_softmax, cast) do not
run on the NPU. The compiler keeps them as IR text in the program's meta ("host_tail", counted in
"host_ops"); `run_program` runs the VM (float in/out through the I/O descriptors) and then the
tail on the reference interpreter, so callers get the model's own outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.parser import parse_graph
from ocrc.compiler.ir.printer import print_graph
from ocrc.runtime.program import Program
from ocrc.runtime.stats import Stats
from ocrc.runtime.vm import VM

HOST_OPS = ("softmax", "log_softmax", "cast")


def name_boundary(g: Graph) -> None:
    """Give every value crossing the program/host boundary a non-empty name (I/O descriptors
    and the host tail refer to them by name)."""
    taken = {v.name for v in g.values() if v.name}
    k = 0
    for n in g.nodes:
        if n.op.name == "dequantize" and not n.output.name:
            while f"out{k}" in taken:
                k += 1
            n.output.name = f"out{k}"
            taken.add(n.output.name)
    for i, v in enumerate(g.outputs):
        if not v.name:
            v.name = f"output{i}"


def host_tail(g: Graph) -> tuple[Graph | None, int]:
    """The float ops after the output dequantise as a graph of their own (None if none) and
    their count."""
    tail = [n for n in g.nodes if n.op.name in HOST_OPS]
    if not tail:
        return None, 0
    used = {v for n in tail for v in n.inputs if v is not None}
    consts = [n for n in g.nodes if n.op.name == "const" and n.output in used]
    deq = [n.output for n in g.nodes if n.op.name == "dequantize"]
    sub = Graph([v for v in deq if v in used or v in g.outputs], consts + tail,
                list(g.outputs), "host_tail")
    return sub, len(tail)


def tail_text(g: Graph) -> str:
    text, blobs = print_graph(g)
    if blobs:  # large constants in a softmax tail do not occur; refuse rather than drop them
        raise ValueError("host tail with large constants")
    return text


def host_graph(prog: Program) -> Graph | None:
    text = prog.meta.get("host_tail")
    return parse_graph(text) if isinstance(text, str) else None


def run_program(prog: Program, inputs: Mapping[str, np.ndarray],
                vm: VM | None = None) -> tuple[dict[str, np.ndarray], Stats]:
    """Float inputs -> the model's float outputs (VM, then the host tail) and the VM's Stats."""
    vm = vm or VM(prog)
    outs, stats = vm.run(dict(inputs))
    tail = host_graph(prog)
    if tail is None:
        return outs, stats
    res = run(tail, {v.name: outs[v.name] for v in tail.inputs})
    return {**{k: v for k, v in outs.items() if k not in {t.name for t in tail.inputs}},
            **res}, stats
