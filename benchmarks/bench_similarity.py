"""What representation similarity adds to an event: each layer's centred Gram matrix.

Two loggers watch the same model and probes, one with the Gram matrices
(``actlog.probe.GRAM``, on by default) and one without; their events alternate,
so the machine's drift meets both alike. Printed per model (median over
``--events`` events after one warm-up event each, in milliseconds):

- **event**: ``ActivationLogger(background=False)``'s whole event on the calling
  thread (forward pass, reductions, copy, grids, PNGs, record, write);
- **fwd+copy**: the compiled probe function and the copy of its results to the host
  (what the training thread waits for in the background mode);
- the ratio with / without. Target: at most 1.10 (issue #26).

Models as ``benchmarks/bench_events.py`` builds them: the MNIST example's ConvNet
(conv_0 + conv_1, 8 probes) and MobileNetV2 (``weights=None``, every Conv2D and
DepthwiseConv2D, 4 probes, 128 px side).

```
python benchmarks/bench_similarity.py                     # this Python's KERAS_BACKEND
KERAS_BACKEND=jax python benchmarks/bench_similarity.py --events 10 --models mnist
```
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_events import MODELS, _build  # noqa: E402  (the same models, built the same way)


def _logger(model: Any, x: Any, layers: list[str], log_dir: str, gram: bool) -> Any:
    import actlog
    from actlog import probe

    probe.GRAM = gram
    logger = actlog.ActivationLogger(log_dir, x, layers=layers, background=False)
    logger.set_model(model)
    logger.on_train_begin()
    return logger


def _event(logger: Any, step: int, gram: bool) -> float:
    from actlog import probe

    probe.GRAM = gram  # read where the reductions run (traced once, or op by op on the host)
    start = time.perf_counter()
    logger.log_now(step)
    return time.perf_counter() - start


def _fwd_copy(logger: Any, gram: bool) -> float:
    from actlog import backends, probe

    probe.GRAM = gram
    session = logger._session
    fn = session.probe_fn
    channels = fn.channels([p.layout.channels for p in session.plans])
    start = time.perf_counter()
    results = fn(channels, fn.zero_sketches())
    keys = ("levels", "sums", "drift", "gram")
    backends.current().fetch([{k: o[k] for k in keys if k in o} for o in results])()
    return time.perf_counter() - start


def measure(name: str, events: int, side: int) -> dict[str, float]:
    import numpy as np

    default_side, k, _ = MODELS[name]
    model, layers, shape = _build(name, default_side or side)
    x = np.random.default_rng(0).random((k, *shape)).astype(np.float32)
    times: dict[str, list[float]] = {"event_on": [], "event_off": [], "fwd_on": [], "fwd_off": []}
    with tempfile.TemporaryDirectory() as tmp:
        on = _logger(model, x, layers, os.path.join(tmp, "on"), True)
        off = _logger(model, x, layers, os.path.join(tmp, "off"), False)
        for step in range(events + 1):
            for logger, gram, key in ((on, True, "on"), (off, False, "off")):
                event = _event(logger, step, gram)
                fwd = _fwd_copy(logger, gram)
                if step:
                    times[f"event_{key}"].append(event)
                    times[f"fwd_{key}"].append(fwd)
        for logger in (on, off):
            logger.on_train_end()
            assert logger.misses == {}, logger.misses
    from actlog import probe

    probe.GRAM = True
    result = {key: round(statistics.median(values) * 1000, 2) for key, values in times.items()}
    result["layers"] = len(layers)
    result["probes"] = k
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mnist,mobilenetv2")
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--side", type=int, default=128, help="MobileNetV2 input side (default 128)")
    args = parser.parse_args(argv)
    import keras

    print(f"backend {keras.backend.backend()}, {args.events} events per logger after one warm-up")
    print(f"{'model':<12} {'layers':>6} {'probes':>6} {'event ms':>18} {'ratio':>6} "
          f"{'fwd+copy ms':>18} {'ratio':>6}")
    print(f"{'':<12} {'':>6} {'':>6} {'with / without':>18} {'':>6} {'with / without':>18}")
    for name in args.models.split(","):
        r = measure(name, args.events, args.side)
        print(f"{name:<12} {r['layers']:>6} {r['probes']:>6} "
              f"{r['event_on']:>8.1f} / {r['event_off']:>7.1f} {r['event_on'] / r['event_off']:>6.3f} "
              f"{r['fwd_on']:>8.1f} / {r['fwd_off']:>7.1f} {r['fwd_on'] / r['fwd_off']:>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
