"""Target presets load, hash stably, round-trip, and bad files are rejected naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocrc.runtime.errors import TargetError
from ocrc.runtime.target import load_target, presets, target_from_dict


def test_presets() -> None:
    assert presets() == ["npu", "npu-large", "npu-lite"]
    npu = load_target("npu")
    assert (npu.rows, npu.cols, npu.sram_bytes, npu.dram_bw) == (32, 32, 1 << 20, 8)
    assert npu.peak_tops == pytest.approx(1.6384)
    assert (load_target("npu-lite").rows, load_target("npu-lite").sram_bytes) == (8, 128 << 10)
    assert load_target("npu-large").dram_bw == 32


def test_hash_stable_and_round_trip() -> None:
    hashes = {load_target(p).hash for p in presets()}
    assert len(hashes) == 3
    for p in presets():
        t = load_target(p)
        assert target_from_dict(t.as_dict()) == t
        assert load_target(p).hash == t.hash


def test_description_does_not_change_the_hash() -> None:
    raw = load_target("npu").as_dict()
    raw["description"] = "another text"
    assert target_from_dict(raw).hash == load_target("npu").hash


@pytest.mark.parametrize("edit,match", [
    (lambda r: r["mac"].update(rows=0), r"'mac.rows' = 0, expected an integer in \[1, 1024\]"),
    (lambda r: r["mac"].update(dataflow="xs"), r"'mac.dataflow' = 'xs', expected one of os"),
    (lambda r: r["sram"].update(bytes="big"), r"'sram.bytes' = 'big'"),
    (lambda r: r["dram"].pop("bytes_per_cycle"), r"missing key 'dram.bytes_per_cycle'"),
    (lambda r: r.update(speed=3), r"unknown key 'speed'"),
    (lambda r: r["mac"].update(colz=3), r"unknown key 'mac.colz'"),
    (lambda r: r["vector"]["op_overhead"].update(conv=3),
     r"unknown key 'vector.op_overhead.conv'"),
    (lambda r: r["sparsity"].update(two_four=1), r"'sparsity.two_four' = 1, expected true"),
])
def test_bad_target_names_the_key(edit, match) -> None:  # type: ignore[no-untyped-def]
    raw = load_target("npu").as_dict()
    edit(raw)
    with pytest.raises(TargetError, match=match):
        target_from_dict(raw, "my.toml")


def test_load_from_file_and_bad_toml(tmp_path: Path) -> None:
    good = tmp_path / "t.toml"
    good.write_text('name = "t"\nclock_hz = 100\n[mac]\nrows = 4\ncols = 4\n[vector]\n'
                    'lanes = 4\n[sram]\nbytes = 65536\n[dram]\nbytes_per_cycle = 2\n')
    t = load_target(good)
    assert (t.name, t.dataflow, t.int16, t.zero_block) == ("t", "os", False, 0)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(TargetError, match="bad.toml: not valid TOML"):
        load_target(bad)
    with pytest.raises(TargetError, match="not a preset"):
        load_target("npu-huge")
