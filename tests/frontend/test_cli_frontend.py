"""`ocrc inspect` and `ocrc compile`, in process: outputs, and every bad input of the spec
(exit status 2 and a one-line message naming the file, node, op or option)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from ocrc.compiler.cli import main
from ocrc.compiler.ir import run
from ocrc.compiler.ir.irfile import load_ir
from ocrc.frontend import import_onnx
from ocrc.frontend.demo import build_demo_crnn


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    onnx.save(build_demo_crnn(seed=0), path)
    return path


def ocrc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_table_and_json(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = ocrc(capsys, "inspect", str(demo), "--input-shape", "image=1,1,32,64")
    assert code == 0, err
    assert "LSTM_0" in out and "lstm" in out and "total:" in out and "MACs by op:" in out
    code, out, _ = ocrc(capsys, "inspect", str(demo), "--input-shape", "image=1,1,32,64",
                        "--json")
    s = json.loads(out)
    assert s["inputs"] == [{"name": "image", "type": "f32[1,1,32,64]"}]
    lstm = next(r for r in s["layers"] if r["op"] == "lstm")
    # T = 16 steps, 2 directions, gates 4*32 over input 48*4=192 plus hidden 32
    assert lstm["macs"] == 2 * 16 * 4 * 32 * (192 + 32)
    assert s["totals"]["macs"] == sum(r["macs"] for r in s["layers"])
    assert s["totals"]["params"] == sum(r["params"] for r in s["layers"])


def test_compile_writes_ir_and_npz_that_run_like_the_import(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "demo.ir"
    code, _, err = ocrc(capsys, "compile", str(demo), "-t", "ir", "-o", str(out),
                        "--input-shape", "image=1,1,32,64")
    assert code == 0, err
    assert out.exists() and Path(f"{out}.npz").exists()
    x = {"image": np.random.default_rng(0).standard_normal((1, 1, 32, 64)).astype(np.float32)}
    ref = list(run(import_onnx(demo, {"image": [1, 1, 32, 64]}), x).values())[0]
    got = list(run(load_ir(out), x).values())[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _unsupported_model(path: Path) -> Path:
    nodes = [helper.make_node("Foo", ["x"], ["a"], name="foo_1"),
             helper.make_node("Erf", ["a"], ["y"], name="erf_2")]
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", 1, [2])],
                              [helper.make_tensor_value_info("y", 1, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


BAD: list[tuple[Callable[[Path, Path], list[str]], str]] = [
    (lambda d, t: ["compile", str(_unsupported_model(t / "u.onnx")), "-o", str(t / "u.ir")],
     r"u.onnx: 2 unsupported ONNX node\(s\): 'foo_1' Foo \(domain ai.onnx, opset 13\); "
     r"'erf_2' Erf \(domain ai.onnx, opset 13\)"),
    (lambda d, t: ["inspect", str(t / "junk.onnx")], r"junk.onnx: not an ONNX model or "
                                                     r"truncated"),
    (lambda d, t: ["inspect", str(t / "cut.onnx")], r"cut.onnx: not an ONNX model or truncated"),
    (lambda d, t: ["inspect", str(t / "nothere.onnx")], r"nothere.onnx: no such file"),
    (lambda d, t: ["inspect", str(d)], r"input 'image' dim 3 is symbolic \('width'\); bind it "
                                       r"with --input-shape image=1,1,32,N"),
    (lambda d, t: ["inspect", str(d), "--input-shape", "image=1,3,32,64"],
     r"--input-shape image=1,3,32,64: dim 1 is 3, but the model fixes it to 1 "
     r"\(image \[1, 1, 32, width\]\)"),
    (lambda d, t: ["inspect", str(d), "--input-shape", "image=1,1,32"],
     r"has 3 dims, the model expects 4: image \[1, 1, 32, width\]"),
    (lambda d, t: ["inspect", str(d), "--input-shape", "img=1,1,32,64"],
     r"--input-shape names 'img', which is not an input of the model; its inputs are: "
     r"image \[1, 1, 32, width\]"),
    (lambda d, t: ["inspect", str(d), "--input-shape", "image=1,x"],
     r"--input-shape 'image=1,x': expected NAME=D0,D1,... with integer dims"),
    (lambda d, t: ["compile", str(d), "-t", "npu", "--input-shape", "image=1,1,32,64"],
     r"-t npu quantises the model: pass calibration inputs with --calib DIR\|FILE.npz"),
    (lambda d, t: ["compile", str(d), "-t", "onnx", "--input-shape", "image=1,1,32,64",
                   "--quant", "int8"],
     r"--quant int8 needs calibration data: --calib DIR\|FILE.npz"),
    (lambda d, t: ["compile", str(d), "-t", "tpu"], r"--target 'tpu': unknown target; expected "
                                                    r"one of ir, npu, onnx"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_exits_2_with_one_line(
        argv: Callable[[Path, Path], list[str]], message: str, demo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.onnx").write_text("not a model\n")
    (tmp_path / "cut.onnx").write_bytes(demo.read_bytes()[:100])
    code, out, err = ocrc(capsys, *argv(demo, tmp_path))
    assert code == 2
    assert err.startswith("ocrc: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not list(tmp_path.glob("*.ir")), "a failed compile must leave no output file"
