"""Queue timing (tokens, overlap), Stats, reports, Chrome trace, and the runtime's layering."""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path

import numpy as np
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.cycles import dma_cycles, gemm_cycles
from ocrc.runtime.isa import DType, Opcode
from ocrc.runtime.stats import chrome_trace, report_csv, report_json, report_text, write_trace
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM

NPU = load_target("npu")
ROOT = Path(__file__).resolve().parents[2]


def double_buffered(n_tiles: int = 4):  # type: ignore[no-untyped-def]
    """Per tile: LOADW weights into buffer t % 2, MATMUL; load t waits for compute t - 2."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder(NPU)
    b.emit(Opcode.FILL, dst=0, count=64, value=1, dt=DType.I8)
    for t in range(n_tiles):
        b.layer(f"tile{t}")
        w = b.const(f"w{t}", rng.integers(-5, 5, 64 * 256, dtype=np.int8))
        buf = 4096 + (t % 2) * 65536
        b.emit(Opcode.LOADW, dram=w, clen=64 * 256, count=64 * 256, sram=buf,
               pop_next=int(t >= 2), push_next=1)
        b.emit(Opcode.MATMUL, a=0, b=buf, qp=200000, dst=300000 + 1024 * t, m=1, n=256, k=64,
               a_rs=64, d_rs=1024, out=DType.I32, pop_prev=1, push_prev=int(t < n_tiles - 2))
    return b.build()


def test_queues_overlap_and_wait_on_tokens() -> None:
    prog = double_buffered()
    _, s = VM(prog).run_raw({})
    load = dma_cycles(64 * 256, NPU.dram_bw, NPU.dram_latency)
    mm = gemm_cycles(1, 256, 64, 32, 32, 0, 0)
    # tile t's LOADW starts when load t-1 is done and (t >= 2) compute t-2 freed its buffer
    lw = [pc for pc in range(prog.n_insns) if s.opcodes[pc] == Opcode.LOADW]
    mms = [pc for pc in range(prog.n_insns) if s.opcodes[pc] == Opcode.MATMUL]
    assert s.starts[lw[1]] == s.ends[lw[0]] == load
    assert all(s.starts[m] >= s.ends[w] for m, w in zip(mms, lw, strict=True))
    assert s.starts[lw[2]] == max(s.ends[lw[1]], s.ends[mms[0]])
    assert s.busy["load"] == 4 * load and s.unit_busy["mac"] == 4 * mm
    assert s.total_cycles < s.busy["load"] + s.busy["compute"]  # overlap shows
    assert s.total_cycles == max(s.ends)
    assert [x.name for x in s.layers] == ["<none>", "tile0", "tile1", "tile2", "tile3"]
    assert s.layers[1].bound == "memory" and s.layers[1].macs == 64 * 256
    assert s.dram_read == 4 * 64 * 256 and s.macs == 4 * 64 * 256


def test_reports_and_trace(tmp_path: Path) -> None:
    _, s = VM(double_buffered(3)).run_raw({})
    text = report_text(s)
    assert "tile2" in text and "cycles" in s.summary()
    d = json.loads(report_json(s))
    assert d["total_cycles"] == s.total_cycles and len(d["layers"]) == 4
    rows = list(csv.DictReader(io.StringIO(report_csv(s))))
    assert rows[1]["name"] == "tile0" and int(rows[1]["macs"]) == 64 * 256
    tr = chrome_trace(s)
    xs = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    assert {e["tid"] for e in xs} == {0, 1} and {e["name"] for e in xs} >= {"LOADW", "MATMUL"}
    write_trace(s, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_runtime_imports_nothing_from_compiler_or_frontend() -> None:
    for f in sorted((ROOT / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not n.startswith(("ocrc.compiler", "ocrc.frontend")), f"{f.name}: {n}"
