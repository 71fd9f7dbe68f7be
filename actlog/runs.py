"""Which run directories a logger writes, so that two runs never mix in one.

A log directory is often used twice: a script run again, a notebook cell run
again, a tuner's trials, a resume that forgot ``initial_epoch``. Writing steps
0..N again into the same run would leave TensorBoard with two values per step
and readers with whichever came last. So at its first event a logger looks at
the run it is about to write (``LOG_DIR/activations``):

- nothing there, or only steps before the first step it will write (a resume
  with ``initial_epoch``): it writes there;
- events of this same process whose layers are all different (a second logger
  beside the first in one ``fit``): it writes there too; the reader and the
  dashboard show both loggers' layers;
- anything else: it writes to ``activations-2`` (and ``activations_batch-2``),
  or the first free number, and says so in one line.

A logger keeps its choice for its whole life, across ``fit`` calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from actlog import codec, metadata
from actlog.storage import Storage


class Destination:
    """The run directories of one logger under ``log_dir``."""

    def __init__(self, storage: Storage, log_dir: str) -> None:
        self.storage = storage
        self.log_dir = log_dir
        self.suffix: str | None = None  # decided at the first event

    def path(self, run: str) -> str:
        return self.storage.join(self.log_dir, self.name(run))

    def name(self, run: str) -> str:
        return run + (self.suffix or "")

    def decide(self, run: str, step: int, layers: Iterable[str]) -> None:
        """Choose the suffix at the logger's first event (``step`` of ``run``)."""
        if self.suffix is not None:
            return
        layers = set(layers)
        clash = self._clash(run, step, layers)
        if clash is None:
            self.suffix = ""
            return
        number = 2
        while self._clash(f"{run}-{number}", step, layers) is not None:
            number += 1
        self.suffix = f"-{number}"
        warnings.warn(
            f"actlog: {self.storage.join(self.log_dir, run)} already holds {clash}; this run writes "
            f"to {self.path(run)} (and {metadata.BATCH_RUN}{self.suffix}) so that nothing is "
            "overwritten or mixed. Give each run its own log_dir, or pass initial_epoch to continue "
            "a run.",
            UserWarning,
            stacklevel=6,
        )

    def _clash(self, name: str, step: int, layers: set[str]) -> str | None:
        """What in run ``name`` forbids writing ``step`` there, or None."""
        directory = self.storage.join(self.log_dir, name)
        try:
            files = sorted(n for n in self.storage.listdir(directory) if codec.is_event_file(n))
        except (OSError, FileNotFoundError, NotADirectoryError):
            return None
        here = codec.this_writer()
        for file in files:
            path = self.storage.join(directory, file)
            try:
                data = self.storage.read(path)
            except (OSError, FileNotFoundError):
                continue
            steps, logged = _steps_and_layers(data)
            if not steps:
                continue
            if codec.writer_of(file) == here and logged and not (logged & layers):
                continue  # another logger of this process, other layers: same run
            if max(steps) >= step:
                return f"steps {min(steps)}..{max(steps)} written by an earlier run"
        return None


def _steps_and_layers(data: bytes) -> tuple[list[int], set[str]]:
    """Every event's step, and the layers of the first manifest, of one event file.

    Only the first summary event is parsed whole; of the others, only the step.
    """
    steps: list[int] = []
    layers: set[str] | None = None
    for offset, length in codec.scan(data, verify=False).records:
        if layers is None:
            event = codec.decode_event(data[offset : offset + length])
            if not event.HasField("summary"):
                continue
            layers = set()
            for value in event.summary.value:
                if value.tag == metadata.MANIFEST_TAG:
                    text = value.tensor.string_val[0]
                    layers = {layer["name"] for layer in metadata.parse_manifest(text)["layers"]}
        step = codec.event_step(data, offset, offset + length)
        if step is not None:
            steps.append(step)
    return steps, layers or set()
