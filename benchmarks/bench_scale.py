"""What one logging event costs on a MobileNetV2-size model, and how it grows.

The workload is ``keras.applications.MobileNetV2(weights=None,
input_shape=(96, 96, 3))``: every convolution (``Conv2D`` and
``DepthwiseConv2D``, 52 layers) is watched for ``--probes`` probe images of
96 x 96 pixels. Untrained weights: an event's cost does not depend on them.

For each configuration the logger is driven through the Keras hooks exactly as
``fit`` drives it (``set_model``, ``on_train_begin``, ``on_epoch_begin`` /
``on_epoch_end``) and three things are measured per event:

- **actlog**: the time of ``on_epoch_end`` (probe function, grids,
  statistics, summaries, flush) and the bytes it appends to the event file.
- **floor**: the least any logger must do for the same pictures: one forward
  pass of the whole model (a compiled ``tf.function``) plus ``tf.summary.image``
  of exactly the grids actlog drew (same pixels, already rendered) and a flush.
- the share of actlog's event spent in its probe function (forward pass with
  every watched output returned to numpy).

actlog and floor events alternate, so both see the same machine load. The
sweep then changes one factor at a time from the full configuration (layers,
probes, channels per grid) to show how cost and bytes grow.

```
python benchmarks/bench_scale.py                 # about 3-5 minutes on 2 busy cores
python benchmarks/bench_scale.py --events 2 --no-sweep
```
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

INPUT_SHAPE = (96, 96, 3)
BUDGET_MS = 2000.0
"""Stated budget: one default event of every conv layer of MobileNetV2 at 96 x 96, 4 probes."""
BUDGET_MB = 8.0


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


@dataclass
class Result:
    layers: int
    probes: int
    max_channels: int | None
    grids: int
    mpixel: float
    setup_ms: float
    first_ms: float
    second_ms: float
    actlog_ms: float
    probe_ms: float
    floor_ms: float
    forward_ms: float
    first_kb: float
    event_kb: float


class Floor:
    """One forward pass of the whole model + ``tf.summary.image`` of given grids + flush."""

    def __init__(self, model, probes: np.ndarray, log_dir: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._x = tf.constant(probes)
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec(self._x.shape, self._x.dtype)],
        )
        self._forward.get_concrete_function()
        self._writer = tf.summary.create_file_writer(log_dir)

    def forward(self) -> None:
        self._forward(self._x).numpy()

    def event(self, step: int, images: list[tuple[str, np.ndarray]]) -> None:
        tf = self._tf
        self.forward()
        with self._writer.as_default(step=step), tf.summary.record_if(True):
            for tag, image in images:
                tf.summary.image(tag, image[np.newaxis], max_outputs=1)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def measure(model, probes: np.ndarray, layers: list[str], max_channels: int | None,
            events: int, tmp: str) -> Result:
    """Time ``events`` steady-state events of actlog and of the floor for one configuration."""
    import actlog
    from actlog import grid, metadata

    tag = f"{len(layers)}l_{len(probes)}p_{max_channels}c"
    log_dir = os.path.join(tmp, tag)
    logger = actlog.ActivationLogger(log_dir, probes, layers=layers, max_channels=max_channels)
    run_dir = os.path.join(log_dir, metadata.EPOCH_RUN)
    logger.set_model(model)
    setup_ms = _time_ms(logger.on_train_begin)  # layer choice + probe function (traced once)
    # Step 0 is the first event: channel choice, manifest, layer table, probe
    # images, and the first trace of actlog's compiled writer.
    first_ms = _time_ms(lambda: logger.on_epoch_begin(0, {}))
    first_kb = _dir_bytes(run_dir) / 1024
    # Step 1: the writer's trace for events without probe images (once per run).
    second_ms = _time_ms(lambda: logger.on_epoch_end(0, {}))
    epoch = 1

    def actlog_event() -> None:
        nonlocal epoch
        logger.on_epoch_begin(epoch, {})
        logger.on_epoch_end(epoch, {})
        epoch += 1

    # The floor encodes exactly actlog's grids: same layouts, same pixels.
    outputs = logger.probe_function()
    formats = [getattr(w.layer, "data_format", None) or "channels_last" for w in logger._watched]
    images = []
    for w, acts, layout, fmt in zip(logger._watched, outputs, logger._layouts, formats,
                                    strict=True):
        for i, sample in enumerate(acts):
            image = grid.render(grid.as_maps(sample, fmt), layout)
            images.append((metadata.grid_tag(w.name, i, len(acts)), image))
    pixels = sum(image.shape[0] * image.shape[1] for _, image in images)
    floor = Floor(model, probes, os.path.join(tmp, tag + "_floor"))
    floor.event(0, images)  # warm-up: first tf.summary.image of each tag

    actlog_ms, floor_ms, probe_ms, forward_ms, event_kb = [], [], [], [], []
    for step in range(events):
        before = _dir_bytes(run_dir)
        actlog_ms.append(_time_ms(actlog_event))
        event_kb.append((_dir_bytes(run_dir) - before) / 1024)
        floor_ms.append(_time_ms(lambda step=step: floor.event(step + 1, images)))
        probe_ms.append(_time_ms(logger.probe_function))
        forward_ms.append(_time_ms(floor.forward))
    floor.close()
    if logger.misses:
        raise RuntimeError(f"actlog could not log every event: {logger.misses}")
    logger.on_train_end()
    return Result(
        layers=len(layers), probes=len(probes), max_channels=max_channels, grids=len(images),
        mpixel=pixels / 1e6, setup_ms=setup_ms, first_ms=first_ms, second_ms=second_ms,
        actlog_ms=float(np.median(actlog_ms)),
        probe_ms=float(np.median(probe_ms)), floor_ms=float(np.median(floor_ms)),
        forward_ms=float(np.median(forward_ms)), first_kb=first_kb,
        event_kb=float(np.median(event_kb)),
    )


def _row(label: str, r: Result) -> str:
    channels = "all" if r.max_channels is None else str(r.max_channels)
    return (
        f"{label:<10}{r.layers:>7}{r.probes:>7}{channels:>6}{r.grids:>7}{r.mpixel:>9.1f}"
        f"{r.actlog_ms:>10.0f}{r.floor_ms:>10.0f}{r.actlog_ms / r.floor_ms:>7.2f}"
        f"{r.probe_ms:>9.0f}{r.event_kb / 1024:>9.2f}{r.event_kb * 1024 / (r.mpixel * 1e6):>8.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3, help="timed events per configuration")
    parser.add_argument("--probes", type=int, default=4, help="probe images in the full run")
    parser.add_argument("--no-sweep", action="store_true", help="only the full configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.events < 1 or args.probes < 1:
        parser.error("--events and --probes must be >= 1")

    import keras
    import tensorflow as tf

    import actlog

    keras.utils.set_random_seed(args.seed)
    model = keras.applications.MobileNetV2(weights=None, input_shape=INPUT_SHAPE)
    convs = [
        layer.name for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    rng = np.random.default_rng(args.seed)
    probes_all = rng.random((max(8, args.probes), *INPUT_SHAPE), dtype=np.float32)
    defaults = actlog.ActivationLogger.__init__.__kwdefaults__
    default_channels = defaults["max_channels"]

    print(
        f"actlog {actlog.__version__} | TensorFlow {tf.__version__}, Keras {keras.__version__} | "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"MobileNetV2(weights=None, input_shape={INPUT_SHAPE}): {len(model.layers)} layers, "
        f"{len(convs)} conv layers watched; defaults max_channels={default_channels}, "
        f"min_tile={defaults['min_tile']}, max_pixels={defaults['max_pixels']}"
    )

    with tempfile.TemporaryDirectory(prefix="actlog-scale-") as tmp:
        full = measure(model, probes_all[: args.probes], convs, default_channels, args.events, tmp)
        results = [("full", full)]
        if not args.no_sweep:
            for n in (len(convs) // 4, len(convs) // 2):
                results.append(("layers", measure(
                    model, probes_all[: args.probes], convs[:n], default_channels, args.events, tmp)))
            for k in (1, 2, 8):
                if k != args.probes:
                    results.append(("probes", measure(
                        model, probes_all[:k], convs, default_channels, args.events, tmp)))
            for c in (16, 32, None):
                results.append(("channels", measure(
                    model, probes_all[: args.probes], convs, c, args.events, tmp)))

    print()
    print(
        f"{'factor':<10}{'layers':>7}{'probes':>7}{'chan':>6}{'grids':>7}{'Mpixel':>9}"
        f"{'actlog':>10}{'floor':>10}{'ratio':>7}{'probe':>9}{'MB/evt':>9}{'B/px':>8}"
    )
    print(f"{'':<10}{'':>7}{'':>7}{'':>6}{'':>7}{'':>9}{'ms':>10}{'ms':>10}{'':>7}{'fn ms':>9}")
    for label, r in results:
        print(_row(label, r))
    print()
    print(
        f"floor = forward pass of the whole model ({full.forward_ms:.0f} ms for "
        f"{full.probes} probes) + tf.summary.image of the same grids + flush. "
        f"probe fn = actlog's forward pass returning all {full.layers} outputs to numpy."
    )
    print(
        f"one-off costs of the full run: on_train_begin (layer choice, probe function "
        f"traced) {full.setup_ms:.0f} ms; first event (channel choice, manifest, layer table, "
        f"probe images, writer traced) {full.first_ms:.0f} ms, {full.first_kb / 1024:.2f} MB; "
        f"second event (writer traced without probe images) {full.second_ms:.0f} ms"
    )
    within = full.actlog_ms <= BUDGET_MS and full.event_kb / 1024 <= BUDGET_MB
    print(
        f"budget for one default event of this model ({full.layers} layers x {full.probes} "
        f"probes): <= {BUDGET_MS:.0f} ms and <= {BUDGET_MB:.0f} MB on this machine -> "
        f"{full.actlog_ms:.0f} ms, {full.event_kb / 1024:.2f} MB: "
        f"{'WITHIN' if within else 'OVER'}"
    )
    # Figures, not a test: being over budget is reported, not an exit status.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
