"""The actlog runs a TensorBoard serves, read straight from its log directories.

TensorBoard's loader keeps a sample of each series (10 images per tag unless
``--samples_per_plugin`` says otherwise), and the dashboard promises every
step. Rather than raise that sample for everyone's logs, the dashboard reads
actlog's runs itself with :class:`actlog.reader.Log`, which indexes every step
and decodes an image only when asked for it. TensorBoard's own loading is left
exactly as it is.

:class:`Catalog` owns one :class:`~actlog.reader.Log` per log directory given
to ``tensorboard`` (``--logdir``, or each path of ``--logdir_spec``). It reads
what was appended at most every :data:`MIN_REFRESH_SECONDS`, when a request
asks (the page polls ``/steps`` while it is open; an idle TensorBoard costs
nothing), and keeps one immutable :class:`RunIndex` per run, rebuilt only when
the reader's :attr:`~actlog.reader.Run.version` says new data came: manifests
and steps are read once per change of a run, never per request.

One lock guards the reader: a refresh and any other use of it never overlap,
except reading an image's bytes, which the reader does safely on its own.
Requests otherwise work on the index they were handed, which never changes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actlog import metadata
from actlog.grid import GridLayout
from actlog.plugin.cam import ClassMapIndex, index_class_maps
from actlog.reader import Atlas, ImageRef, Log, LogError, Run

logger = logging.getLogger(__name__)

MIN_REFRESH_SECONDS = 2.0
"""Shortest time between two looks at the log directories for new data."""

NO_LOGDIR = (
    "TensorBoard was started without --logdir or --logdir_spec (a database or a remote "
    "data provider, for instance). The Activations dashboard reads actlog's runs from a log "
    "directory itself: start `tensorboard --logdir DIR` to see them."
)

_URI_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z.]*://")


@dataclass(frozen=True)
class Source:
    """One log directory; runs under it are named as TensorBoard names them."""

    path: str
    group: str | None = None  # the NAME of --logdir_spec NAME:PATH

    def run_name(self, relative: str) -> str:
        return relative if self.group is None else f"{self.group}/{relative}"


def sources(context: Any) -> list[Source]:
    """The log directories TensorBoard was started with (empty when it has none).

    Args:
        context: TensorBoard's ``TBContext``; its ``logdir``, else its flags'
            ``logdir`` or ``logdir_spec``.
    """
    flags = getattr(context, "flags", None)
    logdir = getattr(context, "logdir", None) or getattr(flags, "logdir", None)
    if logdir:
        return [Source(logdir if _URI_RE.match(logdir) else os.path.expanduser(logdir))]
    return parse_logdir_spec(getattr(flags, "logdir_spec", None) or "")


def parse_logdir_spec(spec: str) -> list[Source]:
    """``--logdir_spec`` as TensorBoard reads it: ``[NAME:]PATH`` separated by commas.

    A part that starts with ``/``, a URL (``gs://...``) or a drive letter has
    no name; ``NAME:PATH`` splits at the first colon.
    """
    found = []
    for part in spec.split(","):
        if not part:
            continue
        named = (
            ":" in part
            and not _URI_RE.match(part)
            and not part.startswith("/")
            and not os.path.splitdrive(part)[0]
        )
        group, path = part.split(":", 1) if named else (None, part)
        if not _URI_RE.match(path):
            path = os.path.realpath(os.path.expanduser(path))
        found.append(Source(path, group))
    return found


# --------------------------------------------------------------------------- index


@dataclass(frozen=True)
class GridStep:
    """One logged grid: its step, when it was written and where it is."""

    step: int
    wall_time: float | None
    ref: ImageRef | bytes
    layout: int
    """Index into :attr:`LayerIndex.layouts` of the layout it was drawn with."""


@dataclass(frozen=True)
class LayerIndex:
    """What the dashboard shows of one layer of one run, at one version of the run."""

    name: str
    info: dict[str, Any]
    """The layer's latest manifest entry."""
    layouts: list[tuple[int, GridLayout]]
    """``(first step drawn with it, layout)``, in step order; several after a
    later ``fit`` logged the layer with another geometry."""
    grids: dict[int, list[GridStep]]
    """Probe -> every logged grid of that probe, in step order."""
    channels: dict[int, int]
    """Step -> channels of the layer's output at that step."""
    scalars: dict[str, tuple[list[int], list[float]]]
    """Scalar statistic -> ``(steps, values)``."""
    atlas: list[Atlas] = field(default_factory=list)
    """The layer's feature atlas at every atlas step, in step order (empty without one)."""
    atlas_problem: str | None = None
    """Why atlas steps the log holds are left out (a manifest without their entry), or None."""

    @property
    def channel_count(self) -> int:
        """The most channels the layer had at any step."""
        return max(self.channels.values(), default=_channel_count(self.info))


@dataclass(frozen=True)
class RunIndex:
    """An immutable view of one run at one :attr:`version` (see the module docstring)."""

    name: str
    version: int
    step_axis: str
    probes: int
    steps: list[int]
    layers: dict[str, LayerIndex]
    probe_images: list[ImageRef | bytes | None]
    run: Run = field(repr=False, compare=False)
    class_maps: ClassMapIndex | None = None
    """The run's class maps (``ActivationLogger(cam=...)``), None without them."""
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    """Derived values (JSON bodies) computed once per index; see :meth:`remember`."""

    def remember(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per key for this index (the index never changes)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def png(self, ref: ImageRef | bytes) -> bytes:
        """The PNG bytes of one of this run's images (thread-safe in the reader)."""
        return self.run.png(ref)


def _channel_count(info: dict[str, Any]) -> int:
    shape = info.get("output_shape") or [0]
    value = shape[0] if info.get("data_format") == "channels_first" else shape[-1]
    return int(value) if isinstance(value, int) else 0


def index_run(name: str, run: Run) -> RunIndex:
    """Read everything the dashboard needs of ``run`` now (call with the catalog's lock held)."""
    layers = {layer: _index_layer(run, layer) for layer in run.layers}
    return RunIndex(
        name=name,
        version=run.version,
        step_axis=run.step_axis,
        probes=run.probes,
        steps=run.steps,
        layers=layers,
        probe_images=[run.probe_image_ref(p) for p in range(run.probes)],
        run=run,
        class_maps=index_class_maps(run),
    )


def _index_layer(run: Run, layer: str) -> LayerIndex:
    layouts: list[tuple[int, GridLayout]] = []
    at_step: dict[int, int] = {}

    def layout_index(step: int) -> int:
        if step not in at_step:
            layout = run.layout(layer, step)
            same = [i for i, (_, known) in enumerate(layouts) if known == layout]
            if not same:
                layouts.append((step, layout))
            at_step[step] = same[0] if same else len(layouts) - 1
        return at_step[step]

    grids: dict[int, list[GridStep]] = {}
    for probe in range(run.probes):
        try:
            steps = run.grid_steps(layer, probe)
        except LogError:  # a later manifest added probes this layer never had
            steps = []
        entries = []
        for step in steps:
            ref = run.grid_ref(layer, probe, step)
            wall_time = None if isinstance(ref, bytes) else ref.wall_time
            entries.append(GridStep(step, wall_time, ref, layout_index(step)))
        grids[probe] = entries
    scalars = {
        stat: ([int(s) for s in steps], [float(v) for v in values])
        for stat, (steps, values) in run.scalars(layer).items()
    }
    logged = {entry.step for entries in grids.values() for entry in entries}
    logged.update(step for steps, _ in scalars.values() for step in steps)
    channels = {s: _channel_count(run.layer_info(layer, s)) for s in sorted(logged)}
    atlas, problem = _index_atlas(run, layer)
    return LayerIndex(layer, run.layer_info(layer), layouts, grids, channels, scalars, atlas, problem)


def _index_atlas(run: Run, layer: str) -> tuple[list[Atlas], str | None]:
    """Every atlas step of ``layer`` that can be read, and why any other cannot."""
    found, problems = [], []
    for step in run.atlas_steps(layer):
        try:
            found.append(run.atlas(layer, step))
        except LogError as err:
            problems.append(f"step {step}: {err}")
    return found, ("; ".join(problems) or None)


# --------------------------------------------------------------------------- catalog


class Catalog:
    """Every actlog run under the log directories TensorBoard serves.

    Args:
        sources: the log directories (:func:`sources`); none is allowed, and
            then :attr:`problem` says why nothing can be shown.
        min_refresh: seconds between two looks for new data.
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        min_refresh: float = MIN_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = list(sources)
        self._logs: list[Log | str] = []  # a Log, or why none can be made for the path
        for source in self.sources:
            try:
                self._logs.append(Log(source.path))
            except ValueError as err:  # a URL no installed filesystem serves
                self._logs.append(str(err))
        self._min_refresh = min_refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._indexes: dict[str, RunIndex] = {}
        self._problems: list[str] = [] if self.sources else [NO_LOGDIR]
        self._warned: set[str] = set()

    @property
    def problem(self) -> str | None:
        """Why runs may be missing (no log directory, one that cannot be read), or None."""
        return " ".join(self._problems) or None

    def runs(self) -> dict[str, RunIndex]:
        """Run name -> its index, after a :meth:`refresh` if the last look is old."""
        self.refresh()
        return self._indexes

    def refresh(self, *, force: bool = False) -> None:
        """Read what was written since the last look, unless that was under
        ``min_refresh`` seconds ago (``force`` reads anyway)."""
        with self._lock:
            now = self._clock()
            if not force and self._checked is not None and now - self._checked < self._min_refresh:
                return
            self._checked = now
            problems = [] if self.sources else [NO_LOGDIR]
            found: dict[str, Run] = {}
            for source, log in zip(self.sources, self._logs, strict=True):
                if isinstance(log, str):
                    problems.append(log)
                    continue
                try:
                    log.refresh()
                except FileNotFoundError:
                    problems.append(f"The log directory {source.path!r} does not exist (yet).")
                except OSError as err:
                    problems.append(f"The log directory {source.path!r} cannot be read: {err}.")
                for run in log:
                    name = source.run_name(run.name)
                    if name in found:
                        self._warn_once(name, f"two log directories hold a run named {name!r}; "
                                              "showing the first")
                        continue
                    found[name] = run
            indexes = {}
            for name, run in found.items():
                old = self._indexes.get(name)
                if old is not None and old.run is run and old.version == run.version:
                    indexes[name] = old
                    continue
                try:
                    indexes[name] = index_run(name, run)
                except (LogError, ValueError, KeyError) as err:
                    problems.append(f"Run {name!r} cannot be shown: {err}")
            self._indexes, self._problems = indexes, problems

    def channel(self, index: RunIndex, layer: str, channel: int) -> dict[str, tuple[list[int], list[float]]]:
        """Each per-channel statistic of one channel of ``layer`` over steps (absent ones left out)."""
        stats = {}
        with self._lock:
            for stat in metadata.CHANNEL_STATS:
                try:
                    steps, values = index.run.channel_stat(layer, stat, channel)
                except LogError:
                    continue  # statistics off, or no drift yet
                stats[stat] = ([int(s) for s in steps], [float(v) for v in values])
        return stats

    def grams(self, index: RunIndex, layer: str) -> tuple[Any, Any] | None:
        """``layer``'s centred Gram matrices over steps (:meth:`actlog.reader.Run.grams`), or
        None for a log without them."""
        with self._lock:
            try:
                return index.run.grams(layer)
            except LogError:
                return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("actlog dashboard: %s", message)
