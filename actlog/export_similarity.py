"""Representation similarity out of a log: a printed matrix, or a heat map PNG.

What ``actlog similarity`` does (:mod:`actlog.cli`): a layer's linear CKA between
every two steps (:meth:`actlog.reader.Run.similarity`), or every two layers' at one
step (:meth:`actlog.reader.Run.layer_similarity`), as a table with its heads, or as a
picture: one square cell per pair in viridis (0 dark, 1 yellow; magenta where the
CKA is undefined), labelled below.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from actlog import grid
from actlog.export import ExportError, check_output, label
from actlog.png import encode_png
from actlog.reader import Run

MAX_SIDE = 640
"""Largest side of a heat map in pixels (before its label): cells shrink to fit, never below 1 px."""

UNDEFINED = "nan"
"""How the printed table shows an undefined CKA."""


@dataclass(frozen=True)
class Similarity:
    """One CKA matrix and what its rows and columns are."""

    heads: list[str]
    """The label of each row (and column): steps, or layer names."""
    matrix: np.ndarray
    """float64 ``(n, n)``."""
    title: str
    """What it is, for a caption."""


def layer_over_steps(run: Run, layer: str) -> Similarity:
    """``layer``'s CKA between every two steps of ``run``."""
    steps, matrix = run.similarity(layer)
    return Similarity([str(s) for s in steps], matrix, f"{layer}: linear CKA between {run.step_axis}s")


def layers_at_step(run: Run, step: int | None) -> Similarity:
    """CKA between every two layers of ``run`` at ``step`` (None: the last)."""
    layers, matrix = run.layer_similarity(step)
    shown = step if step is not None else max(run.grams(layers[0])[0].tolist())
    return Similarity(layers, matrix, f"linear CKA between layers at {run.step_axis} {shown}")


def table(found: Similarity, corner: str = "") -> str:
    """The matrix as text, row and column heads included, values to 3 decimals."""
    cells = [[UNDEFINED if not math.isfinite(v) else f"{v:.3f}" for v in row] for row in found.matrix]
    width = max([len(h) for h in found.heads] + [len(c) for row in cells for c in row] + [5])
    first = max([len(h) for h in found.heads] + [len(corner)])
    lines = [f"{corner:<{first}}  " + " ".join(f"{h:>{width}}" for h in found.heads)]
    for head, row in zip(found.heads, cells, strict=True):
        lines.append(f"{head:<{first}}  " + " ".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)


def heatmap(found: Similarity) -> np.ndarray:
    """uint8 RGB picture of the matrix, cell ``(i, j)`` at row ``i``, column ``j``, captioned."""
    n = max(len(found.heads), 1)
    cell = max(1, min(48, MAX_SIDE // n))
    values = np.clip(np.asarray(found.matrix, dtype=np.float64), 0.0, 1.0)
    values = np.where(np.isfinite(found.matrix), values, np.nan)
    big = np.repeat(np.repeat(values, cell, axis=0), cell, axis=1)
    image = grid.colorize(big, "viridis")
    heads = found.heads
    span = f"{heads[0]}..{heads[-1]}" if len(heads) > 1 else (heads[0] if heads else "none")
    return label(image, f"{found.title} ({span}); 0 dark, 1 yellow")


def check_png(output: str | os.PathLike[str]) -> str:
    """Check, before anything is read, that ``output`` is a ``.png`` that can be written."""
    path = os.fspath(output)
    if os.path.splitext(path)[1].lower() != ".png":
        raise ExportError(f"A similarity heat map is a PNG: give OUT.png; received {path!r}.")
    return check_output(path)


def write_png(found: Similarity, output: str | os.PathLike[str]) -> tuple[str, tuple[int, int]]:
    """Write :func:`heatmap` as a PNG; returns its path and ``(width, height)``."""
    path = check_png(output)
    image = heatmap(found)
    data = encode_png(image)
    with open(path, "wb") as file:
        file.write(data)
    return path, (int(image.shape[1]), int(image.shape[0]))
