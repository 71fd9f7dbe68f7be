"""PNG encoding of uint8 grids with numpy and zlib only.

actlog's grids are blocky (nearest-neighbour upscaled tiles on flat padding),
so the cheapest PNG there is, every row unfiltered and deflated at level 1,
is both faster to make and smaller than the general-purpose encoders
(TensorFlow's ``encode_png``, Pillow's): about 1 ms per 150 kpixel grid.
``zlib.compress`` releases the GIL while it works.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA
LEVEL = 1


def encode_png(image: np.ndarray, level: int = LEVEL) -> bytes:
    """A uint8 ``(h, w)`` or ``(h, w, c)`` array (c in 1..4) as PNG bytes.

    Args:
        image: the pixels; not modified.
        level: zlib level, 0 (none) to 9 (smallest). Default 1.
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
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
