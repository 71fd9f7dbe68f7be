"""The user's choice of layers -> an ordered list of (display name, path, layer).

``layers=`` accepts, in order of convenience:

- ``None``: every layer of the model, nested models included, whose output per
  sample has spatial extent (rank >= 2 without the batch axis: Conv1D/2D/3D,
  pooling, ...). Nested models themselves are walked into, not watched.
- a name (``"conv_0"``), a path into nested models (``"backbone/block_1_conv"``),
  a ``keras.layers.Layer`` object, a layer class (``keras.layers.Conv2D``, matched
  with ``isinstance``), or a compiled regular expression (matched with
  ``re.fullmatch`` against each layer's path); or a list mixing these.
- a mapping ``{display_name: layer}`` whose values are any single item above
  naming exactly one layer: logs then carry the display names. (The classic
  recipe renamed layers through ``layer._name``, which Keras 3 ignores.)

Layers chosen explicitly must have an output that can be drawn (rank >= 1 per
sample: Dense outputs are drawn as a strip); ``None`` and class/regex choices
keep only spatial layers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actlog import metadata


@dataclass(frozen=True)
class Watched:
    """One layer to watch."""

    name: str  # display name: used in tags
    path: str  # "outer/inner" path of the layer within the model
    layer: Any  # keras.layers.Layer
    chain: tuple[Any, ...]  # enclosing sub-models from the outermost down, the model itself excluded


def walk(model: Any) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """Every layer below ``model`` as (path, layer, chain of enclosing sub-models), depth first.

    Sub-models are listed and then walked into, so both a backbone and its
    inner layers can be chosen.
    """
    found: list[tuple[str, Any, tuple[Any, ...]]] = []

    def visit(container: Any, prefix: str, chain: tuple[Any, ...]) -> None:
        for layer in getattr(container, "layers", []):
            if _is_input_layer(layer):
                continue
            path = f"{prefix}{layer.name}"
            found.append((path, layer, chain))
            if _is_model(layer):
                visit(layer, path + "/", chain + (layer,))

    visit(model, "", ())
    return found


def resolve(model: Any, spec: Any) -> list[Watched]:
    """Resolve ``spec`` (see module docstring) against ``model``; raises ``ValueError``."""
    everything = walk(model)
    by_path = {path: (layer, chain) for path, layer, chain in everything}

    if spec is None:
        chosen = [
            Watched(path, path, layer, chain)
            for path, layer, chain in everything
            if not _is_model(layer) and _spatial(layer)
        ]
        if not chosen:
            raise ValueError(
                "layers=None watches every layer with a spatial output (rank >= 2 per sample, "
                "e.g. Conv2D or pooling), but this model has none. Layers and their outputs: "
                f"{_describe(everything)}. Name the layers to watch explicitly."
            )
        return _check_names(chosen)

    if isinstance(spec, Mapping):
        chosen = []
        for display, item in spec.items():
            if not isinstance(display, str) or not display:
                raise ValueError(
                    f"layers mapping keys are display names (non-empty str); received {display!r}."
                )
            matches = _match(item, everything, by_path, explicit=True)
            if len(matches) != 1:
                raise ValueError(
                    f"layers[{display!r}] must name exactly one layer; {item!r} matches "
                    f"{[path for path, _, _ in matches]}."
                )
            path, layer, chain = matches[0]
            chosen.append(Watched(display, path, layer, chain))
        return _check_names(chosen)

    items = list(spec) if _is_sequence(spec) else [spec]
    if not items:
        raise ValueError("layers is an empty list; pass None to watch every spatial layer.")
    chosen, seen = [], set()
    for item in items:
        for path, layer, chain in _match(item, everything, by_path, explicit=False):
            if path not in seen:
                seen.add(path)
                chosen.append(Watched(path, path, layer, chain))
    return _check_names(chosen)


def _match(item: Any, everything: list, by_path: dict, *, explicit: bool) -> list:
    """Layers that one item of ``layers=`` names."""
    if isinstance(item, str):
        if item in by_path:
            return [(item, *by_path[item])]
        by_name = [entry for entry in everything if entry[1].name == item]
        if len(by_name) > 1:
            raise ValueError(
                f"Layer name {item!r} is ambiguous: it names {[p for p, _, _ in by_name]}. "
                "Use the full path."
            )
        if not by_name:
            raise ValueError(
                f"No such layer: {item!r}. Existing layers are: {[p for p, _, _ in everything]}."
            )
        return [_drawable(by_name[0])]
    if isinstance(item, re.Pattern):
        found = [
            entry
            for entry in everything
            if item.fullmatch(entry[0]) and not _is_model(entry[1]) and _spatial(entry[1])
        ]
        if not found:
            raise ValueError(
                f"No spatial layer path matches {item.pattern!r}. "
                f"Existing layers are: {[p for p, _, _ in everything]}."
            )
        return found
    if isinstance(item, type):
        found = [
            entry
            for entry in everything
            if isinstance(entry[1], item) and (explicit or _spatial(entry[1]))
        ]
        if not found:
            classes = sorted({type(layer).__name__ for _, layer, _ in everything})
            raise ValueError(
                f"No spatial layer of class {item.__name__} in the model. "
                f"Layer classes present: {classes}."
            )
        return found if not explicit else [_drawable(entry) for entry in found]
    for entry in everything:
        if entry[1] is item:
            return [_drawable(entry)]
    if hasattr(item, "name") and hasattr(item, "call"):
        raise ValueError(
            f"Layer object {item.name!r} ({type(item).__name__}) is not part of this model. "
            f"Existing layers are: {[p for p, _, _ in everything]}."
        )
    raise TypeError(
        f"Cannot choose layers with {item!r} ({type(item).__name__}). Accepted: None, a layer name "
        "or path (str), a keras Layer, a Layer class, a compiled re.Pattern, a list of these, "
        "or a dict {display_name: one of these}."
    )


def _drawable(entry: tuple) -> tuple:
    path, layer, _ = entry
    if _is_model(layer) and _output_rank(layer) is None:
        raise ValueError(f"{path!r} is a model with several outputs; choose a layer inside it.")
    rank = _output_rank(layer)
    if rank is not None and rank < 1:
        raise ValueError(
            f"Layer {path!r} ({type(layer).__name__}) has output shape {_shape(layer)}: a scalar "
            "per sample cannot be drawn. Accepted: layers whose output per sample has rank 1 to 4 "
            "(Dense, Conv1D/2D/3D, pooling, ...)."
        )
    return entry


def _check_names(chosen: list[Watched]) -> list[Watched]:
    names = [w.name for w in chosen]
    for w in chosen:
        if w.name == metadata.RESERVED_PREFIX or w.name.startswith(metadata.RESERVED_PREFIX + "/"):
            raise ValueError(
                f"Display name {w.name!r} is reserved: tags under {metadata.RESERVED_PREFIX!r}/ hold "
                "actlog's own summaries. Choose another name with layers={'my_name': layer}."
            )
        if names.count(w.name) > 1:
            raise ValueError(f"Display name {w.name!r} is used twice in layers={names}.")
        if "\n" in w.name or not w.name.strip():
            raise ValueError(f"Display name {w.name!r} must be non-blank and on one line.")
    return chosen


def _is_input_layer(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _is_model(layer: Any) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "fit")


def _is_sequence(spec: Any) -> bool:
    return isinstance(spec, Iterable) and not isinstance(spec, (str, bytes, Mapping, type))


def _shape(layer: Any) -> tuple | None:
    """Per-layer output shape (with batch axis) when Keras knows it, else None."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(output, (list, tuple, dict)):
        return None
    return tuple(output.shape)


def _output_rank(layer: Any) -> int | None:
    shape = _shape(layer)
    return None if shape is None else len(shape) - 1


def _spatial(layer: Any) -> bool:
    rank = _output_rank(layer)
    return rank is not None and rank >= 2


def _describe(everything: list) -> str:
    return ", ".join(f"{p} {_shape(layer)}" for p, layer, _ in everything)
