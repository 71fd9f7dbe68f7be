"""The probe function: the watched layers' outputs for the probes, built once.

Two ways to reach a layer's output, chosen once per training run:

- **symbolic**: every watched layer sits in the model's own functional graph
  (Sequential and functional models). One multi-output ``keras.Model`` from
  the model's inputs to those outputs shares the training weights and stops
  at the deepest watched layer.
- **capture**: anything else: a layer inside a nested backbone (at any
  depth), a subclassed model with no symbolic graph, a layer inside a
  user-written composite layer, a ``Sequential`` never given an input shape.
  The whole model runs, and the watched layers' ``call`` is wrapped while the
  function is traced, so the traced graph returns their outputs. The wrapper
  is removed before training starts; the traced graph keeps the taps.

A layer the model calls more than once (a shared layer) is seen at its first
call on both paths (Keras' ``layer.output`` is its first call's output too).

Either way the result is one ``tf.function`` with a fixed input signature,
traced once here, run in inference mode (``training=False``); its outputs are
cast to float32 (``mixed_float16`` layers compute in float16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from actlog.layers import Watched


class ProbeFunction:
    """``fn()`` -> one float32 numpy array ``(k, ...)`` per watched layer.

    Args:
        model: the model being trained (any kind; see the module docstring).
        watched: the layers to return, from :func:`actlog.layers.resolve`.
        probes: the probe batch: an array, or a list / dict of arrays for a
            multi-input model (a dict is matched to inputs by name).

    Attributes:
        strategy: ``"symbolic"`` or ``"capture"``.
        output_shapes: per-sample output shape of each watched layer.
    """

    def __init__(self, model: Any, watched: Sequence[Watched], probes: Any) -> None:
        self.watched = list(watched)
        self.probes = _as_tensors(model, probes)
        signature = tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype), self.probes
        )
        self.strategy = "symbolic"
        sub_model = _symbolic_model(model, self.watched)
        taps: contextlib.AbstractContextManager = contextlib.nullcontext()
        if sub_model is None:
            self.strategy = "capture"
            taps = _Taps([w.layer for w in self.watched])
            run = _capture_runner(model, self.watched, taps)
        else:

            def run(x: Any) -> list:
                outputs = sub_model(x, training=False)
                return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

        def probe(x: Any) -> list:
            return [tf.cast(y, tf.float32) for y in run(x)]

        self._fn = tf.function(probe, input_signature=[signature], reduce_retracing=False)
        # Capture: the taps exist only while this one trace runs; the traced
        # graph keeps them, and training never sees a wrapped layer.
        with taps:
            try:
                self._concrete = self._fn.get_concrete_function()
            except _NotCalled:
                raise
            except Exception as err:  # the user's model rejected the probes
                raise ValueError(
                    f"Running the model on the probes failed: probes have shape "
                    f"{_shapes(self.probes)}, the model expects {_expected(model)}. "
                    f"Keras said: {err}"
                ) from err
        self.output_shapes = [tuple(o.shape[1:]) for o in self._concrete.outputs]

    def __call__(self) -> list[np.ndarray]:
        # The concrete function never retraces: in capture mode a retrace
        # would run without the taps.
        return [t.numpy() for t in self._concrete(self.probes)]

    @property
    def tracing_count(self) -> int:
        """How many times the function has been traced (1 after construction)."""
        return self._fn.experimental_get_tracing_count()


def trace_outputs(model: Any, layers: Sequence[Any], probes: Any) -> dict[int, Any]:
    """Run ``model`` once on ``probes`` with ``layers`` tapped; what each returned.

    Used to learn output shapes when the model has no symbolic graph
    (subclassed models). The run is eager and in inference mode; it also
    builds a model that has not been built yet.

    Returns:
        ``{id(layer): shape}`` with the full output shape (batch axis first)
        for a layer that returned one tensor, ``{id(layer): None}`` for one
        that returned several; layers the model never called are absent.
    """
    tensors = _as_tensors(model, probes)
    taps = _Taps(layers)
    with taps:
        try:
            model(tensors, training=False)
        except Exception as err:
            raise ValueError(
                f"Running the model on the probes failed: probes have shape {_shapes(tensors)}, "
                f"the model expects {_expected(model)}. Keras said: {err}"
            ) from err
    return {
        key: tuple(out.shape) if hasattr(out, "shape") else None
        for key, out in taps.outputs.items()
    }


def _as_tensors(model: Any, probes: Any) -> Any:
    """Probes as constant tensors in the dtype of the model's inputs, shape-checked."""
    inputs = getattr(model, "inputs", None) or None
    if inputs is not None and len(inputs) > 1:
        names = [_input_name(t) for t in inputs]
        if isinstance(probes, Mapping):
            missing = [n for n in names if n not in probes]
            if missing:
                raise ValueError(
                    f"probes is a dict with keys {sorted(probes)}, but the model's inputs are "
                    f"named {names}; missing {missing}."
                )
            ordered = [probes[n] for n in names]
        elif isinstance(probes, (list, tuple)):
            if len(probes) != len(inputs):
                raise ValueError(
                    f"The model has {len(inputs)} inputs {names}, but probes is a "
                    f"{type(probes).__name__} of {len(probes)} arrays."
                )
            ordered = list(probes)
        else:
            raise ValueError(
                f"The model has {len(inputs)} inputs {names}; pass probes as a list of "
                f"{len(inputs)} arrays or a dict keyed by input name, not a single array of "
                f"shape {np.shape(probes)}."
            )
        for array, tensor in zip(ordered, inputs, strict=True):
            _check_shape(array, tensor)
        tensors = [tf.constant(a, dtype=_dtype(t, a)) for a, t in zip(ordered, inputs, strict=True)]
        return dict(zip(names, tensors, strict=True)) if isinstance(probes, Mapping) else tensors
    if inputs is not None:
        if isinstance(probes, (list, tuple, Mapping)):
            if len(probes) != 1:
                raise ValueError(
                    f"The model has one input of shape {tuple(inputs[0].shape)}, but probes is a "
                    f"{type(probes).__name__} of {len(probes)} arrays."
                )
            probes = next(iter(probes.values())) if isinstance(probes, Mapping) else probes[0]
        _check_shape(probes, inputs[0])
        return tf.constant(probes, dtype=_dtype(inputs[0], probes))
    return tf.nest.map_structure(
        lambda a: tf.constant(a, dtype=tf.float32 if a.dtype.kind == "f" else a.dtype), probes
    )


def _check_shape(array: np.ndarray, tensor: Any) -> None:
    expected = tuple(tensor.shape)[1:]
    received = tuple(array.shape)[1:]
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received, strict=True)
    )
    if not fits:
        shown = "(k, " + ", ".join("None" if e is None else str(e) for e in expected) + ")"
        raise ValueError(
            f"probes do not fit the model's input {_input_name(tensor)!r}: received probes of "
            f"shape {tuple(array.shape)}, the input accepts {shown} (k probes)."
        )


def _dtype(tensor: Any, array: np.ndarray) -> tf.DType:
    dtype = getattr(tensor, "dtype", None)
    return tf.as_dtype(dtype) if dtype is not None else tf.as_dtype(array.dtype)


def _input_name(tensor: Any) -> str:
    name = getattr(tensor, "name", "input")
    return name.split(":")[0]


def _shapes(probes: Any) -> Any:
    return tf.nest.map_structure(lambda t: tuple(t.shape), probes)


def _expected(model: Any) -> Any:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return "an input the model's call() accepts"
    return [tuple(t.shape) for t in inputs]


def _symbolic_model(model: Any, watched: Sequence[Watched]) -> Any:
    """A multi-output keras.Model over the model's own graph, or None when impossible."""
    import keras

    if any(w.chain for w in watched) or not getattr(model, "inputs", None):
        return None
    try:
        outputs = [w.layer.output for w in watched]
        if any(isinstance(o, (list, tuple, dict)) for o in outputs):
            return None
        return keras.Model(model.inputs, outputs)
    except (ValueError, AttributeError, RuntimeError):
        # multiple inbound nodes, a subclassed model, or a graph Keras cannot cut
        return None


class _NotCalled(ValueError):
    """A watched layer did not run when the model ran on the probes."""


class _Taps:
    """While active, each layer's ``call`` also records its output (first call wins).

    The wrapper is set on the instance with ``object.__setattr__`` so Keras'
    attribute tracking never sees it, and removed on exit. A layer the model
    calls more than once (a shared layer) is recorded at its first call.
    """

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers = list(layers)
        self.outputs: dict[int, Any] = {}
        self._patched: list[Any] = []

    def __enter__(self) -> _Taps:
        self.outputs.clear()
        for layer in self.layers:
            if id(layer) in {id(p) for p in self._patched}:
                continue
            original = layer.call

            def call(*args: Any, _original: Any = original, _key: int = id(layer), **kwargs: Any):
                out = _original(*args, **kwargs)
                self.outputs.setdefault(_key, out)
                return out

            object.__setattr__(layer, "call", call)
            self._patched.append(layer)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self._patched:
            object.__delattr__(layer, "call")
        self._patched.clear()


def _capture_runner(model: Any, watched: Sequence[Watched], taps: _Taps) -> Any:
    def run(x: Any) -> list:
        taps.outputs.clear()
        model(x, training=False)
        missing = [w.path for w in watched if id(w.layer) not in taps.outputs]
        if missing:
            raise _NotCalled(
                f"Layers {missing} were not called when the model ran on the probes, so their "
                "outputs cannot be captured. Watch layers that the model's call() uses."
            )
        outputs = []
        for w in watched:
            out = taps.outputs[id(w.layer)]
            if isinstance(out, (list, tuple)):
                out = out[0]
            elif isinstance(out, Mapping):
                out = next(iter(out.values()))
            outputs.append(out)
        return outputs

    return run
