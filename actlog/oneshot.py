"""Feature maps once, for notebooks and scripts: the classic recipe, done right.

Both functions use the callback's pipeline pieces (probe handling, layer
choice, the forward pass of :mod:`actlog.probe`, the grid toolkit) without
the callback, so what a notebook shows is what the callback logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actlog import grid
from actlog.options import Layout, refuse_moved


def feature_maps(model: Any, images: Any, layers: Any = None) -> dict[str, np.ndarray]:
    """The outputs of ``layers`` of ``model`` for ``images``, as ``{name: array}``.

    The watched outputs are reached the way the callback reaches them (a
    multi-output model over the model's graph, or output capture for nested
    and subclassed models), run once in inference mode. Arrays are float32
    with the batch axis first, in the layer's own data format.

    ```python
    maps = actlog.feature_maps(model, x_test[:1], layers=["conv_0", "conv_1"])
    maps["conv_0"].shape   # (1, 26, 26, 32)
    ```

    Args:
        model: a built Keras model (Sequential, functional, nested or subclassed).
        images: the inputs, in any form ``ActivationLogger(probes=...)`` accepts
            (a batch, one sample, a list of samples, a list / dict of batches for
            a multi-input model).
        layers: which layers; same forms as ``ActivationLogger(layers=...)``.
            ``None`` = the last layer of each spatial stage, ``"*"`` = every
            spatial layer.
    """
    from actlog import probe, probes
    from actlog.layers import resolve

    copied = probes.copy_probes(images)
    trace = None
    if probe.has_call(model):
        inputs = probe.to_tensors(model, probes.fit_to_model(copied, probe.input_specs(model)))
        trace = probe.tracer(model, inputs)
    watched = resolve(model, layers, trace)
    runner, _ = probe.runner_for(model, watched)
    if trace is None:
        inputs = probe.to_tensors(runner, probes.fit_to_model(copied, probe.input_specs(runner)))
    return {w.name: out for w, out in zip(watched, probe.feature_maps(model, watched, inputs), strict=True)}


@refuse_moved({"cols": "layout=actlog.Layout(cols=8)", "rows": "layout=actlog.Layout(rows=...)",
               "pad": "layout=actlog.Layout(pad=1)"})
def plot_feature_maps(
    model: Any,
    images: Any,
    layers: Any = None,
    *,
    max_channels: int | None = 32,
    layout: Layout | None = None,
    cmap: str = "gray",
    tile_inches: float = 1.2,
) -> Any:
    """The classic figure: for each image and layer, its channels as small images in a grid.

    Needs matplotlib (``pip install 'keras-actlog[plot]'``). Returns a
    ``matplotlib.figure.Figure`` with one row per image and one panel per
    layer, each drawn from the same grid the callback logs (per-channel
    normalisation). Each panel's title says how many of the layer's channels
    it shows.

    ```python
    fig = actlog.plot_feature_maps(model, x_test[:2], layers=["conv_0", "conv_1"])
    fig.savefig("maps.png")
    ```

    Args:
        model: a built Keras model.
        images: one sample or a batch (any form ``feature_maps`` accepts);
            every image gets its own row of panels.
        layers: which layers (see ``feature_maps``).
        max_channels: channels drawn per layer (the first ones); ``None`` for
            all. Default 32, the 4 x 8 grid of the classic recipe.
        layout: an :class:`actlog.Layout` for each panel's grid, as
            ``ActivationLogger(layout=...)`` takes it; its ``cols`` (tiles per
            row of a panel) defaults to 8 here.
        cmap: ``"gray"``, ``"viridis"`` or ``"diverging"``.
        tile_inches: size of one tile in the figure.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plot_feature_maps needs matplotlib: pip install 'keras-actlog[plot]'"
        ) from None
    grid.check_cmap(cmap)
    layout = Layout.of(layout)
    cols = layout.cols or 8
    maps = feature_maps(model, images, layers)
    count = len(next(iter(maps.values())))
    panels = []  # (row, name, title, picture)
    for name, out in maps.items():
        sample_maps = [grid.as_maps(sample) for sample in out]
        total = sample_maps[0].shape[-1]
        chosen = grid.select_channels(sample_maps[0][np.newaxis], max_channels, "first")
        per_row = -(-len(chosen) // layout.rows) if layout.rows and not layout.cols else cols
        width = min(per_row, len(chosen))
        plan = grid.plan_layout(
            sample_maps[0].shape[:2], chosen, rows=-(-len(chosen) // width), cols=width, pad=layout.pad,
            min_tile=layout.min_tile, max_pixels=layout.max_pixels,
        )
        shown = f"{len(chosen)} of {total} channels" if len(chosen) < total else f"{total} channels"
        for row, sample in enumerate(sample_maps):
            title = f"{name}  {tuple(out.shape[1:])}  ({shown})" + (f"  image {row}" if count > 1 else "")
            panels.append((row, name, title, grid.render(sample, plan, cmap=cmap)))
    names = list(maps)
    heights = [max(p[3].shape[0] / p[3].shape[1] for p in panels if p[1] == n) for n in names]
    fig, axes = plt.subplots(
        len(names), count, squeeze=False,
        figsize=(cols * tile_inches * count, sum(h * cols * tile_inches for h in heights) + 0.5 * len(names)),
    )
    for row, name, title, picture in panels:
        ax = axes[names.index(name), row]
        ax.imshow(picture if picture.shape[-1] == 3 else picture[..., 0], cmap="gray",
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig
