"""The classic MNIST ConvNet, with its activation maps logged to TensorBoard while it trains.

This is the network of the well-known "visualize the layers of a ConvNet" recipe
(two 3 x 3 convolutions with 32 and 64 filters, max pooling, dropout, a dense
head), rebuilt for Keras 3. Instead of building a model per layer and calling
``predict`` by hand after training, ``actlog.ActivationLogger`` logs the maps of
``conv_0`` and ``conv_1`` for 10 fixed test digits, one of each class, at every
epoch, and the feature atlas of both layers: the test digits (up to 1024 of
them) that excite each channel most, cropped to what the channel sees, before
training and every 5 epochs (and at the last one). The loss curves come from
Keras' own ``TensorBoard`` callback on TensorFlow, and from actlog itself on JAX
and PyTorch (Keras' callback needs TensorFlow): TensorBoard's Scalars tab shows
them on every backend.

Run it (offline it falls back to scikit-learn's bundled digits and says so)::

    python examples/mnist_convnet.py --logdir runs/mnist --epochs 5
    KERAS_BACKEND=jax python examples/mnist_convnet.py      # or torch

It ends by printing the ``tensorboard`` command to look at the log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

# TensorFlow's C++ start-up notes (CPU features, oneDNN) are INFO lines; warnings still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from actlog.backends import missing_backend

try:
    import keras
except ModuleNotFoundError as error:  # Keras' backend is not installed: say which KERAS_BACKEND to set
    raise SystemExit(f"{Path(__file__).name}: {missing_backend(error) or error}") from None

from actlog import ActivationLogger  # noqa: E402 - after Keras' import is known to work

# Runs as `python examples/mnist_convnet.py` from anywhere, and is importable by the
# benchmark once `examples/` is on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import load_digits_28  # noqa: E402

NUM_CLASSES = 10


def build_classic_model(input_shape: tuple[int, int, int] = (28, 28, 1)) -> keras.Sequential:
    """The article's ConvNet, with layer names that work in Keras 3.

    The original named its first convolution ``input_layer`` and renamed it later
    through the private ``layer._name``. In Keras 3 ``input_layer`` is already the
    automatic name of the ``Input`` layer, so two layers would share it, and
    assigning ``_name`` silently changes nothing. The layer is simply called
    ``conv_0`` from the start.

    Args:
        input_shape: per-sample input shape, ``(height, width, channels)``.

    Returns:
        An uncompiled ``keras.Sequential`` model with named layers ``conv_0``,
        ``conv_1``, ``pool_1``, ``dropout_1``, ``flatten_1``, ``dense_1``,
        ``dropout_2`` and ``output``.
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu", name="conv_0"),
            layers.Conv2D(64, 3, activation="relu", name="conv_1"),
            layers.MaxPooling2D(2, name="pool_1"),
            layers.Dropout(0.25, name="dropout_1"),
            layers.Flatten(name="flatten_1"),
            layers.Dense(128, activation="relu", name="dense_1"),
            layers.Dropout(0.5, name="dropout_2"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="output"),
        ],
        name="classic_convnet",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="runs/mnist", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--samples",
        type=int,
        default=4000,
        help="training samples to use (a quarter as many test samples); 0 = all",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.samples < 0:
        parser.error(f"--epochs must be >= 1 and --samples >= 0; got {args.epochs}, {args.samples}")

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test, source = load_digits_28(
        args.samples or None, seed=args.seed
    )
    print(f"Dataset: {source}: {len(x_train)} training, {len(x_test)} test images.")

    model = build_classic_model(x_train.shape[1:])
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    logdir = os.fspath(args.logdir)
    # One probe per class, fixed for the whole run: the same digits at every epoch,
    # so changes in the grids are changes in the network, not in the input. The atlas
    # pool is read once too: the same digits compete at every atlas event.
    probes = np.stack([x_test[np.flatnonzero(y_test == digit)[0]] for digit in range(NUM_CLASSES)])
    # On JAX and PyTorch, actlog also writes the loss curves (epoch_logs=None: where Keras'
    # own TensorBoard callback, which needs TensorFlow, cannot).
    callbacks = [
        ActivationLogger(logdir, probes=probes, layers=["conv_0", "conv_1"], freq=1, atlas=x_test[:1024])
    ]
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(logdir))
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Trained {args.epochs} epoch{'s' if args.epochs > 1 else ''} in {seconds:.1f} s on "
          f"{keras.backend.backend()}, on {source}.")
    print(f"Test accuracy: {accuracy:.4f}")
    print(f"Activation grids are in {logdir}. See them with:")
    print(f"    {tensorboard_command()} --logdir {logdir}")
    return 0


def tensorboard_command() -> str:
    """``tensorboard`` as it can be typed here: the script beside this Python (a virtual
    environment's ``bin/``, on no PATH until activated), relative when that is shorter."""
    script = Path(sys.executable).with_name("tensorboard")
    if not script.exists():
        return "tensorboard"
    relative = os.path.relpath(script)
    return relative if len(relative) < len(str(script)) else str(script)


if __name__ == "__main__":
    raise SystemExit(main())
