"""The pass registry, pipeline text, instruments, and the command-line contract of
`ocrc opt` and the pipeline options (exit status 2 with a message naming the valid choices)."""

from __future__ import annotations

import ast
import re
import dataclasses
import io
from pathlib import Path

import numpy as np
import onnx
import pytest

import ocrc.compiler.passes as passes_pkg
from ocrc.compiler.cli import main as ocrc_main
from ocrc.compiler.errors import PassError
from ocrc.compiler.ir import Builder, DType, Graph, TensorType, graph_text, parse_graph
from ocrc.compiler.ir.irfile import load_ir, save_ir
from ocrc.compiler.passes import (
    PASSES,
    DumpIR,
    PassContext,
    PrintIR,
    TimePasses,
    parse_pipeline,
    run_passes,
)
from ocrc.compiler.pipeline import PIPELINES, build_pipeline

PASS_DIR = Path(passes_pkg.__file__).parent
FILECHECK_DIR = Path(__file__).parents[1] / "filecheck"
NOT_PASSES = {"__init__.py", "base.py"}


def pass_modules() -> list[Path]:
    return sorted(p for p in PASS_DIR.glob("*.py") if p.name not in NOT_PASSES)


@pytest.mark.parametrize("path", pass_modules(), ids=lambda p: p.stem)
def test_each_module_registers_exactly_one_pass(path: Path) -> None:
    tree = ast.parse(path.read_text())
    registered = [n.name for n in tree.body if isinstance(n, ast.ClassDef) and any(
        isinstance(d, ast.Name) and d.id == "register" for d in n.decorator_list)]
    assert len(registered) == 1, f"{path.name} registers {registered}"
    name = path.stem.replace("_", "-")
    cls = PASSES[name]
    assert cls.__name__ == registered[0] and cls.__module__.endswith(path.stem)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore
    doc = (cls.__doc__ or "").strip()  # what, when it bails out, pre/post-conditions (R3)
    assert not doc.startswith(cls.__name__ + "(") and doc.count("\n") >= 3, \
        f"{name}: the pass needs a docstring (what it does, bail-outs, guarantees)"
    assert (FILECHECK_DIR / f"{name}.ir").exists(), f"no tests/filecheck/{name}.ir"


def test_every_registered_pass_has_a_module() -> None:
    assert sorted(PASSES) == sorted(p.stem.replace("_", "-") for p in pass_modules())


def test_pipeline_text_with_options_and_named_pipelines() -> None:
    ps = parse_pipeline(" canonicalize , fuse-act{into_epilogue=false} ,fold-bn{forward=0,"
                        "to-affine=true}")
    assert [p.spec() for p in ps] == ["canonicalize", "fuse-act{into_epilogue=false}",
                                      "fold-bn{forward=false}"]
    assert parse_pipeline("") == []
    assert [p.name for p in build_pipeline("none,float")] == [
        p.name for p in build_pipeline(PIPELINES["float"])]
    assert build_pipeline("canonicalize{fold_limit=0x10}")[0].fold_limit == 16  # type: ignore


@pytest.mark.parametrize("text, message", [
    ("fuse-actt", r"unknown pass 'fuse-actt'; valid passes: " + re.escape(", ".join(
        sorted(PASSES))) + "; named pipelines: " + ", ".join(sorted(PIPELINES))),
    ("fuse-act{bogus=1}", r"pass 'fuse-act' has no option 'bogus'; valid options: into_epilogue"),
    ("fold-pad{x=1}", r"pass 'fold-pad' has no option 'x'; valid options: none"),
    ("fuse-act{into_epilogue=maybe}", r"option 'into_epilogue' needs a bool, got 'maybe'"),
    ("canonicalize{fold_limit=big}", r"option 'fold_limit' needs a int, got 'big'"),
    ("canonicalize,,fold-bn", r"column 14: expected a pass name, found ','"),
    ("fold-bn{forward=1", r"expected ',' or '}' after an option, found end of text"),
    ("fold-bn{forward=1,forward=0}", r"option 'forward' of 'fold-bn' given twice"),
    ("canonicalize fold-bn", r"expected ',' between passes, found 'f'"),
    ("float{x=1}", r"named pipeline 'float' takes no options"),
])
def test_bad_pipelines_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(PassError, match=message):
        build_pipeline(text)


def tiny() -> Graph:
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType(DType.F32, (1, 2, 5, 5)))
    w = b.const(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    y = b.op("conv", x, w, pads=(1, 1, 1, 1))
    y = b.op("batch_norm", y, *(b.const(rng.uniform(0.5, 1.5, 4)) for _ in range(4)))
    b.output(b.op("mul", y, b.op("sigmoid", y), out_name="y"))
    return b.graph


def test_instruments_print_dump_and_time(tmp_path: Path) -> None:
    stream = io.StringIO()
    timer = TimePasses()
    ctx = PassContext(instruments=[PrintIR(stream, after_all=True, before=("fuse-act",)),
                                   DumpIR(tmp_path / "dump"), timer])
    out = run_passes(tiny(), build_pipeline("float"), ctx)
    text = stream.getvalue()
    dumps = text.split("// -----// IR Dump ")[1:]
    assert len(dumps) == len(build_pipeline("float")) + 2  # after each, before both fuse-acts
    assert dumps[0].startswith("After canonicalize (1)")
    files = sorted((tmp_path / "dump").glob("*.ir"))
    assert [f.name for f in files][::8] == ["00-input.ir", "08-fold-bn.ir"]
    assert files[-1].name == "09-canonicalize.ir"
    after = [d.split("\n", 1)[1] for d in dumps if d.startswith("After")]
    for k, f in enumerate(files):
        load_ir(f)  # every dump parses back with its .npz
        if k:  # the printed text is the dump's text, so it parses with the dump's constants
            assert after[k - 1] == f.read_text()
            blobs = dict(np.load(f"{f}.npz")) if Path(f"{f}.npz").exists() else {}
            parse_graph(after[k - 1], blobs)
    assert graph_text(load_ir(tmp_path / "dump" / files[-1])) == graph_text(out)
    table = timer.table()
    assert "Pass execution timing report" in table and table.count("fuse-act") == 2


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = ocrc_main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_ocrc_opt_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_ir(tiny(), tmp_path / "in.ir")
    rc, out, err = run_cli(["opt", str(tmp_path / "in.ir"), "-p", "float", "-o",
                            str(tmp_path / "out.ir"), "--time-passes",
                            "--print-ir-after=fuse-act"], capsys)
    assert rc == 0, err
    g = load_ir(tmp_path / "out.ir")
    assert [n.op.name for n in g.nodes if n.op.name != "const"] == ["conv"]
    assert "Pass execution timing report" in err and "IR Dump After fuse-act" in err
    rc, out, err = run_cli(["opt", str(tmp_path / "out.ir"), "-p", "canonicalize"], capsys)
    assert rc == 0 and out.startswith("func @main(")


@pytest.mark.parametrize("args, message", [
    (["-p", "fold-bnn"], "unknown pass 'fold-bnn'; valid passes: bias-correct, canonicalize, "),
    (["-p", "fold-bn{x=1}"], "has no option 'x'; valid options: forward, to_affine"),
    (["--print-ir-after=fuse"], "--print-ir-after=fuse: unknown pass 'fuse'; valid passes:"),
])
def test_cli_bad_pipeline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    save_ir(tiny(), tmp_path / "in.ir")
    rc, _, err = run_cli(["opt", str(tmp_path / "in.ir")] + args, capsys)
    assert rc == 2 and message in err and "Traceback" not in err


def test_cli_malformed_ir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ir"
    bad.write_text("func @main(%x: f32[2]) -> f32[2] {\n  %y = relu(%x) : f32[3]\n"
                   "  return %y\n}\n")
    rc, _, err = run_cli(["opt", str(bad)], capsys)
    assert rc == 2 and "bad.ir:2:3" in err and "declared type f32[3]" in err
    bad.write_text("func @main(%x: f32[2]) -> f32[2] {\n  %y = frobnicate(%x) : f32[2]\n"
                   "  return %y\n}\n")
    rc, _, err = run_cli(["opt", str(bad)], capsys)
    assert rc == 2 and "unknown op 'frobnicate'" in err
    rc, _, err = run_cli(["opt", str(tmp_path / "missing.ir")], capsys)
    assert rc == 2 and "missing.ir: no such file" in err


def test_ocrc_compile_with_pipeline_options(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from ocrc.frontend.demo import build_demo_crnn

    onnx.save(build_demo_crnn(seed=1, width=32), str(tmp_path / "demo.onnx"))
    rc, _, err = run_cli(["compile", str(tmp_path / "demo.onnx"), "-o", str(tmp_path / "d.ir"),
                          "--passes", "canonicalize,fold-bn,fuse-act", "--print-ir-after-all",
                          "--print-ir-before=fold-bn", "--dump-ir", str(tmp_path / "dump"),
                          "--time-passes", "--verify-each"], capsys)
    assert rc == 0, err
    assert err.count("// -----// IR Dump After") == 3 and "IR Dump Before fold-bn" in err
    assert "Pass execution timing report" in err
    names = sorted(p.name for p in (tmp_path / "dump").glob("*.ir"))
    assert names == ["00-input.ir", "01-canonicalize.ir", "02-fold-bn.ir", "03-fuse-act.ir"]
    final = load_ir(tmp_path / "d.ir")
    assert graph_text(final) == graph_text(load_ir(tmp_path / "dump" / names[-1]))
    assert "batch_norm" not in graph_text(final)
