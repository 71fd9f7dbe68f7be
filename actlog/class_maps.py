"""Class activation maps (optional): where the model looks for a probe's class, epoch by epoch.

Grad-CAM (Selvaraju et al., ICCV 2017) of one watched convolution ``A`` for each
probe: the gradient of the probe's class score with respect to ``A``, averaged
over the map's positions, weighs ``A``'s channels; the map is
``ReLU(sum_c w_c A_c)``, resized to the probe image and laid over it.

The class score is the *logit* where the model's output layer ends in a
softmax or sigmoid that Keras' public API lets us step around (a ``Softmax`` or
``Activation`` layer: its input; a ``Dense`` with that activation: its kernel
and bias applied to its input); otherwise the model's output itself (the
manifest entry's ``score`` says which).

The model's functional graph is cut at ``A`` (:func:`actlog.segments.cut`): the
first segment runs the probes to ``A`` (and any tensor a skip connection carries
past it), the second from there to the scores. Per event, on the training
thread: the first segment (compiled once, like the probe function; with
``classes="predicted"`` the scores too, for their argmax), the gradient of the
summed class scores with respect to ``A`` through the backend's own
differentiation (:meth:`actlog.backends.Backend.gradient`, compiled once where
the backend compiles), and the map (compiled once). So an event costs about one
more forward pass to ``A`` and a forward and backward pass of the rest. Only
the ``(k, h, w)`` maps and the classes are copied; the pictures are drawn in
the background. A subclassed model (no graph to cut) or a layer
inside a nested model is refused before the first epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from actlog import grid, metadata, probe, probes, segments
from actlog.backends import Backend, Counted
from actlog.event import LayerPlan
from actlog.graph import Graph

CLASSES = ("label", "predicted")
"""The named ways of choosing each probe's class; a list of ints gives them one by one."""

ALPHA = 0.6
"""Opacity of the colour map where the map is at its maximum (it fades to 0 where the map is 0)."""

CMAP = "viridis"
"""The colour map of the overlay."""

MIN_SIDE = 96
"""Each picture is upscaled (nearest neighbour for the probe, bilinear for the map) until its
short side reaches this."""


@dataclass(frozen=True)
class ClassMapsOptions:
    """The validated ``cam`` options."""

    layer: str
    classes: str | tuple[int, ...]


def check_options(layer: Any, classes: Any) -> ClassMapsOptions:
    """The arguments of :class:`actlog.ClassMaps`, checked (what needs no model)."""
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"ClassMaps layer must be a watched layer's display name (str); received {layer!r}.")
    accepted = f"one of {list(CLASSES)} or a sequence of class indices (ints >= 0), one per probe"
    if isinstance(classes, str):
        if classes not in CLASSES:
            raise ValueError(f"ClassMaps classes must be {accepted}; received {classes!r}.")
        return ClassMapsOptions(layer, classes)
    try:
        values = list(classes)
    except TypeError:
        raise TypeError(f"ClassMaps classes must be {accepted}; received {classes!r}.") from None
    if not values or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0
                             for c in values):
        raise ValueError(f"ClassMaps classes must be {accepted}; received {classes!r}.")
    return ClassMapsOptions(layer, tuple(int(c) for c in values))


def _label_classes(labels: Any, count: int, classes: int) -> np.ndarray:
    """Class indices ``(k,)`` from labels as ``fit`` takes them: indices ``(k,)`` / ``(k, 1)``
    or one-hot (probability) rows ``(k, classes)``."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        y = np.argmax(y, axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != count or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise ValueError(
            f"cam=ClassMaps(classes='label') reads the probes' labels as class indices (k,) or "
            f"one-hot rows (k, {classes}) for k={count} probes; received labels of shape "
            f"{np.shape(labels)} and dtype {np.asarray(labels).dtype}."
        )
    return y.astype(np.int64)


def _is_squash(activation: Any) -> bool:
    return activation in (keras.activations.softmax, keras.activations.sigmoid)


class ClassMapsPass:
    """Grad-CAM of one watched layer for one training run (see the module docstring).

    Args:
        model: the model being trained.
        data: the probes as copied (an ``(x, y)`` tuple carries the labels).
        plans: the watched layers' plans.
        options: the logger's :class:`ClassMapsOptions`.
        backend: the current backend.

    Raises:
        ValueError: a layer that is not watched or has no spatial map; a model
            without a graph to cut or whose output is not class scores; classes
            that do not fit the probes.
    """

    def __init__(self, model: Any, data: Any, plans: Sequence[LayerPlan], options: ClassMapsOptions,
                 backend: Backend) -> None:
        self.options = options
        names = [p.name for p in plans]
        if options.layer not in names:
            raise ValueError(f"cam names layer {options.layer!r}, which is not watched; watched: {names}.")
        self.plan = plans[names.index(options.layer)]
        shape = tuple(self.plan.output_shape)
        if len(shape) != 3 or self.plan.layout.tokens is not None or self.plan.view != "output":
            raise ValueError(
                f"cam needs a layer with a spatial map (H, W, channels), such as a convolution; "
                f"layer {options.layer!r} ({self.plan.layer_class}) outputs {shape} per sample."
            )
        specs = probe.input_specs(model)
        if not specs or not probe.has_call(model):
            raise ValueError(
                f"cam needs a functional or Sequential model to cut at {options.layer!r}; model "
                f"{model.name!r} ({type(model).__name__}) has no symbolic graph (a subclassed model)."
            )
        fitted = probes.fit_to_model(data, specs)
        found = probes.image_input(fitted, specs)
        if found is None:
            raise ValueError("cam needs a model input that is an image (H, W, c) with c in 1, 3, 4.")
        self.images = [grid.to_image(x) for x in found[1]]
        self.count = probes.count_of(fitted)
        self._inputs = probe.to_tensors(model, fitted)

        outputs = list(model.outputs)
        out_shape = tuple(outputs[0].shape) if len(outputs) == 1 else ()
        if len(out_shape) != 2 or not out_shape[1] or out_shape[1] < 2:
            raise ValueError(
                f"cam needs a model whose output is class scores (batch, classes) with at least 2 "
                f"classes; model {model.name!r} outputs {[tuple(o.shape) for o in outputs]}."
            )
        self.classes_count = int(out_shape[1])
        score_tensor, self._dense, self.score = self._score(model, outputs[0])
        self._fixed = self._fixed_classes(data, len(specs))

        layer = self._layer(model)
        # A Sequential model has no ``input`` of its own: the functional model over its graph has
        # (the same layers and weights).
        cut = segments.cut(keras.Model(model.inputs, model.outputs), [[layer.output], [score_tensor]])
        if cut is None or layer.output.shape[1:] != tuple(self.plan.output_shape):
            raise ValueError(
                f"cam cannot cut model {model.name!r} at layer {options.layer!r} through Keras' public "
                "API: it must be a layer of the model's own functional graph (not inside a nested "
                "model, not a shared layer's later call)."
            )
        self._first, self._head = cut
        # A among the head's inputs (a skip connection may carry other tensors past it)
        if self._first.watched[0] not in self._first.carry:
            raise ValueError(f"cam: the model's output does not depend on layer {options.layer!r}.")
        self._at = self._first.carry.index(self._first.watched[0])

        fixed = keras.ops.convert_to_tensor(self._fixed)
        # A plain function: PyTorch's tracer counts a bound method's ``self`` among its arguments.
        self._forward = probe.compile_function(
            backend, lambda inputs, fixed: self._run_forward(inputs, fixed), model,
            (self._inputs, fixed), model,
        )
        self._counted = Counted(self._objective)
        self._step = backend.gradient(self._counted, model)
        spec = keras.KerasTensor((self.count, *layer.output.shape[1:]), dtype="float32")
        self._combine = backend.compile(self._map, None, (spec, spec), eager=False, replay=False)
        self._backend = backend
        self.scale = max(1, -(-MIN_SIDE // min(self.images[0].shape[:2])))

    # -- setup ------------------------------------------------------------------------

    def _layer(self, model: Any) -> Any:
        try:
            return model.get_layer(self.plan.path)
        except ValueError:
            raise ValueError(
                f"cam needs layer {self.options.layer!r} (path {self.plan.path!r}) in the model's own "
                f"graph; layers of model {model.name!r}: {[x.name for x in model.layers]}."
            ) from None

    def _score(self, model: Any, output: Any) -> tuple[Any, Any, str]:
        """The tensor whose entries are differentiated, the ``Dense`` layer still to apply to it
        (or None), and ``"logit"`` or ``"output"``."""
        try:
            call, _ = Graph(model).producer(output)
        except KeyError:
            return output, None, "output"
        last = call.op
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_squash(last.activation)
        ):
            return call.inputs[0], None, "logit"
        if isinstance(last, keras.layers.Dense) and _is_squash(last.activation) and len(call.inputs) == 1:
            return call.inputs[0], last, "logit"
        return output, None, "output"

    def _fixed_classes(self, data: Any, inputs: int) -> np.ndarray:
        """One-hot ``(k, classes)`` of the given classes (zeros for ``"predicted"``)."""
        classes = self.options.classes
        if classes == "predicted":
            return np.zeros((self.count, self.classes_count), np.float32)
        if classes == "label":
            labels = probes.labels_of(data, inputs)
            if labels is None:
                raise ValueError(
                    "cam=ClassMaps(classes='label') needs labelled probes: pass probes as an (x, y) "
                    "tuple, or a dataset of (x, y) batches (as actlog.Probes(dataset, labels=True)); "
                    "or use classes='predicted' or a list of class indices."
                )
            chosen = _label_classes(labels, self.count, self.classes_count)
        else:
            if len(classes) != self.count:
                raise ValueError(
                    f"cam classes names {len(classes)} classes; accepted: one per probe ({self.count})."
                )
            chosen = np.asarray(classes, np.int64)
        wrong = [int(c) for c in chosen if not 0 <= c < self.classes_count]
        if wrong:
            raise ValueError(
                f"cam classes {wrong} are not classes of the model, whose output has "
                f"{self.classes_count} (0..{self.classes_count - 1})."
            )
        return np.eye(self.classes_count, dtype=np.float32)[chosen]

    def manifest_entry(self) -> dict[str, Any]:
        """``{"cam": ...}`` for the manifest entry of the layer."""
        classes = self.options.classes
        return {"cam": {
            "classes": classes if isinstance(classes, str) else list(classes),
            "score": self.score, "scale": self.scale,
            "tags": [metadata.cam_tag(self.plan.name, i, self.count) for i in range(self.count)],
        }}

    # -- device half ------------------------------------------------------------------

    def _scores(self, carry: Sequence[Any]) -> Any:
        out, _ = self._head(list(carry))
        scores = keras.ops.cast(out[0], "float32")
        if self._dense is not None:
            scores = keras.ops.matmul(scores, keras.ops.cast(self._dense.kernel, "float32"))
            if self._dense.bias is not None:
                scores = scores + keras.ops.cast(self._dense.bias, "float32")
        return scores

    def _run_forward(self, inputs: Any, fixed: Any) -> dict[str, Any]:
        ops = keras.ops
        _, carry = self._first(inputs)
        if self.options.classes == "predicted":
            scores = self._scores(carry)
            # Not ops.one_hot: PyTorch's reads the largest index in Python, which no trace can keep.
            best = ops.expand_dims(ops.argmax(scores, axis=-1), -1)
            every = ops.arange(self.classes_count, dtype=best.dtype)[None, :]
            fixed = ops.cast(ops.equal(every, best), "float32")
        return {"carry": [ops.cast(c, "float32") if i == self._at else c for i, c in enumerate(carry)],
                "onehot": fixed, "classes": ops.cast(ops.argmax(fixed, axis=-1), "int32")}

    def _objective(self, at: Any, others: list[Any], onehot: Any) -> Any:
        carry = list(others)
        carry.insert(self._at, at)
        return keras.ops.sum(self._scores(carry) * onehot)

    def _map(self, acts: Any, grads: Any) -> Any:
        ops = keras.ops
        acts = probe.channels_last(acts, self.plan.data_format)
        grads = probe.channels_last(grads, self.plan.data_format)
        weights = ops.mean(grads, axis=(1, 2), keepdims=True)
        return ops.relu(ops.sum(acts * weights, axis=-1))

    @property
    def traces(self) -> dict[str, int]:
        """Compilations of the three functions: the forward pass, the gradient (where the
        backend compiles it; PyTorch's autograd runs eagerly, one count per event), the map."""
        return {"forward": self._forward.traces, "gradient": self._counted.count,
                "map": self._combine.traces}

    def run(self) -> Any:
        """The training thread's half: ``() -> {"maps", "classes"}`` as numpy arrays."""
        out = self._forward(self._inputs, keras.ops.convert_to_tensor(self._fixed))
        carry = list(out["carry"])
        at = carry.pop(self._at)
        _, grads = self._step(at, carry, out["onehot"])
        maps = self._combine(at, grads)
        return self._backend.fetch({"maps": maps, "classes": out["classes"]})

    # -- host half --------------------------------------------------------------------

    def pictures(self, host: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The background half: tag -> uint8 picture of each probe's map over its image."""
        return {metadata.cam_tag(self.plan.name, i, self.count): overlay(image, m, self.scale)
                for i, (image, m) in enumerate(zip(self.images, host["maps"], strict=True))}


def resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D float array resized bilinearly (pixel centres aligned, edges clamped)."""
    def axis(size: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = np.clip((np.arange(new) + 0.5) * size / new - 0.5, 0, size - 1)
        low = np.floor(at).astype(np.intp)
        return low, np.minimum(low + 1, size - 1), at - low

    y0, y1, fy = axis(values.shape[0], height)
    x0, x1, fx = axis(values.shape[1], width)
    top = values[y0][:, x0] * (1 - fx) + values[y0][:, x1] * fx
    bottom = values[y1][:, x0] * (1 - fx) + values[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def overlay(image: np.ndarray, cam: np.ndarray, scale: int = 1) -> np.ndarray:
    """``cam`` (``(h, w)``, >= 0) scaled to [0, 1], resized to ``image`` (uint8 ``(H, W, c)``)
    upscaled ``scale`` times, and laid over it in :data:`CMAP`: uint8 ``(H*scale, W*scale, 3)``."""
    picture = image.repeat(scale, axis=0).repeat(scale, axis=1)[..., :3].astype(np.float64)
    if picture.shape[2] == 1:
        picture = np.repeat(picture, 3, axis=2)
    values = np.nan_to_num(np.asarray(cam, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = values.max() if values.size else 0.0
    values = values / top if top > 0 else np.zeros_like(values)
    values = resize(values, *picture.shape[:2])
    alpha = ALPHA * values[..., None]
    colour = grid.colorize(values, CMAP).astype(np.float64)
    return np.clip(np.rint((1 - alpha) * picture + alpha * colour), 0, 255).astype(np.uint8)
