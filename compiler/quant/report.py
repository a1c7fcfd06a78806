"""Per-layer quantisation error: SQNR and cosine similarity of every int8 value against the
float model, in two modes (docs/quantization.md §7).

"entire": both models run from the same float input, so errors accumulate through the network;
"single": each quantised node is fed the float model's inputs (quantised with their own
parameters), so only its own error shows. Rows are sorted worst first (by entire SQNR).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ocrc.compiler.ir.graph import Graph, Node, Value
from ocrc.compiler.ir.interp import run
from ocrc.compiler.quant.quantizer import QuantResult
from ocrc.runtime.fileio import atomic_write_text


@dataclass
class _Acc:
    """Running sums for SQNR and cosine: sum f^2, sum (f - q)^2, sum f q, sum q^2."""

    ff: float = 0.0
    ee: float = 0.0
    fq: float = 0.0
    qq: float = 0.0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = np.asarray(f, np.float64).reshape(-1)
        q = np.asarray(q, np.float64).reshape(-1)
        self.ff += float(f @ f)
        self.ee += float((f - q) @ (f - q))
        self.fq += float(f @ q)
        self.qq += float(q @ q)

    def sqnr(self) -> float:
        if self.ee == 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.ff, 1e-30) / self.ee)

    def cosine(self) -> float:
        den = math.sqrt(self.ff * self.qq)
        return self.fq / den if den > 0 else (1.0 if self.ee == 0.0 else 0.0)


@dataclass
class LayerRow:
    value: str
    layer: str
    op: str
    sqnr_entire: float
    cos_entire: float
    sqnr_single: float
    cos_single: float


@dataclass
class QuantReport:
    rows: list[LayerRow] = field(default_factory=list)
    samples: int = 0

    def to_json(self) -> str:
        def clean(x: object) -> object:
            return None if isinstance(x, float) and not math.isfinite(x) else x
        rows = [{k: clean(v) for k, v in asdict(r).items()} for r in self.rows]
        return json.dumps({"samples": self.samples, "modes": ["entire", "single"],
                           "sort": "sqnr_entire ascending (worst first)", "layers": rows},
                          indent=1) + "\n"

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())

    def table(self, limit: int | None = None) -> str:
        lines = [f"{'value':<22} {'layer':<22} {'op':<9} {'SQNR entire':>11} {'cos entire':>10} "
                 f"{'SQNR single':>11} {'cos single':>10}"]
        for r in self.rows[:limit]:
            lines.append(f"{r.value[:22]:<22} {r.layer[:22]:<22} {r.op:<9} {r.sqnr_entire:11.2f} "
                         f"{r.cos_entire:10.5f} {r.sqnr_single:11.2f} {r.cos_single:10.5f}")
        return "\n".join(lines) + "\n"


def _collect(g: Graph, inputs: Mapping[str, np.ndarray], names: set[str]) -> dict[str, np.ndarray]:
    got: dict[str, np.ndarray] = {k: v for k, v in inputs.items() if k in names}

    def hook(n: Node, outs: Sequence[np.ndarray]) -> None:
        for v, a in zip(n.outputs, outs):
            if v.name in names:
                got[v.name] = a
    run(g, inputs, hook)
    return got


def quant_report(float_graph: Graph, qres: QuantResult,
                 data: Iterable[Mapping[str, np.ndarray]]) -> QuantReport:
    """Compare every int8 value of `qres` with its float value over `data` (float inputs)."""
    qg = qres.graph
    producer = {v: n for n in qg.nodes for v in n.outputs}
    consts = {n.outputs[0]: n.attrs["value"] for n in qg.nodes if n.op.name == "const"}
    float_of = {id(qv): name for name, qv in qres.qvalue.items()}
    layer_of = dict(qres.layers)
    names = {k for k in qres.qvalue if k}  # unnamed values (an LSTM's unused Y_h) all share ""
    entire = {k: _Acc() for k in names}
    single = {k: _Acc() for k in names}
    qnames = {k: qres.qvalue[k] for k in names}
    n_samples = 0

    def ref(name: str, f: np.ndarray) -> np.ndarray:
        """The float reference; a table input is compared within its (flat-clipped) range."""
        if name not in qres.table_inputs:
            return f
        qp = qres.qparams[name]
        return np.clip(f, *qp.real_range())

    for sample in data:
        n_samples += 1
        fvals = _collect(float_graph, sample, names)
        qvals_by_value: dict[Value, np.ndarray] = {}

        def hook(n: Node, outs: Sequence[np.ndarray]) -> None:
            for v, a in zip(n.outputs, outs):
                if id(v) in float_of:
                    qvals_by_value[v] = a
        run(qg, sample, hook)
        for k in names:
            qv = qnames[k]
            if qv in qvals_by_value and k in fvals:
                entire[k].add(ref(k, fvals[k]), qres.qparams[k].dequantize(qvals_by_value[qv]))
        done: set[int] = set()
        for k in names:
            node = producer.get(qnames[k])
            if node is None or id(node) in done or node.op.name == "quantize":
                continue
            done.add(id(node))
            args = []
            for v in node.inputs:
                if v is None:
                    args.append(None)
                elif v in consts:
                    args.append(consts[v])
                elif id(v) in float_of and float_of[id(v)] in fvals:
                    fn = float_of[id(v)]
                    args.append(qres.qparams[fn].quantize(fvals[fn]))
                elif v.name.removesuffix(".i8") in qres.narrowed:  # int16 narrowed to int8
                    fn = v.name.removesuffix(".i8")
                    args.append(qres.narrowed[fn].quantize(fvals[fn]))
                else:
                    args.append(qvals_by_value.get(v))
            outs = node.op.ref(args, node.all_attrs)
            for v, a in zip(node.outputs, outs):
                fn = float_of.get(id(v))
                if fn is not None and fn in fvals:
                    single[fn].add(ref(fn, fvals[fn]), qres.qparams[fn].dequantize(a))
    rows = []
    for k in names:
        node = producer.get(qnames[k])
        if node is None or node.op.name == "quantize" or entire[k].ff == 0.0 and \
                entire[k].ee == 0.0:
            continue
        rows.append(LayerRow(k, layer_of.get(k, "") or k, node.op.name, entire[k].sqnr(),
                             entire[k].cosine(), single[k].sqnr(), single[k].cosine()))
    rows.sort(key=lambda r: (r.sqnr_entire, r.value))
    return QuantReport(rows, n_samples)
