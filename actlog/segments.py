"""Cutting a functional graph into consecutive segments, so that an event's parts share one pass.

When the watched layers' activations are too large for one compiled function
(see :data:`actlog.probe.PART_BYTES`), the probe function runs in parts. A part
that started from the probes again would redo the whole forward pass up to its
layers, and would hold its own compiled copy of every layer before them. Where
the model is a functional graph, each part instead starts where the previous one
stopped: segment ``g`` is a ``keras.Function`` from the tensors the rest of the
graph still needs after segment ``g - 1`` (its *frontier*: for ResNet50 the
block output and, mid-block, the shortcut) to its own watched outputs and the
next frontier (the first segment is a ``keras.Model`` over the runner's inputs).
Every layer runs once per event, and an event holds at most one segment's
activations and a frontier.

The cut follows one topological order of the graph (a depth-first walk from the
watched outputs, in the order they are watched); watched layers out of that
order, a tensor that no layer's first call made (a shared layer's later call:
Keras' public API walks first calls only, :mod:`actlog.graph`), or a graph
Keras cannot cut give ``None`` and the caller runs every part from the probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from actlog.graph import Call, Graph


@dataclass
class Segment:
    """One segment: ``model(inputs)`` -> its unique outputs.

    Attributes:
        model: from the segment's inputs (the runner's own for the first segment)
            to its unique outputs.
        first: whether this segment takes the probes (else the previous carry).
        watched: per watched layer of the segment, the index of its output.
        carry: per tensor of the next segment's inputs, the index of that tensor
            among this segment's outputs, or ``-1 - i`` for input ``i`` passed through.
    """

    model: Any
    first: bool
    watched: list[int]
    carry: list[int]

    def __call__(self, inputs: Any) -> tuple[list[Any], list[Any]]:
        """``(watched outputs, carry)`` for ``inputs`` (the probes, or the previous carry)."""
        out = self.model(inputs, training=False) if self.first else self.model(inputs)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        given = [] if self.first else list(inputs)
        return [out[i] for i in self.watched], [out[i] if i >= 0 else given[-1 - i] for i in self.carry]

    def specs(self, count: int) -> list[Any]:
        """The inputs of a later segment for ``count`` probes, as shapes and dtypes only
        (``KerasTensor``: what compiling needs, without allocating a frontier)."""
        return [keras.KerasTensor((count, *t.shape[1:]), dtype=t.dtype) for t in self.model.inputs]


def _order(graph: Graph, targets: Sequence[Any]) -> dict[int, int]:
    """Position of each call (by id) in a depth-first post-order from ``targets``, in order."""
    position: dict[int, int] = {}

    def producer(tensor: Any) -> Call:
        return graph.producer(tensor)[0]

    for target in targets:
        stack = [(producer(target), False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in position:
                continue
            if expanded:
                position[id(node)] = len(position)
                continue
            stack.append((node, True))
            stack.extend((producer(t), False) for t in reversed(node.inputs)
                         if id(producer(t)) not in position)
    return position


def _frontier(graph: Graph, targets: Sequence[Any], position: dict[int, int], cut: int) -> list[Any]:
    """The tensors made at or before position ``cut`` that computing ``targets`` needs."""
    found: dict[int, Any] = {}
    seen: set[int] = set()
    stack = list(reversed(targets))
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        node, _ = graph.producer(tensor)
        if position[id(node)] <= cut or not node.inputs:  # made before, or a model input
            found[id(tensor)] = tensor
        else:
            stack.extend(reversed(node.inputs))
    return list(found.values())


def cut(runner: Any, groups: Sequence[Sequence[Any]]) -> list[Segment] | None:
    """Segments computing ``groups`` (per part, the watched layers' symbolic outputs, in
    the runner's graph) one after the other; ``None`` where the graph cannot be cut so."""
    if len(groups) < 2:
        return None
    try:
        graph = Graph(runner)
        targets = [t for group in groups for t in group]
        position = _order(graph, targets)
        ends = [position[id(graph.producer(t)[0])] for t in targets]
        if ends != sorted(ends):
            return None  # watched out of topological order: a later part needs an earlier one
        cuts, count = [], 0
        for group in groups:
            count += len(group)
            cuts.append(ends[count - 1])
        inputs: list[Any] | None = None  # the runner's own for the first segment
        segments = []
        for g, group in enumerate(groups):
            later = [t for rest in groups[g + 1 :] for t in rest]
            frontier = _frontier(graph, later, position, cuts[g]) if later else []
            given = {id(t): i for i, t in enumerate(inputs or [])}
            outputs: list[Any] = []
            index: dict[int, int] = {}
            for t in [*group, *(t for t in frontier if id(t) not in given)]:
                if id(t) not in index:
                    index[id(t)] = len(outputs)
                    outputs.append(t)
            # A Model over the runner's own inputs; later, a Function: a Model from inner
            # tensors would add a node to each of its layers (Keras clones the graph).
            model = keras.Model(runner.input, outputs) if inputs is None else keras.Function(inputs, outputs)
            segments.append(Segment(
                model=model,
                first=inputs is None,
                watched=[index[id(t)] for t in group],
                carry=[index[id(t)] if id(t) in index else -1 - given[id(t)] for t in frontier],
            ))
            inputs = frontier
        return segments
    except Exception:  # noqa: BLE001 - any graph Keras cannot cut here (a tensor no first call
        return None  # made, nested outputs, ...): parts that start from the probes are always right
