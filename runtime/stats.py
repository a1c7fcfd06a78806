"""Statistics of one VM run and the reports built from them: totals (cycles, latency at the
target clock, MAC utilisation, DRAM traffic, SRAM peak, busy cycles per queue and unit), a
per-layer breakdown (cycles, MACs, utilisation, bytes, bounding unit), the text/JSON/CSV reports
the CLI prints, and a Chrome trace (Perfetto) of the three queues.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ocrc.runtime import isa
from ocrc.runtime.fileio import atomic_write_text
from ocrc.runtime.isa import FORMATS, Opcode, Queue, Unit
from ocrc.runtime.target import Target

if TYPE_CHECKING:
    from ocrc.runtime.verify import VerifiedProgram

BOUND_OF_UNIT = {Unit.MAC: "compute", Unit.DMA: "memory", Unit.VECTOR: "vector"}
_UNIT_OF_OPCODE = np.array([int(FORMATS[op].unit) if op in FORMATS else -1
                            for op in range(max(Opcode) + 1)], np.int64)  # by opcode int


@dataclass
class LayerStats:
    name: str
    cycles: int  # busy cycles of the layer's busiest unit
    macs: int
    utilisation: float  # macs / (cycles * rows * cols)
    dram_read: int
    dram_written: int
    mac_cycles: int
    dma_cycles: int
    vector_cycles: int
    bound: str  # "compute" | "memory" | "vector" | "-"
    n_insns: int


@dataclass
class Stats:
    target: str
    clock_hz: int
    total_cycles: int
    latency_s: float
    macs: int
    mac_utilisation: float
    dram_read: int
    dram_written: int
    sram_peak: int
    busy: dict[str, int]  # per queue: load, compute, store
    unit_busy: dict[str, int]  # per unit: dma, mac, vector
    layers: list[LayerStats]
    n_insns: int
    wall_s: float  # the VM's own wall time for this run
    starts: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    ends: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    queues: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    opcodes: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    layer_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    layer_names: list[str] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        """One paragraph for `ocrc run`."""
        return (f"{self.target}: {self.total_cycles:,} cycles = {self.latency_s * 1e3:.3f} ms "
                f"at {self.clock_hz / 1e6:.0f} MHz; {self.macs / 1e6:.1f} MMAC, MAC utilisation "
                f"{self.mac_utilisation:.1%}; DRAM read {self.dram_read / 1024:.1f} KiB, "
                f"written {self.dram_written / 1024:.1f} KiB; SRAM peak "
                f"{self.sram_peak / 1024:.1f} KiB; busy load/compute/store "
                f"{self.busy['load']:,}/{self.busy['compute']:,}/{self.busy['store']:,} cycles; "
                f"{self.n_insns} instructions, VM wall {self.wall_s * 1e3:.1f} ms.")

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, np.ndarray)}
        d.pop("layer_names", None)
        return d


def collect_stats(vp: VerifiedProgram, target: Target, starts: np.ndarray, ends: np.ndarray,
                  wall_s: float) -> Stats:
    """Aggregate per-instruction timing and the verifier's static facts."""
    prog = vp.program
    ops = vp.fields[:, isa.C_OPCODE]
    dur = ends - starts
    unit = _UNIT_OF_OPCODE[ops]
    total = int(ends.max()) if ends.size else 0
    arr = target.rows * target.cols
    macs = int(vp.macs.sum())
    busy = {q.name.lower(): int(dur[vp.queues == int(q)].sum()) for q in Queue}
    unit_busy = {u.name.lower(): int(dur[unit == int(u)].sum()) for u in
                 (Unit.DMA, Unit.MAC, Unit.VECTOR)}
    layers = []
    lid = prog.layer_ids.astype(np.int64)
    for i, name in enumerate(prog.layers):
        sel = lid == i
        if not sel.any():
            continue
        per = {u: int(dur[sel & (unit == int(u))].sum()) for u in (Unit.DMA, Unit.MAC,
                                                                      Unit.VECTOR)}
        top = max(per, key=lambda u: per[u])
        cyc = per[top]
        lm = int(vp.macs[sel].sum())
        layers.append(LayerStats(
            name, cyc, lm, lm / (cyc * arr) if cyc else 0.0, int(vp.dram_read[sel].sum()),
            int(vp.dram_written[sel].sum()), per[Unit.MAC], per[Unit.DMA], per[Unit.VECTOR],
            BOUND_OF_UNIT[top] if cyc else "-", int(sel.sum())))
    return Stats(
        target=target.name, clock_hz=target.clock_hz, total_cycles=total,
        latency_s=target.seconds(total), macs=macs,
        mac_utilisation=macs / (total * arr) if total else 0.0,
        dram_read=int(vp.dram_read.sum()), dram_written=int(vp.dram_written.sum()),
        sram_peak=vp.sram_peak, busy=busy, unit_busy=unit_busy, layers=layers,
        n_insns=prog.n_insns, wall_s=wall_s, starts=starts, ends=ends, queues=vp.queues,
        opcodes=ops.copy(), layer_ids=lid, layer_names=list(prog.layers))


_COLS = ("name", "cycles", "macs", "utilisation", "dram_read", "dram_written", "mac_cycles",
         "dma_cycles", "vector_cycles", "bound", "n_insns")


def report_text(stats: Stats) -> str:
    """The per-layer table and the totals (`ocrc bench`)."""
    lines = [(f"{'layer':<28}{'cycles':>12}{'MACs':>14}{'util':>7}{'DRAM rd':>11}"
              f"{'DRAM wr':>10}{'bound':>9}")]
    for s in stats.layers:
        lines.append(f"{s.name[:27]:<28}{s.cycles:>12,}{s.macs:>14,}{s.utilisation:>7.1%}"
                     f"{s.dram_read:>11,}{s.dram_written:>10,}{s.bound:>9}")
    lines.append("")
    lines.append(stats.summary())
    return "\n".join(lines)


def report_json(stats: Stats) -> str:
    return json.dumps(stats.to_json(), indent=2, sort_keys=True)


def report_csv(stats: Stats) -> str:
    """Per-layer CSV (columns: see _COLS)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_COLS)
    for s in stats.layers:
        d = asdict(s)
        w.writerow([f"{d[c]:.6f}" if c == "utilisation" else d[c] for c in _COLS])
    return buf.getvalue()


def chrome_trace(stats: Stats) -> dict[str, Any]:
    """Per-instruction timeline of the three queues, Chrome trace format (µs at the clock)."""
    us = 1e6 / stats.clock_hz
    events: list[dict[str, Any]] = [
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": int(q),
         "args": {"name": f"{q.name.lower()} queue"}} for q in Queue]
    for pc in range(len(stats.starts)):
        dur = int(stats.ends[pc] - stats.starts[pc])
        if dur == 0:
            continue
        layer = stats.layer_names[int(stats.layer_ids[pc])] if stats.layer_names else ""
        events.append({"name": Opcode(int(stats.opcodes[pc])).name, "cat": layer, "ph": "X",
                       "pid": 0, "tid": int(stats.queues[pc]), "ts": stats.starts[pc] * us,
                       "dur": dur * us, "args": {"pc": pc, "layer": layer, "cycles": dur}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_trace(stats: Stats, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(chrome_trace(stats)))
