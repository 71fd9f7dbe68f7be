"""Read an actlog log back as numpy arrays, without TensorFlow.

:func:`read` walks a log directory, finds every run that holds actlog data
(event files with an ``actlog/manifest`` record, see :mod:`actlog.metadata`)
and parses its event files itself: the TFRecord framing, then the ``Event`` and
``Summary`` protocol buffers that ship with TensorBoard. Every step is kept
(TensorBoard's own loader keeps a sample of 10 images per tag unless told
otherwise), grids come back as uint8 arrays and statistics as numpy arrays.

```python
log = actlog.read("runs/exp1")
log.runs                                   # ['activations']
run = log.run("activations")               # or log["activations"], or log.run()
run.layers, run.probes, run.steps          # ['conv_0', 'conv_1'], 4, [0, 1, 2, 3]
steps, grids = run.grids("conv_0", probe=0)    # (S,), uint8 (S, H, W, C)
steps, drift = run.scalar("conv_0", "drift")   # (S-1,), float64
steps, means = run.channel_stats("conv_0", "channel_mean")  # float32 (S, channels)
tile = run.tile("conv_0", probe=0, channel=3, step=2)      # that channel's tile
```

Logs still being written and logs cut short by a crash are fine: a record that
is not complete yet (or was never finished) ends the reading of its file, and
everything before it is returned, with one warning naming the file.

TensorFlow is never imported: the protocol buffers come from
``tensorboard.compat.proto``, which does not load TensorFlow, and PNGs are
decoded with Pillow.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import metadata

__all__ = ["LogError", "Log", "Run", "read"]

_EVENT_FILE_RE = re.compile(r"^events\.out\.tfevents\.(?P<stamp>\d+)")


class LogError(ValueError):
    """A log, run, layer, probe, channel, statistic or step that does not exist.

    The message names what was asked for and what exists instead.
    """


# --------------------------------------------------------------------------
# TFRecord framing.
#
# A record is: uint64 length, uint32 masked crc32c(length), data, uint32 masked
# crc32c(data), all little-endian. The length CRC is always checked: a wrong
# length would make every later record garbage. The data CRC is checked only
# with ``verify=True``: a pure-python CRC costs about as much as decoding every
# PNG twice, and a damaged payload shows up anyway when its proto is parsed.

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord files use it."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _iter_records(path: str, *, verify: bool) -> Iterator[bytes]:
    """Yield the payload of every complete record of a TFRecord file.

    Stops at the first incomplete or damaged record and warns once, naming the
    file: that is what a crash mid-write, or a writer that has not flushed the
    rest yet, leaves behind.
    """
    with open(path, "rb") as handle:
        buffer = handle.read()
    view = memoryview(buffer)
    offset, size = 0, len(buffer)
    while offset < size:
        problem = None
        if size - offset < 12:
            problem = f"a record header is cut short at byte {offset}"
        else:
            header = view[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", view[offset + 8 : offset + 12])
            if masked_crc32c(header) != length_crc:
                problem = f"the record length at byte {offset} fails its CRC check"
            elif size - offset < 12 + length + 4:
                problem = (
                    f"the record at byte {offset} needs {length + 16} bytes, "
                    f"only {size - offset} are there"
                )
        if problem is None:
            data = view[offset + 12 : offset + 12 + length]
            if verify:
                (data_crc,) = struct.unpack(
                    "<I", view[offset + 12 + length : offset + 16 + length]
                )
                if masked_crc32c(data) != data_crc:
                    problem = f"the record data at byte {offset} fails its CRC check"
        if problem is not None:
            warnings.warn(
                f"actlog: {path}: {problem} (a run still being written, or a crash "
                f"mid-write); returning the {offset} bytes of complete records before it.",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        yield bytes(data)
        offset += 16 + length


# --------------------------------------------------------------------------
# Tensor protos -> numpy, for the few dtypes summaries use.

_NUMPY_DTYPES = {
    1: np.float32,  # DT_FLOAT
    2: np.float64,  # DT_DOUBLE
    3: np.int32,  # DT_INT32
    4: np.uint8,  # DT_UINT8
    5: np.int16,  # DT_INT16
    6: np.int8,  # DT_INT8
    9: np.int64,  # DT_INT64
    10: np.bool_,  # DT_BOOL
    19: np.float16,  # DT_HALF
}
_VAL_FIELDS = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    9: "int64_val",
    10: "bool_val",
    19: "half_val",
}
_DT_STRING = 7


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    count = int(np.prod(shape)) if shape else 1
    if tensor.dtype == _DT_STRING:
        values = np.empty(len(tensor.string_val), dtype=object)
        values[:] = list(tensor.string_val)
        return values.reshape(shape) if values.size == count else values
    dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"unsupported tensor dtype enum {tensor.dtype}")
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    raw = getattr(tensor, _VAL_FIELDS[tensor.dtype])
    if tensor.dtype == 19:  # halves are stored as uint16 bit patterns
        values = np.asarray(raw, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(raw, dtype=dtype)
    if values.size == count:
        return values.reshape(shape)
    # TensorFlow stores a tensor whose values are all equal as one value.
    if values.size == 1:
        return np.full(shape, values[0], dtype=dtype)
    raise ValueError(f"tensor of shape {shape} holds {values.size} values")


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


# --------------------------------------------------------------------------
# Event files -> per-tag series.


@dataclass
class _Series:
    """Every value of one tag in one run, in the order written."""

    kind: str  # "image", "scalar", "tensor" or "text"
    plugin: str = ""
    content: bytes = b""
    points: dict[int, Any] = field(default_factory=dict)  # step -> payload; later wins

    def steps(self) -> list[int]:
        return sorted(self.points)


def _event_files(directory: str) -> list[str]:
    names = [n for n in os.listdir(directory) if _EVENT_FILE_RE.match(n)]

    def order(name: str) -> tuple[int, str]:
        return int(_EVENT_FILE_RE.match(name).group("stamp")), name

    return [os.path.join(directory, n) for n in sorted(names, key=order)]


def _load_series(files: list[str], *, verify: bool) -> dict[str, _Series]:
    from tensorboard.compat.proto import event_pb2

    series: dict[str, _Series] = {}
    for path in files:
        # A TF2 writer puts a tag's SummaryMetadata on its first value in each
        # file only, so it is remembered per tag while the file is read.
        plugins: dict[str, tuple[str, bytes]] = {}
        for record in _iter_records(path, verify=verify):
            event = event_pb2.Event()
            try:
                event.ParseFromString(record)
            except Exception as err:  # noqa: BLE001 - protobuf raises its own DecodeError
                warnings.warn(
                    f"actlog: {path}: a record could not be parsed ({err}); "
                    "skipping the rest of this file.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                break
            if not event.HasField("summary"):
                continue
            step = int(event.step)
            for value in event.summary.value:
                _add_value(series, plugins, value, step)
    return series


def _add_value(
    series: dict[str, _Series],
    plugins: dict[str, tuple[str, bytes]],
    value: Any,
    step: int,
) -> None:
    tag = value.tag
    if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
        plugins[tag] = (
            value.metadata.plugin_data.plugin_name,
            bytes(value.metadata.plugin_data.content),
        )
    plugin, content = plugins.get(tag, ("", b""))
    which = value.WhichOneof("value")
    if which == "simple_value":  # TF1-style scalar
        kind, payload = "scalar", float(value.simple_value)
    elif which == "image":  # TF1-style image
        kind, payload = "image", bytes(value.image.encoded_image_string)
    elif which == "tensor":
        if not plugin and tag in series:
            plugin, content = series[tag].plugin, series[tag].content
        if plugin == "images":
            # [width, height, png, png, ...]; actlog writes one image per step.
            strings = value.tensor.string_val
            if len(strings) < 3:
                return
            kind, payload = "image", bytes(strings[2])
        elif plugin == "scalars":
            kind, payload = "scalar", float(_tensor_to_numpy(value.tensor).reshape(-1)[0])
        elif plugin == "text":
            kind, payload = "text", value.tensor
        else:
            kind, payload = "tensor", value.tensor
    else:
        return
    entry = series.get(tag)
    if entry is None:
        entry = series[tag] = _Series(kind=kind, plugin=plugin, content=content)
    elif plugin and not entry.plugin:
        entry.plugin, entry.content = plugin, content
    entry.points[step] = payload


# --------------------------------------------------------------------------
# Public API.


def _describe_steps(steps: list[int]) -> str:
    if not steps:
        return "no steps"
    if len(steps) <= 12:
        return "steps " + ", ".join(str(s) for s in steps)
    return f"{len(steps)} steps from {steps[0]} to {steps[-1]}"


class Run:
    """One run of an actlog log: the grids and statistics of its layers, by step.

    Obtained from :meth:`Log.run`. The run's last manifest (rewritten at the
    start of every ``fit``) says which layers, probes and channels exist and
    how each grid is laid out.

    Attributes:
        name: the run's path relative to the log directory, e.g. ``"activations"``.
        path: the run's directory on disk.
        manifest: the manifest as a dict (see :func:`actlog.metadata.manifest`).
    """

    def __init__(self, name: str, path: str, files: list[str], series: dict[str, _Series]):
        self.name = name
        self.path = path
        self._files = files
        self._series = series
        manifest_series = series[metadata.MANIFEST_TAG]
        # The last manifest written wins; within a step, the last file wins.
        last_step = manifest_series.steps()[-1]
        tensor = manifest_series.points[last_step]
        text = _tensor_to_numpy(tensor).reshape(-1)[0]
        self.manifest: dict[str, Any] = metadata.parse_manifest(text)
        self._layers = {layer["name"]: layer for layer in self.manifest.get("layers", [])}

    def __repr__(self) -> str:
        return (
            f"<actlog.reader.Run {self.name!r}: {len(self.layers)} layers, "
            f"{self.probes} probes, {_describe_steps(self.steps)}>"
        )

    # -- what the run holds ------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Display names of the watched layers, in the order they were logged."""
        return list(self._layers)

    @property
    def probes(self) -> int:
        """Number of probe images."""
        return int(self.manifest.get("probes", 0))

    @property
    def step_axis(self) -> str:
        """``"epoch"`` (epoch run) or ``"global_step"`` (batch run)."""
        return str(self.manifest.get("step_axis", metadata.STEP_AXIS_EPOCH))

    @property
    def steps(self) -> list[int]:
        """Every step at which any layer of the run has a grid or a statistic."""
        found: set[int] = set()
        for layer in self._layers:
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
        """Size of the run's event files on disk."""
        return sum(os.path.getsize(f) for f in self._files if os.path.exists(f))

    def layer_info(self, layer: str) -> dict[str, Any]:
        """The manifest entry of ``layer``: path, class, output shape, channels, grid."""
        return self._layer(layer)

    def channels(self, layer: str) -> list[int]:
        """Channel index of each tile of ``layer``'s grid, in row-major tile order."""
        return [int(c) for c in self._layer(layer).get("channels", [])]

    # -- grids ---------------------------------------------------------------

    def grid_steps(self, layer: str, probe: int) -> list[int]:
        """Steps at which the grid of ``layer`` for ``probe`` was logged."""
        return self._image_series(layer, probe).steps()

    def grid(self, layer: str, probe: int, step: int | None = None) -> np.ndarray:
        """The activation grid of ``layer`` for ``probe`` at ``step``.

        Args:
            layer: a layer display name, one of :attr:`layers`.
            probe: probe index, ``0 <= probe < probes``.
            step: a logged step; ``None`` (default) means the last one.

        Returns:
            uint8 array ``(H, W, C)``, exactly the pixels that were logged.
        """
        series = self._image_series(layer, probe)
        step = self._check_step(series, step, f"the grid of {layer!r} for probe {probe}")
        return _decode_png(series.points[step])

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
        images = [_decode_png(series.points[s]) for s in steps]
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
                position); must be one of :meth:`channels` ``(layer)``.
            step: a logged step; ``None`` means the last one.

        Returns:
            uint8 ``(tile_height, tile_width, C)``.
        """
        box = self._tile_box(layer, channel)
        grid = self.grid(layer, probe, step)
        return _crop(grid, box, layer)

    def tiles(self, layer: str, probe: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """One channel's tile at every logged step: ``(steps, uint8 (S, th, tw, C))``."""
        box = self._tile_box(layer, channel)
        steps, grids = self.grids(layer, probe)
        if len(steps) == 0:
            return steps, np.zeros((0, box[2], box[3], 0), np.uint8)
        return steps, np.stack([_crop(g, box, layer) for g in grids])

    def probe_image(self, probe: int) -> np.ndarray | None:
        """The probe input itself as logged (uint8 ``(H, W, C)``), or ``None``.

        Only image-like probes are logged as images.
        """
        self._check_probe(probe)
        tags = self.manifest.get("probe_tags") or [
            metadata.probe_image_tag(i, self.probes) for i in range(self.probes)
        ]
        series = self._series.get(tags[probe])
        if series is None or series.kind != "image" or not series.points:
            return None
        return _decode_png(series.points[series.steps()[-1]])

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
        rows = [_tensor_to_numpy(series.points[s]).astype(np.float32).reshape(-1) for s in steps]
        if len({row.shape for row in rows}) > 1:
            raise LogError(
                f"{full!r} of layer {layer!r} changes length between steps "
                f"({sorted({row.size for row in rows})} channels)."
            )
        return np.asarray(steps, dtype=np.int64), np.stack(rows)

    # -- helpers -------------------------------------------------------------

    def _layer(self, layer: str) -> dict[str, Any]:
        try:
            return self._layers[layer]
        except KeyError:
            raise LogError(
                f"No layer {layer!r} in run {self.name!r}. Layers: {self.layers}."
            ) from None

    def _layer_tags(self, layer: str) -> list[str]:
        info = self._layers[layer]
        tags = list(info.get("tags") or [])
        tags += [metadata.stat_tag(layer, s) for s in metadata.SCALAR_STATS]
        tags += [metadata.stat_tag(layer, s) for s in metadata.CHANNEL_STATS]
        return tags

    def _check_probe(self, probe: int) -> None:
        if isinstance(probe, bool) or not isinstance(probe, (int, np.integer)):
            raise LogError(f"probe must be an integer index; received {probe!r}.")
        if not 0 <= probe < self.probes:
            raise LogError(
                f"No probe {probe} in run {self.name!r}: it has {self.probes} probes "
                f"(0..{self.probes - 1})."
            )

    def _image_series(self, layer: str, probe: int) -> _Series:
        info = self._layer(layer)
        self._check_probe(probe)
        tags = info.get("tags") or [
            metadata.grid_tag(layer, i, self.probes) for i in range(self.probes)
        ]
        series = self._series.get(tags[probe])
        if series is None or series.kind != "image":
            raise LogError(
                f"Run {self.name!r} has no grid of layer {layer!r} for probe {probe} "
                f"(tag {tags[probe]!r} is missing)."
            )
        return series

    @staticmethod
    def _check_step(series: _Series, step: int | None, what: str) -> int:
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

    def _tile_box(self, layer: str, channel: int) -> tuple[int, int, int, int]:
        info = self._layer(layer)
        channels = self.channels(layer)
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise LogError(f"channel must be an integer; received {channel!r}.")
        if int(channel) not in channels:
            shown = _describe_ints(channels)
            raise LogError(
                f"Channel {channel} of layer {layer!r} is not in its grid; "
                f"channels shown: {shown}."
            )
        grid = info["grid"]
        rows, cols = int(grid["rows"]), int(grid["cols"])
        height, width = int(grid["tile_height"]), int(grid["tile_width"])
        pad = int(grid.get("pad", 0))
        index = channels.index(int(channel))
        row, col = divmod(index, cols)
        if row >= rows:
            raise LogError(f"Manifest of layer {layer!r} places channel {channel} off its grid.")
        return pad + row * (height + pad), pad + col * (width + pad), height, width


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

    def __init__(self, path: str, runs: dict[str, Run]):
        self.path = path
        self._runs = runs

    def __repr__(self) -> str:
        return f"<actlog.reader.Log {self.path!r}: runs {self.runs}>"

    @property
    def runs(self) -> list[str]:
        return sorted(self._runs)

    @property
    def bytes(self) -> int:
        """Size on disk of the event files of every actlog run."""
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
            raise LogError(f"Several runs under {self.path!r}; choose one of {self.runs}.")
        try:
            return self._runs[name]
        except KeyError:
            raise LogError(f"No run {name!r} under {self.path!r}. Runs: {self.runs}.") from None

    def __getitem__(self, name: str) -> Run:
        return self.run(name)

    def __contains__(self, name: object) -> bool:
        return name in self._runs

    def __iter__(self) -> Iterator[Run]:
        return (self._runs[name] for name in self.runs)

    def __len__(self) -> int:
        return len(self._runs)


def read(log_dir: str | os.PathLike[str], *, verify: bool = False) -> Log:
    """Read every actlog run under ``log_dir``.

    A run is any directory at or below ``log_dir`` whose event files hold an
    actlog manifest; Keras' ``train``/``validation`` runs and other
    directories are skipped. Every step of every tag is read (no sampling).

    ```python
    log = actlog.read("runs/exp1")
    run = log.run()                    # the epoch run
    steps, grids = run.grids("conv_0", probe=0)
    ```

    Args:
        log_dir: the directory given to ``ActivationLogger`` (or any parent of it).
        verify: also check the CRC of every record's data (slower: pure python).
            The length CRC of every record is always checked.

    Returns:
        A :class:`Log`.

    Raises:
        LogError: ``log_dir`` is missing, not a directory, or holds no actlog run.
    """
    path = os.fspath(log_dir)
    if not os.path.exists(path):
        raise LogError(f"Log directory {path!r} does not exist.")
    if not os.path.isdir(path):
        raise LogError(f"{path!r} is not a directory; expected a log directory.")
    runs: dict[str, Run] = {}
    others: list[str] = []
    for directory, dirnames, _ in os.walk(path):
        dirnames.sort()
        files = _event_files(directory)
        if not files:
            continue
        name = os.path.relpath(directory, path).replace(os.sep, "/")
        series = _load_series(files, verify=verify)
        manifest = series.get(metadata.MANIFEST_TAG)
        if manifest is None or not manifest.points:
            others.append(name)
            continue
        runs[name] = Run(name, directory, files, series)
    if not runs:
        detail = (
            f"event files without actlog data in: {sorted(others)}"
            if others
            else "no event files at all"
        )
        raise LogError(f"No actlog runs under {path!r} ({detail}).")
    return Log(path, runs)
