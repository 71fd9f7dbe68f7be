"""Feature maps once, for notebooks and scripts: the classic recipe, done right.

Both functions reuse the callback's machinery (layer choice, the probe
function, the grid toolkit), so what a notebook shows is what the callback
logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actlog import grid


def feature_maps(model: Any, images: Any, layers: Any = None) -> dict[str, np.ndarray]:
    """The outputs of ``layers`` of ``model`` for ``images``, as ``{name: array}``.

    One probe function is built for the call (a multi-output model over the
    model's graph, or output capture for nested and subclassed models) and run
    in inference mode. Arrays are float32 with the batch axis first, in the
    layer's own data format.

    ```python
    maps = actlog.feature_maps(model, x_test[:1], layers=["conv_0", "conv_1"])
    maps["conv_0"].shape   # (1, 26, 26, 32)
    ```

    Args:
        model: a built Keras model (Sequential, functional, nested or subclassed).
        images: a batch ``(k, ...)`` shaped like the model's input (a list or
            dict of batches for a multi-input model).
        layers: which layers; same forms as ``ActivationLogger(layers=...)``.
            ``None`` = every layer with spatial output.
    """
    from actlog.callback import _copy_probes
    from actlog.layers import resolve
    from actlog.probe import ProbeFunction

    probes = _copy_probes(images)
    watched = resolve(model, layers, probes=probes)
    probe = ProbeFunction(model, watched, probes)
    return {w.name: out for w, out in zip(watched, probe(), strict=True)}


def plot_feature_maps(
    model: Any,
    image: Any,
    layers: Any = None,
    *,
    max_channels: int | None = 32,
    cols: int = 8,
    cmap: str = "gray",
    tile_inches: float = 1.2,
) -> Any:
    """The classic figure: for each layer, its channels as small images in a grid.

    Needs matplotlib (``pip install 'actlog[plot]'``). Returns a
    ``matplotlib.figure.Figure`` with one panel per layer, each drawn from the
    same grid the callback logs (per-channel normalisation).

    ```python
    fig = actlog.plot_feature_maps(model, x_test[:1], layers=["conv_0", "conv_1"])
    fig.savefig("maps.png")
    ```

    Args:
        model: a built Keras model.
        image: ONE sample as a batch of one ``(1, ...)`` (or a bare sample, to
            which a batch axis is added when its rank is one less than the
            model's input).
        layers: which layers (see ``feature_maps``).
        max_channels: channels drawn per layer (the first ones). Default 32,
            the 4 x 8 grid of the classic recipe.
        cols: tiles per row. Default 8.
        cmap: ``"gray"``, ``"viridis"`` or ``"diverging"``.
        tile_inches: size of one tile in the figure.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plot_feature_maps needs matplotlib: pip install 'actlog[plot]'"
        ) from None
    grid.check_cmap(cmap)
    inputs = getattr(model, "inputs", None)
    array = np.asarray(image)
    if inputs and len(inputs) == 1 and array.ndim == len(inputs[0].shape) - 1:
        array = array[np.newaxis]
    maps = feature_maps(model, array, layers)
    panels = []
    for name, out in maps.items():
        sample = grid.as_maps(out[0])
        chosen = grid.select_channels(sample[np.newaxis], max_channels, "first")
        rows = -(-len(chosen) // min(cols, len(chosen)))
        layout = grid.plan_layout(
            sample.shape[:2], chosen, rows=rows, cols=min(cols, len(chosen)), pad=1
        )
        panels.append((name, out.shape, grid.render(sample, layout, cmap=cmap)))
    fig, axes = plt.subplots(
        len(panels), 1, squeeze=False,
        figsize=(cols * tile_inches, sum(p[2].shape[0] / p[2].shape[1] * cols * tile_inches
                                         for p in panels) + 0.5 * len(panels)),
    )
    for ax, (name, shape, picture) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(picture if picture.shape[-1] == 3 else picture[..., 0], cmap="gray",
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{name}  {tuple(shape[1:])}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig
