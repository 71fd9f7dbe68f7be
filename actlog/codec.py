"""actlog's on-disk format, in one place: event-file names, record framing,
``Event`` encoding and decoding, and the version of actlog's plugin metadata.

The writer (:mod:`actlog.writer`), the run chooser (:mod:`actlog.runs`), the
index (:mod:`actlog.index`) and the reader make and read logs only through this
module, so that a change of format is made once, and a log written by one part
is read the same way by every other. The format is TensorBoard's, byte for
byte: TensorBoard's own loaders read what actlog writes.

**File names.** ``events.out.tfevents.<time>.<host>.<pid>.<n><random>.v2``
(:func:`event_file_name`); on an object store, where nothing can be appended, a
sequence of objects ``<stem>-000000000.v2``, ... (:func:`event_object_names`).
Names sort in the order they were made, which is the order TensorBoard's loader
and :func:`actlog.read` read them in (:func:`file_order`).

**Records** (TFRecord framing, the container of every TensorBoard event file).
A record is ``uint64 length``, ``uint32 masked_crc32c(length)``, ``data``,
``uint32 masked_crc32c(data)``, all little-endian. The writer frames each
event with :func:`frame`; the reader walks a file with :func:`scan`, which
stops at the first record that is incomplete (a file still being written, or
cut by a crash) or damaged, and says which. CRC-32C comes from
``google-crc32c``: a maintained C implementation, since a pure-Python table is
far too slow for records of megabytes.

**Events.** Each record holds one serialized ``Event`` protocol buffer (the one
that ships with TensorBoard): first a ``file_version`` event, then one event per
step holding one ``Summary``. :func:`encode_event_parts` puts the summary in
without parsing or copying it again; :func:`event_step` reads only the step.

**Plugin metadata.** actlog's tensors carry JSON with a ``version``
(:func:`plugin_content`); :func:`parse_plugin_content` and
:func:`check_version` refuse a version newer than this actlog knows, rather
than misread a log written by a later release.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c

# --------------------------------------------------------------------------
# File names.

_PREFIX = "events.out.tfevents."
_EVENT_FILE_RE = re.compile(r"^events\.out\.tfevents\.(?P<stamp>\d+)")
_COUNTER = itertools.count()


def _stem() -> str:
    return f"{_PREFIX}{int(time.time()):010d}.{this_writer()}.{next(_COUNTER):04d}{uuid.uuid4().hex[:8]}"


def event_file_name() -> str:
    """``events.out.tfevents.<time>.<host>.<pid>.<n><random>.v2``: sorts by creation time."""
    return _stem() + ".v2"


def event_object_names() -> Iterator[str]:
    """Names for the objects of one event file on an object store, in the order to write them:
    ``<stem>-000000000.v2``, ``<stem>-000000001.v2``, ...; ``<stem>`` as in :func:`event_file_name`,
    so they sort after every earlier file (or object) of this process and before later ones."""
    stem = _stem()
    for number in itertools.count():
        yield f"{stem}-{number:09d}.v2"


def is_event_file(name: str) -> bool:
    """Whether ``name`` (a file name, not a path) is a TensorBoard event file."""
    return _EVENT_FILE_RE.match(name) is not None


def file_order(name: str) -> tuple[int, str]:
    """Sort key of event file names: creation time, then name."""
    match = _EVENT_FILE_RE.match(name)
    return (int(match.group("stamp")) if match else 0), name


def this_writer() -> str:
    """``host.pid`` of this process, as the names it makes carry it."""
    return f"{socket.gethostname()}.{os.getpid()}"


def writer_of(name: str) -> str:
    """``host.pid`` of the process that made the event file ``name`` (``""`` when not an actlog name)."""
    parts = name[len(_PREFIX):].split(".")
    return ".".join(parts[1:-2]) if name.startswith(_PREFIX) and len(parts) >= 4 else ""


# --------------------------------------------------------------------------
# Records.

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
OVERHEAD = _HEADER.size + _FOOTER.size
"""Bytes a record adds to its data."""


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC: CRC-32C rotated right by 15 plus a constant."""
    return _mask(google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data))


def frame(data: bytes) -> bytes:
    """``data`` as one record."""
    return b"".join(frame_stream([data], len(data)))


def frame_stream(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """One record whose data is the concatenation of ``pieces`` (``size`` bytes in all), as
    pieces to write in order. ``pieces`` is read once, as it is written, with the CRC computed
    on the way: a record of hundreds of megabytes never needs to be in memory at once."""
    length = struct.pack("<Q", size)
    yield length + _FOOTER.pack(masked_crc32c(length))
    crc, seen = 0, 0
    for piece in pieces:
        crc = google_crc32c.extend(crc, piece)
        seen += len(piece)
        yield piece
    if seen != size:
        raise ValueError(f"a record announced {size} bytes of data and got {seen}")
    yield _FOOTER.pack(_mask(crc))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found in a buffer.

    Attributes:
        records: ``(offset, length)`` of each complete record's data, in order.
        end: offset just past the last complete record: where to resume.
        problem: why the scan stopped before the end of the buffer, or ``None``.
        incomplete: the stop was a record not (yet) fully there, rather than damage.
    """

    records: list[tuple[int, int]]
    end: int
    problem: str | None
    incomplete: bool


def scan(buffer: bytes | memoryview, start: int = 0, *, verify: bool = True) -> Scan:
    """Find the complete records of ``buffer`` from offset ``start``.

    The CRC of every length is checked (a wrong length would make every later
    record garbage); the CRC of the data too when ``verify``.
    """
    view = memoryview(buffer)
    size, offset = len(view), start
    records: list[tuple[int, int]] = []
    problem, incomplete = None, False
    while offset < size:
        if size - offset < _HEADER.size:
            problem, incomplete = f"a record header is cut short at byte {offset}", True
            break
        length, length_crc = _HEADER.unpack_from(view, offset)
        if masked_crc32c(view[offset : offset + 8]) != length_crc:
            problem = f"the record length at byte {offset} fails its CRC check"
            break
        if size - offset < OVERHEAD + length:
            problem = (
                f"the record at byte {offset} needs {length + OVERHEAD} bytes, "
                f"only {size - offset} are there"
            )
            incomplete = True
            break
        data = offset + _HEADER.size
        if verify:
            (data_crc,) = _FOOTER.unpack_from(view, data + length)
            if masked_crc32c(view[data : data + length]) != data_crc:
                problem = f"the record data at byte {offset} fails its CRC check"
                break
        records.append((data, length))
        offset = data + length + _FOOTER.size
    return Scan(records, offset, problem, incomplete)


# --------------------------------------------------------------------------
# Events.

FILE_VERSION = "brain.Event:2"


def encode_file_version(wall_time: float | None = None) -> bytes:
    """The serialized ``Event`` that opens every event file."""
    from tensorboard.compat.proto import event_pb2

    wall_time = time.time() if wall_time is None else wall_time
    return event_pb2.Event(wall_time=wall_time, file_version=FILE_VERSION).SerializeToString()


def encode_event(step: int, summary: bytes, wall_time: float | None = None) -> bytes:
    """A serialized ``Event`` holding the serialized ``Summary`` ``summary``."""
    return b"".join(encode_event_parts(step, [summary], wall_time))


def encode_event_parts(step: int, summary: Sequence[Any], wall_time: float | None = None) -> list[Any]:
    """:func:`encode_event` as pieces: the ``Summary`` (given as pieces that concatenate into
    it: anything with a ``len``, passed through as it is) goes in as field 5 (``Event.summary``)
    without being parsed or copied again: an event of many grids is megabytes of PNG."""
    from tensorboard.compat.proto import event_pb2

    head = event_pb2.Event(wall_time=time.time() if wall_time is None else wall_time, step=step)
    size = sum(len(piece) for piece in summary)
    return [head.SerializeToString() + b"\x2a" + _varint(size), *summary]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_event(data: bytes | memoryview) -> Any:
    """A serialized ``Event`` as TensorBoard's ``event_pb2.Event``; raises protobuf's ``DecodeError``."""
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event()
    event.ParseFromString(bytes(data) if isinstance(data, memoryview) else data)
    return event


def event_step(data: bytes, start: int, end: int) -> int | None:
    """The ``step`` of the serialized ``Event`` ``data[start:end]`` if it holds a summary, else None.

    Reads only the step, which ``Event`` serializes first after the wall time
    (field 1, fixed64; field 2, varint), without parsing the summary.
    """
    i = start + 9 if start < end and data[start] == 0x09 else start
    if i < end and data[i] == 0x2A:  # the summary right after the wall time: step 0 (not written)
        return 0
    if i >= end or data[i] != 0x10:
        return None
    value, shift = 0, 0
    for j in range(i + 1, min(end, i + 11)):
        value |= (data[j] & 0x7F) << shift
        if not data[j] & 0x80:
            return value
        shift += 7
    return None


# --------------------------------------------------------------------------
# Plugin metadata.

METADATA_VERSION = 1
"""Version of the JSON in actlog's plugin metadata and manifest. Bumped on any
incompatible change; readers refuse versions newer than they know."""


def plugin_content(kind: str, **fields: Any) -> bytes:
    """The ``plugin_data.content`` bytes of one of actlog's tensor summaries."""
    return json.dumps({"version": METADATA_VERSION, "kind": kind, **fields}).encode("utf-8")


def parse_plugin_content(content: bytes) -> dict[str, Any]:
    """Inverse of :func:`plugin_content`; raises ``ValueError`` on foreign or newer data."""
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Not actlog plugin metadata: {err}") from None
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError(f"Not actlog plugin metadata: {data!r}")
    check_version(data, "metadata")
    return data


def check_version(data: dict[str, Any], what: str) -> None:
    """Refuse ``data`` (plugin metadata or a manifest) written by a newer actlog."""
    if data.get("version", 0) > METADATA_VERSION:
        raise ValueError(
            f"actlog {what} version {data['version']} is newer than this actlog "
            f"understands ({METADATA_VERSION}); upgrade actlog to read this log."
        )
