"""actlog's writer: images, scalars, text and actlog tensors for one run.

One ``tf.summary`` file writer per run, created on first use and closed by
:meth:`RunWriter.close`. Every write happens inside ``record_if(True)``:
Keras' ``TensorBoard(update_freq=...)`` installs a recording condition that
would otherwise silently drop images written between its own updates.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME,
            content=metadata.plugin_content(kind, **fields),
        )
    )
    return proto.SerializeToString()


class RunWriter:
    """Writes one run (``log_dir/<run>``); nothing touches disk until the first write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: Any = None
        self._compiled: dict[tuple, Any] = {}
        self._manifest_meta = actlog_metadata(metadata.KIND_MANIFEST)

    def _get(self) -> Any:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.path)
        return self._writer

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
                self._compiled.clear()
