"""Data for the demo CRNN: clean rendered text resized to height 32, label encoding, batching,
greedy CTC decoding and onnxruntime evaluation. Torch-free, so the tests can use it.

The preprocessing recorded in the models' metadata JSON is `preprocess` below; keep them equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.ocr.datasets import Sample
from benchmarks.ocr.metrics import accuracy, cer

CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"  # class i+1; class 0 is the CTC blank
HEIGHT = 32
WIDTH_MULTIPLE = 4  # the backbone pools the width by 4: T = W / 4
PAD_VALUE = 1.0  # white, after /255
PREPROCESSING = (
    "PIL convert('L'); resize to height 32 keeping the aspect ratio, width max(4, "
    "round(w*32/h)), BILINEAR; float32 /255; pad on the right with 1.0 (white) to a multiple "
    "of 4; input [1, 1, 32, W]. Output [W/4, 1, 37] logits: argmax, greedy CTC (blank 0), "
    "class i -> CHARSET[i-1].")


def preprocess_array(image: Image.Image) -> np.ndarray:
    """Grayscale float32 [32, W'] in [0, 1], W' = max(4, round(w*32/h)), unpadded."""
    gray = image.convert("L")
    width = max(WIDTH_MULTIPLE, round(gray.size[0] * HEIGHT / gray.size[1]))
    gray = gray.resize((width, HEIGHT), Image.BILINEAR)
    return np.asarray(gray, dtype=np.float32) / 255.0


def pad_batch(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack [32, W_i] arrays into [N, 1, 32, W], W = max W_i rounded up to a multiple of 4."""
    width = max(a.shape[1] for a in arrays)
    width = -(-width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    out = np.full((len(arrays), 1, HEIGHT, width), PAD_VALUE, dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, 0, :, : a.shape[1]] = a
    return out


def preprocess(image: Image.Image) -> np.ndarray:
    """The model input for one image: float32 [1, 1, 32, W], W a multiple of 4."""
    return pad_batch([preprocess_array(image)])


def encode(text: str) -> list[int]:
    """Class indices of `text` (lowercased); raises ValueError on a character outside CHARSET."""
    try:
        return [CHARSET.index(c) + 1 for c in text.lower()]
    except ValueError:
        raise ValueError(f"text {text!r} has a character outside [0-9a-z]") from None


def decode(logits: np.ndarray) -> list[str]:
    """Greedy CTC on [T, N, 37] logits: one string per batch element."""
    best = logits.argmax(axis=2)
    texts = []
    for n in range(best.shape[1]):
        chars, prev = [], 0
        for i in best[:, n].tolist():
            if i != prev and i != 0:
                chars.append(CHARSET[i - 1])
            prev = i
        texts.append("".join(chars))
    return texts


def onnx_predict(model_path: Path | str, samples: Sequence[Sample]) -> list[str]:
    """Run an ONNX demo CRNN in onnxruntime (CPU, 1 thread), one image at a time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [decode(sess.run(None, {name: preprocess(s.image)})[0])[0] for s in samples]


def onnx_scores(model_path: Path | str, samples: Sequence[Sample]) -> dict[str, float]:
    """Exact-match accuracy and CER of an ONNX model on labelled samples."""
    preds = onnx_predict(model_path, samples)
    labels = [s.text for s in samples]
    return {"accuracy": accuracy(preds, labels), "cer": cer(preds, labels)}


WEIGHT_INPUTS = {"Conv": (1,), "LSTM": (1, 2), "MatMul": (1,), "Gemm": (1,)}


def weight_initializers(model) -> dict[str, np.ndarray]:  # model: onnx.ModelProto
    """The prunable weights of an ONNX model, by initializer name: conv kernels, LSTM W and R,
    MatMul/Gemm matrices (not biases, not LSTM B), in graph order."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    names = [node.input[i] for node in model.graph.node
             for i in WEIGHT_INPUTS.get(node.op_type, ()) if node.input[i] in inits]
    return {n: numpy_helper.to_array(inits[n]) for n in dict.fromkeys(names)}
