"""The probe function: the watched layers of a model, on the probes, built once.

Two ways to reach a layer's output, chosen once per training run:

- **symbolic**: every watched layer sits in the runner's own functional graph
  (Sequential and functional models). One multi-output ``keras.Model`` from the
  runner's inputs to those outputs shares the training weights and stops at
  the deepest watched layer.
- **capture**: anything else: a layer inside a nested backbone (at any depth),
  a subclassed model with no symbolic graph, a layer inside a user-written
  composite layer, a ``Sequential`` never given an input shape. The whole
  runner runs, and the watched layers' ``call`` is wrapped while it runs, so
  their outputs come back too. The wrappers exist only inside the function
  (during its one trace when compiled, during each call when eager): training
  never sees a wrapped layer.

The *runner* is the model itself; a model with no ``call()`` of its own (the
keras.io GAN and VAE pattern: a custom ``train_step`` over sub-models) is
probed through the innermost sub-model that holds every watched layer, with
probes shaped for that sub-model's input.

A layer the model calls more than once (a shared layer) is seen at its first
call on both paths (Keras' ``layer.output`` is its first call's output too).

:class:`ProbeFunction` adds the event's reductions after the forward pass,
inside the same compiled function, so that only a few bytes per shown pixel
leave the device: the shown channels as uint8 levels (:func:`actlog.grid.levels`),
per-channel sums for the statistics, a small sketch for drift
(:mod:`actlog.stats`) and the probes' centred Gram matrix for representation
similarity (:mod:`actlog.similarity`). Compiling is the backend's business
(:mod:`actlog.backends`): traced once, run in inference mode, never retraced.

Many large watched layers are split over several compiled parts, run one after
the other (:data:`PART_BYTES`); in a functional graph the parts are segments
that each start where the previous one stopped (:mod:`actlog.segments`), so an
event still runs every layer once. Several parts compile their forward passes
alone, and the reductions once per kind of layer (:class:`_Reduce`), so that
compiling keeps little more than one forward pass, however many layers.

Where each half runs is the backend's business (:meth:`actlog.backends.Backend.split`):
on an accelerator the reductions run on the device before the copy; on the host the
training thread runs only the forward pass and hands the raw outputs to the
background, which reduces them (:meth:`ProbeFunction.run_parts`).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from actlog import arrays, grid, segments, similarity, stats, tokens
from actlog.backends import Backend
from actlog.event import LayerPlan
from actlog.layers import Trace, Watched
from actlog.probes import InputSpec


def input_specs(model: Any) -> list[InputSpec] | None:
    """The model's inputs (name, per-sample shape, dtype); None when it has no symbolic inputs."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [
        InputSpec(_input_name(t), tuple(t.shape)[1:], str(getattr(t, "dtype", None) or "float32"))
        for t in inputs
    ]


def _input_name(tensor: Any) -> str:
    return str(getattr(tensor, "name", "input")).split(":")[0]


def to_tensors(model: Any, probes: Any) -> Any:
    """Fitted probes as backend tensors in the dtype of the model's inputs: converted once."""
    specs = input_specs(model)
    if specs is None:
        def convert(a: np.ndarray) -> Any:
            return keras.ops.convert_to_tensor(a, dtype="float32" if a.dtype.kind == "f" else None)

        return keras.tree.map_structure(convert, probes)
    dtypes = {spec.name: spec.dtype for spec in specs}
    if isinstance(probes, Mapping):
        return {k: keras.ops.convert_to_tensor(v, dtype=dtypes[k]) for k, v in probes.items()}
    if isinstance(probes, (list, tuple)):
        return [keras.ops.convert_to_tensor(v, dtype=s.dtype) for v, s in zip(probes, specs, strict=True)]
    return keras.ops.convert_to_tensor(probes, dtype=specs[0].dtype)


def has_call(model: Any) -> bool:
    """False for a model whose class defines no ``call()`` (a custom ``train_step`` over sub-models)."""
    method = getattr(type(model), "call", None)
    return method is not None and method not in (keras.Model.call, keras.layers.Layer.call)


def runner_for(model: Any, watched: Sequence[Watched]) -> tuple[Any, list[Watched]]:
    """The model to run for ``watched``, and the watched layers with chains relative to it."""
    if has_call(model):
        return model, list(watched)
    common: list[Any] = []
    for depth, container in enumerate(watched[0].chain if watched else ()):
        if all(len(w.chain) > depth and w.chain[depth] is container for w in watched):
            common.append(container)
    runners = [c for c in common if has_call(c)]
    if not runners:
        subs = [layer.name for layer in getattr(model, "layers", []) if has_call(layer)]
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no call() of its own, so actlog "
            f"runs one of its sub-models; the watched layers {[w.path for w in watched]} are not all "
            f"inside one. Watch layers of one sub-model (e.g. layers=['{subs[0] if subs else 'sub'}"
            f"/<layer>']), with probes shaped for its input. Sub-models: {subs}."
        )
    runner = runners[-1]
    return runner, [
        dataclasses.replace(w, chain=w.chain[w.chain.index(runner) + 1 :]) for w in watched
    ]


class _NotCalled(ValueError):
    """A watched layer did not run when the model ran on the probes."""


class _Taps:
    """While active, each layer's ``call`` also records its output (first call wins).

    The wrapper is set on the instance with ``object.__setattr__`` so Keras'
    attribute tracking never sees it, and removed on exit. For the layers of
    ``scores`` (attention layers), it records their attention scores instead,
    asked of the same call through the public ``return_attention_scores=True``.
    """

    def __init__(self, layers: Sequence[Any], scores: Sequence[Any] = ()) -> None:
        self.layers = list({id(layer): layer for layer in layers}.values())
        self.scores = {id(layer) for layer in scores}
        self.outputs: dict[int, Any] = {}

    def __enter__(self) -> _Taps:
        self.outputs = {}
        for layer in self.layers:
            original = layer.call

            def call(*args: Any, _original: Any = original, _key: int = id(layer), **kwargs: Any):
                if _key in self.scores:
                    return self._scores(_original, _key, args, kwargs)
                out = _original(*args, **kwargs)
                self.outputs.setdefault(_key, out)
                return out

            object.__setattr__(layer, "call", call)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            object.__delattr__(layer, "call")

    def _scores(self, original: Any, key: int, args: tuple, kwargs: dict) -> Any:
        asked = kwargs.get("return_attention_scores", False)
        out, scores = original(*args, **{**kwargs, "return_attention_scores": True})
        self.outputs.setdefault(key, scores)
        return (out, scores) if asked else out


def _first(output: Any) -> Any:
    if isinstance(output, (list, tuple)):
        return output[0]
    if isinstance(output, Mapping):
        return next(iter(output.values()))
    return output


def tracer(runner: Any, inputs: Any) -> Trace:
    """A :data:`actlog.layers.Trace` that runs ``runner`` once, eagerly, in inference mode."""

    def trace(layers: Sequence[Any]) -> dict[int, Any]:
        try:
            with _Taps(layers) as taps:
                runner(inputs, training=False)
        except Exception as err:
            raise ValueError(
                f"Running the model on the probes failed: probes have shape {_shapes(inputs)}, "
                f"the model expects {_expected(runner)}. Keras said: {err}"
            ) from err
        return {
            key: tuple(out.shape) if hasattr(out, "shape") else None
            for key, out in taps.outputs.items()
        }

    return trace


class Forward:
    """``forward(inputs)`` -> the watched layers' raw outputs (a list), backend-neutral.

    Attributes:
        strategy: ``"symbolic"`` or ``"capture"``.
    """

    def __init__(self, runner: Any, watched: Sequence[Watched]) -> None:
        self.watched = list(watched)
        self._runner = runner
        self._sub_model = _symbolic_model(runner, self.watched)
        self.strategy = "capture" if self._sub_model is None else "symbolic"

    def __call__(self, inputs: Any) -> list[Any]:
        if self._sub_model is not None:
            outputs = self._sub_model(inputs, training=False)
            return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        attention = [w.layer for w in self.watched if w.attention]
        with _Taps([w.layer for w in self.watched], attention) as taps:
            self._runner(inputs, training=False)
        missing = [w.path for w in self.watched if id(w.layer) not in taps.outputs]
        if missing:
            raise _NotCalled(
                f"Layers {missing} were not called when the model ran on the probes, so their "
                "outputs cannot be captured. Watch layers that the model's call() uses."
            )
        return [
            tokens.attention_map(keras.ops, taps.outputs[id(w.layer)], w.attention) if w.attention
            else _first(taps.outputs[id(w.layer)])
            for w in self.watched
        ]


def _symbolic_model(runner: Any, watched: Sequence[Watched]) -> Any:
    """A multi-output keras.Model over the runner's own graph, or None when impossible."""
    if any(w.chain or w.attention for w in watched) or input_specs(runner) is None:
        return None
    try:
        outputs = [w.layer.output for w in watched]
        if any(isinstance(o, (list, tuple, dict)) for o in outputs):
            return None
        return keras.Model(runner.input, outputs)
    except (ValueError, AttributeError, RuntimeError):
        # multiple inbound nodes, a subclassed model, or a graph Keras cannot cut
        return None


def _shapes(inputs: Any) -> Any:
    return keras.tree.map_structure(lambda t: tuple(t.shape), inputs)


def _expected(model: Any) -> Any:
    specs = input_specs(model)
    if not specs:
        return "an input the model's call() accepts"
    return [(None, *spec.shape) for spec in specs]


def channels_last(acts: Any, data_format: str) -> Any:
    """``(k, C, ...)`` activations of a channels-first layer moved to ``(k, ..., C)``."""
    if data_format == "channels_first" and len(acts.shape) >= 3:
        return keras.ops.moveaxis(acts, 1, -1)
    return acts


def compile_function(backend: Backend, fn: Any, model: Any, args: tuple, runner: Any,
                     *, eager: bool = False, replay: bool = True, large: bool = False) -> Any:
    """``backend.compile(fn, model, args, replay=replay)`` (eager with ``eager`` or a model
    that runs eagerly), with the model's rejection of ``args`` (its inputs come first) said
    as such: shapes received and expected."""
    eager = eager or bool(getattr(model, "run_eagerly", False))
    try:
        return backend.compile(fn, model, args, eager=eager, replay=replay, large=large)
    except _NotCalled:
        raise
    except Exception as err:  # the user's model rejected the probes
        raise ValueError(
            f"Running the model on the probes failed: probes have shape {_shapes(args[0])}, "
            f"the model expects {_expected(runner)}. Keras said: {err}"
        ) from err


class ProbeFunction:
    """The event's device half, compiled once: probes -> per watched layer, reduced.

    ``fn(channels, previous)`` returns, per layer, a dict of device arrays:
    ``levels`` (uint8 ``(k, th, tw, n)``), ``nonfinite`` (its NaN/Inf mask),
    ``sums`` (:func:`actlog.stats.reduce_layer` plus ``activity``, stacked as
    :data:`actlog.stats.SUMS`; ``activity`` is zeros unless asked for), ``drift``
    (:func:`actlog.stats.drift_sums` against ``previous``, stacked as
    :data:`actlog.stats.DRIFT`), ``sketch`` (the next event's ``previous``) and
    ``gram`` (float32 ``(k, k)``: :func:`actlog.similarity.centred_gram` of the float
    activations; absent when :data:`GRAM` is off).

    Args:
        model: the model being trained (its variables feed the function).
        runner: the model to run (see :func:`runner_for`).
        watched: the watched layers, chains relative to ``runner``.
        inputs: the probes as backend tensors (:func:`to_tensors`).
        plans: one :class:`actlog.event.LayerPlan` per watched layer.
        backend: the current :class:`actlog.backends.Backend`.
        activity: also reduce each channel's mean ``|activation|`` (the score of
            ``channels="most_active"``): two more passes over every activation, so only
            while that choice is still to make.
    """

    def __init__(
        self,
        model: Any,
        runner: Any,
        watched: Sequence[Watched],
        inputs: Any,
        plans: Sequence[LayerPlan],
        backend: Backend,
        *,
        activity: bool = False,
    ) -> None:
        self.plans = list(plans)
        self.watched = list(watched)
        self.inputs = inputs
        self.backend = backend
        k = _count(inputs)
        self.sketch_shapes, self.sketch_sizes = [], []
        values = stats.sketch_values(len(self.plans))
        for plan in self.plans:
            height, width, channels = plan.map_shape
            size = stats.sketch_size(k, channels, values)
            rows, cols, _, _ = stats.sketch_shape(height, width, size)
            self.sketch_shapes.append((k, rows, cols, channels))
            self.sketch_sizes.append(size)
        sizes = [k * int(np.prod(plan.output_shape)) * 4 for plan in self.plans]
        largest = max(sizes, default=0)
        groups = memory_groups(sizes, max(backend.part_bytes(segments=False), largest))
        cut = None
        if len(groups) > 1 and _symbolic_model(runner, watched) is not None:
            # Parts that share one pass cost no extra forward pass: they can be smaller.
            shared = memory_groups(sizes, max(backend.part_bytes(segments=True), largest))
            cut = segments.cut(runner, [[watched[i].layer.output for i in g] for g in shared])
            if cut is not None:
                groups = shared
        # One part may compile its layers' reductions with its forward pass; several parts
        # compile their forward passes alone and the reductions once per kind of layer
        # (:class:`_Reduce`): what compiling keeps grows with the kinds, not the layers.
        # The backend places each part's halves (:meth:`actlog.backends.Backend.split`).
        self._reducers: dict[tuple, Any] = {}
        self._eager = bool(getattr(model, "run_eagerly", False))
        self._alone = [_Reduce(plan, backend.ops, size, alone=True, activity=activity)
                       for plan, size in zip(self.plans, self.sketch_sizes, strict=True)]
        inline = [_Reduce(plan, backend.ops, size, alone=False, activity=activity)
                  for plan, size in zip(self.plans, self.sketch_sizes, strict=True)]
        # Shapes and dtypes are all compiling needs: no sketch is allocated before the first event.
        first = self.first_channels()
        zeros = [keras.KerasTensor(shape, dtype="float32") for shape in self.sketch_shapes]
        room = threading.Semaphore(1)  # on the host, one part's raw outputs wait for the background
        self._parts = []
        self._compiled: list[Any] = []
        self._forwards: list[Any] = []
        for g, indices in enumerate(groups):
            forward = Forward(runner, [watched[i] for i in indices]) if cut is None else cut[g]
            chained = isinstance(forward, segments.Segment) and not forward.first
            example = forward.specs(k) if chained else inputs
            args = (example, _pick(first, indices), _pick(zeros, indices))
            # One part only replays: a CUDA graph keeps its memory (several would add up theirs),
            # and each of several parts is large, where a traced graph gains little.
            compile = functools.partial(self._compile, model, args, runner, len(groups) > 1)
            fused = _Part(forward, _pick(inline, indices)) if len(groups) == 1 else None
            device, host = backend.split(model, compile, _Part(forward, None), fused,
                                         functools.partial(self._reduce_part, indices), room)
            self._parts.append((indices, chained, device, host))
            self._forwards.append(forward)

    def _compile(self, model: Any, args: tuple, runner: Any, large: bool, fn: Any) -> Any:
        compiled = compile_function(self.backend, fn, model, args, runner, replay=not large, large=large)
        self._compiled.append(compiled)
        return compiled

    def first_channels(self) -> list[Any]:
        """Every layer's first ``n`` channels, where ``n`` is how many tiles its grid has."""
        return [
            keras.ops.convert_to_tensor(np.arange(len(p.layout.channels), dtype=np.int32))
            for p in self.plans
        ]

    def channels(self, chosen: Sequence[Sequence[int]]) -> list[Any]:
        return [keras.ops.convert_to_tensor(np.asarray(c, dtype=np.int32)) for c in chosen]

    def zero_sketches(self) -> list[Any]:
        return [keras.ops.zeros(shape, dtype="float32") for shape in self.sketch_shapes]

    @property
    def strategy(self) -> str:
        """``"symbolic"``, ``"capture"`` (see the module docstring) or ``"segments"`` (parts that
        share one pass: :mod:`actlog.segments`)."""
        forward = self._forwards[0]
        return "segments" if isinstance(forward, segments.Segment) else forward.strategy

    @property
    def parts(self) -> int:
        """Compiled functions the layers are split into (see :func:`memory_groups`)."""
        return len(self._parts)

    @property
    def functions(self) -> int:
        """Functions so far: the parts' (compiled, or eager where large: see
        :meth:`actlog.backends.Backend.compile`), and one per kind of layer whose
        reductions compiled apart have run (:class:`_Reduce`)."""
        return len(self._compiled) + len(self._reducers)

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample output shape of each watched layer."""
        return [tuple(p.output_shape) for p in self.plans]

    @property
    def traces(self) -> int:
        """How many times each compiled part (and each kind of layer's reductions, see
        :class:`_Reduce`) was traced: 1 once compiled; 0 when it runs eagerly."""
        return max(fn.traces for fn in self._compiled + list(self._reducers.values()))

    @property
    def part_traces(self) -> list[int]:
        """How many times each part's forward pass was traced (0: it runs eagerly)."""
        return [fn.traces for fn in self._compiled]

    def __call__(self, channels: list[Any], previous: list[Any]) -> list[dict[str, Any]]:
        results: list[Any] = [None] * len(self.plans)
        for part in self.run_parts(channels, previous):
            for i, result in zip(part.indices, part.finish(), strict=True):
                results[i] = result
        return results

    def run_parts(self, channels: list[Any], previous: list[Any]) -> Any:
        """Run the parts' device halves one after the other on this thread: yields a
        :class:`Handed` for each, so that a caller can hand each part on before the next
        one runs."""
        carry = self.inputs
        for indices, chained, device, host in self._parts:
            picked = _pick(channels, indices)
            handoff, carry = device(carry if chained else self.inputs, picked, _pick(previous, indices))
            yield Handed(indices, [h.get("sketch") for h in handoff],
                         functools.partial(_finish, host, handoff, picked, previous, indices))

    def _reduce_part(self, indices: list[int], outputs: list[Any], channels: list[Any],
                     previous: list[Any]) -> list[dict[str, Any]]:
        return [self._reduce(i, output, index, before)
                for i, output, index, before in zip(indices, outputs, channels, previous, strict=True)]

    def _reduce(self, i: int, output: Any, index: Any, before: Any) -> dict[str, Any]:
        """Layer ``i``'s reductions, compiled at the first layer of their kind."""
        reduction = self._alone[i]
        key = reduction.key(output)
        fn = self._reducers.get(key)
        if fn is None:
            # A model that runs eagerly (run_eagerly=True) has its reductions run so too.
            fn = self._reducers[key] = self.backend.compile(reduction, None, (output, index, before),
                                                            eager=self._eager, replay=False)
        return fn(output, index, before)


@dataclasses.dataclass(frozen=True)
class Handed:
    """One part of an event, its device half run (:meth:`ProbeFunction.run_parts`).

    Attributes:
        indices: the part's layers.
        sketches: their next event's ``previous`` where the device half computed them,
            else None each (``finish`` computes them).
        finish: ``() -> results`` (see :class:`ProbeFunction`), called once, anywhere
            after, before the next part's: reduces the raw outputs first where the backend
            left that to the host (:meth:`actlog.backends.Backend.split`), reading
            ``previous`` then, so the background may fill it in step order.
    """

    indices: list[int]
    sketches: list[Any]
    finish: Any


def _finish(host: Any, handoff: Any, channels: list[Any], previous: list[Any], indices: list[int]) -> Any:
    return host(handoff, channels, _pick(previous, indices))


PART_BYTES = 128 * 2**20
"""Raw activations (all probes) one compiled part of the probe function reaches at most,
unless a single layer is larger: many large layers are split over several parts, run one
after the other, so that an event's memory does not grow with the number of layers.
Each part runs the model from the probes, except where the graph can be cut into
segments (:data:`SEGMENT_BYTES`)."""

SEGMENT_BYTES = 8 * 2**20
""":data:`PART_BYTES` where the parts are segments of one functional graph
(:mod:`actlog.segments`), each starting where the previous one stopped: smaller parts
then cost no extra forward pass, so an event holds about one large layer at a time."""

ACCELERATOR_PART_BYTES = 2**30
""":data:`PART_BYTES` when the model runs on a GPU or TPU: device memory is plentiful and
the host never sees the raw activations, while each extra part is another forward pass."""


def memory_groups(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive layer indices packed into groups of at most ``budget`` bytes (a larger
    single layer is a group of its own)."""
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if groups and total + size <= budget:
            groups[-1].append(i)
            total += size
        else:
            groups.append([i])
            total = size
    return groups


def _pick(values: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [values[i] for i in indices]


class _Part:
    """The compiled body of one part: forward pass of its layers, then their reductions.

    ``part(inputs, channels, previous) -> (results, carry)``: ``inputs`` are the probes,
    or for a segment after the first (:attr:`chained`) the previous segment's carry.
    A part without ``reductions`` returns the watched layers' raw outputs as its results
    (the caller reduces them with :class:`_Reduce`).
    """

    def __init__(self, forward: Forward | segments.Segment, reductions: list[_Reduce] | None) -> None:
        self.forward = forward
        self.chained = isinstance(forward, segments.Segment) and not forward.first
        self.reductions = reductions

    def __call__(self, inputs: Any, channels: list[Any], previous: list[Any]) -> tuple[list[Any], list[Any]]:
        if isinstance(self.forward, segments.Segment):
            outputs, carry = self.forward(inputs)
        else:
            outputs, carry = self.forward(inputs), []
        if self.reductions is None:
            return outputs, carry
        layers = zip(self.reductions, outputs, channels, previous, strict=True)
        return [reduce(output, index, before) for reduce, output, index, before in layers], carry


class _Reduce:
    """One watched layer's reductions: ``(output, channels, previous) -> result`` (see
    :class:`ProbeFunction`). Layers alike in :meth:`key` share one compiled copy."""

    def __init__(self, plan: LayerPlan, ops: Any, sketch_size: int, *, alone: bool,
                 activity: bool = False) -> None:
        """``alone``: compiled on its own (several parts, or reduced later), not inside a
        part's forward pass. ``activity``: as in :class:`ProbeFunction`."""
        self.plan = plan
        self.ops = ops
        self.sketch_size = sketch_size
        self.alone = alone
        self.activity = activity

    def key(self, output: Any) -> tuple:
        """What the compiled reductions depend on: all but which channels are shown."""
        plan = self.plan
        return (tuple(output.shape), str(output.dtype), plan.data_format, plan.layout.stride,
                len(plan.layout.channels), plan.norm, plan.cmap, self.sketch_size, self.activity,
                plan.layout.tokens, GRAM)

    def __call__(self, output: Any, index: Any, before: Any) -> dict[str, Any]:
        acts = channels_last(self.ops.cast(output, "float32"), self.plan.data_format)
        # Then so are the maps: no masks below. Never asked inside a part's compiled forward
        # pass: its layers are small (else there would be several parts), and two branches of
        # every layer's reductions would cost more memory to compile than the masks save.
        finite = arrays.all_finite(self.ops, acts) if self.alone else False
        if isinstance(finite, bool):
            return self._results(acts, index, before, finite)
        # Known at run time: both branches are compiled, one runs.
        return keras.ops.cond(finite, lambda: self._results(acts, index, before, True),
                              lambda: self._results(acts, index, before, False))

    def _results(self, acts: Any, index: Any, before: Any, finite: bool) -> dict[str, Any]:
        ops, plan = self.ops, self.plan
        maps = grid.batch_maps(ops, acts, plan.layout.tokens)
        sums = stats.reduce_layer(ops, acts, all_finite=finite)
        sums["activity"] = (stats.activity(ops, maps, all_finite=finite) if self.activity
                            else ops.zeros_like(sums["count"]))
        sketch = stats.sketch(ops, maps, self.sketch_size, all_finite=finite)
        levels, nonfinite = grid.levels(ops, maps, index, plan.layout, norm=plan.norm, cmap=plan.cmap,
                                        all_finite=finite)
        results = {
            "levels": levels,
            "nonfinite": nonfinite,
            "sums": stats.stack(ops, sums, stats.SUMS),
            "drift": stats.stack(ops, stats.drift_sums(ops, sketch, before), stats.DRIFT),
            "sketch": sketch,
        }
        if GRAM:
            results["gram"] = similarity.centred_gram(ops, acts)
        return results


GRAM = True
"""Whether events carry each layer's centred Gram matrix (:mod:`actlog.similarity`). Always on;
``benchmarks/bench_similarity.py`` turns it off, before a logger is built, to measure its cost."""


def _count(inputs: Any) -> int:
    return int(keras.tree.flatten(inputs)[0].shape[0])


def feature_maps(model: Any, watched: Sequence[Watched], inputs: Any) -> list[np.ndarray]:
    """The watched layers' outputs as float32 numpy arrays, run once (no compilation)."""
    runner, watched = runner_for(model, watched)
    forward = Forward(runner, watched)
    outputs = forward(inputs)
    return [keras.ops.convert_to_numpy(keras.ops.cast(o, "float32")) for o in outputs]
