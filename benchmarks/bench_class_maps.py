"""What class activation maps (``cam=actlog.ClassMaps(...)``) add to an event, on the MNIST example.

The example's ConvNet (``examples/mnist_convnet.py``: ``conv_0``, ``conv_1``
watched, 10 probes, one digit per class, labelled), untrained, on the Keras
backend of this process. Each event is one ``on_epoch_end`` of the logger,
called directly, as ``fit`` calls it (the atlas benchmark does the same); per
configuration, ``--events`` events after one warm-up event (which compiles):

- **thread**: what the training thread waits for (the device halves: the probe
  function, and with cam the forward pass to the layer, the gradient of the
  class logits and the map);
- **background**: ``flush()`` after it: grids, PNGs and the record (with cam,
  the overlays too);
- **total**: both.

Without and with ``cam=ClassMaps("conv_1")``, alternating, so that the machine's
load drifts over both alike; medians. Run it once per backend::

    python benchmarks/bench_class_maps.py
    KERAS_BACKEND=jax .venv-jax/bin/python benchmarks/bench_class_maps.py --events 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ACTLOG_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def events(model, probes, cam, count: int) -> tuple[list[float], list[float]]:
    """``count`` events' training-thread and background seconds (after one warm-up)."""
    import actlog

    with tempfile.TemporaryDirectory() as log_dir:
        logger = actlog.ActivationLogger(log_dir, probes, layers=["conv_0", "conv_1"], cam=cam)
        logger.set_model(model)
        logger.on_train_begin()
        logger.on_epoch_begin(1)  # initial_epoch=1: no step-0 event, each epoch end is one
        thread, background = [], []
        for epoch in range(1, count + 2):
            start = time.perf_counter()
            logger.on_epoch_end(epoch)
            middle = time.perf_counter()
            logger.flush()
            thread.append(middle - start)
            background.append(time.perf_counter() - middle)
        logger.on_train_end()
        assert logger.misses == {}, logger.misses
    return thread[1:], background[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="without / with cam, alternating")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    from digits import load_digits_28
    from mnist_convnet import build_classic_model

    import actlog

    keras.utils.set_random_seed(0)
    _, _, x_test, y_test, source = load_digits_28(2000, seed=0)
    chosen = [int(np.flatnonzero(y_test == d)[0]) for d in range(10)]
    probes = (x_test[chosen], y_test[chosen])
    model = build_classic_model(x_test.shape[1:])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    found: dict[str, tuple[list[float], list[float]]] = {"without cam": ([], []), "with cam": ([], [])}
    for _ in range(args.rounds):
        for name, cam in (("without cam", None), ("with cam", actlog.ClassMaps("conv_1"))):
            thread, background = events(model, probes, cam, args.events)
            found[name][0].extend(thread)
            found[name][1].extend(background)
    print(f"actlog {actlog.__version__}, Keras {keras.__version__} on {keras.backend.backend()}, "
          f"{source}; 10 probes 28x28, conv_0 + conv_1 watched, cam on conv_1 "
          f"({'x'.join(str(d) for d in model.get_layer('conv_1').output.shape[1:])}); "
          f"{args.rounds} rounds x {args.events} events, medians")
    print(f"{'':14}{'thread ms':>11}{'background ms':>15}{'total ms':>10}")
    totals = {}
    for name, (thread, background) in found.items():
        totals[name] = statistics.median(t + b for t, b in zip(thread, background, strict=True))
        print(f"{name:14}{statistics.median(thread) * 1e3:11.1f}{statistics.median(background) * 1e3:15.1f}"
              f"{totals[name] * 1e3:10.1f}")
    added = totals["with cam"] - totals["without cam"]
    print(f"Grad-CAM adds {added * 1e3:.1f} ms per event ({added / totals['without cam']:+.0%}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
