"""The feature atlas and activation maximisation of a run, by layer and step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import metadata
from actlog.atlas import AtlasLayout, Field
from actlog.index import LogError, decode_png, tensor_to_numpy
from actlog.run_view import RunView, describe_ints


@dataclass(frozen=True, eq=False)
class Atlas:
    """One layer's feature atlas at one step, from :meth:`Run.atlas`.

    Rows of every array follow the grid's tiles: row ``t`` is channel
    ``channels[t]`` (:meth:`row` finds it); columns are the ``k`` examples,
    best first.

    Attributes:
        layer: the layer's display name.
        step: the atlas step.
        channels: channel of each row (the grid's tile order).
        index: int64 ``(n, k)`` indices into the atlas pool (-1 = empty slot).
        position: int64 ``(n, k, 2)``: ``(y, x)`` of the unit in the layer's output.
        value: float32 ``(n, k)``: the activation there.
        box: int64 ``(n, k, 4)``: ``(top, left, height, width)`` of the unit's
            receptive field in input pixels (may extend past the image).
        change: float32 ``(n,)``: Jaccard distance of each channel's top-k
            image set to the previous atlas event's; ``None`` at the first.
        layout: where each crop is in :attr:`image` (:class:`actlog.atlas.AtlasLayout`).
        receptive_field: the layer's receptive field, ``None`` for a layer
            without spatial maps (its crops are the whole image).
        pool: size of the pool.
    """

    layer: str
    step: int
    channels: tuple[int, ...]
    index: np.ndarray
    position: np.ndarray
    value: np.ndarray
    box: np.ndarray
    change: np.ndarray | None
    layout: AtlasLayout
    receptive_field: Field | None
    pool: int
    ref: Any = field(default=None, repr=False)
    """Where the picture is stored (for :meth:`Run.png`)."""
    _decode: Any = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return self.layout.k

    @property
    def image(self) -> np.ndarray:
        """The atlas picture, uint8 ``(H, W, 3)`` (decoded on each access)."""
        return self._decode(self.ref)

    def row(self, channel: int) -> int:
        """The row (cell, tile) of ``channel``; :class:`LogError` if it is not shown."""
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise LogError(f"channel must be an integer; received {channel!r}.")
        try:
            return self.channels.index(int(channel))
        except ValueError:
            raise LogError(
                f"Channel {channel} of layer {self.layer!r} is not in its atlas; "
                f"channels shown: {describe_ints(list(self.channels))}."
            ) from None

    def crops(self, channel: int, image: np.ndarray | None = None) -> np.ndarray:
        """The crops of ``channel``, best first, cut from :attr:`image` (or ``image``):
        uint8 ``(k, h, w, 3)``. Empty slots are the background colour."""
        row = self.row(channel)
        picture = self.image if image is None else image
        out = []
        for rank in range(self.k):
            y, x, height, width = self.layout.crop_box(row, rank)
            out.append(picture[y : y + height, x : x + width])
        return np.stack(out)

    def cell(self, channel: int) -> np.ndarray:
        """The cell of ``channel`` in :attr:`image`, as drawn: uint8 ``(h, w, 3)``."""
        y, x, height, width = self.layout.cell_box(self.row(channel))
        return self.image[y : y + height, x : x + width].copy()


class AtlasReader(RunView):
    """The feature atlas and activation maximisation of a run's layers.

    Part of :class:`~actlog.reader.Run`.
    """

    # -- feature atlas -----------------------------------------------------

    def atlas_steps(self, layer: str) -> list[int]:
        """Steps at which ``layer``'s feature atlas was logged (empty when it has none)."""
        self._layer(layer)
        series = self._series.get(metadata.atlas_tag(layer))
        return series.steps() if series is not None and series.kind == "image" else []

    def atlas(self, layer: str, step: int | None = None) -> Atlas:
        """The feature atlas of ``layer`` at ``step`` (default: the last one logged).

        ```python
        atlas = run.atlas("conv_1")
        atlas.index[atlas.row(5)]    # channel 5's top-k pool indices, best first
        atlas.crops(5)               # uint8 (k, h, w, 3)
        ```

        Raises:
            LogError: an unknown layer, a layer without an atlas, or a step
                without one (the message lists those logged).
        """
        series = self._series.get(metadata.atlas_tag(layer))
        if series is None or series.kind != "image":
            with_atlas = [name for name in self.layers if self.atlas_steps(name)]
            self._layer(layer)
            raise LogError(
                f"No feature atlas logged for layer {layer!r} in run {self.name!r}; layers with "
                f"one: {with_atlas or 'none (ActivationLogger(atlas=...) was not used)'}."
            )
        step = self._check_step(series, step, f"the atlas of {layer!r}")
        info = self.layer_info(layer, step)
        entry = info.get("atlas")
        if entry is None:
            raise LogError(f"The manifest of run {self.name!r} has no atlas entry for {layer!r}.")
        channels = [int(c) for c in info.get("channels", [])]

        def tensor(name: str, dtype: Any) -> np.ndarray | None:
            found = self._series.get(metadata.atlas_tag(layer, name))
            if found is None or step not in found.points:
                return None
            return tensor_to_numpy(found.points[step]).astype(dtype)

        return Atlas(
            layer=layer, step=step, channels=tuple(channels),
            index=tensor("index", np.int64), position=tensor("position", np.int64),
            value=tensor("value", np.float32), box=tensor("box", np.int64),
            change=tensor("channel_change", np.float32),
            layout=AtlasLayout.from_dict(entry["layout"], channels),
            receptive_field=None if entry.get("field") is None else Field.from_dict(entry["field"]),
            pool=int(entry.get("pool", 0)), ref=series.points[step],
            _decode=lambda ref: decode_png(self.png(ref)),
        )

    def atlas_crops(self, layer: str, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """One channel's top-k crops at every atlas step: ``(steps, uint8 (S, k, h, w, 3))``."""
        steps = self.atlas_steps(layer)
        crops = [self.atlas(layer, step).crops(channel) for step in steps] if steps else []
        if not crops:
            self.atlas(layer)  # raises: no atlas for this layer
        if len({c.shape for c in crops}) > 1:
            raise LogError(
                f"The atlas crops of {layer!r} change size between steps; read single steps "
                "with Run.atlas()."
            )
        return np.asarray(steps, dtype=np.int64), np.stack(crops)

    def atlas_change(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, float64 values)`` of ``<layer>/atlas_change``: the mean over channels of
        the Jaccard distance between consecutive atlas events' top-k image sets."""
        self._layer(layer)
        series = self._series.get(metadata.atlas_tag(layer, "change"))
        steps = series.steps() if series is not None else []
        return (np.asarray(steps, dtype=np.int64),
                np.asarray([series.points[s] for s in steps], dtype=np.float64))

    def actmax_steps(self, layer: str) -> list[int]:
        """Steps at which ``layer``'s activation maximisation was logged (empty when none)."""
        self._layer(layer)
        series = self._series.get(metadata.actmax_tag(layer))
        return series.steps() if series is not None and series.kind == "image" else []

    def actmax(self, layer: str, step: int | None = None) -> tuple[list[int], np.ndarray]:
        """The optimised inputs of ``layer``'s chosen channels at ``step`` (default: the last).

        Returns:
            ``(channels, images)``: the channels, and uint8 ``(n, h, w, c)``,
            one image per channel (upscaled as logged).
        """
        series = self._series.get(metadata.actmax_tag(layer))
        if series is None or series.kind != "image":
            self._layer(layer)
            raise LogError(f"No activation maximisation logged for layer {layer!r} in run {self.name!r}.")
        step = self._check_step(series, step, f"the activation maximisation of {layer!r}")
        channels = [int(c) for c in self.layer_info(layer, step)["actmax"]["channels"]]
        picture = decode_png(self.png(series.points[step]))
        gap = metadata.ACTMAX_GAP
        width = (picture.shape[1] - gap * (len(channels) - 1)) // len(channels)
        return channels, np.stack([picture[:, i * (width + gap) : i * (width + gap) + width]
                                   for i in range(len(channels))])
