"""The bundled demo CRNNs (frontend/models): they load, match their metadata, run in
onnxruntime with a dynamic width, keep their sparsity as exact zeros, and reach their recorded
accuracy on the first 100 images of the seeded clean set."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import onnx
import pytest

from benchmarks.ocr.datasets import generate
from benchmarks.train import data

MODELS = {"crnn_dense": (0.0, 0.01), "crnn_sparse78": (0.7795, 0.79)}  # name -> sparsity range


def _files(name: str):
    folder = resources.files("ocrc.frontend") / "models"
    return folder / f"{name}.onnx", folder / f"{name}.json"


@pytest.fixture(scope="module")
def check_samples():
    return generate("clean", 100, 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_metadata(name: str) -> None:
    onnx_file, json_file = _files(name)
    meta = json.loads(json_file.read_text())
    assert meta["model"] == f"{name}.onnx"
    assert meta["charset"] == data.CHARSET and meta["blank"] == 0 and meta["classes"] == 37
    assert meta["input_height"] == data.HEIGHT and meta["preprocessing"] == data.PREPROCESSING
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    assert 13 <= model.opset_import[0].version <= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == [1, 1, 32, "width"]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [1, 37]
    assert onnx_file.stat().st_size < 4_000_000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparsity_is_exact_zeros(name: str) -> None:
    onnx_file, json_file = _files(name)
    weights = list(data.weight_initializers(onnx.load(str(onnx_file))).values())
    assert len(weights) == 8  # 5 convs, LSTM W and R, the head
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    sparsity = zeros / sum(w.size for w in weights)
    low, high = MODELS[name]
    assert low <= sparsity <= high
    assert sparsity == pytest.approx(json.loads(json_file.read_text())["sparsity"], abs=1e-4)
    assert not any(np.signbit(w[w == 0]).any() for w in weights)  # +0.0, never -0.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recorded_accuracy(name: str, check_samples) -> None:
    onnx_file, json_file = _files(name)
    check = json.loads(json_file.read_text())["check"]
    assert (check["n"], check["seed"]) == (100, 1)
    scores = data.onnx_scores(onnx_file, check_samples)
    # Another onnxruntime build may flip an argmax; one image of slack.
    assert scores["accuracy"] >= check["accuracy"] - 0.01
    assert scores["accuracy"] >= 0.9


def test_preprocess_pads_to_multiple_of_4() -> None:
    from PIL import Image

    x = data.preprocess(Image.new("RGB", (61, 20), "white"))
    assert x.shape == (1, 1, 32, 100) and x.dtype == np.float32 and float(x.min()) == 1.0
    logits = np.zeros((5, 1, 37), np.float32)
    logits[[0, 1, 3, 4], 0, [11, 11, 11, 1]] = 1.0  # a a - a 0 -> "aa0"; frame 2 is blank
    assert data.decode(logits) == ["aa0"]
