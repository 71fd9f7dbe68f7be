"""Token layers (vision transformers): a ``(N, D)`` output drawn as maps over the patch grid.

A vision transformer cuts the image into ``h x w`` patches, embeds each as a
token, and usually puts a few extra tokens in front (a class token, a
distillation token, register tokens). Its layers' per-sample outputs are
``(N, D)`` with ``N = extra + h * w``: drawn as a strip per channel (as a
``Conv1D``'s are), the spatial meaning is lost. A :class:`TokenGrid` says how
to fold them back: each channel's tile is the ``h x w`` map of the patch
tokens, and the extra tokens stand beside it, in a column of their own after a
one-cell gap, never mixed into the map.

Everything about token layers enters actlog from here:

- :func:`split` takes :class:`Tokens` requests out of ``layers=``;
- :func:`default_choice` is what ``layers=None`` watches in a token model (the
  patch embedding, a few block outputs, the attention of the first and last
  block), called from :func:`actlog.layers.resolve`;
- :func:`prepare` gives each watched layer its :class:`TokenGrid` (from the
  request, else from the model's patch embedding, else a square ``N``) and
  marks attention layers, called once by the session;
- :meth:`TokenGrid.arrange` folds a batch of token outputs into maps, for
  numpy and ``keras.ops`` alike (:func:`actlog.grid.batch_maps`);
- :func:`attention_map` turns a ``MultiHeadAttention``'s scores into one
  token map per head (the class token's row, or the mean query's).

The geometry is recorded in the grid layout (:class:`actlog.grid.GridLayout`'s
``tokens``), so every reader of a log finds it where it finds the tiles.
It imports numpy only; Keras is used only where a model is given.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_EXTRA = 8
"""Most extra tokens (class, distillation, registers) a token sequence is taken to have
when its grid is inferred."""


@dataclass(frozen=True)
class TokenGrid:
    """How a ``(N, D)`` token output folds into maps: ``extra`` leading tokens, then ``h x w``
    patch tokens in row-major order.

    The map of one channel is ``h`` rows by ``w`` columns of patch tokens; with extra tokens,
    one blank column and then ``ceil(extra / h)`` columns holding the extra tokens top down
    (:attr:`map_hw`). Blank cells are drawn as padding (:meth:`blank`).
    """

    h: int
    w: int
    extra: int = 0

    def __post_init__(self) -> None:
        for name, low in (("h", 1), ("w", 1), ("extra", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"TokenGrid {name} must be an integer >= {low}. Received: {value!r}.")

    @property
    def tokens(self) -> int:
        """``N``: every token of the sequence."""
        return self.extra + self.h * self.w

    @property
    def extra_cols(self) -> int:
        """Columns beside the map: a gap and the extra tokens' column(s); 0 without extras."""
        return 0 if not self.extra else 1 + -(-self.extra // self.h)

    @property
    def map_hw(self) -> tuple[int, int]:
        """``(height, width)`` of one channel's map, extra tokens included."""
        return self.h, self.w + self.extra_cols

    def to_dict(self) -> dict[str, int]:
        return {"h": self.h, "w": self.w, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TokenGrid | None:
        if not data:
            return None
        return cls(int(data["h"]), int(data["w"]), int(data.get("extra", 0)))

    def token_at(self, y: int, x: int) -> int | None:
        """The token drawn at cell ``(y, x)`` of the map; ``None`` for a blank cell."""
        if x < self.w:
            return self.extra + y * self.w + x
        t = (x - self.w - 1) * self.h + y
        return t if x > self.w and t < self.extra else None

    def blank(self) -> np.ndarray:
        """bool ``map_hw``: the cells that show no token (the gap, unused extra cells)."""
        mask = np.zeros(self.map_hw, dtype=bool)
        for y in range(self.h):
            for x in range(self.w, self.map_hw[1]):
                mask[y, x] = self.token_at(y, x) is None
        return mask

    def order(self) -> list[int]:
        """The token drawn at each cell of the map, row-major. A blank cell repeats the last
        patch token of its row, which comes before it: a peak or a range over the map then
        finds only what the tokens hold, and a peak's first position is never a blank cell."""
        return [
            t if (t := self.token_at(y, x)) is not None else self.extra + y * self.w + self.w - 1
            for y in range(self.h) for x in range(self.map_hw[1])
        ]

    def patches(self, xp: Any, acts: Any) -> Any:
        """``(k, N, D)`` -> ``(k, h, w, D)``: the patch tokens alone (the atlas' peaks: where
        in the image a channel fires most)."""
        k, _, d = acts.shape
        return xp.reshape(acts[:, self.extra:, :], (k, self.h, self.w, d))

    def field(self, image_hw: Sequence[int]) -> Any:
        """The patch each token was made of, as an :class:`actlog.atlas.Field` over the image:
        a patch embedding's field. (After attention a token sees the whole image: the atlas
        outlines this patch in an unfaded picture, :func:`outline`.)"""
        from actlog.atlas import Field

        size = (int(image_hw[0]) // self.h, int(image_hw[1]) // self.w)
        return Field.identity(int(image_hw[0]), int(image_hw[1])).window(size, size)

    def arrange(self, xp: Any, acts: Any) -> Any:
        """``(k, N, D)`` token outputs -> ``(k, *map_hw, D)`` maps.

        ``xp`` is :data:`actlog.arrays.NUMPY` or ``keras.ops`` (or a backend's own
        namespace: only slicing, ``reshape`` and ``stack`` are asked of it).
        """
        k, n, d = acts.shape
        if n != self.tokens:
            raise ValueError(
                f"A token grid of {self.h} x {self.w} patches and {self.extra} extra tokens needs "
                f"{self.tokens} tokens; the layer has {n}."
            )
        if not self.extra:
            return xp.reshape(acts, (k, self.h, self.w, d))
        cells = xp.stack([acts[:, t, :] for t in self.order()], axis=1)
        return xp.reshape(cells, (k, *self.map_hw, d))


OUTLINE = (255, 210, 0)
"""Colour of the patch outline in a token layer's atlas crops."""


def outline(pictures: np.ndarray, windows: np.ndarray, boxes: np.ndarray, *, scale: int,
            stride: int) -> np.ndarray:
    """Atlas crops of a token layer with the best token's patch outlined (in place).

    The crops are drawn unfaded: after attention a token's receptive field is the whole
    image, so the patch it sits on is where it is, not all it sees.

    Args:
        pictures: uint8 ``(N, h, w, 3)`` crops of ``windows`` (``(N, 4)`` top, left, height, width).
        boxes: ``(N, 4)`` the patches (top, left, height, width), in image pixels.
        scale, stride: as the crops were drawn.
    """
    for picture, window, box in zip(pictures, np.asarray(windows), np.asarray(boxes), strict=True):
        top = (int(box[0]) - int(window[0])) // stride * scale
        left = (int(box[1]) - int(window[1])) // stride * scale
        bottom = top + max(1, -(-int(box[2]) // stride) * scale) - 1
        right = left + max(1, -(-int(box[3]) // stride) * scale) - 1
        height, width = picture.shape[:2]
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, height - 1), min(right, width - 1)
        if top > bottom or left > right:
            continue
        picture[top, left:right + 1] = picture[bottom, left:right + 1] = OUTLINE
        picture[top:bottom + 1, left] = picture[top:bottom + 1, right] = OUTLINE
    return pictures


class Tokens:
    """``layers=`` entry that draws a layer's ``(N, D)`` output over a patch grid you give.

    actlog finds the grid of a vision transformer's token layers by itself (from the
    patch embedding, else a square ``N``); name it where it cannot, or to force a
    sequence of a model without an image input to be drawn as maps:

    ```python
    actlog.ActivationLogger(log_dir, probes, layers={
        "blk3": actlog.Tokens("block_3", grid=(8, 8), extra=1),   # class token + 8 x 8 patches
    })
    ```

    Args:
        layer: what ``layers=`` accepts for one entry (a name, path, Layer, class or pattern).
        grid: ``(h, w)`` patches, or ``None`` to infer it.
        extra: tokens before the patch tokens (class, distillation, registers); ``None``:
            whatever ``N - h * w`` leaves, 0 to :data:`MAX_EXTRA`.
    """

    def __init__(self, layer: Any, *, grid: tuple[int, int] | None = None,
                 extra: int | None = None) -> None:
        if isinstance(layer, (Tokens, Mapping)) or (
            isinstance(layer, (list, tuple)) and not hasattr(layer, "call")
        ):
            raise TypeError(
                f"Tokens wraps one layers= entry (a name, path, Layer, class or pattern); "
                f"received {layer!r}."
            )
        if grid is not None and not (
            isinstance(grid, (tuple, list)) and len(grid) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in grid)
        ):
            raise ValueError(f"Tokens grid must be None or (h, w) positive integers. Received: {grid!r}.")
        if extra is not None and (isinstance(extra, bool) or not isinstance(extra, numbers.Integral)
                                  or extra < 0):
            raise ValueError(f"Tokens extra must be None or an integer >= 0. Received: {extra!r}.")
        self.layer = layer
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self.extra = None if extra is None else int(extra)

    def __repr__(self) -> str:
        return f"Tokens({self.layer!r}, grid={self.grid!r}, extra={self.extra!r})"

    def fit(self, n: int, path: str) -> TokenGrid | None:
        """The grid this request gives a sequence of ``n`` tokens (``None``: infer it)."""
        if self.grid is None:
            if self.extra is None:
                return None
            side = math.isqrt(n - self.extra) if n >= self.extra else 0
            if side * side != n - self.extra or side < 1:
                raise ValueError(
                    f"layers: {self!r}: layer {path!r} has {n} tokens; {n} - extra={self.extra} "
                    "is not a square number of patches. Give grid=(h, w)."
                )
            return TokenGrid(side, side, self.extra)
        h, w = self.grid
        extra = n - h * w if self.extra is None else self.extra
        if h * w + extra != n or not 0 <= extra <= (MAX_EXTRA if self.extra is None else n):
            raise ValueError(
                f"layers: {self!r}: layer {path!r} has {n} tokens, but {h} x {w} patches leave "
                f"{n - h * w} for extra tokens. Accepted: h * w + extra == {n}, with extra= given "
                f"when it is over {MAX_EXTRA} or the grid is not {h} x {w}."
            )
        return TokenGrid(h, w, extra)


Requests = list[tuple[Any, Tokens]]
"""``(matcher, request)`` pairs from :func:`split`: a matcher is ``("name", display name)``
or ``("item", layers= entry)``."""


def split(spec: Any) -> tuple[Any, Requests]:
    """``layers=`` without its :class:`Tokens` wrappers, and the requests they made."""
    requests: Requests = []
    if isinstance(spec, Tokens):
        return spec.layer, [(("item", spec.layer), spec)]
    if isinstance(spec, Mapping):
        plain = {}
        for key, item in spec.items():
            if isinstance(item, Tokens):
                requests.append((("name", key), item))
                item = item.layer
            plain[key] = item
        return plain, requests
    if isinstance(spec, (list, tuple)) and not hasattr(spec, "call"):
        plain = []
        for item in spec:
            if isinstance(item, Tokens):
                requests.append((("item", item.layer), item))
                item = item.layer
            plain.append(item)
        return plain, requests
    return spec, requests


def _matches(matcher: tuple[str, Any], watched: Any) -> bool:
    how, item = matcher
    if how == "name":
        return watched.name == item
    if isinstance(item, str):
        return item in (watched.path, watched.layer.name)
    if isinstance(item, re.Pattern):
        return item.fullmatch(watched.path) is not None
    if isinstance(item, type):
        return isinstance(watched.layer, item)
    return watched.layer is item


# --------------------------------------------------------------------------- the model


def is_attention(layer: Any) -> bool:
    """Keras' ``MultiHeadAttention`` (or a subclass, as keras-hub's attention layers are):
    a layer whose public ``call(..., return_attention_scores=True)`` returns its scores."""
    import keras

    return isinstance(layer, keras.layers.MultiHeadAttention)


def _config(layer: Any) -> dict[str, Any]:
    try:
        config = layer.get_config()
    except Exception:  # noqa: BLE001 - a user layer without a config has no patch size to read
        return {}
    return config if isinstance(config, dict) else {}


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        try:
            return int(value[0]), int(value[1])
        except (TypeError, ValueError):
            return None
    return None


def patch_grid(layer: Any) -> tuple[int, int] | None:
    """``(h, w)`` patches of a patch embedding: a layer whose config has ``patch_size`` and
    ``image_size`` (keras-hub's), or a ``Conv2D`` with strides > 1 whose output shape is known."""
    config = _config(layer)
    patch = _pair(config.get("patch_size"))
    image = _pair(config.get("image_size", config.get("image_shape")))
    if patch and image and min(patch) > 0:
        return image[0] // patch[0], image[1] // patch[1]
    import keras

    if isinstance(layer, keras.layers.Conv2D) and max(_pair(getattr(layer, "strides", 1)) or (1, 1)) > 1:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):
            return None
        if len(shape) == 4 and None not in shape[1:]:
            first = getattr(layer, "data_format", "channels_last") == "channels_first"
            return (shape[2], shape[3]) if first else (shape[1], shape[2])
    return None


def infer(n: int, grids: Sequence[tuple[int, int]]) -> TokenGrid | None:
    """The grid of ``n`` tokens: the first patch grid (of the model's, latest first) that
    leaves 0 to :data:`MAX_EXTRA` extra tokens, else the square with the fewest extras."""
    for h, w in grids:
        if 0 <= n - h * w <= MAX_EXTRA:
            return TokenGrid(h, w, n - h * w)
    for extra in range(0, min(MAX_EXTRA, n) + 1):
        side = math.isqrt(n - extra)
        if side >= 2 and side * side == n - extra:
            return TokenGrid(side, side, extra)
    return None


def prepare(model: Any, watched: Sequence[Any], requests: Requests, *, image: bool) -> list[Any]:
    """Each :class:`actlog.layers.Watched` with its ``tokens`` grid and ``attention`` set.

    A ``MultiHeadAttention`` is drawn as its attention: its per-sample shape becomes
    ``(keys, heads)`` (self-attention: as many keys as its output has tokens). A rank-2
    output gets a grid when the model has an image input (``image``) or a request names
    it; a sequence without one (text, audio) stays a strip.

    Raises:
        ValueError: a request that does not fit its layer's tokens.
    """
    from actlog.layers import walk

    grids: list[tuple[int, int]] | None = None
    out = []
    for w in watched:
        shape, attention = w.shape, None
        if is_attention(w.layer) and shape is not None and len(shape) == 3:
            shape = (shape[0], shape[1], int(w.layer.num_heads))
        request = next((r for m, r in requests if _matches(m, w)), None)
        geometry = None
        if shape is not None and len(shape) == 3 and (image or request is not None):
            n = int(shape[1])
            geometry = request.fit(n, w.path) if request is not None else None
            if geometry is None:
                if grids is None:
                    found = [patch_grid(layer) for _, layer, _ in walk(model)]
                    grids = [g for g in reversed(found) if g is not None]
                geometry = infer(n, grids)
        elif request is not None:
            raise ValueError(
                f"layers: {request!r} names layer {w.path!r}, whose output {w.shape} is not a "
                "token sequence (N, D) per sample."
            )
        if shape is not w.shape:
            attention = "class" if geometry is not None and geometry.extra else "mean"
        out.append(dataclasses.replace(w, shape=shape, tokens=geometry, attention=attention))
    return out


def attention_map(ops: Any, scores: Any, how: str) -> Any:
    """``(k, heads, queries, keys)`` attention scores -> ``(k, keys, heads)``: per head, where
    the class token (``how="class"``: query 0) or the mean query (``"mean"``) attends."""
    rows = scores[:, :, 0, :] if how == "class" else ops.mean(scores, axis=2)
    return ops.transpose(rows, (0, 2, 1))


# --------------------------------------------------------------------------- layers=None


def default_choice(model: Any, entries: Sequence[Any], budget: int) -> list[Any] | None:
    """What ``layers=None`` watches in a vision transformer, or ``None`` for another model.

    A token model has an attention layer and an image (a rank-3 per-sample input, a
    patch embedding). It gets its patch embedding, the outputs of up to ``budget - 3``
    transformer blocks evenly spread over the depth (the last included), and the
    attention of the first and the last block: never the projections inside a block.
    A block is a composite layer holding one attention layer (keras-hub's), else, in a
    functional graph, the residual ``Add`` that closes a block's MLP.

    ``entries`` are :func:`actlog.layers.resolve`'s catalog (path, layer, chain, kind, shape).
    """
    tensors = [e for e in entries if e.kind == "tensor" and e.shape is not None]
    attention = [e for e in tensors if is_attention(e.layer) and len(e.shape) == 3]
    if not attention or not _has_image(model, tensors):
        return None
    patches = [e for e in tensors if not hasattr(e.layer, "fit") and patch_grid(e.layer) is not None]
    tokens = [e for e in tensors if len(e.shape) == 3 and not hasattr(e.layer, "fit")]
    blocks = [e for e in tokens if sum(any(c is e.layer for c in a.chain) for a in attention) == 1]
    if not blocks:
        # An Add with no attention since the previous one closes a block's MLP; Adds before
        # the first attention (position embeddings) close nothing.
        blocks, since = [], None
        for e in tensors:
            if is_attention(e.layer):
                since = True
            elif type(e.layer).__name__ == "Add" and len(e.shape) == 3 and since is not None:
                if not since:
                    blocks.append(e)
                since = False
    if not blocks:
        return None
    room = max(1, budget - 3)
    if len(blocks) > room:
        blocks = [blocks[i] for i in sorted({round(i * (len(blocks) - 1) / max(1, room - 1))
                                             for i in range(room)})]
    chosen = {id(e) for e in patches[:1] + blocks + [attention[0], attention[-1]]}
    return [e for e in entries if id(e) in chosen]


def _has_image(model: Any, tensors: Sequence[Any]) -> bool:
    try:
        if any(len(t.shape) == 4 for t in model.inputs):
            return True
    except (AttributeError, ValueError, TypeError):
        pass
    return any(len(e.shape) == 4 for e in tensors) or any(patch_grid(e.layer) for e in tensors)
