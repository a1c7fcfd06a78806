"""Seeded OCR data sets, generated on demand into ocrc's cache (never committed).

"clean": black text on white, Pillow's bundled font. "captcha": the `captcha` package's
ImageCaptcha with its randomness seeded. "calib-*": 32 images of each kind from other seeds.
The same (kind, n, seed) always gives the same pixels; `load_dataset` caches them as PNGs.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont

from ocrc.frontend.zoo import cache_dir, file_lock
from ocrc.runtime.errors import OcrcError

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
CAPTCHA_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # as captcha's own audio set
# Bump when a generator changes its pixels, so stale caches are not reused.
GENERATOR_VERSION = 1

# clean: the canvas is CLEAN_HEIGHT tall and its width a multiple of CLEAN_WIDTH_STEP, so that
# ddddocr's int(w*64/h) resize lands on multiples of 32 (64..256): few distinct input widths,
# hence few static shapes to compile. Font sizes and margins give ~90% fp32 accuracy.
CLEAN_HEIGHT = 56
CLEAN_WIDTH_STEP = 28
CLEAN_FONT_SIZES = (26, 36)  # inclusive
CLEAN_LENGTHS = (4, 8)  # inclusive
# captcha: the package's default 160x60 canvas with 4 characters (ddddocr input 64x170).
# Longer strings overlap so much that ddddocr reads under 15% of them.
CAPTCHA_SIZE = (160, 60)
CAPTCHA_LENGTHS = (4, 4)


class DatasetError(OcrcError):
    """An unknown data set name, or a cached data set that is unreadable."""


@dataclass(frozen=True)
class Sample:
    """One image (RGB) and its ground-truth text."""

    image: Image.Image
    text: str


@dataclass(frozen=True)
class DatasetSpec:
    """How to make a named data set: generator kind, size and seed."""

    kind: str
    n: int
    seed: int


DATASETS: dict[str, DatasetSpec] = {
    "clean": DatasetSpec("clean", 300, 1),
    "captcha": DatasetSpec("captcha", 300, 2),
    "calib-clean": DatasetSpec("clean", 32, 101),
    "calib-captcha": DatasetSpec("captcha", 32, 102),
}


def _random_text(rng: np.random.Generator, lengths: tuple[int, int], alphabet: str) -> str:
    n = int(rng.integers(lengths[0], lengths[1] + 1))
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))


def _default_font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow < 10.1 or no FreeType
        raise DatasetError(
            f"Pillow {PIL.__version__}: ImageFont.load_default(size=...) gave a bitmap font; "
            "the clean set needs Pillow >= 10.1 built with FreeType")
    return font


def render_clean(text: str, rng: np.random.Generator) -> Image.Image:
    """Render `text` black on white with a seeded font size and position."""
    font = _default_font(int(rng.integers(CLEAN_FONT_SIZES[0], CLEAN_FONT_SIZES[1] + 1)))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    margin = 8
    width = -(-(w + 2 * margin) // CLEAN_WIDTH_STEP) * CLEAN_WIDTH_STEP
    x = int(rng.integers(margin, width - w - margin + 1))
    mid = (CLEAN_HEIGHT - h) // 2
    y = int(rng.integers(max(0, mid - 4), min(CLEAN_HEIGHT - h, mid + 4) + 1))
    image = Image.new("RGB", (width, CLEAN_HEIGHT), "white")
    ImageDraw.Draw(image).text((x - left, y - top), text, font=font, fill="black")
    return image


def generate_clean(n: int, seed: int) -> list[Sample]:
    """`n` clean samples of 4-8 characters of [a-z0-9]; identical pixels for the same seed."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        text = _random_text(rng, CLEAN_LENGTHS, ALPHABET)
        samples.append(Sample(render_clean(text, rng), text))
    return samples


class _SeededSecrets:
    """Stands in for the `secrets` module inside captcha.image, backed by a seeded PRNG.

    captcha 0.7 draws every random choice from `secrets` (randbelow, randbits, choice) at call
    time through the module global, so swapping that global makes ImageCaptcha deterministic.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, exclusive_upper_bound: int) -> int:
        return self._rng.randrange(exclusive_upper_bound)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):  # type: ignore[no-untyped-def]
        return self._rng.choice(seq)


@contextlib.contextmanager
def _seeded_captcha(seed: int) -> Iterator[None]:
    """Make captcha.image draw from a PRNG seeded with `seed` (not thread-safe)."""
    import captcha.image as cimg

    rng = random.Random(seed)
    saved = {name: getattr(cimg, name) for name in ("secrets", "random") if hasattr(cimg, name)}
    if not saved:
        raise DatasetError("captcha.image uses neither `secrets` nor `random`: cannot seed it")
    try:
        for name in saved:  # older captcha releases use the `random` module instead
            setattr(cimg, name, _SeededSecrets(rng) if name == "secrets" else rng)
        yield
    finally:
        for name, module in saved.items():
            setattr(cimg, name, module)


def generate_captcha(n: int, seed: int) -> list[Sample]:
    """`n` captcha samples (4 characters of [A-Z0-9], 160x60) from a seeded ImageCaptcha."""
    from captcha.image import ImageCaptcha

    rng = np.random.default_rng(seed)
    texts = [_random_text(rng, CAPTCHA_LENGTHS, CAPTCHA_ALPHABET) for _ in range(n)]
    gen = ImageCaptcha(width=CAPTCHA_SIZE[0], height=CAPTCHA_SIZE[1])
    with _seeded_captcha(seed):
        return [Sample(gen.generate_image(t).convert("RGB"), t) for t in texts]


GENERATORS = {"clean": generate_clean, "captcha": generate_captcha}


def generate(kind: str, n: int, seed: int) -> list[Sample]:
    """Generate `n` samples of `kind` ("clean" or "captcha") in memory."""
    if kind not in GENERATORS:
        raise DatasetError(f"unknown data set kind {kind!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[kind](n, seed)


def _dataset_dir(kind: str, n: int, seed: int) -> Path:
    # Pixels depend on the generator code, Pillow (FreeType) and, for captcha, its version.
    key = f"{kind}-n{n}-seed{seed}-v{GENERATOR_VERSION}-pillow{PIL.__version__}"
    if kind == "captcha":
        from importlib.metadata import version

        key += f"-captcha{version('captcha')}"
    return cache_dir() / "datasets" / key


def _read_dir(folder: Path) -> list[Sample]:
    lines = (folder / "labels.tsv").read_text(encoding="utf-8").splitlines()
    samples = []
    for line in lines:
        fname, text = line.split("\t")
        with Image.open(folder / fname) as im:
            samples.append(Sample(im.convert("RGB"), text))
    return samples


def _write_dir(folder: Path, samples: list[Sample]) -> None:
    """Write PNGs + labels.tsv into a temporary sibling, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=folder.parent))
    try:
        rows = []
        for i, s in enumerate(samples):
            fname = f"{i:05d}.png"
            s.image.save(tmp / fname, format="PNG")
            rows.append(f"{fname}\t{s.text}\n")
        (tmp / "labels.tsv").write_text("".join(rows), encoding="utf-8")
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_samples(kind: str, n: int, seed: int, *, cache: bool = True) -> list[Sample]:
    """The samples of generate(kind, n, seed), read from / written to the cache if `cache`."""
    if not cache:
        return generate(kind, n, seed)
    folder = _dataset_dir(kind, n, seed)
    if not (folder / "labels.tsv").is_file():
        with file_lock(folder.parent / f".{folder.name}.lock"):
            if not (folder / "labels.tsv").is_file():
                shutil.rmtree(folder, ignore_errors=True)  # a partial folder from a crash
                _write_dir(folder, generate(kind, n, seed))
    try:
        return _read_dir(folder)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cached data set {folder} is unreadable ({exc}); delete it") from exc


def load_dataset(name: str, *, cache: bool = True) -> list[Sample]:
    """A named data set of DATASETS ("clean", "captcha", "calib-clean", "calib-captcha")."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    return load_samples(spec.kind, spec.n, spec.seed, cache=cache)
