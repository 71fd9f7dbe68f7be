"""Event files -> an index of every tag's values, read incrementally, without TensorFlow.

The lower half of :mod:`actlog.reader`: for one run directory, the records and
``Event`` protocol buffers (decoded by :mod:`actlog.codec`, which owns the format;
a tag whose actlog plugin metadata is newer than this actlog is refused there),
turned into a :class:`Series` per tag
(step -> value). Scalars and small tensors are kept; an image is kept as an
:class:`ImageRef` (where its record is), and :class:`ImageStore` reads its
PNG back when asked, so an index of a large log stays small.
:meth:`EventIndex.refresh` reads only what was appended since the last call
(a run being written, the dashboard's live view); a record that is not
complete yet ends the reading of its file until more arrives.
"""

from __future__ import annotations

import collections
import io
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import codec, metadata, storage


class LogError(ValueError):
    """A log, run, layer, probe, channel, statistic or step that does not exist.

    The message names what was asked for and what exists instead.
    """


# --------------------------------------------------------------------------
# Tensor protos -> numpy, for the few dtypes summaries use.

_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16,
                 6: np.int8, 9: np.int64, 10: np.bool_, 19: np.float16}
_VAL_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val",
               6: "int_val", 9: "int64_val", 10: "bool_val", 19: "half_val"}
_DT_STRING = 7


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A ``TensorProto`` of a dtype summaries use as a numpy array (strings as objects)."""
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


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes as uint8 ``(H, W, C)``."""
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


@dataclass(frozen=True)
class ImageRef:
    """Where one logged image is: the record holding it and the value's place in it."""

    path: str
    offset: int
    length: int
    index: int
    wall_time: float


@dataclass
class Series:
    """Every value of one tag in one run, in the order written (a later write of a step wins)."""

    kind: str  # "image", "scalar", "tensor" or "text"
    plugin: str = ""
    content: bytes = b""
    points: dict[int, Any] = field(default_factory=dict)

    def steps(self) -> list[int]:
        return sorted(self.points)


@dataclass
class _File:
    path: str
    end: int = 0  # bytes read so far: every complete record before it
    size: int = 0  # as last listed
    warned: bool = False
    torn: str | None = None  # why the last record is not complete (yet)
    plugins: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # tag -> first metadata


class ImageStore:
    """Reads records back on demand, keeping the last few parsed events."""

    def __init__(self, store: storage.Storage) -> None:
        self.store = store
        self._cache: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def image(self, ref: ImageRef) -> bytes:
        """The PNG bytes ``ref`` points at."""
        key = (ref.path, ref.offset)
        with self._lock:
            event = self._cache.get(key)
            if event is not None:
                self._cache.move_to_end(key)
        if event is None:
            data = self.store.read(ref.path, ref.offset, ref.length)
            if len(data) < ref.length:
                raise LogError(f"{ref.path} is shorter than when it was indexed (rewritten?).")
            event = codec.decode_event(data)
            with self._lock:
                self._cache[key] = event
                while len(self._cache) > 32:
                    self._cache.popitem(last=False)
        return bytes(event.summary.value[ref.index].tensor.string_val[2])


class EventIndex:
    """Everything indexed from one run directory's event files, grown by :meth:`refresh`."""

    def __init__(self, store: storage.Storage, directory: str, verify: bool) -> None:
        self.store = store
        self.directory = directory
        self.verify = verify
        self.files: dict[str, _File] = {}
        self.series: dict[str, Series] = {}
        self.manifests: list[tuple[int, int, dict[str, Any]]] = []  # (step, order, manifest)
        self.version = 0  # bumped whenever something new was read

    def refresh(self, sizes: dict[str, int] | None = None) -> bool:
        """Read what was written since the last call; True when anything new came.

        Args:
            sizes: the directory's files and their sizes, when the caller has just listed it
                (one listing serves both; on an object store a listing is a request).
        """
        if sizes is None:
            try:
                sizes = {e.name: e.size for e in self.store.entries(self.directory) if not e.directory}
            except (OSError, FileNotFoundError):
                sizes = {}
        changed = False
        for name in sorted(filter(codec.is_event_file, sizes), key=codec.file_order):
            path = self.store.join(self.directory, name)
            entry = self.files.setdefault(path, _File(path))
            entry.size = sizes[name]
            changed |= self._read_new(entry)
        if changed:
            self.version += 1
        return changed

    def _read_new(self, entry: _File) -> bool:
        if entry.size <= entry.end:
            return False
        try:
            data = self.store.read(entry.path, entry.end)
        except (OSError, FileNotFoundError):
            return False
        found = codec.scan(data, verify=self.verify)
        for offset, length in found.records:
            try:
                event = codec.decode_event(data[offset : offset + length])
            except Exception as err:  # noqa: BLE001 - protobuf raises its own DecodeError
                found = codec.Scan([], offset, f"a record could not be parsed ({err})", False)
                break
            if event.HasField("summary"):
                where = (entry.path, entry.end + offset, length)
                for index, value in enumerate(event.summary.value):
                    self._add(entry, value, int(event.step), event.wall_time, where, index)
        if found.problem is not None and not found.incomplete and not entry.warned:
            entry.warned = True
            warn(f"{entry.path}: {found.problem}; returning the complete records before it.")
        entry.torn = found.problem if found.incomplete else None
        entry.end += found.end
        return bool(found.records)

    def _add(self, entry: _File, value: Any, step: int, wall_time: float,
             where: tuple[str, int, int], index: int) -> None:
        tag = value.tag
        if value.HasField("metadata") and value.metadata.plugin_data.plugin_name and tag not in entry.plugins:
            plugin_data = value.metadata.plugin_data
            if plugin_data.plugin_name == metadata.PLUGIN_NAME:
                try:
                    codec.parse_plugin_content(plugin_data.content)
                except ValueError as err:
                    raise LogError(f"{entry.path}, tag {tag!r}: {err}") from None
            entry.plugins[tag] = (plugin_data.plugin_name, bytes(plugin_data.content))
        plugin, content = entry.plugins.get(tag, ("", b""))
        if not plugin and tag in self.series:
            plugin, content = self.series[tag].plugin, self.series[tag].content
        which = value.WhichOneof("value")
        if which == "simple_value":  # TF1-style scalar
            kind, payload = "scalar", float(value.simple_value)
        elif which == "image":  # TF1-style image
            kind, payload = "image", bytes(value.image.encoded_image_string)
        elif which != "tensor":
            return
        elif plugin == "images":
            if len(value.tensor.string_val) < 3:
                return
            kind, payload = "image", ImageRef(*where, index, wall_time)
        elif plugin == "scalars":
            kind, payload = "scalar", float(tensor_to_numpy(value.tensor).reshape(-1)[0])
        elif plugin == "text":
            kind, payload = "text", value.tensor
        else:
            kind, payload = "tensor", value.tensor
        series = self.series.get(tag)
        if series is None:
            series = self.series[tag] = Series(kind=kind, plugin=plugin, content=content)
        series.points[step] = payload
        if tag == metadata.MANIFEST_TAG:
            text = tensor_to_numpy(value.tensor).reshape(-1)[0]
            self.manifests.append((step, len(self.manifests), metadata.parse_manifest(text)))


def warn(message: str) -> None:
    warnings.warn(f"actlog: {message}", RuntimeWarning, stacklevel=4)
