"""The target description: the hardware parameters of one NPU, read from a TOML file.

`load_target("npu")` (a preset in runtime/targets/) or `load_target("my.toml")` returns a frozen
`Target`. Derived numbers (peak MACs/cycle, TOPS, the VM's parameter vector) are computed here and
nowhere else. Every key is documented in docs/target.md; a bad file raises `TargetError` naming
the key, the value found and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ocrc.runtime.errors import TargetError
from ocrc.runtime.isa import FORMATS, Opcode, Unit

PRESET_DIR = Path(__file__).resolve().parent / "targets"
DATAFLOWS = ("os", "ws", "is")
# The largest SRAM the 24-bit SRAM address fields can reach, and the DRAM the 32-bit ones can.
MAX_SRAM_BYTES = 1 << 24
MAX_DRAM_BYTES = 1 << 32
VECTOR_OPS = tuple(f.opcode.name.lower() for f in FORMATS.values() if f.unit is Unit.VECTOR)

# Indices into Target.vm_params(), the int64 vector the numba VM reads (one home for them).
P_ROWS, P_COLS, P_DATAFLOW, P_OVERLAP, P_INT16, P_INT16_SLOWDOWN = range(6)
P_LANES, P_DRAM_BW, P_DRAM_LAT, P_ZERO_BLOCK, P_TWO_FOUR, P_SRAM, N_PARAMS = range(6, 13)

# key -> (type, default or REQUIRED, check, expected-text). Order gives docs/target.md order.
REQUIRED = object()


def _pos(v: Any) -> bool:
    return v > 0


_SCHEMA: dict[str, tuple[type, Any, Any, str]] = {
    "name": (str, REQUIRED, lambda v: v != "", "a non-empty string"),
    "description": (str, "", lambda v: True, "a string"),
    "clock_hz": (int, REQUIRED, _pos, "a positive integer (Hz)"),
    "mac.rows": (int, REQUIRED, lambda v: 1 <= v <= 1024, "an integer in [1, 1024]"),
    "mac.cols": (int, REQUIRED, lambda v: 1 <= v <= 1024, "an integer in [1, 1024]"),
    "mac.dataflow": (str, "os", lambda v: v in DATAFLOWS, "one of os, ws, is"),
    "mac.acc_bits": (int, 32, lambda v: v == 32, "32 (the ISA's accumulators are int32)"),
    "mac.int16": (bool, False, lambda v: True, "true or false"),
    "mac.int16_rate": (float, 0.25, lambda v: 0 < v <= 1,
                       "a number in (0, 1]: int16 MACs per cycle relative to int8"),
    "mac.fold_overlap": (bool, False, lambda v: True, "true or false"),
    "vector.lanes": (int, REQUIRED, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "vector.overhead": (int, 4, lambda v: 0 <= v <= 10_000, "an integer in [0, 10000] (cycles)"),
    "sram.bytes": (int, REQUIRED, lambda v: 4096 <= v <= MAX_SRAM_BYTES and v % 64 == 0,
                   f"a multiple of 64 in [4096, {MAX_SRAM_BYTES}]"),
    "sram.banks": (int, 1, lambda v: v >= 1 and v & (v - 1) == 0, "a power of two >= 1"),
    "dram.bytes": (int, 1 << 28, lambda v: 4096 <= v <= MAX_DRAM_BYTES and v % 64 == 0,
                   f"a multiple of 64 in [4096, {MAX_DRAM_BYTES}]"),
    "dram.bytes_per_cycle": (int, REQUIRED, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "dram.latency": (int, 0, lambda v: 0 <= v <= 100_000, "an integer in [0, 100000] (cycles)"),
    "sparsity.zero_block": (int, 0, lambda v: 0 <= v <= 4096,
                            "0 (off) or the K-block size in [1, 4096]"),
    "sparsity.two_four": (bool, False, lambda v: True, "true or false"),
}
_SECTIONS = {"mac", "vector", "sram", "dram", "sparsity"}


@dataclass(frozen=True)
class Target:
    """One NPU. Fields mirror the TOML keys (docs/target.md); the rest is derived."""

    name: str
    description: str
    clock_hz: int
    rows: int
    cols: int
    dataflow: str
    acc_bits: int
    int16: bool
    int16_rate: float
    fold_overlap: bool
    lanes: int
    vector_overhead: int
    op_overhead: dict[str, int] = field(hash=False)
    sram_bytes: int = 0
    sram_banks: int = 1
    dram_bytes: int = 0
    dram_bw: int = 1
    dram_latency: int = 0
    zero_block: int = 0
    two_four: bool = False
    hash: str = ""

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    @property
    def peak_tops(self) -> float:
        """Peak int8 tera-operations per second (one MAC = 2 operations)."""
        return 2.0 * self.macs_per_cycle * self.clock_hz / 1e12

    def seconds(self, cycles: float) -> float:
        return float(cycles) / self.clock_hz

    def as_dict(self) -> dict[str, Any]:
        """The nested TOML form (target_from_dict(t.as_dict()) == t); embedded in programs."""
        flat = {
            "name": self.name, "description": self.description, "clock_hz": self.clock_hz,
            "mac.rows": self.rows, "mac.cols": self.cols, "mac.dataflow": self.dataflow,
            "mac.acc_bits": self.acc_bits, "mac.int16": self.int16,
            "mac.int16_rate": self.int16_rate, "mac.fold_overlap": self.fold_overlap,
            "vector.lanes": self.lanes, "vector.overhead": self.vector_overhead,
            "sram.bytes": self.sram_bytes, "sram.banks": self.sram_banks,
            "dram.bytes": self.dram_bytes, "dram.bytes_per_cycle": self.dram_bw,
            "dram.latency": self.dram_latency, "sparsity.zero_block": self.zero_block,
            "sparsity.two_four": self.two_four,
        }
        out: dict[str, Any] = {}
        for key, val in flat.items():
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = val
        out["vector"]["op_overhead"] = dict(self.op_overhead)
        return out

    def vm_params(self) -> np.ndarray:
        """The int64 parameter vector of the numba VM and cycle model (indices P_*)."""
        p = np.zeros(N_PARAMS, np.int64)
        p[P_ROWS], p[P_COLS] = self.rows, self.cols
        p[P_DATAFLOW] = DATAFLOWS.index(self.dataflow)
        p[P_OVERLAP] = int(self.fold_overlap)
        p[P_INT16] = int(self.int16)
        # int16 MACs take 1/rate times the cycles; rate is a power-of-two-friendly fraction.
        p[P_INT16_SLOWDOWN] = max(1, round(1.0 / self.int16_rate))
        p[P_LANES] = self.lanes
        p[P_DRAM_BW], p[P_DRAM_LAT] = self.dram_bw, self.dram_latency
        p[P_ZERO_BLOCK], p[P_TWO_FOUR] = self.zero_block, int(self.two_four)
        p[P_SRAM] = self.sram_bytes
        return p

    def vector_overheads(self) -> np.ndarray:
        """Fixed cycles per vector-unit instruction, indexed by opcode (0 for other units)."""
        out = np.zeros(max(int(op) for op in Opcode) + 1, np.int64)
        for f in FORMATS.values():
            if f.unit is Unit.VECTOR:
                out[int(f.opcode)] = self.op_overhead.get(f.opcode.name.lower(),
                                                          self.vector_overhead)
        return out


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_keys(raw: dict[str, Any], where: str) -> None:
    known_top = {k for k in _SCHEMA if "." not in k} | _SECTIONS
    for key, val in raw.items():
        if key not in known_top:
            raise TargetError(f"{where}: unknown key '{key}', expected one of {sorted(known_top)}")
        if key in _SECTIONS:
            if not isinstance(val, dict):
                raise TargetError(f"{where}: '{key}' must be a table [{key}], got {val!r}")
            allowed = {k.split(".", 1)[1] for k in _SCHEMA if k.startswith(key + ".")}
            if key == "vector":
                allowed.add("op_overhead")
            for sub in val:
                if sub not in allowed:
                    raise TargetError(f"{where}: unknown key '{key}.{sub}', expected one of "
                                      f"{sorted(allowed)}")


def _value(raw: dict[str, Any], key: str, where: str) -> Any:
    typ, default, check, expected = _SCHEMA[key]
    val = _lookup(raw, key)
    if val is None:
        if default is REQUIRED:
            raise TargetError(f"{where}: missing key '{key}', expected {expected}")
        return default
    ok_type = isinstance(val, typ) and not (typ is int and isinstance(val, bool))
    if typ is float and isinstance(val, int) and not isinstance(val, bool):
        val, ok_type = float(val), True
    if not ok_type or (typ is float and not math.isfinite(val)) or not check(val):
        raise TargetError(f"{where}: key '{key}' = {val!r}, expected {expected}")
    return val


def _op_overheads(raw: dict[str, Any], where: str) -> dict[str, int]:
    table = _lookup(raw, "vector.op_overhead") or {}
    if not isinstance(table, dict):
        raise TargetError(f"{where}: 'vector.op_overhead' must be a table, got {table!r}")
    out = {}
    for op, cyc in sorted(table.items()):
        if op not in VECTOR_OPS:
            raise TargetError(f"{where}: unknown key 'vector.op_overhead.{op}', expected one "
                              f"of {list(VECTOR_OPS)}")
        if not isinstance(cyc, int) or isinstance(cyc, bool) or not 0 <= cyc <= 10_000:
            raise TargetError(f"{where}: key 'vector.op_overhead.{op}' = {cyc!r}, expected an "
                              "integer in [0, 10000] (cycles)")
        out[op] = cyc
    return out


def target_from_dict(raw: dict[str, Any], where: str = "<target>") -> Target:
    """Validate a parsed TOML document and build the Target (where names the source)."""
    if not isinstance(raw, dict):
        raise TargetError(f"{where}: expected a TOML table, got {type(raw).__name__}")
    _check_keys(raw, where)
    v = {key: _value(raw, key, where) for key in _SCHEMA}
    ovh = _op_overheads(raw, where)
    if v["mac.int16"] is False:
        v["mac.int16_rate"] = _SCHEMA["mac.int16_rate"][1]
    canonical = dict(v, **{"vector.op_overhead": ovh})
    canonical.pop("description")  # documentation only: not part of the machine's identity
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return Target(
        name=v["name"], description=v["description"], clock_hz=v["clock_hz"],
        rows=v["mac.rows"], cols=v["mac.cols"], dataflow=v["mac.dataflow"],
        acc_bits=v["mac.acc_bits"], int16=v["mac.int16"], int16_rate=v["mac.int16_rate"],
        fold_overlap=v["mac.fold_overlap"], lanes=v["vector.lanes"],
        vector_overhead=v["vector.overhead"], op_overhead=ovh,
        sram_bytes=v["sram.bytes"], sram_banks=v["sram.banks"], dram_bytes=v["dram.bytes"],
        dram_bw=v["dram.bytes_per_cycle"], dram_latency=v["dram.latency"],
        zero_block=v["sparsity.zero_block"], two_four=v["sparsity.two_four"], hash=digest,
    )


def presets() -> list[str]:
    """Names of the shipped target presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_target(preset_or_path: str | Path) -> Target:
    """A preset name (`npu`, `npu-lite`, `npu-large`) or the path of a TOML file."""
    text_path = Path(preset_or_path)
    if str(preset_or_path) in presets():
        text_path = PRESET_DIR / f"{preset_or_path}.toml"
    elif text_path.suffix != ".toml" or not text_path.is_file():
        raise TargetError(f"target '{preset_or_path}': not a preset ({', '.join(presets())}) "
                          "and not an existing .toml file")
    try:
        raw = tomllib.loads(text_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TargetError(f"{text_path.name}: not valid TOML: {e}") from e
    return target_from_dict(raw, text_path.name)
