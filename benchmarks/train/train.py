"""Seeded CPU training of the demo CRNN with CTC on clean text rendered on the fly, and the
pruning used by the compression study: iterative global magnitude pruning and 2:4.

Every batch is `generate("clean", batch, seed)` with its own seed (never the seeds of the
benchmark's data sets), so a run is a pure function of its seeds and step counts.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from benchmarks.ocr.datasets import Sample, generate
from benchmarks.ocr.metrics import accuracy
from benchmarks.train.data import decode, encode, pad_batch, preprocess_array
from benchmarks.train.model import prunable

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; one thread; deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def to_batch(samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [N, 1, 32, W], concatenated targets, target lengths."""
    x = torch.from_numpy(pad_batch([preprocess_array(s.image) for s in samples]))
    codes = [encode(s.text) for s in samples]
    targets = torch.tensor([c for code in codes for c in code], dtype=torch.long)
    lengths = torch.tensor([len(code) for code in codes], dtype=torch.long)
    return x, targets, lengths


@torch.no_grad()
def evaluate(model: nn.Module, samples: Sequence[Sample], batch: int = 1) -> float:
    """Exact-match accuracy of the torch model; batch 1 matches the ONNX protocol."""
    model.eval()
    preds: list[str] = []
    for i in range(0, len(samples), batch):
        x, _, _ = to_batch(samples[i: i + batch])
        preds += decode(model(x).numpy())
    return accuracy(preds, [s.text for s in samples])


@dataclass
class Schedule:
    """Steps, batch size and learning rate (one-cycle: warm-up then cosine decay)."""

    steps: int
    lr: float
    batch: int = 32
    warmup: float = 0.1
    seed_base: int = 1_000_000  # batch k uses seed seed_base + k
    history: list[tuple[int, float, float]] = field(default_factory=list)


def apply_masks(masks: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights (masked_fill keeps the zeros +0.0)."""
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(~mask, 0.0)


def train(model: nn.Module, sched: Schedule, masks: dict[str, torch.Tensor] | None = None,
          val: Sequence[Sample] = (), eval_every: int = 250) -> float:
    """Train in place; returns the wall time in seconds. Masks are re-applied after each step."""
    params = prunable(model)
    opt = torch.optim.AdamW(model.parameters(), lr=sched.lr, weight_decay=1e-4)
    lr_at = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=sched.lr, total_steps=sched.steps, pct_start=sched.warmup,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    start = time.perf_counter()
    running = math.nan
    for step in range(sched.steps):
        model.train()
        x, targets, lengths = to_batch(generate("clean", sched.batch, sched.seed_base + step))
        logp = model(x).log_softmax(2)
        frames = torch.full((x.shape[0],), logp.shape[0], dtype=torch.long)
        loss = ctc(logp, targets, frames, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        lr_at.step()
        if masks:
            apply_masks(masks, params)
        running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
        if val and ((step + 1) % eval_every == 0 or step + 1 == sched.steps):
            acc = evaluate(model, val, batch=50)
            sched.history.append((step + 1, running, acc))
            log.info("step %d/%d loss %.4f val acc %.3f (%.0f s)", step + 1, sched.steps,
                     running, acc, time.perf_counter() - start)
    model.eval()
    return time.perf_counter() - start


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the prunable weights."""
    params = prunable(model)
    zeros = sum(int((p == 0).sum()) for p in params.values())
    return zeros / sum(p.numel() for p in params.values())


def global_magnitude_masks(model: nn.Module, target: float) -> dict[str, torch.Tensor]:
    """Keep-masks for a global magnitude threshold over all prunable weights: the `target`
    fraction of smallest |w| (over every layer together) is pruned. Already-zero weights are
    the smallest, so masks only grow across iterations."""
    params = prunable(model)
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    k = round(target * flat.numel())
    if k == 0:
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    # Rank by (|w|, position) so ties are broken deterministically and exactly k are pruned.
    order = torch.argsort(flat, stable=True)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    masks, offset = {}, 0
    for name, p in params.items():
        masks[name] = keep[offset: offset + p.numel()].view_as(p)
        offset += p.numel()
    return masks


def nm_masks(model: nn.Module, n: int = 2, m: int = 4) -> dict[str, torch.Tensor]:
    """N:M keep-masks along each weight's reduction axis (conv: in*kh*kw in that order; LSTM and
    Linear: the input axis): the n largest |w| of every m consecutive weights are kept. A layer
    whose reduction length is not a multiple of m stays dense."""
    masks = {}
    for name, p in prunable(model).items():
        w = p.detach().reshape(p.shape[0], -1)
        if w.shape[1] % m:
            log.info("%s: reduction axis %d is not a multiple of %d, kept dense", name,
                     w.shape[1], m)
            continue
        groups = w.abs().reshape(w.shape[0], -1, m)
        order = torch.argsort(groups, dim=2, descending=True, stable=True)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, order[:, :, :n], True)
        masks[name] = keep.reshape(p.shape)
    return masks
