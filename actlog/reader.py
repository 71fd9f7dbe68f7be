"""Read an actlog log back as numpy arrays, without TensorFlow.

:func:`read` walks a log directory (local, or any URL :mod:`actlog.storage`
serves), finds every run that holds actlog data (event files with an
``actlog/manifest`` record, see :mod:`actlog.metadata`) and parses its event
files itself through :mod:`actlog.codec` (records, then the ``Event`` and
``Summary`` protocol buffers that ship with TensorBoard). Every step is kept
(TensorBoard's own loader keeps a sample of 10 images per tag unless told
otherwise); grids come back as uint8 arrays and statistics as numpy arrays.
Images are decoded only when asked for: an index remembers where each one is.

```python
log = actlog.read("runs/exp1")
log.runs                                   # ['activations']
run = log.run("activations")               # or log["activations"], or log.run()
run.layers, run.probes, run.steps          # ['conv_0', 'conv_1'], 4, [0, 1, 2, 3]
steps, grids = run.grids("conv_0", probe=0)    # (S,), uint8 (S, H, W, C)
steps, drift = run.scalar("conv_0", "drift")   # (S-1,), float64
steps, means = run.channel_stats("conv_0", "channel_mean")  # float32 (S, channels)
tile = run.tile("conv_0", probe=0, channel=3, step=2)      # that channel's tile
atlas = run.atlas("conv_0", step=2)        # the feature atlas (ActivationLogger(atlas=...))
atlas.index[atlas.row(3)]                  # channel 3's top-k pool indices, best first
crops = atlas.crops(3)                     # uint8 (k, h, w, 3): what channel 3 responds to most
steps, crops = run.atlas_crops("conv_0", channel=3)  # (S,), uint8 (S, k, h, w, 3): over time
steps, cka = run.similarity("conv_0")      # float64 (S, S): linear CKA between every two steps
```

Manifests: every ``fit`` writes one at its first event. A run's layers are
those of all its manifests (two loggers writing one run keep both sets), and a
grid at step ``s`` is cut into tiles with the layout of the last manifest
written at or before ``s`` that names its layer, so a logger reused on a
differently shaped model is read with the right geometry at every step.

Logs still being written and logs cut short by a crash are fine: a record that
is not complete yet (or was never finished) ends the reading of its file, and
everything before it is returned, with one warning naming the file.
:meth:`Log.refresh` reads only what was appended since (the dashboard's live view).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from actlog import codec, metadata, storage
from actlog.index import (
    EventIndex,
    ImageRef,
    ImageStore,
    LogError,
    warn,
)
from actlog.run_atlas import Atlas, AtlasReader
from actlog.run_class_maps import ClassMapReader
from actlog.run_grids import GridReader
from actlog.run_similarity import SimilarityReader
from actlog.run_stats import StatReader
from actlog.run_view import describe_steps

__all__ = ["Atlas", "ImageRef", "LogError", "Log", "Run", "read"]

# --------------------------------------------------------------------------
# Public API.


class Run(GridReader, StatReader, AtlasReader, ClassMapReader, SimilarityReader):
    """One run of an actlog log: the grids and statistics of its layers, by step.

    Obtained from :meth:`Log.run`. Each kind of data has its own reader
    (:class:`~actlog.run_grids.GridReader`, :class:`~actlog.run_stats.StatReader`,
    :class:`~actlog.run_atlas.AtlasReader`, :class:`~actlog.run_class_maps.ClassMapReader`,
    :class:`~actlog.run_similarity.SimilarityReader`),
    all over one
    :class:`~actlog.run_view.RunView` of the run's manifests.

    Attributes:
        name: the run's path relative to the log directory, e.g. ``"activations"``.
        path: the run's directory.
        manifest: the last manifest written, as a dict (see :func:`actlog.metadata.manifest`).
    """

    def __repr__(self) -> str:
        return (
            f"<actlog.reader.Run {self.name!r}: {len(self.layers)} layers, "
            f"{self.probes} probes, {describe_steps(self.steps)}>"
        )


class Log:
    """Every actlog run under one log directory.

    Obtained from :func:`read`. Index it by run name, or call :meth:`run`.

    Attributes:
        path: the log directory.
        runs: run names (paths relative to ``path``, ``"."`` for ``path`` itself), sorted.
    """

    def __init__(self, path: str, *, verify: bool = True) -> None:
        self.path = path
        self.verify = verify
        self._store = storage.for_path(path)
        self._images = ImageStore(self._store)
        self._data: dict[str, EventIndex] = {}
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<actlog.reader.Log {self.path!r}: runs {self.runs}>"

    def refresh(self) -> bool:
        """Read what was written since the last look (new runs, files and records).

        Returns True when anything new was read. Thread-safe.
        """
        with self._lock:
            changed = False
            for directory, files in self._store.walk(self.path):
                if not any(map(codec.is_event_file, files)):
                    continue
                relative = _relative(self.path, directory)
                data = self._data.get(relative)
                if data is None:
                    data = self._data[relative] = EventIndex(self._store, directory, self.verify)
                changed |= data.refresh(files)
                if relative not in self._runs and data.manifests:
                    self._runs[relative] = Run(relative, data, self._images)
            return changed

    def others(self) -> list[str]:
        """Runs under :attr:`path` with event files but no actlog data (Keras' ``train``, ...)."""
        return sorted(name for name, data in self._data.items() if not data.manifests)

    def torn(self) -> list[tuple[str, str]]:
        """``(file, what)`` for every event file whose last record is not complete (yet)."""
        return [
            (file.path, file.torn)
            for data in self._data.values()
            for file in data.files.values()
            if file.torn is not None
        ]

    @property
    def runs(self) -> list[str]:
        return sorted(self._runs)

    @property
    def bytes(self) -> int:
        """Size of the event files of every actlog run."""
        return sum(run.bytes for run in self._runs.values())

    def run(self, name: str | None = None) -> Run:
        """The run called ``name``.

        Args:
            name: a run name from :attr:`runs`. ``None`` picks the epoch run
                (``"activations"``) when there is one, else the only run.
        """
        if name is None:
            if metadata.EPOCH_RUN in self._runs:
                return self._runs[metadata.EPOCH_RUN]
            if len(self._runs) == 1:
                return next(iter(self._runs.values()))
            raise LogError(
                f"Several runs under {self.path!r}; choose one with Log.run(name): {self.runs}."
            )
        try:
            return self._runs[name]
        except KeyError:
            from actlog.checks import suggest

            raise LogError(
                f"No run {name!r} under {self.path!r}. Runs: {self.runs}.{suggest(name, self.runs)}"
            ) from None

    def __getitem__(self, name: str) -> Run:
        return self.run(name)

    def __contains__(self, name: object) -> bool:
        return name in self._runs

    def __iter__(self) -> Iterator[Run]:
        return (self._runs[name] for name in self.runs)

    def __len__(self) -> int:
        return len(self._runs)


def _relative(top: str, directory: str) -> str:
    if storage.is_url(top):
        rest = directory[len(top.rstrip("/")):].strip("/")
        return rest or "."
    return os.path.relpath(directory, top).replace(os.sep, "/")


def read(log_dir: str | os.PathLike[str], *, verify: bool = True) -> Log:
    """Read every actlog run under ``log_dir``.

    A run is any directory at or below ``log_dir`` whose event files hold an
    actlog manifest; Keras' ``train``/``validation`` runs and other
    directories are skipped. Every step of every tag is indexed (no sampling).

    ```python
    log = actlog.read("runs/exp1")
    run = log.run()                    # the epoch run
    steps, grids = run.grids("conv_0", probe=0)
    ```

    Args:
        log_dir: the directory given to ``ActivationLogger`` (or any parent of
            it): a local path or a URL (``memory://``, ``gs://``, ...).
        verify: check the CRC of every record's data (about 1 ms per MB). The
            length CRC of every record is always checked.

    Returns:
        A :class:`Log`.

    Raises:
        LogError: ``log_dir`` is missing, not a directory, or holds no actlog run.
    """
    path = os.fspath(log_dir)
    try:
        store = storage.for_path(path)
    except ValueError as err:
        raise LogError(str(err)) from None
    if not store.exists(path):
        raise LogError(f"Log directory {path!r} does not exist.")
    if not store.isdir(path):
        raise LogError(f"{path!r} is not a directory; expected a log directory.")
    log = Log(path, verify=verify)
    log.refresh()
    for file, problem in log.torn():
        warn(
            f"{file}: {problem} (a run still being written, or a crash mid-write); returning "
            "the complete records before it."
        )
    if not log.runs:
        others = log.others()
        detail = f"event files without actlog data in: {others}" if others else "no event files at all"
        raise LogError(f"No actlog runs under {path!r} ({detail}).")
    return log
