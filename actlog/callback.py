"""``ActivationLogger``: the Keras callback that logs activation grids to TensorBoard.

This module checks arguments, decides *when* to log, and delivers faults.
*What* an event is lives in :mod:`actlog.session` (and what it calls).
"""

from __future__ import annotations

import os
from typing import Any

import keras

from actlog import backends, grid, metadata, storage, tokens
from actlog import epoch_logs as epoch_logs_
from actlog.checks import check_int, check_optional_int
from actlog.faults import Faults, LoggingError
from actlog.layers import check_spec
from actlog.options import (
    MOVED,
    Atlas,
    Background,
    Batches,
    ClassMaps,
    Layout,
    Maximize,
    Probes,
    refuse_moved,
)
from actlog.runs import Destination
from actlog.session import Continuity, Options, Session

__all__ = ["ActivationLogger", "LoggingError"]


class ActivationLogger(keras.callbacks.Callback):
    """Log activation-map grids of fixed probe images to TensorBoard while a model trains.

    At the start of training the logger builds one probe function that runs the
    probes through the watched layers (sharing the model's weights, in inference
    mode, compiled once) and reduces each layer on the device to what an event
    needs. Then, every ``freq`` epochs, it runs that function on the training
    thread and hands the rest (grids, statistics, PNGs, one record per event) to
    a background thread, which writes under ``log_dir/activations``. Open
    ``tensorboard --logdir LOG_DIR``: the Activations tab shows every grid at
    every step; the Images and Time Series tabs a sample of steps.

    Works on every Keras 3 backend (TensorFlow, JAX, PyTorch); writing needs
    no TensorFlow. Step axes: in ``log_dir/activations`` the step is the number
    of epochs completed (0 = before training, honouring ``initial_epoch`` and
    continuing across several ``fit`` calls). Batch-level logging
    (``batch_freq``) writes to ``log_dir/activations_batch`` with the global
    training step.

    ```python
    logger = actlog.ActivationLogger("runs/exp1", probes=x_val[:8],
                                     layers=["conv_0", "conv_1"], freq=1)
    model.fit(x, y, epochs=10,
              callbacks=[logger, keras.callbacks.TensorBoard("runs/exp1")])
    ```

    Args:
        log_dir: directory of the log: a local path, or a URL fsspec serves
            (``gs://``, ``s3://``, ``memory://``, ...).
        probes: the inputs to watch, read once and copied: a batch ``(k, ...)``
            shaped like the model's input, one sample, a list of samples, an
            ``(x, y)`` tuple, a dataset or iterable of batches (its first 8
            samples), or a list / dict of batches for a multi-input model; or
            :class:`actlog.Probes` ``(data, count=None, log=True)`` to take
            ``count`` of them, or not to log the probe images themselves at
            the first event (``log=False``). See :mod:`actlog.probes`.
        layers: which layers to watch: ``None`` (the last layer of each
            spatial stage), ``"*"`` (every spatial layer), a name or
            ``"outer/inner"`` path, a Layer, a Layer class, a compiled regex, a
            list of these, or ``{display_name: layer}``; an entry wrapped in
            :class:`actlog.Tokens` names a token layer's patch grid. A vision
            transformer's token layers are drawn over their patch grid, its
            attention layers as attention per head: see :mod:`actlog.tokens`.
            See :mod:`actlog.layers`.
        freq: log every ``freq`` epochs; 0 turns epoch logging off. Default 1.
        batch_freq: also log every ``batch_freq`` training batches during the
            first epoch, when features move fastest; 0 = off (default); or
            :class:`actlog.Batches` ``(every, epochs=1)`` for more epochs.
        max_channels: at most this many channels (tiles) per grid; ``None`` =
            all. Default 64.
        channels: which channels when there are more than ``max_channels``:
            ``"first"`` (default) or ``"most_active"`` (largest mean |activation|
            on the probes at the first event). Decided once, kept for the run.
        norm: ``"channel"`` (each tile its own range, default), ``"layer"``
            (one range per grid) or a fixed ``(low, high)`` range.
        cmap: ``"gray"`` (default), ``"viridis"`` or ``"diverging"`` (for signed
            activations: 0 is white).
        layout: the tile geometry, :class:`actlog.Layout` ``(min_tile=48,
            max_pixels=2**19, pad=1, rows=None, cols=None)``: tiles upscaled
            until their short side reaches ``min_tile`` pixels within a budget
            of ``max_pixels`` per grid (a layer too large for it is drawn
            subsampled, said once), ``pad`` pixels apart, near square unless
            ``rows`` / ``cols`` are given. ``None`` (default): those defaults.
        stats: also log activation statistics (mean, std, sparsity, dead
            channels, drift). Default True.
        background: do the host half of each event (grids, PNG, writing) in a
            background thread: ``True`` (default), or :class:`actlog.Background`
            ``(max_pending=2, on_full="wait")``: at most ``max_pending`` events
            wait for it; then ``"wait"`` blocks training until one is written,
            ``"skip"`` drops the new event (counted in ``misses["skipped"]``).
            False does everything on the training thread, so the log is
            complete when the callback returns.
        strict: raise :class:`LoggingError` on a logging fault instead of
            warning once and training on. Default False.
        atlas: the feature atlas, :class:`actlog.Atlas` ``(pool, k=8, every=5,
            batch=64)``: every ``every`` epochs (0 = off; also at step 0 and at
            the end of training), the ``k`` pool examples that excite each
            shown channel most, cropped to its receptive field, streamed
            ``batch`` at a time; a plain pool (an array ``(N, ...)`` or a
            finite dataset of batches, read once and copied) means
            ``Atlas(pool)``. ``None`` (default): off. See :mod:`actlog.atlas`.
        actmax: optional activation maximisation, :class:`actlog.Maximize`
            ``(channels, every=5)``, on the atlas' schedule; plain channels
            ``{layer: [channels]}`` mean ``Maximize(channels)``. ``None``
            (default): off. See :mod:`actlog.maximize`.
        cam: optional class activation maps (Grad-CAM) of one watched
            convolution for each probe, logged with the epoch grids (every
            ``freq`` epochs; not at batch-level events), :class:`actlog.ClassMaps`
            ``(layer, classes="label")``; a plain layer name means
            ``ClassMaps(layer)``. ``None`` (default): off. See :mod:`actlog.class_maps`.
        epoch_logs: also write Keras' epoch logs (``epoch_loss``, metrics,
            ``epoch_learning_rate``) to ``log_dir/train`` and ``log_dir/validation``
            as Keras' ``TensorBoard`` callback names them, with actlog's own writer,
            so TensorBoard's Scalars tab has loss curves on every backend. ``None``
            (default): where the backend is not TensorFlow (Keras' callback needs
            TensorFlow; on TensorFlow, use it). Pass ``False`` on JAX or PyTorch
            next to Keras' own callback (with TensorFlow installed), or the curves
            are written twice. See :mod:`actlog.epoch_logs`.

    A keyword of actlog 0.2 that moved into one of these objects (``atlas_k=``,
    ``atlas_freq=``, ``atlas_batch=``, ``actmax_freq=``, ``min_tile=``, ...) fails
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
        stats: bool = True,
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
        layout = Layout.of(layout)
        worker = Background.of(background)
        self.options = Options(
            layers=layers,
            max_channels=check_optional_int("max_channels", max_channels, minimum=1),
            channels=grid.check_selection(channels),
            norm=grid.check_norm(norm),
            cmap=grid.check_cmap(cmap),
            min_tile=layout.min_tile,
            max_pixels=layout.max_pixels,
            pad=layout.pad,
            rows=layout.rows,
            cols=layout.cols,
            stats=bool(stats),
            log_probes=probes.log,
            background=worker is not None,
            max_pending=(worker or Background()).max_pending,
            on_full=(worker or Background()).on_full,
            atlas=Atlas.of(atlas),
            maximize=Maximize.of(actmax),
            class_maps=ClassMaps.of(cam),
        )
        if self.options.class_maps is not None and not self.freq:
            raise ValueError("cam is logged with the grids, every freq epochs; received freq=0. "
                             "Accepted: freq >= 1 with cam, or cam=None.")
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
            self._class_maps = self._session.class_maps
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
        self._event(metadata.BATCH_RUN, self._step0 + self._steps_before + batch + 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._steps_before, self._batches = self._steps_before + self._batches, 0
        step = self._offset + epoch + 1
        self._epochs_done = step
        if self._epoch_log_writer is not None:
            self._epoch_log_writer.write(epoch, logs, self._learning_rate())
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
            self._event(metadata.EPOCH_RUN, step)
            if self.options.class_maps is not None:
                self._event(metadata.EPOCH_RUN, step, kind="cam")
        for kind, freq in self.options.rare().items():
            if step % freq == 0:
                self._event(metadata.EPOCH_RUN, step, kind=kind)

    def _event(self, run: str, step: int, *, kind: str = "grids") -> None:
        if kind != "grids":
            self._last_rare[kind] = step
        elif run == metadata.EPOCH_RUN:
            self._last_epoch_step = step
        if self._session is None:
            return
        try:
            self._session.capture(run, step, kind)
        except Exception as err:  # noqa: BLE001 - a fault in logging never stops training
            what = f"step {step} of run {run!r}" if kind == "grids" else f"the {kind} at step {step}"
            self._faults.report("internal", f"could not log {what}: {type(err).__name__}: {err}", err)
        self._faults.deliver(event=True)

    def _learning_rate(self) -> float | None:
        """The optimizer's learning rate now, as Keras' ``TensorBoard`` logs it."""
        optimizer = getattr(self.model, "optimizer", None)  # self.model: JAX's state synced, as Keras does
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            return None
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except Exception:  # noqa: BLE001 - an optimizer without a readable rate: no curve for it
            return None

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
