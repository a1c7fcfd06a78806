"""The `.npu` program file: instructions, the DRAM image of the constants, the DRAM memory map,
named I/O tensors (shape, dtype, scale, zero point, DRAM address and strides) and a per-instruction
layer table, behind a versioned header with the target's name and hash and a sha256 trailer.

Layout (little-endian):
    magic b"OCRCNPU\\0" | u32 version | u32 n_sections | n x (4-byte tag, u64 offset, u64 size)
    | sections | sha256 of everything before it (32 bytes)
Sections: META (JSON), CODE (uint64[n, isa.WORDS]), CNST (bytes of the const regions, in map
order), LAYR (uint32 layer id per instruction). `load_program` rejects corrupt, truncated or
foreign files with a ProgramError naming the field; `ProgramBuilder` assembles programs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ocrc.runtime import isa
from ocrc.runtime.errors import ProgramError, TargetError
from ocrc.runtime.fileio import atomic_write_bytes
from ocrc.runtime.target import Target, target_from_dict

MAGIC = b"OCRCNPU\x00"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<8sII")
_SECT = struct.Struct("<4sQQ")
_TAGS = (b"META", b"CODE", b"CNST", b"LAYR")
DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32}
REGION_KINDS = ("const", "input", "output", "scratch")


@dataclass(frozen=True)
class TensorDesc:
    """A program input or output in DRAM. strides are bytes per logical dim, so any DRAM layout
    (NCHW, NHWC, padded) can hold the logical tensor; scale/zero_point convert to float."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int
    addr: int
    strides: tuple[int, ...]

    @property
    def nbytes_span(self) -> int:
        """Bytes from addr to one past the last element."""
        if any(s == 0 for s in self.shape):
            return 0
        item = np.dtype(DTYPES[self.dtype]).itemsize
        return sum((n - 1) * s for n, s in zip(self.shape, self.strides)) + item


@dataclass(frozen=True)
class Region:
    """A named DRAM range of the memory map; const regions carry their initial bytes."""

    name: str
    kind: str
    addr: int
    size: int


@dataclass
class Program:
    """An NPU program. code: uint64[n, isa.WORDS]; const_data: the bytes of the const regions
    concatenated in map order; layer_ids: uint32 per instruction indexing `layers`."""

    target: Target
    code: np.ndarray
    dram_size: int
    regions: list[Region]
    const_data: bytes
    inputs: list[TensorDesc]
    outputs: list[TensorDesc]
    layers: list[str]
    layer_ids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_insns(self) -> int:
        return int(self.code.shape[0])

    def to_bytes(self) -> bytes:
        """The file image (deterministic: same program, same bytes)."""
        meta = {
            "target": self.target.as_dict(), "target_hash": self.target.hash,
            "dram_size": self.dram_size,
            "regions": [r.__dict__ for r in self.regions],
            "inputs": [_desc_json(d) for d in self.inputs],
            "outputs": [_desc_json(d) for d in self.outputs],
            "layers": list(self.layers), "meta": self.meta,
        }
        sections = {
            b"META": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
            b"CODE": np.ascontiguousarray(self.code, "<u8").tobytes(),
            b"CNST": bytes(self.const_data),
            b"LAYR": np.ascontiguousarray(self.layer_ids, "<u4").tobytes(),
        }
        head = _HEAD.pack(MAGIC, FORMAT_VERSION, len(sections))
        off = len(head) + _SECT.size * len(sections)
        table, body = b"", b""
        for tag, data in sections.items():
            table += _SECT.pack(tag, off, len(data))
            off += len(data)
            body += data
        blob = head + table + body
        return blob + hashlib.sha256(blob).digest()

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.to_bytes())


def _desc_json(d: TensorDesc) -> dict[str, Any]:
    return {"name": d.name, "shape": list(d.shape), "dtype": d.dtype, "scale": d.scale,
            "zero_point": d.zero_point, "addr": d.addr, "strides": list(d.strides)}


# ------------------------------------------------------------------ loading
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ProgramError(msg)


def _int(obj: dict[str, Any], key: str, where: str, lo: int = 0, hi: int = 1 << 62) -> int:
    v = obj.get(key)
    _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
          f"{where}: field '{key}' = {v!r}, expected an integer in [{lo}, {hi}]")
    return int(v)


def _desc(obj: Any, where: str) -> TensorDesc:
    _need(isinstance(obj, dict), f"{where}: expected an object, got {obj!r}")
    name = obj.get("name")
    _need(isinstance(name, str) and name != "", f"{where}: field 'name' = {name!r}")
    shape, strides = obj.get("shape"), obj.get("strides")
    for key, val in (("shape", shape), ("strides", strides)):
        _need(isinstance(val, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                            and 0 <= x < 1 << 32 for x in val),
              f"{where} '{name}': field '{key}' = {val!r}, expected a list of integers >= 0")
    _need(len(shape) == len(strides), f"{where} '{name}': shape and strides differ in length")
    _need(obj.get("dtype") in DTYPES, f"{where} '{name}': field 'dtype' = "
          f"{obj.get('dtype')!r}, expected one of {sorted(DTYPES)}")
    scale = obj.get("scale")
    _need(isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0
          and np.isfinite(scale), f"{where} '{name}': field 'scale' = {scale!r}, expected > 0")
    return TensorDesc(name, tuple(shape), obj["dtype"], float(scale),
                      _int(obj, "zero_point", f"{where} '{name}'", -(1 << 31), (1 << 31) - 1),
                      _int(obj, "addr", f"{where} '{name}'", 0, 1 << 32), tuple(strides))


def program_from_bytes(data: bytes, where: str = "<program>") -> Program:
    """Parse and validate a file image (structure only; verify.verify checks the code)."""
    _need(len(data) >= _HEAD.size + 32, f"{where}: truncated ({len(data)} bytes)")
    magic, version, nsec = _HEAD.unpack_from(data, 0)
    _need(magic == MAGIC, f"{where}: not an ocrc NPU program (magic {magic!r}, expected "
          f"{MAGIC!r})")
    _need(version == FORMAT_VERSION, f"{where}: format version {version}, this ocrc reads "
          f"version {FORMAT_VERSION}")
    body, digest = data[:-32], data[-32:]
    _need(hashlib.sha256(body).digest() == digest,
          f"{where}: checksum mismatch (the file is corrupt or truncated)")
    _need(nsec == len(_TAGS), f"{where}: header field 'n_sections' = {nsec}, expected "
          f"{len(_TAGS)}")
    end_table = _HEAD.size + _SECT.size * nsec
    _need(end_table <= len(body), f"{where}: truncated section table")
    sec: dict[bytes, bytes] = {}
    pos = end_table
    for i in range(nsec):
        tag, off, size = _SECT.unpack_from(body, _HEAD.size + _SECT.size * i)
        _need(tag in _TAGS and tag not in sec, f"{where}: section {i} has tag {tag!r}, "
              f"expected each of {[t.decode() for t in _TAGS]} once")
        _need(off == pos and off + size <= len(body), f"{where}: section {tag.decode()} at "
              f"offset {off} size {size} is outside the file or not contiguous")
        sec[tag] = body[off:off + size]
        pos = off + size
    _need(pos == len(body), f"{where}: {len(body) - pos} stray bytes after the sections")
    try:
        meta = json.loads(sec[b"META"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProgramError(f"{where}: section META is not valid JSON: {e}") from None
    _need(isinstance(meta, dict), f"{where}: section META must be a JSON object")
    try:
        target = target_from_dict(meta.get("target"), f"{where}: META.target")
    except TargetError as e:
        raise ProgramError(str(e)) from None
    _need(meta.get("target_hash") == target.hash, f"{where}: field 'target_hash' = "
          f"{meta.get('target_hash')!r} does not match the embedded target ({target.hash})")
    code_b = sec[b"CODE"]
    row = 8 * isa.WORDS
    _need(len(code_b) % row == 0 and len(code_b) > 0,
          f"{where}: section CODE has {len(code_b)} bytes, expected a positive multiple of {row}")
    code = np.frombuffer(code_b, "<u8").astype(np.uint64).reshape(-1, isa.WORDS)
    layr = sec[b"LAYR"]
    _need(len(layr) == 4 * code.shape[0], f"{where}: section LAYR has {len(layr)} bytes, "
          f"expected 4 per instruction ({4 * code.shape[0]})")
    layer_ids = np.frombuffer(layr, "<u4").astype(np.uint32)
    layers = meta.get("layers")
    _need(isinstance(layers, list) and all(isinstance(s, str) for s in layers),
          f"{where}: field 'layers' must be a list of strings")
    _need(layer_ids.size == 0 or int(layer_ids.max()) < max(len(layers), 1),
          f"{where}: section LAYR names layer {int(layer_ids.max())}, only {len(layers)} exist")
    dram = _int(meta, "dram_size", where, 1, target.dram_bytes)
    regions = _regions(meta.get("regions"), where, dram, len(sec[b"CNST"]))
    user = meta.get("meta", {})
    _need(isinstance(user, dict), f"{where}: field 'meta' must be an object")
    ios = {}
    for key in ("inputs", "outputs"):
        lst = meta.get(key)
        _need(isinstance(lst, list), f"{where}: field '{key}' must be a list")
        ios[key] = [_desc(d, f"{where}: {key}[{i}]") for i, d in enumerate(lst)]
        names = [d.name for d in ios[key]]
        _need(len(set(names)) == len(names), f"{where}: duplicate names in '{key}': {names}")
        for d in ios[key]:
            _need(d.addr + d.nbytes_span <= dram, f"{where}: {key} '{d.name}' spans DRAM "
                  f"[{d.addr}, {d.addr + d.nbytes_span}) beyond dram_size {dram}")
    return Program(target, code, dram, regions, sec[b"CNST"], ios["inputs"], ios["outputs"],
                   layers, layer_ids, user)


def _regions(lst: Any, where: str, dram: int, const_len: int) -> list[Region]:
    _need(isinstance(lst, list), f"{where}: field 'regions' must be a list")
    out = []
    for i, r in enumerate(lst):
        w = f"{where}: regions[{i}]"
        _need(isinstance(r, dict) and isinstance(r.get("name"), str), f"{w}: bad region {r!r}")
        _need(r.get("kind") in REGION_KINDS, f"{w}: field 'kind' = {r.get('kind')!r}, "
              f"expected one of {list(REGION_KINDS)}")
        addr, size = _int(r, "addr", w, 0, dram), _int(r, "size", w, 0, dram)
        _need(addr + size <= dram, f"{w} '{r['name']}': [{addr}, {addr + size}) is beyond "
              f"dram_size {dram}")
        out.append(Region(r["name"], r["kind"], addr, size))
    spans = sorted((r.addr, r.addr + r.size, r.name) for r in out if r.size)
    for (a0, a1, n0), (b0, b1, n1) in itertools.pairwise(spans):
        _need(b0 >= a1, f"{where}: regions '{n0}' and '{n1}' overlap")
    total = sum(r.size for r in out if r.kind == "const")
    _need(total == const_len, f"{where}: const regions hold {total} bytes, section CNST has "
          f"{const_len}")
    return out


def load_program(path: str | Path) -> Program:
    """Read and structurally validate a .npu file (see verify.verify for the code)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ProgramError(f"{p}: cannot read: {e.strerror}") from None
    return program_from_bytes(data, p.name)
