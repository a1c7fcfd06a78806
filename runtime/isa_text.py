"""The text form of the ISA, derived from the table in isa.py: one-line assembly (`disasm`,
`assemble`) and the generated reference docs/isa.md (`isa_markdown`;
`python -m ocrc.runtime.isa_text > docs/isa.md` regenerates it)."""

from __future__ import annotations

import re

import numpy as np
from ocrc.runtime.errors import ISAEncodeError
from ocrc.runtime.isa import (
    C_OPCODE,
    COL,
    ENUMS,
    FORMATS,
    HEADER_FIELDS,
    INSN_BITS,
    LAYOUTS,
    N_COLS,
    OPCODE_BITS,
    WORDS,
    Field,
    Opcode,
    decode,
    encode,
    encode_program,
)


def _fmt_value(f: Field, v: int) -> str:
    if f.enum is not None:
        try:
            return f.enum(v).name.lower()
        except ValueError:
            return str(v)
    return str(v)


def disasm_row(row: np.ndarray) -> str:
    """One line of assembly from a row of the decoded field matrix."""
    op = Opcode(int(row[C_OPCODE]))
    fmt = FORMATS[op]
    parts = [fmt.mnemonic]
    parts += [f"{f.name}={_fmt_value(f, int(row[COL[f.name]]))}" for f in fmt.fields]
    deps = [f.name for f in HEADER_FIELDS if row[COL[f.name]]]
    if deps:
        parts.append("[" + " ".join(deps) + "]")
    return " ".join(parts)


def disasm(word: int) -> str:
    """One line of assembly: `MNEMONIC field=value ... [dep flags]`."""
    insn = decode(word)
    row = np.zeros(N_COLS, np.int64)
    row[C_OPCODE] = int(insn.opcode)
    for k, v in insn.fields.items():
        row[COL[k]] = v
    return disasm_row(row)


_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)((?:\s+[a-z0-9_]+=[-A-Za-z0-9_]+)*)\s*(?:\[([a-z_ ]*)\])?\s*$")


def assemble(line: str) -> int:
    """Parse one line of `disasm` output (enum names or integers) into an instruction integer."""
    text = line.split(";", 1)[0]
    m = _LINE.match(text)
    if not m:
        raise ISAEncodeError(f"cannot parse instruction '{line.strip()}': expected "
                             "'MNEMONIC field=value ... [flags]'")
    mnem = m.group(1).upper()
    try:
        op = Opcode[mnem]
    except KeyError:
        raise ISAEncodeError(f"unknown mnemonic '{m.group(1)}' in '{line.strip()}'") from None
    fields = {f.name: f for f, _ in LAYOUTS[op]}
    vals: dict[str, int] = {}
    for item in m.group(2).split():
        key, _, val = item.partition("=")
        f = fields.get(key)
        if f is None:
            raise ISAEncodeError(f"{mnem}: unknown field '{key}', expected one of "
                                 f"{sorted(fields)}")
        vals[key] = _parse_value(mnem, f, val)
    for flag in (m.group(3) or "").split():
        if flag not in {h.name for h in HEADER_FIELDS}:
            raise ISAEncodeError(f"{mnem}: unknown flag '{flag}', expected one of "
                                 f"{[h.name for h in HEADER_FIELDS]}")
        vals[flag] = 1
    return encode(op, **vals)


def _parse_value(mnem: str, f: Field, val: str) -> int:
    if f.enum is not None and not re.fullmatch(r"-?\d+", val):
        try:
            return int(f.enum[val.upper()])
        except KeyError:
            names = [e.name.lower() for e in f.enum]
            raise ISAEncodeError(f"{mnem}.{f.name}: unknown value '{val}', expected one of "
                                 f"{names}") from None
    try:
        return int(val, 0)
    except ValueError:
        raise ISAEncodeError(f"{mnem}.{f.name}: '{val}' is not an integer") from None


def assemble_program(text: str) -> np.ndarray:
    """uint64[n, WORDS] from assembly text (one instruction per line; ';' starts a comment)."""
    lines = [ln for ln in text.splitlines() if ln.split(";", 1)[0].strip()]
    return encode_program([assemble(ln) for ln in lines])


# ---- documentation ----
def isa_markdown() -> str:
    """docs/isa.md, generated from the table (tests check the committed file is current)."""
    out = [
        "# The ocrc NPU instruction set", "",
        ("<!-- GENERATED from the table in runtime/isa.py by "
         "`python -m ocrc.runtime.isa_text > docs/isa.md`; do not edit. -->"), "",
        (f"Every instruction is {INSN_BITS} bits, stored as {WORDS} little-endian uint64 words. "
        f"Bits [0, {OPCODE_BITS}) hold the opcode, then the dependency-token flags, then the "
        "format's fields packed LSB-first in the order listed; unused high bits must be zero. "
        "Signed fields are two's complement. Addresses and strides are in bytes; `SRAM_i8`, "
        "`SRAM_i16`, `SRAM_i32` view SRAM as elements of that type at a byte address (int16/"
        "int32 operands must be aligned to their size). `mrs(x, m, n)` is "
        "`qmath.mul_round_shift` = `(x*m + 2**(n-1)) >> n`; `clamp` saturates."), "",
        "## Queues and dependency tokens", "",
        ("Instructions are dispatched in program order to three in-order queues: **load** (LOAD, "
        "LOADW), **compute** (MAC array and vector unit) and **store** (STORE). The queues run "
        "concurrently. As in VTA, four token FIFOs connect neighbouring queues: load->compute, "
        "compute->load, compute->store and store->compute. `pop_prev`/`pop_next` wait for and "
        "consume a token from the previous/next queue before the instruction starts; "
        "`push_prev`/`push_next` send one when it finishes. The load queue has no previous "
        "queue and the store queue no next queue. A program must be executable in program "
        "order: every pop must match a push of an earlier instruction, and every FIFO must be "
        "empty at HALT (the verifier simulates the counts). Execution semantics are program "
        "order; timing follows the queues (docs/cycle-model.md)."), "",
        "| header field | bits |", "|---|---|", f"| opcode | {OPCODE_BITS} |",
    ]
    out += [f"| {f.name} | {f.bits} |" for f in HEADER_FIELDS]
    out += ["", "## Enumerations", ""]
    for enum in ENUMS:
        vals = ", ".join(f"`{e.name.lower()}`={int(e)}" for e in enum)
        out.append(f"- **{enum.__name__}**: {vals}")
    out += ["", "## Instructions", ""]
    for op, fmt in FORMATS.items():
        out += [(f"### {fmt.mnemonic} (opcode {int(op)}, {fmt.queue.name.lower()} queue, "
                 f"{fmt.unit.name.lower()} unit)"), "", fmt.summary, "",
                "| field | bits | lsb | signed | meaning |", "|---|---|---|---|---|"]
        for f, lsb in LAYOUTS[op][len(HEADER_FIELDS):]:
            out.append(f"| {f.name} | {f.bits} | {lsb} | {'yes' if f.signed else ''} | "
                       f"{f.doc} |")
        out += ["", "```", fmt.semantics.strip("\n"), "```", "",
                f"**Cycles:** {fmt.cycles}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(isa_markdown())
