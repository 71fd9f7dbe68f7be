"""The class activation maps of a run (``ActivationLogger(cam=...)``), by probe and step."""

from __future__ import annotations

from typing import Any

import numpy as np

from actlog import metadata
from actlog.index import ImageRef, LogError, decode_png, tensor_to_numpy
from actlog.run_view import RunView


class ClassMapReader(RunView):
    """The Grad-CAM maps of a run's probes (part of :class:`~actlog.reader.Run`).

    ```python
    steps, pictures = run.class_maps(probe=0)      # (S,), uint8 (S, H, W, 3): map over the probe
    steps, maps, classes = run.class_map_values()  # float32 (S, k, h, w), int64 (S, k)
    ```
    """

    @property
    def class_map_layer(self) -> str | None:
        """The layer whose class maps the run holds (its manifest entry has ``cam``), or None."""
        found = [name for name in self.layers if "cam" in self.layer_info(name)]
        return found[-1] if found else None

    def class_map_info(self) -> dict[str, Any]:
        """The ``cam`` entry of the layer's manifest entry: ``classes``, ``score``, ``scale``, ``tags``."""
        return self.layer_info(self._cam_layer())["cam"]

    def class_map_steps(self) -> list[int]:
        """Steps at which class maps were logged (empty when the run has none)."""
        layer = self.class_map_layer
        if layer is None:
            return []
        series = self._series.get(metadata.cam_field_tag(layer, "class"))
        return series.steps() if series is not None else []

    def class_map_ref(self, probe: int, step: int | None = None) -> ImageRef | bytes:
        """Where the class-map picture of ``probe`` at ``step`` (default: the last) is stored."""
        series = self._cam_series(probe)
        return series.points[self._check_step(series, step, f"the class map of probe {probe}")]

    def class_map_refs(self, probe: int) -> tuple[list[int], list[ImageRef | bytes]]:
        """Every logged class-map picture of ``probe``: its steps and where each is stored."""
        series = self._cam_series(probe)
        steps = series.steps()
        return steps, [series.points[s] for s in steps]

    def class_maps(self, probe: int) -> tuple[np.ndarray, np.ndarray]:
        """Every logged class-map picture of ``probe``: ``(steps, uint8 (S, H, W, 3))``, the map
        (scaled to its maximum, resized) in colour over the probe image."""
        series = self._cam_series(probe)
        steps = series.steps()
        return (np.asarray(steps, dtype=np.int64),
                np.stack([decode_png(self.png(series.points[s])) for s in steps]))

    def class_map_values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The maps as computed and their classes: ``(steps, float32 (S, k, h, w), int64 (S, k))``."""
        layer = self._cam_layer()
        maps = self._series.get(metadata.cam_field_tag(layer, "map"))
        classes = self._series.get(metadata.cam_field_tag(layer, "class"))
        steps = [s for s in (classes.steps() if classes is not None else []) if s in maps.points]
        return (np.asarray(steps, dtype=np.int64),
                np.stack([tensor_to_numpy(maps.points[s]).astype(np.float32) for s in steps]),
                np.stack([tensor_to_numpy(classes.points[s]).astype(np.int64) for s in steps]))

    def _cam_layer(self) -> str:
        layer = self.class_map_layer
        if layer is None:
            raise LogError(
                f"No class maps logged in run {self.name!r} (ActivationLogger(cam=...) was not used)."
            )
        return layer

    def _cam_series(self, probe: int) -> Any:
        layer = self._cam_layer()
        self._check_probe(probe)
        series = self._series.get(metadata.cam_tag(layer, probe, self.probes))
        if series is None or series.kind != "image":
            raise LogError(f"Run {self.name!r} has no class map of probe {probe}.")
        return series
