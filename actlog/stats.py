"""Summary statistics of one layer's activations on the probes.

A grid shows what a layer responds to; these numbers say how it is doing and
how fast it is changing: mean and spread, how much of it is exactly zero
(ReLU sparsity), how many channels never respond (dead), and how far the
activations moved since the previous logged event (drift). Per-channel values
cover every channel of the layer, not only the ones shown in the grid.

The work is split in two so that the big arrays never leave the device:

- :func:`reduce_layer`, :func:`sketch` and :func:`drift_sums` reduce the
  activations to a few numbers per channel. They are written once against an
  ``xp`` namespace (:data:`actlog.arrays.NUMPY` or ``keras.ops``), so the probe
  function runs them inside the compiled function, in float32.
- :func:`summarize` turns those numbers into a :class:`LayerStats` on the host.

Drift is ``1 - cosine similarity`` between two events' activations, each
channel's map first summed over blocks so that it has at most
:data:`SKETCH_SIZE` x :data:`SKETCH_SIZE` positions (exact for smaller maps),
fewer for a layer with so many channels that its sketch would pass
:data:`SKETCH_VALUES`, or its share of :data:`SKETCH_BUDGET` when many layers are
watched: only that sketch is kept between events. NaN and Inf never raise: they are left
out of every statistic (counted as 0 in the drift sketch) and reported through
:attr:`LayerStats.finite`.

```python
first = layer_stats(acts_epoch_0)                     # drift is None
later = layer_stats(acts_epoch_1, previous=acts_epoch_0)
later.drift, later.dead_fraction
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlog.arrays import NUMPY

SKETCH_SIZE = 16
"""Drift compares each channel's map summed over blocks to at most this many
positions per side: what is kept between events is that small."""

SKETCH_VALUES = 2**16
"""At most this many float32 values in one layer's sketch, all probes and channels
(256 KB): a layer with many channels gets fewer positions per side (:func:`sketch_size`),
so what drift keeps between events stays small also when every layer is watched."""

SKETCH_BUDGET = 2**21
"""At most this many float32 values in all the watched layers' sketches together (8 MB),
where :data:`SKETCH_VALUES` per layer would pass it (more than 32 layers): each layer then
gets an equal share (:func:`sketch_values`), at least one position per channel."""

DEAD_ATOL = 1e-6
"""A channel whose finite values span at most this much is dead."""

SUMS = ("count", "total", "m2", "zeros", "high", "low", "activity")
"""Rows of the per-channel sums the probe function returns stacked: :func:`reduce_layer`'s,
then :func:`activity`. One array per layer rather than seven: fewer arrays to hand over."""

DRIFT = ("dot", "now", "before")
"""Rows of the stacked :func:`drift_sums`."""


def stack(xp: Any, values: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """``(len(keys), C)``: the per-channel arrays of ``values`` in the order of ``keys``."""
    return xp.stack([values[key] for key in keys])


def unstack(array: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """Inverse of :func:`stack`; a dict is returned as it is."""
    if isinstance(array, dict):
        return array
    return {key: array[i] for i, key in enumerate(keys)}


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one layer over all probes and positions at one event.

    Attributes:
        mean, std: over every finite value.
        sparsity: fraction of finite values exactly equal to 0.
        dead_fraction: fraction of channels that are constant over every probe and
            position (``max - min <= dead_atol``); a channel with no finite value
            counts as dead.
        drift: ``1 - cosine similarity`` between the layer's activation sketch and
            the previous event's, in ``[0, 2]``; ``None`` at the first event.
        channel_mean, channel_max: float32 ``(C,)``; NaN for a channel with no
            finite value.
        channel_drift: float32 ``(C,)`` per-channel drift, ``None`` at the first event.
        finite: ``False`` when any value was NaN or infinite.
    """

    mean: float
    std: float
    sparsity: float
    dead_fraction: float
    drift: float | None
    channel_mean: np.ndarray
    channel_max: np.ndarray
    channel_drift: np.ndarray | None
    finite: bool

    def scalars(self) -> dict[str, float]:
        """The scalar statistics by name (``drift`` only when known)."""
        out = {
            "mean": self.mean,
            "std": self.std,
            "sparsity": self.sparsity,
            "dead_fraction": self.dead_fraction,
        }
        if self.drift is not None:
            out["drift"] = self.drift
        return out

    def channels(self) -> dict[str, np.ndarray]:
        """The per-channel statistics by name (``channel_drift`` only when known)."""
        out = {"channel_mean": self.channel_mean, "channel_max": self.channel_max}
        if self.channel_drift is not None:
            out["channel_drift"] = self.channel_drift
        return out


# --------------------------------------------------------------------------- on the device


def reduce_layer(xp: Any, acts: Any, *, all_finite: bool = False) -> dict[str, Any]:
    """Per-channel sums of ``(k, ..., C)`` float32 activations: everything :func:`summarize` needs.

    Returns ``count`` (finite values), ``total`` (their sum), ``m2`` (squared
    deviations from the channel's own mean), ``zeros``, ``high`` and ``low``
    (extremes of the finite values; -inf and inf when there are none), each
    float32 ``(C,)``.

    ``all_finite``: the caller has checked that no value is NaN or infinite
    (:func:`actlog.arrays.all_finite`), so no mask is made: the same bytes, in fewer
    passes over the activations.
    """
    channels = acts.shape[-1]
    values = xp.reshape(acts, (-1, channels))
    finite = None if all_finite else xp.isfinite(values)
    total = xp.sum(_finite_or(xp, finite, values, 0.0), axis=0)
    count = _count(xp, finite, values, total)
    centre = total / xp.maximum(count, 1.0)
    deviation = _finite_or(xp, finite, values - centre, 0.0)
    if finite is None and values.shape[0] <= 2**24:
        # |sign| is 1 at the values that are not zero: the same count (float32 counts exactly
        # up to 2**24 rows), and on the host cheaper in eager PyTorch than a boolean mask
        # cast to float.
        zeros = count - xp.sum(xp.abs(xp.sign(values)), axis=0)
    else:
        zero = xp.equal(values, 0.0)
        zeros = xp.sum(xp.cast(zero if finite is None else xp.logical_and(finite, zero), "float32"), axis=0)
    return {
        "count": count,
        "total": total,
        "m2": xp.sum(deviation * deviation, axis=0),
        "zeros": zeros,
        "high": xp.max(_finite_or(xp, finite, values, -np.inf), axis=0),
        "low": xp.min(_finite_or(xp, finite, values, np.inf), axis=0),
    }


def _finite_or(xp: Any, finite: Any, values: Any, fill: float) -> Any:
    """``values`` with ``fill`` where they are not finite (``finite`` None: all are)."""
    return values if finite is None else xp.where(finite, values, fill)


def _count(xp: Any, finite: Any, values: Any, like: Any) -> Any:
    """Finite values per channel of ``(N, C)`` ``values``, float32 shaped as ``like``."""
    if finite is None:
        return xp.zeros_like(like) + float(values.shape[0])
    return xp.sum(xp.cast(finite, "float32"), axis=0)


def activity(xp: Any, maps: Any, *, all_finite: bool = False) -> Any:
    """Mean ``|activation|`` of each channel of ``(k, H, W, C)`` maps over its finite values:
    the score of ``channels="most_active"`` (``all_finite`` as in :func:`reduce_layer`)."""
    channels = maps.shape[-1]
    values = xp.reshape(maps, (-1, channels))
    finite = None if all_finite else xp.isfinite(values)
    magnitude = xp.sum(xp.abs(_finite_or(xp, finite, values, 0.0)), axis=0)
    return magnitude / xp.maximum(_count(xp, finite, values, magnitude), 1.0)


def sketch_values(layers: int) -> int:
    """Values one layer's sketch may hold when ``layers`` are watched: :data:`SKETCH_VALUES`,
    or its share of :data:`SKETCH_BUDGET`."""
    return min(SKETCH_VALUES, SKETCH_BUDGET // max(1, layers))


def sketch_size(probes: int, channels: int, values: int = SKETCH_VALUES) -> int:
    """Positions per side of a layer's sketch: :data:`SKETCH_SIZE`, fewer where ``probes x
    channels`` would take it past ``values`` (at least 1)."""
    return max(1, min(SKETCH_SIZE, math.isqrt(values // max(1, probes * channels))))


def sketch_shape(height: int, width: int, size: int = SKETCH_SIZE) -> tuple[int, int, int, int]:
    """``(sketch height, sketch width, block height, block width)`` of an ``height x width`` map."""
    block_h, block_w = -(-height // size), -(-width // size)
    return -(-height // block_h), -(-width // block_w), block_h, block_w


def sketch(xp: Any, maps: Any, size: int | None = None, *, all_finite: bool = False) -> Any:
    """``(k, H, W, C)`` maps summed over blocks to at most ``size x size`` positions
    (default :func:`sketch_size`; non-finite values count as 0); the maps themselves
    when they are that small (``all_finite`` as in :func:`reduce_layer`)."""
    k, height, width, channels = maps.shape
    clean = maps if all_finite else xp.where(xp.isfinite(maps), maps, 0.0)
    rows, cols, block_h, block_w = sketch_shape(height, width, size or sketch_size(k, channels))
    if block_h == block_w == 1:
        return clean
    extra_h, extra_w = rows * block_h - height, cols * block_w - width
    if extra_h or extra_w:
        clean = xp.pad(clean, [[0, 0], [0, extra_h], [0, extra_w], [0, 0]])
    blocks = xp.reshape(clean, (k, rows, block_h, cols, block_w, channels))
    return xp.sum(blocks, axis=(2, 4))


def drift_sums(xp: Any, now: Any, before: Any) -> dict[str, Any]:
    """Per-channel ``dot``, ``now`` and ``before`` squared norms of two sketches: float32 ``(C,)``."""
    channels = now.shape[-1]
    a = xp.reshape(now, (-1, channels))
    b = xp.reshape(before, (-1, channels))
    return {
        "dot": xp.sum(a * b, axis=0),
        "now": xp.sum(a * a, axis=0),
        "before": xp.sum(b * b, axis=0),
    }


# --------------------------------------------------------------------------- on the host


def _drift_from_sums(dot: np.ndarray, norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """``1 - cos`` from dot products and norms, with the zero-vector cases defined.

    Both vectors zero: nothing changed, drift 0. Exactly one zero: there is no
    angle, but a channel that died (or woke up) has changed completely: drift 1.
    """
    zero_a, zero_b = norm_a == 0, norm_b == 0
    # Dividing by one norm at a time keeps a product of two tiny norms from
    # underflowing to 0.
    with np.errstate(invalid="ignore", over="ignore"):
        cosine = np.clip(
            dot / np.where(zero_a, 1.0, norm_a) / np.where(zero_b, 1.0, norm_b), -1.0, 1.0
        )
    return np.where(zero_a & zero_b, 0.0, np.where(zero_a | zero_b, 1.0, 1.0 - cosine))


def summarize(
    sums: dict[str, np.ndarray],
    drift: dict[str, np.ndarray] | None = None,
    *,
    size: int,
    dead_atol: float = DEAD_ATOL,
) -> LayerStats:
    """A :class:`LayerStats` from :func:`reduce_layer` (and :func:`drift_sums`, or None at a
    first event), as dicts or stacked (:data:`SUMS`, :data:`DRIFT`). ``size`` is the number
    of values reduced (probes x positions x channels)."""
    sums = unstack(sums, SUMS)
    drift = None if drift is None else unstack(drift, DRIFT)
    count, total = (np.asarray(sums[key], np.float64) for key in ("count", "total"))
    m2, zeros = (np.asarray(sums[key], np.float64) for key in ("m2", "zeros"))
    high, low = (np.asarray(sums[key], np.float64) for key in ("high", "low"))
    n = count.sum()
    has_any = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        channel_mean = np.where(has_any, total / np.where(has_any, count, 1.0), np.nan)
    if n:
        mean = float(total.sum() / n)
        spread = m2.sum() + (count * np.where(has_any, channel_mean - mean, 0.0) ** 2).sum()
        std = math.sqrt(max(float(spread / n), 0.0))
        sparsity = float(zeros.sum() / n)
    else:
        mean = std = sparsity = float("nan")
    dead = ~has_any | (np.where(has_any, high - low, 0.0) <= dead_atol)
    layer_drift = channel_drift = None
    if drift is not None:
        dot, now, before = (np.asarray(drift[key], np.float64) for key in ("dot", "now", "before"))
        channel_drift = _drift_from_sums(dot, np.sqrt(now), np.sqrt(before)).astype(np.float32)
        layer_drift = float(_drift_from_sums(dot.sum(), np.sqrt(now.sum()), np.sqrt(before.sum())))
    return LayerStats(
        mean=mean,
        std=std,
        sparsity=sparsity,
        dead_fraction=float(dead.mean()),
        drift=layer_drift,
        channel_mean=channel_mean.astype(np.float32),
        channel_max=np.where(has_any, high, np.nan).astype(np.float32),
        channel_drift=channel_drift,
        finite=bool(n == size),
    )


def layer_stats(
    acts: np.ndarray, previous: np.ndarray | None = None, *, dead_atol: float = DEAD_ATOL
) -> LayerStats:
    """Statistics of one layer's activations on all probes, in numpy.

    The same reductions as the callback runs on the device, for activations
    already on the host.

    Args:
        acts: ``(k, ..., C)`` activations of the ``k`` probes, channels last
            (``(k, C)`` for a Dense layer, ``(k, H, W, C)`` for Conv2D).
        previous: the same layer's activations at the previous event (same
            shape), or ``None`` at the first event.
        dead_atol: a channel whose finite values span at most this much is dead.

    Returns:
        A :class:`LayerStats`.

    Raises:
        ValueError: when ``acts`` has fewer than 2 axes, is empty, or
            ``previous`` has another shape.
    """
    from actlog.grid import batch_maps

    acts = np.asarray(acts, dtype=np.float32)
    if acts.ndim < 2 or acts.size == 0:
        raise ValueError(
            f"acts must be (k, ..., C) with at least one value: probes first, channels "
            f"last. Received shape {acts.shape}."
        )
    if not dead_atol >= 0:
        raise ValueError(f"dead_atol must be a number >= 0. Received: {dead_atol!r}.")
    drift = None
    if previous is not None:
        previous = np.asarray(previous, dtype=np.float32)
        if previous.shape != acts.shape:
            raise ValueError(
                f"previous activations have shape {previous.shape} but the current ones "
                f"have {acts.shape}; drift needs the same layer and probes at both events."
            )
        drift = drift_sums(
            NUMPY, sketch(NUMPY, batch_maps(NUMPY, acts)), sketch(NUMPY, batch_maps(NUMPY, previous))
        )
    return summarize(reduce_layer(NUMPY, acts), drift, size=acts.size, dead_atol=dead_atol)


def cosine_drift(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - cosine similarity`` of two arrays taken as flat vectors.

    Non-finite values count as 0. Both vectors zero gives 0 (no change); exactly
    one zero gives 1.

    Returns:
        A float in ``[0, 2]``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_drift needs equal shapes. Received {a.shape} and {b.shape}.")
    a, b = a.reshape(-1), b.reshape(-1)
    a, b = np.where(np.isfinite(a), a, 0.0), np.where(np.isfinite(b), b, 0.0)
    # Cosine similarity ignores positive scaling: scale each vector by its largest
    # magnitude so that squares neither overflow nor underflow.
    a = a / max(np.abs(a).max(initial=0.0), 1e-300)
    b = b / max(np.abs(b).max(initial=0.0), 1e-300)
    return float(_drift_from_sums(np.dot(a, b), np.sqrt(np.dot(a, a)), np.sqrt(np.dot(b, b))))
