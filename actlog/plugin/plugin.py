"""Backend of the Activations dashboard: a dynamic TensorBoard plugin.

The dashboard shows, for one run, layer and probe image, the activation grid at
every logged step (not TensorBoard's sample of ten), two steps side by side, and
one channel followed through time with its statistics. This module serves the
front end (``static/index.js``) and a few JSON/PNG routes under
``/data/plugin/actlog/``.

Every route reads through TensorBoard's data provider only. Request parameters
are never used as paths: ``run`` and ``layer`` must equal a name found in the
run's manifest (:data:`actlog.metadata.MANIFEST_TAG`), the integers must be
small non-negative decimals within what the log holds, and the tag asked of the
provider is rebuilt from the validated values. Anything else gets
``400 {"error": "..."}``.

TensorBoard keeps only a sample of each series in memory (10 images per tag by
default). :class:`ActivationsLoader` raises that limit for images and actlog's
tensors unless the user set ``--samples_per_plugin`` for them; whatever was
kept, ``/steps`` reports how many logged steps are missing so the page can say so.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from collections.abc import Callable
from typing import Any

from tensorboard import errors as tb_errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from tensorboard.util import img_mime_type_detector
from werkzeug import wrappers

from actlog import metadata

logger = logging.getLogger(__name__)

_IMAGES_PLUGIN = "images"
"""Plugin name of ``tf.summary.image`` data: where grids and probe images live."""

_SCALARS_PLUGIN = "scalars"

KEEP_IMAGES = 10_000
"""Images kept per tag when the user did not say: every epoch of any run
people train, and every batch step of a long early phase."""

_EVERY_STEP = 1_000_000
"""``downsample`` large enough for every step a log can hold: the provider
returns all points when asked for more than it has."""

_MAX_INT_DIGITS = 9
_INT_RE = re.compile(rf"^(0|[1-9][0-9]{{0,{_MAX_INT_DIGITS - 1}}})$")
_MAX_ECHO = 80
"""Longest piece of a bad parameter repeated back in an error message."""

_STATIC_FILES = {
    "/index.js": ("index.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}


class BadRequest(ValueError):
    """A request parameter is missing, malformed or names nothing in the log."""


def _echo(value: str) -> str:
    """``repr`` of a received parameter, cut short so errors stay readable."""
    if len(value) > _MAX_ECHO:
        value = value[:_MAX_ECHO] + "..."
    return repr(value)


def _json_error(request: wrappers.Request, message: str, code: int) -> wrappers.Response:
    return http_util.Respond(request, {"error": message}, "application/json", code=code)


def _route(handler: Callable[..., wrappers.Response]) -> Callable[..., Any]:
    """Turn a handler into a WSGI app whose :class:`BadRequest` becomes a JSON 400."""

    @functools.wraps(handler)
    def wrapped(self: ActivationsPlugin, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except BadRequest as err:
            return _json_error(request, str(err), 400)
        except _NotFound as err:
            return _json_error(request, str(err), 404)

    return wrappers.Request.application(wrapped)


class _NotFound(LookupError):
    """The request is valid but the log holds no such data (e.g. no probe image)."""


def _param(request: wrappers.Request, name: str) -> str:
    values = request.args.getlist(name)
    if len(values) != 1:
        raise BadRequest(f"Expected exactly one {name!r} parameter, received {len(values)}.")
    return values[0]


def _int_param(request: wrappers.Request, name: str, accepted: str) -> int:
    raw = _param(request, name)
    if not _INT_RE.match(raw):
        raise BadRequest(
            f"Parameter {name!r} must be a non-negative integer of at most "
            f"{_MAX_INT_DIGITS} digits ({accepted}); received {_echo(raw)}."
        )
    return int(raw)


class ActivationsPlugin(base_plugin.TBPlugin):
    """TensorBoard's "Activations" tab: actlog's grids at every logged step.

    Active only when a log holds actlog data (a tensor with plugin name
    :data:`actlog.metadata.PLUGIN_NAME`, which every actlog run has: its
    manifest). The front end is the ES module ``static/index.js``.

    Routes (all ``GET``; integers are decimal, ``run``/``layer`` exact names):

    - ``/runs``: runs holding an actlog manifest, with their layers (tile
      layout, channels shown) and probe count.
    - ``/steps?run&layer&probe``: every step of that grid kept by TensorBoard
      with its wall time, and how many logged steps (per the layer's scalar
      statistics) are missing. The page polls it every few seconds while it
      is visible (and ``/runs`` less often) to show steps logged while the
      model trains; a wall time that changed marks a step written again.
    - ``/grid?run&layer&probe&step``: the grid image at one step (PNG bytes).
    - ``/probe?run&probe``: the probe input image, when it was image-like.
    - ``/channel?run&layer&channel``: ``channel_mean``, ``channel_max`` and
      ``channel_drift`` of one channel over every step.

    Args:
        context: The :class:`tensorboard.plugins.base_plugin.TBContext` that
            TensorBoard hands every plugin; only its ``data_provider`` is used.
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._provider = context.data_provider
        # (experiment, run, tag) -> {step: blob key}. Blob keys name a step of
        # a series, not a copy of its bytes, so a cached key stays valid; a step
        # that is not cached yet sends /grid back to the provider's listing.
        self._blob_keys: dict[tuple[str, str, str], dict[int, str]] = {}

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        apps: dict[str, Callable[..., Any]] = {
            "/runs": self._serve_runs,
            "/steps": self._serve_steps,
            "/grid": self._serve_grid,
            "/probe": self._serve_probe,
            "/channel": self._serve_channel,
        }
        for route in _STATIC_FILES:
            apps[route] = self._serve_static
        return apps

    def is_active(self) -> bool:
        # TensorBoard marks the tab active by itself when the provider lists
        # data under one of `data_plugin_names()`; nothing else makes it useful.
        return False

    def data_plugin_names(self) -> tuple[str, ...]:
        return (metadata.PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Activations")

    # -- static files ---------------------------------------------------------

    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        # The route table maps each path to one packaged file; nothing from the
        # request is joined to a path.
        route = request.path[request.path.rfind("/") :]
        entry = _STATIC_FILES.get(route)
        if entry is None:
            return _json_error(request, f"No static file {_echo(route)}.", 404)
        name, content_type = entry
        data = importlib.resources.files("actlog.plugin").joinpath("static", name).read_bytes()
        return http_util.Respond(request, data, content_type)

    # -- reading through the data provider -----------------------------------

    def _context(self, request: wrappers.Request) -> tuple[Any, str]:
        return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)

    def _manifests(self, request: wrappers.Request) -> dict[str, dict[str, Any]]:
        """Run name -> the last manifest written in it, for every actlog run."""
        ctx, eid = self._context(request)
        # One provider call: every run's manifest series (a point per `fit`).
        data = self._provider.read_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=_EVERY_STEP,
            run_tag_filter=provider.RunTagFilter(tags=[metadata.MANIFEST_TAG]),
        )
        result = {}
        for run in sorted(data):
            points = data[run].get(metadata.MANIFEST_TAG, [])
            if not points:
                continue
            raw = points[-1].numpy
            raw = raw.item() if hasattr(raw, "item") else raw
            try:
                result[run] = metadata.parse_manifest(raw)
            except ValueError as err:
                # A newer actlog wrote this run: leave it out, say why in the log.
                logger.warning("actlog dashboard: skipping run %r: %s", run, err)
        return result

    def _manifest(self, request: wrappers.Request) -> tuple[str, dict[str, Any]]:
        run = _param(request, "run")
        manifests = self._manifests(request)
        if run not in manifests:
            raise BadRequest(f"Unknown run {_echo(run)}. Runs with actlog data: {sorted(manifests)}.")
        return run, manifests[run]

    def _layer(self, request: wrappers.Request, manifest: dict[str, Any]) -> dict[str, Any]:
        name = _param(request, "layer")
        for layer in manifest.get("layers", []):
            if layer.get("name") == name:
                return layer
        names = [layer.get("name") for layer in manifest.get("layers", [])]
        raise BadRequest(f"Unknown layer {_echo(name)}. Layers in this run: {names}.")

    def _probe(self, request: wrappers.Request, manifest: dict[str, Any]) -> int:
        count = int(manifest.get("probes", 0))
        probe = _int_param(request, "probe", f"0 to {count - 1}")
        if probe >= count:
            raise BadRequest(f"Probe {probe} does not exist; this run has {count} probes (0 to {count - 1}).")
        return probe

    def _blob_series(self, request: wrappers.Request, run: str, tag: str) -> list[Any]:
        ctx, eid = self._context(request)
        data = self._provider.read_blob_sequences(
            ctx,
            experiment_id=eid,
            plugin_name=_IMAGES_PLUGIN,
            downsample=_EVERY_STEP,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        # values = (width, height, first image); actlog writes one image per tag.
        series = [d for d in data.get(run, {}).get(tag, []) if len(d.values) > 2]
        self._blob_keys[(eid, run, tag)] = {d.step: d.values[2].blob_key for d in series}
        return series

    def _image_response(self, request: wrappers.Request, blob_key: str) -> wrappers.Response:
        ctx, _ = self._context(request)
        data = self._provider.read_blob(ctx, blob_key=blob_key)
        return http_util.Respond(request, data, img_mime_type_detector.from_bytes(data))

    # -- routes ---------------------------------------------------------------

    @_route
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        manifests = self._manifests(request)
        ctx, eid = self._context(request)
        images = (
            self._provider.list_blob_sequences(ctx, experiment_id=eid, plugin_name=_IMAGES_PLUGIN)
            if manifests
            else {}
        )
        runs = []
        for run, manifest in manifests.items():
            probe_tags = [str(tag) for tag in manifest.get("probe_tags", [])]
            runs.append(
                {
                    "run": run,
                    "step_axis": manifest.get("step_axis"),
                    "probes": int(manifest.get("probes", 0)),
                    "probe_images": [tag in images.get(run, {}) for tag in probe_tags],
                    "layers": [
                        {
                            "name": layer.get("name"),
                            "path": layer.get("path"),
                            "class": layer.get("class"),
                            "output_shape": layer.get("output_shape"),
                            "channels": layer.get("channels", []),
                            "grid": layer.get("grid", {}),
                            "norm": layer.get("norm"),
                            "cmap": layer.get("cmap"),
                        }
                        for layer in manifest.get("layers", [])
                    ],
                }
            )
        return http_util.Respond(request, {"runs": runs}, "application/json")

    @_route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        run, manifest = self._manifest(request)
        layer = self._layer(request, manifest)
        probe = self._probe(request, manifest)
        tag = metadata.grid_tag(layer["name"], probe, int(manifest["probes"]))
        series = self._blob_series(request, run, tag)
        steps = [d.step for d in series]
        # Scalars are kept 1000 per tag by default, images only 10: the layer's
        # `mean` tells how many grid steps TensorBoard dropped.
        ctx, eid = self._context(request)
        mean_tag = metadata.stat_tag(layer["name"], "mean")
        scalars = self._provider.read_scalars(
            ctx,
            experiment_id=eid,
            plugin_name=_SCALARS_PLUGIN,
            downsample=_EVERY_STEP,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[mean_tag]),
        )
        logged = {p.step for p in scalars.get(run, {}).get(mean_tag, [])}
        body = {
            "run": run,
            "layer": layer["name"],
            "probe": probe,
            "steps": steps,
            "wall_times": [d.wall_time for d in series],
            "missing_steps": len(logged - set(steps)),
        }
        return http_util.Respond(request, body, "application/json")

    @_route
    def _serve_grid(self, request: wrappers.Request) -> wrappers.Response:
        run, manifest = self._manifest(request)
        layer = self._layer(request, manifest)
        probe = self._probe(request, manifest)
        step = _int_param(request, "step", "a step listed by /steps")
        tag = metadata.grid_tag(layer["name"], probe, int(manifest["probes"]))
        _, eid = self._context(request)
        key = self._blob_keys.get((eid, run, tag), {}).get(step)
        if key is not None:
            try:
                return self._image_response(request, key)
            except tb_errors.NotFoundError:
                pass  # the step was purged (a restarted run): list the series again
        series = self._blob_series(request, run, tag)
        for datum in series:
            if datum.step == step:
                return self._image_response(request, datum.values[2].blob_key)
        steps = [d.step for d in series]
        shown = steps if len(steps) <= 12 else steps[:5] + ["..."] + steps[-5:]
        raise BadRequest(f"No grid at step {step} for this layer and probe. Steps: {shown}.")

    @_route
    def _serve_probe(self, request: wrappers.Request) -> wrappers.Response:
        run, manifest = self._manifest(request)
        probe = self._probe(request, manifest)
        tag = metadata.probe_image_tag(probe, int(manifest["probes"]))
        series = self._blob_series(request, run, tag)
        if not series:
            raise _NotFound(
                f"Run {_echo(run)} has no image of probe {probe} (its inputs are not image-like)."
            )
        return self._image_response(request, series[-1].values[2].blob_key)

    @_route
    def _serve_channel(self, request: wrappers.Request) -> wrappers.Response:
        run, manifest = self._manifest(request)
        layer = self._layer(request, manifest)
        shape = layer.get("output_shape") or []
        axis = 0 if layer.get("data_format") == "channels_first" else -1
        count = shape[axis] if shape and isinstance(shape[axis], int) else None
        accepted = f"0 to {count - 1}" if count else "a channel of this layer"
        channel = _int_param(request, "channel", accepted)
        if count is not None and channel >= count:
            raise BadRequest(
                f"Channel {channel} does not exist; layer {_echo(layer['name'])} has "
                f"{count} channels (0 to {count - 1})."
            )
        ctx, eid = self._context(request)
        tags = {stat: metadata.stat_tag(layer["name"], stat) for stat in metadata.CHANNEL_STATS}
        data = self._provider.read_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=_EVERY_STEP,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=list(tags.values())),
        ).get(run, {})
        stats = {}
        for stat, tag in tags.items():
            points = [p for p in data.get(tag, []) if p.numpy.ndim == 1]
            points = [p for p in points if channel < p.numpy.shape[0]]
            stats[stat] = {
                "steps": [p.step for p in points],
                "values": [float(p.numpy[channel]) for p in points],
            }
        body = {"run": run, "layer": layer["name"], "channel": channel, "stats": stats}
        return http_util.Respond(request, body, "application/json")


class ActivationsLoader(base_plugin.TBLoader):
    """Loads :class:`ActivationsPlugin` and keeps every actlog step in memory.

    TensorBoard samples what it loads: 10 images and 10 tensors per tag unless
    ``--samples_per_plugin`` says otherwise. The dashboard's promise is every
    logged step, so unless the user chose a value themselves, this loader sets
    ``actlog=0`` ("keep all") and ``images=`` :data:`KEEP_IMAGES` before
    TensorBoard starts reading. Images get a large number rather than 0: the
    standard Images tab passes the same value on as the number of images to
    show, and with 0 it shows none (TensorBoard 2.21). The cost is memory:
    up to that many images per tag stay loaded.
    """

    def fix_flags(self, flags: Any) -> None:
        hints = getattr(flags, "samples_per_plugin", None)
        if not isinstance(hints, dict):
            return
        for plugin, keep in ((_IMAGES_PLUGIN, KEEP_IMAGES), (metadata.PLUGIN_NAME, 0)):
            if plugin not in hints:
                hints[plugin] = keep
                logger.info("actlog: --samples_per_plugin %s=%d", plugin, keep)

    def load(self, context: base_plugin.TBContext) -> ActivationsPlugin:
        return ActivationsPlugin(context)
