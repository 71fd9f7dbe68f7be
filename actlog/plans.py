"""A training run's layer plans: each watched layer's grid, and the warnings about their cost.

Decided once, before the first training step (a layer that cannot be laid out fails
there, by name), by :class:`actlog.session.Session`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from actlog import grid, probe, probes, tokens
from actlog.event import LayerPlan
from actlog.layers import Watched, resolve

PIXEL_BUDGET = 24 * 2**20
"""Grid pixels per event above which actlog warns that the chosen layers are costly
(about 24 MB of raw pixels)."""


def watch(model: Any, probe_batch: Any, layers: Any) -> tuple[Any, list[Watched], Any, Any]:
    """``(runner, watched, fitted probes, probes as tensors)``: the model to run (see
    :func:`actlog.probe.runner_for`), the watched ``layers`` found in it (a model that
    runs is traced on the probes to find them), the probes fitted to the runner's inputs."""
    trace = None
    if probe.has_call(model):
        fitted = probes.fit_to_model(probe_batch, probe.input_specs(model))
        inputs = probe.to_tensors(model, fitted)
        trace = probe.tracer(model, inputs)
    spec, requests = tokens.split(layers)
    watched = resolve(model, spec, trace)
    runner, watched = probe.runner_for(model, watched)
    if runner is not model or trace is None:
        fitted = probes.fit_to_model(probe_batch, probe.input_specs(runner))
        inputs = probe.to_tensors(runner, fitted)
    image = any(np.ndim(a) == 4 for a in probes.leaves(fitted))
    return runner, tokens.prepare(runner, watched, requests, image=image), fitted, inputs


def layer_plan(w: Any, options: Any) -> LayerPlan:
    """The plan of watched layer ``w`` under the logger's ``options`` (:class:`actlog.session.Options`)."""
    shape = tuple(w.shape[1:])
    grid.check_layer_rank(w.path, shape)
    data_format = _data_format(w.layer)
    last = (*shape[1:], shape[0]) if data_format == "channels_first" and len(shape) >= 2 else shape
    height, width, channels = grid.maps_shape(last)
    if w.tokens is not None:
        height, width = w.tokens.map_hw
    o = options
    shown = channels if o.max_channels is None else min(channels, o.max_channels)
    try:
        layout = grid.plan_layout(
            (height, width), range(shown), max_pixels=o.max_pixels, min_tile=o.min_tile,
            pad=o.pad, rows=o.rows, cols=o.cols, tokens=w.tokens,
        )
    except ValueError as err:
        raise ValueError(
            f"The grid of layer {w.name!r} (output shape {shape}, {shown} channels shown) "
            f"cannot be laid out: {err}"
        ) from None
    return LayerPlan(w.name, w.path, type(w.layer).__name__, shape, data_format, layout, o.norm,
                     o.cmap, "attention" if w.attention else "output")


def warn_budget(plans: Sequence[LayerPlan], max_pixels: int, count: int) -> None:
    """Warn where a grid is drawn below full resolution, or an event's grids are costly."""
    reduced = [f"{p.name!r} at 1/{p.layout.stride}" for p in plans if p.layout.stride > 1]
    if reduced:
        warnings.warn(
            f"actlog: drawing {', '.join(reduced)} of full resolution to fit "
            f"max_pixels={max_pixels} per grid (recorded in the manifest as "
            "'stride'); raise max_pixels or lower max_channels for every pixel.",
            UserWarning,
            stacklevel=5,
        )
    pixels = count * sum(p.layout.height * p.layout.width for p in plans)
    if pixels > PIXEL_BUDGET:
        warnings.warn(
            f"actlog: {len(plans)} layers x {count} probes draw {pixels / 2**20:.1f} Mpixel "
            f"of grids per event, over actlog's budget of {PIXEL_BUDGET / 2**20:.0f} Mpixel "
            "(roughly 0.5-1 s of background work and several MB of log per event). Watch "
            "fewer layers (layers=None picks one per spatial stage), fewer probes, or lower "
            "max_channels / min_tile.",
            UserWarning,
            stacklevel=5,
        )


def _data_format(layer: Any) -> str:
    """Where the layer keeps its channels: ``data_format``, or for normalisation
    layers (which have none) the axis they normalise: ``axis=1`` is channels first."""
    fmt = getattr(layer, "data_format", None)
    if fmt in grid.DATA_FORMATS:
        return fmt
    if type(layer).__name__ in ("BatchNormalization", "GroupNormalization"):
        axis = layer.axis
        if axis == 1 or (isinstance(axis, (list, tuple)) and list(axis) == [1]):
            return "channels_first"
    return "channels_last"
