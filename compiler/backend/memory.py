"""Memory planning: which activations live in SRAM between kernels and where, and the DRAM
layout of the others.

The lowered graph becomes a list of kernels (an npu op plus the elementwise ops fused into its
tile loop). Views (reshape, transpose) share their operand's storage. Every storage has a live
range [first, last] of kernel indices; storages whose ranges overlap interfere (a networkx
graph) and get disjoint addresses by greedy-by-size first fit, the interval colouring of TFLite's
arena planner. Resident storages are packed downwards from the top of SRAM; each kernel's
workspace (tiles, weights, double buffers) is the rest, [0, budget). Storages are demoted to DRAM
(largest first) until every kernel gets the workspace its tiling wants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
from ocrc.compiler.backend import layout as L
from ocrc.compiler.backend.lower import infer_layouts
from ocrc.compiler.backend.schedule import BLOCK
from ocrc.compiler.ir.graph import Graph, Node, Value

VIEW_OPS = ("reshape", "transpose")
SKIP_OPS = ("const", "quantize", "dequantize") + VIEW_OPS


def align(n: int, a: int = BLOCK) -> int:
    return -(-n // a) * a


@dataclass(eq=False)
class Storage:
    """Bytes shared by a value and its views. kind: input | output | temp; home: sram | dram."""

    name: str
    nbytes: int
    kind: str
    first: int = -1
    last: int = -1
    home: str = "sram"
    addr: int = -1


@dataclass(eq=False)
class Kernel:
    """One tile loop: the anchor npu op and the elementwise ops fused into it, in order."""

    index: int
    nodes: list[Node]
    inputs: list[Value]  # activation operands read from storage (not the chain's own values)

    @property
    def anchor(self) -> Node:
        return self.nodes[0]

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self.nodes[-1].outputs

    @property
    def name(self) -> str:
        return self.anchor.name or self.anchor.op.name


@dataclass
class MemoryPlan:
    kernels: list[Kernel]
    storages: list[Storage]
    of: dict[Value, Storage]
    layout: dict[Value, L.Layout]
    budget: list[int] = field(default_factory=list)  # SRAM workspace bytes per kernel
    inputs: list[tuple[Value, Node]] = field(default_factory=list)  # (int8 value, quantize)
    outputs: list[tuple[Value, Node]] = field(default_factory=list)  # (int8 value, dequantize)


def build_kernels(g: Graph) -> MemoryPlan:
    """Kernels, storages (with live ranges) and layouts of a lowered graph."""
    plan = MemoryPlan([], [], {}, infer_layouts(g))
    kernels, of = plan.kernels, plan.of
    kernel_of: dict[Value, Kernel] = {}  # every value computed inside a kernel's tile loop
    for n in g.nodes:
        if "npu" not in n.op.traits:
            continue
        if n.attr("fused"):
            k = kernel_of[n.inputs[0]]  # type: ignore[index]
            k.nodes.append(n)
        else:
            k = Kernel(len(kernels), [n], [])
            kernels.append(k)
        for v in n.outputs:
            kernel_of[v] = k

    def storage(v: Value, kind: str = "temp") -> Storage:
        if v not in of:
            first = kernel_of[v].index if v in kernel_of else -1
            s = Storage(v.name or f"t{len(plan.storages)}",
                        align(v.type.size * v.type.dtype.np.itemsize), kind, first, first)
            plan.storages.append(s)
            of[v] = s
        return of[v]

    for n in g.nodes:
        name = n.op.name
        if name == "quantize":
            storage(n.output, "input")
            plan.inputs.append((n.output, n))
        elif name in VIEW_OPS:
            x = n.inputs[0]
            assert x is not None
            of[n.output] = storage(x)
        elif name == "dequantize":
            x = n.inputs[0]
            assert x is not None
            s = storage(x)
            s.kind = "output" if s.kind == "temp" else s.kind
            s.last = len(kernels)
            plan.outputs.append((x, n))
        elif "npu" in n.op.traits:
            k = kernel_of[n.outputs[0]]
            chain = {v for m in k.nodes for v in m.outputs}
            for v in n.inputs:
                if v is None or (v not in of and v not in kernel_of) or v in chain:
                    continue
                s = storage(v)
                s.last = max(s.last, k.index)
                if v not in k.inputs:
                    k.inputs.append(v)
    return plan


def assign_offsets(items: list[tuple[Storage, int, int, int]]) -> dict[Storage, int]:
    """Greedy-by-size first fit of (storage, size, first, last) intervals: storages whose live
    ranges overlap (an edge of the interference graph) get disjoint [offset, offset + size)."""
    ig = nx.Graph()
    ig.add_nodes_from(range(len(items)))
    order = sorted(range(len(items)), key=lambda i: (items[i][2], items[i][3]))
    for a_pos, i in enumerate(order):  # sweep by start: i overlaps later j with start <= last_i
        for j in order[a_pos + 1:]:
            if items[j][2] > items[i][3]:
                break
            ig.add_edge(i, j)
    placed: dict[int, int] = {}
    for i in sorted(range(len(items)), key=lambda i: (-items[i][1], items[i][2], i)):
        spans = sorted((placed[j], placed[j] + items[j][1]) for j in ig.neighbors(i)
                       if j in placed)
        off = 0
        for lo, hi in spans:
            if off + items[i][1] <= lo:
                break
            off = max(off, hi)
        placed[i] = off
    return {items[i][0]: placed[i] for i in placed}


WantFn = Callable[[Kernel, dict[Storage, str]], tuple[int, int]]


def plan_homes(plan: MemoryPlan, sram_bytes: int, want: WantFn) -> None:
    """Decide SRAM residency and SRAM addresses; want(kernel, homes) -> (min, desired)
    workspace bytes of a kernel under the given homes. Sets plan.budget."""
    temps = [s for s in plan.storages if s.kind == "temp"]
    for s in plan.storages:
        s.home = "sram" if s.kind == "temp" else "dram"
    n = len(plan.kernels)
    while True:
        res = [s for s in temps if s.home == "sram"]
        offs = assign_offsets([(s, s.nbytes, s.first, s.last) for s in res])
        peak = [0] * n
        for s in res:
            s.addr = sram_bytes - offs[s] - s.nbytes
            for k in range(max(s.first, 0), min(s.last, n - 1) + 1):
                peak[k] = max(peak[k], offs[s] + s.nbytes)
        homes = {s: s.home for s in plan.storages}
        budget = [sram_bytes - p for p in peak]
        victim = None
        for k in plan.kernels:
            lo, desired = want(k, homes)
            need = max(lo, min(desired, sram_bytes // 2))
            if budget[k.index] < need:
                live = [s for s in res if s.first <= k.index <= s.last]
                if not live:
                    break
                victim = max(live, key=lambda s: (s.nbytes, -temps.index(s)))
                break
        if victim is None:
            plan.budget = budget
            return
        victim.home = "dram"


def plan_dram(plan: MemoryPlan) -> int:
    """DRAM offsets (relative to the scratch region) of the temps homed in DRAM; returns the
    scratch size."""
    dram = [s for s in plan.storages if s.kind == "temp" and s.home == "dram"]
    offs = assign_offsets([(s, s.nbytes, s.first, s.last) for s in dram])
    for s in dram:
        s.addr = offs[s]
    return max((offs[s] + s.nbytes for s in dram), default=0)
