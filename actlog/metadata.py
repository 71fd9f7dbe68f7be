"""What actlog writes, and how to recognise it: tags, runs and the manifest.

This module names what a log holds; :mod:`actlog.codec` owns how it is stored
(file names, records, events, and the version of the plugin metadata and the
manifest). The callback writes with both, the reader, the exporter and the
dashboard read with both. It imports neither TensorFlow nor TensorBoard, so
every reader stays light.

A log directory ``LOGDIR`` handed to :class:`actlog.ActivationLogger` holds two
runs of actlog's own (Keras' ``TensorBoard`` callback writes ``train/`` and
``validation/`` beside them):

- ``LOGDIR/activations``: epoch events. Step = number of epochs completed
  (0 = before training, 1 = after the first epoch, ...).
- ``LOGDIR/activations_batch``: batch events, only when batch logging is on.
  Step = the optimizer's global step (``model.optimizer.iterations``).

Each run holds these tags (``{layer}`` is the display name, ``{i}`` the probe
index zero-padded to the width of the largest index):

- ``{layer}/probe_{i}``: image, the activation grid of one layer for one probe.
- ``{layer}/mean``, ``/std``, ``/sparsity``, ``/dead_fraction``, ``/drift``:
  scalars (``drift`` from the second event on).
- ``{layer}/channel_mean``, ``/channel_max``, ``/channel_drift``: float32
  vectors with one value per channel of the layer (every channel, not only
  those shown), written as tensors with actlog plugin metadata.
- ``{layer}/gram``: float32 ``(k, k)``, the centred Gram matrix of the layer's
  float activations on the ``k`` probes (:mod:`actlog.similarity`), a tensor
  with kind :data:`KIND_GRAM`; written at every event, statistics on or off.
- ``actlog/probe_{i}``: image, the probe input itself (image-like inputs only).
- ``actlog/layers``: text, a table of the watched layers.
- ``actlog/manifest``: a scalar string tensor holding JSON (see
  :func:`manifest`), rewritten at the first event of every ``fit``; the last
  one written describes every grid tag, its tile layout and its channels.

The feature atlas (``ActivationLogger(atlas=...)``, see :mod:`actlog.atlas`)
adds, in the epoch run at each atlas step, per layer (``n`` shown channels in
tile order, ``k`` examples per channel, best first; one record per atlas
event, beside the grid event of the same step):

- ``{layer}/atlas``: image, the atlas picture: cell ``t`` (at the place of
  tile ``t`` of the grid) holds the crops of channel ``channels[t]``.
- ``{layer}/atlas_index``: int32 ``(n, k)``, the examples' indices in the
  pool (-1 = an empty slot).
- ``{layer}/atlas_position``: int32 ``(n, k, 2)``, ``(y, x)`` of the unit in
  the layer's output (channels last).
- ``{layer}/atlas_value``: float32 ``(n, k)``, the activations there.
- ``{layer}/atlas_box``: int32 ``(n, k, 4)``, ``(top, left, height, width)``
  of the unit's receptive field in input pixels (it may extend past the image).
- ``{layer}/atlas_change``: scalar, the mean over channels of
  ``/atlas_channel_change`` (from the second atlas event on).
- ``{layer}/atlas_channel_change``: float32 ``(n,)``, the Jaccard distance
  between each channel's top-k image set and the previous atlas event's.

With activation maximisation on (``ActivationLogger(actmax=...)``, see
:mod:`actlog.maximize`), the epoch run also holds, at each of its steps,
``{layer}/actmax``: image, the optimised input of each chosen channel of the
layer, side by side in the order of the manifest entry's ``actmax.channels``
(2 white pixels apart); the entry's ``actmax`` also records ``steps``,
``step_size``, ``jitter``, ``l2``, ``tv`` and ``seed``.

With class activation maps on (``ActivationLogger(cam=...)``, see
:mod:`actlog.class_maps`), the epoch run also holds, at each grid step, for
the chosen layer:

- ``{layer}/cam_probe_{i}``: image, the Grad-CAM map of probe ``i`` for its
  class, over the probe image (upscaled as the entry's ``cam.scale`` says).
- ``{layer}/cam_map``: float32 ``(k, h, w)``, the maps as computed (before
  normalising and upsampling), and ``{layer}/cam_class``: int32 ``(k,)``, the
  class of each map; both with kind :data:`KIND_CAM`.

The layer's manifest entry gains ``cam``: ``classes`` (``"label"``,
``"predicted"`` or the list given), ``score`` (``"logit"`` or ``"output"``:
what was differentiated), ``scale`` and ``tags`` (one image tag per probe).

The atlas tensors carry kind :data:`KIND_ATLAS` with ``layer`` and ``field`` (the
part of the tag after ``atlas_``). A layer's manifest entry gains ``atlas``:
``k``, ``pool`` (pool size), ``input`` (``[H, W]`` of the image input),
``field`` (the receptive field, :meth:`actlog.atlas.Field.to_dict`:
``jump``, ``start``, ``size`` per axis, ``rows`` and ``cols`` (the input rows
and columns each output row and column sees) and ``measured``; ``null`` for a
layer without spatial maps, whose crop is the whole image) and ``layout``
(:class:`actlog.atlas.AtlasLayout` without its channels, which are the
entry's ``channels``): where each crop is in the picture.

actlog's own tensors carry ``plugin_name`` :data:`PLUGIN_NAME` with JSON content
(:func:`actlog.codec.plugin_content`) and ``data_class = DATA_CLASS_TENSOR``, without which
TensorBoard's data providers do not serve them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from actlog import codec
from actlog.codec import METADATA_VERSION

PLUGIN_NAME = "actlog"
"""Plugin name in the summary metadata of actlog's tensors (and the dashboard's)."""

EPOCH_RUN = "activations"
BATCH_RUN = "activations_batch"
RESERVED_PREFIX = "actlog"

MANIFEST_TAG = "actlog/manifest"
LAYERS_TEXT_TAG = "actlog/layers"

SCALAR_STATS = ("mean", "std", "sparsity", "dead_fraction", "drift")
CHANNEL_STATS = ("channel_mean", "channel_max", "channel_drift")

KIND_MANIFEST = "manifest"
KIND_CHANNEL_STATS = "channel_stats"
KIND_ATLAS = "atlas"
KIND_CAM = "class_maps"
KIND_GRAM = "gram"

ATLAS_FIELDS = ("index", "position", "value", "box", "change", "channel_change")
"""What an atlas event logs per layer besides its picture (see the module docstring)."""

STEP_AXIS_EPOCH = "epoch"
STEP_AXIS_GLOBAL_STEP = "global_step"

_PROBE_RE = re.compile(r"^(?P<layer>.+)/probe_(?P<probe>\d+)$")


def probe_suffix(index: int, count: int) -> str:
    """``probe_03`` style suffix: zero-padded so tags sort in probe order."""
    width = len(str(max(count - 1, 0)))
    return f"probe_{index:0{width}d}"


def grid_tag(layer: str, index: int, count: int) -> str:
    return f"{layer}/{probe_suffix(index, count)}"


def probe_image_tag(index: int, count: int) -> str:
    return f"{RESERVED_PREFIX}/{probe_suffix(index, count)}"


def stat_tag(layer: str, stat: str) -> str:
    if stat not in SCALAR_STATS + CHANNEL_STATS:
        raise ValueError(
            f"Unknown statistic {stat!r}. Accepted: {list(SCALAR_STATS + CHANNEL_STATS)}."
        )
    return f"{layer}/{stat}"


def gram_tag(layer: str) -> str:
    """``"conv_0/gram"``: the layer's centred Gram matrix on the probes (:mod:`actlog.similarity`)."""
    return f"{layer}/gram"


def atlas_tag(layer: str, field: str | None = None) -> str:
    """``"conv_0/atlas"`` (the picture) or ``"conv_0/atlas_index"`` (one of :data:`ATLAS_FIELDS`)."""
    if field is None:
        return f"{layer}/atlas"
    if field not in ATLAS_FIELDS:
        raise ValueError(f"Unknown atlas field {field!r}. Accepted: {list(ATLAS_FIELDS)}.")
    return f"{layer}/atlas_{field}"


ACTMAX_GAP = 2
"""White pixels between the images of an activation-maximisation picture."""


def actmax_tag(layer: str) -> str:
    """``"conv_1/actmax"``: the activation-maximisation picture of a layer."""
    return f"{layer}/actmax"


def cam_tag(layer: str, index: int, count: int) -> str:
    """``"conv_1/cam_probe_3"``: the class activation map of one probe over its image."""
    return f"{layer}/cam_{probe_suffix(index, count)}"


CAM_FIELDS = ("map", "class")
"""What a class-map event logs per probe batch besides its pictures (see the module docstring)."""


def cam_field_tag(layer: str, field: str) -> str:
    """``"conv_1/cam_map"`` or ``"conv_1/cam_class"`` (one of :data:`CAM_FIELDS`)."""
    if field not in CAM_FIELDS:
        raise ValueError(f"Unknown class-map field {field!r}. Accepted: {list(CAM_FIELDS)}.")
    return f"{layer}/cam_{field}"


def parse_grid_tag(tag: str) -> tuple[str, int] | None:
    """``"conv_0/probe_3"`` -> ``("conv_0", 3)``; ``None`` for other tags."""
    match = _PROBE_RE.match(tag)
    if match is None or match.group("layer") == RESERVED_PREFIX:
        return None
    return match.group("layer"), int(match.group("probe"))


def manifest(
    *,
    actlog_version: str,
    step_axis: str,
    probes: int,
    layers: list[dict[str, Any]],
) -> str:
    """The JSON text stored under :data:`MANIFEST_TAG`.

    Each entry of ``layers`` carries: ``name`` (display name), ``path`` (the
    layer's path in the model, e.g. ``backbone/block_1_conv``), ``class``,
    ``output_shape`` (per sample), ``channels`` (channel index of each tile in
    row-major tile order), ``grid`` (``rows``, ``cols``, ``tile_height``,
    ``tile_width``, ``pad``: tile ``(r, c)`` starts at
    ``y = pad + r * (tile_height + pad)``, ``x = pad + c * (tile_width + pad)``),
    ``norm``, ``cmap`` and ``tags`` (one grid tag per probe).
    """
    return json.dumps(
        {
            "version": METADATA_VERSION,
            "actlog_version": actlog_version,
            "step_axis": step_axis,
            "probes": probes,
            "probe_tags": [probe_image_tag(i, probes) for i in range(probes)],
            "layers": layers,
        }
    )


def parse_manifest(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    data = json.loads(text)
    codec.check_version(data, "manifest")
    return data
