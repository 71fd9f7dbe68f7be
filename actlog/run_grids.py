"""Grids and tiles of a run: the pictures of each layer for each probe, by step."""

from __future__ import annotations

from typing import Any

import numpy as np

from actlog import metadata
from actlog.index import ImageRef, LogError, decode_png
from actlog.run_view import RunView, describe_ints


class GridReader(RunView):
    """The grids of a run's layers, their tiles and the probe images (part of :class:`~actlog.reader.Run`)."""

    # -- grids ---------------------------------------------------------------

    def grid_steps(self, layer: str, probe: int) -> list[int]:
        """Steps at which the grid of ``layer`` for ``probe`` was logged."""
        return self._image_series(layer, probe).steps()

    def grid_ref(self, layer: str, probe: int, step: int | None = None) -> ImageRef:
        """Where the grid of ``layer`` for ``probe`` at ``step`` (default: last) is stored."""
        series = self._image_series(layer, probe)
        step = self._check_step(series, step, f"the grid of {layer!r} for probe {probe}")
        return series.points[step]

    def grid(self, layer: str, probe: int, step: int | None = None) -> np.ndarray:
        """The activation grid of ``layer`` for ``probe`` at ``step``.

        Args:
            layer: a layer display name, one of :attr:`layers`.
            probe: probe index, ``0 <= probe < probes``.
            step: a logged step; ``None`` (default) means the last one.

        Returns:
            uint8 array ``(H, W, C)``, exactly the pixels that were logged.
        """
        return decode_png(self.png(self.grid_ref(layer, probe, step)))

    def grids(self, layer: str, probe: int) -> tuple[np.ndarray, np.ndarray]:
        """Every logged grid of ``layer`` for ``probe``, stacked over steps.

        Returns:
            ``(steps, grids)``: int64 ``(S,)`` and uint8 ``(S, H, W, C)``.

        Raises:
            LogError: when the grid changed size between steps (a later ``fit``
                logged the layer differently); read those with :meth:`grid`.
        """
        series = self._image_series(layer, probe)
        steps = series.steps()
        images = [decode_png(self.png(series.points[s])) for s in steps]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            changes = [
                f"{image.shape} at step {steps[k]}"
                for k, image in enumerate(images)
                if k == 0 or images[k - 1].shape != image.shape
            ]
            raise LogError(
                f"The grid of {layer!r} for probe {probe} changes size between steps "
                f"({', '.join(changes)}); read single steps with Run.grid()."
            )
        if not images:
            return np.zeros((0,), np.int64), np.zeros((0, 0, 0, 0), np.uint8)
        return np.asarray(steps, dtype=np.int64), np.stack(images)

    def tile(self, layer: str, probe: int, channel: int, step: int | None = None) -> np.ndarray:
        """The tile of one channel in the grid of ``layer`` for ``probe``.

        Args:
            layer: a layer display name.
            probe: probe index.
            channel: the channel index in the layer's output (not the tile
                position); must be one of :meth:`channels` ``(layer, step)``.
            step: a logged step; ``None`` means the last one.

        Returns:
            uint8 ``(tile_height, tile_width, C)``, cut with the layout that
            was in force at ``step``.
        """
        series = self._image_series(layer, probe)
        step = self._check_step(series, step, f"the grid of {layer!r} for probe {probe}")
        box = self._tile_box(layer, channel, step)
        return _crop(self.grid(layer, probe, step), box, layer)

    def tiles(self, layer: str, probe: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """One channel's tile at every logged step: ``(steps, uint8 (S, th, tw, C))``."""
        steps = self.grid_steps(layer, probe)
        crops = [self.tile(layer, probe, channel, s) for s in steps]
        if not crops:
            return np.zeros((0,), np.int64), np.zeros((0, 0, 0, 0), np.uint8)
        if len({c.shape for c in crops}) > 1:
            raise LogError(
                f"Channel {channel} of {layer!r} changes tile size between steps; read single "
                "steps with Run.tile()."
            )
        return np.asarray(steps, dtype=np.int64), np.stack(crops)

    def probe_image(self, probe: int) -> np.ndarray | None:
        """The probe input itself as logged (uint8 ``(H, W, C)``), or ``None``.

        Only image-like probes are logged as images.
        """
        ref = self.probe_image_ref(probe)
        return None if ref is None else decode_png(self.png(ref))

    def probe_image_ref(self, probe: int) -> Any:
        """Where the probe image is stored (for :meth:`png`), or ``None``."""
        self._check_probe(probe)
        tags = self.manifest.get("probe_tags") or [
            metadata.probe_image_tag(i, self.probes) for i in range(self.probes)
        ]
        series = self._series.get(tags[probe]) if probe < len(tags) else None
        if series is None or series.kind != "image" or not series.points:
            return None
        return series.points[series.steps()[-1]]

    def _tile_box(self, layer: str, channel: int, step: int | None = None) -> tuple[int, int, int, int]:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise LogError(f"channel must be an integer; received {channel!r}.")
        layout = self.layout(layer, step)
        try:
            return layout.channel_box(int(channel))
        except KeyError:
            raise LogError(
                f"Channel {channel} of layer {layer!r} is not in its grid; "
                f"channels shown: {describe_ints(list(layout.channels))}."
            ) from None


def _crop(grid: np.ndarray, box: tuple[int, int, int, int], layer: str) -> np.ndarray:
    y, x, height, width = box
    if y + height > grid.shape[0] or x + width > grid.shape[1]:
        raise LogError(
            f"The grid of {layer!r} is {grid.shape[1]}x{grid.shape[0]} pixels, smaller than "
            "its manifest layout says; it was logged with another layout."
        )
    return grid[y : y + height, x : x + width].copy()
