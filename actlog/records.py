"""TFRecord framing, the container of every TensorBoard event file.

A record is ``uint64 length``, ``uint32 masked_crc32c(length)``, ``data``,
``uint32 masked_crc32c(data)``, all little-endian. The writer frames each
event with :func:`frame`; the reader walks a file with :func:`scan`, which
stops at the first record that is incomplete (a file still being written, or
cut by a crash) or damaged, and says which.

CRC-32C comes from ``google-crc32c``: a maintained C implementation, since a
pure-Python table is far too slow for records of megabytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import google_crc32c

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
