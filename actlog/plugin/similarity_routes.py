"""The dashboard's representation-similarity answers: a layer's CKA heat map, and the
overview's settling curves (each layer's CKA to its last step).

Bodies only; :mod:`.plugin` routes the requests here and checks their parameters.
Gram matrices are read through the catalog (:meth:`.catalog.Catalog.grams`), and CKA
is computed here with :func:`actlog.similarity.cka_matrix`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from actlog import similarity

MAX_HEATMAP_STEPS = 200
"""Steps a heat map shows at most (a batch run may log thousands): beyond that, steps evenly
spread over the run, the first and the last always among them, and a ``note`` says so."""


def _cells(matrix: np.ndarray) -> list[list[float | None]]:
    """Rows of the matrix as JSON sends them: four decimals, null where CKA is undefined."""
    return [[round(float(v), 4) if math.isfinite(v) else None for v in row] for row in matrix]


def _spread(count: int, most: int) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def heatmap_body(run: str, layer: str, step_axis: str, version: int,
                 found: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """``/similarity``: ``steps`` and ``matrix`` (``matrix[i][j]``: CKA between ``steps[i]`` and
    ``steps[j]``), or none and a ``note`` for a layer without Gram matrices."""
    body: dict[str, Any] = {"run": run, "layer": layer, "step_axis": step_axis, "version": version,
                            "steps": [], "matrix": [], "note": None}
    if found is None:
        body["note"] = (f"No Gram matrices were logged for layer {layer!r}: the log was written "
                        "by an actlog without representation similarity.")
        return body
    steps, grams = found
    kept = _spread(len(steps), MAX_HEATMAP_STEPS)
    if len(kept) < len(steps):
        body["note"] = f"{len(kept)} of the {len(steps)} logged steps, evenly spread."
    body["steps"] = [int(steps[i]) for i in kept]
    body["matrix"] = _cells(similarity.cka_matrix([grams[i] for i in kept]))
    return body


def settling_body(run: str, step_axis: str, version: int,
                  found: dict[str, tuple[np.ndarray, np.ndarray] | None]) -> dict[str, Any]:
    """``/similarity_overview``: per layer, its CKA between every step and its last
    (1 at the last step; a layer that has settled stays near 1 before it)."""
    layers = []
    for name, grams in found.items():
        if grams is None:
            layers.append({"name": name, "steps": [], "values": [], "last": None})
            continue
        steps, stack = grams
        column = similarity.cka_matrix(list(stack), [stack[-1]])[:, 0]
        layers.append({
            "name": name, "steps": [int(s) for s in steps], "last": int(steps[-1]),
            "values": [row[0] for row in _cells(column[:, None])],
        })  # fmt: skip
    return {"run": run, "step_axis": step_axis, "version": version, "layers": layers}
