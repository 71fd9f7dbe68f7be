"""actlog's event-file writer: TensorBoard's format, no TensorFlow.

An event file is a sequence of records, each one serialized ``Event``
protocol buffer (both encoded by :mod:`actlog.codec`, which owns the format):
first a ``file_version`` event, then one event per actlog step holding every
summary of that step. Each event is
appended and flushed as one record, so a process killed between events leaves
a complete file, and a kill during a write leaves at most one torn record at
the end, which TensorBoard and :func:`actlog.read` stop at.

:class:`RunWriter` writes one run directory. It knows which file it appends to
and checks, before and after each write, that the file is still there: a
removed log directory would otherwise swallow every later event. When the file
is gone or a write fails, the file is left as it is and the next event starts
a new one, repeating the run's header (manifest, layer table, probe images) at
its top so that the new file is readable on its own.

On an object store (``s3://``, ``gs://``: :attr:`actlog.storage.Storage.appends`
is False) nothing can be appended, so a "file" is a sequence of objects, one
per event, each written once (:func:`actlog.codec.event_object_names`): an event costs one
PUT of its own size however long the run. Their names sort in the order they
were written, after every earlier file of the process, which is the order
TensorBoard's loader (its ``DirectoryWatcher`` reads a run's event files one
after the other, in name order, and never goes back) and :func:`actlog.read`
read them in; only the first object of a sequence holds the run's header.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence

from actlog import codec
from actlog.storage import Appender, Storage


class EventFileLost(OSError):
    """The event file being written, or its directory, disappeared while actlog wrote to it."""


SPOOL_BYTES = 8 * 2**20
"""Bytes of an event a :class:`Spool` keeps in memory; the rest waits in a temporary file."""


class Spool:
    """An event's serialized ``Summary`` while it is made, a few layers at a time.

    Up to :data:`SPOOL_BYTES` it stays in memory; beyond, it moves to an anonymous
    temporary file (:func:`tempfile.gettempdir`, removed on :meth:`close` or exit), so
    an event of hundreds of layers never holds all its PNGs at once: the writer
    streams it into the record in chunks.
    """

    CHUNK = 2**22

    def __init__(self, limit: int = SPOOL_BYTES) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=limit)  # noqa: SIM115 - closed by close()
        self._size = 0

    def append(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)

    def __len__(self) -> int:
        return self._size

    def chunks(self) -> Iterator[bytes]:
        """The bytes appended so far, in order, a few MB at a time."""
        self._file.seek(0)
        while chunk := self._file.read(self.CHUNK):
            yield chunk
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()


def _chunks(pieces: Sequence[bytes | Spool]) -> Iterator[bytes]:
    for piece in pieces:
        if isinstance(piece, Spool):
            yield from piece.chunks()
        else:
            yield piece


class _Objects(Appender):
    """An event file on an object store: each :meth:`append` puts an object of its own."""

    def __init__(self, storage: Storage, directory: str, first: bytes) -> None:
        self.storage, self.directory = storage, directory
        self._names = codec.event_object_names()
        self._first = first  # the file_version record, put with the first event
        self.path = storage.join(directory, next(self._names))
        self._used = False  # whether self.path holds an event already

    def append(self, data: bytes | Sequence[bytes]) -> None:
        pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        if self._used:
            self.path = self.storage.join(self.directory, next(self._names))
        try:
            self.storage.put(self.path, [self._first, *pieces] if self._first else pieces)
        except FileNotFoundError as err:
            raise EventFileLost(
                f"{self.directory} is gone (was its bucket removed?): {err}"
            ) from err
        self._first = b""
        self._used = True

    def lost(self) -> bool:
        return False  # a removed bucket fails the next put, which raises EventFileLost

    def close(self) -> None:
        pass


class RunWriter:
    """Writes one run directory; nothing touches the store until the first write.

    Args:
        storage: where the run lives (:func:`actlog.storage.for_path`).
        path: the run directory.
        on_reopen: called with a message after an event was written to a new
            file because the previous one had disappeared between events.
    """

    def __init__(
        self, storage: Storage, path: str, on_reopen: Callable[[str], None] | None = None
    ) -> None:
        self.storage = storage
        self.path = path
        self.on_reopen = on_reopen
        self.files: list[str] = []
        """Every event file this writer opened (on an object store: every object), oldest first."""
        self._file: Appender | None = None
        self._header = b""  # serialized Summary repeated at the top of every new file

    @property
    def file(self) -> str | None:
        """The event file being appended to, if one is open."""
        return None if self._file is None else self._file.path

    def write(
        self, step: int, summary: bytes | Sequence[bytes | Spool], *, header: bytes | None = None
    ) -> None:
        """Append one event at ``step`` and make sure it reached its file.

        Args:
            step: the event's step.
            summary: the serialized ``Summary`` of the event, or pieces that concatenate into it
                (bytes, or a :class:`Spool`, streamed into the record).
            header: the part of ``summary`` (manifest, layer table, probe images)
                that a new file of this run must start with; remembered for later
                files. Events without one get the last header prepended when they
                open a new file.

        Raises:
            EventFileLost: the file disappeared while this event was written
                (the event is lost; the next one opens a new file).
            OSError: the store failed (same recovery).
        """
        pieces = [summary] if isinstance(summary, bytes) else list(summary)
        reopened = None
        if self._file is not None and self._file.lost():
            reopened = self._file.path
            self._discard()
        if header is not None:
            self._header = header
        try:
            if self._file is None:
                self._open()
                if header is None:
                    pieces = [self._header, *pieces]  # concatenated messages merge
            data = codec.encode_event_parts(step, pieces)
            self._file.append(codec.frame_stream(_chunks(data), sum(len(piece) for piece in data)))
            if isinstance(self._file, _Objects) and self._file.path != self.files[-1]:
                self.files.append(self._file.path)
        except Exception:
            # A half-written record would end every reader's pass over this file:
            # later events go to a new one.
            self._discard()
            raise
        if self._file.lost():
            lost = self._file.path
            self._discard()
            raise EventFileLost(f"the event file {lost} disappeared while step {step} was written to it")
        if reopened is not None and self.on_reopen is not None:
            self.on_reopen(
                f"the event file {reopened} disappeared (was the log directory removed?); "
                f"what it held is gone with it. Step {step} and later go to {self.file}"
            )

    def _open(self) -> None:
        version = codec.frame(codec.encode_file_version())
        if not self.storage.appends:
            # No directory to make, and no bucket made again if someone removed it.
            self._file = _Objects(self.storage, self.path, version)
            self.files.append(self._file.path)
            return
        self.storage.makedirs(self.path)
        appender = self.storage.appender(self.storage.join(self.path, codec.event_file_name()))
        try:
            appender.append(version)
        except Exception:
            appender.close()
            raise
        self._file = appender
        self.files.append(appender.path)

    def _discard(self) -> None:
        """Forget the current file; the next write opens a new one. Never raises."""
        appender, self._file = self._file, None
        if appender is not None:
            try:
                appender.close()
            except Exception:  # noqa: BLE001 - the file is already unusable
                pass

    def close(self) -> None:
        appender, self._file = self._file, None
        if appender is not None:
            appender.close()


