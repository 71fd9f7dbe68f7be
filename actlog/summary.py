"""actlog's writer: images, scalars, text and actlog tensors for one run.

One ``tf.summary`` file writer per run, created on first use and closed by
:meth:`RunWriter.close`. Every write happens inside ``record_if(True)``:
Keras' ``TensorBoard(update_freq=...)`` installs a recording condition that
would otherwise silently drop images written between its own updates.

Faults: every write is flushed, so a process killed between events leaves a
complete file. The writer knows which event file it appends to and checks,
before and after each write, that the file is still there: TensorFlow's own
writer goes on appending to a deleted file without a word, so a removed log
directory would otherwise swallow every later event. When the file is gone, or
a write fails, the writer is dropped (the file written so far stays as it is)
and the next event opens a new file, repeating the run's manifest, layer table
and probe images at its top so the new file is readable on its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from actlog import metadata
from actlog.png import encode_png

IMAGE_METADATA = image_metadata.create_summary_metadata("", "").SerializeToString()
SCALAR_METADATA = scalar_metadata.create_summary_metadata("", "").SerializeToString()
TEXT_METADATA = text_metadata.create_summary_metadata("", "").SerializeToString()


def actlog_metadata(kind: str, **fields: Any) -> bytes:
    """Serialized SummaryMetadata that marks a tensor as actlog's (see metadata.py)."""
    proto = summary_pb2.SummaryMetadata(
        # TensorBoard's data providers serve only tensors whose data class is set.
        data_class=summary_pb2.DATA_CLASS_TENSOR,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME,
            content=metadata.plugin_content(kind, **fields),
        )
    )
    return proto.SerializeToString()


class EventFileLost(OSError):
    """The event file being written, or its directory, disappeared while actlog wrote to it."""


class RunWriter:
    """Writes one run (``log_dir/<run>``); nothing touches disk until the first write.

    Args:
        path: the run directory (any filesystem TensorFlow knows).
        on_reopen: called with a message after an event was written to a new
            file because the previous one had disappeared between events.
    """

    def __init__(self, path: str, on_reopen: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_reopen = on_reopen
        self.files: list[str] = []
        """Every event file this writer opened, oldest first."""
        self._writer: Any = None
        self._suffix = ""
        self._file: str | None = None
        self._fresh = False  # nothing written yet to the current file
        # The manifest, texts and reserved (probe) images last written with a
        # manifest: repeated at the top of any later file of this run.
        self._header: tuple[str, list, list] | None = None
        self._described: set[str] = set()  # tags whose metadata the current file holds
        self._tag_meta: dict[str, bytes] = {}
        self._manifest_meta = actlog_metadata(metadata.KIND_MANIFEST)

    def _get(self) -> Any:
        if self._writer is None:
            # A suffix of our own names the file TensorFlow creates with the
            # writer, so that its disappearance can be noticed.
            self._suffix = f".{uuid.uuid4().hex[:12]}.v2"
            self._writer = tf.summary.create_file_writer(self.path, filename_suffix=self._suffix)
            self._fresh = True
            self._locate()
        return self._writer

    def _locate(self) -> None:
        # Object stores may show the file only after its first flush: look again then.
        try:
            names = [n for n in tf.io.gfile.listdir(self.path) if n.endswith(self._suffix)]
        except (OSError, tf.errors.OpError):
            names = []
        if names:
            self._file = _join(self.path, names[0])
            self.files.append(self._file)

    @property
    def file(self) -> str | None:
        """The event file being appended to, if one is open."""
        return self._file

    def _file_exists(self) -> bool:
        if self._file is None:
            return True  # a filesystem that lists no file: nothing to check against
        try:
            return bool(tf.io.gfile.exists(self._file))
        except (OSError, tf.errors.OpError):
            return False

    def _discard(self) -> None:
        """Forget the current file; the next write opens a new one. Never raises."""
        writer, self._writer = self._writer, None
        self._described.clear()
        self._file = None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the file is already unusable
                pass

    def write(
        self,
        step: int,
        *,
        images: Iterable[tuple[str, np.ndarray]] = (),
        scalars: Iterable[tuple[str, float]] = (),
        channel_stats: Iterable[tuple[str, str, str, np.ndarray]] = (),
        texts: Iterable[tuple[str, str]] = (),
        manifest: str | None = None,
    ) -> None:
        """Write one event at ``step``, flush it, and make sure it reached its file.

        ``images`` are ``(tag, uint8 (h, w, c))``, ``scalars`` ``(tag, value)``,
        ``channel_stats`` ``(tag, layer, stat, float32 values)``, ``texts``
        ``(tag, markdown)``; ``manifest`` is the JSON of :func:`metadata.manifest`.

        Raises:
            EventFileLost: the file disappeared while this event was written
                (the event is lost; the next one opens a new file).
            OSError, tf.errors.OpError: the filesystem failed (same recovery).
        """
        images, texts = list(images), list(texts)
        reopened = None
        if self._writer is not None and not self._file_exists():
            reopened = self._file
            self._discard()
        if manifest is not None:
            reserved = [(t, i) for t, i in images if t.startswith(metadata.RESERVED_PREFIX + "/")]
            self._header = (manifest, texts, reserved)
        try:
            self._get()
            if self._fresh and manifest is None and self._header is not None:
                manifest, head_texts, head_images = self._header
                texts = head_texts + texts
                images = head_images + images
            self._emit(step, images, scalars, channel_stats, texts, manifest)
        except Exception:
            # A half-written record would end every reader's pass over this file:
            # later events go to a new one.
            self._discard()
            raise
        if self._file is None:
            self._locate()
        if not self._file_exists():
            lost = self._file
            self._discard()
            raise EventFileLost(
                f"the event file {lost} disappeared while step {step} was written to it"
            )
        self._fresh = False
        if reopened is not None and self.on_reopen is not None:
            self.on_reopen(
                f"the event file {reopened} disappeared (was the log directory removed?); "
                f"what it held is gone with it. Step {step} and later go to {self._file}"
            )

    def _emit(
        self, step: int, images: list, scalars: Iterable, channel_stats: Iterable, texts: list,
        manifest: str | None,
    ) -> None:
        """Write one event (the arguments of :meth:`write`) as ONE record and flush it.

        The ``Summary`` proto is built in Python (PNGs by :mod:`actlog.png`)
        and handed to ``write_raw_pb``: one op per event, nothing traced, so
        neither the first event of a large model nor a second logger pays for
        compiling a graph of hundreds of summary ops. Records are in the
        formats TensorBoard's own summary ops write (image: ``[width,
        height, png]`` strings; scalar: float32 scalar; text: string), with
        each tag's metadata in its first record of the file.
        """
        summary = summary_pb2.Summary()
        if manifest is not None:
            self._add(summary, metadata.MANIFEST_TAG, _string_tensor([manifest], ()), self._manifest_meta)
        for tag, text in texts:
            self._add(summary, tag, _string_tensor([text], ()), TEXT_METADATA)
        for tag, image in images:
            height, width = image.shape[:2]
            encoded = encode_png(image)
            self._add(
                summary, tag, _string_tensor([str(width), str(height), encoded], (3,)), IMAGE_METADATA
            )
        for tag, value in scalars:
            self._add(summary, tag, _float_tensor(np.float32(value)), SCALAR_METADATA)
        for tag, layer, stat, values in channel_stats:
            meta = self._tag_meta.get(tag)
            if meta is None:
                meta = actlog_metadata(metadata.KIND_CHANNEL_STATS, layer=layer, stat=stat)
            self._add(summary, tag, _float_tensor(np.asarray(values, np.float32)), meta)
        writer = self._get()
        with writer.as_default(step=step), tf.summary.record_if(True):
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
        writer.flush()
        self._described.update(value.tag for value in summary.value)

    def _add(self, summary: Any, tag: str, tensor: Any, meta: bytes) -> None:
        value = summary.value.add(tag=tag, tensor=tensor)
        if tag not in self._described:
            value.metadata.ParseFromString(meta)
            self._tag_meta.setdefault(tag, meta)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                self._file = None
                self._described.clear()


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if "://" in directory else os.path.join(directory, name)


def _shape(dims: tuple[int, ...]) -> Any:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def _string_tensor(values: list[str | bytes], dims: tuple[int, ...]) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=_shape(dims),
        string_val=[v.encode("utf-8") if isinstance(v, str) else v for v in values],
    )


def _float_tensor(values: np.ndarray) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=_shape(values.shape),
        tensor_content=np.ascontiguousarray(values, dtype="<f4").tobytes(),
    )
