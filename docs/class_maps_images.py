"""Make the README's class-map picture from a real short run of the MNIST example's ConvNet.

```
python docs/class_maps_images.py          # -> docs/images/class_maps.png (about a minute on 2 cores)
KERAS_BACKEND=jax python docs/class_maps_images.py --epochs 4
```

Trains ``examples/mnist_convnet.py``'s model for ``--epochs`` epochs on the
example's digits (scikit-learn's bundled digits offline) with
``cam=actlog.ClassMaps("conv_1")`` on four labelled test digits, then lays out
what was logged, read back with ``actlog.read``: one row per digit, one
column per epoch, each picture exactly as logged (the Grad-CAM map of the
digit's label over the digit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from atlas_images import INK, PAPER, font  # beside this script: the README pictures' one style
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ACTLOG_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(ROOT / "examples"))

GAP = 8


def train(log_dir: str, epochs: int, digits: list[int]) -> None:
    import keras
    from digits import load_digits_28
    from mnist_convnet import build_classic_model

    import actlog

    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test, source = load_digits_28(4000, seed=0)
    chosen = [int(np.flatnonzero(y_test == d)[0]) for d in digits]
    model = build_classic_model(x_train.shape[1:])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logger = actlog.ActivationLogger(log_dir, (x_test[chosen], y_test[chosen]), layers=["conv_0", "conv_1"],
                                     cam=actlog.ClassMaps("conv_1"))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=2, callbacks=[logger])
    print(f"trained on {source}; misses: {logger.misses}")


def picture(log_dir: str) -> Image.Image:
    import actlog

    run = actlog.read(log_dir).run()
    steps, _, classes = run.class_map_values()
    rows = [run.class_maps(p)[1] for p in range(run.probes)]
    text = font(15)
    side = rows[0].shape[1]
    label, header = 80, 28
    canvas = Image.new("RGB", (label + len(steps) * (side + GAP), header + len(rows) * (side + GAP)), PAPER)
    draw = ImageDraw.Draw(canvas)
    for j, step in enumerate(steps):
        draw.text((label + j * (side + GAP), 6), f"epoch {step}", fill=INK, font=text)
    for i, pictures in enumerate(rows):
        top = header + i * (side + GAP)
        draw.text((8, top + side // 2 - 8), f"label {classes[0][i]}", fill=INK, font=text)
        for j, image in enumerate(pictures):
            canvas.paste(Image.fromarray(image), (label + j * (side + GAP), top))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "class_maps.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as log_dir:
        train(log_dir, args.epochs, digits=[0, 2, 5, 7])
        picture(log_dir).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
