"""The passes of a training run beside its grids: the feature atlas, activation
maximisation and class activation maps.

Each runs at its own epochs (the class maps with each grid event), in the epoch run,
split like an event: the device work on the training thread (the pool through the
atlas function, :mod:`actlog.atlas_pass`; the gradient ascent, :mod:`actlog.maximize`;
the class score's gradient, :mod:`actlog.class_maps`), then in the background a
summary and one record of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from actlog import metadata, probe, probes
from actlog.event import LayerPlan, atlas_summary, class_maps_summary, images_summary
from actlog.faults import classify
from actlog.maximize import MaximizePass


class RarePasses:
    """The atlas, the maximisation and the class maps of one :class:`actlog.session.Session`
    (each may be off)."""

    def __init__(self, session: Any, model: Any, runner: Any, watched: Sequence[Any],
                 plans: Sequence[LayerPlan], fitted: Any, probe_batch: Any) -> None:
        self.session = session
        options = session.options
        self.atlas = self.maximize = self.class_maps = None
        if options.class_maps is not None:
            from actlog.class_maps import ClassMapsPass

            self.class_maps = ClassMapsPass(model, probe_batch, plans, options.class_maps, session.backend)
        if options.atlas is None and options.maximize is None:
            return
        forward = probe.Forward(runner, watched)  # all watched layers in one pass
        if options.atlas is not None:
            from actlog.atlas_pass import AtlasPass

            self.atlas = AtlasPass(model, runner, forward, plans, options.atlas, session.backend)
        if options.maximize is not None:
            self.maximize = MaximizePass(model, runner, forward, plans, options.maximize,
                                         session.backend, fitted)

    def pools(self) -> list[tuple[str, list[Any]]]:
        """The inputs every process must hold alike (:meth:`actlog.backends.Backend.check_same`)."""
        return [] if self.atlas is None else [("atlas pools", probes.leaves(self.atlas.pool))]

    def manifest_extras(self, plans: Sequence[LayerPlan], *, epoch: bool) -> list[dict[str, Any]]:
        """What a run's manifest says of each layer's atlas and maximisation (the epoch run's
        alone) and class maps (every run: they come with every grids event)."""
        extras: list[dict[str, Any]] = [{} for _ in plans]
        if self.atlas is not None and epoch:
            for extra, entry in zip(extras, self.atlas.manifest_entries(plans), strict=True):
                extra["atlas"] = entry
        if self.maximize is not None and epoch:
            for extra, plan in zip(extras, plans, strict=True):
                extra.update(self.maximize.manifest_entry(plan.name))
        if self.class_maps is not None:
            at = [p.name for p in plans].index(self.class_maps.plan.name)
            extras[at].update(self.class_maps.manifest_entry())
        return extras

    def capture(self, kind: str, run: str, step: int) -> None:
        """The training thread's half of an ``"atlas"`` or ``"actmax"`` event at ``step`` of the
        epoch run, or a ``"cam"`` event at ``step`` of ``run`` (epoch or batch-level)."""
        if run == metadata.EPOCH_RUN and kind == "atlas" and self.atlas is not None:
            self._capture(run, step, "the atlas", self._stream_atlas)
        elif run == metadata.EPOCH_RUN and kind == "actmax" and self.maximize is not None:
            self._capture(run, step, "the maximisation", self._run_maximize)
        elif kind == "cam" and self.class_maps is not None:
            self._capture(run, step, "the class maps", self._run_class_maps)

    def _capture(self, run: str, step: int, what: str, work: Any) -> None:
        """``work()`` on the training thread; the summary it returns, in the background."""
        s = self.session
        if not (s.chief or s.lockstep):
            return
        ready = s.chief and s.host_part(functools.partial(s.decide, run, step), run, step)
        summary = work(step)
        if ready:
            s.submit(functools.partial(self._finish, run, step, s.assembler(run), what, summary), run, step)

    def _stream_atlas(self, step: int) -> Any:
        s = self.session
        channels = s.channels(s.continuity.previous.get(metadata.EPOCH_RUN))
        tops = self.atlas.stream(channels)
        previous = [s.continuity.atlas.get(p.path) for p in s.plans]
        s.continuity.atlas.update({p.path: top[0] for p, top in zip(s.plans, tops, strict=True)})
        return functools.partial(self._atlas_summary, step, tops, previous)

    def _run_maximize(self, step: int) -> Any:
        return functools.partial(self._maximize_summary, self.maximize.run())

    def _run_class_maps(self, step: int) -> Any:
        return functools.partial(self._class_maps_summary, self.class_maps.run())

    def _class_maps_summary(self, fetch: Any) -> bytes:
        host = fetch()
        return class_maps_summary(self.class_maps.plan.name, self.class_maps.pictures(host),
                                  host["maps"], host["classes"])

    def _atlas_summary(self, step: int, tops: list[Any], previous: list[Any]) -> bytes:
        results = self.atlas.finish(self.session.plans, tops, previous)
        for r in results:
            if (~np.isfinite(r.value) & (r.index >= 0)).any():
                self.session.faults.report("nonfinite", f"layer {r.name!r} has NaN or Inf activations "
                                           f"on the atlas pool at step {step}")
        return atlas_summary(results)

    def _maximize_summary(self, images: Any) -> bytes:
        pictures = self.maximize.pictures(images)
        return images_summary({metadata.actmax_tag(layer): image for layer, (_, image) in pictures.items()})

    def _finish(self, run: str, step: int, first: bool, what: str, summary: Any) -> None:
        """The background half: ``summary()``, one record."""
        s = self.session
        try:
            body = summary()
            header = s.header(run) if first else None
            s.writer(run).write(step, (header or b"") + body, header=header)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            s.faults.report(*classify(err, f"{what} at {s.what(run, step)}"), err)
