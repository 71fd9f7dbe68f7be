"""How long actlog's hook blocks ``model.fit``, against the probe function at the same point.

The MNIST ConvNet (``conv_0`` + ``conv_1`` x 8 probes) trains with
``ActivationLogger(batch_freq=EVERY)``, the default background thread. Per
backend (one child process each, as in ``bench_events.py``) this prints the
median over the events of:

- **hook**: the time spent in the logger's ``on_train_batch_end`` at the batches
  where it logs: what the training thread waits for, in a real fit;
- **fwd+copy**: the logger's own compiled probe function and the copy of its
  results, timed by a second callback halfway between two events of the same fit;
- **step**: the median time between two batches, for scale.

Target (issue 11): hook <= 1.5x fwd+copy on the CPU.

```
python benchmarks/bench_in_fit.py                       # every backend found
python benchmarks/bench_in_fit.py --backends jax --batches 800
```
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench_events import BACKENDS, _build, _median_ms, _python_for, _ratio, device_half

EVERY = 10  # batch_freq: an event every 10 batches
BATCH = 32
WARMUP = 5  # events left out of the medians (the first ones trace and compile)


def _child(batches: int) -> dict:
    import keras
    import numpy as np

    import actlog

    model, layers, shape = _build("mnist", 28)
    rng = np.random.default_rng(0)
    probes = rng.random((8, *shape)).astype(np.float32)
    x = rng.random((batches * BATCH, *shape)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    samples: dict[str, list[float]] = {"hook_ms": [], "fwd_copy_ms": [], "step_ms": []}

    with tempfile.TemporaryDirectory() as tmp:
        logger = actlog.ActivationLogger(tmp, probes, layers=layers, freq=0, batch_freq=EVERY)
        hook = logger.on_train_batch_end

        def timed_hook(batch: int, logs: Any = None) -> None:
            t = time.perf_counter()
            hook(batch, logs)
            if (batch + 1) % EVERY == 0:
                samples["hook_ms"].append(time.perf_counter() - t)

        logger.on_train_batch_end = timed_hook

        class Halfway(keras.callbacks.Callback):
            """fwd+copy halfway between two events, and the time between batches."""

            last = None
            run = None

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                now = time.perf_counter()
                if self.last is not None:
                    samples["step_ms"].append(now - self.last)
                if (batch + 1) % EVERY == EVERY // 2:
                    self.run = self.run or device_half(logger._session)
                    zeros = logger._session.probe_fn.zero_sketches()
                    t = time.perf_counter()
                    self.run(zeros)
                    samples["fwd_copy_ms"].append(time.perf_counter() - t)
                self.last = time.perf_counter()

        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[logger, Halfway()])
        assert logger.misses == {}, logger.misses
    result = {key: _median_ms(values[WARMUP:]) for key, values in samples.items()}
    return {"backend": keras.backend.backend(), "events": len(samples["hook_ms"]), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batches", type=int, default=600, help="training batches of 32 (default 600)")
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.batches)))
        return 0
    given = dict(item.split("=", 1) for item in args.python)
    print(f"MNIST ConvNet, conv_0 + conv_1 x 8 probes, batch {BATCH}, an event every {EVERY} batches; "
          f"ms, median over the events after the first {WARMUP}")
    print("| backend | events | step | fwd+copy | hook | hook/(fwd+copy) |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends.split(","):
        python = _python_for(backend, given)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([python, __file__, "--child", backend, "--batches", str(args.batches)],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{backend}: not measured ({python}): "
                  f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {r['backend']} | {r['events']} | {r['step_ms']} | {r['fwd_copy_ms']} | {r['hook_ms']} | "
              f"{_ratio(r['hook_ms'], r['fwd_copy_ms'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
