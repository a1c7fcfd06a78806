"""A longer fuzz run of the VM's safety boundary (time-bounded, seeded): random byte strings,
single-byte mutations of the code of small valid programs (re-hashed, so the verifier rather
than the checksum sees them) and random values of single instruction fields must each be
rejected by the loader or the verifier with an OcrcError, or run without any out-of-bounds
access. The cases run in worker subprocesses, one per batch, so that a crash is caught and
reported, never taking the runner down; a crashed batch is re-run case by case to name the
culprit. By default the workers compile the VM with NUMBA_BOUNDSCHECK=1 (in a private numba
cache), turning every out-of-bounds index into an IndexError that is counted; --no-boundscheck
fuzzes the production build, where only a crash would show.

    python -m benchmarks.fuzz_vm [--seconds 120] [--seed 0] [--batch 300] [--no-write]

Writes the `## VM fuzz` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from ocrc.runtime import isa
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.errors import OcrcError
from ocrc.runtime.isa import DType, Opcode, PoolMode
from ocrc.runtime.program import Program, program_from_bytes
from ocrc.runtime.target import load_target

from benchmarks.ocr.report import markdown_table, write_section

IMAGE = 8192
KINDS = ("random bytes", "header + random bytes", "code byte mutation", "field value")


def _single(opcode: Opcode, image: np.ndarray, **fields: int) -> Program:
    """LOAD an SRAM image, one instruction, STORE the image back (as tests/runtime/rtutil)."""
    b = ProgramBuilder(load_target("npu"))
    src = b.const("image", image)
    out = b.output("sram", (IMAGE,), dtype="int8")
    b.emit(Opcode.LOAD, dram=src, sram=0, n0=IMAGE, n1=1, n2=1, push_next=1)
    b.emit(opcode, pop_prev=1, push_next=1, **fields)
    b.emit(Opcode.STORE, dram=out.addr, sram=0, n0=IMAGE, n1=1, n2=1, pop_prev=1)
    return b.build()


def base_programs() -> list[bytes]:
    """Small valid programs covering every unit (conv on both MAC paths and the depthwise
    kernel, matmul, the vector ops, a bitmask weight stream)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, IMAGE).astype(np.uint8)
    img[4096:4096 + 12 * 64].view(np.int32)[:] = 0  # qp blocks: bias 0,
    img[4096 + 4 * 64:4096 + 8 * 64].view(np.int32)[:] = 1 << 30  # mult,
    img[4096 + 8 * 64:4096 + 12 * 64].view(np.int32)[:] = 20  # shift
    conv = {"src": 0, "wgt": 2048, "qp": 4096, "h": 5, "w": 6, "cin": 3, "cout": 4, "kh": 3,
            "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "pt": 1, "pb": 1, "pl": 1, "pr": 1,
            "groups": 1, "zx": 2, "lo": -128, "hi": 127}
    progs = [
        _single(Opcode.CONV, img, dst=6144, **conv),
        _single(Opcode.CONV, img, dst=6144, **{**conv, "h": 8, "w": 8, "cout": 16}),  # sgemm
        _single(Opcode.CONV, img, dst=6144, **{**conv, "cin": 8, "cout": 8, "groups": 8}),  # dw
        _single(Opcode.MATMUL, img, a=0, b=1024, qp=4096, dst=6144, m=32, n=8, k=48, a_rs=48,
                d_rs=32, out=DType.I32, zx=-3),
        _single(Opcode.ADD, img, a=0, b=512, dst=6144, count=300, b_period=30, ma=1 << 30,
                sa=22, mb=1 << 29, sb=21, lo=-128, hi=127),
        _single(Opcode.LUT, img, src=0, dst=6144, count=500, table=1024, out_dt=DType.I16),
        _single(Opcode.POOL, img, src=0, dst=6144, qp=4096, h=6, w=6, c=8, kh=3, kw=3, sh=2,
                sw=2, pt=1, pb=1, pl=1, pr=1, lo=-128, hi=127, mode=PoolMode.AVG),
        _single(Opcode.COPY, img, src=0, dst=6144, n0=8, n1=4, n2=2, ss0=2, ss1=20, ss2=100,
                ds0=1, ds1=8, ds2=32, esize=DType.I8),
        _single(Opcode.REQUANT, img, src=0, dst=6144, count=200, chan=16, qp=4096,
                out_dt=DType.I8, lo=-128, hi=127),
        _single(Opcode.IMUL, img, a=0, b=512, dst=6144, count=100, b_period=100,
                a_dt=DType.I16, b_dt=DType.I8, out_dt=DType.I16, mult=1 << 30, shift=20,
                lo=-32768, hi=32767),
    ]
    b = ProgramBuilder(load_target("npu"))  # a bitmask weight stream
    mask = rng.integers(0, 256, 16).astype(np.uint8)
    vals = rng.integers(-128, 128, int(np.unpackbits(mask).sum())).astype(np.int8)
    stream = b.const("w", np.concatenate([mask, vals.view(np.uint8)]))
    out = b.output("w", (128,), dtype="int8")
    b.emit(Opcode.LOADW, dram=stream, clen=16 + vals.size, sram=0, count=128, fmt=1,
           push_next=1)
    b.emit(Opcode.NOP, queue=1, pop_prev=1, push_next=1)
    b.emit(Opcode.STORE, dram=out.addr, sram=0, n0=128, n1=1, n2=1, pop_prev=1)
    progs.append(b.build())
    return [p.to_bytes() for p in progs]


def _rehash(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def make_case(rng: np.random.Generator, bases: list[bytes], progs: list[Program]
              ) -> tuple[str, bytes]:
    """One fuzz case: (kind, program file bytes)."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    i = int(rng.integers(len(bases)))
    if kind == "random bytes":
        return kind, rng.integers(0, 256, int(rng.integers(0, 600))).astype(np.uint8).tobytes()
    if kind == "header + random bytes":
        tail = rng.integers(0, 256, int(rng.integers(0, 600))).astype(np.uint8).tobytes()
        return kind, bases[i][:64] + tail
    if kind == "code byte mutation":
        body = bytearray(bases[i][:-32])
        code = progs[i].code.tobytes()
        start = bytes(body).find(code)
        pos = start + int(rng.integers(len(code))) if rng.random() < 0.8 else \
            int(rng.integers(len(body)))
        body[pos] ^= int(rng.integers(1, 256))
        return kind, _rehash(bytes(body))
    prog = progs[i]  # a random value of one field of one instruction, re-encoded
    fields = isa.decode_program(prog.code)
    pc = int(rng.integers(prog.n_insns))
    op = isa.Opcode(int(fields[pc, isa.C_OPCODE]))
    names = [f for f, _ in isa.LAYOUTS[op]]
    fld = names[int(rng.integers(len(names)))]
    lo, hi = fld.range()
    pick = rng.random()
    val = lo if pick < 0.15 else hi if pick < 0.3 else int(rng.integers(lo, hi + 1))
    vals = {f.name: int(fields[pc, isa.COL[f.name]]) for f in names}
    vals[fld.name] = val
    words = [isa.from_words(prog.code[j]) for j in range(prog.n_insns)]
    words[pc] = isa.encode(op, **vals)
    mutated = Program(**{**prog.__dict__, "code": isa.encode_program(words)})
    return kind, mutated.to_bytes()


def run_case(data: bytes) -> tuple[str, str]:
    """(outcome, detail) of one case, in the worker."""
    from ocrc.runtime.verify import verify
    from ocrc.runtime.vm import VM

    try:
        prog = program_from_bytes(data)
    except OcrcError:
        return "rejected by the loader", ""
    try:
        vp = verify(prog)
    except OcrcError:
        return "rejected by the verifier", ""
    try:
        VM(vp).run_raw({d.name: np.zeros(d.shape, np.int64) for d in prog.inputs})
    except OcrcError:
        return "stopped by the VM (VMError)", ""
    except IndexError as e:
        return "OUT OF BOUNDS", str(e)[:200]
    except Exception as e:  # noqa: BLE001 - any other exception is a finding, reported
        return "OTHER EXCEPTION", f"{type(e).__name__}: {str(e)[:200]}"
    return "ran", ""


def worker(path: str) -> int:
    cases = pickle.loads(Path(path).read_bytes())
    res = [run_case(data) for _, data in cases]
    Path(path + ".out").write_text(json.dumps(res))
    return 0


def run_batch(cases: list[tuple[str, bytes]], env: dict[str, str], tmp: str
              ) -> tuple[list[tuple[str, str]] | None, str]:
    """Outcomes of a batch in a fresh subprocess, or (None, why) if the process died."""
    path = os.path.join(tmp, "batch.pkl")
    Path(path).write_bytes(pickle.dumps(cases))
    Path(path + ".out").unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-m", "benchmarks.fuzz_vm", "--worker", path], env=env,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0 or not Path(path + ".out").exists():
        return None, f"exit status {r.returncode}: {r.stderr.strip()[-300:]}"
    return [tuple(x) for x in json.loads(Path(path + ".out").read_text())], ""  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=300)
    ap.add_argument("--no-boundscheck", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    rng = np.random.default_rng(a.seed)
    bases = base_programs()
    progs = [program_from_bytes(b) for b in bases]
    counts: Counter[tuple[str, str]] = Counter()
    findings: list[str] = []
    crashes = n = batches = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not a.no_boundscheck:  # checked code never mixes with the production cache
            env.update(NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
        while time.perf_counter() - t0 < a.seconds:
            cases = [make_case(rng, bases, progs) for _ in range(a.batch)]
            res, why = run_batch(cases, env, tmp)
            batches += 1
            if res is None:  # the worker died: find the case(s), one process each
                crashes += 1
                print(f"worker died ({why}); re-running its cases one by one", flush=True)
                res = []
                for kind, data in cases:
                    one, why = run_batch([(kind, data)], env, tmp)
                    if one is None:  # twice, to tell a case that kills from a passing death
                        one, why = run_batch([(kind, data)], env, tmp)
                    if one is None:
                        keep = Path(tempfile.gettempdir()) / f"ocrc-fuzz-crash-{n}.npu"
                        keep.write_bytes(data)
                        one = [("CRASH", f"{why} (case saved to {keep})")]
                    res.append(one[0])
            for (kind, _), (outcome, detail) in zip(cases, res, strict=True):
                counts[kind, outcome] += 1
                if detail:
                    findings.append(f"{kind}: {outcome}: {detail}")
            n += len(cases)
    secs = time.perf_counter() - t0
    outcomes = sorted({o for _, o in counts})
    rows = [[k] + [counts[k, o] for o in outcomes] + [sum(counts[k, o] for o in outcomes)]
            for k in KINDS]
    bad = sum(v for (_, o), v in counts.items() if o in ("OUT OF BOUNDS", "OTHER EXCEPTION",
                                                          "CRASH"))
    body = (f"Command: `python -m benchmarks.fuzz_vm --seconds {a.seconds:g} --seed {a.seed}"
            f"{' --no-boundscheck' if a.no_boundscheck else ''}`: {n:,} cases in {batches} "
            f"worker processes ({secs:.0f} s), {len(bases)} small valid base programs "
            f"(every unit), VM built with NUMBA_BOUNDSCHECK="
            f"{'0' if a.no_boundscheck else '1'}. Worker crashes: {crashes}. Findings "
            f"(out of bounds, other exceptions, crashes): {bad}.\n\n"
            + markdown_table(["case kind", *outcomes, "total"], rows))
    if findings:
        body += "\nFindings:\n\n" + "\n".join(f"- `{f}`" for f in findings[:20]) + "\n"
    print(body)
    if not a.no_write:
        write_section("VM fuzz", body)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
