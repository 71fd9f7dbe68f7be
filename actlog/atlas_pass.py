"""The feature atlas of one training run: its compiled function and its events.

:class:`AtlasFunction` is the device half, built like the probe function
(:class:`actlog.probe.ProbeFunction`): the same :class:`actlog.probe.Forward`,
the same backend seam, compiled once per training run for a fixed batch
shape, run in inference mode; after the forward pass it keeps, per image and
shown channel, the largest activation and where (:func:`actlog.atlas.peaks`).

:class:`AtlasPass` is built with the session (so a pool that does not fit the
model, or a model without an image input, fails before the first epoch). At
each atlas event, on the training thread, :meth:`AtlasPass.stream` runs the
pool through the function in batches (the last one padded) and merges each
batch into a running top-k on the host while the next batch runs: memory is
bounded by the batch; a model spread over several devices (``keras.distribution``) gets
each batch split over them (:meth:`actlog.backends.Backend.spread`), every process reading
its own share. :meth:`AtlasPass.finish`, in the background, crops the
receptive fields (:mod:`actlog.receptive`) and draws each layer's atlas. A token
layer's crops are the patch its best patch token sits on, outlined in an unfaded
picture (:func:`actlog.tokens.outline`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from actlog import atlas, grid, probe, probes, receptive
from actlog.arrays import NUMPY
from actlog.atlas import AtlasLayout, AtlasOptions, AtlasResult, Field
from actlog.backends import Backend
from actlog.event import LayerPlan
from actlog.tokens import outline

Top = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One layer's top-k from :meth:`actlog.atlas.TopK.result`: ``(index, where, value)``."""


class AtlasFunction:
    """``fn(batch, channels)`` -> per watched layer ``{"value", "where"}``, ``(b, n)`` each.

    Args:
        model: the model being trained (its variables feed the function).
        runner: the model that runs (see :func:`actlog.probe.runner_for`).
        forward: the probe function's :class:`~actlog.probe.Forward`.
        plans: one :class:`~actlog.event.LayerPlan` per watched layer.
        example: a pool batch as backend tensors: the shape of every call.
        channels: per layer, int32 tensors of the shown channels.
        backend: the current :class:`~actlog.backends.Backend`.
    """

    def __init__(
        self, model: Any, runner: Any, forward: probe.Forward, plans: Sequence[LayerPlan],
        example: Any, channels: list[Any], backend: Backend,
    ) -> None:
        self.forward = forward
        self.plans = list(plans)
        self._fn = probe.compile_function(backend, self._peaks, model, (example, channels), runner,
                                          replay=False)

    @property
    def traces(self) -> int:
        """How many times the function was traced (1 once compiled; 0 when it runs eagerly)."""
        return self._fn.traces

    def __call__(self, batch: Any, channels: list[Any]) -> list[dict[str, Any]]:
        return self._fn(batch, channels)

    def _peaks(self, batch: Any, channels: list[Any]) -> list[dict[str, Any]]:
        ops = keras.ops
        out = []
        for output, index, plan in zip(self.forward(batch), channels, self.plans, strict=True):
            acts = probe.channels_last(ops.cast(output, "float32"), plan.data_format)
            value, where = atlas.peaks(ops, _maps(ops, acts, plan), index)
            out.append({"value": value, "where": where})
        return out


class AtlasPass:
    """The atlas of one training run (see the module docstring).

    Args:
        model, runner, forward, plans, backend: as the probe function's.
        options: the logger's :class:`~actlog.atlas.AtlasOptions`.

    Raises:
        ValueError: the pool does not fit the model, or no model input is an image.
    """

    def __init__(
        self, model: Any, runner: Any, forward: probe.Forward, plans: Sequence[LayerPlan],
        options: AtlasOptions, backend: Backend,
    ) -> None:
        specs = probe.input_specs(runner)
        self.options = options
        self.backend = backend
        self._model = model
        self._runner = runner
        self.pool = probes.fit_to_model(options.pool, specs, name="atlas")
        found = probes.image_input(self.pool, specs)
        if found is None:
            shapes = [tuple(a.shape) for a in probes.leaves(self.pool)]
            raise ValueError(
                f"atlas needs a model input that is an image (H, W, c) with c in 1, 3, 4, to crop "
                f"what each channel sees; received a pool of shapes {shapes}. Accepted: a pool "
                "for a model with an image input."
            )
        self.image_input, self.images = found
        self.image_hw = tuple(int(d) for d in self.images.shape[1:3])
        self.batch = min(options.batch, options.size)
        _, _, first = next(atlas.batches(self.pool, self.batch))
        every = [_int32(range(len(p.layout.channels))) for p in plans]
        self.function = AtlasFunction(model, runner, forward, plans, probe.to_tensors(runner, first),
                                      every, backend)
        self.fields = self._fields(model, runner, forward, plans)
        self.max_pixels = min(atlas.MAX_PIXELS, atlas.EVENT_PIXELS // max(1, len(plans)))
        self._warn_budget(plans)

    # -- setup ------------------------------------------------------------------------

    def _fields(self, model: Any, runner: Any, forward: probe.Forward,
                plans: Sequence[LayerPlan]) -> list[Field | None]:
        """Each layer's receptive field; ``None`` for a layer without spatial maps (its
        crop is the whole image)."""
        spatial = [len(p.output_shape) == 3 for p in plans]
        fields = [
            receptive.chain_field(runner, w, self.image_input, self.image_hw) if s
            else p.layout.tokens.field(self.image_hw) if p.layout.tokens is not None else None
            for w, s, p in zip(forward.watched, spatial, plans, strict=True)
        ]
        missing = [i for i, (f, s) in enumerate(zip(fields, spatial, strict=True)) if s and f is None]
        if missing:
            def maps(batch: Any) -> list[Any]:
                outputs = forward(batch)
                return [
                    grid.batch_maps(NUMPY, np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(
                        probe.channels_last(outputs[i], plans[i].data_format), "float32"))))
                    if i in missing else None
                    for i in range(len(plans))
                ]

            # Eager (numpy comes out), but through the backend: its variables, no gradients.
            run = self.backend.compile(maps, model, (), eager=True)
            measured = receptive.measure(
                lambda inputs: run(probe.to_tensors(runner, inputs)), self.pool, self.image_input, self.batch
            )
            for i in missing:
                fields[i] = measured[i]
        return fields

    def _warn_budget(self, plans: Sequence[LayerPlan]) -> None:
        strides = {
            plan.name: layout.stride for plan, field in zip(plans, self.fields, strict=True)
            if (layout := self.layout(plan, field)).stride > atlas.display(*self._crop_hw(field))[1]
        }
        if strides:
            names = ", ".join(repr(name) for name in list(strides)[:3])
            names += ", ..." if len(strides) > 3 else ""
            warnings.warn(
                f"actlog: the feature atlas draws the crops of {len(strides)} layer(s) ({names}) at "
                f"1/{min(strides.values())} to 1/{max(strides.values())} of their resolution, to keep an "
                f"event's atlas pictures within {atlas.EVENT_PIXELS / 2**20:.0f} Mpixel; give the atlas "
                "fewer layers (or channels, or a smaller Atlas k) for more.",
                UserWarning,
                stacklevel=5,
            )

    def _crop_hw(self, field: Field | None) -> tuple[int, int]:
        return self.image_hw if field is None else atlas.shown_box(field.box(0, 0), self.image_hw)[2:]

    def layout(self, plan: LayerPlan, field: Field | None) -> AtlasLayout:
        """The atlas picture's geometry for ``plan`` (its grid's cells and tile order)."""
        grid_layout = plan.layout
        return atlas.plan_atlas(grid_layout.channels, grid_layout.rows, grid_layout.cols,
                                self.options.k, self._crop_hw(field), max_pixels=self.max_pixels)

    def manifest_entries(self, plans: Sequence[LayerPlan]) -> list[dict[str, Any]]:
        """The ``atlas`` entry of each layer in the manifest (see :mod:`actlog.metadata`)."""
        return [
            {
                "k": self.options.k,
                "pool": self.options.size,
                "input": list(self.image_hw),
                "field": None if field is None else field.to_dict(),
                "layout": self.layout(plan, field).to_dict(),
            }
            for plan, field in zip(plans, self.fields, strict=True)
        ]

    # -- events -----------------------------------------------------------------------

    def stream(self, channels: list[Any]) -> list[Top]:
        """The training thread's half: the pool through the function, merged into each
        layer's top-k. ``channels``: per layer, the shown channels as int32 tensors."""
        tops = [atlas.TopK(int(c.shape[0]), self.options.k) for c in channels]

        def merge(pending: tuple[Any, int, int]) -> None:
            fetch, start, count = pending
            for top, host in zip(tops, fetch(), strict=True):
                top.add(host["value"][:count], host["where"][:count], start)

        pending = None
        for start, count, batch in atlas.batches(self.pool, self.batch):
            out = self.function(self.backend.spread(probe.to_tensors(self._runner, batch), self._model),
                                channels)
            if pending is not None:
                merge(pending)  # the previous batch, while this one may still run
            pending = (self.backend.fetch(out), start, count)
        if pending is not None:
            merge(pending)
        return [top.result() for top in tops]

    def finish(
        self, plans: Sequence[LayerPlan], tops: Sequence[Top], previous: Sequence[np.ndarray | None],
    ) -> list[AtlasResult]:
        """The background half: positions, boxes, crops and the atlas picture of each layer;
        ``previous`` are the last event's indices, for the change (``None`` at the first)."""
        results = []
        layers = zip(plans, self.fields, tops, previous, strict=True)
        for plan, field, (index, where, value), before in layers:
            tokens = plan.layout.tokens
            height, width = plan.map_shape[:2] if tokens is None else (tokens.h, tokens.w)
            y, x = np.divmod(np.minimum(where, height * width - 1), width)
            if field is None:
                boxes = np.broadcast_to(np.asarray([0, 0, *self.image_hw]), (*index.shape, 4))
            else:
                boxes = np.stack([field.start[0] + y * field.jump[0], field.start[1] + x * field.jump[1],
                                  np.full_like(y, field.size[0]), np.full_like(x, field.size[1])], axis=-1)
            layout = self.layout(plan, field)
            # A channel that never fires on the pool (a dead ReLU: every value 0) ranks nothing;
            # nor does an image whose map held NaN or Inf.
            shown = np.where((value == 0).all(axis=1, keepdims=True) | ~np.isfinite(value), -1, index)
            cells: list[list[np.ndarray | None]] = [[None] * index.shape[1] for _ in index]
            slots = np.argwhere(shown >= 0)
            if len(slots):
                t, r = slots[:, 0], slots[:, 1]
                unique, which = np.unique(shown[t, r], return_inverse=True)
                images = np.stack([grid.to_image(self.images[i]) for i in unique])[which]
                seen = None
                if field is not None and tokens is None:
                    rows, cols = np.asarray(field.rows)[y[t, r]], np.asarray(field.cols)[x[t, r]]
                    seen = np.stack([rows[:, 0], cols[:, 0], rows[:, 1], cols[:, 1]], axis=1)
                windows = atlas.shown_box(boxes[t, r], self.image_hw)
                pictures = atlas.crops(images, windows, seen, scale=layout.scale, stride=layout.stride)
                if tokens is not None:
                    pictures = outline(pictures, windows, boxes[t, r], scale=layout.scale,
                                       stride=layout.stride)
                for (t, r), picture in zip(slots, pictures, strict=True):
                    cells[t][r] = picture
            results.append(AtlasResult(
                name=plan.name, image=atlas.render_atlas(layout, cells), index=index,
                position=np.stack([y, x], axis=-1), value=value, box=np.ascontiguousarray(boxes),
                change=None if before is None else atlas.jaccard_distance(index, before),
            ))
        return results


def _maps(xp: Any, acts: Any, plan: LayerPlan) -> Any:
    """A layer's maps for its peaks: a token layer's patch tokens alone (its best token is
    then one the image has a place for)."""
    tokens = plan.layout.tokens
    return grid.batch_maps(xp, acts) if tokens is None else tokens.patches(xp, acts)


def _int32(values: Any) -> Any:
    return keras.ops.convert_to_tensor(np.asarray(list(values), dtype=np.int32))
