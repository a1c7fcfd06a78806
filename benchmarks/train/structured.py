"""Structured pruning of the demo CRNN: L1-norm filter pruning that physically removes conv
output channels (and the matching input channels of the next conv, BN entries and bridge
features) and LSTM hidden units (their gate rows, recurrent columns and head columns).

The result is a narrower CRNN: dense weights, fewer of them, fewer MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.train.model import CRNN

ROUND = 8  # kept channel counts are multiples of this (MAC-array friendly)


def kept(count: int, keep: float) -> int:
    """Channels kept of `count` at fraction `keep`, rounded to a multiple of ROUND (>= ROUND)."""
    return max(ROUND, round(count * keep / ROUND) * ROUND)


def narrow_shape(model: CRNN, keep: float) -> tuple[list[tuple[int, tuple[int, int] | None]], int]:
    """The stages and hidden size of `model` narrowed to `keep` of its channels."""
    convs = [m for m in model.backbone if isinstance(m, nn.Conv2d)]
    pools = _pools(model)
    return ([(kept(c.out_channels, keep), p) for c, p in zip(convs, pools)],
            kept(model.rnn.hidden_size, keep))


def _pools(model: CRNN) -> list[tuple[int, int] | None]:
    pools: list[tuple[int, int] | None] = []
    for m in model.backbone:
        if isinstance(m, nn.Conv2d):
            pools.append(None)
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size
            pools[-1] = tuple(k) if isinstance(k, tuple) else (k, k)
    return pools


def _top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n largest scores, in increasing index order (ties: lower index)."""
    order = torch.argsort(-scores, stable=True)[:n]
    return torch.sort(order).values


@torch.no_grad()
def filter_prune(model: CRNN, keep: float, reference: CRNN | None = None) -> CRNN:
    """A new CRNN keeping, per layer, the `keep` fraction (rounded) of the conv filters and
    LSTM hidden units of `reference` (default: `model` itself) with the largest L1 norm among
    those of `model`, with their weights copied."""
    stages, hidden = narrow_shape(model if reference is None else reference, keep)
    new = CRNN(stages, hidden)
    old_convs = [m for m in model.backbone if isinstance(m, nn.Conv2d)]
    old_bns = [m for m in model.backbone if isinstance(m, nn.BatchNorm2d)]
    new_convs = [m for m in new.backbone if isinstance(m, nn.Conv2d)]
    new_bns = [m for m in new.backbone if isinstance(m, nn.BatchNorm2d)]
    keep_in = torch.arange(1)
    for oc, ob, nc, nb in zip(old_convs, old_bns, new_convs, new_bns):
        keep_out = _top(oc.weight.abs().sum(dim=(1, 2, 3)), nc.out_channels)
        nc.weight.copy_(oc.weight[keep_out][:, keep_in])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(nb, name).copy_(getattr(ob, name)[keep_out])
        keep_in = keep_out
    # Bridge: feature c*H + h of [T, N, C, H].flatten(2) feeds the LSTM input.
    height = model.features // old_convs[-1].out_channels
    feats = (keep_in[:, None] * height + torch.arange(height)[None, :]).flatten()
    old, h_old = model.rnn, model.rnn.hidden_size
    units = []
    for sfx in ("", "_reverse"):
        w_ih, w_hh = getattr(old, f"weight_ih_l0{sfx}"), getattr(old, f"weight_hh_l0{sfx}")
        score = (w_ih.abs().sum(1) + w_hh.abs().sum(1)).view(4, h_old).sum(0)
        unit = _top(score, hidden)
        rows = (torch.arange(4)[:, None] * h_old + unit[None, :]).flatten()  # gates i, f, g, o
        getattr(new.rnn, f"weight_ih_l0{sfx}").copy_(w_ih[rows][:, feats])
        getattr(new.rnn, f"weight_hh_l0{sfx}").copy_(w_hh[rows][:, unit])
        for b in ("bias_ih_l0", "bias_hh_l0"):
            getattr(new.rnn, f"{b}{sfx}").copy_(getattr(old, f"{b}{sfx}")[rows])
        units.append(unit)
    cols = torch.cat([units[0], h_old + units[1]])
    new.head.weight.copy_(model.head.weight[:, cols])
    new.head.bias.copy_(model.head.bias)
    return new
