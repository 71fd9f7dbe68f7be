"""One training run of an :class:`~actlog.ActivationLogger`: built at ``on_train_begin``.

A session chooses the layers, builds the probe function and the grid layouts
(every configuration error surfaces here, before the first training step),
then turns each event into two halves:

- :meth:`Session.capture`, on the training thread: the probe function's device
  half, part by part (:meth:`actlog.probe.ProbeFunction.run_parts`): on an
  accelerator the forward pass and the reductions, on the host the forward pass
  alone, its raw outputs reduced in the background (at most one part at a time);
- the rest in the background worker (:mod:`actlog.worker`): statistics,
  grids, PNGs, one record, written in step order.

The rare passes (the atlas, activation maximisation and class maps) are split the same way,
by :mod:`actlog.rare`; the layer plans come from :mod:`actlog.plans`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlog import backends, grid, metadata, probe, probes, stats
from actlog import plans as layer_plans
from actlog.atlas import AtlasOptions
from actlog.class_maps import ClassMapsOptions
from actlog.event import EventAssembler, LayerPlan, LayerResult
from actlog.faults import Faults, classify
from actlog.maximize import MaximizeOptions
from actlog.rare import RarePasses
from actlog.runs import Destination
from actlog.worker import Worker
from actlog.writer import RunWriter, Spool


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

        runner, watched, fitted, inputs = layer_plans.watch(model, probe_batch, options.layers)
        self.watched = watched
        self.probe_images = (
            probes.probe_images(fitted, probe.input_specs(runner)) if options.log_probes else []
        )
        self.count = probes.count_of(fitted)
        plans = [layer_plans.layer_plan(w, options) for w in watched]
        layer_plans.warn_budget(plans, options.max_pixels, self.count)
        known = [continuity.channels.get(p.path) for p in plans]
        decided = options.channels == "first" or all(
            k is not None and len(k) == len(p.layout.channels) for k, p in zip(known, plans, strict=True)
        )
        self.probe_fn = probe.ProbeFunction(model, runner, watched, inputs, plans, self.backend,
                                            activity=not decided)
        self.rare = RarePasses(self, model, runner, watched, plans, fitted, probe_batch)
        # Every process of a model spread over several (multi-process JAX) runs each event's
        # device half, on the same probes and pool; only the chief writes.
        self.lockstep = self.backend.lockstep(model)
        if self.lockstep:
            for what, arrays in [("probes", probes.leaves(fitted)), *self.rare.pools()]:
                self.backend.check_same(what, arrays)
        if decided:
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

    # -- channels -------------------------------------------------------------------

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
        """The training thread's half of an event at ``step`` of ``run``: grids, the ``"cam"``
        class maps, or (in the epoch run) the ``"atlas"`` or the ``"actmax"`` maximisation.

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
            return self.rare.capture(kind, run, step)
        if not (self.chief or self.lockstep):
            return
        full = self.chief and self.options.on_full == "skip" and self.worker.room() < self.probe_fn.parts + 1
        if full and not self.lockstep:
            return self._skipped(run, step)
        previous = self.continuity.previous.get(run)
        channels = self.channels(previous)  # before the run's assembler, which draws them
        event = None
        if self.chief and not full:
            # In lockstep, nothing that only the chief does may keep it from the probe function.
            event = self.host_part(lambda: self._start_event(run, step, previous), run, step)
        zeros = previous or self.probe_fn.zero_sketches()
        sketches = list(zeros)  # the next event's previous, part by part
        for part in self.probe_fn.run_parts(channels, zeros):
            for i, sketch in zip(part.indices, part.sketches, strict=True):
                if sketch is not None:  # known now (else the background's finish gives it)
                    sketches[i] = sketch
            if event is None:  # another process writes, or this event is dropped
                for i, o in zip(part.indices, part.finish(), strict=True):
                    sketches[i] = o["sketch"]
                continue
            job = functools.partial(self._finish, part, zeros, sketches)
            self.worker.submit(functools.partial(self._render, event, part.indices, job), wait=True)
        self.continuity.previous[run] = sketches
        if event is not None:
            self.worker.submit(functools.partial(self._write, event), wait=True)
        elif full:
            self._skipped(run, step)

    def decide(self, run: str, step: int) -> bool:
        """The run's directory, chosen at the logger's first event (it reads the store)."""
        self.destination.decide(run, step, [p.name for p in self.plans])
        return True

    def _start_event(self, run: str, step: int, previous: list[Any] | None) -> _Event:
        self.decide(run, step)
        return _Event(run, step, first=self.assembler(run), has_previous=previous is not None)

    def host_part(self, work: Any, run: str, step: int) -> Any:
        """``work()``, the chief's own part of an event before its device half; in lockstep a
        fault there is reported and the event dropped (None), the device half still runs,
        as on every other process."""
        if not self.lockstep:
            return work()
        try:
            return work()
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, self.what(run, step)), err)
            return None

    def _skipped(self, run: str, step: int) -> None:
        self.faults.report(
            "skipped",
            f"step {step} of run {self.destination.name(run)!r} was not logged: "
            f"{self.options.max_pending} events were still being written (on_full='skip')",
        )

    def _finish(self, part: Any, previous: list[Any], sketches: list[Any]) -> Any:
        """A part's results (reduced first where they wait: :class:`actlog.probe.Handed`),
        its sketches kept and the rest copied: ``(host results, masks)``. If they fail, the
        next event's drift compares with this one's ``previous``."""
        try:
            out = part.finish()
        except BaseException:
            for i in part.indices:
                sketches[i] = previous[i]
            raise
        for i, o in zip(part.indices, out, strict=True):
            sketches[i] = o["sketch"]
        fetch = self.backend.fetch([{key: o[key] for key in _FETCHED if key in o} for o in out])
        return fetch(), [o["nonfinite"] for o in out]

    def channels(self, previous: list[Any] | None) -> list[Any]:
        """The shown channels as the probe function takes them; with ``channels="most_active"``
        decided once, at the first event (``previous``: that run's sketches, if any)."""
        if self._channels is not None:
            return self._channels
        out = self.probe_fn(self.probe_fn.first_channels(), previous or self.probe_fn.zero_sketches())
        activity = self.backend.fetch([o["sums"][stats.SUMS.index("activity")] for o in out])()
        self._choose(self.plans, [
            grid.choose_channels(a, self.options.max_channels, "most_active") for a in activity
        ])
        return self._channels

    def assembler(self, run: str) -> bool:
        """Make the run's assembler at its first event of this session: True then (the
        run's header goes with that event)."""
        if run in self._assemblers:
            return False
        epoch = run == metadata.EPOCH_RUN
        extras = self.rare.manifest_extras(self.plans, epoch=epoch)
        self._assemblers[run] = EventAssembler(
            self.plans, probes=self.count, with_stats=self.options.stats,
            step_axis=metadata.STEP_AXIS_EPOCH if epoch
            else metadata.STEP_AXIS_GLOBAL_STEP,
            probe_images=self.probe_images, extras=extras,
        )
        return True

    def header(self, run: str) -> bytes:
        """The run's header (its manifest), which goes with its first event."""
        return self._assemblers[run].header()

    def submit(self, job: Any, run: str, step: int) -> None:
        if not self.worker.submit(job):
            self._skipped(run, step)

    def what(self, run: str, step: int) -> str:
        return f"step {step} of run {self.destination.name(run)!r} under {self.destination.log_dir!r}"

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
        what = self.what(event.run, event.step)
        try:
            if event.error is not None:
                raise event.error
            for name in event.nonfinite:
                self.faults.report(
                    "nonfinite", f"layer {name!r} has NaN or Inf activations at step {event.step}"
                )
            header = self.header(event.run) if event.first else None
            pieces = [header, event.body] if header is not None else [event.body]
            self.writer(event.run).write(event.step, pieces, header=header)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            self.faults.report(*classify(err, what), err)
        finally:
            event.body.close()

    def writer(self, run: str) -> RunWriter:
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
