"""Whole models: the reference interpreter against onnxruntime (max |ours - ort| <= 1e-4 *
max |ort|) on the six real OCR models and onnx's nine light models (also against the outputs
they ship), the text round trip of every imported graph, and `ocrc inspect`'s counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ocrc.compiler.cli import main
from ocrc.compiler.ir import Graph, parse_graph, print_graph, run
from ocrc.compiler.ir.printer import sanitize
from ocrc.frontend import import_onnx
from ocrc.frontend.zoo import LIGHT_MODELS, light_model_case, light_model_tolerance

REL_ERR = 1e-4  # of max |onnxruntime|

REAL_CASES = [
    ("ddddocr-common", "input1", (1, 1, 64, 160)),
    ("ddddocr-common", "input1", (1, 1, 64, 200)),
    ("ddddocr-det", "images", (1, 3, 416, 416)),
    ("ppocr-v2-rec", "x", (1, 3, 32, 320)),
    ("ppocr-v3-det", "x", (1, 3, 320, 320)),
    ("ppocr-cls", "x", (1, 3, 48, 192)),
    ("ppocr-v4-rec", "x", (1, 3, 48, 320)),
]


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ddddocr's declared output shape is wrong; ORT warns about it
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_round_trip(g: Graph, feeds: dict[str, np.ndarray],
                     outputs: list[np.ndarray]) -> None:
    """print(parse(print(g))) == print(g) byte for byte, and the parsed graph computes the same."""
    text, blobs = print_graph(g)
    g2 = parse_graph(text, blobs)
    assert print_graph(g2)[0] == text
    again = run(g2, feeds)
    for v, a in zip(g2.outputs, outputs):
        np.testing.assert_array_equal(again[v.name], a)


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.models
@pytest.mark.parametrize("name,input_name,shape", REAL_CASES,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, _, s in REAL_CASES])
def test_real_model_matches_onnxruntime_and_round_trips(
        name: str, input_name: str, shape: tuple[int, ...],
        real_model: Callable[[str], Path]) -> None:
    path = real_model(name)
    g = import_onnx(path, {input_name: list(shape)})
    feeds = {input_name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    res = run(g, feeds)
    ours = [res[v.name] for v in g.outputs]
    for a, r in zip(ours, ort_outputs(path, feeds)):
        assert a.shape == r.shape
        assert rel_err(a, r) <= REL_ERR, f"{name}: max error {rel_err(a, r):.3g} of max |ort|"
    check_round_trip(g, feeds, ours)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime_and_its_expected_outputs(name: str) -> None:
    case = light_model_case(name)
    g = import_onnx(case.path)
    feeds = {sanitize(k): v for k, v in case.inputs.items()}  # IR names: 'gpu_0/x' -> gpu_0_x
    res = run(g, feeds)
    ours = [res[v.name] for v in g.outputs]
    rtol, atol = light_model_tolerance(name)
    for a, r, e in zip(ours, ort_outputs(case.path, case.inputs), case.expected.values()):
        assert rel_err(a, r) <= REL_ERR
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    check_round_trip(g, feeds, ours)


@pytest.mark.models
def test_inspect_reports_ddddocr_macs_and_params(real_model: Callable[[str], Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = real_model("ddddocr-common")
    assert main(["inspect", str(path), "--input-shape", "input1=1,1,64,160", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["macs"] == 569_118_720
    assert totals["macs_by_op"] == {"conv": 317_091_840, "dense": 168_140_800,
                                    "lstm": 83_886_080}
    assert totals["params"] == 13_520_258
