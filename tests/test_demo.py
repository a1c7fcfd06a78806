"""`ocrc demo` on the bundled model: compiles for the NPU, runs in the VM, reads the images."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrc.compiler.cli import main


def test_demo_reads_the_bundled_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    right = int(out.split("recognised ")[1].split("/")[0])
    assert right >= 5, out  # int8 may lose at most one of the six strings
    assert "x smaller" in out and "MAC utilisation" in out
    assert (tmp_path / "demo" / "crnn_sparse78.npu").stat().st_size > 0
    dumps = sorted((tmp_path / "demo" / "ir").glob("*.ir"))
    assert dumps and dumps[-1].name.endswith("npu-lower.ir")


def test_demo_unknown_model_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--model", "nope"]) == 2
    assert "bundled model 'nope' not found; bundled: crnn_dense" in capsys.readouterr().err
