"""`ocrc compile --prune/--low-rank/--prune-masks` and `ocrc analyze` on the demo CRNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from ocrc.compiler.cli import main
from ocrc.compiler.ir.irfile import load_ir
from ocrc.frontend.demo import build_demo_crnn


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("m")
    onnx.save(build_demo_crnn(width=64), d / "demo.onnx")
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(calib / f"{i}.npy", rng.random((1, 1, 32, 64), dtype=np.float32))
    return d / "demo.onnx"


def _zeros(path: Path) -> float:
    g = load_ir(path)
    ws = [n.attrs["value"] for n in g.nodes if n.op.name == "const" and n.attrs["value"].ndim >= 2]
    return float(np.mean(np.concatenate([(w == 0).reshape(-1) for w in ws])))


@pytest.mark.parametrize("opts", [["--prune", "0.5"], ["--prune", "2:4"],
                                  ["--prune", "structured{sparsity=0.25}"],
                                  ["--low-rank", "0.9"],
                                  ["--prune", "sparsity=0.5,ops=lstm+matmul,scope=global"]])
def test_compile_options(model: Path, tmp_path: Path, opts: list[str]) -> None:
    out = tmp_path / "o.ir"
    assert main(["compile", str(model), "-o", str(out), *opts]) == 0
    assert out.exists()
    if opts[1] in ("0.5", "2:4"):
        assert _zeros(out) > 0.4


def test_masks_and_auto(model: Path, tmp_path: Path) -> None:
    m = onnx.load(model)
    w = onnx.numpy_helper.to_array(m.graph.initializer[0])
    np.savez(tmp_path / "m.npz", **{m.graph.initializer[0].name: np.zeros_like(w)})
    assert main(["compile", str(model), "-o", str(tmp_path / "a.ir"), "--prune-masks",
                 str(tmp_path / "m.npz")]) == 0
    calib = model.parent / "calib"
    assert main(["compile", str(model), "-o", str(tmp_path / "b.ir"), "--prune",
                 "auto{budget=50,metric=cosine,samples=2}", "--calib", str(calib)]) == 0
    # with --calib prune-structured replaces removed channels by their mean: other biases
    outs = []
    for spec in ("structured{sparsity=0.25,compensate=none}", "structured{sparsity=0.25}"):
        outs.append(tmp_path / f"s{len(outs)}.ir")
        assert main(["compile", str(model), "-o", str(outs[-1]), "--prune", spec,
                     "--calib", str(calib)]) == 0
    consts = [sorted((a.shape, a.tobytes()) for a in (n.attrs["value"] for n in load_ir(p).nodes
                                                   if n.op.name == "const")) for p in outs]
    assert [s for s, _ in consts[0]] == [s for s, _ in consts[1]]
    assert consts[0] != consts[1]


@pytest.mark.parametrize("opts,msg", [
    (["--prune", "1.5"], "sparsity=1.5 must be in"),
    (["--low-rank", "rank=9999"], "above min\\(m, n\\)"),
    (["--prune", "auto{budget=1}"], "need calibration data"),
    (["--prune", "2:5"], "does not divide|N:M"),
    (["--prune", "structured{sparsity=0.2"], "unbalanced"),
    (["--prune", "structured{sparsity=0.2,compensate=mean}"], "need calibration data"),
    (["--prune", "sparsity=0.5,criterion=activation"], "need calibration data"),
])
def test_compile_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        opts: list[str], msg: str) -> None:
    import re
    code = main(["compile", str(model), "-o", str(tmp_path / "o.ir"), *opts])
    err = capsys.readouterr().err
    if code == 0:  # 2:5 is skipped on every layer by kind (reported), not an error
        assert opts[1] == "2:5"
        return
    assert code == 2 and re.search(msg, err), err


def test_activation_criterion_reads_calib(model: Path, tmp_path: Path) -> None:
    """--prune criterion=activation (Wanda) takes its statistics from --calib without --quant."""
    out = tmp_path / "w.ir"
    assert main(["compile", str(model), "-o", str(out), "--prune",
                 "sparsity=0.5,ops=lstm+matmul,criterion=activation",
                 "--calib", str(model.parent / "calib")]) == 0
    assert _zeros(out) > 0.3


def test_analyze(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    calib = model.parent / "calib"
    assert main(["analyze", str(model), "--calib", str(calib), "--metric", "cosine",
                 "--samples", "2", "--ops", "lstm+matmul", "--json", str(tmp_path / "a.json"),
                 "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "LSTM_0.W" in out and "int16" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["metric"] == "cosine" and data["results"]
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_low_rank_multiple_follows_target_config(model: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """--target-config reaches the passes: ranks round to its MAC-array width (8 on npu-lite,
    32 on npu)."""
    ranks = {}
    for preset in ("npu-lite", "npu"):
        caplog.clear()
        with caplog.at_level("INFO", logger="ocrc.compiler.passes.lowrank"):
            assert main(["compile", str(model), "-o", str(tmp_path / f"{preset}.ir"),
                         "--low-rank", "rank=20,ops=lstm", "--target-config", preset]) == 0
        ranks[preset] = [r.getMessage().split("ranks ")[1].split("]")[0] + "]"
                         for r in caplog.records if "LSTM_0.W" in r.getMessage()]
    assert ranks == {"npu-lite": ["[24, 24]"], "npu": ["[32, 32]"]}
