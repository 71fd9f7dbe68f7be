"""PNG encoding of uint8 grids with numpy and a deflate library only.

actlog's grids are blocky (nearest-neighbour upscaled tiles on flat padding),
so the cheapest PNG there is, every row unfiltered and deflated fast, is both
faster to make and smaller than the general-purpose encoders (TensorFlow's
``encode_png``, Pillow's). Deflating is nearly all of the time, so it is ISA-L's
(``isal``, a dependency where it has wheels): the same zlib stream any PNG
decoder reads, several times faster than zlib's level 1 for slightly larger files
(figures in ``docs/performance.md``). Without ``isal`` it is zlib's level 1. Both release the
GIL while they work. Pictures made of the inputs compress better with zlib, and
take it (:data:`actlog.event.PICTURE_LEVEL`).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:
    from isal import isal_zlib
except ImportError:  # a platform without its wheel
    isal_zlib = None

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA
LEVEL = 1
"""zlib's level where ``isal`` is missing, and ISA-L's (0-3) where it is there."""

DEFLATE = "isal" if isal_zlib is not None else "zlib"
"""Which library :func:`encode_png` deflates with by default."""


def encode_png(image: np.ndarray, level: int | None = None) -> bytes:
    """A uint8 ``(h, w)`` or ``(h, w, c)`` array (c in 1..4) as PNG bytes.

    Args:
        image: the pixels; not modified.
        level: zlib's level, 0 (none) to 9 (smallest), deflated by zlib. Default:
            :data:`LEVEL` of :data:`DEFLATE`'s library.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in _COLOR_TYPE:
        raise ValueError(
            f"encode_png takes uint8 (h, w) or (h, w, c) with c in 1..4; received "
            f"{array.dtype} {array.shape}."
        )
    height, width, channels = array.shape
    if height == 0 or width == 0:
        raise ValueError(f"encode_png needs a non-empty image; received shape {array.shape}.")
    rows = np.zeros((height, width * channels + 1), np.uint8)  # first byte: filter 0
    rows[:, 1:] = array.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(rows, level)),
            _chunk(b"IEND", b""),
        )
    )


def _deflate(data: np.ndarray, level: int | None) -> bytes:
    if level is None and isal_zlib is not None:
        return isal_zlib.compress(data, LEVEL)
    return zlib.compress(data, LEVEL if level is None else level)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
