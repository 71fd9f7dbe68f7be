"""A long run in one process: memory, retracing and bytes per event over many events.

People train for hours; a logger that leaks a little per event, retraces a
``tf.function`` now and then, or writes more per event as the run goes on, is
a problem that shows only late. This benchmark drives ``ActivationLogger``
through the Keras hooks exactly as ``fit`` does (``set_model``,
``on_train_begin``, ``on_epoch_begin``/``on_epoch_end``) for ``--events``
epoch events on the classic MNIST ConvNet of ``examples/mnist_convnet.py``
(two layers, ``conv_0`` 26 x 26 x 32 and ``conv_1`` 24 x 24 x 64), and prints:

- **RSS growth per event**: least-squares slope of the resident set size over
  the events after ``--warmup`` events (target <= 2 KB per event), with the
  total growth over those events;
- **traces**: of the probe function, after the first event and at the end
  (target: no new trace);
- **bytes per event**: growth of the run's event file at every event after the
  second (the first carries the manifest, layer table and probe images, the
  second starts the ``drift`` statistics): min / max / mean. The weights do
  not move, so the grids, and with them the PNGs, are the same at every event:
  any change comes from the record framing (steps >= 128 take one more byte per
  record as a varint).

```
python benchmarks/bench_long_run.py                 # 500 events, about a minute on 2 busy cores
python benchmarks/bench_long_run.py --events 200 --probes 2
```
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

LAYERS = ("conv_0", "conv_1")
TARGET_RSS_KB = 2.0


def _rss_kb() -> float:
    """Resident set size of this process now, in KiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0


def _run_bytes(run_dir: str) -> int:
    if not os.path.isdir(run_dir):
        return 0
    return sum(os.path.getsize(os.path.join(run_dir, n)) for n in os.listdir(run_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="epoch events to log")
    parser.add_argument("--warmup", type=int, default=50, help="events left out of the RSS slope")
    parser.add_argument("--probes", type=int, default=4, help="probe images per event")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.events < 10 or not 2 <= args.warmup <= args.events - 8:
        parser.error(f"need --events >= 10 and 2 <= --warmup <= events - 8; got {args.events}, {args.warmup}")

    import keras
    from mnist_convnet import build_classic_model

    import actlog
    from actlog import metadata

    keras.utils.set_random_seed(args.seed)
    model = build_classic_model()
    probes = np.random.default_rng(args.seed).random((args.probes, 28, 28, 1), dtype=np.float32)

    with tempfile.TemporaryDirectory(prefix="actlog-long-") as tmp:
        run_dir = os.path.join(tmp, metadata.EPOCH_RUN)
        logger = actlog.ActivationLogger(tmp, probes, layers=list(LAYERS), freq=1)
        logger.set_model(model)
        logger.on_train_begin()

        rss: list[float] = []
        sizes: list[int] = []
        traces: list[int] = []
        start = time.perf_counter()
        for epoch in range(args.events):
            # on_epoch_begin(0) writes step 0; on_epoch_end(e) writes step e + 1.
            logger.on_epoch_begin(epoch, {})
            if epoch == 0:
                logger.flush()
                sizes.append(_run_bytes(run_dir))
                traces.append(logger.probe_function.traces)
            logger.on_epoch_end(epoch, {})
            logger.flush()  # the event is written in the background: wait for it to count its bytes
            sizes.append(_run_bytes(run_dir))
            traces.append(logger.probe_function.traces)
            if epoch == args.warmup:
                gc.collect()
            rss.append(_rss_kb())
        elapsed = time.perf_counter() - start
        files = sorted(os.listdir(run_dir))
        misses = dict(logger.misses)
        logger.on_train_end()

    events = len(sizes)
    measured = np.asarray(rss[args.warmup + 1:])
    slope = float(np.polyfit(np.arange(len(measured)), measured, 1)[0])
    per_event = np.diff(sizes)[2:]  # events 3.. : neither manifest nor drift start
    probe_traces = traces

    print(f"actlog long run: {events} events (steps 0..{events - 1}), {args.probes} probes, "
          f"layers {', '.join(LAYERS)}; {elapsed:.1f} s, {1000 * elapsed / events:.1f} ms/event")
    print(f"RSS growth after {args.warmup} warm-up events: {slope:.2f} KB/event "
          f"(least squares over {len(measured)} events; total {measured[-1] - measured[0]:+.0f} KB, "
          f"RSS {measured[-1] / 1024:.0f} MB)  target <= {TARGET_RSS_KB} KB/event: "
          f"{'OK' if slope <= TARGET_RSS_KB else 'MISSED'}")
    no_retrace = probe_traces[-1] == probe_traces[0]
    print(f"traces: probe function {probe_traces[0]} after the first event, {probe_traces[-1]} at the end; "
          "writes: one record per event, by actlog's own writer  "
          f"retraces: {'none' if no_retrace else 'YES'}")
    print(f"bytes per event (events 3..{events}): min {per_event.min()}, max {per_event.max()}, "
          f"mean {per_event.mean():.1f}; first event {sizes[0]}, second {sizes[1] - sizes[0]}; "
          f"{len(files)} event file(s), {sizes[-1] / 1024:.0f} KB in all")
    print(f"misses: {misses or 'none'}")
    return 0 if slope <= TARGET_RSS_KB and no_retrace and not misses else 1


if __name__ == "__main__":
    raise SystemExit(main())
