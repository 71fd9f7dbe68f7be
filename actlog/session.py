"""One training run of an :class:`~actlog.ActivationLogger`: built at ``on_train_begin``.

A session chooses the layers, builds the probe function and the grid layouts
(every configuration error surfaces here, before the first training step),
then turns each event into two halves:

- :meth:`Session.capture`, on the training thread: run the compiled probe
  function (forward pass and reductions on the device) and start copying its
  small results to the host; where the backend runs op by op on the host
  (PyTorch on the CPU), only the forward pass, the reductions waiting for the
  background (at most one part of raw outputs at a time);
- the rest in the background worker (:mod:`actlog.worker`): statistics,
  grids, PNGs, one record, written in step order.

An atlas event (:meth:`Session.capture_atlas`) is split the same way: the pool
through the atlas function on the training thread, crops and pictures in the
background (:mod:`actlog.atlas_pass`), one record in the epoch run. So is an
activation-maximisation event (:meth:`Session.capture_maximize`, optional:
:mod:`actlog.maximize`), and a class-map event (:meth:`Session.capture_class_maps`,
optional, beside each grid event of the epoch run: :mod:`actlog.class_maps`).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import backends, grid, metadata, probe, probes, stats, tokens
from actlog.atlas import AtlasOptions
from actlog.class_maps import ClassMapsOptions
from actlog.event import (
    EventAssembler,
    LayerPlan,
    LayerResult,
    atlas_summary,
    class_maps_summary,
    images_summary,
)
from actlog.faults import Faults, classify
from actlog.layers import resolve
from actlog.maximize import MaximizeOptions, MaximizePass
from actlog.runs import Destination
from actlog.worker import Worker
from actlog.writer import RunWriter, Spool

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
    atlas: AtlasOptions | None = None
    maximize: MaximizeOptions | None = None
    class_maps: ClassMapsOptions | None = None

    def rare(self) -> dict[str, int]:
        """``{"atlas": freq, "actmax": freq}`` for those of the two that are on."""
        found = {"atlas": self.atlas, "actmax": self.maximize}
        return {kind: options.freq for kind, options in found.items() if options is not None}


@dataclass
class Continuity:
    """What outlives one ``fit`` of the same model: tile channels, the drift and atlas references."""

    channels: dict[str, tuple[int, ...]] = field(default_factory=dict)  # layer path -> tiles
    previous: dict[str, list[Any]] = field(default_factory=dict)  # run -> sketch per layer
    atlas: dict[str, np.ndarray] = field(default_factory=dict)  # layer path -> last top-k indices


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
        spec, requests = tokens.split(options.layers)
        watched = resolve(model, spec, trace)
        runner, watched = probe.runner_for(model, watched)
        if runner is not model or trace is None:
            fitted = probes.fit_to_model(probe_batch, probe.input_specs(runner))
            inputs = probe.to_tensors(runner, fitted)
        image = any(np.ndim(a) == 4 for a in probes.leaves(fitted))
        watched = tokens.prepare(runner, watched, requests, image=image)
        self.watched = watched
        self.probe_images = (
            probes.probe_images(fitted, probe.input_specs(runner)) if options.log_probes else []
        )
        self.count = probes.count_of(fitted)
        plans = [self._plan(w) for w in watched]
        self._warn_budget(plans)
        known = [continuity.channels.get(p.path) for p in plans]
        decided = options.channels == "first" or all(
            k is not None and len(k) == len(p.layout.channels) for k, p in zip(known, plans, strict=True)
        )
        self.probe_fn = probe.ProbeFunction(model, runner, watched, inputs, plans, self.backend,
                                            activity=not decided)
        self.atlas = None
        if options.atlas is not None or options.maximize is not None:
            forward = probe.Forward(runner, watched)  # all watched layers in one pass
        if options.atlas is not None:
            from actlog.atlas_pass import AtlasPass

            self.atlas = AtlasPass(model, runner, forward, plans, options.atlas, self.backend)
        self.maximize = None
        if options.maximize is not None:
            self.maximize = MaximizePass(model, runner, forward, plans, options.maximize,
                                         self.backend, fitted)
        self.class_maps = None
        if options.class_maps is not None:
            from actlog.class_maps import ClassMapsPass

            self.class_maps = ClassMapsPass(model, probe_batch, plans, options.class_maps, self.backend)
        # Every process of a model spread over several (multi-process JAX) runs each event's
        # device half, on the same probes and pool; only the chief writes.
        self.lockstep = self.backend.lockstep(model)
        if self.lockstep:
            self.backend.check_same("probes", probes.leaves(fitted))
            if self.atlas is not None:
                self.backend.check_same("atlas pools", probes.leaves(self.atlas.pool))
        if decided:
            self._choose(plans, [k or p.layout.channels for k, p in zip(known, plans, strict=True)])
        else:
            self.plans, self._channels = plans, None  # decided at the first event
        self._later = threading.Semaphore(1)  # a part whose reductions wait (reduces_later)
        self._assemblers: dict[str, EventAssembler] = {}
        self._writers: dict[str, RunWriter] = {}
        self.worker = Worker(
            background=options.background,
            # Jobs, not events: each event is one job per part of the probe function, then a write.
            max_pending=options.max_pending * (self.probe_fn.parts + 1),
            on_full=options.on_full,
            on_error=lambda err: faults.report(*classify(err, "an event")),
            on_start=self.backend.enter_background,
        )

    # -- setup ------------------------------------------------------------------------

    def _plan(self, w: Any) -> LayerPlan:
        shape = tuple(w.shape[1:])
        grid.check_layer_rank(w.path, shape)
        data_format = _data_format(w.layer)
        last = (*shape[1:], shape[0]) if data_format == "channels_first" and len(shape) >= 2 else shape
        height, width, channels = grid.maps_shape(last)
        if w.tokens is not None:
            height, width = w.tokens.map_hw
        o = self.options
        shown = channels if o.max_channels is None else min(channels, o.max_channels)
        try:
            layout = grid.plan_layout(
                (height, width), range(shown), max_pixels=o.max_pixels, min_tile=o.min_tile,
                pad=o.pad, rows=o.rows, cols=o.cols, tokens=w.tokens,
            )
        except ValueError as err:
            raise ValueError(
                f"The grid of layer {w.name!r} (output shape {shape}, {shown} channels shown) "
                f"cannot be laid out: {err}"
            ) from None
        return LayerPlan(w.name, w.path, type(w.layer).__name__, shape, data_format, layout, o.norm,
                         o.cmap, "attention" if w.attention else "output")

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

    def capture(self, run: str, step: int, kind: str = "grids") -> None:
        """The training thread's half of an event at ``step`` of ``run``: grids, or (in the
        epoch run) the ``"atlas"`` or the ``"actmax"`` maximisation.

        The probe function runs part by part (one part unless many large layers are
        watched, see :data:`actlog.probe.PART_BYTES`); each part's results go to the
        background as soon as they are copied, so at most the queue's worth of them
        is ever held.

        Under :meth:`actlog.backends.Backend.lockstep` every process runs the device half
        (the others keep only the sketches for the next event's drift); only the chief
        hands anything to the background, and a fault of its own before the device half
        (choosing the run's directory) drops the event without skipping the device half.
        """
        if kind != "grids":
            rare = {"atlas": self.capture_atlas, "actmax": self.capture_maximize,
                    "cam": self.capture_class_maps}
            return rare[kind](step)
        if not (self.chief or self.lockstep):
            return
        full = self.chief and self.options.on_full == "skip" and self.worker.room() < self.probe_fn.parts + 1
        if full and not self.lockstep:
            return self._skipped(run, step)
        previous = self.continuity.previous.get(run)
        self._decide_channels(previous)  # before the run's assembler, which draws those channels
        event = None
        if self.chief and not full:
            # In lockstep, nothing that only the chief does may keep it from the probe function.
            event = self._host(lambda: self._start_event(run, step, previous), run, step)
        zeros = previous or self.probe_fn.zero_sketches()
        sketches = list(zeros)  # the next event's previous, part by part
        for indices, out in self.probe_fn.run_parts(self._channels, zeros, later=True):
            if event is None:  # another process writes, or this event is dropped
                for i, o in zip(indices, out, strict=True):
                    sketches[i] = o["sketch"]
                continue
            if callable(out):
                # Reductions in the background: at most one part's raw outputs wait there.
                self._later.acquire()
                results = functools.partial(self._reduce_later, out, indices, zeros, sketches)
            else:
                results = self._fetch(out, indices, sketches)
            self.worker.submit(functools.partial(self._render, event, indices, results), wait=True)
        self.continuity.previous[run] = sketches
        if event is not None:
            self.worker.submit(functools.partial(self._write, event), wait=True)
        elif full:
            self._skipped(run, step)

    def _decide(self, run: str, step: int) -> bool:
        """The run's directory, chosen at the logger's first event (it reads the store)."""
        self.destination.decide(run, step, [p.name for p in self.plans])
        return True

    def _start_event(self, run: str, step: int, previous: list[Any] | None) -> _Event:
        self._decide(run, step)
        return _Event(run, step, first=self._assembler(run), has_previous=previous is not None)

    def _host(self, work: Any, run: str, step: int) -> Any:
        """``work()``, the chief's own part of an event before its device half; in lockstep a
        fault there is reported and the event dropped (None), the device half still runs,
        as on every other process."""
        if not self.lockstep:
            return work()
        try:
            return work()
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, self._what(run, step)), err)
            return None

    def _skipped(self, run: str, step: int) -> None:
        self.faults.report(
            "skipped",
            f"step {step} of run {self.destination.name(run)!r} was not logged: "
            f"{self.options.max_pending} events were still being written (on_full='skip')",
        )

    def _fetch(self, out: list[dict[str, Any]], indices: list[int], sketches: list[Any]) -> Any:
        """Keep a part's sketches and start copying the rest: ``() -> (host results, masks)``."""
        for i, o in zip(indices, out, strict=True):
            sketches[i] = o["sketch"]
        fetch = self.backend.fetch([{key: o[key] for key in _FETCHED if key in o} for o in out])
        masks = [o["nonfinite"] for o in out]
        return lambda: (fetch(), masks)

    def _reduce_later(self, reduce: Any, indices: list[int], previous: list[Any],
                      sketches: list[Any]) -> Any:
        """Background: a part's reductions (see :meth:`actlog.probe.ProbeFunction.run_parts`);
        if they fail, the next event's drift compares with this one's ``previous``."""
        try:
            out = reduce()
        except BaseException:
            for i in indices:
                sketches[i] = previous[i]
            raise
        finally:
            self._later.release()
        return self._fetch(out, indices, sketches)()

    def capture_atlas(self, step: int) -> None:
        """The training thread's half of an atlas event at ``step`` of the epoch run."""
        if self.atlas is not None:
            self._capture_rare(step, "the atlas", self._stream_atlas)

    def capture_maximize(self, step: int) -> None:
        """The training thread's half of an activation-maximisation event at ``step``."""
        if self.maximize is not None:
            self._capture_rare(step, "the maximisation", self._run_maximize)

    def capture_class_maps(self, step: int) -> None:
        """The training thread's half of a class-map event at ``step`` (beside its grids)."""
        if self.class_maps is not None:
            self._capture_rare(step, "the class maps", self._run_class_maps)

    def _capture_rare(self, step: int, what: str, work: Any) -> None:
        """``work()`` on the training thread; the summary it returns, in the background."""
        if not (self.chief or self.lockstep):
            return
        run = metadata.EPOCH_RUN
        ready = self.chief and self._host(functools.partial(self._decide, run, step), run, step)
        summary = work(step)
        if ready:
            job = functools.partial(self._finish_rare, step, self._assembler(run), what, summary)
            self._submit(job, run, step)

    def _stream_atlas(self, step: int) -> Any:
        self._decide_channels(self.continuity.previous.get(metadata.EPOCH_RUN))
        tops = self.atlas.stream(self._channels)
        previous = [self.continuity.atlas.get(p.path) for p in self.plans]
        self.continuity.atlas.update({p.path: top[0] for p, top in zip(self.plans, tops, strict=True)})
        return functools.partial(self._atlas_summary, step, tops, previous)

    def _run_maximize(self, step: int) -> Any:
        return functools.partial(self._maximize_summary, self.maximize.run())

    def _run_class_maps(self, step: int) -> Any:
        return functools.partial(self._class_maps_summary, self.class_maps.run())

    def _decide_channels(self, previous: list[Any] | None) -> None:
        if self._channels is not None:
            return
        # channels="most_active": decided once, at the first event
        out = self.probe_fn(self.probe_fn.first_channels(), previous or self.probe_fn.zero_sketches())
        activity = self.backend.fetch([o["sums"][stats.SUMS.index("activity")] for o in out])()
        self._choose(self.plans, [
            grid.choose_channels(a, self.options.max_channels, "most_active") for a in activity
        ])

    def _assembler(self, run: str) -> bool:
        """Make the run's assembler at its first event of this session: True then (the
        run's header goes with that event)."""
        if run in self._assemblers:
            return False
        extras: list[dict[str, Any]] = [{} for _ in self.plans]
        if self.atlas is not None and run == metadata.EPOCH_RUN:
            for extra, entry in zip(extras, self.atlas.manifest_entries(self.plans), strict=True):
                extra["atlas"] = entry
        if self.maximize is not None and run == metadata.EPOCH_RUN:
            for extra, plan in zip(extras, self.plans, strict=True):
                extra.update(self.maximize.manifest_entry(plan.name))
        if self.class_maps is not None and run == metadata.EPOCH_RUN:
            at = [p.name for p in self.plans].index(self.class_maps.plan.name)
            extras[at].update(self.class_maps.manifest_entry())
        self._assemblers[run] = EventAssembler(
            self.plans, probes=self.count, with_stats=self.options.stats,
            step_axis=metadata.STEP_AXIS_EPOCH if run == metadata.EPOCH_RUN
            else metadata.STEP_AXIS_GLOBAL_STEP,
            probe_images=self.probe_images, extras=extras,
        )
        return True

    def _submit(self, job: Any, run: str, step: int) -> None:
        if not self.worker.submit(job):
            self._skipped(run, step)

    def _what(self, run: str, step: int) -> str:
        return f"step {step} of run {self.destination.name(run)!r} under {self.destination.log_dir!r}"

    def _atlas_summary(self, step: int, tops: list[Any], previous: list[Any]) -> bytes:
        results = self.atlas.finish(self.plans, tops, previous)
        for r in results:
            if (~np.isfinite(r.value) & (r.index >= 0)).any():
                self.faults.report("nonfinite", f"layer {r.name!r} has NaN or Inf activations "
                                   f"on the atlas pool at step {step}")
        return atlas_summary(results)

    def _maximize_summary(self, images: Any) -> bytes:
        pictures = self.maximize.pictures(images)
        return images_summary({metadata.actmax_tag(layer): image for layer, (_, image) in pictures.items()})

    def _class_maps_summary(self, fetch: Any) -> bytes:
        host = fetch()
        return class_maps_summary(self.class_maps.plan.name, self.class_maps.pictures(host),
                                  host["maps"], host["classes"])

    def _finish_rare(self, step: int, first: bool, what: str, summary: Any) -> None:
        """The background half of an atlas or maximisation event: ``summary()``, one record."""
        run = metadata.EPOCH_RUN
        try:
            body = summary()
            header = self._assemblers[run].header() if first else None
            self._writer(run).write(step, (header or b"") + body, header=header)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, f"{what} at {self._what(run, step)}"), err)

    def _render(self, event: _Event, indices: list[int], results: Any) -> None:
        """Background: one part's grids and statistics, serialized. ``results()`` gives the
        part's copied results and NaN masks (running its reductions first where they wait)."""
        try:
            host, masks = results()
            if event.error is not None:
                return
            layers = [
                LayerResult(
                    levels=h["levels"], sums=h["sums"], drift=h["drift"] if event.has_previous else None,
                    nonfinite=functools.partial(_fetch_one, self.backend, mask), gram=h.get("gram"),
                )
                for h, mask in zip(host, masks, strict=True)
            ]
            body, nonfinite = self._assemblers[event.run].layers(indices, layers)
            event.body.append(body)
            event.nonfinite += nonfinite
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            event.error = event.error or err

    def _write(self, event: _Event) -> None:
        """Background: the event's one record."""
        what = self._what(event.run, event.step)
        try:
            if event.error is not None:
                raise event.error
            for name in event.nonfinite:
                self.faults.report(
                    "nonfinite", f"layer {name!r} has NaN or Inf activations at step {event.step}"
                )
            header = self._assemblers[event.run].header() if event.first else None
            pieces = [header, event.body] if header is not None else [event.body]
            self._writer(event.run).write(event.step, pieces, header=header)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, what), err)
        finally:
            event.body.close()

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
    body: Spool = field(default_factory=Spool)  # the layers' Summary values, part after part
    nonfinite: list[str] = field(default_factory=list)
    error: BaseException | None = None


_FETCHED = ("levels", "sums", "drift", "gram")
"""What of a layer's reductions is copied to the host at every event (``gram``: when on)."""


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
