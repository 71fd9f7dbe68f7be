"""actlog.png: the grids' PNGs decode, with Pillow, to exactly the pixels given, whichever
library deflated them."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from actlog import png


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image)


def _idat(data: bytes) -> bytes:
    """The deflated pixels of a PNG with one IDAT chunk."""
    start = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[start - 4:start])
    return data[start + 4:start + 4 + length]


def _grid(channels: int) -> np.ndarray:
    """Blocky like a grid: 4 x 4 tiles upscaled x 6 on a flat padding, plus noise in one tile."""
    rng = np.random.default_rng(channels)
    tiles = rng.integers(0, 256, (4, 4, channels), dtype=np.uint8)
    image = np.full((30, 30, channels), 7, np.uint8)
    image[3:27, 3:27] = tiles.repeat(6, axis=0).repeat(6, axis=1)
    image[:5, :5] = rng.integers(0, 256, (5, 5, channels), dtype=np.uint8)
    return image


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("level", [None, 0, 1, 9])
def test_pixels_come_back_exactly(channels, level):
    image = _grid(channels)
    decoded = _decode(png.encode_png(image, level))
    np.testing.assert_array_equal(decoded.reshape(image.shape), image)


def test_a_two_dimensional_image_is_gray():
    image = _grid(1)[..., 0]
    decoded = _decode(png.encode_png(image))
    assert decoded.shape == image.shape
    np.testing.assert_array_equal(decoded, image)


def test_default_deflate_is_isal_where_installed():
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert png.DEFLATE == "isal"
    image = _grid(3)
    rows = np.concatenate([np.zeros((30, 1), np.uint8), image.reshape(30, 90)], axis=1)
    assert _idat(png.encode_png(image)) == isal_zlib.compress(rows.tobytes(), png.LEVEL)
    # A level given is zlib's.
    assert _idat(png.encode_png(image, 6)) == zlib.compress(rows.tobytes(), 6)


def test_without_isal_zlib_deflates(monkeypatch):
    monkeypatch.setattr(png, "isal_zlib", None)
    image = _grid(1)
    data = png.encode_png(image)
    rows = np.concatenate([np.zeros((30, 1), np.uint8), image.reshape(30, 30)], axis=1)
    assert _idat(data) == zlib.compress(rows.tobytes(), png.LEVEL)
    np.testing.assert_array_equal(_decode(data).reshape(image.shape), image)


@pytest.mark.parametrize(
    ("image", "received"),
    [
        (np.zeros((4, 4), np.float32), "float32 (4, 4, 1)"),
        (np.zeros((4, 4, 5), np.uint8), "uint8 (4, 4, 5)"),
        (np.zeros((0, 4), np.uint8), "(0, 4, 1)"),
    ],
)
def test_bad_images_are_refused_naming_what_was_received(image, received):
    with pytest.raises(ValueError, match=f"received.*{received.replace('(', '[(]').replace(')', '[)]')}"):
        png.encode_png(image)


def test_pictures_of_inputs_take_zlib():
    """Probe images, atlas crops and activation maximisation are photographs, where zlib's
    PNGs are smaller; only the grids take the fast default."""
    from tensorboard.compat.proto import summary_pb2

    from actlog import event

    image = _grid(3)
    summary = summary_pb2.Summary.FromString(event.images_summary({"conv_1/actmax": image}))
    data = summary.value[0].tensor.string_val[2]
    rows = np.concatenate([np.zeros((30, 1), np.uint8), image.reshape(30, 90)], axis=1)
    assert _idat(data) == zlib.compress(rows.tobytes(), event.PICTURE_LEVEL)
    np.testing.assert_array_equal(_decode(data), image)
