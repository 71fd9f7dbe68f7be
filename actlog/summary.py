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

from actlog import metadata


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
        self._channel_meta: dict[str, bytes] = {}
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
        ``(tag, layer, stat, values)``.
        """
        writer = self._get()
        with writer.as_default(step=step), tf.summary.record_if(True):
            if manifest is not None:
                tf.summary.write(
                    metadata.MANIFEST_TAG, tf.constant(manifest), metadata=self._manifest_meta
                )
            for tag, text in texts:
                tf.summary.text(tag, text)
            for tag, image in images:
                tf.summary.image(tag, image[np.newaxis], max_outputs=1)
            for tag, value in scalars:
                tf.summary.scalar(tag, value)
            for tag, layer, stat, values in channel_stats:
                meta = self._channel_meta.get(tag)
                if meta is None:
                    meta = actlog_metadata(metadata.KIND_CHANNEL_STATS, layer=layer, stat=stat)
                    self._channel_meta[tag] = meta
                tf.summary.write(tag, values, metadata=meta)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
