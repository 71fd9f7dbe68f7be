"""A small vision transformer, with its token maps and attention logged to TensorBoard while it trains.

The data is made here, offline: scikit-learn's bundled handwritten digits (8 x 8
scans), enlarged to 16 x 16 and dropped at a random place on a 32 x 32 canvas of
faint noise. A ViT (4 x 4 patches -> an 8 x 8 grid of 64 tokens, a class token,
4 pre-norm transformer blocks of 4 heads) learns to name the digit, which it can
only do by finding it: watch the class token's attention move onto the digit.

``actlog.ActivationLogger`` with ``layers=None`` watches the patch embedding, each
block's output (token maps drawn over the 8 x 8 patch grid, the class token beside
each map) and the attention of the first and the last block (one tile per head:
where the class token attends), for 8 fixed test canvases, at every epoch; and the
feature atlas of the token layers: for each channel the test canvases that excite
it most, cropped to the patch its best token sits on.

Run it::

    python examples/vit_patches.py --logdir runs/vit --epochs 8

It ends by printing the ``tensorboard`` command to look at the log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

import actlog

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_convnet import tensorboard_command  # noqa: E402

L = keras.layers
CANVAS = 32
PATCH = 4
DIM = 32
DEPTH = 3
HEADS = 4


SHAPES = ("square", "ring", "cross")


def shapes_on_canvas(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 32 x 32 canvases of faint noise, each with one bright 8 x 8 shape (a filled
    square, a ring or a cross: the label) at a random place: float32 ``(n, 32, 32, 1)``
    in [0, 1] and int64 labels."""
    rng = np.random.default_rng(seed)
    stamps = np.zeros((3, 8, 8), np.float32)
    stamps[0] = 1.0
    stamps[1, [0, -1], :] = stamps[1, :, [0, -1]] = 1.0
    stamps[2, 3:5, :] = stamps[2, :, 3:5] = 1.0
    labels = rng.integers(0, 3, n)
    canvas = rng.uniform(0.0, 0.2, (n, CANVAS, CANVAS)).astype(np.float32)
    for image, label in zip(canvas, labels, strict=True):
        y, x = rng.integers(0, CANVAS - 8 + 1, 2)
        image[y:y + 8, x:x + 8] = np.maximum(image[y:y + 8, x:x + 8], stamps[label])
    return canvas[..., None], labels.astype(np.int64)


class ClassTokenAndPositions(L.Layer):
    """Prepends a learned class token and adds learned position embeddings (as ViT does)."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="zeros", name="cls")
        self.positions = self.add_weight(shape=(1, shape[1] + 1, shape[-1]),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02),
                                         name="positions")

    def call(self, x):
        token = keras.ops.tile(self.token, (keras.ops.shape(x)[0], 1, 1))
        return keras.ops.concatenate([token, x], axis=1) + self.positions


class ClassTokenOf(L.Layer):
    """The class token's output: what the head classifies."""

    def call(self, x):
        return x[:, 0]


def build_vit(num_classes: int = 10) -> keras.Model:
    """The keras.io ViT recipe, small: a strided ``Conv2D`` patch embedding, then pre-norm blocks."""
    images = keras.Input((CANVAS, CANVAS, 1), name="image")
    x = L.Conv2D(DIM, PATCH, strides=PATCH, name="patch_embed")(images)
    x = L.Reshape(((CANVAS // PATCH) ** 2, DIM), name="patches")(x)
    x = ClassTokenAndPositions(name="tokens")(x)
    for i in range(DEPTH):
        y = L.LayerNormalization(epsilon=1e-6, name=f"block_{i}_norm1")(x)
        y = L.MultiHeadAttention(HEADS, DIM // HEADS, name=f"block_{i}_attention")(y, y)
        x = L.Add(name=f"block_{i}_add1")([x, y])
        y = L.LayerNormalization(epsilon=1e-6, name=f"block_{i}_norm2")(x)
        y = L.Dense(2 * DIM, activation="gelu", name=f"block_{i}_mlp1")(y)
        y = L.Dense(DIM, name=f"block_{i}_mlp2")(y)
        x = L.Add(name=f"block_{i}_out")([x, y])
    x = L.LayerNormalization(epsilon=1e-6, name="norm")(x)
    outputs = L.Dense(num_classes, name="head")(ClassTokenOf(name="class_token")(x))
    return keras.Model(images, outputs, name="vit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="runs/vit", help="TensorBoard log directory")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1; got {args.epochs}")

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = shapes_on_canvas(1200, args.seed)
    x_test, y_test = shapes_on_canvas(300, args.seed + 1)
    print(f"Dataset: shapes on 32 x 32 canvases, made here: {len(x_train)} training, "
          f"{len(x_test)} test images.")

    model = build_vit(len(SHAPES))
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    logdir = os.fspath(args.logdir)
    probes = x_test[:6]
    logger = actlog.ActivationLogger(logdir, probes=probes, max_channels=16,
                                     atlas=actlog.Atlas(x_test[:256], k=4, every=args.epochs))
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(x_test, y_test), callbacks=[logger], verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"Trained {args.epochs} epochs in {seconds:.1f} s; test accuracy {accuracy:.4f}.")
    print(f"Token maps and attention are in {logdir}. See them with:")
    print(f"    {tensorboard_command()} --logdir {logdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
