"""What one logging event costs: actlog against the floor and the classic recipe.

The workload is the classic MNIST ConvNet of ``examples/mnist_convnet.py``
(untrained weights: the cost of an event does not depend on them), two layers
(``conv_0``: 26 x 26 x 32, ``conv_1``: 24 x 24 x 64) and ``--probes`` probe
images. Four ways of logging the same grids are timed in the same process:

- **actlog**: ``ActivationLogger`` driven through the Keras hooks exactly as
  ``fit`` drives it (``set_model``, ``on_train_begin``, then
  ``on_epoch_begin``/``on_epoch_end`` per epoch); the time of ``on_epoch_end``
  is one event: probe function, grids, statistics, summaries, flush.
- **floor**: the least any logger must do for the same pictures: one call of a
  prebuilt multi-output ``keras.Model`` through a ``tf.function`` with a fixed
  signature, ``actlog.grid.render`` of the same layouts (same pixel count), one
  ``tf.summary.image`` per grid to a writer, and a flush. No statistics.
- **tight floor**: the same, but the grids are written as actlog writes them,
  one raw summary per event with fast PNG (zlib level 1): what actlog's
  technique costs before its statistics, checks and bookkeeping.
- **recipe**: the classic recipe, as the article wrote it: for every (layer,
  probe) a new ``keras.Model(model.inputs, layer.output)``, ``predict`` on the
  one image, a 4 x 8 matplotlib grid of its first 32 channels saved as PNG.

actlog and the floors are timed in rounds, in rotating order, so that load from
other processes on a shared machine falls on them alike; each recipe event
comes with one more such round. Between the two, ``--rss-events`` actlog events
measure memory growth (least-squares slope of the resident set size over
events, after a warm-up, before the recipe churns the heap). Retraces of the
compiled probe function are counted from the first event on (the writer has
no tf.function: one ``write_raw_pb`` op per event).

```
python benchmarks/bench_core.py                       # about 2-3 minutes on 2 cores
python benchmarks/bench_core.py --events 100 --recipe-events 5 --probes 1
```

Targets (from the project's issue): actlog <= 1.5 x floor, >= 200 x faster than
the recipe, <= 2 KB of RSS growth per event, 0 retraces after the first event.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

LAYERS = ("conv_0", "conv_1")
TARGET_FLOOR_RATIO = 1.5
TARGET_RECIPE_SPEEDUP = 200.0
TARGET_RSS_KB = 2.0
TARGET_RETRACES = 0
WARMUP_EVENTS = 3


def _rss_kb() -> float:
    """Resident set size of this process now, in KiB (Linux /proc; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _summary(times: list[float]) -> tuple[float, float]:
    return float(np.median(times)), float(np.percentile(times, 90))


class Floor:
    """The least work for the same grids: everything built once, one call per event.

    Args:
        model: the classic model; ``LAYERS`` are read from it.
        probes: ``(k, 28, 28, 1)`` float32.
        layouts: one ``actlog.grid.GridLayout`` per layer (actlog's own).
        log_dir: where the writer writes.
        compiled: ``False`` is the issue's floor: eager ``tf.summary.image`` per
            grid (zlib level 6 inside). ``True`` writes the same image records
            the way actlog writes them (PNG level 1 built with numpy + zlib,
            one ``write_raw_pb`` per event): the floor for actlog's technique,
            without its statistics, checks and bookkeeping.
    """

    def __init__(
        self, model, probes: np.ndarray, layouts: list, log_dir: str, *, compiled: bool
    ) -> None:
        import keras
        import tensorflow as tf
        from tensorboard.plugins.image import metadata as image_metadata

        from actlog import grid

        self._tf = tf
        self._grid = grid
        outputs = [model.get_layer(name).output for name in LAYERS]
        sub_model = keras.Model(model.inputs, outputs)
        self._x = tf.constant(probes, tf.float32)

        def forward(x):
            return [tf.cast(y, tf.float32) for y in sub_model(x, training=False)]

        self._fn = tf.function(forward, input_signature=[tf.TensorSpec(self._x.shape, tf.float32)])
        self._fn.get_concrete_function()
        self._layouts = layouts
        self._writer = tf.summary.create_file_writer(log_dir)
        self._tags = [f"{name}/probe_{i}" for name in LAYERS for i in range(len(probes))]
        self._write = None
        if compiled:
            from tensorboard.compat.proto import summary_pb2

            from actlog.png import encode_png

            meta = image_metadata.create_summary_metadata(display_name="", description="")

            def write(step, images):
                summary = summary_pb2.Summary()
                for tag, image in zip(self._tags, images, strict=True):
                    value = summary.value.add(tag=tag, metadata=meta)
                    value.tensor.dtype = 7  # DT_STRING
                    value.tensor.tensor_shape.dim.add(size=3)
                    value.tensor.string_val.extend(
                        [str(image.shape[1]).encode(), str(image.shape[0]).encode(), encode_png(image)]
                    )
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)

            self._write = write

    def event(self, step: int) -> None:
        tf, grid = self._tf, self._grid
        arrays = [t.numpy() for t in self._fn(self._x)]
        images = [
            grid.render(sample, layout)
            for maps, layout in zip(arrays, self._layouts, strict=True)
            for sample in maps
        ]
        with self._writer.as_default(step=step), tf.summary.record_if(True):
            if self._write is not None:
                self._write(tf.constant(step, tf.int64), images)
            else:
                for tag, image in zip(self._tags, images, strict=True):
                    tf.summary.image(tag, image[np.newaxis], max_outputs=1)
        self._writer.flush()

    @property
    def traces(self) -> int:
        return self._fn.experimental_get_traces()

    def close(self) -> None:
        self._writer.close()


def recipe_event(
    model, probes: np.ndarray, out_dir: str, step: int, layers: tuple[str, ...] = LAYERS
) -> None:
    """The article's ``visualize_conv_layer``, once per (layer, probe), saving each figure."""
    import keras
    import matplotlib.pyplot as plt

    for name in layers:
        for i in range(len(probes)):
            intermediate = keras.Model(inputs=model.inputs, outputs=model.get_layer(name).output)
            prediction = intermediate.predict(probes[i : i + 1], verbose=0)
            fig, ax = plt.subplots(4, 8, figsize=(10, 8))
            index = 0
            for row in range(4):
                for col in range(8):
                    ax[row][col].imshow(prediction[0, :, :, index], cmap="gray")
                    index += 1
            fig.savefig(os.path.join(out_dir, f"{name}_probe{i}_step{step}.png"))
            # The article never closes its figures; closing them is kinder to the recipe.
            plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40, help="timed rounds of actlog and floors")
    parser.add_argument("--recipe-events", type=int, default=2, help="timed classic-recipe events")
    parser.add_argument("--rss-events", type=int, default=200, help="actlog events for RSS growth")
    parser.add_argument(
        "--rss-warmup", type=int, default=100, help="actlog events before RSS sampling starts"
    )
    parser.add_argument("--probes", type=int, default=8, help="probe images per event")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for option in ("events", "rss_events", "probes"):
        if getattr(args, option) < 2:
            parser.error(f"--{option.replace('_', '-')} must be >= 2; got {getattr(args, option)}")
    if args.rss_warmup < 0:
        parser.error(f"--rss-warmup must be >= 0; got {args.rss_warmup}")
    if args.recipe_events < 0:
        parser.error(f"--recipe-events must be >= 0 (0 skips the recipe); got {args.recipe_events}")

    import keras
    import matplotlib
    import tensorflow as tf

    matplotlib.use("Agg")

    from mnist_convnet import build_classic_model

    import actlog
    from actlog import grid

    keras.utils.set_random_seed(args.seed)
    model = build_classic_model()
    # Seeded noise in [0, 1]: what an event costs does not depend on the pixels.
    probes = np.random.default_rng(args.seed).random((args.probes, 28, 28, 1), dtype=np.float32)

    with tempfile.TemporaryDirectory(prefix="actlog-bench-") as tmp:
        logger = actlog.ActivationLogger(
            os.path.join(tmp, "actlog"), probes, layers=list(LAYERS), freq=1
        )
        # What Model.fit does before the first epoch; on_epoch_begin(0) writes step 0,
        # the first event: the probe function's trace, channel choice, manifest, text.
        logger.set_model(model)
        logger.on_train_begin()
        epoch = 0

        def actlog_event() -> None:
            nonlocal epoch
            logger.on_epoch_begin(epoch, {})
            logger.on_epoch_end(epoch, {})
            epoch += 1

        first_ms = _time_ms(actlog_event)
        probe_fn = logger.probe_function
        probe_traces = probe_fn.traces

        def all_traces() -> int:
            """Traces of every tf.function actlog holds: probe function and writers."""
            writers = getattr(logger, "_writers", {}).values()
            return probe_fn.traces + sum(getattr(w, "traces", 0) for w in writers)

        # The floors render the very layouts actlog chose (same tiles, same pixels).
        outputs = probe_fn()
        layouts = [
            grid.plan_layout(
                a.shape[1:3],
                grid.select_channels(a, logger.max_channels, logger.channels),
                max_pixels=logger.max_pixels,
                min_tile=logger.min_tile,
                pad=logger.pad,
                rows=logger.rows,
                cols=logger.cols,
            )
            for a in outputs
        ]
        actlog_layouts = getattr(logger, "_layouts", None)
        if actlog_layouts is not None and actlog_layouts != layouts:
            raise RuntimeError(f"floor layouts {layouts} differ from actlog's {actlog_layouts}")
        floors = {
            compiled: Floor(
                model, probes, layouts, os.path.join(tmp, f"floor_{compiled}"), compiled=compiled
            )
            for compiled in (False, True)
        }
        for floor in floors.values():
            floor.event(0)
        floor_traces_first = [floor.traces for floor in floors.values()]

        out_dir = os.path.join(tmp, "recipe")
        os.makedirs(out_dir)
        if args.recipe_events:
            # Pays the recipe's one-off costs (matplotlib's first figure, Keras' first
            # predict) outside the timed events, as the warm-up does for the others.
            recipe_event(model, probes[:1], out_dir, -1, layers=LAYERS[:1])
        for _ in range(WARMUP_EVENTS):
            actlog_event()
            for floor in floors.values():
                floor.event(epoch)
        traces_after_warmup = all_traces()

        timed: dict[str, Callable[[], object]] = {
            "actlog": actlog_event,
            "floor": lambda: floors[False].event(epoch),
            "tight": lambda: floors[True].event(epoch),
        }
        times: dict[str, list[float]] = {name: [] for name in timed}
        names = list(timed)

        def one_round(i: int) -> None:
            # Rotating order, so that a neighbour's load on a shared machine falls
            # on each of them alike.
            for name in names[i % 3 :] + names[: i % 3]:
                times[name].append(_time_ms(timed[name]))

        for i in range(args.events):
            one_round(i)

        # Memory, before the recipe's allocations churn the heap. The process's
        # native heap (TensorFlow's and the C allocator's pools) keeps growing for
        # a hundred events or so, with or without actlog, so settle first, then
        # sample the resident set size after every event.
        gc.collect()
        for _ in range(args.rss_warmup):
            actlog_event()
        rss = []
        for _ in range(args.rss_events):
            actlog_event()
            rss.append(_rss_kb())

        # The recipe, each event next to one more round of the others, for the same
        # reason as the rotation above.
        recipe_ms: list[float] = []
        recipe_rss: list[float] = []
        for i in range(args.recipe_events):
            one_round(args.events + i)
            # Memory kept after a full collection, i.e. what the recipe leaks.
            gc.collect()
            before = _rss_kb()
            recipe_ms.append(_time_ms(lambda i=i: recipe_event(model, probes, out_dir, i)))
            gc.collect()
            recipe_rss.append(_rss_kb() - before)
        floor_traces = [
            floor.traces - first
            for floor, first in zip(floors.values(), floor_traces_first, strict=True)
        ]
        for floor in floors.values():
            floor.close()
        slope = float(np.polyfit(np.arange(len(rss)), rss, 1)[0])
        retraces = probe_fn.traces - probe_traces
        new_traces = all_traces() - traces_after_warmup
        misses = dict(logger.misses)
        logger.on_train_end()

    a_med, a_p90 = _summary(times["actlog"])
    f_med, f_p90 = _summary(times["floor"])
    t_med, t_p90 = _summary(times["tight"])
    pixels = sum(layout.height * layout.width for layout in layouts) * args.probes
    print()
    print(
        f"actlog {actlog.__version__} | TensorFlow {tf.__version__}, Keras {keras.__version__} | "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"classic MNIST ConvNet, layers {', '.join(LAYERS)} "
        f"({', '.join('x'.join(map(str, a.shape[1:])) for a in outputs)}), {args.probes} probes, "
        f"{2 * args.probes} grids = {pixels / 1e6:.2f} Mpixel per event"
    )
    print(f"first actlog event (trace, channel choice, manifest, probes): {first_ms:.0f} ms")
    print()
    w = 46
    print(f"{'per event':<{w}}{'median ms':>11}{'p90 ms':>10}{'events':>8}")
    table = [
        ("actlog (on_epoch_end: grids, stats, write)", a_med, a_p90, len(times["actlog"])),
        ("floor (forward, render, tf.summary.image)", f_med, f_p90, len(times["floor"])),
        ("tight floor (same, written as actlog writes)", t_med, t_p90, len(times["tight"])),
    ]
    if recipe_ms:
        r_med, r_p90 = _summary(recipe_ms)
        table.append(("classic recipe (Model, predict, 4x8 PNG)", r_med, r_p90, len(recipe_ms)))
    for name, median, p90, count in table:
        print(f"{name:<{w}}{median:>11.1f}{p90:>10.1f}{count:>8}")
    print()

    rows = [
        ("actlog / floor (median)", f"{a_med / f_med:.2f}x", f"<= {TARGET_FLOOR_RATIO}x",
         a_med / f_med <= TARGET_FLOOR_RATIO),
        ("actlog / tight floor (median)", f"{a_med / t_med:.2f}x", f"<= {TARGET_FLOOR_RATIO}x",
         a_med / t_med <= TARGET_FLOOR_RATIO),
    ]
    if recipe_ms:
        speedup = r_med / a_med
        rows.append((
            "recipe / actlog (median)", f"{speedup:.0f}x", f">= {TARGET_RECIPE_SPEEDUP:.0f}x",
            speedup >= TARGET_RECIPE_SPEEDUP,
        ))
    rows += [
        (
            f"actlog RSS growth ({len(rss)} events, slope)", f"{slope:.2f} KB/event",
            f"<= {TARGET_RSS_KB} KB", slope <= TARGET_RSS_KB,
        ),
        ("probe function retraces after 1st event", f"{retraces}", f"{TARGET_RETRACES}",
         retraces <= TARGET_RETRACES),
        ("new traces of any actlog tf.function", f"{new_traces}", f"{TARGET_RETRACES}",
         new_traces <= TARGET_RETRACES),
    ]
    print(f"{'metric':<{w}}{'value':>16}{'target':>12}  result")
    for name, value, target, ok in rows:
        print(f"{name:<{w}}{value:>16}{target:>12}  {'PASS' if ok else 'MISS'}")
    print()
    print(
        f"actlog RSS {rss[0] / 1024:.1f} -> {rss[-1] / 1024:.1f} MB over {len(rss)} events "
        f"sampled after {args.events + WARMUP_EVENTS + 1 + args.rss_warmup} earlier ones "
        f"((end - start) / events = {(rss[-1] - rss[0]) / (len(rss) - 1):.2f} KB); "
        f"recipe RSS kept after gc {np.mean(recipe_rss) if recipe_rss else float('nan'):.0f} KB/event; "
        f"floors' retraces after 1st event {floor_traces}; actlog logging faults {misses or 'none'}"
    )
    # Figures, not a test: a MISS is reported, not turned into a failing exit status.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
