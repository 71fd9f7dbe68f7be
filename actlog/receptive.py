"""Receptive fields of watched layers: from the layer chain where it has a rule, else measured.

The atlas crops each top example to the input region the unit at its
strongest position sees. Where the watched layer is reached through a
symbolic graph (Sequential, functional, and functional models nested in
them), that region comes from walking the graph back from the layer's output
to the image input, one layer at a time (:class:`actlog.atlas.Field`):

- convolutions (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``) and 2-D
  pooling: kernel, strides, dilation, ``"same"``/``"valid"`` padding;
- ``ZeroPadding2D`` and ``Cropping2D``;
- layers that act on each position alone (activations, batch normalization,
  dropout and noise, rescaling, ...): the field passes through;
- merges (``Add``, ``Concatenate``, ...) of branches that step alike: the box
  holding every branch's field;
- a nested functional model: walked into.

The walk follows each layer's first call (:mod:`actlog.graph`: what Keras'
public API reaches); a branch through a shared layer's later call is measured.
Anything else (upsampling, transposed convolutions, resizing, attention, a
``Lambda``, a subclassed model with no graph) has no simple rule: there the
field is *measured* by perturbation: the model runs (forward only, once per
training run, on ``H + W + 1`` inputs per trial) on a random image and on
copies of it with one input row, or one column, replaced, and each output
row sees the rows that changed it (likewise columns).
:func:`actlog.atlas.fit_measured` turns the intervals into a field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actlog import probes
from actlog.atlas import EMPTY, Field, fit_measured, union
from actlog.graph import Graph, first_call

_POINTWISE = frozenset({
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax",
    "BatchNormalization", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Rescaling", "Normalization",
    "Identity", "LayerNormalization", "UnitNormalization",
})
_ALONG_AXIS = frozenset({"Softmax", "LayerNormalization", "UnitNormalization"})  # pointwise on axis -1 only
_MERGES = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})
_CONVOLUTIONS = frozenset({"Conv2D", "DepthwiseConv2D", "SeparableConv2D"})
_POOLING = frozenset({"MaxPooling2D", "AveragePooling2D"})
TRIALS = 2
"""Random images the measurement perturbs (a unit a ReLU silences on one may answer on the other)."""


class _NoRule(Exception):
    """The chain holds a layer whose field has no simple rule."""


def chain_field(runner: Any, watched: Any, image_input: int, image_hw: Sequence[int]) -> Field | None:
    """The field of ``watched`` (an :class:`actlog.layers.Watched`) from its layer chain,
    relative to input ``image_input`` of ``runner`` (``image_hw`` pixels); ``None`` where
    the chain has no rule."""
    try:
        graph = Graph(runner)
        sources = {id(graph.inputs[image_input]): Field.identity(*image_hw)}
        for container in watched.chain:
            inputs, _ = first_call(container)
            fields = [_field(graph, t, sources, {}) for t in inputs]
            graph = Graph(container)
            sources = {id(t): f for t, f in zip(graph.inputs, fields, strict=True)}
        return _field(graph, watched.layer.output, sources, {})
    except (_NoRule, AttributeError, IndexError, KeyError, TypeError, ValueError):
        # KeyError: a tensor no first call made (a shared layer's later call): Keras'
        # public API walks first calls only (actlog.graph), so the field is measured.
        return None


def _field(graph: Graph, tensor: Any, sources: dict[int, Field], memo: dict[int, Field]) -> Field:
    key = id(tensor)
    if key in sources:
        return sources[key]
    if key not in memo:
        call, index = graph.producer(tensor)
        if not call.inputs:
            raise _NoRule(type(call.op).__name__)  # another input than the image
        fields = [_field(graph, t, sources, memo) for t in call.inputs]
        memo[key] = _rule(call.op, fields, call.inputs, tensor, index)
    return memo[key]


def _rule(op: Any, fields: list[Field], inputs: list[Any], output: Any, index: int) -> Field:
    name = type(op).__name__
    if hasattr(op, "outputs") and hasattr(op, "inputs") and len(op.inputs) == len(fields):
        inner = Graph(op)
        sources = {id(t): f for t, f in zip(inner.inputs, fields, strict=True)}
        return _field(inner, inner.outputs[index], sources, {})
    if any(len(t.shape) != 4 for t in [*inputs, output]):
        raise _NoRule(f"{name}: not a 2-D map")
    if name in _MERGES:
        merged = union(fields)
        if merged is not None:
            return merged
    if len(fields) != 1:
        raise _NoRule(name)
    field = fields[0]
    if name in _POINTWISE and (
        name not in _ALONG_AXIS or np.ravel(getattr(op, "axis", -1)).tolist() in ([-1], [3])
    ):
        return field
    if name in _CONVOLUTIONS and len(op.kernel_size) == 2 and op.padding in ("same", "valid"):
        return field.window(op.kernel_size, op.strides, op.dilation_rate, op.padding)
    if name in _POOLING:
        return field.window(op.pool_size, op.strides, (1, 1), op.padding)
    if name == "ZeroPadding2D":
        return field.window((1, 1), (1, 1), (1, 1), op.padding)
    if name == "Cropping2D":
        return field.window((1, 1), (1, 1), (1, 1), [(-a, -b) for a, b in op.cropping])
    raise _NoRule(name)


def measure(
    forward: Callable[[np.ndarray | list | dict], list[np.ndarray]],
    pool: Any,
    image_input: int,
    batch: int,
    *,
    seed: int = 0,
) -> list[Field | None]:
    """Measure the field of every output of ``forward`` by perturbation (see module docstring).

    Args:
        forward: fitted numpy inputs ``(b, ...)`` -> each watched layer's
            ``(b, H, W, C)`` maps as numpy (``None`` for a layer without a
            spatial map).
        pool: the fitted pool: its first sample fills the other inputs, its
            range the random images.
        image_input: which input is the image (position in input order).
        batch: samples per call.
        seed: of the random images.

    Returns:
        One :class:`Field` per output (``measured=True``), ``None`` where the
        output is not a spatial map.
    """
    leaves = probes.leaves(pool)
    image = leaves[image_input]
    height, width = image.shape[1:3]
    rng = np.random.default_rng(seed)
    low, high = (float(image.min()), float(image.max())) if image.max() > image.min() else (0.0, 1.0)
    rows_hit: list[Any] = []
    cols_hit: list[Any] = []
    for _ in range(TRIALS):
        base = rng.uniform(low, high, image.shape[1:]).astype(image.dtype)
        other = rng.uniform(low, high, image.shape[1:]).astype(image.dtype)
        samples = np.repeat(base[None], 1 + height + width, axis=0)
        for y in range(height):
            samples[1 + y, y] = other[y]
        for x in range(width):
            samples[1 + height + x, :, x] = other[:, x]
        outputs = _run(forward, pool, image_input, samples, batch)
        rows_hit = _or(rows_hit, [None if o is None else _changed(o, height, axis=1) for o in outputs])
        cols_hit = _or(cols_hit, [None if o is None else _changed(o, width, axis=2, skip=height)
                                  for o in outputs])
    return [
        None if r is None else fit_measured(_intervals(r), _intervals(c), (height, width))
        for r, c in zip(rows_hit, cols_hit, strict=True)
    ]


def _run(forward: Any, pool: Any, image_input: int, samples: np.ndarray, batch: int) -> list[Any]:
    """``forward`` over ``samples`` of the image input (other inputs: the pool's first sample)."""
    chunks: list[list[Any]] = []
    for start in range(0, len(samples), batch):
        part = samples[start : start + batch]
        count = len(part)
        if count < batch:
            part = np.concatenate([part, np.repeat(part[:1], batch - count, axis=0)])
        leaves = [
            part if i == image_input else np.repeat(leaf[:1], batch, axis=0)
            for i, leaf in enumerate(probes.leaves(pool))
        ]
        chunks.append([None if o is None else o[:count] for o in forward(probes.rebuild(pool, leaves))])
    return [
        None if chunks[0][i] is None else np.concatenate([c[i] for c in chunks])
        for i in range(len(chunks[0]))
    ]


def _changed(maps: np.ndarray, extent: int, *, axis: int, skip: int = 0) -> np.ndarray:
    """bool ``(extent, out)``: perturbing input line ``i`` changed output line ``j`` along ``axis``."""
    base = maps[0]
    tolerance = 1e-5 * max(1.0, float(np.abs(base[np.isfinite(base)]).max(initial=0.0)))
    perturbed = maps[1 + skip : 1 + skip + extent]
    diff = np.abs(np.nan_to_num(perturbed - base[None])) > tolerance  # (extent, H, W, C)
    other = (2, 3) if axis == 1 else (1, 3)
    return diff.any(axis=other)


def _or(before: list[Any], now: list[Any]) -> list[Any]:
    """Per output, what any trial so far changed (``None``: not a spatial output)."""
    if not before:
        return now
    return [None if a is None else a | b for a, b in zip(before, now, strict=True)]


def _intervals(hit: np.ndarray) -> np.ndarray:
    """``(out, 2)``: first and last input line that changed each output line (``EMPTY``: none did)."""
    out = np.empty((hit.shape[1], 2), np.int64)
    for j in range(hit.shape[1]):
        lines = np.flatnonzero(hit[:, j])
        out[j] = (lines[0], lines[-1]) if lines.size else EMPTY
    return out
