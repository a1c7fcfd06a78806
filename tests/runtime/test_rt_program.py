"""The .npu file and the verifier: round trip, corrupt/truncated/foreign files, verification
errors naming instruction and field, and a fuzz: random bytes and single-byte mutations are
rejected or run without out-of-bounds access."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.errors import OcrcError, ProgramError
from ocrc.runtime.isa import DType, Opcode
from ocrc.runtime.program import load_program, program_from_bytes
from ocrc.runtime.target import load_target
from ocrc.runtime.verify import verify
from ocrc.runtime.vm import VM, run_program
from tests.runtime.rtutil import single

NPU = load_target("npu")


def small_program():  # type: ignore[no-untyped-def]
    """x (float, int8 NCHW 1x2x3x4) -> strided LOAD to HWC -> LUT (negate) -> STORE -> y."""
    b = ProgramBuilder(NPU)
    x = b.input("x", (1, 2, 3, 4), scale=0.5, zero_point=1)
    y = b.output("y", (1, 2, 3, 4), scale=0.5, zero_point=1, strides=(24, 1, 8, 2))
    table = b.const("neg", (-(np.arange(256) - 128)).clip(-128, 127).astype(np.int8))
    b.layer("load")
    # NCHW -> HWC: plane c of 12 bytes goes to sram[c::2]; one byte per row
    for c in range(2):
        b.emit(Opcode.LOAD, dram=x.addr + 12 * c, sram=c, n0=1, n1=12, n2=1, ds1=1, ss1=2)
    b.emit(Opcode.LOAD, dram=table, sram=256, n0=256, n1=1, n2=1, push_next=1)
    b.layer("neg")
    b.emit(Opcode.LUT, src=0, dst=64, count=24, table=256, pop_prev=1, push_next=1)
    b.layer("store")
    b.emit(Opcode.STORE, dram=y.addr, sram=64, n0=24, n1=1, n2=1, pop_prev=1)
    return b.build()


def test_run_float_in_float_out_and_round_trip(tmp_path: Path) -> None:
    prog = small_program()
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) / 4 - 2
    outs, stats = run_program(prog, {"x": x})
    q = np.clip(np.rint(x / 0.5) + 1, -128, 127)
    want = ((-q) - 1) * 0.5  # the table negates the int8 value; zero point 1
    assert np.array_equal(outs["y"], want.astype(np.float32))
    assert stats.total_cycles > 0 and [s.name for s in stats.layers] == ["load", "neg", "store"]
    path = tmp_path / "p.npu"
    prog.save(path)
    again = load_program(path)
    assert again.to_bytes() == prog.to_bytes() == path.read_bytes()
    assert np.array_equal(run_program(again, {"x": x})[0]["y"], outs["y"])


def test_loader_rejects_corrupt_truncated_foreign(tmp_path: Path) -> None:
    data = small_program().to_bytes()
    with pytest.raises(ProgramError, match="not an ocrc NPU program"):
        program_from_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(ProgramError, match="checksum mismatch"):
        program_from_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(ProgramError, match="checksum mismatch|truncated"):
        program_from_bytes(data[:-7])
    with pytest.raises(ProgramError, match="truncated"):
        program_from_bytes(data[:20])
    with pytest.raises(ProgramError, match="format version 9"):
        program_from_bytes(_rehash(data[:8] + (9).to_bytes(4, "little") + data[12:-32]))
    with pytest.raises(ProgramError, match="cannot read"):
        load_program(tmp_path / "missing.npu")


def _rehash(body: bytes) -> bytes:
    import hashlib

    return body + hashlib.sha256(body).digest()


def _with_meta(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """Re-serialise a program image after editing its META JSON."""
    prog = program_from_bytes(data)
    raw = prog.to_bytes()
    meta_off = int.from_bytes(raw[16 + 4:16 + 12], "little")
    meta_len = int.from_bytes(raw[16 + 12:16 + 20], "little")
    meta = json.loads(raw[meta_off:meta_off + meta_len])
    edit(meta)
    new = json.dumps(meta).encode()
    body = bytearray(raw[:-32])
    delta = len(new) - meta_len
    body[meta_off:meta_off + meta_len] = new
    for i in range(1, 4):  # shift the offsets of the sections after META
        pos = 16 + 20 * i + 4
        off = int.from_bytes(body[pos:pos + 8], "little") + delta
        body[pos:pos + 8] = off.to_bytes(8, "little")
    body[16 + 12:16 + 20] = len(new).to_bytes(8, "little")
    return _rehash(bytes(body))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(target_hash="0" * 64), "does not match the embedded target"),
    (lambda m: m["target"]["mac"].update(rows=-1), "'mac.rows' = -1"),
    (lambda m: m["inputs"][0].update(dtype="float64"), "field 'dtype' = 'float64'"),
    (lambda m: m["inputs"][0].update(addr=1 << 30), "beyond dram_size|field 'addr'"),
    (lambda m: [r.update(size=3) for r in m["regions"] if r["kind"] == "const"],
     "const regions hold 3 bytes"),
    (lambda m: m.update(dram_size=10**12), "field 'dram_size'"),
])
def test_loader_rejects_bad_meta(edit, match) -> None:  # type: ignore[no-untyped-def]
    data = _with_meta(small_program().to_bytes(), lambda m: None)
    program_from_bytes(data)  # the helper itself keeps a valid file valid
    with pytest.raises(ProgramError, match=match):
        program_from_bytes(_with_meta(data, edit))


def _build(*insns: tuple[Opcode, dict]) -> ProgramBuilder:  # type: ignore[type-arg]
    b = ProgramBuilder(NPU)
    b.scratch("s", 4096)
    for op, f in insns:
        b.emit(op, **f)
    return b


@pytest.mark.parametrize("insns,match", [
    ([(Opcode.LOAD, {"dram": 0, "sram": NPU.sram_bytes - 8, "n0": 16, "n1": 1, "n2": 1})],
     r"instruction 0 `LOAD .*`: field 'sram' = 1048568: accesses SRAM \[1048568, 1048584\)"),
    ([(Opcode.LOAD, {"dram": 4000, "sram": 0, "n0": 16, "n1": 8, "n2": 1, "ds1": 100, "ss1": 16})],
     r"field 'dram' = 4000: accesses DRAM \[4000, 4716\)"),
    ([(Opcode.LOAD, {"dram": 0, "sram": 0, "n0": 0, "n1": 1, "n2": 1})], r"field 'n0' = 0: must be >= 1"),
    ([(Opcode.LOAD, {"dram": 0, "sram": 0, "n0": 8, "n1": 65535, "n2": 65535, "ss1": 8})],
     r"field 'ss2' = 0: destination rows overlap"),
    ([(Opcode.FILL, {"dst": 2, "count": 4, "value": 1, "dt": DType.I32})],
     r"FILL .*field 'dst' = 2: must be a multiple of 4"),
    ([(Opcode.FILL, {"dst": 0, "count": 4, "value": 300, "dt": DType.I8})], r"field 'value' = 300"),
    ([(Opcode.CONV, {"h": 4, "w": 4, "cin": 3, "cout": 4, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "groups": 2,
                         "lo": -128, "hi": 127})], r"field 'cin' = 3: must be divisible by groups=2"),
    ([(Opcode.CONV, {"h": 4, "w": 4, "cin": 2, "cout": 4, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "groups": 1,
                         "acc": 1})], r"field 'acc' = 1: accumulation needs out=i32"),
    ([(Opcode.MATMUL, {"m": 1, "n": 1, "k": 1, "in_dt": DType.I16})], None),
    ([(Opcode.RESCALE, {"count": 1, "shift": 0, "lo": -1, "hi": 1})], r"field 'shift' = 0"),
    ([(Opcode.COPY, {"src": 0, "dst": 8, "n0": 16, "n1": 1, "n2": 1, "ss0": 1, "ds0": 1})],
     r"field 'dst' = 8: the destination overlaps the source"),
    ([(Opcode.LOADW, {"dram": 0, "clen": 10, "sram": 0, "count": 16, "fmt": 3})],
     r"field 'fmt' = 3: expected one of \[0, 1, 2\]"),
    ([(Opcode.LOADW, {"dram": 0, "clen": 30, "sram": 0, "count": 16, "fmt": 1})],
     r"field 'clen' = 30: a bitmask/none stream of count=16 has 2 <= clen <= 18"),
    ([(Opcode.LUT, {"src": 0, "dst": 0, "table": 0, "count": 1, "pop_prev": 1})],
     r"field 'pop_prev' = 1: pops a token that no earlier instruction pushed"),
    ([(Opcode.LOAD, {"dram": 0, "sram": 0, "n0": 1, "n1": 1, "n2": 1, "pop_prev": 1})],
     r"the load queue has no prev queue"),
    ([(Opcode.LOAD, {"dram": 0, "sram": 0, "n0": 1, "n1": 1, "n2": 1, "push_next": 1})],
     r"tokens unbalanced at HALT: \{'load->compute': 1\}"),
    ([(Opcode.HALT, {}), (Opcode.NOP, {})], r"HALT before the end"),
])
def test_verifier_errors(insns, match) -> None:  # type: ignore[no-untyped-def]
    prog = _build(*insns).build(verify=False)
    if match is None:  # legal on npu (int16 MAC mode), illegal on npu-lite
        verify(prog)
        lite = _build(*insns)
        lite.target = load_target("npu-lite")
        with pytest.raises(ProgramError, match="has no int16 MAC mode"):
            lite.build()
        return
    with pytest.raises(ProgramError, match=match):
        verify(prog)


def test_store_into_const_is_rejected() -> None:
    b = ProgramBuilder(NPU)
    w = b.const("w", np.zeros(64, np.int8))
    b.emit(Opcode.STORE, dram=w, sram=0, n0=8, n1=1, n2=1)
    with pytest.raises(ProgramError, match="STORE into const region 'w'"):
        b.build()


def test_numba_disable_jit_runs_the_same_code() -> None:
    root = str(Path(__file__).resolve().parents[2])
    code = (f"import numpy as np, sys; sys.path.insert(0, {root!r}); "
            "from tests.runtime.test_rt_program import small_program; "
            "from ocrc.runtime.vm import run_program; "
            "x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(1, 2, 3, 4); "
            "o, s = run_program(small_program(), {'x': x}); "
            "print(o['y'].tobytes().hex(), s.total_cycles)")
    outs = []
    for jit in ("0", "1"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=jit)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=300, check=True)
        outs.append(r.stdout)
    assert outs[0] == outs[1] and outs[0]


FUZZ_BASE = single(Opcode.CONV, src=0, wgt=2048, qp=4096, dst=8192, h=5, w=6, cin=3, cout=4,
                   kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pt=1, pb=1, pl=1, pr=1, groups=1, zx=2,
                   lo=-128, hi=127).to_bytes()


def _load_and_run(data: bytes) -> None:
    try:
        prog = program_from_bytes(data)
        VM(prog).run_raw({d.name: np.zeros(d.shape, np.int8) for d in prog.inputs})
    except OcrcError:
        pass  # rejected with a clear error: fine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _load_and_run(data)
    _load_and_run(FUZZ_BASE[:64] + data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(FUZZ_BASE) - 33), st.integers(1, 255))
def test_fuzz_single_byte_mutations_of_the_code(pos: int, xor: int) -> None:
    """Mutations that keep the checksum valid (so the verifier, not the hash, is tested)."""
    body = bytearray(FUZZ_BASE[:-32])
    body[pos] ^= xor
    _load_and_run(_rehash(bytes(body)))
