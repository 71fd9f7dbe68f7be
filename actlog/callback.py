"""``ActivationLogger``: the Keras callback that logs activation grids to TensorBoard."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

_INSTALL_HINT = (
    "Install one TensorFlow with `pip install 'actlog[tensorflow]'` or "
    "`pip install 'actlog[tensorflow-cpu]'` (actlog does not pick one for you, so it never "
    "installs a second copy over yours)."
)
try:
    import tensorflow as tf
except ImportError as err:
    raise ImportError(f"actlog's callback needs TensorFlow >= 2.16 with Keras 3. {_INSTALL_HINT}") from err

if tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16):
    raise ImportError(
        f"actlog needs TensorFlow >= 2.16 with Keras 3; found {tf.__version__}. {_INSTALL_HINT}"
    )

import keras  # noqa: E402

from actlog import __version__, grid, metadata, stats  # noqa: E402
from actlog.layers import Watched, resolve  # noqa: E402
from actlog.probe import ProbeFunction  # noqa: E402
from actlog.summary import EventFileLost, RunWriter  # noqa: E402


class ActivationLogger(keras.callbacks.Callback):
    """Log activation-map grids of fixed probe images to TensorBoard while a model trains.

    At the start of training the logger builds one probe function that returns
    the watched layers' outputs for the probes (sharing the model's weights,
    in inference mode, traced once). Then, every ``freq`` epochs, it arranges
    each layer's channels into a grid per probe and writes the grids as image
    summaries, with statistics, under ``log_dir/activations``. Open
    ``tensorboard --logdir LOG_DIR``: the Images and Time Series tabs show one
    grid per (layer, probe) per logged epoch, and actlog's Activations tab
    shows every step side by side.

    Step axes: in ``log_dir/activations`` the step is the number of epochs
    completed (0 = before training, honouring ``initial_epoch`` and
    continuing across several ``fit`` calls). Batch-level logging
    (``batch_freq``) writes to ``log_dir/activations_batch`` with the
    optimizer's global step as the step.

    ```python
    logger = actlog.ActivationLogger("runs/exp1", probes=x_val[:8],
                                     layers=["conv_0", "conv_1"], freq=1)
    model.fit(x, y, epochs=10,
              callbacks=[logger, keras.callbacks.TensorBoard("runs/exp1")])
    ```

    Args:
        log_dir: directory of the TensorBoard log (local path or any
            filesystem TensorFlow knows, e.g. ``gs://`` or ``ram://``).
        probes: a batch of inputs ``(k, ...)`` shaped like the model's input;
            a list or dict of such batches for a multi-input model. Copied once.
        layers: which layers to watch: ``None`` (every layer with spatial
            output), a name or ``"outer/inner"`` path, a Layer, a Layer class,
            a compiled regex, a list of these, or ``{display_name: layer}``.
            See :mod:`actlog.layers`.
        freq: log every ``freq`` epochs; 0 turns epoch logging off. Default 1.
        batch_freq: also log every ``batch_freq`` training batches during the
            first ``batch_epochs`` epochs, when features move fastest.
            0 (default) = off.
        batch_epochs: how many epochs batch-level logging lasts. Default 1.
        max_channels: at most this many channels (tiles) per grid; ``None`` =
            all. Default 64.
        channels: which channels when there are more than ``max_channels``:
            ``"first"`` (default) or ``"most_active"`` (largest mean |activation|
            on the probes at the first event). Decided once, kept for the run.
        norm: ``"channel"`` (each tile its own range, default), ``"layer"``
            (one range per grid) or a fixed ``(low, high)`` range.
        cmap: ``"gray"`` (default), ``"viridis"`` or ``"diverging"`` (for signed
            activations: 0 is white).
        min_tile: tiles are upscaled (nearest neighbour) until their short side
            reaches this many pixels, within ``max_pixels``. Default 48.
        max_pixels: pixel budget of one grid image. Default 2**19.
        pad: pixels between tiles. Default 1.
        rows, cols: force the grid layout; default near square.
        stats: also log activation statistics (mean, std, sparsity, dead
            channels, drift). Default True.
        log_probes: log the probe images themselves at the first event.
        strict: raise :class:`LoggingError` on a logging fault instead of
            warning once and training on (for pipelines where a log with
            gaps is worse than no run). Default False.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        probes: Any,
        *,
        layers: Any = None,
        freq: int = 1,
        batch_freq: int = 0,
        batch_epochs: int = 1,
        max_channels: int | None = 64,
        channels: str = "first",
        norm: str | tuple[float, float] = "channel",
        cmap: str = "gray",
        min_tile: int = 48,
        max_pixels: int = 2**19,
        pad: int = 1,
        rows: int | None = None,
        cols: int | None = None,
        stats: bool = True,
        log_probes: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.log_dir = _check_log_dir(log_dir)
        self.probes = _copy_probes(probes)
        _check_layers_spec(layers)
        self.layers_spec = layers
        self.freq = _check_int("freq", freq, minimum=0)
        self.batch_freq = _check_int("batch_freq", batch_freq, minimum=0)
        self.batch_epochs = _check_int("batch_epochs", batch_epochs, minimum=1)
        if max_channels is not None:
            _check_int("max_channels", max_channels, minimum=1)
        self.max_channels = max_channels
        self.channels = grid.check_selection(channels)
        self.norm = grid.check_norm(norm)
        self.cmap = grid.check_cmap(cmap)
        self.min_tile = _check_int("min_tile", min_tile, minimum=1)
        self.max_pixels = _check_int("max_pixels", max_pixels, minimum=1)
        self.pad = _check_int("pad", pad, minimum=0)
        self.rows = None if rows is None else _check_int("rows", rows, minimum=1)
        self.cols = None if cols is None else _check_int("cols", cols, minimum=1)
        self.stats = bool(stats)
        self.log_probes = bool(log_probes)
        self.strict = bool(strict)

        self.misses: dict[str, int] = {}
        """Logging faults met so far, by kind: ``"write"`` (the filesystem failed),
        ``"removed"`` (the event file or log directory disappeared; logging goes
        on in a new file), ``"nonfinite"`` (a layer's NaN or Inf activations,
        per layer and event), ``"budget"`` (a grid drawn subsampled to fit
        ``max_pixels``, per layer and event), ``"internal"`` (anything else).
        Each kind warns once; training is never stopped unless ``strict``."""
        self._warned: set[str] = set()
        self._fit_started = False  # on_train_begin seen, first on_epoch_begin not yet
        self._epoch = 0  # epoch index Keras gave the current epoch
        self._offset = 0  # added to Keras' epoch index so that steps never repeat
        self._chief = True
        self._formats: list[str] = []  # data format of each watched layer
        self._last_epoch_step: int | None = None
        self._epochs_done: int | None = None  # epochs completed under this logger, across fits
        self._watched: list[Watched] = []
        self._probe_fn: ProbeFunction | None = None
        self._layouts: list[grid.GridLayout] | None = None
        self._writers: dict[str, RunWriter] = {}
        self._previous: dict[str, list[np.ndarray | None]] = {}
        self._runs_with_manifest: set[str] = set()

    # -- Keras hooks -----------------------------------------------------------------

    def set_model(self, model: Any) -> None:
        if getattr(self, "_model", None) is not model:
            # Tiles and drift belong to one model; steps keep counting regardless.
            self._layouts = None
            self._previous = {}
        super().set_model(model)
        self._close_writers()
        self._probe_fn = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._fit_started = True
        self._epoch = 0
        self._offset = 0
        if not self._enabled():
            return
        model = self.model
        self._chief = _is_chief(model)
        self._watched = resolve(model, self.layers_spec, probes=self.probes)
        self._probe_fn = ProbeFunction(model, self._watched, self.probes)
        self._formats = [_data_format(w.layer) for w in self._watched]
        self._check_layouts()
        self._runs_with_manifest.clear()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if not self._fit_started:
            return
        self._fit_started = False
        # Steps never repeat: a later fit() that restarts epochs at 0 continues
        # after what this logger wrote; initial_epoch is honoured as it is.
        # Count from the epochs completed (not only the logged ones: with freq > 1 the
        # last logged step lags behind); the last logged step covers a fit stopped early.
        known = [s for s in (self._last_epoch_step, self._epochs_done) if s is not None]
        self._offset = max(0, max(known) - epoch) if known else 0
        if self.freq and self._probe_fn is not None and not known and epoch == 0:
            self._event(metadata.EPOCH_RUN, 0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self.batch_freq or self._probe_fn is None:
            return
        if self._offset + self._epoch >= self.batch_epochs:
            return
        if (batch + 1) % self.batch_freq:
            return
        step = int(self.model.optimizer.iterations.numpy())
        self._event(metadata.BATCH_RUN, step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = self._offset + epoch + 1
        self._epochs_done = step
        if not self.freq or self._probe_fn is None:
            return
        if step % self.freq == 0:
            self._event(metadata.EPOCH_RUN, step)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close_writers()

    # -- one event ---------------------------------------------------------------------

    @property
    def probe_function(self) -> ProbeFunction | None:
        """The compiled probe function of the current run (``tracing_count`` tells retraces)."""
        return self._probe_fn

    def log_now(self, step: int, run: str = metadata.EPOCH_RUN) -> None:
        """Log one event immediately at ``step`` (after ``on_train_begin``)."""
        if self._probe_fn is None:
            raise RuntimeError("log_now() needs a model: call it during or after on_train_begin.")
        self._event(run, step)

    def _event(self, run: str, step: int) -> None:
        if run == metadata.EPOCH_RUN:
            self._last_epoch_step = step
        if not self._chief:
            return
        try:
            self._write_event(run, step)
        except LoggingError:
            raise  # strict mode, already described
        except Exception as err:  # logging must never stop training
            if isinstance(err, EventFileLost):
                kind, what = "removed", f"step {step} of run {run!r} is lost: {err}"
            elif isinstance(err, (OSError, tf.errors.OpError)):
                # OpError's str() carries the op's name; its message is the filesystem's word
                detail = getattr(err, "message", None) or str(err)
                kind, what = "write", (
                    f"could not write step {step} of run {run!r} under {self.log_dir!r}: "
                    f"{type(err).__name__}: {detail}"
                )
            else:
                kind, what = "internal", (
                    f"could not log step {step} of run {run!r}: {type(err).__name__}: {err}"
                )
            self._miss(kind, what, err)
            return
        for w, shape, layout in zip(
            self._watched, self._probe_fn.output_shapes, self._layouts or (), strict=False
        ):
            if layout.stride > 1:
                self._miss(
                    "budget",
                    f"layer {w.name!r} (output {tuple(shape)}) is drawn at 1/{layout.stride} of its "
                    f"resolution: {len(layout.channels)} tiles at full size do not fit "
                    f"max_pixels={self.max_pixels}; raise max_pixels or lower max_channels",
                )

    def _write_event(self, run: str, step: int) -> None:
        outputs = self._probe_fn()
        acts = [_channels_last(a, fmt) for a, fmt in zip(outputs, self._formats, strict=True)]
        maps = [np.stack([grid.as_maps(sample) for sample in a]) for a in acts]
        if self._layouts is None:
            self._layouts = self._plan(maps)
        k = len(acts[0])
        images, scalars, channel_stats = [], [], []
        previous = self._previous.setdefault(run, [None] * len(acts))
        for index, (w, layer_maps, layout) in enumerate(
            zip(self._watched, maps, self._layouts, strict=True)
        ):
            for i in range(k):
                image = grid.render(layer_maps[i], layout, norm=self.norm, cmap=self.cmap)
                images.append((metadata.grid_tag(w.name, i, k), image))
            s = stats.layer_stats(acts[index], previous[index]) if self.stats else None
            finite = s.finite if s is not None else bool(np.isfinite(acts[index]).all())
            if not finite:  # drawn in the marker colour, and said
                self._miss("nonfinite", f"layer {w.name!r} has NaN or Inf activations at step {step}")
            if s is not None:
                previous[index] = acts[index]
                for name in metadata.SCALAR_STATS:
                    value = getattr(s, name)
                    if value is not None:
                        scalars.append((metadata.stat_tag(w.name, name), float(value)))
                for name in metadata.CHANNEL_STATS:
                    values = getattr(s, name)
                    if values is not None:
                        channel_stats.append(
                            (metadata.stat_tag(w.name, name), w.name, name, values.astype(np.float32))
                        )
        texts, manifest = [], None
        if run not in self._runs_with_manifest:
            manifest = self._manifest(run, acts)
            texts.append((metadata.LAYERS_TEXT_TAG, self._layers_table(acts)))
            if self.log_probes:
                images = self._probe_images(k) + images
        self._writer(run).write(
            step, images=images, scalars=scalars, channel_stats=channel_stats,
            texts=texts, manifest=manifest,
        )
        self._runs_with_manifest.add(run)

    def _plan(self, maps: list[np.ndarray]) -> list[grid.GridLayout]:
        layouts = []
        for layer_maps in maps:
            chosen = grid.select_channels(layer_maps, self.max_channels, self.channels)
            layouts.append(
                grid.plan_layout(
                    layer_maps.shape[1:3], chosen, max_pixels=self.max_pixels,
                    min_tile=self.min_tile, pad=self.pad, rows=self.rows, cols=self.cols,
                )
            )
        return layouts

    def _check_layouts(self) -> None:
        """Grid options that cannot hold a layer's tiles (rows, cols, max_pixels) fail now,
        before the first training step, instead of at every event."""
        for w, shape, fmt in zip(self._watched, self._probe_fn.output_shapes, self._formats, strict=True):
            if any(d is None for d in shape):
                continue  # known at the first event only
            sample = _channels_last(np.zeros((1, *shape), np.float32), fmt)[0]
            maps = grid.as_maps(sample)
            shown = maps.shape[-1] if self.max_channels is None else min(maps.shape[-1], self.max_channels)
            try:
                grid.plan_layout(
                    maps.shape[:2], range(shown), max_pixels=self.max_pixels,
                    min_tile=self.min_tile, pad=self.pad, rows=self.rows, cols=self.cols,
                )
            except ValueError as err:
                raise ValueError(
                    f"The grid of layer {w.name!r} (output shape {tuple(shape)}, {shown} channels "
                    f"shown) cannot be laid out: {err}"
                ) from None

    def _manifest(self, run: str, acts: list[np.ndarray]) -> str:
        k = len(acts[0])
        layers = [
            {
                "name": w.name,
                "path": w.path,
                "class": type(w.layer).__name__,
                "output_shape": list(shape),
                "data_format": fmt,
                "channels": [int(c) for c in layout.channels],
                "grid": layout.to_dict(),
                "norm": list(self.norm) if isinstance(self.norm, tuple) else self.norm,
                "cmap": self.cmap,
                "tags": [metadata.grid_tag(w.name, i, k) for i in range(k)],
            }
            for w, shape, fmt, layout in zip(
                self._watched, self._probe_fn.output_shapes, self._formats, self._layouts,
                strict=True,
            )
        ]
        axis = metadata.STEP_AXIS_EPOCH if run == metadata.EPOCH_RUN else metadata.STEP_AXIS_GLOBAL_STEP
        return metadata.manifest(
            actlog_version=__version__, step_axis=axis, probes=k, layers=layers
        )

    def _layers_table(self, acts: list[np.ndarray]) -> str:
        rows = [
            "| layer | path | class | output shape | channels shown |",
            "|---|---|---|---|---|",
        ]
        for w, shape, layout, a in zip(
            self._watched, self._probe_fn.output_shapes, self._layouts, acts, strict=True
        ):
            shown = len(layout.channels)
            total = a.shape[-1]
            rows.append(
                f"| {_md(w.name)} | {_md(w.path)} | {type(w.layer).__name__} | "
                f"{tuple(shape)} | {shown} of {total} |"
            )
        return "\n".join(rows)

    def _probe_images(self, k: int) -> list[tuple[str, np.ndarray]]:
        first = self.probes
        if isinstance(first, Mapping):
            first = next(iter(first.values()))
        elif isinstance(first, (list, tuple)):
            first = first[0]
        images = []
        for i in range(k):
            image = grid.to_image(first[i])
            if image is not None:
                images.append((metadata.probe_image_tag(i, k), image))
        return images

    # -- resources and faults ----------------------------------------------------------

    def _writer(self, run: str) -> RunWriter:
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writers[run] = RunWriter(
                _join(self.log_dir, run), on_reopen=lambda message: self._miss("removed", message)
            )
        return writer

    def _close_writers(self) -> None:
        for run, writer in list(self._writers.items()):
            try:
                writer.close()
            except Exception as err:  # closing must not raise into training either
                self._miss("write", f"could not close the writer of run {run!r}: {err}")
        self._writers.clear()

    def _miss(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Count one fault of ``kind``; warn the first time, or raise when ``strict``.

        Kinds: ``"write"`` (the filesystem failed), ``"removed"`` (the event
        file or log directory disappeared), ``"nonfinite"`` (NaN or Inf
        activations), ``"budget"`` (a grid subsampled to fit ``max_pixels``),
        ``"internal"`` (anything else).
        """
        self.misses[kind] = self.misses.get(kind, 0) + 1
        if self.strict:
            raise LoggingError(kind, f"actlog ({kind}): {message}.", error) from error
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f"actlog ({kind}): {message}. Training continues; further faults of this kind "
                "are counted in ActivationLogger.misses without another warning.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _enabled(self) -> bool:
        return bool(self.freq or self.batch_freq)


# -- argument checks -----------------------------------------------------------------


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}; received {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; received {value}.")
    return int(value)


_LOG_DIR_ACCEPTED = (
    "a directory that exists or can be created, local or on any filesystem TensorFlow "
    "knows (gs://, s3://, hdfs://, ram://)"
)


def _check_log_dir(log_dir: Any) -> str:
    if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
        raise TypeError(
            f"log_dir must be a non-empty path (str or os.PathLike); received {log_dir!r}."
        )
    path = os.fspath(log_dir)
    try:
        tf.io.gfile.makedirs(path)
    except (OSError, tf.errors.OpError) as err:
        message = getattr(err, "message", None) or str(err)
        raise ValueError(
            f"log_dir {path!r} cannot be created: {message}. Accepted: {_LOG_DIR_ACCEPTED}."
        ) from None
    if not tf.io.gfile.isdir(path):
        raise ValueError(
            f"log_dir {path!r} exists but is not a directory. Accepted: {_LOG_DIR_ACCEPTED}."
        )
    return path


def _copy_probes(probes: Any) -> Any:
    """A private, read-only copy of the probes (array, list/tuple or dict of arrays)."""
    if isinstance(probes, Mapping):
        if not probes:
            raise ValueError("probes is an empty dict; pass one batch (k, ...) per model input.")
        copied = {key: _copy_array(f"probes[{key!r}]", value) for key, value in probes.items()}
        arrays = list(copied.values())
    elif isinstance(probes, (list, tuple)) and probes and all(
        isinstance(p, (np.ndarray, tf.Tensor)) for p in probes
    ):
        # Keras' convention: a list of arrays is one batch per model input.
        copied = [_copy_array(f"probes[{i}]", value) for i, value in enumerate(probes)]
        arrays = copied
    else:
        copied = _copy_array("probes", probes)
        arrays = [copied]
    counts = {len(a) for a in arrays}
    if len(counts) > 1:
        raise ValueError(
            f"Every input's probes must hold the same number of samples; received "
            f"{[a.shape for a in arrays]}."
        )
    return copied


def _copy_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    try:
        array = np.array(value, copy=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be a numeric array (k, ...); could not convert: {err}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric (bool, int or float); received dtype {array.dtype} "
            f"({type(value).__name__ if value is not None else 'None'})."
        )
    if array.ndim < 1 or array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty batch (k, ...) with k >= 1; received shape {array.shape}."
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf; probes must be finite.")
    array.setflags(write=False)
    return array


def _check_layers_spec(spec: Any) -> None:
    """Type checks that need no model; names are checked when training starts."""
    items = list(spec.values()) if isinstance(spec, Mapping) else (
        [spec] if spec is None or isinstance(spec, (str, type, re.Pattern)) or hasattr(spec, "call")
        else list(spec) if isinstance(spec, (list, tuple, set)) else [spec]
    )
    for item in items:
        if item is None and spec is None:
            continue
        if not (isinstance(item, (str, type, re.Pattern)) or hasattr(item, "call")):
            raise TypeError(
                f"Cannot choose layers with {item!r} ({type(item).__name__}). Accepted: None, a "
                "layer name or path (str), a keras Layer, a Layer class, a compiled re.Pattern, a "
                "list of these, or a dict {display_name: one of these}."
            )


def _channels_last(a: np.ndarray, data_format: str) -> np.ndarray:
    if data_format == "channels_first" and a.ndim >= 3:
        return np.moveaxis(a, 1, -1)
    return a


def _data_format(layer: Any) -> str:
    """Where the layer keeps its channels: ``data_format``, or for normalisation
    layers (which have none) the axis they normalise: ``axis=1`` is channels first."""
    fmt = getattr(layer, "data_format", None)
    if fmt:
        return fmt
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.GroupNormalization)):
        axis = layer.axis
        if axis == 1 or (isinstance(axis, (list, tuple)) and list(axis) == [1]):
            return "channels_first"
    return "channels_last"


class LoggingError(RuntimeError):
    """A logging fault, raised by ``ActivationLogger(strict=True)`` instead of a warning.

    ``kind`` is the key it is counted under in ``ActivationLogger.misses``;
    ``error`` the original exception, if any (also its ``__cause__``, unless
    Keras' traceback filtering dropped it).
    """

    def __init__(self, kind: str, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.error = error


def _is_chief(model: Any) -> bool:
    """Only the chief writes under multi-worker training; every other setup writes."""
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    try:
        return bool(strategy.extended.should_checkpoint)
    except AttributeError:
        return True


def _join(log_dir: str, run: str) -> str:
    return log_dir.rstrip("/") + "/" + run if "://" in log_dir else os.path.join(log_dir, run)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
