"""TensorFlow: the probe function is one ``tf.function`` with a fixed input signature.

On the host, large parts run their forward passes eagerly, and reductions compiled
on their own branch at run time on whether a layer has NaN or Inf (:class:`_HostOps`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from actlog.backends import Backend, Compiled, Counted

_MINIMUM = (2, 16)


def _check_version() -> None:
    found = tuple(int(part) for part in tf.__version__.split(".")[:2])
    if found < _MINIMUM:
        raise ImportError(
            f"actlog needs TensorFlow >= 2.16 with Keras 3; found {tf.__version__}. Install one "
            "TensorFlow with `pip install 'keras-actlog[tensorflow]'` or `'keras-actlog[tensorflow-cpu]'`."
        )


class _HostOps:
    """``keras.ops``, and on the host :meth:`all_finite` as a tensor the reductions branch on.

    Grappler does not fuse element-wise ops on the CPU: each NaN mask of the reductions
    is a full-size temporary, as large as the layer's activations. One sum
    says whether the layer has any NaN or Inf; the unmasked branch gives the same bytes.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(keras.ops, name)

    @staticmethod
    def all_finite(x: Any) -> Any:
        return tf.math.is_finite(tf.reduce_sum(x))


_HOST_OPS = _HostOps()


class _Function(Compiled):
    def __init__(self, fn: Callable[..., Any], args: tuple, eager: bool) -> None:
        self._counted = Counted(fn)
        if eager:
            self._call = self._counted
            return
        signature = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), list(args))
        function = tf.function(self._counted, input_signature=signature, reduce_retracing=False)
        # Trace now: a model that rejects the probes fails before training starts.
        function.get_concrete_function()
        self._call = function

    @property
    def traces(self) -> int:
        return 0 if self._call is self._counted else self._counted.count

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)


class TensorFlowBackend(Backend):
    name = "tensorflow"

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True, large: bool = False) -> Compiled:
        # Each traced function keeps its graph and, once run, its instantiated runtime:
        # megabytes per large part, for no speed on the host, where the convolutions are large.
        return _Function(fn, args, eager or (large and not self._accelerated()))

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        @tf.function(reduce_retracing=False)
        def step(x: Any, *args: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x, *args)
            return value, tape.gradient(value, x)

        return step

    def fetch(self, tree: Any) -> Callable[[], Any]:
        # Ops on a GPU run asynchronously; .numpy() in the background waits for them.
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), tree)

    @property
    def ops(self) -> Any:
        return keras.ops if self._accelerated() else _HOST_OPS

    def _accelerated(self) -> bool:
        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))

    def is_chief(self, model: Any) -> bool:
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        try:
            return bool(strategy.extended.should_checkpoint)
        except AttributeError:
            return True


_check_version()
BACKEND = TensorFlowBackend()
