"""benchmarks.train's pruning helpers (skipped without the `train` extra): global magnitude
masks prune exactly the requested fraction, 2:4 keeps 2 of every 4 along the reduction axis,
L1 filter pruning keeps the function when nothing is removed and shrinks the shapes otherwise,
and pruned zeros survive the ONNX export as +0.0."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.train import model as crnn
from benchmarks.train import train
from benchmarks.train.structured import filter_prune


@pytest.fixture
def model():
    train.seed_everything(0)
    return crnn.CRNN(((8, (2, 2)), (16, (2, 2)), (16, (2, 1)), (16, (2, 1))), 16).eval()


def test_global_magnitude_masks_exact_fraction(model) -> None:
    masks = train.global_magnitude_masks(model, 0.78)
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.78 * total)
    train.apply_masks(masks, crnn.prunable(model))
    assert train.sparsity(model) == pytest.approx(pruned / total)


def test_nm_masks_two_of_four(model) -> None:
    masks = train.nm_masks(model, 2, 4)
    assert "backbone.0.weight" not in masks  # reduction 1*3*3 is not a multiple of 4
    for name, mask in masks.items():
        groups = mask.reshape(mask.shape[0], -1, 4).sum(dim=2)
        assert bool((groups == 2).all()), name


def test_filter_prune_keep_all_is_identity(model) -> None:
    x = torch.rand(1, 1, 32, 40)
    same = filter_prune(model, 1.0).eval()
    assert torch.equal(model(x), same(x))
    small = filter_prune(model, 0.5).eval()
    assert small.rnn.hidden_size == 8 and small(x).shape == (10, 1, crnn.NUM_CLASSES)


def test_export_keeps_positive_zeros(model, tmp_path) -> None:
    import onnx

    for p in crnn.prunable(model).values():  # negative weights whose zeros BN folding scales
        p.data = -p.data.abs()
    for bn in (m for m in model.backbone if isinstance(m, torch.nn.BatchNorm2d)):
        bn.weight.data.fill_(-1.0)
    train.apply_masks(train.global_magnitude_masks(model, 0.5), crnn.prunable(model))
    crnn.export_onnx(model, tmp_path / "m.onnx", example_width=32)
    inits = onnx.load(tmp_path / "m.onnx").graph.initializer
    arrays = [onnx.numpy_helper.to_array(t) for t in inits]
    weights = [a for a in arrays if a.dtype == np.float32 and a.ndim >= 2]
    zeros = np.concatenate([a[a == 0] for a in weights])
    assert zeros.size >= 0.45 * sum(a.size for a in weights) and not np.signbit(zeros).any()
