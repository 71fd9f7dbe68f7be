"""The feature atlas in plain numpy: top-k per channel, receptive fields, crops, pictures.

A grid shows where a channel fires on a few probes; the atlas answers what it
responds to *most*: the examples of a pool (typically a few thousand
validation images) that excite it most, each cropped to the region the unit
at its strongest position sees (Zeiler & Fergus, 2014). Every ``actlog.Atlas(every=)``
epochs the pool streams through the model in batches; a compiled function
(:class:`actlog.atlas_pass.AtlasFunction`) reduces each batch on the device to
one number per image and shown channel, its largest activation, and where
(:func:`peaks`); the host merges those into a running top-k (:class:`TopK`),
so memory is bounded by the batch, never the pool. Each image counts once per
channel (at its strongest position), so a channel's top-k is a set of ``k``
distinct images, and :func:`jaccard_distance` between two events' sets says
how much what the channel prefers has changed.

The rest of this module is the geometry, in numpy only:

- :class:`Field`: where the units of a layer look in the input. Per axis,
  its nominal box: ``jump`` (stride in input pixels), ``start`` and ``size``
  (unit ``i`` covers input pixels ``start + i * jump`` to
  ``start + i * jump + size - 1``, which may run past the image); and per
  output row and column the input rows and columns it really sees (less
  than its box near a border, where the box falls on padding).
  :meth:`Field.window` is the exact arithmetic of one convolution or
  pooling layer (kernel, stride, dilation, ``"same"``/``"valid"`` padding),
  of padding and of cropping; :func:`union` joins the branches of a merge;
  :func:`fit_measured` turns measured intervals into a field where no rule
  applies.
- :func:`crop`: a unit's field with :data:`CONTEXT` field-widths of context
  around it, upscaled by nearest neighbour: what the unit sees as it is, the
  context faded, and what lies outside the image a blue checkerboard
  (:data:`OUTSIDE`), so a clipped crop reads as one.
- :class:`AtlasLayout` owns the picture's geometry: one cell per shown
  channel, at the place of that channel's tile in the layer's grid (same rows,
  columns and tile order), each cell its ``k`` crops in rank order, left to
  right then top to bottom. A channel that never fires on the pool (every
  top value exactly 0: a dead ReLU) gets an empty cell. Readers of a log cut
  crops out with :meth:`AtlasLayout.crop_box`.

```python
top = TopK(channels=32, k=8)
for start, count, batch in batches(pool, 64):               # pool: (N, H, W, c)
    value, where = peaks(NUMPY, maps_of(batch), channels)   # (64, 32) each
    top.add(value[:count], where[:count], start)            # the last batch is padded
index, flat, value = top.result()                           # (32, 8) each, best first
```
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from actlog import probes as probes_
from actlog.checks import check_int

DEFAULT_K = 8
"""Crops per channel: enough to see what they share, few enough to read."""

DEFAULT_FREQ = 5
"""Epochs between atlas events. Features change slowly after the first epochs, and one
pass over the pool costs a forward pass of every image in it: every 5 epochs keeps the
cost a few percent of training (see the README's figures). Training that starts fresh
also gets one at step 0, and the last epoch always gets one (at the end of training),
so that the first and the last atlas can be compared."""

DEFAULT_BATCH = 64
"""Pool images per compiled call: the activations of this many images must fit in memory."""

MAX_POOL = 65_536
"""Largest pool accepted (an endless dataset would otherwise never stop being read)."""

MIN_CROP = 32
"""A crop is upscaled (nearest neighbour, integer factor) until its short side reaches this."""

MAX_CROP = 64
"""A crop whose long side is larger than this is subsampled (integer stride) to fit it."""

CONTEXT = 1
"""Box widths of context a crop shows on each side of what the unit sees (faded), within
the image: a 3 x 3 field is hard to read alone, and easy inside the stroke it sits on."""

FADE = 0.6
"""How far context pixels are faded towards mid gray: they keep 40% of their contrast."""

MAX_PIXELS = 2**21
"""Pixel budget of one layer's atlas picture; crops are drawn smaller to fit it."""

EVENT_PIXELS = 2**23
"""Pixel budget of all the atlas pictures of one event: shared by the layers, so that
watching many layers makes crops smaller, not the log larger."""

GAP = 2
"""Pixels between the crops of a cell."""

PAD = 8
"""Pixels between cells and around the picture."""

BACKGROUND = 255
"""Gray level of gaps, padding and empty slots: white, apart from the faded context."""


OUTSIDE = ((40, 64, 120), (96, 128, 184))
"""The two colours of the checkerboard drawn where a crop lies outside the image."""

CHECK = 4
"""Side, in displayed pixels, of one square of the outside checkerboard."""

_NONE = np.iinfo(np.int64).max  # an empty top-k slot while merging (sorts last)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, eq=False)
class AtlasOptions:
    """The validated atlas options of an ``ActivationLogger``.

    Attributes:
        pool: the private, read-only copy of the pool (an array, or a list /
            dict of arrays for a multi-input model).
        size: samples in the pool.
        k: crops per channel.
        freq: epochs between atlas events.
        batch: pool samples per compiled call.
    """

    pool: Any
    size: int
    k: int
    freq: int
    batch: int


def side_by_side(crops: np.ndarray, gap: int = GAP) -> np.ndarray:
    """``(k, h, w, c)`` crops in one row, best first, ``gap`` pixels of :data:`BACKGROUND` apart."""
    k, height, width, depth = crops.shape
    row = np.full((height, k * width + (k - 1) * gap, depth), BACKGROUND, np.uint8)
    for rank, crop in enumerate(crops):
        row[:, rank * (width + gap) : rank * (width + gap) + width] = crop
    return row


def check_options(atlas: Any, *, k: Any, freq: Any, batch: Any) -> AtlasOptions | None:
    """The arguments of :class:`actlog.Atlas`, checked; ``None`` when the atlas is off.

    Args:
        atlas: ``None`` (off), or the pool: an array ``(N, ...)`` shaped like
            the model's input, a list / dict of such arrays for a multi-input
            model, or a finite dataset / iterable of batches (read once, to its
            end; ``(x, y)`` batches give ``x``).
        k: crops per channel, an int from 1 to the pool's size.
        freq: epochs between atlas events, an int >= 0; 0 turns the atlas off.
        batch: pool samples per compiled call, an int >= 1.

    Raises:
        TypeError, ValueError: naming what was received and what is accepted.
    """
    k = check_int("Atlas k", k, minimum=1)
    freq = check_int("Atlas every", freq, minimum=0)
    batch = check_int("Atlas batch", batch, minimum=1)
    if atlas is None or freq == 0:
        return None
    if isinstance(atlas, (str, bytes)) or np.isscalar(atlas):
        raise TypeError(
            f"atlas must be a pool of inputs: an array (N, ...), a list / dict of arrays for a "
            f"multi-input model, or a finite dataset of batches; received {atlas!r} "
            f"({type(atlas).__name__})."
        )
    pool = probes_.copy_pool(atlas, name="atlas", limit=MAX_POOL)
    size = probes_.count_of(pool)
    if k > size:
        raise ValueError(
            f"Atlas k must be an int from 1 to the pool's size ({size} samples); received {k}."
        )
    return AtlasOptions(pool=pool, size=size, k=k, freq=freq, batch=batch)


def batches(pool: Any, size: int) -> Iterator[tuple[int, int, Any]]:
    """``(start, count, batch)`` over ``pool`` (fitted: an array, list or dict of arrays),
    ``size`` samples at a time; the last batch is padded with zeros to ``size``."""
    total = probes_.count_of(pool)
    for start in range(0, total, size):
        count = min(size, total - start)

        def cut(a: np.ndarray, start: int = start, count: int = count) -> np.ndarray:
            part = a[start : start + count]
            if count == size:
                return part
            return np.concatenate([part, np.zeros((size - count, *a.shape[1:]), a.dtype)])

        yield start, count, probes_.map_tree(pool, cut)


# --------------------------------------------------------------------------- top-k


def peaks(xp: Any, maps: Any, channels: Any) -> tuple[Any, Any]:
    """Per image and shown channel: its largest activation and where.

    Written once for numpy and ``keras.ops`` (see :func:`actlog.grid.levels`):
    the atlas function runs it on the device, so only ``2 x b x n`` numbers per
    batch reach the host. Every channel is reduced, then the shown ones are
    taken: cheaper than gathering the maps first. A map holding NaN gives NaN
    (the image then ranks last in :class:`TopK`).

    Args:
        xp: :data:`actlog.arrays.NUMPY` or ``keras.ops``.
        maps: float32 ``(b, H, W, C)`` (:func:`actlog.grid.batch_maps`).
        channels: int ``(n,)``: the shown channels, in tile order.

    Returns:
        ``(value, where)``: float32 ``(b, n)`` and int32 ``(b, n)``, the flat
        position ``y * W + x`` of the first maximum (``H * W`` where there is none).
    """
    b, height, width, depth = maps.shape
    flat = xp.reshape(maps, (b, height * width, depth))
    top = xp.max(flat, axis=1)
    # The first position holding the maximum: argmax is several times slower on a CPU.
    positions = xp.reshape(xp.arange(height * width, dtype="int32"), (1, height * width, 1))
    first = xp.min(xp.where(xp.equal(flat, xp.expand_dims(top, 1)), positions, height * width), axis=1)
    return xp.take(top, channels, axis=1), xp.cast(xp.take(first, channels, axis=1), "int32")


class TopK:
    """The ``k`` largest values of each of ``channels`` over a stream of batches.

    Each image enters once per channel (with its largest value there), so the
    result holds ``k`` distinct images per channel. Ties go to the lower
    image index, so the result does not depend on the batch size.
    """

    def __init__(self, channels: int, k: int) -> None:
        self.k = k
        self.value = np.full((channels, k), -np.inf, np.float32)
        self.index = np.full((channels, k), _NONE, np.int64)
        self.where = np.zeros((channels, k), np.int64)

    def add(self, value: np.ndarray, where: np.ndarray, start: int) -> None:
        """Merge one batch: ``value`` and ``where`` ``(b, channels)`` from :func:`peaks`,
        for the images ``start .. start + b - 1`` of the pool."""
        value = np.asarray(value, np.float32)
        b = value.shape[0]
        values = np.concatenate([self.value, np.where(np.isnan(value.T), -np.inf, value.T)], axis=1)
        indices = np.concatenate(
            [self.index, np.broadcast_to(np.arange(start, start + b, dtype=np.int64), (len(values), b))],
            axis=1,
        )
        wheres = np.concatenate([self.where, np.asarray(where, np.int64).T], axis=1)
        order = np.lexsort((indices, -values), axis=-1)[:, : self.k]
        self.value = np.take_along_axis(values, order, axis=1)
        self.index = np.take_along_axis(indices, order, axis=1)
        self.where = np.take_along_axis(wheres, order, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(index, where, value)``, each ``(channels, k)``, best first; index -1 = empty slot."""
        empty = self.index == _NONE
        return np.where(empty, -1, self.index), np.where(empty, 0, self.where), self.value.copy()


def jaccard_distance(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per channel, ``1 - |A & B| / |A | B|`` of two events' top-k image sets.

    Args:
        now, before: int ``(n, k)`` image indices (-1 = empty slot, ignored).

    Returns:
        float32 ``(n,)`` in ``[0, 1]``: 0 = the same images, 1 = none in common
        (two empty sets: 0).
    """
    out = np.zeros(len(now), np.float32)
    for channel, (a, b) in enumerate(zip(now, before, strict=True)):
        a, b = set(a[a >= 0].tolist()), set(b[b >= 0].tolist())
        union = len(a | b)
        out[channel] = 1.0 - len(a & b) / union if union else 0.0
    return out


# --------------------------------------------------------------------------- receptive fields


def same_padding(size: int, kernel: int, stride: int) -> int:
    """Rows (or columns) a ``"same"`` window adds before the input: Keras' rule on every
    backend, the extra one of an odd total going after."""
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0) // 2


EMPTY = (2**40, -(2**40))
"""The interval of a unit that sees no input pixel (it lies over padding only)."""

Intervals = tuple[tuple[int, int], ...]
"""Per output row (or column): the first and last input row it sees, ``EMPTY`` if none."""


@dataclass(frozen=True)
class Field:
    """Where the units of a spatial output look in the input (see the module docstring).

    Two descriptions, both in input pixels: the nominal box of unit ``(y, x)``
    (:meth:`box`: ``start + i * jump``, ``size`` wide, per axis; it may run
    past the image), and the rows and columns it really sees (:meth:`seen`):
    the box less what falls on padding, at the image border or at the border
    of any map in between (a pooling that drops a last odd column, a
    ``"same"`` window at the edge of a strided map).

    Attributes:
        jump, start, size: ``(rows, cols)`` each.
        rows, cols: :data:`Intervals` of every output row and column.
        measured: found by perturbing the input, not from the layer chain.
    """

    jump: tuple[int, int]
    start: tuple[int, int]
    size: tuple[int, int]
    rows: Intervals
    cols: Intervals
    measured: bool = False

    @classmethod
    def identity(cls, height: int, width: int) -> Field:
        """The field of the image itself: each pixel sees itself."""
        return cls((1, 1), (0, 0), (1, 1), tuple((i, i) for i in range(height)),
                   tuple((i, i) for i in range(width)))

    def window(
        self,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int] = (1, 1),
        padding: str | Sequence[Sequence[int]] = "valid",
    ) -> Field:
        """The field after one window layer (convolution, pooling, padding, cropping).

        Args:
            kernel, stride, dilation: per axis.
            padding: ``"valid"``, ``"same"``, or per axis the ``(before, after)``
                rows/columns added (negative: cropped).
        """
        jump, start, size, seen = [], [], [], []
        for axis, before_seen in enumerate((self.rows, self.cols)):
            n, reach = len(before_seen), dilation[axis] * (kernel[axis] - 1) + 1
            if padding == "same":
                before = same_padding(n, reach, stride[axis])
                out = -(-n // stride[axis])
            else:
                before, after = (0, 0) if padding == "valid" else (int(p) for p in padding[axis])
                out = (n + before + after - reach) // stride[axis] + 1
            jump.append(self.jump[axis] * stride[axis])
            start.append(self.start[axis] - before * self.jump[axis])
            size.append(self.size[axis] + (reach - 1) * self.jump[axis])
            taps = (np.arange(out)[:, None] * stride[axis] - before
                    + np.arange(kernel[axis])[None, :] * dilation[axis])
            seen.append(_seen_through(np.asarray(before_seen, np.int64), taps))
        return Field(tuple(jump), tuple(start), tuple(size), seen[0], seen[1], self.measured)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)``: the nominal box of the unit at ``(y, x)``."""
        return (self.start[0] + y * self.jump[0], self.start[1] + x * self.jump[1], *self.size)

    def seen(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, inclusive: the input pixels the unit at ``(y, x)``
        sees (``bottom < top`` when it sees none)."""
        (top, bottom), (left, right) = self.rows[y], self.cols[x]
        return top, left, bottom, right

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``atlas.field`` entry."""
        return {
            "jump": list(self.jump), "start": list(self.start), "size": list(self.size),
            "rows": [list(i) for i in self.rows], "cols": [list(i) for i in self.cols],
            "measured": self.measured,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        return cls(tuple(data["jump"]), tuple(data["start"]), tuple(data["size"]),
                   tuple(tuple(i) for i in data["rows"]), tuple(tuple(i) for i in data["cols"]),
                   bool(data["measured"]))


def _seen_through(before: np.ndarray, taps: np.ndarray) -> Intervals:
    """Per output line, the union of the intervals of the input lines it ``taps``
    (``(out, kernel)`` positions in the input map; those off the map see nothing)."""
    on_map = (taps >= 0) & (taps < len(before))
    at = np.clip(taps, 0, len(before) - 1)
    first = np.where(on_map, before[at, 0], EMPTY[0]).min(axis=1)
    last = np.where(on_map, before[at, 1], EMPTY[1]).max(axis=1)
    return tuple((int(a), int(b)) for a, b in zip(first, last, strict=True))


def union(fields: Sequence[Field]) -> Field | None:
    """The field of a merge (add, concatenate, ...) of branches of one output size: the
    box that holds each branch's; ``None`` when the branches step differently (no rule)."""
    if len({f.jump for f in fields}) != 1 or len({(len(f.rows), len(f.cols)) for f in fields}) != 1:
        return None
    start = tuple(min(f.start[a] for f in fields) for a in range(2))
    end = tuple(max(f.start[a] + f.size[a] for f in fields) for a in range(2))

    def joined(lines: Sequence[Intervals]) -> Intervals:
        return tuple((min(p[0] for p in per), max(p[1] for p in per)) for per in zip(*lines, strict=True))

    return Field(
        fields[0].jump, start, tuple(e - s for e, s in zip(end, start, strict=True)),
        joined([f.rows for f in fields]), joined([f.cols for f in fields]), any(f.measured for f in fields),
    )


def fit_measured(rows: np.ndarray, cols: np.ndarray, input_size: Sequence[int]) -> Field:
    """A :class:`Field` from measured intervals: ``rows`` ``(H_out, 2)`` the first and last
    input row that changes each output row (:data:`EMPTY` for none), likewise ``cols``.

    They are what the units see; the nominal box is fitted to them: its size is
    the widest interval, ``jump`` and ``start`` come from the intervals not
    clipped on the side they are read from (a unit whose box runs past the
    image, or a map, has a short interval).
    """
    axes = [_fit_axis(np.asarray(found), int(n)) for found, n in zip((rows, cols), input_size, strict=True)]
    return Field(
        *(tuple(int(a[i]) for a in axes) for i in range(3)),
        tuple((int(a), int(b)) for a, b in rows), tuple((int(a), int(b)) for a, b in cols), measured=True,
    )


def _fit_axis(found: np.ndarray, extent: int) -> tuple[int, int, int]:
    seen = found[found[:, 0] <= found[:, 1]]
    size = int((seen[:, 1] - seen[:, 0]).max()) + 1 if len(seen) else extent
    starts = {}  # unit -> start, where a side of its interval is not clipped
    for i, (first, last) in enumerate(found):
        if first > last:
            continue
        if first > 0:
            starts[i] = int(first)
        elif last < extent - 1:
            starts[i] = int(last) - size + 1
    if len(starts) >= 2:
        keys = sorted(starts)
        slopes = [(starts[b] - starts[a]) / (b - a) for a, b in zip(keys, keys[1:], strict=False)]
        jump = max(1, round(float(np.median(slopes))))
        start = round(float(np.median([starts[i] - i * jump for i in keys])))
    else:  # every interval is clipped on both sides: centre the units on the image
        jump = max(1, round(extent / len(found)))
        start = round((extent - 1) / 2 - (len(found) - 1) / 2 * jump - (size - 1) / 2)
    return jump, start, size


# --------------------------------------------------------------------------- crops and pictures


def shown_box(
    box: Sequence[int] | np.ndarray, image_hw: Sequence[int], context: int = CONTEXT,
) -> Any:
    """The window an atlas crop shows around a unit's ``box``: ``context`` box widths more on
    each side, centred on the box, and never larger than the image (a box larger than the
    image gets an image-sized window centred on it).

    ``box`` is ``(top, left, height, width)``, or an ``(N, 4)`` array of them
    (then an ``(N, 4)`` array comes back, else a tuple).
    """
    boxes = np.asarray(box, np.int64).reshape(-1, 4)
    origin, extent = boxes[:, :2], boxes[:, 2:]
    limit = np.asarray(image_hw, np.int64)[None, :]
    wanted = np.where(extent < limit, np.minimum(extent * (1 + 2 * context), limit), limit)
    out = np.concatenate([origin + (extent - wanted) // 2, wanted], axis=1)
    return out if np.ndim(box) == 2 else tuple(int(v) for v in out[0])


def display(height: int, width: int) -> tuple[int, int]:
    """``(scale, stride)`` that draw an ``height x width`` crop readably: upscaled until its
    short side reaches :data:`MIN_CROP`, or subsampled until its long side fits :data:`MAX_CROP`."""
    if max(height, width) > MAX_CROP:
        return 1, -(-max(height, width) // MAX_CROP)
    return max(1, -(-MIN_CROP // min(height, width))), 1


def crop(
    image: np.ndarray, window: Sequence[int], *, seen: Sequence[int] | None = None, scale: int = 1,
    stride: int = 1,
) -> np.ndarray:
    """The pixels of ``image`` in ``window``, drawn at ``scale`` (or every ``stride``-th pixel).

    What the unit sees (``seen``) is drawn as it is; the rest of the window
    inside the image is context, faded towards mid gray (:data:`FADE`);
    anything outside the image is the :data:`OUTSIDE` checkerboard.

    Args:
        image: uint8 ``(H, W, c)`` with c in 1, 3, 4 (gray is drawn as RGB; alpha dropped).
        window: ``(top, left, height, width)``, anywhere (:func:`shown_box`).
        seen: ``(top, left, bottom, right)``, inclusive (:meth:`Field.seen`).
            Default: the whole image.
        scale, stride: nearest-neighbour upscaling factor, subsampling step.

    Returns:
        uint8 ``(ceil(height / stride) * scale, ceil(width / stride) * scale, 3)``;
        ``image`` is not modified.
    """
    return crops(image[None], [window], None if seen is None else [seen], scale=scale, stride=stride)[0]


def crops(
    images: np.ndarray, windows: Sequence[Sequence[int]], seen: Sequence[Sequence[int]] | None = None,
    *, scale: int = 1, stride: int = 1,
) -> np.ndarray:
    """:func:`crop` of many windows of one size at once: window ``i`` of ``images[i]``.

    Returns:
        uint8 ``(N, h, w, 3)``.
    """
    rgb = np.repeat(images[..., :1], 3, axis=-1) if images.shape[-1] < 3 else images[..., :3]
    count, rows, cols = rgb.shape[:3]
    windows = np.asarray(windows, np.int64).reshape(count, 4)
    height, width = int(windows[0, 2]), int(windows[0, 3])
    # Every decision at the source's resolution; upscaled (nearest neighbour) at the end.
    ys = windows[:, :1] + np.arange(-(-height // stride)) * stride  # (N, h)
    xs = windows[:, 1:2] + np.arange(-(-width // stride)) * stride  # (N, w)
    out = rgb[np.arange(count)[:, None, None], np.clip(ys, 0, rows - 1)[:, :, None],
              np.clip(xs, 0, cols - 1)[:, None, :]].astype(np.float32)
    if seen is None:
        seen = np.broadcast_to(np.asarray([0, 0, rows - 1, cols - 1]), (count, 4))
    seen = np.asarray(seen, np.int64).reshape(count, 4)
    sees = (((ys >= seen[:, :1]) & (ys <= seen[:, 2:3]))[:, :, None]
            & ((xs >= seen[:, 1:2]) & (xs <= seen[:, 3:4]))[:, None, :])
    out = np.where(sees[..., None], out, out + (128.0 - out) * FADE)
    out = np.rint(out).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    inside = ((ys >= 0) & (ys < rows))[:, :, None] & ((xs >= 0) & (xs < cols))[:, None, :]
    if not inside.all():
        inside = inside.repeat(scale, axis=1).repeat(scale, axis=2)
        checks = np.add.outer(np.arange(out.shape[1]) // CHECK, np.arange(out.shape[2]) // CHECK) % 2
        out = np.where(inside[..., None], out, np.asarray(OUTSIDE, np.uint8)[checks])
    return np.ascontiguousarray(out)


def cell_shape(k: int) -> tuple[int, int]:
    """``(rows, cols)`` of the crops in a cell: ``k`` side by side, folded into the divisor
    of ``k`` nearest ``sqrt(k / 2)`` rows so that cells are about twice as wide as tall."""
    target = math.sqrt(k / 2)
    rows = min((d for d in range(1, k + 1) if k % d == 0), key=lambda d: (abs(d - target), d))
    return rows, k // rows


@dataclass(frozen=True)
class AtlasLayout:
    """Where each crop goes in a layer's atlas picture; fixed for a training run.

    Cell ``t`` (row-major, ``rows x cols`` as the layer's grid) shows channel
    ``channels[t]``, the same channel as tile ``t`` of the grid. Its crop of
    rank ``r`` (0 = the strongest) is at :meth:`crop_box`.
    """

    channels: tuple[int, ...]
    rows: int
    cols: int
    k: int
    cell_rows: int
    cell_cols: int
    crop_height: int
    crop_width: int
    scale: int = 1
    stride: int = 1
    gap: int = GAP
    pad: int = PAD

    @property
    def cell_height(self) -> int:
        return self.cell_rows * self.crop_height + (self.cell_rows - 1) * self.gap

    @property
    def cell_width(self) -> int:
        return self.cell_cols * self.crop_width + (self.cell_cols - 1) * self.gap

    @property
    def height(self) -> int:
        return self.rows * self.cell_height + (self.rows + 1) * self.pad

    @property
    def width(self) -> int:
        return self.cols * self.cell_width + (self.cols + 1) * self.pad

    def cell_box(self, tile: int) -> tuple[int, int, int, int]:
        """``(y, x, height, width)`` of cell ``tile`` (row-major, as the grid's tiles)."""
        if not 0 <= tile < len(self.channels):
            raise IndexError(f"Cell {tile} is outside the atlas' {len(self.channels)} cells.")
        r, c = divmod(tile, self.cols)
        return (
            self.pad + r * (self.cell_height + self.pad),
            self.pad + c * (self.cell_width + self.pad),
            self.cell_height,
            self.cell_width,
        )

    def crop_box(self, tile: int, rank: int) -> tuple[int, int, int, int]:
        """``(y, x, height, width)`` of the crop of rank ``rank`` in cell ``tile``."""
        if not 0 <= rank < self.k:
            raise IndexError(f"Rank {rank} is outside 0..{self.k - 1}.")
        y, x, _, _ = self.cell_box(tile)
        r, c = divmod(rank, self.cell_cols)
        return (
            y + r * (self.crop_height + self.gap),
            x + c * (self.crop_width + self.gap),
            self.crop_height,
            self.crop_width,
        )

    def boxes(self) -> list[list[list[int]]]:
        """Per cell (tile order), ``[y, x, height, width]`` of each crop, best first: where a
        channel's crops are in the picture (what a dashboard needs to cut them out)."""
        return [[list(self.crop_box(t, r)) for r in range(self.k)] for t in range(len(self.channels))]

    def to_dict(self) -> dict[str, int]:
        """The manifest's ``atlas.layout`` entry (channels are stored beside it)."""
        data = asdict(self)
        del data["channels"]
        return {key: int(value) for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], channels: Sequence[int]) -> AtlasLayout:
        return cls(channels=tuple(int(c) for c in channels), **{k: int(v) for k, v in data.items()})


def plan_atlas(
    channels: Sequence[int], rows: int, cols: int, k: int, crop_hw: Sequence[int],
    *, max_pixels: int = MAX_PIXELS,
) -> AtlasLayout:
    """The :class:`AtlasLayout` of a layer: its grid's ``rows x cols`` cells of ``k`` crops
    of ``crop_hw`` input pixels, drawn as :func:`display` says, smaller if the picture
    would exceed ``max_pixels``."""
    height, width = int(crop_hw[0]), int(crop_hw[1])
    cell_rows, cell_cols = cell_shape(k)
    scale, stride = display(height, width)
    while True:
        layout = AtlasLayout(
            tuple(int(c) for c in channels), rows, cols, k, cell_rows, cell_cols,
            -(-height // stride) * scale, -(-width // stride) * scale, scale, stride,
        )
        if layout.height * layout.width <= max_pixels or max(layout.crop_height, layout.crop_width) == 1:
            return layout
        if scale > 1:
            scale -= 1
        else:
            stride += 1


def render_atlas(layout: AtlasLayout, crops: Sequence[Sequence[np.ndarray | None]]) -> np.ndarray:
    """The atlas picture: ``crops[t][r]`` (from :func:`crop` with the layout's scale and
    stride; ``None`` for an empty slot) at :meth:`AtlasLayout.crop_box` ``(t, r)``.

    Returns:
        uint8 ``(layout.height, layout.width, 3)``.
    """
    image = np.full((layout.height, layout.width, 3), BACKGROUND, np.uint8)
    for tile, cell in enumerate(crops):
        for rank, pixels in enumerate(cell):
            if pixels is None:
                continue
            y, x, height, width = layout.crop_box(tile, rank)
            image[y : y + height, x : x + width] = pixels[:height, :width]
    return image


@dataclass
class AtlasResult:
    """One layer at one atlas event, on the host.

    Attributes:
        name: the layer's display name.
        image: uint8 ``(H, W, 3)`` atlas picture.
        index: int ``(n, k)`` pool indices, best first (-1 = empty slot).
        position: int ``(n, k, 2)`` ``(y, x)`` of each unit in the layer's output.
        value: float32 ``(n, k)`` activations.
        box: int ``(n, k, 4)`` ``(top, left, height, width)`` of each unit's
            receptive field in input pixels (may extend past the image).
        change: float32 ``(n,)`` :func:`jaccard_distance` to the previous
            atlas event, or ``None`` at the first.
    """

    name: str
    image: np.ndarray
    index: np.ndarray
    position: np.ndarray
    value: np.ndarray
    box: np.ndarray
    change: np.ndarray | None
