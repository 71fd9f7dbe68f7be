"""The user's choice of layers -> an ordered list of :class:`Watched` layers.

``layers=`` accepts, in order of convenience:

- ``None``: the last layer of each spatial stage, so that the hierarchy is seen
  at every scale: layers with a spatial output (rank 2 to 4 per sample) in model
  order, nested models included, grouped into runs of the same spatial size;
  the last layer of each run, at most :data:`DEFAULT_BUDGET` of them (evenly
  spread over the depth when there are more). Only layers that compute features
  count (:func:`computes_features`: not Dropout, input preprocessing, padding or
  cropping), and no 1 x 1 map. The MNIST example's ConvNet gets ``conv_0``,
  ``conv_1``, ``pool_1`` (not the Dropout after it); ResNet50 the output of its
  stem and of each of its 4 stages; MobileNetV3Small and EfficientNetB0 one
  activation per resolution, not their input Rescaling or Normalization. A vision
  transformer gets its patch embedding, a few block outputs and the attention of
  its first and last block instead (:func:`actlog.tokens.default_choice`).
- ``"*"``: every layer with a spatial output.
- a name (``"conv_0"``), a path into nested models (``"backbone/block_1_conv"``),
  a ``keras.layers.Layer`` object, a layer class (``keras.layers.Conv2D``, matched
  with ``isinstance``), or a compiled regular expression (matched with
  ``re.fullmatch`` against each layer's path); or a list mixing these.
- a mapping ``{display_name: layer}`` whose values are any single item above
  naming exactly one layer: logs then carry the display names. (The classic
  recipe renamed layers through ``layer._name``, which Keras 3 ignores.)

Layers chosen explicitly must have an output that can be drawn (rank 1 to 4
per sample: Dense outputs are drawn as a strip); ``None``, ``"*"`` and
class/regex choices keep only spatial layers. Nested models, and user-written
layers that hold layers of their own (a ``ResidualBlock(keras.layers.Layer)``),
are walked into, not watched.

Output shapes come from the model's symbolic graph when it has one
(Sequential and functional models, nested ones included). A subclassed model,
or a ``Sequential`` that has not been given its input shape yet, has no
graph: then ``trace`` (from :mod:`actlog.probe`) runs the model once on the
probes with every such layer tapped. A layer the model never calls cannot be
watched, and is named as such.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actlog import metadata, tokens
from actlog.checks import suggest

DEFAULT_BUDGET = 12
"""Most layers ``layers=None`` picks."""

EVERY_SPATIAL = "*"
"""``layers="*"``: every layer with a spatial output."""

# Layers whose output is no feature of their own (see computes_features), by their names in
# keras.layers; subclasses count too.
_NOT_FEATURES = (
    # the identity at inference: regularisers and augmentation
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout",
    "GaussianDropout", "GaussianNoise", "ActivityRegularization", "AugMix", "AutoContrast",
    "CutMix", "Equalization", "MixUp", "Pipeline", "RandAugment", "Solarization",
    # the input, preprocessed
    "Rescaling", "Normalization", "Resizing", "CenterCrop",
    # the identity, and geometry only
    "Identity", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D",
)

Trace = Callable[[Sequence[Any]], dict[int, Any]]
"""``trace(layers) -> {id(layer): output shape (batch first) or None for several outputs}``;
layers the model never called are absent."""


@dataclass(frozen=True)
class Watched:
    """One layer to watch."""

    name: str  # display name: used in tags
    path: str  # "outer/inner" path of the layer within the model
    layer: Any  # keras.layers.Layer
    # Enclosing containers (sub-models, user-written composite layers) from the
    # outermost down, the model itself excluded. Non-empty -> the layer's output
    # is not reachable from the model's own inputs, so it must be captured.
    chain: tuple[Any, ...]
    shape: tuple[int | None, ...] | None = None  # output shape, batch axis first
    tokens: Any = None  # actlog.tokens.TokenGrid of a token layer drawn as maps (tokens.prepare)
    attention: str | None = None  # "class"/"mean": an attention layer drawn as its scores


@dataclass
class _Entry:
    """A layer found by :func:`walk`, with what is known of its output."""

    path: str
    layer: Any
    chain: tuple[Any, ...]
    # "tensor": one output of known `shape` (batch axis included); "multi": a
    # list/dict of outputs; "unknown": no symbolic graph and no trace yet;
    # "unused": traced, but the model never called the layer.
    kind: str
    shape: tuple | None

    def watched(self, name: str | None = None) -> Watched:
        return Watched(name or self.path, self.path, self.layer, self.chain, self.shape)


def walk(model: Any) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """Every layer below ``model`` as (path, layer, chain of enclosing containers), depth first.

    Containers (sub-models and user-written layers holding layers) are listed
    and then walked into, so both a backbone and its inner layers can be chosen.
    """
    found: list[tuple[str, Any, tuple[Any, ...]]] = []

    def visit(container: Any, prefix: str, chain: tuple[Any, ...]) -> None:
        for segment, layer in _children(container):
            if _is_input_layer(layer):
                continue
            path = f"{prefix}{segment}"
            found.append((path, layer, chain))
            if is_container(layer):
                visit(layer, path + "/", chain + (layer,))

    visit(model, "", ())
    return found


def resolve(model: Any, spec: Any, trace: Trace | None = None) -> list[Watched]:
    """Resolve ``spec`` (see module docstring) against ``model``; raises ``ValueError``.

    Args:
        model: a Keras model (Sequential, functional, nested or subclassed).
        spec: the ``layers=`` argument of :class:`actlog.ActivationLogger`.
        trace: learns the output shapes the symbolic graph does not know by
            running the model (see :data:`Trace`); ``None`` leaves them unknown.

    Returns:
        The watched layers, in the order of ``spec`` (model order for ``None``,
        ``"*"``, classes and patterns).
    """
    everything = _catalog(model, trace)
    by_path = {entry.path: entry for entry in everything}
    spatial = [e for e in everything if not is_container(e.layer) and _spatial(e)]

    if spec is None or spec == EVERY_SPATIAL:
        if not spatial:
            raise ValueError(
                f"layers={spec!r} watches layers with a spatial output (rank 2 to 4 per sample, "
                "e.g. Conv2D or pooling), but none was found. Layers and their outputs: "
                f"{_describe(everything)}.{_hint(everything, trace)} Name the layers to watch "
                "explicitly."
            )
        chosen = spatial if spec == EVERY_SPATIAL else (
            tokens.default_choice(model, everything, DEFAULT_BUDGET) or stage_ends(spatial))
        return _check_names([e.watched() for e in chosen])

    if isinstance(spec, Mapping):
        chosen = []
        for display, item in spec.items():
            if not isinstance(display, str) or not display:
                raise ValueError(
                    f"layers mapping keys are display names (non-empty str); received {display!r}."
                )
            matches = _match(item, everything, by_path, explicit=True, trace=trace)
            if len(matches) != 1:
                raise ValueError(
                    f"layers[{display!r}] must name exactly one layer; {item!r} matches "
                    f"{[e.path for e in matches]}."
                )
            chosen.append(matches[0].watched(display))
        return _check_names(chosen)

    items = list(spec) if _is_sequence(spec) else [spec]
    if not items:
        raise ValueError("layers is an empty list; pass None to watch the last layer of each stage.")
    chosen, seen = [], set()
    for item in items:
        for entry in _match(item, everything, by_path, explicit=False, trace=trace):
            if entry.path not in seen:
                seen.add(entry.path)
                chosen.append(entry.watched())
    return _check_names(chosen)


def stage_ends(spatial: Sequence[Any], budget: int = DEFAULT_BUDGET) -> list[Any]:
    """The last layer of each run of equal spatial size (see module docstring)."""
    kept = [e for e in spatial if computes_features(e.layer) and math.prod(_resolution(e)) > 1]
    ends = [
        entry for i, entry in enumerate(kept)
        if i + 1 == len(kept) or _resolution(kept[i + 1]) != _resolution(entry)
    ]
    if len(ends) <= budget:
        return ends
    picks = sorted({round(i * (len(ends) - 1) / (budget - 1)) for i in range(budget)})
    return [ends[i] for i in picks]


def computes_features(layer: Any) -> bool:
    """Whether ``layer``'s output is a feature of its own, so that a stage may end there.

    Not: a layer that is the identity at inference (Dropout, GaussianNoise, the
    ``Random*`` augmentations), input preprocessing (Rescaling, Normalization,
    Resizing: the input, rescaled), padding and cropping, ``Identity`` and a linear
    ``Activation``. (A 1 x 1 map, such as a squeeze-and-excitation branch, has no
    extent to draw either: :func:`stage_ends` leaves it out by its shape.)
    """
    import keras

    names = [*_NOT_FEATURES, *(n for n in dir(keras.layers) if n.startswith("Random"))]
    classes = tuple(c for c in (getattr(keras.layers, n, None) for n in names) if isinstance(c, type))
    if isinstance(layer, classes):
        return False
    return not (isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.linear)


def _resolution(entry: Any) -> tuple:
    shape = tuple(entry.shape[1:])
    channels_first = getattr(entry.layer, "data_format", None) == "channels_first"
    return shape[1:] if channels_first else shape[:-1]


def _catalog(model: Any, trace: Trace | None) -> list[_Entry]:
    """Every layer with its output shape, tracing the model once when the graph lacks it."""
    entries = []
    for path, layer, chain in walk(model):
        kind, shape = _symbolic_output(layer)
        entries.append(_Entry(path, layer, chain, kind, shape))
    unknown = [e for e in entries if e.kind == "unknown"]
    if unknown and trace is not None:
        traced = trace([e.layer for e in unknown])
        for entry in unknown:
            if id(entry.layer) not in traced:
                entry.kind = "unused"
            elif isinstance(traced[id(entry.layer)], tuple):
                entry.kind, entry.shape = "tensor", traced[id(entry.layer)]
            else:
                entry.kind = "multi"
    return entries


def _match(item: Any, everything: list[_Entry], by_path: dict, *, explicit: bool,
           trace: Trace | None) -> list[_Entry]:
    """Layers that one item of ``layers=`` names."""
    paths = [e.path for e in everything]
    if isinstance(item, str):
        if item in by_path:
            return [_drawable(by_path[item])]
        by_name = [e for e in everything if e.layer.name == item]
        if len(by_name) > 1:
            raise ValueError(
                f"Layer name {item!r} is ambiguous: it names {[e.path for e in by_name]}. "
                "Use the full path."
            )
        if not by_name:
            raise ValueError(f"No such layer: {item!r}. Existing layers are: {paths}.{suggest(item, paths)}")
        return [_drawable(by_name[0])]
    if isinstance(item, re.Pattern):
        found = [
            e for e in everything
            if item.fullmatch(e.path) and not is_container(e.layer) and _spatial(e)
        ]
        if not found:
            raise ValueError(
                f"No spatial layer path matches '{item.pattern}'. Existing layers are: "
                f"{paths}.{_hint(everything, trace)}"
            )
        return found
    if isinstance(item, type):
        found = [e for e in everything if isinstance(e.layer, item) and (explicit or _spatial(e))]
        if not found:
            classes = sorted({type(e.layer).__name__ for e in everything})
            raise ValueError(
                f"No spatial layer of class {item.__name__} in the model. "
                f"Layer classes present: {classes}.{_hint(everything, trace)}"
            )
        return found if not explicit else [_drawable(e) for e in found]
    for entry in everything:
        if entry.layer is item:
            return [_drawable(entry)]
    if hasattr(item, "name") and hasattr(item, "call"):
        raise ValueError(
            f"Layer object {item.name!r} ({type(item).__name__}) is not part of this model. "
            f"Existing layers are: {paths}."
        )
    raise TypeError(
        f"Cannot choose layers with {item!r} ({type(item).__name__}). {ACCEPTED}"
    )


ACCEPTED = (
    "Accepted: None, '*', a layer name or path (str), a keras Layer, a Layer class, a compiled "
    "re.Pattern, a list of these, or a dict {display_name: one of these}."
)


def check_spec(spec: Any) -> None:
    """Type checks of ``layers=`` that need no model; names are checked when training starts."""
    if spec is None:
        return
    items = list(spec.values()) if isinstance(spec, Mapping) else (
        list(spec) if _is_sequence(spec) and not hasattr(spec, "call") else [spec]
    )
    for item in items:
        if not (isinstance(item, (str, type, re.Pattern)) or hasattr(item, "call")):
            raise TypeError(f"Cannot choose layers with {item!r} ({type(item).__name__}). {ACCEPTED}")


def _drawable(entry: _Entry) -> _Entry:
    if entry.kind == "unused":
        raise ValueError(
            f"Layer {entry.path!r} ({type(entry.layer).__name__}) was not called when the model "
            "ran on the probes, so it has no output to draw. Watch a layer that the model's "
            "call() uses."
        )
    if entry.kind == "multi":
        what = "a model" if _is_model(entry.layer) else "a layer"
        raise ValueError(
            f"{entry.path!r} is {what} with several outputs; choose a layer inside it or one "
            "with a single output."
        )
    rank = None if entry.shape is None else len(entry.shape) - 1
    if rank is not None and not 1 <= rank <= 4:
        raise ValueError(
            f"Layer {entry.path!r} ({type(entry.layer).__name__}) has output shape "
            f"{entry.shape}: rank {rank} per sample cannot be drawn. Accepted: layers whose "
            "output per sample has rank 1 to 4 (Dense, Conv1D/2D/3D, pooling, ...)."
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


def _children(container: Any) -> list[tuple[str, Any]]:
    """``(path segment, layer)`` of the layers directly inside ``container``.

    A model's layers go by their names, which saving keeps. Inside a
    user-written composite layer, a layer whose name Keras made up
    (``conv2d_6``: the number changes each time the layer is built again in a
    process, a reload included) goes by the attribute that holds it
    (``self.conv`` -> ``conv``, ``self.convs[1]`` -> ``convs.1``), so its tags
    stay the same across a reload; a layer given a ``name=`` keeps that name.
    """
    if _is_model(container):
        return [(layer.name, layer) for layer in container.layers]
    return [
        (segment if segment is not None and _generated_name(layer) else layer.name, layer)
        for segment, layer in _held(container)
    ]


def _held(container: Any) -> list[tuple[str | None, Any]]:
    """``(attribute, layer)`` of each Keras layer held directly by ``container``'s public
    attributes (``self.convs[1]`` -> ``convs.1``; ``None`` inside a dict), in the order
    they were assigned.

    Keras 3 lists a layer's sub-layers publicly only for models (``layers``), so this
    reads the attributes the user's code set, as Keras' own tracking does. With the torch
    backend, layers are torch modules and torch keeps a sub-layer out of ``vars()``, in
    the registry ``named_children()`` lists (single attributes, listed first there).
    A sub-layer held under an underscored attribute is not seen.
    """
    import keras

    try:
        attributes = dict(vars(container))
    except TypeError:
        return []  # no attributes of its own
    children = getattr(container, "named_children", None)
    if callable(children):
        attributes = {**dict(children()), **attributes}
    found: list[tuple[str | None, Any]] = []
    seen: set[int] = set()
    for attribute, value in attributes.items():
        if attribute.startswith("_"):
            continue
        if isinstance(value, (list, tuple)):
            items = [(f"{attribute}.{i}", item) for i, item in enumerate(value)]
        elif isinstance(value, dict):
            items = [(None, item) for item in value.values()]
        else:
            items = [(attribute, value)]
        for segment, item in items:
            if isinstance(item, keras.Layer) and id(item) not in seen:
                seen.add(id(item))
                found.append((segment, item))
    return found


def _generated_name(layer: Any) -> bool:
    """Whether ``layer.name`` is one Keras made up from the class name (``conv2d``, ``conv2d_6``)."""
    stem = re.sub(r"\W+", "", type(layer).__name__)
    stem = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", stem)
    stem = re.sub(r"([a-z])([A-Z])", r"\1_\2", stem).lower()
    return re.fullmatch(re.escape(stem) + r"(_\d+)?", layer.name) is not None


def is_container(layer: Any) -> bool:
    """A sub-model, or a user-written layer holding layers of its own.

    Keras' own composite layers (Bidirectional, MultiHeadAttention, ...) stay
    leaves: their inner layers are an implementation detail.
    """
    if _is_model(layer):
        return True
    if type(layer).__module__.split(".")[0] == "keras":
        return False
    return bool(_held(layer))


def _is_input_layer(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _is_model(layer: Any) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "fit")


def _is_sequence(spec: Any) -> bool:
    return isinstance(spec, Iterable) and not isinstance(spec, (str, bytes, Mapping, type))


def _symbolic_output(layer: Any) -> tuple[str, tuple | None]:
    """What the layer's symbolic ``output`` says: ("tensor", shape), ("multi", None) or ("unknown", None).

    A shape with a free dimension other than the batch axis counts as unknown:
    the probes fix it, and the trace finds it.
    """
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        # a subclassed model's layer, or one Keras has not connected to a graph
        return "unknown", None
    if isinstance(output, (list, tuple, dict)):
        return "multi", None
    shape = tuple(output.shape)
    if any(d is None for d in shape[1:]):
        return "unknown", None
    return "tensor", shape


def _spatial(entry: Any) -> bool:
    return entry.kind == "tensor" and entry.shape is not None and 3 <= len(entry.shape) <= 5


def _describe(everything: list[_Entry]) -> str:
    return ", ".join(
        f"{e.path} {e.shape if e.kind == 'tensor' else e.kind}" for e in everything
    ) or "(no layers)"


def _hint(everything: list[_Entry], trace: Trace | None) -> str:
    if any(e.kind == "unknown" for e in everything) and trace is None:
        return (
            " This model has no symbolic graph (subclassed, or not built from an Input), so "
            "output shapes are unknown; pass probes to learn them by running the model once."
        )
    return ""
