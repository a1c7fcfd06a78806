"""Compressed weight streams and weight sparsity on the NPU: LOADW decodes every stream format
exactly as runtime/weightcodec.py (and rejects the same corrupt streams, never touching a byte
outside its destination), the backend picks the smallest format per block and the MAC sparsity
hint per instruction, pruned/shared models stay bit-exact, the compiler's cycles equal the
VM's, and the LSTM keeps (part of) its recurrent weights resident across steps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocrc.compiler.backend.codegen import compile_program
from ocrc.compiler.backend.cost import Machine
from ocrc.compiler.backend.weights import (
    WeightPlanner,
    choose_stream,
    stream_sizes,
    weight_report,
)
from ocrc.compiler.compress.storage import weight_values
from ocrc.compiler.ir import Graph
from ocrc.compiler.ir.graph import Node
from ocrc.compiler.passes import run_passes
from ocrc.compiler.pipeline import build_pipeline
from ocrc.runtime import weightcodec as wc
from ocrc.runtime.builder import ProgramBuilder
from ocrc.runtime.errors import ProgramError, VMError
from ocrc.runtime.isa import Book, Comp, Opcode, Sparse
from ocrc.runtime.target import load_target
from ocrc.runtime.vm import VM
from ocrc.runtime.weightcodec import CodecError, StreamFormat

from tests.backend.helpers import TARGETS, G, check_exact, quantise

FORMATS = [StreamFormat(b, k) for b in ("dense", "bitmask", "csr") for k in (0, 16, 256)]
DST = 256  # SRAM destination of the test LOADWs; bytes around it must stay zero


def _sparse(rng: np.random.Generator, n: int, density: float, levels: int = 0) -> np.ndarray:
    v = rng.integers(-128, 128, n).astype(np.int8)
    if levels:
        v = rng.choice(np.arange(-levels // 2, levels // 2 + 1), n).astype(np.int8)
    return np.where(rng.random(n) < density, v, 0).astype(np.int8)


def _codebook(v: np.ndarray, k: int) -> np.ndarray | None:
    if not k:
        return None
    u = np.unique(np.concatenate([v, [0]])).astype(np.int8)
    return np.concatenate([u, np.full(k - len(u), u[-1], np.int8)])


def _loadw(stream: bytes, fmt: StreamFormat, count: int, const: bool) -> np.ndarray:
    """SRAM after one LOADW of `stream`, from a const region (decoded at VM load) or from an
    input region (decoded by the LOADW kernel at run time)."""
    b = ProgramBuilder(load_target("npu"))
    addr = b.const("w", stream) if const else b.input("w", (len(stream),)).addr
    b.emit(Opcode.LOADW, dram=addr, clen=len(stream), sram=DST, count=count,
           fmt=int(wc.BASES[fmt.base]), cb=wc.CODEBOOK_SIZES.index(fmt.codebook))
    vm = VM(b.build())
    vm.run_raw({} if const else {"w": np.frombuffer(stream, np.int8)})
    return vm.sram


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("const", [True, False], ids=["const", "runtime"])
def test_loadw_decodes_every_format(fmt: StreamFormat, const: bool) -> None:
    rng = np.random.default_rng(0)
    for count, density in ((1, 1.0), (37, 0.3), (300, 0.05), (256, 0.0)):
        v = _sparse(rng, count, density, levels=8 if fmt.codebook == 16 else 0)
        sram = _loadw(wc.encode(v, fmt, _codebook(v, fmt.codebook)), fmt, count, const)
        np.testing.assert_array_equal(sram[DST:DST + count].view(np.int8), v)
        assert not sram[:DST].any() and not sram[DST + count:].any()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(FORMATS) - 1), st.integers(1, 200), st.floats(0, 1),
       st.integers(0, 2**32 - 1), st.integers(-1, 400), st.integers(1, 255), st.booleans())
def test_loadw_corrupt_streams_match_the_codec(fi: int, count: int, density: float, seed: int,
                                                pos: int, xor: int, const: bool) -> None:
    """A stream with one byte flipped: the VM decodes it exactly as weightcodec.decode or
    rejects it (VMError, or the verifier's ProgramError for an impossible length) when the codec
    does, and never writes outside the destination."""
    fmt = FORMATS[fi]
    rng = np.random.default_rng(seed)
    v = _sparse(rng, count, density, levels=8 if fmt.codebook == 16 else 0)
    raw = bytearray(wc.encode(v, fmt, _codebook(v, fmt.codebook)))
    if 0 <= pos < len(raw):
        raw[pos] ^= xor
    try:
        want = wc.decode(bytes(raw), fmt, count)
    except CodecError:
        want = None
    try:
        sram = _loadw(bytes(raw), fmt, count, const)
    except (VMError, ProgramError):
        assert want is None
        return
    assert want is not None
    np.testing.assert_array_equal(sram[DST:DST + count].view(np.int8), want)
    assert not sram[:DST].any() and not sram[DST + count:].any()


@pytest.mark.parametrize("fields,match", [
    ({"clen": 9, "count": 16, "fmt": Comp.DENSE, "cb": Book.K16}, r"24 <= clen <= 24"),
    ({"clen": 3, "count": 16, "fmt": Comp.CSR, "cb": Book.NONE}, r"clen' = 3: a csr/none str"),
    ({"clen": 16, "count": 16, "fmt": Comp.DENSE, "cb": 3}, r"field 'cb' = 3: expected one"),
])
def test_verifier_bounds_stream_lengths(fields: dict, match: str) -> None:
    b = ProgramBuilder(load_target("npu"))
    b.const("w", bytes(64))
    b.emit(Opcode.LOADW, dram=0, sram=0, **fields)
    with pytest.raises(ProgramError, match=match):
        b.build()


def test_stream_sizes_are_the_encoded_lengths_and_the_choice_is_the_smallest() -> None:
    rng = np.random.default_rng(0)
    for density, levels in ((1.0, 0), (0.5, 0), (0.22, 0), (0.03, 0), (0.4, 8), (0.0, 0)):
        v = _sparse(rng, 1000, density, levels)
        sizes = stream_sizes(v)
        for (fmt, cb), n in sizes.items():
            sf = StreamFormat({0: "dense", 1: "bitmask", 2: "csr"}[int(fmt)], 16 if cb else 0)
            assert len(wc.encode(v, sf, _codebook(v, sf.codebook))) == n, (sf, density)
        s = choose_stream(v)
        assert s.clen == min(sizes.values()) and len(s.encode(v)) == s.clen
        assert (s.cb == Book.K16) == (levels > 0 and s.clen < min(
            n for (f, c), n in sizes.items() if c == Book.NONE))
    assert choose_stream(np.ones(64, np.int8)).fmt == Comp.DENSE  # ties: dense


def _model() -> Graph:
    """conv -> conv -> pool to one row -> bidirectional LSTM -> dense (K multiples of 4)."""
    g = G((1, 8, 8, 24))
    a = g.conv(g.x, 16, pads=(1, 1, 1, 1), act="relu")
    b = g.conv(a, 32, strides=(2, 1), pads=(1, 1, 1, 1))
    p = g.op("max_pool", b, kernel_shape=(4, 1), strides=(4, 1))  # [1, 32, 1, 24]
    t = g.op("reshape", g.op("transpose", p, perm=(3, 0, 1, 2)), shape=(24, 1, 32))
    h = 32
    y, _, _ = g.b.emit("lstm", [t, g.w(2, 4 * h, 32), g.w(2, 4 * h, h), g.w(2, 8 * h, sc=0.1)],
                       {"hidden_size": h, "direction": "bidirectional"})
    r = g.op("reshape", y, shape=(24, 1, 2 * h))
    return g.graph(g.op("dense", r, g.w(40, 2 * h, sc=0.2), g.w(40, sc=0.1)))


def _pruned(spec: str) -> Graph:
    return quantise(run_passes(_model(), build_pipeline(spec)) if spec else _model())


def _shared(qg: Graph) -> Graph:
    """At most 8 distinct int8 values per weight tensor (what share-weights produces)."""
    new = {v: (np.round(qg.const_value(v) / 32.0) * 32).clip(-128, 96).astype(np.int8)
           for _, v in weight_values(qg)}
    nodes = [Node(n.op, n.inputs, {**n.attrs, "value": new[n.outputs[0]]}, n.outputs, n.name)
             if n.op.name == "const" and n.outputs[0] in new else n for n in qg.nodes]
    return Graph(list(qg.inputs), nodes, list(qg.outputs), qg.name)


@pytest.mark.parametrize("spec,fmt,hint", [
    ("prune{sparsity=0.78}", "bitmask", None),
    ("prune{nm=2:4}", "bitmask", "two_four"),
    ("share", "+k16", None),
])
@pytest.mark.parametrize("target", ["npu", "tiny"])
def test_compressed_models_are_bit_exact_and_smaller(spec: str, fmt: str, hint: str | None,
                                                     target: str) -> None:
    qg = _shared(_pruned("")) if spec == "share" else _pruned(spec)
    t = TARGETS[target]()
    res, stats = check_exact(qg, t)
    dense = compile_program(qg, t, "dense", sparse_weights=False)
    p, d = res.program, dense.program
    assert len(p.const_data) < len(d.const_data)
    rows = weight_report(VM(p).vp.fields, p.layer_ids, p.layers)
    assert all(r.stored < r.stored_dense for r in rows)
    assert sum(r.stored for r in rows) < 0.7 * sum(r.stored_dense for r in rows)
    assert any(fmt in k for r in rows for k in (r.formats or {}))
    hints = {k for r in rows for k in (r.hints or {})}
    if hint and t.two_four:
        assert hint in hints
    if not (t.two_four or t.zero_block):
        assert hints == {"dense"}
    _, dstats = VM(d).run({v.name: np.zeros(v.type.shape, np.float32) for v in qg.inputs})
    assert stats.total_cycles <= dstats.total_cycles
    assert abs(res.estimate / stats.total_cycles - 1) <= 0.1


def test_sparse_mac_cycles_equal_the_vm() -> None:
    """One MATMUL per hint on weights with zero blocks / 2:4: VM cycles == the compiler's."""
    t = load_target("npu")
    rng = np.random.default_rng(0)
    n, k = 70, 160
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w[:, 32:96] = 0  # two all-zero K-blocks of 32
    w24 = w.copy().reshape(n, -1, 4)
    w24[:, :, 2:] = 0
    w24 = w24.reshape(n, k)
    for wt, want in ((w, Sparse.ZERO_BLOCK), (w24, Sparse.TWO_FOUR)):
        planner = WeightPlanner(t)
        mac = planner.mac("w", wt[None], 5)
        assert mac.hint == want
        f = {"a": 0, "b": 4096, "qp": 32768, "dst": 49152, "m": 5, "n": n, "k": k, "a_rs": k,
             "d_rs": 4 * n, "out": 2, "sparse": int(mac.hint)}
        b = ProgramBuilder(t)
        lw = {"dram": b.const("w", wt), "clen": n * k, "sram": 4096, "count": n * k}
        b.emit(Opcode.LOADW, push_next=1, **lw)
        b.emit(Opcode.MATMUL, pop_prev=1, **f)
        _, stats = VM(b.build()).run_raw({})
        load = Machine.of(t).insn(Opcode.LOADW, **lw)
        assert stats.total_cycles - load == planner.mac_cycles(Opcode.MATMUL, mac, f)
        assert stats.total_cycles - load < planner.mac_cycles(Opcode.MATMUL, planner.mac(
            "dense", np.ones((1, n, k), np.int8), 5), f)


def test_lstm_weights_resident_when_they_fit_partly_otherwise() -> None:
    qg = _pruned("")
    big = compile_program(qg, load_target("npu-large"))
    lstm = [t for k, t in zip(big.plan.kernels, big.tilings) if k.anchor.op.name == "npu.lstm"]
    assert lstm[0].params["res"] == 4 * 32
    rows = {r.layer: r for r in weight_report(VM(big.program).vp.fields,
                                              big.program.layer_ids, big.program.layers)}
    r = next(r for name, r in rows.items() if "npu.lstm" in name)
    assert r.moved == r.stored  # R read from DRAM once, not every step
    small = compile_program(qg, TARGETS["tiny"]())
    lstm = [t for k, t in zip(small.plan.kernels, small.tilings) if k.anchor.op.name == "npu.lstm"]
    assert 0 < lstm[0].params["res"] < 4 * 32
