"""`ocrc compile --share-weights SPEC` on the demo CRNN: share-weights runs after quantize, the
NPU program stores every weight block as 4-bit codebook indices (smaller than without sharing)
and runs bit-exact on the VM against the golden interpreter of the shared int8 graph; bad uses
are one-line errors with exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from ocrc.compiler.backend.host import run_program
from ocrc.compiler.cli import main
from ocrc.compiler.ir.interp import run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.frontend.demo import build_demo_crnn
from ocrc.runtime.program import load_program


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("share")
    onnx.save(build_demo_crnn(width=32), d / "demo.onnx")
    (d / "calib").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(d / "calib" / f"{i}.npy", rng.random((1, 1, 32, 32), dtype=np.float32))
    base = ["compile", str(d / "demo.onnx"), "-t", "npu", "--calib", str(d / "calib")]
    assert main([*base, "-o", str(d / "plain.npu")]) == 0
    assert main([*base, "-o", str(d / "shared.npu"), "--share-weights", "centroids=16",
                 "--dump-ir", str(d / "dump")]) == 0
    return {"dir": d, "base": base}  # type: ignore[dict-item]


def test_shared_program_is_smaller_and_uses_codebooks(
        demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = demo["dir"]
    assert (d / "shared.npu").stat().st_size < 0.8 * (d / "plain.npu").stat().st_size
    capsys.readouterr()
    assert main(["disasm", str(d / "shared.npu")]) == 0
    loads = [x for x in capsys.readouterr().out.splitlines() if " LOADW " in x]
    assert loads and all("cb=k16" in x for x in loads)


def test_shared_program_is_bit_exact(demo: dict[str, Path]) -> None:
    d = demo["dir"]
    dumps = sorted((d / "dump").glob("*.ir"))
    assert [p.name.split("-", 1)[1] for p in dumps[-3:]] == \
        ["quantize.ir", "share-weights.ir", "npu-lower.ir"]
    qg = load_ir(dumps[-2])  # the quantised + shared graph the backend compiled
    ws = [n.attrs["value"] for n in qg.nodes if n.op.name == "const"
          and n.attrs["value"].dtype == np.int8 and n.attrs["value"].ndim >= 2]
    assert ws and max(len(np.unique(w)) for w in ws) <= 16
    rng = np.random.default_rng(5)
    for _ in range(2):
        x = {"image": rng.random((1, 1, 32, 32), dtype=np.float32)}
        (want,) = run(qg, x).values()
        raw, _ = run_program(load_program(d / "shared.npu"), x)
        (got,) = raw.values()
        np.testing.assert_array_equal(got, want)


def test_opt_on_a_quantised_ir(demo: dict[str, Path], tmp_path: Path) -> None:
    """`ocrc opt` accepts --share-weights on an already quantised .ir (same result)."""
    dumps = sorted((demo["dir"] / "dump").glob("*.ir"))
    out = tmp_path / "s.ir"
    assert main(["opt", str(dumps[-3]), "--share-weights", "16", "-o", str(out)]) == 0
    consts = [sorted(a.tobytes() for a in (n.attrs["value"] for n in load_ir(p).nodes
                                           if n.op.name == "const")) for p in (out, dumps[-2])]
    assert consts[0] == consts[1]


@pytest.mark.parametrize("opts,msg", [
    (["-t", "ir", "--share-weights", "centroids=16"], "--share-weights needs a quantised graph"),
    (["-t", "npu", "--share-weights", "centroids=7"], "centroids=7 must be 16 or 256"),
    (["-t", "npu", "--share-weights", "many"], "expected CENTROIDS"),
    (["-t", "npu", "--share-weights", "centroids=16{"], "expected CENTROIDS"),
    (["-t", "npu", "--share-weights", "levels=16"], "levels"),
    (["-t", "onnx", "--quant", "int8", "--share-weights", "16"], "-t onnx cannot hold"),
])
def test_errors(demo: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                opts: list[str], msg: str) -> None:
    d = demo["dir"]
    capsys.readouterr()
    code = main(["compile", str(d / "demo.onnx"), "--calib", str(d / "calib"),
                 "-o", str(tmp_path / "o"), *opts])
    err = capsys.readouterr().err.strip()
    assert code == 2 and msg in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()
