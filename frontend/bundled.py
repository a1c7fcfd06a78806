"""The models and images that ship with ocrc (frontend/models/): the demo CRNNs trained by
benchmarks/train, their metadata (charset, input height, preprocessing), and a few text images
for `ocrc demo`. Preprocessing and CTC decoding here follow the metadata's `preprocessing`
field, which is how the models were trained."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ocrc.runtime.errors import OcrcError

MODELS = resources.files("ocrc.frontend").joinpath("models")


@dataclass(frozen=True)
class BundledModel:
    """A shipped ONNX model and its metadata."""

    path: Path
    meta: dict[str, Any]

    @property
    def charset(self) -> str:
        return str(self.meta["charset"])

    @property
    def height(self) -> int:
        return int(self.meta["input_height"])

    @property
    def width_multiple(self) -> int:
        return int(self.meta["width_multiple"])

    @property
    def input_name(self) -> str:
        return str(self.meta["input"]["name"])


def bundled_model(name: str = "crnn_dense") -> BundledModel:
    """`crnn_dense` or `crnn_sparse78` from the installed package."""
    onnx_path, meta_path = MODELS.joinpath(f"{name}.onnx"), MODELS.joinpath(f"{name}.json")
    if not onnx_path.is_file() or not meta_path.is_file():
        have = sorted(p.name[:-5] for p in MODELS.iterdir() if p.name.endswith(".onnx"))
        raise OcrcError(f"bundled model '{name}' not found; bundled: {', '.join(have)}")
    return BundledModel(Path(str(onnx_path)), json.loads(meta_path.read_text()))


def bundled_images(kind: str = "demo") -> list[tuple[str, Image.Image]]:
    """(label, image) pairs: kind "demo" (labelled by file name) or "calib"."""
    folder = MODELS.joinpath("images")
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith(f"{kind}_") and p.name.endswith(".png"):
            label = p.name[:-4].split("_", 2)[2] if kind == "demo" else ""
            with Image.open(str(p)) as im:
                out.append((label, im.convert("L")))
    return out


def preprocess(model: BundledModel, images: list[Image.Image], width: int | None = None
               ) -> np.ndarray:
    """Model inputs [N, 1, H, W]: grayscale, height H keeping the aspect ratio (bilinear), /255,
    padded on the right with white (1.0) to `width` or to the widest image, rounded up to the
    model's width multiple."""
    h, m = model.height, model.width_multiple
    arrays = []
    for im in images:
        w = max(m, round(im.size[0] * h / im.size[1]))
        arrays.append(np.asarray(im.convert("L").resize((w, h), Image.BILINEAR),
                                 dtype=np.float32) / 255.0)
    wmax = max(a.shape[1] for a in arrays)
    width = -(-max(wmax, width or 0) // m) * m
    out = np.ones((len(arrays), 1, h, width), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, 0, :, :a.shape[1]] = a
    return out


def ctc_greedy(logits: np.ndarray, charset: str, blank: int = 0) -> str:
    """Greedy CTC of [T, 1, C] (or [T, C]) logits: argmax, collapse repeats, drop blanks;
    class i > blank is charset[i - 1]."""
    best = np.asarray(logits).reshape(logits.shape[0], -1).argmax(axis=1)
    chars, prev = [], blank
    for i in best.tolist():
        if i != prev and i != blank:
            chars.append(charset[i - 1])
        prev = i
    return "".join(chars)
