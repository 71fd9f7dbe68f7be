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
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.image import metadata as image_metadata

from actlog import metadata

PNG_COMPRESSION = 1
IMAGE_METADATA = image_metadata.create_summary_metadata(
    display_name="", description=""
).SerializeToString()


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
        self._compiled: dict[tuple, Any] = {}
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

    @property
    def tracing_count(self) -> int:
        """Traces of the compiled write functions of the current file: one per
        structure of event (the first event, with probe images, and the rest)."""
        return sum(f.experimental_get_tracing_count() for f in self._compiled.values())

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
        self._compiled.clear()
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
            self._emit(
                step, images=images, scalars=scalars, channel_stats=channel_stats,
                texts=texts, manifest=manifest,
            )
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
        self,
        step: int,
        *,
        images: Iterable[tuple[str, np.ndarray]] = (),
        scalars: Iterable[tuple[str, float]] = (),
        channel_stats: Iterable[tuple[str, str, str, np.ndarray]] = (),
        texts: Iterable[tuple[str, str]] = (),
        manifest: str | None = None,
    ) -> None:
        """Write one event's summaries at ``step`` and flush them to disk.

        ``images`` are uint8 ``(h, w, c)`` arrays; ``channel_stats`` are
        ``(tag, layer, stat, values)``. The images, scalars and channel
        statistics go through one compiled function per structure of event
        (tags and shapes), built at the first event of that structure: the
        per-event cost is one graph call, not a few thousand eager ops.
        ``texts`` and ``manifest`` (first event of a fit only) are written
        eagerly.
        """
        images, scalars, channel_stats = list(images), list(scalars), list(channel_stats)
        writer = self._get()
        with writer.as_default(step=step), tf.summary.record_if(True):
            if manifest is not None:
                tf.summary.write(
                    metadata.MANIFEST_TAG, tf.constant(manifest), metadata=self._manifest_meta
                )
            for tag, text in texts:
                tf.summary.text(tag, text)
            key = (
                tuple((tag, image.shape) for tag, image in images),
                tuple(tag for tag, _ in scalars),
                tuple((tag, layer, stat, values.shape) for tag, layer, stat, values in channel_stats),
            )
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = self._compiled[key] = self._compile(key)
            compiled(
                tf.constant(step, tf.int64),
                [image for _, image in images],
                np.asarray([value for _, value in scalars], dtype=np.float32),
                [values for *_, values in channel_stats],
            )
        writer.flush()

    def _compile(self, key: tuple) -> Any:
        image_keys, scalar_tags, channel_keys = key
        channel_meta = [
            actlog_metadata(metadata.KIND_CHANNEL_STATS, layer=layer, stat=stat)
            for _, layer, stat, _ in channel_keys
        ]
        signature = [
            tf.TensorSpec((), tf.int64),
            [tf.TensorSpec(shape, tf.uint8) for _, shape in image_keys],
            tf.TensorSpec((len(scalar_tags),), tf.float32),
            [tf.TensorSpec(shape, tf.float32) for *_, shape in channel_keys],
        ]

        def write_event(step: Any, images: list, scalars: Any, channels: list) -> None:
            for (tag, shape), image in zip(image_keys, images, strict=True):
                # The Images plugin's own format: a string tensor [width, height, png].
                # Fast zlib (level 1) halves the encoding time for ~10% more bytes.
                png = tf.image.encode_png(image, compression=PNG_COMPRESSION)
                size = tf.constant([str(shape[1]), str(shape[0])])
                tf.summary.write(tag, tf.concat([size, [png]], 0), step=step, metadata=IMAGE_METADATA)
            for index, tag in enumerate(scalar_tags):
                tf.summary.scalar(tag, scalars[index], step=step)
            for (tag, *_), meta, values in zip(channel_keys, channel_meta, channels, strict=True):
                tf.summary.write(tag, values, step=step, metadata=meta)

        return tf.function(write_event, input_signature=signature, reduce_retracing=False)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                # compiled writes captured this writer: the next one needs new ones
                self._writer = None
                self._file = None
                self._compiled.clear()


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if "://" in directory else os.path.join(directory, name)
