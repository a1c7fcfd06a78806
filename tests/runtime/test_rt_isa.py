"""The ISA table: encode/decode and disasm/assemble round trips, range errors, generated docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocrc.runtime import isa
from ocrc.runtime.errors import ISAEncodeError
from ocrc.runtime.isa import FORMATS, HEADER_FIELDS, Opcode

ROOT = Path(__file__).resolve().parents[2]


@st.composite
def instructions(draw: st.DrawFn) -> tuple[Opcode, dict[str, int]]:
    op = draw(st.sampled_from(list(Opcode)))
    vals = {}
    for f in (*HEADER_FIELDS, *FORMATS[op].fields):
        lo, hi = f.range()
        vals[f.name] = draw(st.integers(lo, hi))
    return op, vals


@settings(max_examples=300, deadline=None)
@given(instructions())
def test_encode_decode_round_trip(insn: tuple[Opcode, dict[str, int]]) -> None:
    op, vals = insn
    word = isa.encode(op, **vals)
    assert 0 <= word < 1 << isa.INSN_BITS
    dec = isa.decode(word)
    assert dec.opcode is op and dec.fields == vals
    assert isa.assemble(isa.disasm(word)) == word
    words = isa.encode_program([word])
    assert isa.from_words(words[0]) == word
    row = isa.decode_program(words)[0]
    assert row[isa.C_OPCODE] == op
    assert all(row[isa.COL[k]] == v for k, v in vals.items())


def test_program_text_round_trip() -> None:
    words = [isa.encode(Opcode.LOAD, dram=4096, sram=64, n0=16, n1=2, n2=1, ds1=32, ss1=16,
                        push_next=1),
             isa.encode(Opcode.CONV, src=0, wgt=1024, h=8, w=8, cin=4, cout=8, kh=3, kw=3,
                        sh=1, sw=1, dh=1, dw=1, groups=1, zx=-3, lo=-128, hi=127,
                        out=isa.DType.I32, pop_prev=1),
             isa.encode(Opcode.HALT)]
    prog = isa.encode_program(words)
    text = "\n".join(isa.disasm(w) for w in words)
    assert "out=i32" in text and "[push_next]" in text
    assert np.array_equal(isa.assemble_program(text + "\n; a comment\n"), prog)


def test_out_of_range_field_names_field_and_width() -> None:
    with pytest.raises(ISAEncodeError, match=r"LOAD\.sram=16777216 does not fit in 24 bits"):
        isa.encode(Opcode.LOAD, sram=1 << 24)
    with pytest.raises(ISAEncodeError, match=r"CONV\.zx=200 does not fit in 8 signed bits"):
        isa.encode(Opcode.CONV, zx=200)
    with pytest.raises(ISAEncodeError, match=r"LOAD\.n0=-1 does not fit in 16 bits"):
        isa.encode(Opcode.LOAD, n0=-1)
    with pytest.raises(ISAEncodeError, match="LOAD: unknown field 'dst'"):
        isa.encode(Opcode.LOAD, dst=70000)


def test_decode_rejects_bad_words() -> None:
    with pytest.raises(ISAEncodeError, match="unknown opcode 200"):
        isa.decode(200)
    with pytest.raises(ISAEncodeError, match="reserved bits"):
        isa.decode(isa.encode(Opcode.HALT) | 1 << 200)
    bad = isa.encode_program([isa.encode(Opcode.HALT)])
    bad[0, 3] = 1
    with pytest.raises(ISAEncodeError, match=r"instruction 0 \(HALT\): reserved bits"):
        isa.decode_program(bad)


def test_assemble_errors() -> None:
    with pytest.raises(ISAEncodeError, match="unknown mnemonic 'FOO'"):
        isa.assemble("FOO a=1")
    with pytest.raises(ISAEncodeError, match=r"CONV\.out: unknown value 'i64'"):
        isa.assemble("CONV out=i64")
    with pytest.raises(ISAEncodeError, match="unknown flag 'pop_all'"):
        isa.assemble("HALT [pop_all]")


def test_table_invariants() -> None:
    assert set(FORMATS) == set(Opcode)
    for fmt in FORMATS.values():
        assert isa.OPCODE_BITS + sum(f.bits for f in (*HEADER_FIELDS, *fmt.fields)) <= 256
        assert fmt.semantics and fmt.cycles and fmt.summary


def test_docs_isa_md_is_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "isa.md").read_text() == isa.isa_markdown(), (
        "docs/isa.md is stale: run `python -m ocrc.runtime.isa_text > docs/isa.md`")
