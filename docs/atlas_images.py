"""Make the README's feature-atlas pictures from the MNIST example's own log.

```
ACTLOG_OFFLINE=1 python examples/mnist_convnet.py --logdir runs/mnist
python docs/atlas_images.py runs/mnist          # -> docs/images/atlas_conv_0.png, atlas_conv_1.png
```

For ``conv_0`` and ``conv_1``, one picture each: a few channels, one per row,
with the channel's top-k crops at the first atlas step (before training) on
the left and at the last one on the right, exactly as logged (cut from the
logged atlas pictures with ``actlog.read``). The channels shown are those
whose top-k images changed most between the two (among channels whose top-k
values are not all tied: a channel that answers most to blank background finds
the same blank patch in many images); each row says how many it kept. Reads
the log only: no TensorFlow, no Keras.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import actlog
from actlog import atlas

INK = (20, 20, 20)
PAPER = (255, 255, 255)
GAP = 12


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def picture(run: actlog.reader.Run, layer: str, count: int) -> Image.Image:
    steps = run.atlas_steps(layer)
    first, last = run.atlas(layer, steps[0]), run.atlas(layer, steps[-1])
    kept = np.array([len(set(a) & set(b)) for a, b in zip(first.index, last.index, strict=True)])
    tied = last.value[:, 0] == last.value[:, -1]
    ranked = sorted(range(len(last.channels)), key=lambda row: (tied[row], kept[row], -last.value[row, 0]))
    channels = [last.channels[row] for row in sorted(ranked[:count])]
    rows = [(c, atlas.side_by_side(first.crops(c)), atlas.side_by_side(last.crops(c))) for c in channels]
    text = font(15)
    label_width, note_width, header = 110, 130, 30
    crops_width = rows[0][1].shape[1]
    row_height = rows[0][1].shape[0]
    width = label_width + 2 * crops_width + GAP * 3 + note_width
    height = header + len(rows) * (row_height + GAP) + GAP
    canvas = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(canvas)
    left = label_width + GAP
    right = left + crops_width + GAP * 2
    draw.text((left, 8), f"epoch {first.step} (before training)", fill=INK, font=text)
    draw.text((right, 8), f"epoch {last.step}", fill=INK, font=text)
    for i, (channel, before, after) in enumerate(rows):
        y = header + i * (row_height + GAP)
        canvas.paste(Image.fromarray(before), (left, y))
        canvas.paste(Image.fromarray(after), (right, y))
        middle = y + row_height // 2 - 8
        draw.text((8, middle), f"{layer} ch {channel}", fill=INK, font=text)
        draw.text((right + crops_width + GAP, middle), f"kept {kept[last.row(channel)]} of {last.k}",
                  fill=INK, font=text)
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", nargs="?", default="runs/mnist", help="the example's log directory")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "images"))
    parser.add_argument("--channels", type=int, default=6, help="channels (rows) per picture")
    args = parser.parse_args(argv)
    run = actlog.read(args.logdir).run()
    for layer in ("conv_0", "conv_1"):
        path = Path(args.out) / f"atlas_{layer}.png"
        picture(run, layer, args.channels).save(path, optimize=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
