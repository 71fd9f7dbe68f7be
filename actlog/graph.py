"""A symbolic model's graph, read through Keras' public API only.

Keras 3 has no public way to walk a graph node by node. What it does give
publicly: a model's ``layers``, ``inputs`` and ``outputs``, and for every
operation the tensors of its *first* call (``keras.Operation``'s ``input`` and
``output`` properties). A model overrides ``input``/``output`` with its own
inner graph's ends; the base class's property still gives the tensors of its
first call in the enclosing graph, so a nested model is one step like a layer.

So a graph here maps each tensor to the first call that made it. A tensor
made by a later call of a shared layer (or by a layer first called in another
model) is not in the map: the callers then fall back to what needs no graph
(a measured receptive field, parts that each start from the probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras


@dataclass(eq=False)
class Call:
    """The first call of ``op`` (``None`` for a model input) and its flat input tensors."""

    op: Any
    inputs: list[Any]


class Graph:
    """``model``'s tensors, each with the first call that made it."""

    def __init__(self, model: Any) -> None:
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)
        self._made: dict[int, tuple[Call, int]] = {id(t): (Call(None, []), 0) for t in self.inputs}
        for op in model.layers:
            try:
                inputs, outputs = first_call(op)
            except (AttributeError, IndexError, ValueError, RuntimeError):
                continue  # never called: makes nothing here
            call = Call(op, inputs)
            for i, tensor in enumerate(outputs):
                self._made.setdefault(id(tensor), (call, i))

    def producer(self, tensor: Any) -> tuple[Call, int]:
        """The call that made ``tensor`` and which of its outputs ``tensor`` is; ``KeyError``
        where no first call in this graph made it (see module docstring)."""
        return self._made[id(tensor)]


def first_call(op: Any) -> tuple[list[Any], list[Any]]:
    """Flat input and output tensors of ``op``'s first call, a nested model's included."""
    return (keras.tree.flatten(keras.Operation.input.fget(op)),
            keras.tree.flatten(keras.Operation.output.fget(op)))
