"""Read an actlog log back as numpy arrays, without TensorFlow.

:func:`read` walks a log directory (local, or any URL :mod:`actlog.storage`
serves), finds every run that holds actlog data (event files with an
``actlog/manifest`` record, see :mod:`actlog.metadata`) and parses its event
files itself through :mod:`actlog.codec` (records, then the ``Event`` and
``Summary`` protocol buffers that ship with TensorBoard). Every step is kept
(TensorBoard's own loader keeps a sample of 10 images per tag unless told
otherwise); grids come back as uint8 arrays and statistics as numpy arrays.
Images are decoded only when asked for: an index remembers where each one is.

```python
log = actlog.read("runs/exp1")
log.runs                                   # ['activations']
run = log.run("activations")               # or log["activations"], or log.run()
run.layers, run.probes, run.steps          # ['conv_0', 'conv_1'], 4, [0, 1, 2, 3]
steps, grids = run.grids("conv_0", probe=0)    # (S,), uint8 (S, H, W, C)
steps, drift = run.scalar("conv_0", "drift")   # (S-1,), float64
steps, means = run.channel_stats("conv_0", "channel_mean")  # float32 (S, channels)
tile = run.tile("conv_0", probe=0, channel=3, step=2)      # that channel's tile
atlas = run.atlas("conv_0", step=2)        # the feature atlas (ActivationLogger(atlas=...))
atlas.index[atlas.row(3)]                  # channel 3's top-k pool indices, best first
crops = atlas.crops(3)                     # uint8 (k, h, w, 3): what channel 3 responds to most
steps, crops = run.atlas_crops("conv_0", channel=3)  # (S,), uint8 (S, k, h, w, 3): over time
```

Manifests: every ``fit`` writes one at its first event. A run's layers are
those of all its manifests (two loggers writing one run keep both sets), and a
grid at step ``s`` is cut into tiles with the layout of the last manifest
written at or before ``s`` that names its layer, so a logger reused on a
differently shaped model is read with the right geometry at every step.

Logs still being written and logs cut short by a crash are fine: a record that
is not complete yet (or was never finished) ends the reading of its file, and
everything before it is returned, with one warning naming the file.
:meth:`Log.refresh` reads only what was appended since (the dashboard's live view).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import codec, metadata, storage
from actlog.atlas import AtlasLayout, Field
from actlog.grid import GridLayout
from actlog.index import (
    EventIndex,
    ImageRef,
    ImageStore,
    LogError,
    Series,
    decode_png,
    tensor_to_numpy,
    warn,
)

__all__ = ["Atlas", "LogError", "Log", "Run", "read"]

# --------------------------------------------------------------------------
# Public API.


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
                f"channels shown: {_describe_ints(list(self.channels))}."
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


def _describe_steps(steps: list[int]) -> str:
    if not steps:
        return "no steps"
    if len(steps) <= 12:
        return "steps " + ", ".join(str(s) for s in steps)
    return f"{len(steps)} steps from {steps[0]} to {steps[-1]}"


class Run:
    """One run of an actlog log: the grids and statistics of its layers, by step.

    Obtained from :meth:`Log.run`.

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

    def __repr__(self) -> str:
        return (
            f"<actlog.reader.Run {self.name!r}: {len(self.layers)} layers, "
            f"{self.probes} probes, {_describe_steps(self.steps)}>"
        )

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

    # -- grids ---------------------------------------------------------------

    def grid_steps(self, layer: str, probe: int) -> list[int]:
        """Steps at which the grid of ``layer`` for ``probe`` was logged."""
        return self._image_series(layer, probe).steps()

    def grid_ref(self, layer: str, probe: int, step: int | None = None) -> ImageRef:
        """Where the grid of ``layer`` for ``probe`` at ``step`` (default: last) is stored."""
        series = self._image_series(layer, probe)
        step = self._check_step(series, step, f"the grid of {layer!r} for probe {probe}")
        return series.points[step]

    def png(self, ref: Any) -> bytes:
        """The PNG bytes of an image from :meth:`grid_ref` (or of a probe image)."""
        return ref if isinstance(ref, bytes) else self._images.image(ref)

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

    # -- statistics --------------------------------------------------------

    def scalars(self, layer: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every scalar statistic logged for ``layer``.

        Returns:
            ``{stat: (steps int64 (S,), values float64 (S,))}`` for the stats in
            :data:`actlog.metadata.SCALAR_STATS` that were logged (none when
            statistics were turned off).
        """
        self._layer(layer)
        result = {}
        for stat in metadata.SCALAR_STATS:
            series = self._series.get(metadata.stat_tag(layer, stat))
            if series is not None and series.kind == "scalar":
                steps = series.steps()
                result[stat] = (
                    np.asarray(steps, dtype=np.int64),
                    np.asarray([series.points[s] for s in steps], dtype=np.float64),
                )
        return result

    def scalar(self, layer: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """One scalar statistic of ``layer`` over steps: ``(steps, float64 values)``.

        Args:
            layer: a layer display name.
            stat: one of ``mean``, ``std``, ``sparsity``, ``dead_fraction``, ``drift``.
        """
        if stat not in metadata.SCALAR_STATS:
            raise LogError(
                f"Unknown statistic {stat!r}. Scalar statistics: {list(metadata.SCALAR_STATS)}"
                f" (per-channel ones, {list(metadata.CHANNEL_STATS)}, via channel_stats())."
            )
        found = self.scalars(layer)
        if stat not in found:
            raise LogError(
                f"No {stat!r} statistic logged for layer {layer!r} in run {self.name!r}; "
                f"logged: {sorted(found) or 'none (statistics were off)'}."
            )
        return found[stat]

    def channel_stats(self, layer: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """A per-channel statistic of ``layer`` over steps.

        Args:
            layer: a layer display name.
            stat: ``channel_mean``, ``channel_max`` or ``channel_drift`` (the
                short forms ``mean``, ``max``, ``drift`` are accepted too).

        Returns:
            ``(steps, values)``: int64 ``(S,)`` and float32 ``(S, channels)``,
            one column per channel of the layer (every channel, not only those
            shown in the grid).
        """
        full, steps, rows = self._channel_rows(layer, stat)
        if len({row.shape for row in rows}) > 1:
            raise LogError(
                f"{full!r} of layer {layer!r} changes length between steps "
                f"({sorted({row.size for row in rows})} channels); read one channel with "
                "Run.channel_stat()."
            )
        return np.asarray(steps, dtype=np.int64), np.stack(rows)

    def channel_stat(self, layer: str, stat: str, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """One channel of a per-channel statistic over steps: ``(steps, float32 values)``.

        Unlike :meth:`channel_stats`, a layer whose channel count changed between
        ``fit`` calls is fine: steps at which it had no channel ``channel`` are
        left out.
        """
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or channel < 0:
            raise LogError(f"channel must be a non-negative integer; received {channel!r}.")
        _, steps, rows = self._channel_rows(layer, stat)
        kept = [(s, row[channel]) for s, row in zip(steps, rows, strict=True) if channel < row.size]
        return (
            np.asarray([s for s, _ in kept], dtype=np.int64),
            np.asarray([v for _, v in kept], dtype=np.float32),
        )

    def _channel_rows(self, layer: str, stat: str) -> tuple[str, list[int], list[np.ndarray]]:
        full = stat if stat.startswith("channel_") else f"channel_{stat}"
        if full not in metadata.CHANNEL_STATS:
            raise LogError(
                f"Unknown per-channel statistic {stat!r}. Accepted: {list(metadata.CHANNEL_STATS)}."
            )
        self._layer(layer)
        series = self._series.get(metadata.stat_tag(layer, full))
        if series is None or not series.points:
            logged = [
                s for s in metadata.CHANNEL_STATS if metadata.stat_tag(layer, s) in self._series
            ]
            raise LogError(
                f"No {full!r} statistic logged for layer {layer!r} in run {self.name!r}; "
                f"logged: {logged or 'none (statistics were off)'}."
            )
        steps = series.steps()
        rows = [tensor_to_numpy(series.points[s]).astype(np.float32).reshape(-1) for s in steps]
        return full, steps, rows

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
            raise LogError(f"No step {step} for {what}; logged: {_describe_steps(steps)}.")
        return int(step)

    def _tile_box(self, layer: str, channel: int, step: int | None = None) -> tuple[int, int, int, int]:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise LogError(f"channel must be an integer; received {channel!r}.")
        layout = self.layout(layer, step)
        try:
            return layout.channel_box(int(channel))
        except KeyError:
            raise LogError(
                f"Channel {channel} of layer {layer!r} is not in its grid; "
                f"channels shown: {_describe_ints(list(layout.channels))}."
            ) from None


def _crop(grid: np.ndarray, box: tuple[int, int, int, int], layer: str) -> np.ndarray:
    y, x, height, width = box
    if y + height > grid.shape[0] or x + width > grid.shape[1]:
        raise LogError(
            f"The grid of {layer!r} is {grid.shape[1]}x{grid.shape[0]} pixels, smaller than "
            "its manifest layout says; it was logged with another layout."
        )
    return grid[y : y + height, x : x + width].copy()


def _describe_ints(values: list[int]) -> str:
    if values and values == list(range(values[0], values[0] + len(values))) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return str(values)


class Log:
    """Every actlog run under one log directory.

    Obtained from :func:`read`. Index it by run name, or call :meth:`run`.

    Attributes:
        path: the log directory.
        runs: run names (paths relative to ``path``, ``"."`` for ``path`` itself), sorted.
    """

    def __init__(self, path: str, *, verify: bool = True) -> None:
        self.path = path
        self.verify = verify
        self._store = storage.for_path(path)
        self._images = ImageStore(self._store)
        self._data: dict[str, EventIndex] = {}
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<actlog.reader.Log {self.path!r}: runs {self.runs}>"

    def refresh(self) -> bool:
        """Read what was written since the last look (new runs, files and records).

        Returns True when anything new was read. Thread-safe.
        """
        with self._lock:
            changed = False
            for directory, files in self._store.walk(self.path):
                if not any(map(codec.is_event_file, files)):
                    continue
                relative = _relative(self.path, directory)
                data = self._data.get(relative)
                if data is None:
                    data = self._data[relative] = EventIndex(self._store, directory, self.verify)
                changed |= data.refresh(files)
                if relative not in self._runs and data.manifests:
                    self._runs[relative] = Run(relative, data, self._images)
            return changed

    def others(self) -> list[str]:
        """Runs under :attr:`path` with event files but no actlog data (Keras' ``train``, ...)."""
        return sorted(name for name, data in self._data.items() if not data.manifests)

    def torn(self) -> list[tuple[str, str]]:
        """``(file, what)`` for every event file whose last record is not complete (yet)."""
        return [
            (file.path, file.torn)
            for data in self._data.values()
            for file in data.files.values()
            if file.torn is not None
        ]

    @property
    def runs(self) -> list[str]:
        return sorted(self._runs)

    @property
    def bytes(self) -> int:
        """Size of the event files of every actlog run."""
        return sum(run.bytes for run in self._runs.values())

    def run(self, name: str | None = None) -> Run:
        """The run called ``name``.

        Args:
            name: a run name from :attr:`runs`. ``None`` picks the epoch run
                (``"activations"``) when there is one, else the only run.
        """
        if name is None:
            if metadata.EPOCH_RUN in self._runs:
                return self._runs[metadata.EPOCH_RUN]
            if len(self._runs) == 1:
                return next(iter(self._runs.values()))
            raise LogError(
                f"Several runs under {self.path!r}; choose one with Log.run(name): {self.runs}."
            )
        try:
            return self._runs[name]
        except KeyError:
            from actlog.checks import suggest

            raise LogError(
                f"No run {name!r} under {self.path!r}. Runs: {self.runs}.{suggest(name, self.runs)}"
            ) from None

    def __getitem__(self, name: str) -> Run:
        return self.run(name)

    def __contains__(self, name: object) -> bool:
        return name in self._runs

    def __iter__(self) -> Iterator[Run]:
        return (self._runs[name] for name in self.runs)

    def __len__(self) -> int:
        return len(self._runs)


def _relative(top: str, directory: str) -> str:
    if storage.is_url(top):
        rest = directory[len(top.rstrip("/")):].strip("/")
        return rest or "."
    return os.path.relpath(directory, top).replace(os.sep, "/")


def read(log_dir: str | os.PathLike[str], *, verify: bool = True) -> Log:
    """Read every actlog run under ``log_dir``.

    A run is any directory at or below ``log_dir`` whose event files hold an
    actlog manifest; Keras' ``train``/``validation`` runs and other
    directories are skipped. Every step of every tag is indexed (no sampling).

    ```python
    log = actlog.read("runs/exp1")
    run = log.run()                    # the epoch run
    steps, grids = run.grids("conv_0", probe=0)
    ```

    Args:
        log_dir: the directory given to ``ActivationLogger`` (or any parent of
            it): a local path or a URL (``memory://``, ``gs://``, ...).
        verify: check the CRC of every record's data (about 1 ms per MB). The
            length CRC of every record is always checked.

    Returns:
        A :class:`Log`.

    Raises:
        LogError: ``log_dir`` is missing, not a directory, or holds no actlog run.
    """
    path = os.fspath(log_dir)
    try:
        store = storage.for_path(path)
    except ValueError as err:
        raise LogError(str(err)) from None
    if not store.exists(path):
        raise LogError(f"Log directory {path!r} does not exist.")
    if not store.isdir(path):
        raise LogError(f"{path!r} is not a directory; expected a log directory.")
    log = Log(path, verify=verify)
    log.refresh()
    for file, problem in log.torn():
        warn(
            f"{file}: {problem} (a run still being written, or a crash mid-write); returning "
            "the complete records before it."
        )
    if not log.runs:
        others = log.others()
        detail = f"event files without actlog data in: {others}" if others else "no event files at all"
        raise LogError(f"No actlog runs under {path!r} ({detail}).")
    return log
