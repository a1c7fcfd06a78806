"""Kernels whose smallest plain tiling does not fit the SRAM: convs split along their reduction
(input channels, int32 partial sums accumulated with CONV acc=1, one REQUANT per tile) and
tiled layout copies; bit-exact against the reference interpreter on small targets."""

from __future__ import annotations

from tests.backend.helpers import G, check_exact, quantise, tiny_target


def _tilings(res, op: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [t.params for k, t in zip(res.plan.kernels, res.tilings) if k.anchor.op.name == op]


def test_conv_splits_input_channels_when_weights_do_not_fit() -> None:
    """A 3x3 conv with 256 input channels: one block of 4 output channels has 9 KiB of weights,
    double-buffered more than the 16 KiB target leaves; cin is split and accumulated."""
    g = G((1, 256, 6, 7))
    a = g.conv(g.x, 16, pads=(1, 1, 1, 1), act="relu")
    res, _ = check_exact(quantise(g.graph(g.conv(a, 8, k=1))), tiny_target(16384))
    conv = _tilings(res, "npu.conv")
    assert conv[0].get("kc", 256) < 256


def test_conv_split_with_residual_tail_and_stride() -> None:
    g = G((1, 192, 9, 8), seed=3)
    a = g.conv(g.x, 12, strides=(2, 2), pads=(1, 1, 1, 1))
    b = g.conv(g.x, 12, k=1, strides=(2, 2))
    res, _ = check_exact(quantise(g.graph(g.op("relu", g.op("add", a, b)))), tiny_target(12288))
    assert any(p.get("kc", 192) < 192 for p in _tilings(res, "npu.conv"))


def test_channel_shuffle_copies_tile_when_the_tensor_does_not_fit() -> None:
    """shufflenet's channel shuffle (reshape, transpose, reshape) on 24 KiB activations: the
    layout copies are cut into chunks that fit the 16 KiB target."""
    g = G((1, 48, 16, 32), seed=5)
    a = g.conv(g.x, 48, k=1, act="relu")
    s = g.op("reshape", a, shape=(1, 4, 12, 16, 32))
    s = g.op("reshape", g.op("transpose", s, perm=(0, 2, 1, 3, 4)), shape=(1, 48, 16, 32))
    res, _ = check_exact(quantise(g.graph(g.conv(s, 8, k=1))), tiny_target(16384))
    copies = _tilings(res, "npu.copy")
    assert copies and any(p.get("parts", 1) > 1 for p in copies)


def test_grouped_conv_blocks_inside_a_group() -> None:
    """alexnet's conv2 form (group 2, 5x5): one group's weights alone exceed the 16 KiB target,
    so channel blocks fall inside a group and run as ungrouped convs of its input channels."""
    g = G((1, 48, 7, 7), seed=4)
    a = g.conv(g.x, 64, k=5, group=2, pads=(2, 2, 2, 2), act="relu")
    res, _ = check_exact(quantise(g.graph(a)), tiny_target(16384))
    conv = _tilings(res, "npu.conv")
    assert conv[0]["cb"] < 32
