"""Summary statistics of one layer's activations on the probes, in plain numpy.

A grid shows what a layer responds to; these numbers say how it is doing and
how fast it is changing: mean and spread, how much of it is exactly zero
(ReLU sparsity), how many channels never respond (dead), and how far the
activations moved since the previous logged event (drift). Per-channel values
cover every channel of the layer, not only the ones shown in the grid.

```python
first = layer_stats(acts_epoch_0)                     # drift is None
later = layer_stats(acts_epoch_1, previous=acts_epoch_0)
later.drift, later.dead_fraction
```

NaN and Inf never raise: they are left out of every statistic and reported
through :attr:`LayerStats.finite`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one layer over all probes and positions at one event.

    Attributes:
        mean, std: over every finite value.
        sparsity: fraction of finite values exactly equal to 0.
        dead_fraction: fraction of channels that are constant over every probe and
            position (``max - min <= dead_atol``); a channel with no finite value
            counts as dead.
        drift: ``1 - cosine similarity`` between the whole layer's activations and
            those of the previous event, in ``[0, 2]``; ``None`` at the first event.
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


def _drift_from_sums(dot: np.ndarray, norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """``1 - cos`` from dot products and norms, with the zero-vector cases defined.

    Both vectors zero: nothing changed, drift 0. Exactly one zero: there is no
    angle, but a channel that died (or woke up) has changed completely: drift 1.
    """
    zero_a, zero_b = norm_a == 0, norm_b == 0
    # Dividing by one norm at a time keeps a product of two tiny norms from
    # underflowing to 0.
    cosine = np.clip(
        dot / np.where(zero_a, 1.0, norm_a) / np.where(zero_b, 1.0, norm_b), -1.0, 1.0
    )
    return np.where(zero_a & zero_b, 0.0, np.where(zero_a | zero_b, 1.0, 1.0 - cosine))

def _paired_columns(a: np.ndarray, b: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 ``(-1, columns)`` with entries non-finite in either zeroed."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, columns)
    b = np.asarray(b, dtype=np.float64).reshape(-1, columns)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(both, a, 0.0), np.where(both, b, 0.0)
    # Cosine similarity ignores positive scaling of either vector, so scale each
    # column of each array by its own largest magnitude: squares then neither
    # overflow nor underflow, and an all-zero column stays exactly zero.
    peak_a = np.abs(a).max(axis=0, initial=0.0)
    peak_b = np.abs(b).max(axis=0, initial=0.0)
    return a / np.where(peak_a > 0, peak_a, 1.0), b / np.where(peak_b > 0, peak_b, 1.0)

def cosine_drift(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - cosine similarity`` of two arrays taken as flat vectors.

    Positions where either value is NaN/Inf are left out. Both vectors zero gives
    0 (no change); exactly one zero gives 1.

    Args:
        a, b: arrays of the same shape.

    Returns:
        A float in ``[0, 2]``.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"cosine_drift needs equal shapes. Received {a.shape} and {b.shape}.")
    x, y = _paired_columns(a, b, 1)
    drift = _drift_from_sums(
        (x * y).sum(axis=0), np.sqrt((x * x).sum(axis=0)), np.sqrt((y * y).sum(axis=0))
    )
    return float(drift[0])


def layer_stats(
    acts: np.ndarray, previous: np.ndarray | None = None, *, dead_atol: float = 1e-6
) -> LayerStats:
    """Statistics of one layer's activations on all probes.

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
    acts = np.asarray(acts)
    if acts.ndim < 2 or acts.size == 0:
        raise ValueError(
            f"acts must be (k, ..., C) with at least one value: probes first, channels "
            f"last. Received shape {acts.shape}."
        )
    if not dead_atol >= 0:
        raise ValueError(f"dead_atol must be a number >= 0. Received: {dead_atol!r}.")
    if previous is not None:
        previous = np.asarray(previous)
        if previous.shape != acts.shape:
            raise ValueError(
                f"previous activations have shape {previous.shape} but the current ones "
                f"have {acts.shape}; drift needs the same layer and probes at both events."
            )
    channels = acts.shape[-1]
    values = np.asarray(acts, dtype=np.float64).reshape(-1, channels)
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    if all_finite and (previous is None or np.isfinite(previous).all()):
        return _finite_stats(values, previous, dead_atol)
    count = int(finite.sum())
    clean = np.where(finite, values, 0.0)

    if count:
        mean = float(clean.sum() / count)
        std = float(np.sqrt((np.where(finite, values - mean, 0.0) ** 2).sum() / count))
        sparsity = float(((values == 0) & finite).sum() / count)
    else:
        mean = std = sparsity = float("nan")

    per_count = finite.sum(axis=0)
    has_any = per_count > 0
    channel_mean = np.divide(
        clean.sum(axis=0), per_count, out=np.full(channels, np.nan), where=has_any
    )
    channel_max = np.where(has_any, np.where(finite, values, -np.inf).max(axis=0), np.nan)
    channel_min = np.where(has_any, np.where(finite, values, np.inf).min(axis=0), np.nan)
    dead = ~has_any | (channel_max - channel_min <= dead_atol)

    drift = channel_drift = None
    if previous is not None:
        drift = cosine_drift(acts, previous)
        x, y = _paired_columns(acts, previous, channels)
        channel_drift = _drift_from_sums(
            (x * y).sum(axis=0), np.sqrt((x * x).sum(axis=0)), np.sqrt((y * y).sum(axis=0))
        ).astype(np.float32)

    return LayerStats(
        mean=mean,
        std=std,
        sparsity=sparsity,
        dead_fraction=float(dead.mean()),
        drift=drift,
        channel_mean=channel_mean.astype(np.float32),
        channel_max=channel_max.astype(np.float32),
        channel_drift=channel_drift,
        finite=all_finite,
    )


def _finite_stats(values: np.ndarray, previous: np.ndarray | None, dead_atol: float) -> LayerStats:
    """``layer_stats`` when every value is finite: the common case, in a few vectorised passes."""
    channels = values.shape[1]
    channel_max, channel_min = values.max(axis=0), values.min(axis=0)
    drift = channel_drift = None
    if previous is not None:
        # float64 squares neither overflow nor underflow for activations a network produces
        before = np.asarray(previous, dtype=np.float64).reshape(-1, channels)
        dot = np.einsum("ij,ij->j", values, before)
        norm_now = np.einsum("ij,ij->j", values, values)
        norm_before = np.einsum("ij,ij->j", before, before)
        channel_drift = _drift_from_sums(dot, np.sqrt(norm_now), np.sqrt(norm_before))
        drift = float(
            _drift_from_sums(dot.sum(), np.sqrt(norm_now.sum()), np.sqrt(norm_before.sum()))
        )
        channel_drift = channel_drift.astype(np.float32)
    return LayerStats(
        mean=float(values.mean()),
        std=float(values.std()),
        sparsity=float(np.count_nonzero(values == 0) / values.size),
        dead_fraction=float((channel_max - channel_min <= dead_atol).mean()),
        drift=drift,
        channel_mean=values.mean(axis=0).astype(np.float32),
        channel_max=channel_max.astype(np.float32),
        channel_drift=channel_drift,
        finite=True,
    )
