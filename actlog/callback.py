"""``ActivationLogger``: the Keras callback that logs activation grids to TensorBoard.

This module checks arguments, decides *when* to log, and delivers faults.
*What* an event is lives in :mod:`actlog.session` (and what it calls).
"""

from __future__ import annotations

import os
from typing import Any

import keras

from actlog import backends, metadata, storage, tokens
from actlog import epoch_logs as epoch_logs_
from actlog.checks import check_int
from actlog.faults import Faults, LoggingError
from actlog.layers import check_spec
from actlog.options import MOVED, Background, Batches, Layout, Probes, event_options, refuse_moved
from actlog.runs import Destination
from actlog.session import Continuity, Session

__all__ = ["ActivationLogger", "LoggingError"]


class ActivationLogger(keras.callbacks.Callback):
    """Log activation-map grids of fixed probe images to TensorBoard while a model trains.

    At the start of training the logger compiles one probe function of the watched
    layers on the probes (sharing the model's weights, in inference mode); every
    ``freq`` epochs the training thread runs it, and a background thread makes the
    grids, statistics and PNGs and writes one record per event under
    ``log_dir/activations`` (step: epochs completed, 0 = before training; batch-level
    events go to ``log_dir/activations_batch`` with the global step). Every Keras 3
    backend; writing needs no TensorFlow. ``tensorboard --logdir LOG_DIR`` shows them
    in its Activations tab.

    ```python
    logger = actlog.ActivationLogger("runs/exp1", probes=x_val[:8],
                                     layers=["conv_0", "conv_1"], freq=1)
    model.fit(x, y, epochs=10,
              callbacks=[logger, keras.callbacks.TensorBoard("runs/exp1")])
    ```

    Args:
        log_dir: a local path, or a URL fsspec serves (``gs://``, ``s3://``, ``memory://``).
        probes: the inputs to watch, read once and copied: a batch ``(k, ...)`` shaped like
            the model's input, one sample, a list of samples, an ``(x, y)`` tuple, a dataset
            or iterable of batches (its first 8 samples), a list / dict of batches for a
            multi-input model; or :class:`actlog.Probes` (how many to take, whether to log
            the probe images and the statistics). See :mod:`actlog.probes`.
        layers: ``None`` (the last layer of each spatial stage), ``"*"`` (every spatial
            layer), a name or ``"outer/inner"`` path, a Layer, a Layer class, a compiled
            regex, a list of these, or ``{display_name: layer}``; :class:`actlog.Tokens`
            names a token layer's patch grid (:mod:`actlog.tokens`). See :mod:`actlog.layers`.
        freq: log every ``freq`` epochs; 0 turns epoch logging off. Default 1.
        batch_freq: also log every ``batch_freq`` batches of the first epoch, when features
            move fastest; 0 = off (default); :class:`actlog.Batches` for more epochs.
        max_channels: at most this many tiles per grid; ``None`` = all. Default 64.
        channels: which ones when there are more: ``"first"`` (default) or ``"most_active"``
            (largest mean |activation| on the probes at the first event), kept for the run.
        norm: ``"channel"`` (each tile its own range, default), ``"layer"`` or ``(low, high)``.
        cmap: ``"gray"`` (default), ``"viridis"`` or ``"diverging"`` (signed: 0 is white).
        layout: the tile geometry, :class:`actlog.Layout`; ``None`` (default): its defaults.
        background: the host half of each event (grids, PNG, writing) in a background
            thread: ``True`` (default), or :class:`actlog.Background` (how many events may
            wait, and whether a full queue blocks training or drops the new event). False
            does everything on the training thread.
        strict: raise :class:`LoggingError` on a logging fault instead of warning once and
            training on. Default False.
        atlas: the feature atlas, :class:`actlog.Atlas` (or a plain pool: its defaults).
            ``None`` (default): off. See :mod:`actlog.atlas`.
        actmax: activation maximisation, :class:`actlog.Maximize` (or plain ``{layer:
            [channels]}``). ``None`` (default): off. See :mod:`actlog.maximize`.
        cam: Grad-CAM class maps of one watched convolution for each probe, with every
            grids event (batch-level ones too), :class:`actlog.ClassMaps` (or a plain layer
            name). ``None`` (default): off. See :mod:`actlog.class_maps`.
        epoch_logs: also write Keras' epoch logs (loss, metrics, learning rate) to
            ``log_dir/train`` and ``log_dir/validation`` as Keras' ``TensorBoard`` callback
            names them, for loss curves without TensorFlow. ``None`` (default): where the
            backend is not TensorFlow. See :mod:`actlog.epoch_logs`.

    A keyword of actlog 0.2 that moved into one of these objects (``atlas_k=``,
    ``atlas_freq=``, ``atlas_batch=``, ``actmax_freq=``, ``min_tile=``, ``stats=``, ...) fails
    with a ``TypeError`` naming its new form (:data:`actlog.options.MOVED`).
    """

    @refuse_moved(MOVED)
    def __init__(
        self,
        log_dir: str | os.PathLike,
        probes: Any,
        *,
        layers: Any = None,
        freq: int = 1,
        batch_freq: int | Batches = 0,
        max_channels: int | None = 64,
        channels: str = "first",
        norm: str | tuple[float, float] = "channel",
        cmap: str = "gray",
        layout: Layout | None = None,
        background: bool | Background = True,
        strict: bool = False,
        atlas: Any = None,
        actmax: Any = None,
        cam: Any = None,
        epoch_logs: bool | None = None,
    ) -> None:
        super().__init__()
        # an unsupported backend, or a TensorFlow too old, fails here
        if backends.current().is_chief(None):
            self.log_dir, self._storage = storage.check_log_dir(log_dir)
        else:  # a process that will not write (multi-process training) creates nothing
            self.log_dir = os.fspath(log_dir)
            self._storage = storage.for_path(self.log_dir)
        probes = Probes.of(probes, labels=cam is not None)
        self.probes = probes.data
        check_spec(tokens.split(layers)[0])
        self.freq = check_int("freq", freq, minimum=0)
        batches = Batches.of(batch_freq)
        self.batch_freq, self.batch_epochs = batches.every, batches.epochs
        self.options = event_options(probes, layers=layers, max_channels=max_channels, channels=channels,
                                     norm=norm, cmap=cmap, layout=layout, background=background,
                                     atlas=atlas, actmax=actmax, cam=cam, freq=self.freq)
        self.epoch_logs = epoch_logs_.check_option(epoch_logs)
        self._faults = Faults(strict=bool(strict))
        self._epoch_log_writer: epoch_logs_.EpochLogs | None = None
        self._destination = Destination(self._storage, self.log_dir)
        self._session: Session | None = None
        self._probe_fn: Any = None
        self._class_maps: Any = None
        self._continuity = Continuity()
        self._model_seen: Any = None
        self._fit_started = False  # on_train_begin seen, first on_epoch_begin not yet
        self._epoch = 0  # epoch index Keras gave the current epoch
        self._offset = 0  # added to Keras' epoch index so that steps never repeat
        self._last_epoch_step: int | None = None
        self._last_rare: dict[str, int] = {}  # "atlas" / "actmax" -> the step of its last event
        self._epochs_done: int | None = None  # epochs completed under this logger, across fits
        self._step0 = 0  # global training step when this fit began
        self._steps_before = 0  # training steps of the epochs of this fit already done
        self._batches = 0  # training steps of the current epoch so far

    @property
    def misses(self) -> dict[str, int]:
        """Logging faults met so far, by kind (:data:`actlog.faults.KINDS`: ``write``,
        ``removed``, ``nonfinite``, ``skipped``, ``internal``). Each kind warns once;
        training is never stopped unless ``strict``."""
        return self._faults.misses

    @property
    def run_dirs(self) -> dict[str, str]:
        """Where the epoch and batch runs go: ``log_dir/activations`` unless that held another
        run's steps (see :mod:`actlog.runs`); decided at the first event."""
        return {run: self._destination.path(run) for run in (metadata.EPOCH_RUN, metadata.BATCH_RUN)}

    @property
    def pending(self) -> int:
        """Events handed to the background thread and not written yet."""
        return 0 if self._session is None else self._session.worker.pending

    @property
    def probe_function(self) -> Any:
        """The probe function of the current (or last) training run; ``traces`` counts its
        compilations (traces, or CUDA graph captures on PyTorch): 1 on every backend, 0 where it
        runs eagerly (``run_eagerly=True``; on PyTorch, in several parts, on Apple's MPS, or a
        function that cannot be captured)."""
        return self._probe_fn

    @property
    def class_maps(self) -> Any:
        """The class-map pass of the current (or last) training run (``cam=``), else None; its
        ``traces`` counts the compilations of its functions (:mod:`actlog.class_maps`)."""
        return self._class_maps

    # -- Keras hooks -----------------------------------------------------------------

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if model is not self._model_seen:
            # Tiles and drift belong to one model; steps keep counting regardless.
            self._model_seen, self._continuity = model, Continuity()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._close()
        self._fit_started, self._epoch, self._offset = True, 0, 0
        model = self.model  # on JAX, the trainer's state synced to the variables (public API)
        self._step0 = backends.iterations(model, default=self._step0)
        self._steps_before = 0
        writes_epoch_logs = epoch_logs_.enabled(self.epoch_logs, keras.backend.backend())
        if writes_epoch_logs and backends.current().is_chief(model):
            self._epoch_log_writer = epoch_logs_.EpochLogs(self._storage, self.log_dir, self._faults)
        if self.freq or self.batch_freq or self.options.rare():
            self._session = Session(
                model, self.probes, self.options, destination=self._destination,
                faults=self._faults, continuity=self._continuity,
            )
            self._probe_fn = self._session.probe_fn
            self._class_maps = self._session.rare.class_maps
            lockstep = self._session.lockstep and self._faults.strict
            self._faults.together = self._session.backend.any_process if lockstep else None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._faults.deliver()
        if not self._fit_started:
            return
        self._fit_started = False
        # Steps never repeat: a later fit() that restarts epochs at 0 continues
        # after what this logger wrote; initial_epoch is honoured as it is.
        known = [s for s in (self._last_epoch_step, self._epochs_done) if s is not None]
        self._offset = max(0, max(known) - epoch) if known else 0
        if not known and epoch == 0:
            self._epoch_events(0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batches = batch + 1
        if not self.batch_freq or self._session is None:
            return
        if self._offset + self._epoch >= self.batch_epochs or (batch + 1) % self.batch_freq:
            return
        self._grids_events(metadata.BATCH_RUN, self._step0 + self._steps_before + batch + 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._steps_before, self._batches = self._steps_before + self._batches, 0
        step = self._offset + epoch + 1
        self._epochs_done = step
        if self._epoch_log_writer is not None:
            self._epoch_log_writer.write(epoch, logs, epoch_logs_.learning_rate(self.model))
        self._epoch_events(step)
        self._faults.deliver()

    def on_train_end(self, logs: dict | None = None) -> None:
        for kind in self.options.rare():  # the last epoch always gets its atlas and maximisation
            if self._epochs_done not in (None, self._last_rare.get(kind)):
                self._event(metadata.EPOCH_RUN, self._epochs_done, kind=kind)
        self._close()

    # -- events ------------------------------------------------------------------------

    def log_now(self, step: int, run: str = metadata.EPOCH_RUN) -> None:
        """Log one event immediately at ``step`` (after ``on_train_begin``)."""
        if self._session is None:
            raise RuntimeError("log_now() needs a model: call it during or after on_train_begin.")
        self._event(run, step)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handed to the background thread is written (True),
        or ``timeout`` seconds passed (False). Faults met meanwhile are delivered."""
        done = True if self._session is None else self._session.flush(timeout)
        self._faults.deliver()
        return done

    def _epoch_events(self, step: int) -> None:
        if self.freq and step % self.freq == 0:
            self._grids_events(metadata.EPOCH_RUN, step)
        for kind, freq in self.options.rare().items():
            if step % freq == 0:
                self._event(metadata.EPOCH_RUN, step, kind=kind)

    def _grids_events(self, run: str, step: int) -> None:
        """The grids at ``step`` of ``run``, and the class maps that come with them."""
        self._event(run, step)
        if self.options.class_maps is not None:
            self._event(run, step, kind="cam")

    def _event(self, run: str, step: int, *, kind: str = "grids") -> None:
        if run == metadata.EPOCH_RUN and kind == "grids":
            self._last_epoch_step = step
        elif run == metadata.EPOCH_RUN:
            self._last_rare[kind] = step
        if self._session is None:
            return
        try:
            self._session.capture(run, step, kind)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            what = f"step {step} of run {run!r}" if kind == "grids" else f"the {kind} at step {step}"
            self._faults.report("internal", f"could not log {what}: {type(err).__name__}: {err}", err)
        self._faults.deliver(event=True)

    def _close(self) -> None:
        epoch_log_writer, self._epoch_log_writer = self._epoch_log_writer, None
        session, self._session = self._session, None
        if epoch_log_writer is not None:
            epoch_log_writer.close()
        if session is not None:
            session.close()
            self._faults.deliver(event=True)  # on every process alike: a collective under multi-process JAX
        elif epoch_log_writer is not None:
            self._faults.deliver()
