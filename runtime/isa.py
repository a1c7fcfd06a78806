"""The instruction set of the ocrc NPU, declared once as a table (STYLE R8).

`FORMATS[Opcode.X]`: fields (names, bit widths, signedness), queue, unit, pseudo-code, cycles.
From it: range-checked `encode`/`decode`, the VM's field matrix (`decode_program`, columns
`C_<FIELD>`), isa_text.py's `disasm`/`assemble`/docs/isa.md. Only this module does bit arithmetic
on instruction words. Why 256-bit words: coarse operations (a whole conv tile; a 3-D strided DMA)
take up to ~240 bits of operands; 64/128-bit words would need register-setting commands or
descriptor tables (state for the verifier); code is ~1% of a program next to its weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ocrc.runtime.errors import ISAEncodeError
from ocrc.runtime.isa_defs import (  # noqa: F401 (re-exported: the ISA's one namespace)
    WORD_BITS,
    WORDS,
    INSN_BITS,
    OPCODE_BITS,
    SRAM_ADDR_BITS,
    DRAM_ADDR_BITS,
    Opcode,
    Queue,
    Unit,
    DType,
    Comp,
    Book,
    PoolMode,
    Sparse,
    ENUMS,
    Field,
    Format,
    HEADER_FIELDS,
    _sa,
    _dt,
    _s8,
    _s16,
)

_MULT = "a Q31 multiplier mantissa (qmath.quantize_multiplier), < 2**31"
_SHIFT = "right shift n of the multiplier, in [1, 62]"
_CLAMP = (_s8("lo", "output clamp low (int8 range, fused relu/relu6)"),
          _s8("hi", "output clamp high"))
# MAC results: int8 codes, or for out=i16 the high byte of the int16 clamp (relu and the full
# range are exact; the backend adds a RESCALE for a finer int16 clamp)
_MAC_CLAMP = (_s8("lo", "clamp low: int8 codes; out=i16: 256*lo"),
              _s8("hi", "clamp high: int8 codes; out=i16: 256*hi + 255"))
_MAC_OUT = "i8 / i16: requantised output; i32: raw accumulators (in_dt=i8 only)"
_MAC_QP = "int32 bias[n], mult[n], shift[n]; in_dt=i16: int64 bias[n], int32 mult[n], shift[n]"
_WIDE = """
in_dt == i16 (target mac.int16): x is int16 with zx = 0, the accumulator is int64 (the wide
accumulator, |acc| < 2**47), qp holds int64 bias[n] then int32 mult[n] (< 2**15), shift[n]
(8-byte aligned), out is i8 or i16 and acc = 0 (docs/quantization.md §8)
out == i16: the clamp is [256*lo, 256*hi + 255]; the result is stored as int16"""
_STRIDED3 = "3-D strided byte copy"
_DMA_FIELDS = (
    Field("dram", DRAM_ADDR_BITS, "DRAM byte address"), _sa("sram", "tile base"),
    Field("n0", 16, "bytes per row (contiguous)"), Field("n1", 16, "rows"),
    Field("n2", 16, "planes"), Field("ds1", 32, "DRAM row stride"),
    Field("ds2", 32, "DRAM plane stride"), Field("ss1", 24, "SRAM row stride"),
    Field("ss2", 24, "SRAM plane stride"),
)
_DMA_SEM = """
for i2 < n2, i1 < n1, i0 < n0:
    {dst}[{d} + i2*{d[0]}s2 + i1*{d[0]}s1 + i0] = {src}[{s} + i2*{s[0]}s2 + i1*{s[0]}s1 + i0]
"""
_DMA_CYC = "dram_latency + ceil(n0*n1*n2 / dram_bytes_per_cycle)"
_VEC_CYC = "vector_overhead[op] + ceil(count / lanes)"
_ELTWISE_1D = (_sa("a", "input a"), _sa("b", "input b"), _sa("dst", "output"),
               Field("count", 24, "elements"),
               Field("b_period", 24, "b is read at index i mod b_period (broadcast); "
                                     "b_period >= 1"))

FORMATS: dict[Opcode, Format] = {f.opcode: f for f in [
    Format(Opcode.HALT, Queue.COMPUTE, Unit.CTRL, (), "End of the program (last instruction).",
           "wait until the three queues are idle; stop", "0 (total = the latest queue finish)"),
    Format(Opcode.NOP, Queue.COMPUTE, Unit.CTRL,
           (Field("queue", 2, "queue that executes it", enum=Queue),),
           "Token-only instruction: pops/pushes dependency tokens on any queue.",
           "(no effect besides the dependency flags)", "0"),
    Format(Opcode.LOAD, Queue.LOAD, Unit.DMA, _DMA_FIELDS,
           f"DMA DRAM -> SRAM, {_STRIDED3}.",
           _DMA_SEM.format(dst="SRAM", d="sram", src="DRAM", s="dram"), _DMA_CYC),
    Format(Opcode.LOADW, Queue.LOAD, Unit.DMA, (
        Field("dram", DRAM_ADDR_BITS, "DRAM byte address of the (compressed) stream"),
        Field("clen", 32, "stream length in bytes (what the DMA moves)"),
        _sa("sram", "destination (dense, contiguous)"),
        Field("count", 24, "decompressed bytes"),
        Field("fmt", 2, "stream format", enum=Comp), Field("cb", 2, "values", enum=Book)),
        "DMA of a weight stream DRAM -> SRAM with decompression (runtime/weightcodec.py).",
        """S = DRAM[dram:dram+clen] -> SRAM[sram:sram+count]. values(n) = n int8, or book[k] + n indices
dense: values(count); bitmask: mask bits[count] (LSB first) + values(popcount), 0 where unset;
csr: u32 n, n 4-bit gaps, values(n): entry j at (entry j-1) + gap_j + 1 (from -1), others 0.
bad_stream unless the format accounts for exactly clen bytes and every entry is < count
""", "dram_latency + ceil(clen / dram_bytes_per_cycle)   (compressed bytes)"),
    Format(Opcode.STORE, Queue.STORE, Unit.DMA, _DMA_FIELDS,
           f"DMA SRAM -> DRAM, {_STRIDED3}.",
           _DMA_SEM.format(dst="DRAM", d="dram", src="SRAM", s="sram"), _DMA_CYC),
    Format(Opcode.CONV, Queue.COMPUTE, Unit.MAC, (
        _sa("src", "input tile, HWC, dense"), _sa("wgt", "weights [cout][kh][kw][cin/groups]"),
        _sa("qp", _MAC_QP.replace("[n]", "[cout]")), _sa("dst", "output, HWC"),
        Field("h", 12, "input height"), Field("w", 12, "input width"),
        Field("cin", 12, "input channels"), Field("cout", 12, "output channels"),
        Field("kh", 4, "kernel height"), Field("kw", 4, "kernel width"),
        Field("sh", 3, "stride y"), Field("sw", 3, "stride x"),
        Field("dh", 3, "dilation y"), Field("dw", 3, "dilation x"),
        Field("pt", 4, "pad top"), Field("pb", 4, "pad bottom"),
        Field("pl", 4, "pad left"), Field("pr", 4, "pad right"),
        Field("groups", 12, "groups (cin and cout divisible; groups == cin: depthwise)"),
        _s8("zx", "input zero point (the padding value)"), _s8("zy", "output zero point"),
        *_MAC_CLAMP, _dt("out", _MAC_OUT),
        Field("acc", 1, "1: add to the int32 accumulators at dst (out must be i32, no bias)"),
        _dt("in_dt", "input type: i8, or i16 (needs target mac.int16)"),
        Field("sparse", 2, "weight sparsity hint for the cycle model", enum=Sparse)),
        "Convolution of one SRAM tile on the MAC array (grouped, depthwise, strided, dilated).",
        """
ho = (h + pt + pb - dh*(kh-1) - 1) // sh + 1;  wo likewise;  cg = cin/groups; ng = cout/groups
x(y, x, ci) = SRAM_in[src + (y*w + x)*cin + ci]  inside the tile, zx in the padding
for oy < ho, ox < wo, c < cout (g = c // ng):
    acc = acc ? SRAM_i32[dst + 4*((oy*wo + ox)*cout + c)] : bias[c]
    acc += sum_{ky<kh, kx<kw, ci<cg} SRAM_i8[wgt + ((c*kh + ky)*kw + kx)*cg + ci]
                                     * (x(oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, g*cg + ci) - zx)
    out == i32: SRAM_i32[dst + 4*((oy*wo + ox)*cout + c)] = acc   (int32, wraps)
    out == i8:  SRAM_i8[dst + (oy*wo + ox)*cout + c] = requantize(acc, mult[c], shift[c], zy, lo, hi)
""" + _WIDE + "\n", "groups * gemm_cycles(M=ho*wo, N=cout/groups, K=kh*kw*cin/groups) per the dataflow "
             "(docs/cycle-model.md); x int16_slowdown for i16 input"),
    Format(Opcode.MATMUL, Queue.COMPUTE, Unit.MAC, (
        _sa("a", "activations [m][k] (row stride a_rs)"),
        _sa("b", "weights [n][k], dense (k contiguous)"),
        _sa("qp", _MAC_QP), _sa("dst", "output [m][n] (row stride d_rs)"),
        Field("m", 16, "rows of a"), Field("n", 16, "output columns"),
        Field("k", 16, "reduction length"), Field("a_rs", 24, "row stride of a in bytes"),
        Field("d_rs", 24, "row stride of dst in bytes"),
        _s8("zx", "zero point of a"), _s8("zy", "output zero point"), *_MAC_CLAMP,
        _dt("out", _MAC_OUT),
        Field("acc", 1, "1: add to the int32 accumulators at dst (out must be i32, no bias)"),
        _dt("in_dt", "type of a: i8, or i16 (needs target mac.int16)"),
        Field("sparse", 2, "weight sparsity hint for the cycle model", enum=Sparse)),
        "Matrix product on the MAC array: dense layers, LSTM gate projections.",
        """
for i < m, c < n:
    acc = acc ? SRAM_i32[dst + i*d_rs + 4*c] : bias[c]
    acc += sum_{j<k} SRAM_i8[b + c*k + j] * (SRAM_in[a + i*a_rs + j*size(in_dt)] - zx)
    out == i32: SRAM_i32[dst + i*d_rs + 4*c] = acc
    out == i8:  SRAM_i8[dst + i*d_rs + c] = requantize(acc, mult[c], shift[c], zy, lo, hi)
""" + _WIDE + "\n", "gemm_cycles(M=m, N=n, K=k) per the dataflow (docs/cycle-model.md); x int16_slowdown "
             "for i16 input"),
    Format(Opcode.REQUANT, Queue.COMPUTE, Unit.VECTOR, (
        _sa("src", "int32 input"), _sa("dst", "output"), Field("count", 24, "elements"),
        Field("chan", 16, "channel period: channel of element i is i mod chan"),
        _sa("qp", "int32 bias[chan], mult[chan], shift[chan]"),
        _s16("zy", "output zero point"), _s16("lo", "clamp low (within out_dt)"),
        _s16("hi", "clamp high (within out_dt)"),
        _dt("out_dt", "i8, i16, or i32 (then the clamp is the int32 range; lo = hi = 0)")),
        "Per-channel requantisation of int32 accumulators to int8/int16 (or int32).",
        """
c = i mod chan
OUT[dst][i] = requantize(SRAM_i32[src][i] + bias[c], mult[c], shift[c], zy, lo, hi)
""", _VEC_CYC),
    Format(Opcode.RESCALE, Queue.COMPUTE, Unit.VECTOR, (
        _sa("src", "input"), _sa("dst", "output"), Field("count", 24, "elements"),
        _dt("in_dt", "input type"),
        _dt("out_dt", "output type: i8, i16, or i32 (then the clamp is the int32 range; lo = "
                      "hi = 0)"),
        Field("mult", 31, _MULT), Field("shift", 6, _SHIFT),
        _s16("zx", "input zero point"), _s16("zy", "output zero point"),
        _s16("lo", "clamp low (within out_dt)"), _s16("hi", "clamp high (within out_dt)")),
        "Scalar requantisation (scale/zero-point change, concat inputs, int16 <-> int8).",
        "OUT[dst][i] = qmath.rescale_ref(IN[src][i], zx, mult, shift, zy, lo, hi)\n"
        "            = clamp(mrs(x - zx, mult, shift) + zy, lo, hi)", _VEC_CYC),
    Format(Opcode.ADD, Queue.COMPUTE, Unit.VECTOR, (
        *_ELTWISE_1D, _s8("za", "zero point of a"), _s8("zb", "zero point of b"),
        _s8("zy", "output zero point"), *_CLAMP,
        Field("ma", 31, "multiplier of a: s_a/s_y * 2**ADD8_FRAC_BITS"), Field("sa", 6, _SHIFT),
        Field("mb", 31, "multiplier of b: s_b/s_y * 2**ADD8_FRAC_BITS"), Field("sb", 6, _SHIFT)),
        "int8 elementwise addition with rescaling of both inputs.",
        """
SRAM_i8[dst + i] = qmath.add_ref(SRAM_i8[a + i], za, ma, sa,
                                 SRAM_i8[b + i mod b_period], zb, mb, sb, zy, lo, hi, 16)
  ta = mrs(xa - za, ma, sa);  tb = mrs(xb - zb, mb, sb)       (int64; |ta|, |tb| < 2**40)
  y  = clamp(mrs(ta + tb, 1, ADD8_FRAC_BITS = 16) + zy, lo, hi)
""", _VEC_CYC),
    Format(Opcode.MUL, Queue.COMPUTE, Unit.VECTOR, (
        *_ELTWISE_1D, _s8("za", "zero point of a"), _s8("zb", "zero point of b"),
        _s8("zy", "output zero point"), *_CLAMP,
        Field("mult", 31, "multiplier ~ s_a*s_b/s_y"), Field("shift", 6, _SHIFT)),
        "int8 elementwise multiplication with rescaling.",
        """
SRAM_i8[dst + i] = qmath.mul_ref(SRAM_i8[a + i], za, SRAM_i8[b + i mod b_period], zb,
                                 mult, shift, zy, lo, hi)
  y = clamp(mrs((xa - za)*(xb - zb), mult, shift) + zy, lo, hi)
""", _VEC_CYC),
    Format(Opcode.LUT, Queue.COMPUTE, Unit.VECTOR, (
        _sa("src", "input (in_dt)"), _sa("dst", "output"), Field("count", 24, "elements"),
        _sa("table", "tables x 256 entries of out_dt (in_dt=i16: tables x 519 int16 entries)"),
        _dt("out_dt", "i8 or i16"),
        Field("tables", 16, "element i uses table i mod tables (per channel); 0 means 1"),
        _dt("in_dt", "i8: direct lookup; i16: interpolated lookup")),
        "Table lookup (sigmoid, tanh, SiLU, ... of an int8 or int16 input).",
        """
k = i mod max(tables, 1)
in_dt == i8:  OUT[dst][i] = T[table + 256*k][SRAM_i8[src + i] + 128]          (qmath.lut_ref)
in_dt == i16: T16 = SRAM_i16[table + 2*519*k ...] (513 knots, header x0, kk, sl (2), sh (2))
              d = SRAM_i16[src + 2*i] - x0;  kk = clamp(kk, 0, 7);  w = 512 << kk
              0 <= d < w: j = d >> kk;  f = (d - (j << kk)) << (7 - kk)
                          y = T16[j] + mrs((T16[j+1] - T16[j]) * f, 1, 7)
              d < 0: y = T16[0] + mrs(d*sl, 1, 16);  d >= w: y = T16[512] + mrs((d - w)*sh, 1, 16)
              OUT[dst][i] = clamp(y, out_dt's range)                      (qmath.lut16_ref)
""", _VEC_CYC),
    Format(Opcode.POOL, Queue.COMPUTE, Unit.VECTOR, (
        _sa("src", "input (in_dt), HWC"), _sa("dst", "output (out_dt), HWC"),
        _sa("qp", "avg: int32 mult[kh*kw+1], shift[kh*kw+1] indexed by the count"),
        Field("h", 12, "input height"), Field("w", 12, "input width"),
        Field("c", 12, "channels"), Field("kh", 8, "window height"),
        Field("kw", 8, "window width"), Field("sh", 4, "stride y"), Field("sw", 4, "stride x"),
        Field("pt", 4, "pad top"), Field("pb", 4, "pad bottom"),
        Field("pl", 4, "pad left"), Field("pr", 4, "pad right"),
        _s8("zx", "input zero point"), _s8("zy", "output zero point"),
        _s16("lo", "clamp low (within out_dt)"), _s16("hi", "clamp high (within out_dt)"),
        Field("mode", 2, "max, avg or avg_pad", enum=PoolMode),
        _dt("in_dt", "i8 or i16"), _dt("out_dt", "i8 or i16 (max: in_dt)")),
        "Max or average pooling on an int8 or int16 HWC tile.",
        """
ho = (h + pt + pb - kh) // sh + 1;  wo likewise;  window = the valid (non-padding) inputs
max:     y = clamp(max(window), lo, hi)                  (padding never wins)
avg:     s = sum(x - zx over window); n = len(window)    (avg_pad: n = kh*kw)
         y = clamp(mrs(s, mult[n], shift[n]) + zy, lo, hi)   (qmath.avgpool_ref)
""", "vector_overhead[pool] + ceil(ho*wo*c*kh*kw / lanes)"),
    Format(Opcode.IADD, Queue.COMPUTE, Unit.VECTOR, (
        *_ELTWISE_1D, _dt("a_dt", "type of a"), _dt("b_dt", "type of b"),
        _dt("out_dt", "i8 or i16"), Field("shift", 6, "0, or a rounding right shift in [1, 62]"),
        _s16("lo", "clamp low"), _s16("hi", "clamp high")),
        "Saturating integer addition without zero points (LSTM cell state, gate sums).",
        """
x = A[a][i] + B[b][i mod b_period]
shift == 0: OUT[dst][i] = qmath.add16_ref(a, b, lo, hi)        = clamp(x, lo, hi)
shift > 0:  OUT[dst][i] = qmath.add_shift_ref(a, b, shift, lo, hi) = clamp(mrs(x, 1, shift), lo, hi)
""", _VEC_CYC),
    Format(Opcode.IMUL, Queue.COMPUTE, Unit.VECTOR, (
        *_ELTWISE_1D, _dt("a_dt", "type of a (i8 or i16)"), _dt("b_dt", "type of b (i8 or i16)"),
        _dt("out_dt", "i8 or i16"), Field("mult", 31, _MULT), Field("shift", 6, _SHIFT),
        _s16("zy", "output zero point"), _s16("lo", "clamp low"), _s16("hi", "clamp high")),
        "Fixed-point integer multiplication with saturation (LSTM gates, cell and hidden state).",
        "OUT[dst][i] = qmath.mul16_ref(A[a][i], B[b][i mod b_period], mult, shift, lo, hi, zy)\n"
        "            = clamp(mrs(a*b, mult, shift) + zy, lo, hi)", _VEC_CYC),
    Format(Opcode.COPY, Queue.COMPUTE, Unit.VECTOR, (
        _sa("src", "source"), _sa("dst", "destination (must not overlap the source)"),
        Field("n0", 16, "elements per row"), Field("n1", 16, "rows"), Field("n2", 16, "planes"),
        Field("ss0", 24, "source element stride"), Field("ss1", 24, "source row stride"),
        Field("ss2", 24, "source plane stride"), Field("ds0", 24, "dest element stride"),
        Field("ds1", 24, "dest row stride"), Field("ds2", 24, "dest plane stride"),
        _dt("esize", "element type (size 1, 2 or 4 bytes)")),
        "Strided SRAM -> SRAM copy: concat, slice, transpose, reshape.",
        """
for i2 < n2, i1 < n1, i0 < n0:
    E[dst + i2*ds2 + i1*ds1 + i0*ds0] = E[src + i2*ss2 + i1*ss1 + i0*ss0]   (E: esize bytes)
""", "vector_overhead[copy] + ceil(n0*n1*n2 / lanes)"),
    Format(Opcode.FILL, Queue.COMPUTE, Unit.VECTOR, (
        _sa("dst", "destination"), Field("count", 24, "elements"),
        Field("value", 32, "value (must fit dt)", signed=True), _dt("dt", "element type")),
        "Fill SRAM with a constant (accumulator init, padding).",
        "OUT[dst][i] = value", _VEC_CYC),
]}


def _check_table() -> None:
    for op, fmt in FORMATS.items():
        bits = OPCODE_BITS + sum(f.bits for f in (*HEADER_FIELDS, *fmt.fields))
        names = [f.name for f in (*HEADER_FIELDS, *fmt.fields)]
        if bits > INSN_BITS or len(set(names)) != len(names) or "opcode" in names:
            raise AssertionError(f"isa table: {op.name} is malformed ({bits} bits)")
    if set(FORMATS) != set(Opcode):
        raise AssertionError("isa table: every opcode needs a format")


_check_table()


# ---- the decoded field matrix: one column per distinct field name, in table order ----
COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    ["opcode", *(f.name for f in HEADER_FIELDS)]
    + [f.name for fmt in FORMATS.values() for f in fmt.fields]))
N_COLS = len(COLUMNS)
COL: dict[str, int] = {name: i for i, name in enumerate(COLUMNS)}
# Module-level ints C_<FIELD> for the numba VM (numba freezes module globals at compile time).
globals().update({f"C_{name.upper()}": i for i, name in enumerate(COLUMNS)})
C_OPCODE = COL["opcode"]


@dataclass(frozen=True)
class Insn:
    """One decoded instruction: opcode + every field of its format (header flags included)."""

    opcode: Opcode
    fields: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.fields[name]


def layout_of(fmt: Format) -> list[tuple[Field, int]]:
    """(field, lsb) pairs: opcode in bits [0, 8), then the header flags, then the format's
    fields packed LSB-first in table order."""
    out, pos = [], OPCODE_BITS
    for f in (*HEADER_FIELDS, *fmt.fields):
        out.append((f, pos))
        pos += f.bits
    return out


LAYOUTS = {op: layout_of(fmt) for op, fmt in FORMATS.items()}


def encode(opcode: Opcode, **vals: int) -> int:
    """The instruction as one INSN_BITS-bit integer. Missing fields are 0; an unknown field or a
    value outside its width raises ISAEncodeError naming the field and its width."""
    fmt = FORMATS[Opcode(opcode)]
    word = int(fmt.opcode)
    known = {f.name for f, _ in LAYOUTS[fmt.opcode]}
    for name in vals:
        if name not in known:
            raise ISAEncodeError(f"{fmt.mnemonic}: unknown field '{name}', expected one of "
                                 f"{sorted(known)}")
    for f, lsb in LAYOUTS[fmt.opcode]:
        v = int(vals.get(f.name, 0))
        lo, hi = f.range()
        if not lo <= v <= hi:
            kind = "signed " if f.signed else ""
            raise ISAEncodeError(f"{fmt.mnemonic}.{f.name}={v} does not fit in {f.bits} "
                                 f"{kind}bits (range [{lo}, {hi}])")
        word |= (v & ((1 << f.bits) - 1)) << lsb
    return word


def decode(word: int) -> Insn:
    """The inverse of encode. Bits above the format's last field must be zero."""
    op_val = word & ((1 << OPCODE_BITS) - 1)
    try:
        op = Opcode(op_val)
    except ValueError:
        raise ISAEncodeError(f"unknown opcode {op_val}") from None
    fields = {}
    end = OPCODE_BITS
    for f, lsb in LAYOUTS[op]:
        raw = (word >> lsb) & ((1 << f.bits) - 1)
        if f.signed and raw >> (f.bits - 1):
            raw -= 1 << f.bits
        fields[f.name] = raw
        end = lsb + f.bits
    if word >> end:
        raise ISAEncodeError(f"{FORMATS[op].mnemonic}: reserved bits {end}..{INSN_BITS - 1} "
                             "are not zero")
    return Insn(op, fields)


def to_words(word: int) -> tuple[int, ...]:
    """Split an instruction integer into WORDS little-endian uint64 words."""
    mask = (1 << WORD_BITS) - 1
    return tuple((word >> (WORD_BITS * i)) & mask for i in range(WORDS))


def from_words(words: np.ndarray) -> int:
    return sum(int(w) << (WORD_BITS * i) for i, w in enumerate(words))


def encode_program(insns: list[int]) -> np.ndarray:
    """uint64[n, WORDS] from encoded instruction integers."""
    out = np.zeros((len(insns), WORDS), np.uint64)
    for i, word in enumerate(insns):
        out[i] = to_words(word)
    return out


def decode_program(words: np.ndarray) -> np.ndarray:
    """The VM's int64[n, N_COLS] field matrix (column COL[name]); unknown opcodes and nonzero
    reserved bits raise ISAEncodeError naming the instruction index."""
    words = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1, WORDS)
    n = words.shape[0]
    mat = np.zeros((n, N_COLS), np.int64)
    ops = (words[:, 0] & np.uint64((1 << OPCODE_BITS) - 1)).astype(np.int64)
    valid = {int(o) for o in Opcode}
    for i in np.flatnonzero(~np.isin(ops, list(valid))):
        raise ISAEncodeError(f"instruction {i}: unknown opcode {int(ops[i])}")
    mat[:, C_OPCODE] = ops
    for op in sorted(set(ops.tolist())):
        rows = np.flatnonzero(ops == op)
        sub = words[rows]
        end = OPCODE_BITS
        for f, lsb in LAYOUTS[Opcode(op)]:
            mat[rows, COL[f.name]] = _extract(sub, lsb, f.bits, f.signed)
            end = lsb + f.bits
        _check_reserved(sub, rows, end, FORMATS[Opcode(op)].mnemonic)
    return mat


def _extract(words: np.ndarray, lsb: int, bits: int, signed: bool) -> np.ndarray:
    w, off = divmod(lsb, WORD_BITS)
    val = words[:, w] >> np.uint64(off)
    if off + bits > WORD_BITS:
        val = val | (words[:, w + 1] << np.uint64(WORD_BITS - off))
    val = (val & np.uint64((1 << bits) - 1)).astype(np.int64)
    if signed:
        val = np.where(val >= (1 << (bits - 1)), val - (1 << bits), val)
    return val


def _check_reserved(words: np.ndarray, rows: np.ndarray, end: int, mnem: str) -> None:
    for w in range(WORDS):
        lo = max(end - WORD_BITS * w, 0)
        if lo >= WORD_BITS:
            continue
        bad = np.flatnonzero(words[:, w] >> np.uint64(lo)) if lo else np.flatnonzero(words[:, w])
        if bad.size:
            raise ISAEncodeError(f"instruction {int(rows[bad[0]])} ({mnem}): reserved bits "
                                 f"{end}..{INSN_BITS - 1} are not zero")


# The text form (disasm/assemble/docs) lives in isa_text.py; re-exported here.
from ocrc.runtime.isa_text import assemble, assemble_program, disasm, disasm_row, isa_markdown  # noqa: F401
