"""Opaque image keys: what the dashboard's page holds instead of image URLs.

TensorBoard's own image plugin hands its page a blob key per image and serves
the bytes at ``/individualImage?blob_key=...``; actlog does the same. A key
names one image as it was written: a grid (run, layer, probe, step), a probe
image (run, probe), a layer's feature atlas (run, layer, step) or a probe's class
activation map (run, layer, probe, step), plus a stamp
of where its record sits in the event files, so a step written again (a
restarted run) gets a new key and a key never names two different pictures.
That is what lets the browser cache ``/image``.

A key is URL-safe base64 of a small JSON list. The page never looks inside; the
server decodes it with :func:`decode`, which accepts nothing but the exact
shapes :func:`encode_grid`, :func:`encode_probe`, :func:`encode_atlas` and
:func:`encode_class_map` produce, and the caller then checks every part against the log like any other
request parameter. Nothing in a key is ever used as a path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from actlog.reader import ImageRef

MAX_KEY_LENGTH = 1024
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_GRID, _PROBE, _ATLAS, _CAM = "g", "p", "a", "c"

GRID, PROBE, ATLAS, CAM = "grid", "probe", "atlas", "class_map"
"""The kinds of image a key names (:attr:`ImageKey.kind`)."""


class BadKey(ValueError):
    """A key that none of the ``encode_*`` functions of this module can have made."""


@dataclass(frozen=True)
class ImageKey:
    """A decoded key: a :data:`GRID` names all its parts; a :data:`PROBE` image has no
    ``layer`` and no ``step``; an :data:`ATLAS` picture has no ``probe``; a :data:`CAM` picture
    names all its parts, like a grid."""

    kind: str
    run: str
    layer: str | None
    probe: int | None
    step: int | None
    stamp: str


def stamp(ref: ImageRef | bytes) -> str:
    """A short fingerprint of where an image is stored (or of its bytes)."""
    if isinstance(ref, bytes):
        raw = ref
    else:
        raw = f"{ref.path}\0{ref.offset}\0{ref.index}".encode()
    return hashlib.blake2s(raw, digest_size=6).hexdigest()


def encode_grid(run: str, layer: str, probe: int, step: int, ref: ImageRef | bytes) -> str:
    return _encode([_GRID, run, layer, probe, step, stamp(ref)])


def encode_probe(run: str, probe: int, ref: ImageRef | bytes) -> str:
    return _encode([_PROBE, run, probe, stamp(ref)])


def encode_atlas(run: str, layer: str, step: int, ref: ImageRef | bytes) -> str:
    return _encode([_ATLAS, run, layer, step, stamp(ref)])


def encode_class_map(run: str, layer: str, probe: int, step: int, ref: ImageRef | bytes) -> str:
    return _encode([_CAM, run, layer, probe, step, stamp(ref)])


def _encode(parts: list[Any]) -> str:
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode(key: str) -> ImageKey:
    """The parts of ``key``; :class:`BadKey` for anything this module did not make."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not _KEY_RE.match(key):
        raise BadKey("Malformed image key: expected the URL-safe base64 text that the routes hand out.")
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        parts = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadKey("Malformed image key: it does not decode.") from None
    if _shape(parts, [str, str, str, int, int, str]) and parts[0] == _GRID:
        _, run, layer, probe, step, mark = parts
        return ImageKey(GRID, run, layer, probe, step, mark)
    if _shape(parts, [str, str, str, int, int, str]) and parts[0] == _CAM:
        _, run, layer, probe, step, mark = parts
        return ImageKey(CAM, run, layer, probe, step, mark)
    if _shape(parts, [str, str, int, str]) and parts[0] == _PROBE:
        _, run, probe, mark = parts
        return ImageKey(PROBE, run, None, probe, None, mark)
    if _shape(parts, [str, str, str, int, str]) and parts[0] == _ATLAS:
        _, run, layer, step, mark = parts
        return ImageKey(ATLAS, run, layer, None, step, mark)
    raise BadKey("Malformed image key: not a key this dashboard hands out.")


def _shape(parts: Any, types: list[type]) -> bool:
    return (
        isinstance(parts, list)
        and len(parts) == len(types)
        # bool is an int to isinstance; a key never holds one.
        and all(type(p) is t for p, t in zip(parts, types, strict=True))
        and all(p >= 0 for p in parts if type(p) is int)
    )
