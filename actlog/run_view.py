"""What every view of a :class:`~actlog.reader.Run` shares: its manifests, layers and checks.

A run's manifests say which layers were watched, how their grids were laid
out and which tags hold what; :class:`RunView` keeps that index current as
:meth:`Log.refresh <actlog.reader.Log.refresh>` reads more, and owns the checks
(layer, probe, step) whose messages every reader method gives alike. The
grids, the statistics and the atlas are read by the subclasses in
:mod:`actlog.run_grids`, :mod:`actlog.run_stats` and :mod:`actlog.run_atlas`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actlog import metadata
from actlog.grid import GridLayout
from actlog.index import EventIndex, ImageStore, LogError, Series


def describe_steps(steps: list[int]) -> str:
    if not steps:
        return "no steps"
    if len(steps) <= 12:
        return "steps " + ", ".join(str(s) for s in steps)
    return f"{len(steps)} steps from {steps[0]} to {steps[-1]}"


class RunView:
    """One run's manifests and event index, and the checks shared by its readers.

    Attributes:
        name: the run's path relative to the log directory, e.g. ``"activations"``.
        path: the run's directory.
        manifest: the last manifest written, as a dict (see :func:`actlog.metadata.manifest`).
    """

    def __init__(self, name: str, data: EventIndex, images: ImageStore) -> None:
        self.name = name
        self.path = data.directory
        self._data = data
        self._images = images
        self._version = -1
        self._sync()

    def _sync(self) -> None:
        """Rebuild what is derived from the manifests, when new ones were read."""
        if self._version == self._data.version:
            return
        self._version = self._data.version
        ordered = sorted(self._data.manifests, key=lambda m: (m[0], m[1]))
        self.manifest: dict[str, Any] = ordered[-1][2]
        self._layers: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for step, _, manifest in ordered:
            for layer in manifest.get("layers", []):
                self._layers.pop(layer["name"], None)
                self._layers[layer["name"]] = layer  # latest entry, in the latest order
                self._history.setdefault(layer["name"], []).append((step, layer))
        self._probes = max(int(m.get("probes", 0)) for _, _, m in ordered)

    @property
    def _series(self) -> dict[str, Series]:
        return self._data.series

    # -- what the run holds ------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Display names of the watched layers (every manifest's), in the order last logged."""
        self._sync()
        return list(self._layers)

    @property
    def probes(self) -> int:
        """Number of probe images."""
        self._sync()
        return self._probes

    @property
    def step_axis(self) -> str:
        """``"epoch"`` (epoch run) or ``"global_step"`` (batch run)."""
        self._sync()
        return str(self.manifest.get("step_axis", metadata.STEP_AXIS_EPOCH))

    @property
    def steps(self) -> list[int]:
        """Every step at which any layer of the run has a grid or a statistic."""
        found: set[int] = set()
        for layer in self.layers:
            for tag in self._layer_tags(layer):
                if tag in self._series:
                    found.update(self._series[tag].points)
        return sorted(found)

    @property
    def tags(self) -> list[str]:
        """Every tag in the run's event files, actlog's own and any other."""
        return sorted(self._series)

    @property
    def bytes(self) -> int:
        """Size of the run's event files, as of the last :meth:`Log.refresh`."""
        return sum(file.size for file in self._data.files.values())

    @property
    def version(self) -> int:
        """Grows whenever :meth:`Log.refresh` read something new for this run."""
        return self._data.version

    def layer_info(self, layer: str, step: int | None = None) -> dict[str, Any]:
        """The manifest entry of ``layer`` that describes ``step`` (default: the latest)."""
        self._sync()
        entry = self._layer(layer)
        if step is None:
            return entry
        history = self._history[layer]
        before = [e for s, e in history if s <= step]
        return before[-1] if before else history[0][1]

    def layout(self, layer: str, step: int | None = None) -> GridLayout:
        """The :class:`~actlog.grid.GridLayout` of ``layer``'s grid at ``step``."""
        info = self.layer_info(layer, step)
        return GridLayout.from_dict(info["grid"], info.get("channels", []))

    def channels(self, layer: str, step: int | None = None) -> list[int]:
        """Channel index of each tile of ``layer``'s grid, in row-major tile order."""
        return [int(c) for c in self.layer_info(layer, step).get("channels", [])]

    def png(self, ref: Any) -> bytes:
        """The PNG bytes of an image from :meth:`grid_ref` (or of a probe image)."""
        return ref if isinstance(ref, bytes) else self._images.image(ref)

    # -- helpers -------------------------------------------------------------

    def _layer(self, layer: str) -> dict[str, Any]:
        self._sync()
        try:
            return self._layers[layer]
        except KeyError:
            from actlog.checks import suggest

            raise LogError(
                f"No layer {layer!r} in run {self.name!r}. Layers: {self.layers}."
                f"{suggest(layer, self.layers)}"
            ) from None

    def _layer_tags(self, layer: str) -> list[str]:
        tags = [metadata.grid_tag(layer, i, self.probes) for i in range(self.probes)]
        for _, info in self._history.get(layer, []):
            tags += list(info.get("tags") or [])
        tags += [metadata.stat_tag(layer, s) for s in metadata.SCALAR_STATS]
        tags += [metadata.stat_tag(layer, s) for s in metadata.CHANNEL_STATS]
        tags += [metadata.atlas_tag(layer), metadata.actmax_tag(layer)]
        return tags

    def _check_probe(self, probe: int) -> None:
        if isinstance(probe, bool) or not isinstance(probe, (int, np.integer)):
            raise LogError(f"probe must be an integer index; received {probe!r}.")
        if not 0 <= probe < self.probes:
            raise LogError(
                f"No probe {probe} in run {self.name!r}: it has {self.probes} probes "
                f"(0..{self.probes - 1})."
            )

    def _image_series(self, layer: str, probe: int) -> Series:
        info = self._layer(layer)
        self._check_probe(probe)
        tags = info.get("tags") or []
        tag = tags[probe] if probe < len(tags) else metadata.grid_tag(layer, probe, self.probes)
        series = self._series.get(tag)
        if series is None or series.kind != "image":
            raise LogError(
                f"Run {self.name!r} has no grid of layer {layer!r} for probe {probe} "
                f"(tag {tag!r} is missing)."
            )
        return series

    @staticmethod
    def _check_step(series: Series, step: int | None, what: str) -> int:
        steps = series.steps()
        if not steps:
            raise LogError(f"No steps logged for {what}.")
        if step is None:
            return steps[-1]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise LogError(f"step must be an integer; received {step!r}.")
        if int(step) not in series.points:
            raise LogError(f"No step {step} for {what}; logged: {describe_steps(steps)}.")
        return int(step)


def describe_ints(values: list[int]) -> str:
    if values and values == list(range(values[0], values[0] + len(values))) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return str(values)
