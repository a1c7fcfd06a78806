"""Node counts of the real OCR models before and after onnxsim and onnxslim (issue 3's table).

Run from the repository root: `python -m benchmarks.node_counts [--write]`. Each model is
simplified at the static input shape ocrc compiles it at. onnxsim and onnxslim are optional
(`pip install onnxsim onnxslim`); a missing one or one that fails prints "n/a (reason)".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable

import onnx

from benchmarks.ocr.report import markdown_table, write_section
from ocrc.frontend.zoo import fetch_model

SECTION = "Node counts: onnxsim and onnxslim"
# The static input shapes of issue 2's acceptance list, and of PP-OCRv4 rec.
SHAPES: dict[str, tuple[int, ...]] = {
    "ddddocr-common": (1, 1, 64, 160),
    "ddddocr-det": (1, 3, 416, 416),
    "ppocr-v2-rec": (1, 3, 32, 320),
    "ppocr-v3-det": (1, 3, 320, 320),
    "ppocr-cls": (1, 3, 48, 192),
    "ppocr-v4-rec": (1, 3, 48, 320),  # not in issue 2's list: PP-OCRv4 rec, added later
}


def count_nodes(model: onnx.ModelProto) -> int:
    """Top-level nodes of the main graph, Constant nodes included."""
    return len(model.graph.node)


def _input_name(model: onnx.ModelProto) -> str:
    inits = {t.name for t in model.graph.initializer}
    (name,) = [i.name for i in model.graph.input if i.name not in inits]
    return name


def with_onnxsim(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model, overwrite_input_shapes={_input_name(model): shape})
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return simplified


def with_onnxslim(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    import onnxslim

    spec = f"{_input_name(model)}:{','.join(map(str, shape))}"
    return onnxslim.slim(model, input_shapes=[spec])


def _count_with(tool: Callable[[onnx.ModelProto, tuple[int, ...]], onnx.ModelProto],
                model: onnx.ModelProto, shape: tuple[int, ...]) -> str:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # both tools print progress tables
            return str(count_nodes(tool(copy, shape)))
    except ImportError as exc:
        return f"n/a ({exc.name} not installed)"
    except Exception as exc:  # noqa: BLE001 - a tool failing is a result to report, not a crash
        return f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"


def rows() -> list[list[str]]:
    out = []
    for name, shape in SHAPES.items():
        model = onnx.load(str(fetch_model(name)))
        consts = sum(n.op_type == "Constant" for n in model.graph.node)
        out.append([name, "x".join(map(str, shape)), f"{count_nodes(model)} ({consts} Constant)",
                    _count_with(with_onnxsim, model, shape),
                    _count_with(with_onnxslim, model, shape)])
    return out


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"also write '{SECTION}' section")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    table = markdown_table(["model", "input", "original nodes", "onnxsim", "onnxslim"], rows())
    body = (f"Command: `python -m benchmarks.node_counts --write` "
            f"({time.perf_counter() - t0:.0f} s). onnx {onnx.__version__}, onnxsim "
            f"{_version('onnxsim')}, onnxslim {_version('onnxslim')}; counts are top-level "
            f"graph nodes, Constant nodes included.\n\n{table}")
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
