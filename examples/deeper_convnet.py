"""A deeper ConvNet (Conv-BN-ReLU blocks) and the ways to choose which layers actlog watches.

Naming every layer one by one stops being practical once a network has blocks.
``ActivationLogger(layers=...)`` also accepts a layer class, a regular
expression over layer names, and a ``{display_name: layer}`` mapping whose
names then appear in TensorBoard instead of the layers' own. This example trains
one network with three loggers, one per way of choosing, each writing its own
run under ``--logdir``:

- ``by_class``: ``layers=keras.layers.Conv2D``, every convolution. They come
  before batch normalisation, so they are signed: the diverging colour map shows
  negative values blue, zero white, positive red, on one range per grid.
- ``by_pattern``: ``layers=re.compile(r"block\\d_conv2")``, the second convolution
  of each block, showing only the 16 most active channels (chosen once, at the
  first event, so a tile is the same channel at every epoch).
- ``named``: ``{"edges": "block1_conv1", "parts": "block2_relu2", "shapes":
  "block3_relu2"}``, logged under those names, with the viridis colour map.

Run it (offline it falls back to scikit-learn's bundled digits and says so)::

    python examples/deeper_convnet.py --logdir runs/deeper --epochs 3
    tensorboard --logdir runs/deeper
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import keras

import actlog
from actlog.layers import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import load_digits_28
from mnist_convnet import tensorboard_command  # noqa: E402

NUM_CLASSES = 10


def build_deeper_model(
    input_shape: tuple[int, int, int] = (28, 28, 1), filters: tuple[int, ...] = (16, 32, 64)
) -> keras.Model:
    """A functional ConvNet of ``len(filters)`` blocks, each Conv-BN-ReLU twice then max pooling.

    Layers are named ``block{b}_conv{i}``, ``block{b}_bn{i}``, ``block{b}_relu{i}``
    and ``block{b}_pool`` (``b`` from 1, ``i`` in 1, 2), which is what makes
    choosing them by pattern easy.

    Args:
        input_shape: per-sample input shape, ``(height, width, channels)``.
        filters: filters of the convolutions of each block; one block per entry.

    Returns:
        An uncompiled ``keras.Model`` named ``deeper_convnet``.
    """
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, width in enumerate(filters, start=1):
        for i in (1, 2):
            # No bias: the batch normalisation that follows has its own offset.
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{b}_conv{i}")(x)
            # momentum 0.9 rather than Keras' 0.99: with a few dozen steps per epoch
            # the moving statistics that inference uses (validation, and the
            # probes, which actlog runs in inference mode) would lag far behind.
            x = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn{i}")(x)
            x = layers.ReLU(name=f"block{b}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="deeper_convnet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="runs/deeper", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--samples",
        type=int,
        default=3000,
        help="training samples to use (a quarter as many test samples); 0 = all",
    )
    parser.add_argument("--probes", type=int, default=4, help="how many test images to watch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.samples < 0 or args.probes < 1:
        parser.error(
            "--epochs and --probes must be >= 1 and --samples >= 0; got "
            f"{args.epochs}, {args.probes}, {args.samples}"
        )

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test, source = load_digits_28(
        args.samples or None, seed=args.seed
    )
    print(f"Dataset: {source}: {len(x_train)} training, {len(x_test)} test images.")
    probes = x_test[: args.probes]

    model = build_deeper_model(x_train.shape[1:])
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    logdir = os.fspath(args.logdir)

    choices = {
        "by_class": (keras.layers.Conv2D, {"cmap": "diverging", "norm": "layer"}),
        "by_pattern": (
            re.compile(r"block\d_conv2"),
            {"max_channels": 16, "channels": "most_active"},
        ),
        "named": (
            {"edges": "block1_conv1", "parts": "block2_relu2", "shapes": "block3_relu2"},
            {"cmap": "viridis"},
        ),
    }
    loggers = []
    for run, (spec, options) in choices.items():
        # What a choice resolves to is known before training: show it.
        names = [f"{w.name}={w.path}" if w.name != w.path else w.name for w in resolve(model, spec)]
        print(f"{run:>10}: layers={_show(spec)} -> {', '.join(names)}")
        loggers.append(
            actlog.ActivationLogger(
                os.path.join(logdir, run), probes=probes, layers=spec, freq=1, **options
            )
        )

    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        # Keras' own TensorBoard callback needs TensorFlow; actlog does not.
        callbacks=[*loggers, *([keras.callbacks.TensorBoard(logdir)]
                                if keras.backend.backend() == "tensorflow" else [])],
        verbose=2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Trained {args.epochs} epochs in {seconds:.1f} s on {source}.")
    print(f"Test accuracy: {accuracy:.4f}")
    print(f"Runs {', '.join(choices)} are in {logdir}. See them with:")
    print(f"    {tensorboard_command()} --logdir {logdir}")
    return 0


def _show(spec: object) -> str:
    if isinstance(spec, type):
        return f"{spec.__module__.split('.')[0]}.layers.{spec.__name__}"
    if isinstance(spec, re.Pattern):
        return f"re.compile({spec.pattern!r})"
    return repr(spec)


if __name__ == "__main__":
    raise SystemExit(main())
