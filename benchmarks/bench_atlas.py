"""What one feature-atlas event costs, in time and bytes, against an epoch of training.

Two workloads, on whatever Keras backend ``KERAS_BACKEND`` names (TensorFlow,
JAX or PyTorch; no TensorFlow needed for the last two), on the CPU or a GPU:

- **mnist**: the classic MNIST ConvNet of ``tests/conftest.py``
  (``make_classic_model``: Conv 32 -> MaxPool -> Conv 64 -> MaxPool -> Dense),
  ``conv_0`` (26 x 26 x 32) and ``conv_1`` (11 x 11 x 64), a pool of
  ``--pool`` images (default 1024), ``k=8``. Compared with one epoch of
  ``fit`` on ``--epoch-samples`` images at batch 64 (default 4000: the
  training set of ``examples/mnist_convnet.py``), and with an epoch of full
  MNIST (60000 images, extrapolated per sample from the measured epoch).
- **actmax**: the optional activation maximisation on the same MNIST model:
  8 channels of ``conv_1`` (``actmax={"conv_1": range(8)}``), one event
  (:data:`actlog.maximize.STEPS` gradient steps on a batch of 8 images),
  against the same epoch.
- **mobilenet**: ``keras.applications.MobileNetV2(weights=None,
  input_shape=(96, 96, 3))``, every convolution (``Conv2D`` and
  ``DepthwiseConv2D``, 52 layers, 64 channels shown each), a pool of
  ``--mobilenet-pool`` images (default 256).

The logger is driven through the Keras hooks as ``fit`` drives it, with grid
logging off (``freq=0``) and an atlas at every epoch (``Atlas(every=1)``), so
``on_epoch_end`` is exactly one atlas event. Per event: the time on the
training thread (``on_epoch_end``: the pool through the compiled function,
top-k merged on the host), the background time after it (``flush``: crops,
pictures, one record), and the bytes appended to the event file. The first
event (which also compiles) is reported apart; the others are medians.
``on_train_begin`` (compiling the atlas function, receptive fields) is the
setup, once per training run. Weights are untrained: the cost does not depend
on them. Random images: neither does it depend on the pixels.

```
python benchmarks/bench_atlas.py                          # about 2-4 minutes on 2 CPU cores
KERAS_BACKEND=jax python benchmarks/bench_atlas.py         # JAX, no TensorFlow needed
python benchmarks/bench_atlas.py --models mnist,actmax --events 3
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_FREQ_NOTE = "every=5 (the default)"


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _device() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
        if backend == "torch":
            import torch

            where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
            return f"torch {torch.__version__} on {where}"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"tensorflow {tf.__version__} on {'GPU' if gpus else 'CPU'}"
    except Exception as err:  # noqa: BLE001 - only a label
        return f"{backend} ({err})"


def atlas_events(model, pool, layers, events: int, batch: int) -> dict:
    """Time ``events`` atlas events of ``model`` on ``pool`` (see module docstring)."""
    import actlog

    with tempfile.TemporaryDirectory() as log_dir:
        logger = actlog.ActivationLogger(
            log_dir, pool[:1], layers=layers, freq=0, atlas=actlog.Atlas(pool, every=1, batch=batch),
        )
        logger.set_model(model)
        start = time.perf_counter()
        logger.on_train_begin()
        setup = time.perf_counter() - start
        logger.on_epoch_begin(1)  # initial_epoch=1: no step-0 event, each epoch end is one
        thread, background, sizes = [], [], []
        for epoch in range(1, events + 1):
            before = _dir_bytes(log_dir)
            start = time.perf_counter()
            logger.on_epoch_end(epoch)
            middle = time.perf_counter()
            logger.flush()
            end = time.perf_counter()
            thread.append(middle - start)
            background.append(end - middle)
            sizes.append(_dir_bytes(log_dir) - before)
        logger.on_train_end()
        assert logger.misses == {}, logger.misses
    return {
        "setup": setup, "first": thread[0] + background[0], "first_bytes": sizes[0],
        "thread": statistics.median(thread[1:] or thread),
        "background": statistics.median(background[1:] or background),
        "bytes": statistics.median(sizes[1:] or sizes),
    }


def epoch_seconds(model, x, y, batch: int, repeats: int = 3) -> float:
    """One epoch of ``fit``: the median of ``repeats`` (after a warm-up that compiles the step)."""
    model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_mnist(args: argparse.Namespace) -> None:
    from conftest import make_classic_model

    rng = np.random.default_rng(0)
    model = make_classic_model(0)
    x = rng.random((args.epoch_samples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=args.epoch_samples)
    epoch = epoch_seconds(model, x, y, 64)
    pool = rng.random((args.pool, 28, 28, 1), dtype=np.float32)
    found = atlas_events(model, pool, ["conv_0", "conv_1"], args.events, args.batch)
    event = found["thread"] + found["background"]
    full = epoch / args.epoch_samples * 60000
    print(f"\nmnist: classic ConvNet, conv_0 + conv_1, pool of {args.pool}, k=8, batch {args.batch}")
    _print_event(found)
    print(f"  epoch of fit, {args.epoch_samples} images at batch 64 (median of 3): {epoch * 1000:6.1f} ms")
    print(f"  one event / that epoch:                         {event / epoch:9.1%}"
          f"  (training thread alone: {found['thread'] / epoch:.1%})")
    print(f"  per epoch with {DEFAULT_FREQ_NOTE}:        {event / epoch / 5:9.1%}")
    print(f"  one event / an epoch of full MNIST (60000):     {event / full:9.1%}"
          f"  (per epoch at every=5: {event / full / 5:.2%})")


def bench_actmax(args: argparse.Namespace) -> None:
    from conftest import make_classic_model

    import actlog

    rng = np.random.default_rng(0)
    model = make_classic_model(0)
    x = rng.random((args.epoch_samples, 28, 28, 1), dtype=np.float32)
    epoch = epoch_seconds(model, x, rng.integers(0, 10, size=args.epoch_samples), 64)
    times = []
    with tempfile.TemporaryDirectory() as log_dir:
        logger = actlog.ActivationLogger(log_dir, x[:8], layers=["conv_1"], freq=0,
                                         actmax=actlog.Maximize({"conv_1": list(range(8))}, every=1))
        logger.set_model(model)
        logger.on_train_begin()
        logger.on_epoch_begin(1)
        for epoch_index in range(1, args.events + 1):
            start = time.perf_counter()
            logger.on_epoch_end(epoch_index)
            logger.flush()
            times.append(time.perf_counter() - start)
        logger.on_train_end()
    event = statistics.median(times[1:] or times)
    print("\nactmax: classic ConvNet, 8 channels of conv_1, one event")
    print(f"  first event (compiles the gradient):            {times[0] * 1000:9.1f} ms")
    print(f"  event (steps of forward + backward, pictures):  {event * 1000:9.1f} ms")
    print(f"  one event / the epoch of {args.epoch_samples} images:          {event / epoch:9.1%}")


def bench_mobilenet(args: argparse.Namespace) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    layers = [layer.name for layer in model.layers
              if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")]
    pool = np.random.default_rng(0).random((args.mobilenet_pool, 96, 96, 3), dtype=np.float32)
    found = atlas_events(model, pool, layers, args.events, args.batch)
    print(f"\nmobilenet: MobileNetV2 96 x 96, {len(layers)} conv layers, pool of {args.mobilenet_pool}, "
          f"k=8, batch {args.batch}")
    _print_event(found)
    per_image = (found["thread"]) / args.mobilenet_pool * 1000
    print(f"  training thread per pool image:                 {per_image:9.2f} ms")


def _print_event(found: dict) -> None:
    print(f"  setup (on_train_begin: compile, fields):        {found['setup'] * 1000:9.1f} ms")
    print(f"  first event (compiles the atlas function):      {found['first'] * 1000:9.1f} ms, "
          f"{found['first_bytes']:,} bytes (with the run's header)")
    print(f"  event, training thread (pool -> top-k):         {found['thread'] * 1000:9.1f} ms")
    print(f"  event, background (crops, pictures, record):    {found['background'] * 1000:9.1f} ms")
    print(f"  event, bytes appended to the event file:        {found['bytes']:9,.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mnist,actmax,mobilenet",
                        help="comma-separated: mnist, actmax, mobilenet")
    parser.add_argument("--pool", type=int, default=1024, help="pool size for mnist")
    parser.add_argument("--mobilenet-pool", type=int, default=256, help="pool size for mobilenet")
    parser.add_argument("--epoch-samples", type=int, default=4000, help="images in the compared epoch")
    parser.add_argument("--batch", type=int, default=64, help="Atlas(batch=)")
    parser.add_argument("--events", type=int, default=4, help="atlas events per workload (>= 2)")
    args = parser.parse_args(argv)
    import keras

    print(f"actlog atlas benchmark: Keras {keras.__version__}, backend {_device()}, "
          f"{os.cpu_count()} CPU cores")
    for name in args.models.split(","):
        {"mnist": bench_mnist, "actmax": bench_actmax, "mobilenet": bench_mobilenet}[name.strip()](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
