"""Sensitivity analysis and greedy per-layer budgets.

`sweep` applies one setting to one layer at a time (pruning sparsity, N:M, low-rank energy,
int8 vs int16 weights), measures a metric of the outputs against the uncompressed model on
calibration samples, and records the weight bytes each setting would take. `choose` then picks
per layer the settings that compress most for the least measured loss (a Lagrangian greedy:
one trade-off price for all layers, raised by bisection) while the joint loss, measured with
all choices applied together, stays within the budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ocrc.compiler.compress import svd
from ocrc.compiler.compress.evaluate import Evaluator
from ocrc.compiler.compress.metrics import Metric
from ocrc.compiler.compress.sites import Site, const_arrays, group_of, to_rows, weight_sites
from ocrc.compiler.ir.graph import Graph, Node
from ocrc.compiler.passes.base import PassContext, run_passes
from ocrc.compiler.passes.lowrank import LowRank
from ocrc.compiler.passes.prune import Prune
from tqdm import tqdm

log = logging.getLogger(__name__)

SPARSITIES = (0.5, 0.7, 0.8, 0.9)
ENERGIES = (0.95, 0.9, 0.8)
NM = ("2:4",)
ERROR_WEIGHT = 0.01  # loss points per percent of relative output error (a tie-breaker)


@dataclass(frozen=True)
class Setting:
    """One compression choice for one layer; `pipeline` applies it."""

    layer: str
    kind: str  # none (float weights, loss 0) | prune | nm | lowrank | int8 | int16
    value: str
    nbytes: int  # weight bytes after int8 (or int16) storage, estimated

    def passes(self) -> list:
        if self.kind == "prune":
            return [Prune(layers=f"{self.layer}:{self.value}")]
        if self.kind == "nm":
            return [Prune(nm=self.value, layers=f"{self.layer}:0")]
        if self.kind == "lowrank":
            return [LowRank(layers=f"{self.layer}:{self.value}", multiple=1)]
        return []


@dataclass
class Result:
    setting: Setting
    score: float
    loss: float  # metric of the reference minus metric of this setting (>= 0 is worse)
    error: float = 0.0  # relative L2 error of the first output, percent (continuous)


@dataclass
class Sweep:
    """Everything `ocrc analyze` reports, and the input of `choose`."""

    metric: str
    reference: float
    results: list[Result] = field(default_factory=list)

    def by_layer(self) -> dict[str, list[Result]]:
        out: dict[str, list[Result]] = {}
        for r in self.results:
            out.setdefault(r.setting.layer, []).append(r)
        return out

    def as_json(self) -> dict:
        return {"metric": self.metric, "reference": self.reference,
                "results": [{"layer": r.setting.layer, "kind": r.setting.kind,
                             "value": r.setting.value, "bytes": r.setting.nbytes,
                             "score": _finite(r.score), "loss": _finite(r.loss),
                             "error": _finite(r.error)}
                            for r in self.results]}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def sparse_bytes(n: int, density: float) -> int:
    """Stored int8 bytes of n weights at `density`: the smaller of dense, bitmask + nonzeros
    and csr (1.5 bytes per nonzero, fillers ignored); see runtime/weightcodec.py."""
    nz = round(density * n)
    return int(min(n, math.ceil(n / 8) + nz, 4 + math.ceil(1.5 * nz)))


def candidates(g: Graph, sites: Sequence[Site], sparsities: Sequence[float] = SPARSITIES,
               energies: Sequence[float] = ENERGIES, nm: Sequence[str] = NM,
               int16: bool = False, multiple: int = 1) -> list[Setting]:
    """The settings to sweep for each site (lowrank, with ranks rounded up to `multiple`, for
    those it can split and where the split saves MACs)."""
    consts = const_arrays(g)
    out = []
    for s in sites:
        w = consts[s.value]
        out.append(Setting(s.layer, "none", "", w.size))
        out += [Setting(s.layer, "prune", f"{sp:g}", sparse_bytes(w.size, 1 - sp))
                for sp in sparsities]
        kin = w.shape[1] if s.kind == "conv" else w.shape[-1] if s.kind != "matmul" else \
            w.shape[0]
        for spec in nm:
            n_, m_ = (int(t) for t in spec.split(":"))
            if kin % m_ == 0:
                out.append(Setting(s.layer, "nm", spec, sparse_bytes(w.size, n_ / m_)))
        if int16:
            out.append(Setting(s.layer, "int8", "", w.size))
            out.append(Setting(s.layer, "int16", "", 2 * w.size))
        if s.kind == "matmul" or group_of(s) != 1 or (
                s.kind == "lstm.r" and len(s.node.inputs) > 7 and s.node.inputs[7] is not None):
            continue
        mats = to_rows(w, s.kind, 1)
        _, m, n = mats.shape
        spectra = [svd.decompose(mm).s for mm in mats]
        d = len(mats)
        ranks = {svd.round_rank(max(svd.energy_rank(sp, e) for sp in spectra), multiple,
                                min(m, n)) for e in energies}
        for r in sorted(ranks, reverse=True):
            # the LSTM's W becomes [D, 4H, D*r] (block-structured) after a shared projection;
            # its R becomes U [D, 4H, r] and V [D, r, H] (one r for both directions)
            nbytes = d * r * (n + d * m) if s.kind == "lstm.w" else d * r * (m + n)
            if r < svd.break_even(m, n) and nbytes < d * m * n:
                out.append(Setting(s.layer, "lowrank", str(r), nbytes))
    return out


def apply(g: Graph, settings: Sequence[Setting]) -> Graph:
    """g with the settings applied (one pass per setting, in order)."""
    passes = [p for s in settings for p in s.passes()]
    return run_passes(g, passes, PassContext(verify_each=False)) if passes else g


def _fake_quant(g: Graph, layer: str, bits: int) -> Graph:
    """g with one layer's weights fake-quantised per output channel to `bits`."""
    for s in weight_sites(g):
        if s.layer == layer:
            w = g.const_value(s.value)
            rows = w.reshape(w.shape[0], -1) if s.kind != "lstm.w" and s.kind != "lstm.r" else \
                w.reshape(-1, w.shape[-1])
            q = (1 << (bits - 1)) - 1
            scale = np.maximum(np.abs(rows).max(1, keepdims=True), 1e-12) / q
            fq = (np.clip(np.rint(rows / scale), -q, q) * scale).astype(w.dtype).reshape(w.shape)
            nodes = [Node(n.op, n.inputs, {"value": fq}, n.outputs, n.name)
                     if n.op.name == "const" and n.outputs[0] is s.value else n for n in g.nodes]
            return Graph(g.inputs, nodes, g.outputs, g.name)
    return g


Workload = Sequence[tuple[Graph, Sequence[Mapping[str, np.ndarray]]]]


def _variant(g: Graph, st: Setting) -> Graph:
    if st.kind in ("int8", "int16"):
        return _fake_quant(g, st.layer, 8 if st.kind == "int8" else 16)
    return apply(g, [st])


def sweep(work: Workload, settings: Sequence[Setting], metric: Metric,
          progress: bool = False) -> Sweep:
    """Measure every setting alone (the rest of the model uncompressed and float)."""
    evals = []
    for g, samples in work:
        ev = Evaluator(g, samples)
        variants = {st: _variant(g, st) for st in settings if st.kind != "none"}
        ev.prepare(variants.values())
        evals.append((ev, variants))
    ref_outs = [o for ev, _ in evals for o in ev.reference]
    result = Sweep(metric.name, metric.score(ref_outs, ref_outs))
    for st in tqdm(settings, desc="sensitivity", unit="setting", disable=not progress,
                   leave=False):
        if st.kind == "none":
            result.results.append(Result(st, result.reference, 0.0))
            continue
        outs = [o for ev, var in evals for o in ev.outputs(var[st])]
        score = metric.score(ref_outs, outs)
        result.results.append(Result(st, score, metric.loss(result.reference, score),
                                     relative_error(ref_outs, outs)))
    return result


def joint_loss(work: Workload, settings: Sequence[Setting], metric: Metric,
               evaluators: list[Evaluator] | None = None) -> float:
    refs, outs = [], []
    for k, (g, samples) in enumerate(work):
        ev = evaluators[k] if evaluators else Evaluator(g, samples)
        if not ev.reference:
            ev.prepare([])
        refs += ev.reference
        outs += ev.outputs(apply(g, settings))
    return metric.loss(metric.score(refs, refs), metric.score(refs, outs))


def relative_error(ref: Sequence[Sequence[np.ndarray]],
                   outs: Sequence[Sequence[np.ndarray]]) -> float:
    """100 * ||out - ref|| / ||ref|| over the first output of all samples."""
    num = sum(float(np.sum((o[0].astype(np.float64) - r[0]) ** 2)) for r, o in zip(ref, outs))
    den = sum(float(np.sum(r[0].astype(np.float64) ** 2)) for r in ref)
    return 100.0 * math.sqrt(num / max(den, 1e-300))


def _pick(sw: Sweep, price: float, total: int) -> list[Setting]:
    """Per layer, the setting minimising cost + price * bytes / total (ties: fewer bytes).
    The cost is the setting's metric loss plus ERROR_WEIGHT times its continuous output error:
    a discrete metric (agreement) alone cannot rank the many settings that change no decoded
    string, yet the loss stays the primary criterion."""
    chosen = []
    for rs in sw.by_layer().values():
        rs = [r for r in rs if r.setting.kind not in ("int8", "int16") and math.isfinite(r.loss)]
        best = min(rs, key=lambda r: (max(r.loss, 0.0) + ERROR_WEIGHT * r.error
                                      + price * r.setting.nbytes / total, r.setting.nbytes))
        if best.setting.kind != "none":
            chosen.append(best.setting)
    return chosen


def choose(work: Workload, sw: Sweep, metric: Metric, budget: float,
           steps: int = 12, progress: bool = False) -> tuple[list[Setting], float]:
    """The most compressive per-layer settings whose joint loss is within `budget`: bisection
    (in log space) on the price of a byte; each step measures the loss of all choices
    together. Returns the choices and their joint loss."""
    evaluators = [Evaluator(g, s) for g, s in work]
    total = max(sum(r.setting.nbytes for r in sw.results if r.setting.kind == "none"), 1)
    lo, hi = math.log(1e-3), math.log(1e4)
    best: tuple[list[Setting], float] = ([], 0.0)
    seen: dict[tuple[Setting, ...], float] = {}
    for _ in tqdm(range(steps), desc="budget search", disable=not progress, leave=False):
        mid = (lo + hi) / 2
        pick = tuple(_pick(sw, math.exp(mid), total))
        if pick not in seen:
            seen[pick] = joint_loss(work, pick, metric, evaluators)
        loss = seen[pick]
        log.info("budget search: price %.3g -> %d settings, loss %.3f", math.exp(mid),
                 len(pick), loss)
        if loss <= budget:
            lo = mid
            if not best[0] or _bytes(sw, pick) < _bytes(sw, best[0]):
                best = (list(pick), loss)
        else:
            hi = mid
    return best


def _bytes(sw: Sweep, pick: Sequence[Setting]) -> int:
    chosen = {s.layer: s.nbytes for s in pick}
    return sum(chosen.get(r.setting.layer, r.setting.nbytes) for r in sw.results
               if r.setting.kind == "none")


def settings_pipeline(pick: Sequence[Setting]) -> str:
    """The pipeline text that applies chosen settings (what `--prune auto` expands to)."""
    prune = ";".join(f"{s.layer}:{s.value}" for s in pick if s.kind == "prune")
    parts = [f"prune{{layers={prune}}}"] if prune else []
    for spec in sorted({s.value for s in pick if s.kind == "nm"}):
        names = ";".join(f"{s.layer}:0" for s in pick if s.kind == "nm" and s.value == spec)
        parts.append(f"prune{{nm={spec},layers={names}}}")
    ranks = ";".join(f"{s.layer}:{s.value}" for s in pick if s.kind == "lowrank")
    if ranks:
        parts.append(f"lowrank{{layers={ranks},multiple=1}}")
    return ",".join(parts)
