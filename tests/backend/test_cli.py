"""`ocrc compile -t npu`, `ocrc run/disasm/bench` on .npu files, end to end in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from ocrc.compiler.cli import main
from ocrc.frontend.demo import build_demo_crnn
from ocrc.runtime import isa
from ocrc.runtime.program import load_program


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("npu_cli")
    onnx.save(build_demo_crnn(width=32), d / "demo.onnx")
    rng = np.random.default_rng(0)
    np.savez(d / "calib.npz", **{f"s{i}": rng.random((1, 1, 32, 32)).astype(np.float32)
                                 for i in range(3)})
    np.save(d / "x.npy", rng.random((1, 1, 32, 32)).astype(np.float32))
    prog = d / "demo.npu"
    assert main(["compile", str(d / "demo.onnx"), "-t", "npu", "--calib", str(d / "calib.npz"),
                 "-o", str(prog), "--target-config", "npu-lite", "--dump-ir",
                 str(d / "dump")]) == 0
    return {"dir": d, "prog": prog, "x": d / "x.npy"}


def test_compile_writes_program_and_lowered_ir(demo: dict[str, Path]) -> None:
    prog = load_program(demo["prog"])
    assert prog.target.name == "npu-lite"
    lowered = sorted((demo["dir"] / "dump").glob("*-npu-lower.ir"))
    assert lowered and "npu.lstm" in lowered[0].read_text()


def test_run_npu(demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = demo["dir"] / "out.npz"
    assert main(["run", str(demo["prog"]), "--input", f"image={demo['x']}", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "logits: float32[8, 1, 37]" in text and "cycles" in text and "utilisation" in text
    with np.load(out) as z:
        assert z["logits"].shape == (8, 1, 37)


def test_run_npu_missing_input(demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(demo["prog"])]) == 2
    assert "missing --input for ['image']" in capsys.readouterr().err


def test_disasm(demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["disasm", str(demo["prog"]), "--stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = lines[0].split(None, 2)
    assert first[0] == "0" and first[1] in ("load", "compute", "store")
    body = first[2].split("  ; ")
    assert isa.disasm(isa.assemble(body[0])) == body[0]  # assembler reads it back
    assert "[npu." in body[1]  # the IR layer it came from
    assert any(line.startswith("per opcode:") for line in lines)
    assert any("MATMUL" in line for line in lines)


def test_bench_outputs(demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = demo["dir"]
    assert main(["bench", str(demo["prog"]), "--json", "--repeat", "1", "--csv", str(d / "l.csv"),
                 "--trace", str(d / "t.json"), "--plot", str(d / "p.png")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["stats"]["total_cycles"] > 0 and rep["wall"]["repeat"] == 1
    assert 0.8 < rep["wall"]["estimate_ratio"] < 1.2
    assert (d / "l.csv").read_text().startswith("name,cycles")
    assert json.loads((d / "t.json").read_text())["traceEvents"]
    assert (d / "p.png").stat().st_size > 0
    assert main(["bench", str(demo["prog"]), "--repeat", "0"]) == 0
    assert "VM wall time" in capsys.readouterr().out


def test_compile_errors(demo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model = str(demo["dir"] / "demo.onnx")
    assert main(["compile", model, "-t", "npu"]) == 2
    assert "--calib" in capsys.readouterr().err
    bad = demo["dir"] / "bad.toml"
    bad.write_text('name = "x"\nclock_hz = 1\n[mac]\nrows = 0\n')
    assert main(["compile", model, "-t", "npu", "--calib", str(demo["dir"] / "calib.npz"),
                 "--target-config", str(bad)]) == 2
    assert "mac.rows" in capsys.readouterr().err


def test_compile_with_equalisation(tmp_path: Path) -> None:
    """--quant-equalize (with --quant-method mse) compiles and runs; equalisation rescales
    conv -> relu -> conv, so the program differs from the plain mse one."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * [[[[0.05]]]] *
                                  np.arange(1, 9).reshape(8, 1, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "eq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **{f"s{i}": rng.random((1, 3, 8, 8)).astype(np.float32)
                                        for i in range(3)})
    np.save(tmp_path / "x.npy", rng.random((1, 3, 8, 8)).astype(np.float32))
    progs = []
    for i, eq in enumerate(([], ["--quant-equalize"])):
        progs.append(tmp_path / f"mse{i}.npu")
        assert main(["compile", str(tmp_path / "m.onnx"), "-t", "npu", "--calib",
                     str(tmp_path / "calib.npz"), "--quant-method", "mse", *eq, "-o",
                     str(progs[-1]), "--target-config", "npu-lite"]) == 0
    assert progs[0].read_bytes() != progs[1].read_bytes()
    assert main(["run", str(progs[1]), "--input", f"x={tmp_path / 'x.npy'}"]) == 0
