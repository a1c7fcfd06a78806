"""Mixed precision: which activations keep int16 (docs/quantization.md §8).

`select_int16` turns `quantize{int16=...}` into the set of float values the quantiser keeps in
int16: `none`, `all` (every value that can be int16), `auto` (the layers whose single-mode SQNR
in an all-int8 trial is below a threshold, cheapest first, within an optional MAC-cost budget),
`front` (the layers in graph order, each taken if the MAC cost stays within the budget:
for a backbone that amplifies every error, the early layers' errors are the ones that grow
most) or explicit layer/value names joined by '+'. Promoting a layer keeps its activation inputs and
its results in int16; the cost is the MAC work that then runs in the target's int16 mode at
`int16_rate` MACs per cycle relative to int8.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.ir.ops.counts import node_macs
from ocrc.compiler.quant.calibrate import CalibTable
from ocrc.compiler.quant.qparams import QuantizeError
from ocrc.compiler.quant.quantizer import PASS_THROUGH, QuantResult, quantize_graph
from ocrc.compiler.quant.report import quant_report

log = logging.getLogger(__name__)
# Quantised ops whose results get their own int16 parameters when their layer is promoted.
PROMOTABLE = ("qconv", "qdense", "lut", "qadd", "qmul", "qconcat", "qavg_pool", "rescale",
              "quantize")
INHERIT = PASS_THROUGH + ("qmax_pool",)  # results share their input's parameters
DEFAULT_THRESHOLD = 30.0  # dB, single mode
DEFAULT_RATE = 0.25  # int16 MACs per cycle relative to int8 (the presets' mac.int16_rate)


@dataclass
class Int16Plan:
    """The values kept in int16, the layers that asked for them, and the MAC cost."""

    values: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    macs_total: int = 0
    macs_int16: int = 0
    rate: float = DEFAULT_RATE
    sqnr: dict[str, float] = field(default_factory=dict)  # single-mode SQNR of the trial

    @property
    def cost(self) -> float:
        """MAC cycles relative to the all-int8 model (1.0: no int16 MAC work)."""
        if self.macs_total == 0:
            return 1.0
        return (self.macs_total - self.macs_int16 + self.macs_int16 / self.rate) / \
            self.macs_total

    def summary(self) -> str:
        return (f"{len(self.layers)} layer(s) promoted to int16 activations ({len(self.values)} "
                f"values); int16 MACs {self.macs_int16:,} of {self.macs_total:,}, MAC cycles "
                f"x{self.cost:.3f} at int16_rate {self.rate:g}")


class _Graphs:
    """The float graph and its all-int8 quantisation: value roots, layers and MACs."""

    def __init__(self, g: Graph, res8: QuantResult) -> None:
        self.g, self.res8 = g, res8
        qg = res8.graph
        self.float_of = {id(qv): name for name, qv in res8.qvalue.items()}
        self.qnode = {n.name: n for n in qg.nodes if n.op.name != "const" and n.name}
        producer = {v: n for n in qg.nodes for v in n.outputs}
        self.root: dict[str, str] = {}
        self.fixed: set[str] = set()  # values that cannot be int16 (LSTM results)
        for n in qg.nodes:
            for v in n.outputs:
                name = self.float_of.get(id(v))
                if name is None:
                    continue
                src = n.inputs[0] if n.op.name in INHERIT else None
                if src is not None and id(src) in self.float_of:
                    self.root[name] = self.root.get(self.float_of[id(src)],
                                                    self.float_of[id(src)])
                else:
                    self.root[name] = name
                if n.op.name not in PROMOTABLE and n.op.name not in INHERIT:
                    self.fixed.add(self.root[name])
        self.producer = producer
        self.value_layer = {v: layer for v, layer in res8.layers}
        consts = {n.outputs[0] for n in g.nodes if n.op.name == "const"}
        # Float MAC nodes (the LSTM reads int8 only: never int16 MAC work) and their inputs.
        self.macs = [(node_macs(n), n.inputs[0].name) for n in g.nodes
                     if node_macs(n) and n.op.name != "lstm" and n.inputs[0] is not None
                     and n.inputs[0] not in consts]

    def node(self, name: str) -> Node | None:
        """The quantised node of a layer name, or of a value name (unnamed layers)."""
        if name in self.qnode:
            return self.qnode[name]
        qv = self.res8.qvalue.get(name)
        return self.producer.get(qv) if qv is not None else None

    def layer_values(self, layer: str) -> set[str]:
        """The roots of a promoted layer's activation inputs and results that may be int16."""
        n = self.node(layer)
        if n is None or n.op.name not in PROMOTABLE:
            return set()
        names = [self.float_of.get(id(v)) for v in list(n.inputs) + list(n.outputs)
                 if v is not None]
        return {self.root[x] for x in names if x is not None and x in self.root} - self.fixed

    def all_values(self) -> set[str]:
        return set(self.root.values()) - self.fixed

    def int16_macs(self, values: set[str]) -> int:
        return sum(m for m, x in self.macs if self.root.get(x, x) in values)

    def total_macs(self) -> int:
        return sum(node_macs(n) for n in self.g.nodes)


def parse_int16(spec: str) -> tuple[str, list[str]]:
    """'none' | 'all' | 'auto' | 'front' | 'NAME+NAME...' -> (mode, names)."""
    spec = spec.strip()
    if spec in ("", "none", "all", "auto", "front"):
        return spec or "none", []
    names = [s for s in spec.split("+") if s]
    if not names:
        raise QuantizeError(f"int16={spec!r}: expected none, all, auto, front or "
                            "LAYER+LAYER...")
    return "names", names


def select_int16(g: Graph, table: CalibTable, spec: str,
                 samples: Iterable[Mapping[str, np.ndarray]] | None = None,
                 method: str = "minmax", percentile: float = 99.99,
                 threshold: float = DEFAULT_THRESHOLD, budget: float = math.inf,
                 rate: float = DEFAULT_RATE,
                 layer_methods: Mapping[str, str] | None = None) -> Int16Plan:
    """The int16 plan of `spec` for the prepared, calibrated graph g (see module docstring).
    `auto` needs samples (single-mode SQNR of an all-int8 trial); `budget` caps the MAC-cycle
    increase (0.5: at most 1.5x the all-int8 MAC cycles); `front` needs a finite budget.
    `layer_methods` as quantize_graph's (the all-int8 trial uses the same ranges)."""
    mode, names = parse_int16(spec)
    plan = Int16Plan(rate=rate)
    if mode == "none":
        return plan
    gs = _Graphs(g, quantize_graph(g, table, method, percentile,
                                   layer_methods=layer_methods))
    plan.macs_total = gs.total_macs()
    chosen: set[str] = set()
    if mode == "all":
        chosen = gs.all_values()
        plan.layers = sorted({gs.value_layer.get(v) or v for v in chosen})
    elif mode == "names":
        for name in names:
            vals = gs.layer_values(name)
            if not vals:
                valid = sorted(k for k in gs.qnode if gs.layer_values(k))
                raise QuantizeError(
                    f"int16: '{name}' is not a layer or value that can keep int16 activations "
                    f"(e.g. {', '.join(valid[:8])}{', ...' if len(valid) > 8 else ''})")
            chosen |= vals
            plan.layers.append(name)
    elif mode == "front":
        if not math.isfinite(budget):
            raise QuantizeError("int16=front needs a MAC-cost budget (int16_budget)")
        order = dict.fromkeys(layer or v for v, layer in gs.res8.layers)  # graph order
        for layer in order:  # a layer's name, or its value's when it has none
            trial = chosen | gs.layer_values(layer)
            if trial == chosen:
                continue
            plan.macs_int16 = gs.int16_macs(trial)
            if plan.cost <= 1.0 + budget:  # a layer that does not fit is passed over
                chosen = trial
                plan.layers.append(layer)
    else:
        if samples is None:
            raise QuantizeError("int16=auto needs calibration samples (not a ready table)")
        rep = quant_report(g, gs.res8, samples)
        failing = []
        for r in rep.rows:
            plan.sqnr[r.value] = r.sqnr_single
            vals = gs.layer_values(r.layer)
            if r.sqnr_single < threshold and vals and r.layer not in failing:
                failing.append(r.layer)
        while failing:  # cheapest first: the least extra int16 MAC work given what is chosen
            base = gs.int16_macs(chosen)
            extra = {layer: gs.int16_macs(chosen | gs.layer_values(layer)) - base
                     for layer in failing}
            layer = min(failing, key=lambda k: (extra[k], k))
            trial = chosen | gs.layer_values(layer)
            plan.macs_int16 = gs.int16_macs(trial)
            if plan.cost > 1.0 + budget:
                plan.macs_int16 = base
                log.info("int16=auto: budget %.3g reached before %s", budget, layer)
                break
            chosen = trial
            plan.layers.append(layer)
            failing.remove(layer)
    plan.values = sorted(chosen)
    plan.macs_int16 = gs.int16_macs(chosen)
    log.info("int16=%s: %s", spec, plan.summary())
    return plan


def quantize_mixed(g: Graph, table: CalibTable, spec: str,
                   samples: Iterable[Mapping[str, np.ndarray]] | None = None,
                   method: str = "minmax", percentile: float = 99.99,
                   threshold: float = DEFAULT_THRESHOLD, budget: float = math.inf,
                   rate: float = DEFAULT_RATE, layer_methods: Mapping[str, str] | None = None
                   ) -> tuple[QuantResult, Int16Plan]:
    """select_int16, then the quantised graph with those values in int16."""
    plan = select_int16(g, table, spec, samples, method, percentile, threshold, budget, rate,
                        layer_methods)
    return quantize_graph(g, table, method, percentile, plan.values, layer_methods), plan
