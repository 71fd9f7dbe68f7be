"""One event: a layer's reduced activations -> grids, statistics -> one ``Summary``.

This is the host half of an event, run by the background worker. It receives,
per watched layer, what the probe function reduced on the device (tile levels,
per-channel sums, drift sums; see :mod:`actlog.probe`) and assembles the
serialized ``Summary`` of the step, in the formats TensorBoard's own summary
ops write (image: ``[width, height, png]`` strings; scalar: float32; text:
string; actlog's tensors: float32 or a JSON string with actlog plugin
metadata, see :mod:`actlog.metadata`). Every value carries its metadata, so a
record can start any file.

It imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from actlog import codec, grid, metadata, stats
from actlog.atlas import AtlasResult
from actlog.png import encode_png
from actlog.version import __version__

_IMAGE = image_metadata.create_summary_metadata("", "")
_SCALAR = scalar_metadata.create_summary_metadata("", "")
_TEXT = text_metadata.create_summary_metadata("", "")

PICTURE_LEVEL = 1
"""zlib's level for the pictures made of inputs (probe images, atlas crops, activation
maximisation), where the grids take ISA-L's fast deflate (:mod:`actlog.png`): on such pictures
ISA-L's PNGs came out larger (``benchmarks/bench_atlas.py``'s random images and scikit-learn's
sample photographs), and they are logged once per run or per atlas event, not at every event."""


@dataclass(frozen=True)
class LayerPlan:
    """Everything fixed about one watched layer for a training run.

    Attributes:
        name: display name (tags start with it).
        path: the layer's path in the model.
        layer_class: its class name.
        output_shape: per-sample output shape, as the layer gives it.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        layout: the grid's geometry and the channel of every tile.
        norm, cmap: how tiles are normalised and coloured.
        view: ``"output"``, or ``"attention"`` for an attention layer drawn as its
            attention over the tokens, one tile per head (:mod:`actlog.tokens`).
    """

    name: str
    path: str
    layer_class: str
    output_shape: tuple[int, ...]
    data_format: str
    layout: grid.GridLayout
    norm: str | tuple[float, float]
    cmap: str
    view: str = "output"

    @property
    def channels(self) -> int:
        """Channels of the layer's output."""
        axis = 0 if self.data_format == "channels_first" else -1
        return int(self.output_shape[axis])

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the layer's maps (:func:`actlog.grid.maps_shape` of its channels-last shape)."""
        if self.layout.tokens is not None:
            return (*self.layout.tokens.map_hw, self.channels)
        shape = tuple(self.output_shape)
        if self.data_format == "channels_first" and len(shape) >= 2:
            shape = (*shape[1:], shape[0])
        return grid.maps_shape(shape)

    def manifest_entry(self, probes: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "class": self.layer_class,
            "output_shape": list(self.output_shape),
            "data_format": self.data_format,
            "channels": [int(c) for c in self.layout.channels],
            "grid": self.layout.to_dict(),
            "norm": list(self.norm) if isinstance(self.norm, tuple) else self.norm,
            "cmap": self.cmap,
            **({"view": self.view} if self.view != "output" else {}),
            "tags": [metadata.grid_tag(self.name, i, probes) for i in range(probes)],
        }


@dataclass
class LayerResult:
    """One layer at one event, on the host.

    Attributes:
        levels: uint8 ``(k, th, tw, n)``: colour-map index of every tile pixel.
        sums: per-channel sums (:func:`actlog.stats.reduce_layer`).
        drift: drift sums (:func:`actlog.stats.drift_sums`), or None at a first event.
        nonfinite: fetches the bool ``(k, th, tw, n)`` mask of NaN/Inf pixels;
            called only when the sums say there are some.
        gram: float32 ``(k, k)`` centred Gram matrix (:mod:`actlog.similarity`), or None.
    """

    levels: np.ndarray
    sums: dict[str, np.ndarray]
    drift: dict[str, np.ndarray] | None
    nonfinite: Callable[[], np.ndarray]
    gram: np.ndarray | None = None


class EventAssembler:
    """Makes the ``Summary`` of each event of one run.

    Args:
        plans: the watched layers.
        probes: number of probe images.
        step_axis: :data:`metadata.STEP_AXIS_EPOCH` or ``STEP_AXIS_GLOBAL_STEP``.
        with_stats: also write the statistics.
        probe_images: uint8 images of the probes (``None`` for one that is not
            image-like), written in the header.
        extras: per layer, more entries for its manifest entry (``atlas``,
            ``actmax``: see :mod:`actlog.metadata`), or ``None``.
    """

    def __init__(
        self,
        plans: Sequence[LayerPlan],
        *,
        probes: int,
        step_axis: str,
        with_stats: bool = True,
        probe_images: Sequence[np.ndarray | None] = (),
        extras: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.plans = list(plans)
        self.extras = list(extras) if extras is not None else [{} for _ in self.plans]
        self.probes = probes
        self.step_axis = step_axis
        self.with_stats = with_stats
        self.probe_images = list(probe_images)
        self._sizes = [probes * int(np.prod(plan.output_shape)) for plan in self.plans]
        self._stat_meta = {
            (plan.name, stat): _actlog_metadata(metadata.KIND_CHANNEL_STATS, layer=plan.name, stat=stat)
            for plan in self.plans
            for stat in metadata.CHANNEL_STATS
        }
        self._gram_meta = {plan.name: _actlog_metadata(metadata.KIND_GRAM, layer=plan.name)
                           for plan in self.plans}

    def manifest(self) -> str:
        return metadata.manifest(
            actlog_version=__version__,
            step_axis=self.step_axis,
            probes=self.probes,
            layers=[
                {**plan.manifest_entry(self.probes), **extra}
                for plan, extra in zip(self.plans, self.extras, strict=True)
            ],
        )

    def header(self) -> bytes:
        """Manifest, layer table and probe images: what every file of the run starts with."""
        summary = summary_pb2.Summary()
        _add(summary, metadata.MANIFEST_TAG, _strings([self.manifest()], ()),
             _actlog_metadata(metadata.KIND_MANIFEST))
        _add(summary, metadata.LAYERS_TEXT_TAG, _strings([self.layers_table()], ()), _TEXT)
        for i, image in enumerate(self.probe_images):
            if image is not None:
                _add_image(summary, metadata.probe_image_tag(i, self.probes), image, PICTURE_LEVEL)
        return summary.SerializeToString()

    def layers_table(self) -> str:
        rows = ["| layer | path | class | output shape | channels shown |", "|---|---|---|---|---|"]
        for plan in self.plans:
            rows.append(
                f"| {_md(plan.name)} | {_md(plan.path)} | {plan.layer_class} | "
                f"{tuple(plan.output_shape)} | {len(plan.layout.channels)} of {plan.channels} |"
            )
        return "\n".join(rows)

    def layers(self, indices: Sequence[int], results: Sequence[LayerResult]) -> tuple[bytes, list[str]]:
        """The serialized ``Summary`` values of the layers ``indices`` (of :attr:`plans`), and the
        names of those with NaN or Inf activations. Serialized summaries concatenate into one,
        so an event can be made a few layers at a time."""
        summary = summary_pb2.Summary()
        nonfinite = []
        for index, result in zip(indices, results, strict=True):
            plan = self.plans[index]
            layer = stats.summarize(result.sums, result.drift, size=self._sizes[index])
            mask = None
            if not layer.finite:
                nonfinite.append(plan.name)
                mask = np.asarray(result.nonfinite(), dtype=bool)
            for i in range(self.probes):
                image = grid.render_levels(
                    result.levels[i], plan.layout, cmap=plan.cmap,
                    nonfinite=None if mask is None else mask[i],
                )
                _add_image(summary, metadata.grid_tag(plan.name, i, self.probes), image)
            if result.gram is not None:  # tiny (k x k): written with statistics on or off
                _add(summary, metadata.gram_tag(plan.name), _floats(np.asarray(result.gram, np.float32)),
                     self._gram_meta[plan.name])
            if not self.with_stats:
                continue
            for name, value in layer.scalars().items():
                _add(summary, metadata.stat_tag(plan.name, name), _floats(np.float32(value)), _SCALAR)
            for name, values in layer.channels().items():
                _add(summary, metadata.stat_tag(plan.name, name),
                     _floats(np.asarray(values, np.float32)), self._stat_meta[(plan.name, name)])
        return summary.SerializeToString(), nonfinite


def atlas_summary(results: Sequence[AtlasResult]) -> bytes:
    """The serialized ``Summary`` of one atlas event: per layer its picture, its top-k as
    tensors, and (from the second event on) how much its top-k sets changed."""
    summary = summary_pb2.Summary()
    for result in results:
        name = result.name
        _add_image(summary, metadata.atlas_tag(name), result.image, PICTURE_LEVEL)
        tensors = {"index": _ints(result.index), "position": _ints(result.position),
                   "value": _floats(result.value), "box": _ints(result.box)}
        if result.change is not None:
            _add(summary, metadata.atlas_tag(name, "change"), _floats(np.float32(result.change.mean())),
                 _SCALAR)
            tensors["channel_change"] = _floats(result.change)
        for field_name, tensor in tensors.items():
            _add(summary, metadata.atlas_tag(name, field_name), tensor,
                 _actlog_metadata(metadata.KIND_ATLAS, layer=name, field=field_name))
    return summary.SerializeToString()


def images_summary(images: dict[str, np.ndarray]) -> bytes:
    """The serialized ``Summary`` of images by tag (activation maximisation's pictures)."""
    summary = summary_pb2.Summary()
    for tag, image in images.items():
        _add_image(summary, tag, image, PICTURE_LEVEL)
    return summary.SerializeToString()


def class_maps_summary(layer: str, pictures: dict[str, np.ndarray], maps: np.ndarray,
                       classes: np.ndarray) -> bytes:
    """The serialized ``Summary`` of one class-map event (:mod:`actlog.class_maps`): each probe's
    picture, and the raw maps and classes as tensors."""
    summary = summary_pb2.Summary()
    for tag, image in pictures.items():
        _add_image(summary, tag, image, PICTURE_LEVEL)
    for name, tensor in (("map", _floats(np.asarray(maps))), ("class", _ints(np.asarray(classes)))):
        _add(summary, metadata.cam_field_tag(layer, name), tensor,
             _actlog_metadata(metadata.KIND_CAM, layer=layer, field=name))
    return summary.SerializeToString()


# --------------------------------------------------------------------------- protos


def _actlog_metadata(kind: str, **fields: Any) -> summary_pb2.SummaryMetadata:
    """SummaryMetadata that marks a tensor as actlog's (see :mod:`actlog.metadata`)."""
    return summary_pb2.SummaryMetadata(
        # TensorBoard's data providers serve only tensors whose data class is set.
        data_class=summary_pb2.DATA_CLASS_TENSOR,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=codec.plugin_content(kind, **fields)
        ),
    )


def _add(summary: Any, tag: str, tensor: Any, meta: Any) -> None:
    value = summary.value.add(tag=tag, tensor=tensor)
    value.metadata.CopyFrom(meta)


def _add_image(summary: Any, tag: str, image: np.ndarray, level: int | None = None) -> None:
    """``level``: as in :func:`encode_png` (None: the grids' fast default)."""
    height, width = image.shape[:2]
    _add(summary, tag, _strings([str(width), str(height), encode_png(image, level)], (3,)), _IMAGE)


def _shape(dims: tuple[int, ...]) -> Any:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def _strings(values: list[str | bytes], dims: tuple[int, ...]) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=_shape(dims),
        string_val=[v.encode("utf-8") if isinstance(v, str) else v for v in values],
    )


def _ints(values: np.ndarray) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_INT32,
        tensor_shape=_shape(values.shape),
        tensor_content=np.ascontiguousarray(values, dtype="<i4").tobytes(),
    )


def _floats(values: np.ndarray) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=_shape(values.shape),
        tensor_content=np.ascontiguousarray(values, dtype="<f4").tobytes(),
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
