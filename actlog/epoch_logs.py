"""Keras' epoch logs (loss, metrics, learning rate) as TensorBoard scalars, without TensorFlow.

Keras' ``TensorBoard`` callback needs TensorFlow, so a model trained on JAX or
PyTorch has no loss curves. :class:`EpochLogs` writes what that callback writes
at the end of each epoch, in the same places and under the same names, so
TensorBoard's Scalars tab shows the same curves on every backend:

- run ``LOG_DIR/train``: ``epoch_<name>`` for every log that does not start with
  ``val_`` (``epoch_loss``, ``epoch_accuracy``, ...), and ``epoch_learning_rate``
  when the model's optimizer has one;
- run ``LOG_DIR/validation``: ``epoch_<name>`` for every ``val_<name>`` log;
- step: the epoch index Keras passes to ``on_epoch_end`` (0 for the first
  epoch, ``initial_epoch`` honoured), as Keras' callback does;
- values: float32 scalar tensors with TensorBoard's scalar metadata, as
  ``tf.summary.scalar`` writes them.

It imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata

from actlog.faults import Faults, classify
from actlog.storage import Storage
from actlog.writer import RunWriter

TRAIN_RUN = "train"
VALIDATION_RUN = "validation"
"""The run directories Keras' ``TensorBoard`` callback writes its epoch logs to."""

_SCALAR = scalar_metadata.create_summary_metadata("", "")


def check_option(value: Any) -> bool | None:
    """``epoch_logs=``: ``None`` (on where the backend is not TensorFlow), ``True`` or ``False``."""
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(
        "epoch_logs must be None (write Keras' epoch logs where the backend is not TensorFlow, "
        f"whose own TensorBoard callback writes them), True or False; received {value!r} "
        f"({type(value).__name__})."
    )


def enabled(option: bool | None, backend: str) -> bool:
    """Whether ``epoch_logs=option`` writes on the Keras backend ``backend``."""
    return backend != "tensorflow" if option is None else option


def learning_rate(model: Any) -> float | None:
    """The optimizer's learning rate now, as Keras' ``TensorBoard`` logs it (``model``: a
    callback's ``self.model``, JAX's state synced, as Keras does)."""
    import keras

    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - an optimizer without a readable rate: no curve for it
        return None


def scalars(logs: Mapping[str, Any], learning_rate: float | None) -> dict[str, dict[str, float]]:
    """``{run: {tag: value}}`` for one epoch's logs, as Keras' ``TensorBoard`` names them.

    Logs that are not a real number (a metric returning an array) are left out,
    as ``tf.summary.scalar`` could not write them either.
    """
    runs: dict[str, dict[str, float]] = {TRAIN_RUN: {}, VALIDATION_RUN: {}}
    for name, value in logs.items():
        number = _number(value)
        if number is None:
            continue
        if name.startswith("val_"):
            runs[VALIDATION_RUN]["epoch_" + name[len("val_"):]] = number
        else:
            runs[TRAIN_RUN]["epoch_" + name] = number
    if learning_rate is not None:
        runs[TRAIN_RUN]["epoch_learning_rate"] = learning_rate
    return {run: tags for run, tags in runs.items() if tags}


def summary(tags: Mapping[str, float]) -> bytes:
    """The serialized ``Summary`` of float32 scalars by tag (``tf.summary.scalar``'s format)."""
    result = summary_pb2.Summary()
    for tag, number in tags.items():
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape={}, float_val=[np.float32(number)]
        )
        value = result.value.add(tag=tag, tensor=tensor)
        value.metadata.CopyFrom(_SCALAR)
    return result.SerializeToString()


class EpochLogs:
    """Writes one training run's epoch logs under ``log_dir`` (nothing until the first epoch ends).

    Each epoch is one small record per run, appended on the training thread; a
    failing store is a logging fault like any other (counted, warned once).
    """

    def __init__(self, storage: Storage, log_dir: str, faults: Faults) -> None:
        self._faults = faults
        self._writers = {
            run: RunWriter(storage, storage.join(log_dir, run),
                           on_reopen=lambda message: faults.report("removed", message))
            for run in (TRAIN_RUN, VALIDATION_RUN)
        }

    def write(self, epoch: int, logs: Mapping[str, Any] | None, learning_rate: float | None) -> None:
        for run, tags in scalars(logs or {}, learning_rate).items():
            try:
                self._writers[run].write(epoch, summary(tags))
            except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
                self._faults.report(*classify(err, f"the epoch logs of epoch {epoch} ({run})"), err)

    def close(self) -> None:
        for run, writer in self._writers.items():
            try:
                writer.close()
            except Exception as err:  # noqa: BLE001
                self._faults.report(*classify(err, f"the end of the {run} epoch logs"), err)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    array = np.asarray(value) if hasattr(value, "__array__") else None
    if array is not None and array.shape == () and np.issubdtype(array.dtype, np.number):
        return float(array)
    return None
