"""Representation similarity: linear CKA between a layer's activations at two steps.

Linear centred kernel alignment (Kornblith et al., ICML 2019, "Similarity of
Neural Network Representations Revisited") compares two representations of the
same ``k`` inputs, ``X`` (``k x p``) and ``Y`` (``k x q``), through their centred
Gram matrices ``K = Xc Xc^T`` and ``L = Yc Yc^T`` (``Xc``: ``X`` with each column's
mean over the ``k`` inputs subtracted)::

    CKA(K, L) = <K, L>_F / (||K||_F ||L||_F)

It is 1 for representations equal up to a rotation and an isotropic scale, and
does not depend on how many features either has, so any two steps of a layer,
or any two layers at one step, compare. A ``k x k`` Gram per layer per event is
all it needs: :func:`centred_gram` runs inside the probe function, on the device,
on the float activations (never the drawn uint8 levels), and each event stores
it as ``{layer}/gram`` (:func:`actlog.metadata.gram_tag`).

**Undefined values are NaN.** A layer whose activations are the same for every
probe (a constant or dead layer: ``K = 0``) has no direction to compare, and a
Gram made of NaN or Inf activations is NaN throughout (:func:`centred_gram`):
the CKA of either with anything is NaN, never a made-up 0 or 1.

This module is plain numpy on the host (:func:`linear_cka`, :func:`cka_matrix`)
and ``xp``-generic for the device half (:func:`centred_gram`, see
:mod:`actlog.arrays`); it imports nothing else of actlog's.

```python
steps, matrix = actlog.read("runs/exp1").run().similarity("conv_1")
matrix[0, -1]          # CKA between the first and the last logged step
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def centred_gram(xp: Any, acts: Any) -> Any:
    """The centred Gram matrix ``Xc Xc^T`` (float32 ``(k, k)``) of ``(k, ...)`` activations.

    Each probe's activations are one row of ``X``. The rows are first shifted by the
    first probe's row, then multiplied, then the ``k x k`` product is centred on both
    sides: ``H (X - 1 x0^T)(X - 1 x0^T)^T H = H X X^T H``, as ``H 1 = 0``. Shifting
    keeps what centring the rows keeps (the differences between probes, which a large
    common part would otherwise round away in float32), and unlike subtracting the
    probes' mean it reads no reduction inside the product, which compilers then fuse
    into every output element (XLA on the CPU: ten times the product's cost).

    Any NaN or Inf among the activations makes the whole matrix NaN (the centring's
    mean over every entry carries it everywhere), so that every CKA made from it reads
    as undefined rather than as a part of the layer.
    """
    k = acts.shape[0]
    rows = xp.reshape(xp.cast(acts, "float32"), (k, -1))
    shifted = rows - rows[:1]
    gram = xp.einsum("id,jd->ij", shifted, shifted)
    columns = xp.expand_dims(xp.sum(gram, axis=0), 0) / float(k)
    rows_ = xp.expand_dims(xp.sum(gram, axis=1), 1) / float(k)
    return gram - columns - rows_ + xp.sum(gram) / float(k * k)


def linear_cka(gram_a: np.ndarray, gram_b: np.ndarray) -> float:
    """Linear CKA of two centred Gram matrices of the same probes (float64 arithmetic).

    Returns NaN where it is undefined: either matrix not finite, or zero (a layer
    whose activations do not vary over the probes).
    """
    a = np.asarray(gram_a, dtype=np.float64)
    b = np.asarray(gram_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(
            f"Gram matrices must be square and of the same shape; received {a.shape} and {b.shape}."
        )
    return float(cka_matrix([a, b])[0, 1])


def cka_matrix(grams: Sequence[np.ndarray], others: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Linear CKA between every pair: float64 ``(len(grams), len(others))``.

    ``others`` defaults to ``grams`` (then the matrix is symmetric, with 1 on the
    diagonal where defined). Undefined pairs (see :func:`linear_cka`) are NaN.
    """
    left = _unit_rows(grams)
    right = left if others is None else _unit_rows(others)
    if left.shape[1] != right.shape[1]:
        raise ValueError(
            f"Gram matrices of {_side(left)} and of {_side(right)} probes cannot be compared: "
            "CKA needs the same probes on both sides."
        )
    matrix = left @ right.T
    if others is None:
        # Exact where it is defined; rounding would otherwise leave 0.9999999999999998.
        defined = np.isfinite(np.diag(matrix))
        np.fill_diagonal(matrix, np.where(defined, 1.0, np.nan))
    return np.clip(matrix, -1.0, 1.0)


def _unit_rows(grams: Sequence[np.ndarray]) -> np.ndarray:
    """Each Gram flattened and scaled to unit Frobenius norm; NaN rows where undefined."""
    if not len(grams):
        return np.zeros((0, 0))
    rows = np.stack([np.asarray(g, dtype=np.float64).reshape(-1) for g in grams])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    bad = ~np.isfinite(rows).all(axis=1, keepdims=True) | (norms == 0) | ~np.isfinite(norms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad, np.nan, rows / np.where(bad, 1.0, norms))


def _side(rows: np.ndarray) -> int:
    return int(round(np.sqrt(rows.shape[1])))
