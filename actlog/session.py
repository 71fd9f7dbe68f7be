"""One training run of an :class:`~actlog.ActivationLogger`: built at ``on_train_begin``.

A session chooses the layers, builds the probe function and the grid layouts
(every configuration error surfaces here, before the first training step),
then turns each event into two halves:

- :meth:`Session.capture`, on the training thread: run the compiled probe
  function (forward pass and reductions on the device) and start copying its
  small results to the host;
- the rest in the background worker (:mod:`actlog.worker`): statistics,
  grids, PNGs, one record, written in step order.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import backends, grid, metadata, probe, probes
from actlog.event import EventAssembler, LayerPlan, LayerResult
from actlog.faults import Faults, classify
from actlog.layers import resolve
from actlog.runs import Destination
from actlog.worker import Worker
from actlog.writer import RunWriter

PIXEL_BUDGET = 24 * 2**20
"""Grid pixels per event above which actlog warns that the chosen layers are costly
(about 24 MB of raw pixels; roughly 0.5-1 s of background work per event on 2 CPU cores)."""


@dataclass(frozen=True)
class Options:
    """The validated options of an ``ActivationLogger`` that shape its events."""

    layers: Any = None
    max_channels: int | None = 64
    channels: str = "first"
    norm: str | tuple[float, float] = "channel"
    cmap: str = "gray"
    min_tile: int = 48
    max_pixels: int = 2**19
    pad: int = 1
    rows: int | None = None
    cols: int | None = None
    stats: bool = True
    log_probes: bool = True
    background: bool = True
    max_pending: int = 2
    on_full: str = "wait"


@dataclass
class Continuity:
    """What outlives one ``fit`` of the same model: tile channels and the drift reference."""

    channels: dict[str, tuple[int, ...]] = field(default_factory=dict)  # layer path -> tiles
    previous: dict[str, list[Any]] = field(default_factory=dict)  # run -> sketch per layer


class Session:
    """Everything one training run needs to log events; see the module docstring."""

    def __init__(
        self,
        model: Any,
        probe_batch: Any,
        options: Options,
        *,
        destination: Destination,
        faults: Faults,
        continuity: Continuity,
    ) -> None:
        self.options = options
        self.faults = faults
        self.continuity = continuity
        self.destination = destination
        self.backend = backends.current()
        self.chief = self.backend.is_chief(model)

        trace = None
        if probe.has_call(model):
            fitted = probes.fit_to_model(probe_batch, probe.input_specs(model))
            inputs = probe.to_tensors(model, fitted)
            trace = probe.tracer(model, inputs)
        watched = resolve(model, options.layers, trace)
        runner, watched = probe.runner_for(model, watched)
        if runner is not model or trace is None:
            fitted = probes.fit_to_model(probe_batch, probe.input_specs(runner))
            inputs = probe.to_tensors(runner, fitted)
        self.watched = watched
        self.probe_images = (
            probes.probe_images(fitted, probe.input_specs(runner)) if options.log_probes else []
        )
        self.count = probes.count_of(fitted)
        plans = [self._plan(w) for w in watched]
        self._warn_budget(plans)
        self.probe_fn = probe.ProbeFunction(model, runner, watched, inputs, plans, self.backend)
        known = [continuity.channels.get(p.path) for p in plans]
        if options.channels == "first" or all(
            k is not None and len(k) == len(p.layout.channels) for k, p in zip(known, plans, strict=True)
        ):
            self._choose(plans, [k or p.layout.channels for k, p in zip(known, plans, strict=True)])
        else:
            self.plans, self._channels = plans, None  # decided at the first event
        self._assemblers: dict[str, EventAssembler] = {}
        self._writers: dict[str, RunWriter] = {}
        self.worker = Worker(
            background=options.background,
            # Jobs, not events: each event is one job per part of the probe function, then a write.
            max_pending=options.max_pending * (self.probe_fn.parts + 1),
            on_full=options.on_full,
            on_error=lambda err: faults.report(*classify(err, "an event")),
        )

    # -- setup ------------------------------------------------------------------------

    def _plan(self, w: Any) -> LayerPlan:
        shape = tuple(w.shape[1:])
        grid.check_layer_rank(w.path, shape)
        data_format = _data_format(w.layer)
        last = (*shape[1:], shape[0]) if data_format == "channels_first" and len(shape) >= 2 else shape
        height, width, channels = grid.maps_shape(last)
        o = self.options
        shown = channels if o.max_channels is None else min(channels, o.max_channels)
        try:
            layout = grid.plan_layout(
                (height, width), range(shown), max_pixels=o.max_pixels, min_tile=o.min_tile,
                pad=o.pad, rows=o.rows, cols=o.cols,
            )
        except ValueError as err:
            raise ValueError(
                f"The grid of layer {w.name!r} (output shape {shape}, {shown} channels shown) "
                f"cannot be laid out: {err}"
            ) from None
        return LayerPlan(w.name, w.path, type(w.layer).__name__, shape, data_format, layout, o.norm, o.cmap)

    def _warn_budget(self, plans: Sequence[LayerPlan]) -> None:
        reduced = [f"{p.name!r} at 1/{p.layout.stride}" for p in plans if p.layout.stride > 1]
        if reduced:
            warnings.warn(
                f"actlog: drawing {', '.join(reduced)} of full resolution to fit "
                f"max_pixels={self.options.max_pixels} per grid (recorded in the manifest as "
                "'stride'); raise max_pixels or lower max_channels for every pixel.",
                UserWarning,
                stacklevel=5,
            )
        pixels = self.count * sum(p.layout.height * p.layout.width for p in plans)
        if pixels > PIXEL_BUDGET:
            warnings.warn(
                f"actlog: {len(plans)} layers x {self.count} probes draw {pixels / 2**20:.1f} Mpixel "
                f"of grids per event, over actlog's budget of {PIXEL_BUDGET / 2**20:.0f} Mpixel "
                "(roughly 0.5-1 s of background work and several MB of log per event). Watch "
                "fewer layers (layers=None picks one per spatial stage), fewer probes, or lower "
                "max_channels / min_tile.",
                UserWarning,
                stacklevel=5,
            )

    def _choose(self, plans: Sequence[LayerPlan], chosen: Sequence[Sequence[int]]) -> None:
        self.plans = [
            dataclasses.replace(p, layout=dataclasses.replace(p.layout, channels=tuple(int(c) for c in c_)))
            for p, c_ in zip(plans, chosen, strict=True)
        ]
        for p in self.plans:
            self.continuity.channels[p.path] = p.layout.channels
        self._channels = self.probe_fn.channels([p.layout.channels for p in self.plans])

    # -- events -----------------------------------------------------------------------

    def capture(self, run: str, step: int) -> None:
        """The training thread's half of an event at ``step`` of ``run``.

        The probe function runs part by part (one part unless many large layers are
        watched, see :data:`actlog.probe.PART_BYTES`); each part's results go to the
        background as soon as they are copied, so at most the queue's worth of them
        is ever held.
        """
        if not self.chief:
            return
        self.destination.decide(run, step, [p.name for p in self.plans])
        if self.options.on_full == "skip" and self.worker.room() < self.probe_fn.parts + 1:
            self.faults.report(
                "skipped",
                f"step {step} of run {self.destination.name(run)!r} was not logged: "
                f"{self.options.max_pending} events were still being written (on_full='skip')",
            )
            return
        previous = self.continuity.previous.get(run)
        if self._channels is None:  # channels="most_active": decided once, now
            out = self.probe_fn(self.probe_fn.first_channels(), previous or self.probe_fn.zero_sketches())
            activity = self.backend.fetch([o["sums"]["activity"] for o in out])()
            self._choose(self.plans, [
                grid.choose_channels(a, self.options.max_channels, "most_active") for a in activity
            ])
        if run not in self._assemblers:
            self._assemblers[run] = EventAssembler(
                self.plans, probes=self.count, with_stats=self.options.stats,
                step_axis=metadata.STEP_AXIS_EPOCH if run == metadata.EPOCH_RUN
                else metadata.STEP_AXIS_GLOBAL_STEP,
                probe_images=self.probe_images,
            )
            event = _Event(run, step, first=True, has_previous=previous is not None)
        else:
            event = _Event(run, step, first=False, has_previous=previous is not None)
        sketches: list[Any] = [None] * len(self.plans)
        zeros = previous or self.probe_fn.zero_sketches()
        for indices, out in self.probe_fn.run_parts(self._channels, zeros):
            for i, o in zip(indices, out, strict=True):
                sketches[i] = o["sketch"]
            fetch = self.backend.fetch([{"levels": o["levels"], "sums": o["sums"], "drift": o["drift"]}
                                        for o in out])
            masks = [o["nonfinite"] for o in out]
            self.worker.submit(functools.partial(self._render, event, indices, fetch, masks), wait=True)
        self.continuity.previous[run] = sketches
        self.worker.submit(functools.partial(self._write, event), wait=True)

    def _render(self, event: _Event, indices: list[int], fetch: Any, masks: list[Any]) -> None:
        """Background: one part's grids and statistics, serialized."""
        if event.error is not None:
            return
        try:
            results = [
                LayerResult(
                    levels=h["levels"], sums=h["sums"], drift=h["drift"] if event.has_previous else None,
                    nonfinite=functools.partial(_fetch_one, self.backend, mask),
                )
                for h, mask in zip(fetch(), masks, strict=True)
            ]
            body, nonfinite = self._assemblers[event.run].layers(indices, results)
            event.parts.append(body)
            event.nonfinite += nonfinite
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            event.error = err

    def _write(self, event: _Event) -> None:
        """Background: the event's one record."""
        what = (f"step {event.step} of run {self.destination.name(event.run)!r} under "
                f"{self.destination.log_dir!r}")
        try:
            if event.error is not None:
                raise event.error
            for name in event.nonfinite:
                self.faults.report(
                    "nonfinite", f"layer {name!r} has NaN or Inf activations at step {event.step}"
                )
            header = self._assemblers[event.run].header() if event.first else None
            pieces = [header, *event.parts] if header is not None else event.parts
            self._writer(event.run).write(event.step, pieces, header=header)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, what), err)

    def _writer(self, run: str) -> RunWriter:
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writers[run] = RunWriter(
                self.destination.storage, self.destination.path(run),
                on_reopen=lambda message: self.faults.report("removed", message),
            )
        return writer

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handed to the background is written."""
        return self.worker.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the background worker and close the event files."""
        drained = self.worker.close(timeout)
        for run, writer in list(self._writers.items()):
            try:
                writer.close()
            except Exception as err:  # noqa: BLE001 - closing must not raise into training either
                self.faults.report("write", f"could not close the event file of run {run!r}: {err}", err)
        self._writers.clear()
        return drained


@dataclass
class _Event:
    """One event on its way through the background: its parts, made one by one."""

    run: str
    step: int
    first: bool
    has_previous: bool
    parts: list[bytes] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    error: BaseException | None = None


def _fetch_one(backend: backends.Backend, array: Any) -> np.ndarray:
    return backend.fetch(array)()


def _data_format(layer: Any) -> str:
    """Where the layer keeps its channels: ``data_format``, or for normalisation
    layers (which have none) the axis they normalise: ``axis=1`` is channels first."""
    fmt = getattr(layer, "data_format", None)
    if fmt in grid.DATA_FORMATS:
        return fmt
    if type(layer).__name__ in ("BatchNormalization", "GroupNormalization"):
        axis = layer.axis
        if axis == 1 or (isinstance(axis, (list, tuple)) and list(axis) == [1]):
            return "channels_first"
    return "channels_last"
