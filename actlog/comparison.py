"""Two runs side by side: the same layer and probe at the same step.

A person who trains twice (another learning rate, seed or augmentation) wants
to see where the two networks part: the grids of one layer for one probe,
their statistics and their feature atlases, step against step.
:func:`compare` lines two runs up; the CLI (``actlog compare``) writes the
side-by-side frames as a GIF, and the dashboard's compare mode shows the same
pairs (its route's body is :func:`actlog.plugin.compare_route.compare_body`).

```python
cmp = actlog.compare("runs/lr_0.01", "runs/lr_0.1", "conv_1", probe=0)
cmp.steps                          # [0, 1, 2, 3]: steps with a grid in both runs
cmp.frame(2)                       # uint8 (H, W, 3): a's grid | gap | b's grid, each named
steps, frames = cmp.frames()       # one frame per common step
steps, a, b = cmp.scalars("std")   # the statistic in each run, at the steps both logged
atlas_a, atlas_b = cmp.atlas(2)    # each run's atlas at or before step 2 (None: none)
```

A step that one run did not log (the other logged more often, or trained
longer) is shown with that run's nearest earlier step, and labelled with the
step it really is: :meth:`Comparison.at` says which. Numpy and Pillow only.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

import numpy as np

from actlog import export, metadata
from actlog.reader import Atlas, LogError, Run, read

__all__ = ["GAP", "Comparison", "CompareError", "at_or_before", "compare"]

GAP = 8
"""White pixels between the two grids of a frame."""

_BACKGROUND = 255


class CompareError(LogError):
    """Two runs that cannot be compared as asked (a layer or step only one has, other probes)."""


def at_or_before(steps: list[int], step: int) -> int | None:
    """The last of the sorted ``steps`` that is ``<= step``, or None when all come after it."""
    i = bisect.bisect_right(steps, step)
    return steps[i - 1] if i else None


def _as_run(value: Run | str | os.PathLike[str], which: str) -> Run:
    if isinstance(value, Run):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read(value).run()
    raise CompareError(
        f"compare() takes actlog.Run objects or log directories; received {type(value).__name__} "
        f"for {which}."
    )


def _labels(a: Run, b: Run) -> tuple[str, str]:
    """What names each run in a frame: its run name, else its log directory's name."""
    if a.name != b.name:
        return a.name, b.name
    names = [os.path.basename(os.path.dirname(os.path.normpath(r.path))) or r.name for r in (a, b)]
    if names[0] == names[1]:
        return f"A: {names[0]}", f"B: {names[1]}"
    return names[0], names[1]


@dataclass(frozen=True)
class Side:
    """One run's part of a step: the step it really shows (its nearest at or before)."""

    run: Run
    label: str
    step: int


class Comparison:
    """Two runs lined up on one layer and probe. Made by :func:`compare`.

    Attributes:
        a, b: the two runs.
        layer: the layer display name.
        probe: the probe index.
        labels: what names each run in a frame.
        steps: the steps at which both runs logged the grid (or those of the
            ``steps`` given to :func:`compare`), ascending.
        all_steps: the steps at which either run logged it: what :meth:`frame`
            and :meth:`at` accept.
    """

    def __init__(self, a: Run, b: Run, layer: str, probe: int, steps: list[int] | None,
                 labels: tuple[str, str] | None) -> None:
        self.a, self.b, self.layer, self.probe = a, b, layer, probe
        self.labels = labels or _labels(a, b)
        for run, which in ((a, "a"), (b, "b")):
            if layer not in run.layers:
                common = [name for name in a.layers if name in b.layers]
                raise CompareError(
                    f"No layer {layer!r} in run {which} ({run.path}). Layers in both runs: "
                    f"{common or 'none'}; in a: {a.layers}; in b: {b.layers}."
                )
        if a.probes != b.probes:
            raise CompareError(
                f"The runs have different probes: a has {a.probes}, b has {b.probes}. A comparison "
                "shows the same probe image in both; log both runs with the same probes."
            )
        if isinstance(probe, bool) or not isinstance(probe, (int, np.integer)) or not 0 <= probe < a.probes:
            raise CompareError(f"No probe {probe!r}: both runs have {a.probes} probes (0..{a.probes - 1}).")
        self._steps = {"a": a.grid_steps(layer, probe), "b": b.grid_steps(layer, probe)}
        common = sorted(set(self._steps["a"]) & set(self._steps["b"]))
        if not common:
            raise CompareError(
                f"No step at which both runs logged {layer!r} for probe {probe}: a has "
                f"{_describe(self._steps['a'])}, b has {_describe(self._steps['b'])}."
            )
        if steps is not None:
            wanted = [int(s) for s in steps]
            missing = [s for s in wanted if s not in common]
            if missing:
                raise CompareError(f"Steps {missing} are not logged in both runs; common steps: "
                                   f"{_describe(common)}.")
            common = sorted(set(wanted))
        self.steps: list[int] = common
        self.all_steps: list[int] = sorted(set(self._steps["a"]) | set(self._steps["b"]))

    def __repr__(self) -> str:
        return (f"<actlog.comparison.Comparison {self.labels[0]!r} | {self.labels[1]!r}: {self.layer!r} "
                f"probe {self.probe}, {_describe(self.steps)} in common>")

    def at(self, step: int) -> tuple[Side, Side]:
        """What each run shows at ``step``: its grid of ``step``, else its nearest earlier one.

        Raises:
            CompareError: ``step`` is not a step of either run, or comes before
                one run's first grid.
        """
        known = isinstance(step, (int, np.integer)) and not isinstance(step, bool)
        if not known or int(step) not in self.all_steps:
            raise CompareError(f"No step {step!r} in either run; steps: {_describe(self.all_steps)}.")
        sides = []
        for which, run, label in (("a", self.a, self.labels[0]), ("b", self.b, self.labels[1])):
            found = at_or_before(self._steps[which], int(step))
            if found is None:
                raise CompareError(
                    f"Run {which} ({label}) has no grid of {self.layer!r} at or before step {step}; "
                    f"its first is at {self._steps[which][0]}."
                )
            sides.append(Side(run, label, found))
        return sides[0], sides[1]

    def grids(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Each run's grid at ``step`` (see :meth:`at`): uint8 ``(H, W, C)`` each."""
        a, b = self.at(step)
        return (a.run.grid(self.layer, self.probe, a.step), b.run.grid(self.layer, self.probe, b.step))

    def frame(self, step: int) -> np.ndarray:
        """One picture of ``step``: a's grid, :data:`GAP` white pixels, b's grid.

        Each grid has a white strip above it naming its run and the step it
        shows (shortened to the grid's width). Returns uint8 ``(H, Wa + GAP + Wb, 3)``.
        """
        columns = []
        for side, grid in zip(self.at(step), self.grids(step), strict=True):
            rgb = _rgb(grid)
            text = f"{side.label} \u00b7 {export.step_label(side.run, side.step)}"
            columns.append(np.concatenate([_strip(text, rgb.shape[1]), rgb]))
        height = max(c.shape[0] for c in columns)
        width = columns[0].shape[1] + GAP + columns[1].shape[1]
        out = np.full((height, width, 3), _BACKGROUND, np.uint8)
        out[: columns[0].shape[0], : columns[0].shape[1]] = columns[0]
        out[: columns[1].shape[0], columns[0].shape[1] + GAP :] = columns[1]
        return out

    def frames(self, progress: export.Progress | None = None) -> tuple[list[int], list[np.ndarray]]:
        """:meth:`frame` of every common step: ``(steps, frames)``."""
        images = []
        for done, step in enumerate(self.steps, start=1):
            images.append(self.frame(step))
            if progress is not None:
                progress(done, len(self.steps))
        return list(self.steps), images

    def export(self, output: str | os.PathLike[str], *, fps: float = 4.0, columns: int | None = None,
               progress: export.Progress | None = None) -> export.ExportResult:
        """Write :meth:`frames` to ``output``: ``.gif`` an animation, ``.png`` a filmstrip
        (as :func:`actlog.export.export` does for one run).

        Raises:
            actlog.export.ExportError: bad ``output``, ``fps`` or ``columns``.
        """
        path = export.check_options(output, fps, columns)
        steps, images = self.frames(progress)
        return export.write_frames(path, steps, images, None, fps=fps, columns=columns)

    def scalars(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A scalar statistic (``mean``, ``std``, ``sparsity``, ``dead_fraction``, ``drift``)
        of the layer in both runs, at the steps both logged it.

        Returns:
            ``(steps int64 (S,), values_a float64 (S,), values_b float64 (S,))``.
        """
        steps_a, values_a = self.a.scalar(self.layer, name)
        steps_b, values_b = self.b.scalar(self.layer, name)
        common, ia, ib = np.intersect1d(steps_a, steps_b, return_indices=True)
        return common.astype(np.int64), values_a[ia], values_b[ib]

    def table(self) -> str:
        """The scalar statistics of both runs at every common step, as aligned text columns
        (what ``actlog compare`` prints without ``-o``)."""
        found = {}
        for stat in metadata.SCALAR_STATS:
            series = [run.scalars(self.layer).get(stat) for run in (self.a, self.b)]
            if any(s is not None for s in series):
                found[stat] = [dict(zip(*s, strict=True)) if s is not None else {} for s in series]
        header = ["step", *(f"{stat} {side}" for stat in found for side in ("a", "b"))]
        rows = []
        for step in self.all_steps:
            row = [str(step)]
            for per_run in found.values():
                row += [f"{values[step]:.4g}" if step in values else "-" for values in per_run]
            rows.append(row)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [f"a: {self.labels[0]} ({self.a.path})", f"b: {self.labels[1]} ({self.b.path})",
                 f"layer {self.layer}, probe {self.probe}; '-': not logged at that step"]
        for row in [header, *rows]:
            lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        return "\n".join(lines)

    def atlas(self, step: int) -> tuple[Atlas | None, Atlas | None]:
        """Each run's feature atlas of the layer at or before ``step`` (None where it has none)."""
        found = []
        for run in (self.a, self.b):
            at = at_or_before(run.atlas_steps(self.layer), int(step))
            found.append(None if at is None else run.atlas(self.layer, at))
        return found[0], found[1]


def compare(
    a: Run | str | os.PathLike[str],
    b: Run | str | os.PathLike[str],
    layer: str,
    *,
    probe: int = 0,
    steps: list[int] | None = None,
    labels: tuple[str, str] | None = None,
) -> Comparison:
    """Line two runs up on one layer and probe.

    ```python
    cmp = actlog.compare("runs/seed0", "runs/seed1", "conv_0")
    steps, frames = cmp.frames()
    ```

    Args:
        a, b: :class:`actlog.reader.Run` objects (``actlog.read(dir).run(name)``),
            or log directories (their epoch run, or their only run).
        layer: a layer display name both runs watched.
        probe: probe index; both runs must have the same number of probes.
        steps: compare only these steps (each logged in both runs); default
            every common step.
        labels: names for the two runs in frames; default their run names, or
            their log directories' names when the run names are the same.

    Raises:
        CompareError (a ``ValueError``): a layer missing from a run, different
            probe counts, an unknown probe, no common step. ``actlog.LogError``
            for an unreadable log directory.
    """
    run_a, run_b = _as_run(a, "a"), _as_run(b, "b")
    return Comparison(run_a, run_b, layer, probe, steps, labels)


def _describe(steps: list[int]) -> str:
    from actlog.run_view import describe_steps

    return describe_steps(steps)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, :1], 3, axis=2) if image.shape[2] in (1, 2) else image[:, :, :3]


def _strip(text: str, width: int) -> np.ndarray:
    """A white band ``width`` pixels wide naming ``text`` (cut short with an ellipsis to fit)."""
    band = export.label(np.zeros((0, width, 3), np.uint8), text)
    while band.shape[1] > width and len(text) > 1:
        text = text[:-2] + "\u2026"
        band = export.label(np.zeros((0, width, 3), np.uint8), text)
    return band[:, :width]
