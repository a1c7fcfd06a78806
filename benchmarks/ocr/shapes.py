"""Calibrating a model whose input width varies. The IR is static, so each input shape is its
own graph; one calibration table (keyed by value names) serves every shape, and what is chosen
once per model (GPTQ's weights, the int16 values of mixed precision) is chosen on the most
common calibration shape and applied to every shape; the channel moments that calibrated
structured pruning reads are pooled over every shape, so that every shape prunes the same
filters. Shared by benchmarks.quant_accuracy, benchmarks.compression and the scoreboard
(benchmarks/scoreboard/engine.py), so they calibrate the same way.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from ocrc.compiler.compress.stats import moment_sums, moments
from ocrc.compiler.ir.graph import Graph
from ocrc.compiler.passes.prune_structured import PruneStructured
from ocrc.compiler.quant.gptq import gptq_weights

Shape = tuple[int, ...]
Samples = list[dict[str, np.ndarray]]
Moments = dict[str, tuple[np.ndarray, np.ndarray]]
BC_SAMPLES = 16  # calibration inputs of the most common shape that bias correction measures on
GPTQ_SAMPLES = 8  # calibration inputs of the most common shape whose statistics GPTQ uses
INT16_SAMPLES = 8  # calibration inputs of the most common shape that choose the int16 values


def group_by_shape(inputs: Sequence[np.ndarray], name: str) -> dict[Shape, Samples]:
    """The inputs as samples {name: x}, grouped by shape (each group in input order)."""
    groups: dict[Shape, Samples] = collections.defaultdict(list)
    for x in inputs:
        groups[x.shape].append({name: x})
    return dict(groups)


def most_common_shape(groups: Mapping[Shape, Samples]) -> Shape:
    """The shape with the most calibration inputs (a tie: the smallest shape)."""
    return max(sorted(groups), key=lambda s: len(groups[s]))


def shared_gptq_weights(reference: Callable[[Shape], Graph],
                        groups: Mapping[Shape, Samples], center: bool = True
                        ) -> dict[str, np.ndarray]:
    """GPTQ-rounded weights (compiler/quant/gptq.py) from `reference(shape)`, the float graph
    the int8 one derives from (prepared, equalised if asked), of the most common shape and its
    first GPTQ_SAMPLES inputs (center: centred GPTQ). Keyed by name: `with_weights` puts them
    into every shape."""
    shape = most_common_shape(groups)
    return gptq_weights(reference(shape), groups[shape][:GPTQ_SAMPLES], center=center)


def pooled_channel_moments(parts: Iterable[tuple[Graph, Sequence[Mapping[str, np.ndarray]]]]
                           ) -> Moments:
    """Channel means and covariances by value name over the samples of every (graph, samples)
    part, the graphs being one model at several input shapes, before pruning: what
    `prune-structured{criterion=std,compensate=lsq}` reads from ctx.options['channel_moments']
    (the values `PruneStructured.statistics_axes` names). Pooled over every shape, so that
    every shape's graph loses the same filters."""
    acc: dict = {}
    for g, samples in parts:
        moment_sums(g, samples, PruneStructured.statistics_axes(g), acc)
    return moments(acc)
