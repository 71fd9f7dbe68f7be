"""Turn a layer's logged grids into an animated GIF or a PNG filmstrip.

The point of logging every epoch is to see change; a GIF of one grid over
every step, or a strip of frames side by side, shows it outside TensorBoard
(in a README, a paper, a chat). Each frame carries its step in a band below
the picture. ``channel=`` follows one channel's tile instead of the whole grid,
upscaled so it stays visible.

numpy and Pillow only: no TensorFlow.

```python
run = actlog.read("runs/exp1").run()
export(run, "conv_0", probe=0, output="conv_0.gif", fps=4)
export(run, "conv_0", probe=0, output="conv_0.png", channel=3)   # one channel, as a strip
export_atlas(run, "conv_1", channel=5, output="ch5.gif")         # its top-k crops over time
export_class_maps(run, probe=0, output="cam.gif")                # where it looks for the class
```

:func:`export_atlas` does the same for the feature atlas: one frame per atlas
step, the channel's top-k crops side by side, best first; :func:`export_class_maps`
for a probe's class activation map (``ActivationLogger(cam=...)``), each frame
captioned with its step and the class the map is of.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from actlog import atlas
from actlog.reader import Run

__all__ = ["ExportError", "ExportResult", "FORMATS", "atlas_frames", "export", "export_atlas",
           "export_class_maps", "frames", "label", "write_frames"]

FORMATS = {".gif": "animated GIF", ".png": "PNG filmstrip"}
"""Output extensions :func:`export` accepts, and what each produces."""

GAP = 4
"""Pixels between (and around) the frames of a filmstrip."""

_BACKGROUND = 255  # white bands and gaps: the label reads like a caption
_INK = 0
_CHANNEL_MIN_SIDE = 128  # a followed channel is upscaled until its long side reaches this

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each frame is prepared."""


class ExportError(ValueError):
    """An export that cannot be made as asked: unknown format, unwritable output."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        path: the output file.
        format: ``".gif"`` or ``".png"``.
        steps: the step of each frame, in order.
        frame_size: ``(width, height)`` of one labelled frame.
        size: ``(width, height)`` of the output image (a GIF's frame size).
        columns: frames per row of a filmstrip (``len(steps)`` for a GIF).
    """

    path: str
    format: str
    steps: tuple[int, ...]
    frame_size: tuple[int, int]
    size: tuple[int, int]
    columns: int


def step_label(run: Run, step: int) -> str:
    """``"epoch 3"`` for the epoch run, ``"step 1200"`` for a batch run."""
    return f"epoch {step}" if run.step_axis == "epoch" else f"step {step}"


def frames(
    run: Run,
    layer: str,
    probe: int,
    *,
    channel: int | None = None,
    scale: int | None = None,
    progress: Progress | None = None,
) -> tuple[list[int], list[np.ndarray]]:
    """The unlabelled frames of an export: one uint8 ``(H, W, C)`` image per step.

    Args:
        run: a run from :func:`actlog.read`.
        layer: layer display name.
        probe: probe index.
        channel: follow this channel's tile (a channel index of the layer, one
            of ``run.channels(layer)``) instead of the whole grid.
        scale: integer nearest-neighbour upscaling. Default: 1 for a grid; for
            a channel, enough for the tile's long side to reach 128 pixels.
        progress: called as ``progress(done, total)`` after each frame.

    Raises:
        actlog.reader.LogError: unknown layer, probe or channel.
    """
    steps = run.grid_steps(layer, probe)
    if channel is not None:
        run.tile(layer, probe, channel, steps[-1])  # fail fast on an unknown channel
    _check_scale(scale)
    images = []
    for step in _each(steps, progress):
        if channel is None:
            image = run.grid(layer, probe, step)
        else:
            image = run.tile(layer, probe, channel, step)
        factor = scale
        if factor is None:
            factor = 1 if channel is None else max(
                1, math.ceil(_CHANNEL_MIN_SIDE / max(image.shape[:2]))
            )
        images.append(_gray_or_rgb(_upscale(image, factor)))
    return steps, images


def atlas_frames(
    run: Run,
    layer: str,
    channel: int,
    *,
    scale: int | None = None,
    progress: Progress | None = None,
) -> tuple[list[int], list[np.ndarray]]:
    """The unlabelled frames of an atlas export: per atlas step, ``channel``'s top-k crops
    side by side (best first, ``GAP`` pixels of :data:`actlog.atlas.BACKGROUND` apart),
    uint8 ``(H, W, 3)``.

    Args:
        run: a run from :func:`actlog.read`.
        layer: layer display name.
        channel: a channel of the layer's atlas (its grid's channels).
        scale: integer nearest-neighbour upscaling; default 1 (crops are
            logged upscaled already).
        progress: called as ``progress(done, total)`` after each frame.

    Raises:
        actlog.reader.LogError: unknown layer, a layer without an atlas, unknown channel.
    """
    _check_scale(scale)
    run.atlas(layer).row(channel)  # fail fast on a missing atlas or channel
    steps = run.atlas_steps(layer)
    images = []
    for step in _each(steps, progress):
        strip = atlas.side_by_side(run.atlas(layer, step).crops(channel), gap=GAP)
        images.append(_upscale(strip, scale or 1))
    return steps, images


def _each(steps: list[int], progress: Progress | None) -> Iterator[int]:
    """``steps`` one by one; ``progress(done, total)`` after each one's frame is made."""
    for done, step in enumerate(steps, start=1):
        yield step
        if progress is not None:
            progress(done, len(steps))


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def _check_scale(scale: int | None) -> None:
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise ExportError(f"scale must be a positive integer; received {scale!r}.")


def _gray_or_rgb(image: np.ndarray) -> np.ndarray:
    """Drop an alpha channel: GIF and the labels want gray (C=1) or RGB (C=3)."""
    return image[:, :, :1] if image.shape[2] == 2 else image[:, :, :3]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _caption(text: str, frame_width: int):
    """Font and metrics of a frame's caption: ``(font, left, top, text_width, band)``.

    The band height comes from a reference string with ascenders, descenders and
    digits, so every frame of an export gets the same band whatever its step.
    """
    from PIL import Image, ImageDraw

    font = _font(max(10, min(16, frame_width // 10)))
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    _, top, _, bottom = draw.textbbox((0, 0), "Epochs 0123456789 gjy", font=font)
    return font, left, top, right - left, (bottom - top) + 6


def label(image: np.ndarray, text: str, *, width: int | None = None) -> np.ndarray:
    """``image`` with ``text`` written in a white band below it.

    The picture keeps its pixels, centred horizontally when the text or
    ``width`` is wider than it. Returns uint8 ``(H + band, max(W, text, width), C)``
    with C = 1 for a gray image, 3 otherwise (an alpha channel is dropped).
    """
    from PIL import Image, ImageDraw

    pixels = _gray_or_rgb(image)
    rgb = pixels.shape[2] == 3
    height, frame_width = pixels.shape[:2]
    font, left, top, text_width, band = _caption(text, frame_width)
    total_width = max(frame_width, text_width + 6, width or 0)
    canvas = np.full((height + band, total_width, pixels.shape[2]), _BACKGROUND, np.uint8)
    x0 = (total_width - frame_width) // 2
    canvas[:height, x0 : x0 + frame_width] = pixels
    picture = Image.fromarray(canvas if rgb else canvas[:, :, 0])
    ImageDraw.Draw(picture).text(
        ((total_width - text_width) // 2 - left, height + 3 - top),
        text,
        fill=(_INK,) * 3 if rgb else _INK,
        font=font,
    )
    out = np.asarray(picture, dtype=np.uint8)
    return out if rgb else out[:, :, None]


def _uniform(images: list[np.ndarray]) -> list[np.ndarray]:
    """Same size and channel count for every frame (a later fit may change the grid)."""
    rgb = any(image.shape[2] != 1 for image in images)
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    out = []
    for image in images:
        if rgb and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        if image.shape[:2] != (height, width):
            canvas = np.full((height, width, image.shape[2]), _BACKGROUND, np.uint8)
            canvas[: image.shape[0], : image.shape[1]] = image
            image = canvas
        out.append(image)
    return out


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def _save(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file beside ``path``, then rename it into place:
    a failed write (disk full, interrupted) never leaves a half-written file, nor
    destroys an earlier export of the same name."""
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.close(handle)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def check_output(output: str | os.PathLike[str]) -> str:
    """Check that ``output`` has a known extension and can be written; return its path.

    Raises:
        ExportError: unknown extension, missing or unwritable directory,
            or ``output`` is a directory.
    """
    path = os.fspath(output)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        accepted = ", ".join(f"{ext} ({what})" for ext, what in FORMATS.items())
        raise ExportError(
            f"Unknown output extension {extension or '(none)'!r} in {path!r}; accepted: {accepted}."
        )
    if os.path.isdir(path):
        raise ExportError(f"Cannot write {path!r}: it is a directory.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ExportError(f"Cannot write {path!r}: directory {parent!r} does not exist.")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ExportError(f"Cannot write {path!r}: permission denied.")
    return path


def export(
    run: Run,
    layer: str,
    probe: int,
    output: str | os.PathLike[str],
    *,
    channel: int | None = None,
    fps: float = 4.0,
    columns: int | None = None,
    scale: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the evolution of one grid (or one channel) over every logged step.

    ``.gif`` gives an animation, one frame per step, looping; ``.png`` gives a
    filmstrip: frames left to right, wrapped into rows of ``columns``, each
    frame ``GAP`` pixels from its neighbours and from the border.

    ```python
    run = actlog.read("runs/exp1").run()
    export(run, "conv_1", 0, "conv_1.gif", fps=2)
    ```

    Args:
        run: a run from :func:`actlog.read`.
        layer: layer display name (``run.layers``).
        probe: probe index (``0 <= probe < run.probes``).
        output: path ending in ``.gif`` or ``.png``.
        channel: follow this channel's tile instead of the whole grid.
        fps: frames per second of a GIF (> 0). Default 4.
        columns: frames per row of a filmstrip; default as many as fit in
            about 2000 pixels.
        scale: integer upscaling of each frame (see :func:`frames`).
        progress: ``progress(done, total)`` after each frame is prepared.

    Returns:
        An :class:`ExportResult`.

    Raises:
        actlog.reader.LogError: unknown layer, probe or channel.
        ExportError: bad ``output``, ``fps`` or ``columns``.
        OSError: the file could not be written after all (disk full, ...).
    """
    path = check_options(output, fps, columns)
    steps, images = frames(run, layer, probe, channel=channel, scale=scale, progress=progress)
    return _write(run, path, steps, images, fps=fps, columns=columns)


def export_atlas(
    run: Run,
    layer: str,
    channel: int,
    output: str | os.PathLike[str],
    *,
    fps: float = 4.0,
    columns: int | None = None,
    scale: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write one channel's feature atlas over every atlas step: what it responds to most,
    and how that changed while the network trained.

    Each frame is the channel's top-k crops side by side, best first, labelled
    with its step; ``.gif`` animates them, ``.png`` stacks them as a filmstrip
    (``columns=1``: one row per step, the easiest to compare).

    ```python
    run = actlog.read("runs/exp1").run()
    export_atlas(run, "conv_1", 5, "conv_1_ch5.png", columns=1)
    ```

    Args:
        run: a run from :func:`actlog.read`.
        layer: layer display name.
        channel: a channel shown in the layer's atlas (``run.atlas(layer).channels``).
        output: path ending in ``.gif`` or ``.png``.
        fps, columns, scale, progress: as :func:`export`.

    Raises:
        actlog.reader.LogError: unknown layer, a layer without an atlas, unknown channel.
        ExportError: bad ``output``, ``fps``, ``columns`` or ``scale``.
        OSError: the file could not be written after all.
    """
    path = check_options(output, fps, columns)
    steps, images = atlas_frames(run, layer, channel, scale=scale, progress=progress)
    return _write(run, path, steps, images, fps=fps, columns=columns)


def export_class_maps(
    run: Run,
    probe: int,
    output: str | os.PathLike[str],
    *,
    fps: float = 4.0,
    columns: int | None = None,
    scale: int | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write one probe's class activation map (Grad-CAM, ``ActivationLogger(cam=...)``) over
    every step it was logged: where the model looked for the probe's class, epoch by epoch.

    Each frame is the map in colour over the probe, as the dashboard's probe panel shows it,
    captioned with its step and the class it is of (with ``classes="predicted"`` that class
    may change from step to step).

    ```python
    run = actlog.read("runs/exp1").run()
    export_class_maps(run, 0, "probe_0_cam.gif")
    ```

    Args:
        run: a run from :func:`actlog.read`.
        probe: probe index.
        output: path ending in ``.gif`` or ``.png``.
        fps, columns, progress: as :func:`export`.
        scale: integer upscaling of each frame; default 1 (the pictures are logged at least
            :data:`actlog.class_maps.MIN_SIDE` pixels on their short side).

    Raises:
        actlog.reader.LogError: a run without class maps, an unknown probe.
        ExportError: bad ``output``, ``fps``, ``columns`` or ``scale``.
        OSError: the file could not be written after all.
    """
    path = check_options(output, fps, columns)
    _check_scale(scale)
    steps, pictures = run.class_maps(probe)
    value_steps, _, classes = run.class_map_values()
    class_at = dict(zip(value_steps.tolist(), classes[:, probe].tolist(), strict=True))
    images = [_upscale(pictures[i], scale or 1) for i in _each(list(range(len(steps))), progress)]
    texts = [f"{step_label(run, step)}, class {class_at[step]}" if step in class_at
             else step_label(run, step) for step in steps.tolist()]
    return write_frames(path, steps.tolist(), images, texts, fps=fps, columns=columns)


def check_options(output: str | os.PathLike[str], fps: float, columns: int | None) -> str:
    path = check_output(output)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ExportError(f"fps must be a number > 0; received {fps!r}.")
    if columns is not None and (
        isinstance(columns, bool) or not isinstance(columns, int) or columns < 1
    ):
        raise ExportError(f"columns must be a positive integer; received {columns!r}.")
    return path


def _write(run: Run, path: str, steps: list[int], images: list[np.ndarray], *, fps: float,
           columns: int | None) -> ExportResult:
    """Label ``images`` with their steps and write them to ``path`` (a GIF or a filmstrip)."""
    texts = [step_label(run, step) for step in steps]
    return write_frames(path, steps, images, texts, fps=fps, columns=columns)


def write_frames(path: str, steps: list[int], images: list[np.ndarray], texts: list[str] | None, *,
                 fps: float, columns: int | None) -> ExportResult:
    """Write ``images`` (one per step) to ``path``, a GIF or a filmstrip, each captioned with its
    text in ``texts`` (None: frames that carry their own labels, written as they are).

    ``path`` must have passed :func:`check_output`; :func:`actlog.compare` writes its
    side-by-side frames through here too.
    """
    extension = os.path.splitext(path)[1].lower()
    images = _uniform(images)
    if texts is None:
        labelled = images
    else:
        # Every frame as wide as the widest caption, so that a GIF does not jump.
        width = max(
            max(image.shape[1], _caption(text, image.shape[1])[3] + 6)
            for image, text in zip(images, texts, strict=True)
        )
        labelled = [label(image, text, width=width) for image, text in zip(images, texts, strict=True)]
    frame_height, frame_width = labelled[0].shape[:2]

    if extension == ".gif":
        pictures = [_pil(frame) for frame in labelled]
        _save(
            path,
            lambda target: pictures[0].save(
                target,
                format="GIF",
                save_all=True,
                append_images=pictures[1:],
                duration=max(20, round(1000 / fps)),
                loop=0,
            ),
        )
        size, used_columns = (frame_width, frame_height), len(labelled)
    else:
        if columns is None:
            columns = max(1, min(len(labelled), (2000 - GAP) // (frame_width + GAP)))
        used_columns = min(columns, len(labelled))
        rows = math.ceil(len(labelled) / used_columns)
        strip = np.full(
            (
                GAP + rows * (frame_height + GAP),
                GAP + used_columns * (frame_width + GAP),
                labelled[0].shape[2],
            ),
            _BACKGROUND,
            np.uint8,
        )
        for index, frame in enumerate(labelled):
            row, col = divmod(index, used_columns)
            y = GAP + row * (frame_height + GAP)
            x = GAP + col * (frame_width + GAP)
            strip[y : y + frame_height, x : x + frame_width] = frame
        picture = _pil(strip)
        _save(path, lambda target: picture.save(target, format="PNG"))
        size = (strip.shape[1], strip.shape[0])
    return ExportResult(
        path=path,
        format=extension,
        steps=tuple(steps),
        frame_size=(frame_width, frame_height),
        size=size,
        columns=used_columns,
    )
