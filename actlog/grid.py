"""Activation grids in plain numpy: channel choice, normalisation, colour maps, tiling.

One layer's output for one probe image is a stack of 2-D maps, one per channel.
This module turns that stack into a single uint8 picture: each channel a tile,
tiles on a near-square grid, upscaled by an integer nearest-neighbour factor to
a readable size, inside a pixel budget. It imports numpy only, so it can be used
(and tested) without TensorFlow.

The work is split so the choices that must stay stable between epochs are made
once: :func:`select_channels` and :func:`plan_layout` at the first event, then
:func:`render` at every event with the same :class:`GridLayout`. :func:`render`
is two steps: :func:`levels` (channel choice, subsampling, normalisation to
0..255, written once for numpy and for ``keras.ops`` so the callback runs it on
the accelerator) and :func:`render_levels` (colour map, tiling, upscaling).
:class:`GridLayout` owns the geometry: every reader of a log asks it where a
channel's tile is (:meth:`GridLayout.tile_box`).

```python
maps = as_maps(activation)                                  # (H, W, C) float32
channels = select_channels(maps[None], 32, "most_active")   # decided once
layout = plan_layout(maps.shape[:2], channels)              # decided once
image = render(maps, layout, norm="channel", cmap="viridis")  # every event
```
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from actlog.arrays import NUMPY
from actlog.checks import check_choice, check_int
from actlog.tokens import TokenGrid

COLORMAPS: tuple[str, ...] = ("gray", "viridis", "diverging")
"""Accepted colour maps. ``diverging`` is blue (negative) - white (0) - red (positive)."""

NORMS: tuple[str, ...] = ("channel", "layer")
"""Accepted named normalisations; a ``(low, high)`` tuple of finite floats is also accepted."""

SELECTIONS: tuple[str, ...] = ("first", "most_active")
"""Accepted ways to choose which channels are shown when there are too many."""

DATA_FORMATS: tuple[str, ...] = ("channels_last", "channels_first")

MARKER_GRAY = 0
"""Gray level painted where an activation is NaN or infinite."""
MARKER_RGB = (255, 0, 255)
"""Colour (magenta) painted where an activation is NaN or infinite, in colour maps."""

_EPS = 1e-12

# Anchor colours of matplotlib's viridis, sampled at evenly spaced positions of the
# map (the 6-, 7-, 9- and 10-colour palettes of viridisLite, all samples of the same
# 256-entry table). Interpolating them linearly gives a LUT within a few levels of
# the original without importing matplotlib.
_VIRIDIS_PALETTES = (
    ("#440154", "#414487", "#2A788E", "#22A884", "#7AD151", "#FDE725"),
    ("#440154", "#443A83", "#31688E", "#21908C", "#35B779", "#8FD744", "#FDE725"),
    ("#440154", "#472D7B", "#3B528B", "#2C728E", "#21908C", "#27AD81", "#5DC863",
     "#AADC32", "#FDE725"),
    ("#440154", "#482878", "#3E4A89", "#31688E", "#26828E", "#1F9E89", "#35B779",
     "#6DCD59", "#B4DE2C", "#FDE725"),
)

# ColorBrewer RdBu (11 classes), blue end first so negative values are blue; the
# centre is pure white (RdBu's is #F7F7F7) so that an activation of 0 reads as "nothing".
_DIVERGING_ANCHORS = (
    "#053061", "#2166AC", "#4393C3", "#92C5DE", "#D1E5F0", "#FFFFFF",
    "#FDDBC7", "#F4A582", "#D6604D", "#B2182B", "#67001F",
)


def _hex_rgb(code: str) -> tuple[int, int, int]:
    return int(code[1:3], 16), int(code[3:5], 16), int(code[5:7], 16)


def _interpolate_lut(positions: np.ndarray, colors: np.ndarray, at: np.ndarray) -> np.ndarray:
    channels = [np.interp(at, positions, colors[:, i]) for i in range(colors.shape[1])]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def _viridis_lut() -> np.ndarray:
    samples: dict[float, list[tuple[int, int, int]]] = {}
    for palette in _VIRIDIS_PALETTES:
        for i, code in enumerate(palette):
            samples.setdefault(round(i / (len(palette) - 1), 6), []).append(_hex_rgb(code))
    positions = np.array(sorted(samples))
    # Where palettes share a position (0, 1/2, 1, ...) they agree to a level; average them.
    colors = np.array([np.mean(samples[p], axis=0) for p in positions])
    return _interpolate_lut(positions, colors, np.linspace(0.0, 1.0, 256))


def _diverging_lut() -> np.ndarray:
    colors = np.array([_hex_rgb(c) for c in _DIVERGING_ANCHORS], dtype=np.float64)
    half = len(colors) // 2
    positions = np.linspace(0.0, 1.0, half + 1)
    # Two halves of 128 entries each, both ending on white, so that the value 0.5
    # (an activation of 0) is white whichever way 127.5 rounds.
    low = _interpolate_lut(positions, colors[: half + 1], np.linspace(0.0, 1.0, 128))
    high = _interpolate_lut(positions, colors[half:], np.linspace(0.0, 1.0, 128))
    return np.concatenate([low, high])


_LUTS: dict[str, np.ndarray] = {
    "gray": np.arange(256, dtype=np.uint8)[:, None],
    "viridis": _viridis_lut(),
    "diverging": _diverging_lut(),
}
for _lut in _LUTS.values():
    _lut.setflags(write=False)


# --------------------------------------------------------------------------- checks


def check_cmap(cmap: str) -> str:
    """Return ``cmap`` if it is one of :data:`COLORMAPS`, else raise ``ValueError``."""
    return check_choice("cmap", cmap, COLORMAPS)


def check_norm(norm: Any) -> str | tuple[float, float]:
    """Return a valid normalisation: ``"channel"``, ``"layer"`` or ``(low, high)`` floats.

    Args:
        norm: ``"channel"`` (each tile its own range), ``"layer"`` (one range for
            the whole grid) or a pair of finite numbers ``(low, high)`` with
            ``low < high`` (a fixed range, values outside are clipped).

    Raises:
        ValueError: naming the value received and what is accepted.
    """
    accepted = f"{list(NORMS)} or a (low, high) pair of finite numbers with low < high"
    if isinstance(norm, str):
        if norm in NORMS:
            return norm
        raise ValueError(f"Unknown norm {norm!r}. Accepted: {accepted}.")
    if isinstance(norm, (tuple, list)) and len(norm) == 2:
        low, high = norm
        numeric = all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high)
        )
        if numeric and math.isfinite(low) and math.isfinite(high) and low < high:
            return float(low), float(high)
    raise ValueError(f"Invalid norm {norm!r}. Accepted: {accepted}.")


def check_selection(how: str) -> str:
    """Return ``how`` if it is one of :data:`SELECTIONS`, else raise ``ValueError``."""
    return check_choice("channel selection", how, SELECTIONS)


def _check_int(name: str, value: Any, minimum: int) -> int:
    return check_int(name, value, minimum=minimum)


def check_layer_rank(path: str, shape: Sequence[Any]) -> None:
    """Refuse a per-sample output shape that :func:`as_maps` cannot draw, naming the layer."""
    if not 1 <= len(shape) <= 4:
        raise ValueError(
            f"Layer {path!r} has output shape {tuple(shape)} per sample: rank {len(shape)} cannot be "
            "drawn. Accepted: rank 1 (C,), 2 (T, C), 3 (H, W, C) or 4 (D, H, W, C) per sample."
        )


def maps_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(H, W, C)`` that :func:`as_maps` makes of a channels-last per-sample ``shape``."""
    shape = tuple(shape)
    if len(shape) == 1:
        return 1, 1, shape[0]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return shape[-3], shape[-2], shape[-1]


# --------------------------------------------------------------------------- maps


def as_maps(x: np.ndarray, data_format: str = "channels_last") -> np.ndarray:
    """One sample's activation (no batch axis) as float32 ``(H, W, C)`` maps.

    Every layer output becomes a stack of 2-D maps so one renderer serves them all:

    - rank 3 ``(H, W, C)`` (Conv2D): as is.
    - rank 1 ``(C,)`` (Dense): ``(1, 1, C)``, one one-pixel tile per unit.
    - rank 2 ``(T, C)`` (Conv1D): ``(1, T, C)``, each channel a ``1 x T`` strip,
      so with one tile per row the grid reads as a channel x time map.
    - rank 4 ``(D, H, W, C)`` (Conv3D): the maximum over the depth axis ``D``
      (a maximum-intensity projection: what any slice responds to stays visible).

    Args:
        x: the activation of one sample.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``; with
            ``channels_first`` the first axis is the channel axis.

    Returns:
        A new float32 array of shape ``(H, W, C)``; ``x`` is never modified.

    Raises:
        ValueError: for rank 0 or rank > 4, or an unknown ``data_format``.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"Unknown data_format {data_format!r}. Accepted: {list(DATA_FORMATS)}."
        )
    x = np.asarray(x)
    if x.ndim == 0 or x.ndim > 4:
        raise ValueError(
            f"Cannot draw an activation of shape {x.shape} (rank {x.ndim}) as maps. "
            "Accepted ranks (per sample, no batch axis): 1 (C,), 2 (T, C), 3 (H, W, C), "
            "4 (D, H, W, C)."
        )
    if data_format == "channels_first" and x.ndim > 1:
        x = np.moveaxis(x, 0, -1)
    return np.array(batch_maps(NUMPY, x[np.newaxis])[0], dtype=np.float32, copy=True)


def batch_maps(xp: Any, acts: Any, tokens: TokenGrid | None = None) -> Any:
    """:func:`as_maps` for a batch: channels-last ``(k, ...)`` -> ``(k, H, W, C)``.

    ``xp`` is :data:`actlog.arrays.NUMPY` or ``keras.ops`` (see :func:`levels`).
    ``tokens``: a token layer's ``(k, N, D)`` folded over its patch grid
    (:meth:`actlog.tokens.TokenGrid.arrange`) instead of strips.
    """
    if tokens is not None:
        return tokens.arrange(xp, acts)
    k, rank = acts.shape[0], len(acts.shape) - 1
    if rank == 1:
        return xp.reshape(acts, (k, 1, 1, acts.shape[1]))
    if rank == 2:
        return xp.reshape(acts, (k, 1, acts.shape[1], acts.shape[2]))
    if rank == 4:
        return xp.max(acts, axis=1)
    return acts


def select_channels(maps: np.ndarray, max_channels: int | None, how: str = "first") -> np.ndarray:
    """Choose the channels to show, once, at the first event.

    Args:
        maps: ``(k, H, W, C)`` activations of all ``k`` probes (channels last; any
            rank >= 1 works, the last axis being the channels).
        max_channels: how many channels to show at most; ``None`` shows all.
        how: ``"first"`` keeps channels ``0 .. max_channels - 1``;
            ``"most_active"`` keeps the ``max_channels`` channels with the largest
            mean absolute activation over probes and positions (NaN/Inf ignored;
            ties go to the lower index, so the choice is reproducible).

    Returns:
        int64 channel indices in ascending order.
    """
    check_selection(how)
    maps = np.asarray(maps)
    if maps.ndim == 0:
        raise ValueError(f"maps must have a channel axis (last). Received shape {maps.shape}.")
    total = maps.shape[-1]
    if how == "first" or max_channels is None or max_channels >= total:
        return choose_channels(np.zeros(total), max_channels, how)
    flat = np.abs(maps.reshape(-1, total).astype(np.float64))
    finite = np.isfinite(flat)
    sums = np.where(finite, flat, 0.0).sum(axis=0)
    counts = finite.sum(axis=0)
    return choose_channels(np.divide(sums, counts, out=np.zeros(total), where=counts > 0),
                           max_channels, how)


def choose_channels(activity: np.ndarray, max_channels: int | None, how: str = "first") -> np.ndarray:
    """The channels :func:`select_channels` keeps, from each channel's mean ``|activation|``.

    ``activity`` is ``(C,)``; NaN counts as 0. Ties go to the lower index.
    """
    check_selection(how)
    activity = np.nan_to_num(np.asarray(activity, dtype=np.float64).reshape(-1), nan=0.0)
    total = activity.shape[0]
    if max_channels is not None:
        _check_int("max_channels", max_channels, 1)
    count = total if max_channels is None else min(total, int(max_channels))
    if how == "first" or count == total:
        return np.arange(count, dtype=np.int64)
    # A stable sort of the negated score keeps the lower index first among equals.
    order = np.argsort(-activity, kind="stable")[:count]
    return np.sort(order).astype(np.int64)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class GridLayout:
    """Where each channel's tile goes in a grid image; fixed for a layer's whole run.

    Tile ``index`` (row-major) shows channel ``channels[index]`` and starts at
    :meth:`tile_origin`; cells past ``len(channels)`` are filled with the pad value.
    A token layer's tiles are maps over its patch grid, extra tokens beside them
    (``tokens``, :class:`actlog.tokens.TokenGrid`; :meth:`token_at`).
    """

    channels: tuple[int, ...]
    rows: int
    cols: int
    tile_height: int
    tile_width: int
    pad: int
    scale: int
    stride: int
    tokens: TokenGrid | None = None

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "tile_height", "tile_width", "scale", "stride"):
            _check_int(name, getattr(self, name), 1)
        _check_int("pad", self.pad, 0)
        if len(self.channels) > self.rows * self.cols:
            raise ValueError(
                f"{len(self.channels)} channels do not fit in {self.rows} x {self.cols} tiles."
            )

    @property
    def height(self) -> int:
        """Height of the grid image in pixels."""
        return self.rows * self.tile_height + (self.rows + 1) * self.pad

    @property
    def width(self) -> int:
        """Width of the grid image in pixels."""
        return self.cols * self.tile_width + (self.cols + 1) * self.pad

    def to_dict(self) -> dict[str, int]:
        """The manifest's ``grid`` entry (JSON-able; channels are stored beside it)."""
        data = asdict(self)
        del data["channels"], data["tokens"]
        out: dict[str, Any] = {k: int(v) for k, v in data.items()}
        if self.tokens is not None:
            out["tokens"] = self.tokens.to_dict()
        return out

    def tile_origin(self, index: int) -> tuple[int, int]:
        """``(y, x)`` of the top-left pixel of tile ``index`` (row-major)."""
        if not 0 <= index < self.rows * self.cols:
            raise IndexError(
                f"Tile index {index} is outside the {self.rows} x {self.cols} grid."
            )
        r, c = divmod(index, self.cols)
        return (
            self.pad + r * (self.tile_height + self.pad),
            self.pad + c * (self.tile_width + self.pad),
        )

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """``(y, x, height, width)`` of tile ``index`` in the grid image."""
        y, x = self.tile_origin(index)
        return y, x, self.tile_height, self.tile_width

    def channel_box(self, channel: int) -> tuple[int, int, int, int]:
        """:meth:`tile_box` of the tile showing ``channel``; ``KeyError`` if none does."""
        try:
            index = self.channels.index(int(channel))
        except ValueError:
            raise KeyError(channel) from None
        return self.tile_box(index)

    def boxes(self) -> list[list[int]]:
        """``[y, x, height, width]`` of every tile, in tile order (what the dashboard is sent)."""
        return [list(self.tile_box(i)) for i in range(len(self.channels))]

    @classmethod
    def from_dict(cls, grid: dict[str, Any], channels: Sequence[int]) -> GridLayout:
        """Inverse of :meth:`to_dict` (a manifest's ``grid`` and ``channels``)."""
        fields = ("rows", "cols", "tile_height", "tile_width", "pad", "scale", "stride")
        defaults = {"pad": 0, "scale": 1, "stride": 1}
        return cls(
            channels=tuple(int(c) for c in channels),
            **{f: int(grid.get(f, defaults.get(f, 0))) for f in fields},
            tokens=TokenGrid.from_dict(grid.get("tokens")),
        )

    def token_at(self, y: int, x: int) -> int | None:
        """The token at pixel ``(y, x)`` of a tile (tile coordinates) of a token layer;
        ``None`` on a blank cell or for a layer that is not one."""
        if self.tokens is None:
            return None
        return self.tokens.token_at(y // self.scale * self.stride, x // self.scale * self.stride)

    def source_shape(self, map_hw: tuple[int, int]) -> tuple[int, int]:
        """Size of one tile after subsampling ``map_hw`` by :attr:`stride` (before scaling)."""
        return -(-map_hw[0] // self.stride), -(-map_hw[1] // self.stride)


def _near_square(count: int, tile_hw: tuple[int, int]) -> tuple[int, int]:
    """Rows x cols for ``count`` tiles whose overall picture is close to square.

    Exact factorisations are preferred over grids with empty cells (32 tiles ->
    4 x 8 rather than 6 x 6 with four holes): every empty cell costs half an
    octave of aspect ratio. Ties go to the wider grid, screens being wide.
    """
    h, w = tile_hw
    best: tuple[float, int, int] | None = None
    for cols in range(1, count + 1):
        rows = -(-count // cols)  # never a whole empty row
        cost = abs(math.log2((rows * h) / (cols * w))) + 0.5 * (rows * cols - count)
        key = (round(cost, 9), -cols)
        if best is None or key < best[:2]:
            best = (key[0], key[1], rows)
    assert best is not None
    return best[2], -best[1]


def plan_layout(
    map_hw: tuple[int, int],
    channels: Sequence[int],
    *,
    max_pixels: int = 2**19,
    min_tile: int = 48,
    pad: int = 1,
    rows: int | None = None,
    cols: int | None = None,
    max_tile: int = 1024,
    tokens: TokenGrid | None = None,
) -> GridLayout:
    """Decide, once per layer, how its grid is laid out.

    The grid is near square (32 tiles of 26 x 26 -> 4 x 8, 64 -> 8 x 8), except
    that ``1 x T`` strips (Conv1D) are stacked in one column so the grid reads as a
    channel x time map. Tiles are upscaled by the smallest integer factor that
    brings their short side to ``min_tile`` pixels, lowered as needed so the whole
    image stays within ``max_pixels`` and a tile's long side within ``max_tile``
    (when upscaling at all). When even factor 1 busts the budget, maps are
    subsampled by the smallest integer stride that fits.

    ```python
    layout = plan_layout((26, 26), range(32))   # 4 x 8 tiles of 52 x 52 pixels
    ```

    Args:
        map_hw: ``(H, W)`` of one channel's map (see :func:`as_maps`).
        channels: channel index of each tile, in tile order (e.g. from
            :func:`select_channels`).
        max_pixels: the pixel budget of the whole image (height x width).
        min_tile: the size, in pixels, a tile's short side should reach.
        pad: pixels between tiles and around the border.
        rows, cols: force the grid shape. Give one and the other is derived;
            give both and they must hold every tile.
        max_tile: a cap on a tile's long side when upscaling (keeps long
            Conv1D strips from becoming absurdly wide); never forces subsampling.
        tokens: a token layer's grid; ``map_hw`` is then its ``map_hw``.

    Returns:
        A :class:`GridLayout`.

    Raises:
        ValueError: on bad arguments, or when no stride fits the budget.
    """
    h, w = _check_map_hw(map_hw)
    chans = tuple(int(_check_int("channel index", c, 0)) for c in channels)
    if not chans:
        raise ValueError("channels is empty: a grid needs at least one channel to show.")
    max_pixels = _check_int("max_pixels", max_pixels, 1)
    min_tile = _check_int("min_tile", min_tile, 1)
    max_tile = _check_int("max_tile", max_tile, 1)
    pad = _check_int("pad", pad, 0)
    rows, cols = _grid_shape(len(chans), (h, w), rows, cols)
    scale, stride = _scale_and_stride(
        (h, w), len(chans), rows, cols, pad=pad, min_tile=min_tile, max_tile=max_tile, max_pixels=max_pixels
    )
    th, tw = -(-h // stride), -(-w // stride)
    if tokens is not None and tokens.map_hw != (h, w):
        raise ValueError(f"map_hw={map_hw!r} is not the token grid's {tokens.map_hw}.")
    return GridLayout(
        channels=chans, rows=rows, cols=cols, tile_height=th * scale, tile_width=tw * scale,
        pad=pad, scale=scale, stride=stride, tokens=tokens,
    )


def _check_map_hw(map_hw: Any) -> tuple[int, int]:
    if (
        not isinstance(map_hw, (tuple, list, np.ndarray))
        or len(map_hw) != 2
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
               for v in map_hw)
    ):
        raise ValueError(
            f"map_hw must be a pair of positive integers (height, width). Received: {map_hw!r}."
        )
    return int(map_hw[0]), int(map_hw[1])


def _grid_shape(
    n: int, map_hw: tuple[int, int], rows: int | None, cols: int | None
) -> tuple[int, int]:
    """Rows x cols for ``n`` tiles: as forced (one derived from the other), a
    Conv1D strip per row, or near square."""
    if rows is not None:
        rows = _check_int("rows", rows, 1)
    if cols is not None:
        cols = _check_int("cols", cols, 1)
    if rows is not None and cols is not None:
        if rows * cols < n:
            raise ValueError(
                f"rows={rows} x cols={cols} holds {rows * cols} tiles but {n} channels are "
                f"shown. Accepted: rows * cols >= {n}, or give only one of rows/cols."
            )
        return rows, cols
    if rows is not None:
        return rows, -(-n // rows)
    if cols is not None:
        return -(-n // cols), cols
    h, w = map_hw
    if h == 1 and w > 1:
        return n, 1
    return _near_square(n, (h, w))


def _scale_and_stride(
    map_hw: tuple[int, int], n: int, rows: int, cols: int, *, pad: int, min_tile: int, max_tile: int,
    max_pixels: int,
) -> tuple[int, int]:
    """The upscale factor (down from the one ``min_tile`` asks for) and, when even
    factor 1 busts ``max_pixels``, the smallest subsampling stride that fits."""
    h, w = map_hw

    def size(th: int, tw: int) -> int:
        return (rows * th + (rows + 1) * pad) * (cols * tw + (cols + 1) * pad)

    stride = 1
    # Pixel count grows monotonically with the scale, so walk down from the target.
    scale = max(1, -(-min_tile // min(h, w)))
    if scale > 1:
        scale = max(1, min(scale, max_tile // max(h, w)))
    while scale > 1 and size(h * scale, w * scale) > max_pixels:
        scale -= 1
    if size(h, w) > max_pixels:
        scale = 1
        while size(-(-h // stride), -(-w // stride)) > max_pixels:
            if stride >= max(h, w):
                raise ValueError(
                    f"{n} tiles in {rows} x {cols} with pad={pad} need "
                    f"{size(1, 1)} pixels even at one pixel per tile, over "
                    f"max_pixels={max_pixels}. Show fewer channels or raise max_pixels."
                )
            stride += 1
    return scale, stride


# --------------------------------------------------------------------------- pixels


def colorize(x01: np.ndarray, cmap: str) -> np.ndarray:
    """Values in ``[0, 1]`` to uint8 colours through a 256-entry lookup table.

    Args:
        x01: float array of any shape; values are clipped to ``[0, 1]``; NaN or
            infinite entries get the marker colour (gray 0, otherwise magenta).
        cmap: one of :data:`COLORMAPS`.

    Returns:
        uint8 array of shape ``x01.shape + (1,)`` for gray, ``+ (3,)`` otherwise.
    """
    lut = _LUTS[check_cmap(cmap)]
    x01 = np.asarray(x01, dtype=np.float64)
    bad = ~np.isfinite(x01)
    index = np.rint(np.clip(np.where(bad, 0.0, x01), 0.0, 1.0) * 255.0).astype(np.intp)
    out = lut[index]
    if bad.any():
        out[bad] = MARKER_GRAY if cmap == "gray" else MARKER_RGB
    return out


def _scoped_range(xp: Any, values: Any, finite: Any, axis: tuple[int, ...]) -> tuple[Any, Any]:
    """Min and max over the finite entries (``finite`` None: all are); a scope with none gets (0, 0)."""
    if finite is None:
        return xp.min(values, axis=axis, keepdims=True), xp.max(values, axis=axis, keepdims=True)
    low = xp.min(xp.where(finite, values, np.inf), axis=axis, keepdims=True)
    high = xp.max(xp.where(finite, values, -np.inf), axis=axis, keepdims=True)
    empty = xp.logical_not(xp.isfinite(low))
    return xp.where(empty, 0.0, low), xp.where(empty, 0.0, high)


def levels(
    xp: Any,
    maps: Any,
    channels: Any,
    layout: GridLayout,
    *,
    norm: str | tuple[float, float] = "channel",
    cmap: str = "gray",
    all_finite: bool = False,
) -> tuple[Any, Any]:
    """The shown tiles of ``k`` probes as colour-map indices: the arithmetic of a grid.

    Written once for two array libraries: ``xp`` is numpy (what
    :func:`render` uses) or ``keras.ops`` the probe function uses to
    run this on the device, where the bytes to copy to the host shrink to one
    per shown pixel. Every step is float32 and correctly rounded on every
    backend, so both give the same bytes.

    Args:
        xp: ``numpy`` or an object with the same functions over backend tensors.
        maps: float32 ``(k, H, W, C)`` (see :func:`as_maps`).
        channels: int ``(n,)``: channel of each tile (``layout.channels``).
        layout: the layer's :class:`GridLayout`.
        norm, cmap: as in :func:`render`.
        all_finite: the caller has checked that no value of ``maps`` is NaN or
            infinite (:func:`actlog.arrays.all_finite`): no mask is made, the same
            bytes come out of fewer passes.

    Returns:
        ``(levels, nonfinite)``: uint8 ``(k, th, tw, n)`` indices into the colour
        map (0 where the activation is NaN or infinite) and the bool mask of
        those places.
    """
    stride = layout.stride
    tiles = xp.take(maps, channels, axis=3)
    if stride > 1:
        tiles = tiles[:, ::stride, ::stride, :]
    # (k, th, tw, n): channels stay last on the device (no transpose there; the host
    # moves the axis of the uint8 result for free).
    finite = None if all_finite else xp.isfinite(tiles)
    values = tiles if finite is None else xp.where(finite, tiles, 0.0)
    one_pixel = maps.shape[1] == 1 and maps.shape[2] == 1
    # Grids of one-pixel maps (Dense): per channel, every tile would be black.
    axis = (1, 2) if norm == "channel" and not one_pixel else (1, 2, 3)
    if cmap == "diverging":
        # Symmetric around 0 so that 0 is the white centre; an all-zero scope
        # stays at the centre. (v / m + 1) * 0.5 rather than 0.5 + 0.5 * v / m:
        # no multiply-add a compiler could fuse into one differently rounded op.
        if isinstance(norm, tuple):
            magnitude = max(abs(norm[0]), abs(norm[1]))
            values = xp.clip(values, norm[0], norm[1])
            x01 = (values / magnitude + 1.0) * 0.5 if magnitude >= _EPS else values * 0.0 + 0.5
        else:
            low, high = _scoped_range(xp, values, finite, axis)
            magnitude = xp.maximum(xp.abs(low), xp.abs(high))
            # A scope with no magnitude divides by inf: its values (finite here) become 0.
            x01 = (values / xp.where(magnitude < _EPS, np.inf, magnitude) + 1.0) * 0.5
    elif isinstance(norm, tuple):
        low, high = norm
        x01 = (xp.clip(values, low, high) - low) / (high - low)
    else:
        low, high = _scoped_range(xp, values, finite, axis)
        span = high - low
        # A constant (e.g. dead) tile maps to the low end: flat, never NaN. Its scope divides
        # by inf, and its values, finite here, become 0 without a pass of their own.
        x01 = (values - low) / xp.where(span < _EPS, np.inf, span)
    index = xp.round(xp.clip(x01, 0.0, 1.0) * 255.0)
    if finite is None:
        levels = xp.cast(index, "uint8")
        return levels, xp.zeros_like(levels, dtype="bool")
    return xp.cast(xp.where(finite, index, 0.0), "uint8"), xp.logical_not(finite)


def render_levels(
    levels: np.ndarray,
    layout: GridLayout,
    *,
    cmap: str = "gray",
    nonfinite: np.ndarray | None = None,
    pad_value: int = 0,
) -> np.ndarray:
    """One probe's tile levels (from :func:`levels`) as the grid image.

    Args:
        levels: uint8 ``(th, tw, n)``: colour-map index of every pixel of every tile
            (one probe of :func:`levels`).
        layout: the layer's :class:`GridLayout`.
        cmap: one of :data:`COLORMAPS`.
        nonfinite: bool ``(th, tw, n)``, where to paint the marker colour; or None.
        pad_value: gray level (0-255) of the padding and of empty cells.

    Returns:
        uint8 ``(layout.height, layout.width, 1 or 3)``.
    """
    lut = _LUTS[check_cmap(cmap)]
    colors = lut[np.moveaxis(np.asarray(levels, dtype=np.uint8), -1, 0)]  # (n, th, tw, depth)
    if nonfinite is not None and nonfinite.any():
        colors[np.moveaxis(nonfinite, -1, 0)] = MARKER_GRAY if cmap == "gray" else MARKER_RGB
    if layout.tokens is not None and layout.tokens.extra:
        colors[:, layout.tokens.blank()[:: layout.stride, :: layout.stride]] = pad_value
    n, th, tw, depth = colors.shape
    if (th * layout.scale, tw * layout.scale) != (layout.tile_height, layout.tile_width):
        raise ValueError(
            f"Tiles of {th} x {tw} pixels do not match the layout's tiles "
            f"({layout.tile_height} x {layout.tile_width} at scale {layout.scale})."
        )
    rows, cols, pad, s = layout.rows, layout.cols, layout.pad, layout.scale
    if n < rows * cols:  # empty cells at the end are drawn like padding
        fill = np.full((rows * cols - n, th, tw, depth), pad_value, dtype=np.uint8)
        colors = np.concatenate([colors, fill])
    image = np.full((layout.height, layout.width, depth), pad_value, dtype=np.uint8)
    # Treat each pixel's `depth` bytes as one opaque element (numpy void): numpy then
    # copies whole pixels instead of looping over colour channels. A writeable view of
    # the tiles split into (row, y, dy, col, x, dx) lets one broadcast assignment
    # place every tile and upscale it (nearest neighbour) in a single pass.
    pixels = image.view(f"V{depth}")[..., 0]
    sources = np.ascontiguousarray(colors).view(f"V{depth}")[..., 0]
    sy, sx = pixels.strides
    tiles_view = np.lib.stride_tricks.as_strided(
        pixels[pad:, pad:],
        shape=(rows, th, s, cols, tw, s),
        strides=(
            (layout.tile_height + pad) * sy, s * sy, sy,
            (layout.tile_width + pad) * sx, s * sx, sx,
        ),
    )
    tiles_view[...] = sources.reshape(rows, cols, th, tw).transpose(0, 2, 1, 3)[
        :, :, None, :, :, None
    ]
    return image


def render(
    maps: np.ndarray,
    layout: GridLayout,
    *,
    norm: str | tuple[float, float] = "channel",
    cmap: str = "gray",
    pad_value: int = 0,
) -> np.ndarray:
    """Draw one probe's activation maps as a grid image.

    ```python
    image = render(as_maps(act), layout, norm="layer", cmap="diverging")
    ```

    Args:
        maps: ``(H, W, C)`` float maps of one probe (every channel; the layout
            picks the ones shown). Never modified.
        layout: from :func:`plan_layout` with the same ``(H, W)``.
        norm: ``"channel"`` (default: each tile stretched over its own
            min..max), ``"layer"`` (one min..max over the shown tiles) or a fixed
            ``(low, high)`` (values clipped). Grids of one-pixel maps (Dense
            layers) always use ``"layer"``: per channel, every tile would be black.
            With ``cmap="diverging"`` the scale is symmetric, ``x / max|x|`` over
            the same scope (``max(|low|, |high|)`` for a fixed range), so 0 is white.
        cmap: one of :data:`COLORMAPS`.
        pad_value: gray level (0-255) of the padding and of empty cells.

    Returns:
        uint8 array ``(layout.height, layout.width, 1)`` for ``gray``,
        ``(..., 3)`` otherwise. A constant (dead) tile is flat: black for gray
        and viridis ranges, white for diverging when it is all zeros. NaN/Inf
        entries are left out of every range and painted the marker colour.
    """
    norm = check_norm(norm)
    check_cmap(cmap)
    pad_value = _check_int("pad_value", pad_value, 0)
    if pad_value > 255:
        raise ValueError(f"pad_value must be an integer in [0, 255]. Received: {pad_value}.")
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(
            "render expects (H, W, C) maps of one probe (see as_maps). "
            f"Received shape {maps.shape}."
        )
    th, tw = layout.source_shape(maps.shape[:2])
    if (th * layout.scale, tw * layout.scale) != (layout.tile_height, layout.tile_width):
        raise ValueError(
            f"maps of shape {maps.shape} do not match the layout's tiles "
            f"({layout.tile_height} x {layout.tile_width} at stride {layout.stride}, "
            f"scale {layout.scale}); plan the layout with map_hw={maps.shape[:2]}."
        )
    channels = np.asarray(layout.channels, dtype=np.intp)
    if channels.size and channels.max() >= maps.shape[2]:
        raise ValueError(
            f"The layout shows channel {int(channels.max())} but maps have "
            f"{maps.shape[2]} channels."
        )
    # np.take copies, so nothing below can write into the caller's array.
    index, bad = levels(NUMPY, maps[np.newaxis].astype(np.float32), channels, layout, norm=norm,
                        cmap=cmap)
    return render_levels(index[0], layout, cmap=cmap, nonfinite=bad[0], pad_value=pad_value)


def render_probes(
    maps: np.ndarray,
    layout: GridLayout,
    *,
    norm: str | tuple[float, float] = "channel",
    cmap: str = "gray",
    pad_value: int = 0,
) -> np.ndarray:
    """:func:`render` for each of ``k`` probes: ``(k, H, W, C)`` -> uint8 ``(k, height, width, c)``.

    Each probe is normalised on its own, exactly as :func:`render` does.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"render_probes expects (k, H, W, C) maps. Received shape {maps.shape}.")
    return np.stack(
        [render(m, layout, norm=norm, cmap=cmap, pad_value=pad_value) for m in maps]
    )


def to_image(x: np.ndarray) -> np.ndarray | None:
    """A probe input sample as a uint8 image for logging the probe itself.

    Args:
        x: one sample, channels last: ``(H, W)`` or ``(H, W, c)`` with c in 1, 3, 4.

    Returns:
        uint8 ``(H, W, c)``: uint8 input unchanged (copied), anything else min-max
        scaled over the whole sample to 0..255 (a constant sample is black, NaN/Inf
        pixels are 0). ``None`` when the sample is not image-like (other ranks or
        channel counts, e.g. token ids or a feature vector).
    """
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4) or x.shape[0] < 1 or x.shape[1] < 1:
        return None
    if x.dtype == np.uint8:
        return x.copy()
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        return None
    values = x.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    span = high - low
    scaled = (values - low) / span if span >= _EPS else np.zeros_like(values)
    scaled = np.where(finite, scaled, 0.0)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
