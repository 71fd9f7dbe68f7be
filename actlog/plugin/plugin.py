"""Backend of the Activations dashboard: a dynamic TensorBoard plugin.

The dashboard shows, for one run, an overview of every watched layer at a
step, and for one layer and probe image the activation grid at every logged
step (not TensorBoard's sample of ten), two steps side by side, and one channel
followed through time with its statistics. This module serves the front end
(the ES modules in ``static/``) and a few JSON/PNG routes under
``/data/plugin/actlog/``.

Data comes from the log directories themselves, through :mod:`.catalog` and
:mod:`actlog.reader`; TensorBoard's own loading and sampling are left as they
are, for actlog's runs and everyone else's. TensorBoard's data provider is used
for one thing only: deciding whether the tab appears (:meth:`data_plugin_names`).

Request parameters are never used as paths: ``run`` and ``layer`` must equal a
name the catalog lists, the integers must be small non-negative decimals
within what the log holds, and image keys (:mod:`.keys`) are decoded and every
part of them checked the same way. Anything else gets ``400 {"error": "..."}``
naming what exists; a well-formed key that names nothing (any more) gets 404.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from collections.abc import Callable
from typing import Any

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from actlog import metadata
from actlog.comparison import CompareError
from actlog.plugin import cam, keys, similarity_routes
from actlog.plugin.catalog import Catalog, GridStep, LayerIndex, RunIndex, sources
from actlog.plugin.compare_route import compare_body

IMAGE_CACHE_SECONDS = 24 * 3600
"""How long the browser may keep an image: a key names one written image, never another."""

_MAX_INT_DIGITS = 9
_INT_RE = re.compile(rf"^(0|[1-9][0-9]{{0,{_MAX_INT_DIGITS - 1}}})$")
_MAX_ECHO = 80
"""Longest piece of a bad parameter repeated back in an error message."""

_MODULES = ("index.js", "api.js", "state.js", "dom.js", "charts.js", "live.js",
            "view_controls.js", "view_overview.js", "view_layer.js", "view_channel.js", "view_atlas.js",
            "view_compare.js", "view_cam.js", "view_similarity.js")
_STATIC_FILES = {f"/{name}": (name, "text/javascript") for name in _MODULES}
_STATIC_FILES["/style.css"] = ("style.css", "text/css")


class BadRequest(ValueError):
    """A request parameter is missing, malformed or names nothing in the log (400)."""


class NotFound(LookupError):
    """A well-formed request for something the log does not hold (any more) (404)."""


def _echo(value: str) -> str:
    """``repr`` of a received parameter, cut short so errors stay readable."""
    if len(value) > _MAX_ECHO:
        value = value[:_MAX_ECHO] + "..."
    return repr(value)


def _listed(values: list[Any]) -> str:
    shown = values if len(values) <= 12 else [*values[:5], "...", *values[-5:]]
    return "[" + ", ".join(str(v) for v in shown) + "]"


def _json(request: wrappers.Request, body: Any, code: int = 200) -> wrappers.Response:
    return http_util.Respond(request, body, "application/json", code=code)


def _route(handler: Callable[..., wrappers.Response]) -> Callable[..., Any]:
    """Turn a handler into a WSGI app; :class:`BadRequest` -> 400, :class:`NotFound` -> 404."""

    @functools.wraps(handler)
    def wrapped(self: ActivationsPlugin, request: wrappers.Request) -> wrappers.Response:
        try:
            return handler(self, request)
        except (BadRequest, keys.BadKey) as err:
            return _json(request, {"error": str(err)}, 400)
        except NotFound as err:
            return _json(request, {"error": str(err)}, 404)

    return wrappers.Request.application(wrapped)


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


def _index_param(request: wrappers.Request, name: str, count: int, owner: str) -> int:
    """Parameter ``name``: one of the ``count`` (channels, probes) that ``owner`` has."""
    value = _int_param(request, name, f"0 to {count - 1}")
    if value >= count:
        raise BadRequest(
            f"{name.capitalize()} {value} does not exist; {owner} has {count} {name}s (0 to {count - 1})."
        )
    return value


def _finite(values: list[float]) -> list[float | None]:
    """Values as JSON sends them: float32's seven digits, and null for a non-finite one
    (a layer that overflowed), JSON having no NaN."""
    return [float(f"{v:.7g}") if math.isfinite(v) else None for v in values]


def _series(steps: list[int], values: list[float]) -> dict[str, list]:
    return {"steps": steps, "values": _finite(values)}


class ActivationsPlugin(base_plugin.TBPlugin):
    """TensorBoard's "Activations" tab: actlog's grids at every logged step.

    Active only when a log holds actlog data (a tensor with plugin name
    :data:`actlog.metadata.PLUGIN_NAME`, which every actlog run has: its
    manifest). The front end is the ES module ``static/index.js``.

    Routes (all ``GET``; integers are decimal, ``run``/``layer`` exact names):

    - ``/runs``: the log directories read, a ``problem`` when there is none
      that can be read, and every actlog run: step axis, probe count, a key
      per probe image, its layers (path, class, output shape, channels).
    - ``/overview?run&probe[&step]``: every layer at ``step`` (default the
      last): the key of its grid, and its drift and dead channels over steps.
    - ``/steps?run&layer&probe``: every logged step of that grid, each with
      its wall time, image key and layout; the layouts with every tile's box
      (:meth:`actlog.grid.GridLayout.boxes`). The page polls it while it is
      visible to show steps logged while the model trains.
    - ``/image?key``: the PNG a key from the routes above names.
    - ``/channel?run&layer&channel``: ``channel_mean``, ``channel_max`` and
      ``channel_drift`` of one channel over every step.
    - ``/atlas?run&layer&channel``: the layer's feature atlas at every atlas
      step, for one channel: the key of the atlas picture, the box of each of
      the channel's top-k crops in it (:meth:`actlog.atlas.AtlasLayout.boxes`),
      each crop's pool index and activation, and the channel's change since
      the previous atlas. A layer without an atlas gets no steps and a ``note``.
    - ``/compare?run&other&layer&probe``: two runs side by side, step by step
      (:func:`.compare_route.compare_body`).
    - ``/class_maps?run&probe``: the probe's class activation map at every step
      logged (``ActivationLogger(cam=...)``): its image key and class, the layer,
      the classes option and the score differentiated (:mod:`actlog.plugin.cam`);
      a run without class maps gets no steps and a ``note``.
    - ``/similarity?run&layer``: the layer's linear CKA between every two steps
      (``steps``, ``matrix``; null where undefined), at most
      :data:`.similarity_routes.MAX_HEATMAP_STEPS` steps.
    - ``/similarity_overview?run``: each layer's CKA between every step and its last.

    Args:
        context: The :class:`tensorboard.plugins.base_plugin.TBContext` that
            TensorBoard hands every plugin: its log directory (``logdir``, or
            ``flags.logdir_spec``) is where the runs are read.
        catalog: the runs to serve (tests pass their own); made from
            ``context`` by default.
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext, *, catalog: Catalog | None = None) -> None:
        self._catalog = catalog if catalog is not None else Catalog(sources(context))

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        apps: dict[str, Callable[..., Any]] = {
            "/runs": self._serve_runs,
            "/overview": self._serve_overview,
            "/steps": self._serve_steps,
            "/image": self._serve_image,
            "/channel": self._serve_channel,
            "/atlas": self._serve_atlas,
            "/compare": self._serve_compare,
            "/class_maps": self._serve_class_maps,
            "/similarity": self._serve_similarity,
            "/similarity_overview": self._serve_similarity_overview,
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
            return _json(request, {"error": f"No static file {_echo(route)}."}, 404)
        name, content_type = entry
        data = importlib.resources.files("actlog.plugin").joinpath("static", name).read_bytes()
        return http_util.Respond(request, data, content_type)

    # -- parameters -----------------------------------------------------------

    def _run(self, request: wrappers.Request, parameter: str = "run") -> RunIndex:
        name = _param(request, parameter)
        runs = self._catalog.runs()
        if name not in runs:
            raise BadRequest(f"Unknown run {_echo(name)}. Runs with actlog data: {sorted(runs)}.")
        return runs[name]

    @staticmethod
    def _layer(request: wrappers.Request, index: RunIndex) -> LayerIndex:
        name = _param(request, "layer")
        if name not in index.layers:
            raise BadRequest(f"Unknown layer {_echo(name)}. Layers in this run: {list(index.layers)}.")
        return index.layers[name]

    @staticmethod
    def _channel(request: wrappers.Request, layer: LayerIndex) -> int:
        return _index_param(request, "channel", layer.channel_count, f"layer {_echo(layer.name)}")

    @staticmethod
    def _probe(request: wrappers.Request, index: RunIndex) -> int:
        return _index_param(request, "probe", index.probes, "this run")

    # -- routes ---------------------------------------------------------------

    @_route
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        runs = self._catalog.runs()
        body = {
            "logdirs": [source.path for source in self._catalog.sources],
            "problem": self._catalog.problem,
            "runs": [_run_body(runs[name]) for name in sorted(runs)],
        }
        return _json(request, body)

    @_route
    def _serve_overview(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        probe = self._probe(request, index)
        if "step" in request.args:
            step = _int_param(request, "step", "a step of the run")
            if step not in index.steps:
                raise BadRequest(f"No step {step} in run {_echo(index.name)}. Steps: {_listed(index.steps)}.")
        elif index.steps:
            step = index.steps[-1]
        else:
            step = None
        layers = []
        for layer in index.layers.values():
            grid = next((g for g in layer.grids.get(probe, []) if g.step == step), None)
            layers.append({
                **index.remember(("sparklines", layer.name), lambda layer=layer: _sparklines(layer)),
                "grid": None if grid is None else {
                    "step": grid.step,
                    "key": keys.encode_grid(index.name, layer.name, probe, grid.step, grid.ref),
                },
            })  # fmt: skip
        body = {
            "run": index.name, "probe": probe, "version": index.version,
            "step_axis": index.step_axis, "steps": index.steps, "step": step, "layers": layers,
        }  # fmt: skip
        return _json(request, body)

    @_route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        layer = self._layer(request, index)
        probe = self._probe(request, index)
        body = index.remember(("steps", layer.name, probe), lambda: _steps_body(index, layer, probe))
        return _json(request, body)

    @_route
    def _serve_image(self, request: wrappers.Request) -> wrappers.Response:
        key = keys.decode(_param(request, "key"))
        runs = self._catalog.runs()
        index = runs.get(key.run)
        if index is None:
            raise NotFound(f"No run {_echo(key.run)} (any more). Runs: {sorted(runs)}.")
        layer = index.layers.get(key.layer) if key.layer is not None else None
        if key.kind == keys.PROBE:
            refs = index.probe_images
            ref = refs[key.probe] if key.probe < len(refs) else None
            what, route = f"probe image {key.probe}", "/runs"
        elif key.kind == keys.CAM:
            ref = cam.class_map_ref(index.class_maps, key.layer, key.probe, key.step)
            what, route = f"class map of probe {key.probe} at step {key.step}", "/class_maps"
        elif key.kind == keys.ATLAS:
            found = layer.atlas if layer is not None else []
            ref = next((a.ref for a in found if a.step == key.step), None)
            what, route = f"atlas of layer {_echo(key.layer)} at step {key.step}", "/atlas"
        else:
            grids = layer.grids.get(key.probe, []) if layer is not None else []
            ref = next((g.ref for g in grids if g.step == key.step), None)
            what, route = f"grid of layer {_echo(key.layer)}, probe {key.probe}, step {key.step}", "/steps"
        if ref is None:
            raise NotFound(f"Run {_echo(key.run)} holds no {what}.")
        if keys.stamp(ref) != key.stamp:
            raise NotFound(f"The {what} was written again since this key was handed out; "
                           f"ask {route} for the new one.")
        return http_util.Respond(request, index.png(ref), "image/png", expires=IMAGE_CACHE_SECONDS)

    @_route
    def _serve_channel(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        layer = self._layer(request, index)
        channel = self._channel(request, layer)
        stats = self._catalog.channel(index, layer.name, channel)
        body = {
            "run": index.name, "layer": layer.name, "channel": channel, "step_axis": index.step_axis,
            "stats": {stat: _series(*series) for stat, series in stats.items()},
        }  # fmt: skip
        return _json(request, body)

    @_route
    def _serve_class_maps(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        probe = self._probe(request, index)
        return _json(request, cam.class_maps_body(index.name, index.class_maps, probe))

    @_route
    def _serve_atlas(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        layer = self._layer(request, index)
        channel = self._channel(request, layer)
        body = index.remember(("atlas", layer.name, channel), lambda: _atlas_body(index, layer, channel))
        return _json(request, body)

    @_route
    def _serve_compare(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        other = self._run(request, "other")
        layer = _param(request, "layer")
        probe = _int_param(request, "probe", "a probe of both runs")
        try:
            body = index.remember(("compare", other.name, other.version, layer, probe),
                                  lambda: compare_body(index, other, layer, probe))
        except CompareError as err:
            raise BadRequest(str(err)) from None
        return _json(request, body)

    @_route
    def _serve_similarity(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        layer = self._layer(request, index)
        body = index.remember(("similarity", layer.name), lambda: similarity_routes.heatmap_body(
            index.name, layer.name, index.step_axis, index.version, self._catalog.grams(index, layer.name)))
        return _json(request, body)

    @_route
    def _serve_similarity_overview(self, request: wrappers.Request) -> wrappers.Response:
        index = self._run(request)
        body = index.remember("similarity_overview", lambda: similarity_routes.settling_body(
            index.name, index.step_axis, index.version,
            {name: self._catalog.grams(index, name) for name in index.layers}))
        return _json(request, body)


def _run_body(index: RunIndex) -> dict[str, Any]:
    def layer_body(layer: LayerIndex) -> dict[str, Any]:
        info = layer.info
        return {
            "name": layer.name, "path": info.get("path"), "class": info.get("class"),
            "output_shape": info.get("output_shape"), "channels": layer.channel_count,
            "shown": len(info.get("channels", [])), "norm": info.get("norm"), "cmap": info.get("cmap"),
            "atlas": None if not layer.atlas else {"k": layer.atlas[-1].k, "pool": layer.atlas[-1].pool},
            "view": info.get("view", "output"),  # "attention": the tiles are heads (actlog.tokens)
        }  # fmt: skip

    return index.remember("run", lambda: {
        "run": index.name,
        "version": index.version,
        "step_axis": index.step_axis,
        "probes": index.probes,
        "steps": len(index.steps),
        "last_step": index.steps[-1] if index.steps else None,
        "probe_images": [
            None if ref is None else keys.encode_probe(index.name, probe, ref)
            for probe, ref in enumerate(index.probe_images)
        ],
        "layers": [layer_body(layer) for layer in index.layers.values()],
    })  # fmt: skip


def _steps_body(index: RunIndex, layer: LayerIndex, probe: int) -> dict[str, Any]:
    def step_body(grid: GridStep) -> dict[str, Any]:
        key = keys.encode_grid(index.name, layer.name, probe, grid.step, grid.ref)
        return {"step": grid.step, "wall_time": grid.wall_time, "key": key, "layout": grid.layout}

    layouts = []
    for first, layout in layer.layouts:
        layouts.append({
            "from_step": first, **layout.to_dict(), "width": layout.width, "height": layout.height,
            "channels": list(layout.channels), "boxes": layout.boxes(),
        })  # fmt: skip
    return {
        "run": index.name, "layer": layer.name, "probe": probe, "version": index.version,
        "step_axis": index.step_axis, "channels": layer.channel_count,
        "steps": [step_body(g) for g in layer.grids.get(probe, [])], "layouts": layouts,
    }  # fmt: skip


def _atlas_body(index: RunIndex, layer: LayerIndex, channel: int) -> dict[str, Any]:
    """One channel's top-k crops at every atlas step of ``layer``: where they are in the
    step's atlas picture, which pool examples they are, and how much the set changed."""
    steps = []
    for i, atlas in enumerate(layer.atlas):
        crops = change = None
        if channel in atlas.channels:
            row = atlas.row(channel)
            boxes = index.remember(("atlas_boxes", atlas.layout), atlas.layout.boxes)[row]
            found = atlas.index[row].tolist() if atlas.index is not None else [None] * atlas.k
            values = _finite(atlas.value[row].tolist()) if atlas.value is not None else [None] * atlas.k
            # An empty slot (index -1: a pool smaller than k) shows the background.
            crops = [
                {"box": box, "index": None if pool is None or pool < 0 else pool,
                 "value": None if pool is not None and pool < 0 else value}
                for box, pool, value in zip(boxes, found, values, strict=True)
            ]  # fmt: skip
            if atlas.change is not None:
                change = _finite([float(atlas.change[row])])[0]
        steps.append({
            "step": atlas.step,
            "wall_time": getattr(atlas.ref, "wall_time", None),
            "key": keys.encode_atlas(index.name, layer.name, atlas.step, atlas.ref),
            "width": atlas.layout.width, "height": atlas.layout.height, "k": atlas.k, "pool": atlas.pool,
            "crops": crops,
            "change": change,
            "since": layer.atlas[i - 1].step if change is not None and i > 0 else None,
        })  # fmt: skip
    notes = []
    if not layer.atlas:
        with_atlas = [name for name, other in index.layers.items() if other.atlas]
        notes.append(f"No feature atlas was logged for layer {_echo(layer.name)}; " + (
            f"layers with one: {with_atlas}." if with_atlas else "ActivationLogger(atlas=...) was not used."
        ))
    elif all(entry["crops"] is None for entry in steps):
        notes.append(f"Channel {channel} is in none of the layer's atlas pictures: "
                     "an atlas shows the channels of the grid's tiles.")
    if layer.atlas_problem:
        notes.append(f"Atlas steps left out: {layer.atlas_problem}")
    return {
        "run": index.name, "layer": layer.name, "channel": channel, "version": index.version,
        "step_axis": index.step_axis, "steps": steps, "note": " ".join(notes) or None,
    }  # fmt: skip


def _sparklines(layer: LayerIndex) -> dict[str, Any]:
    """A layer's name, shape, and drift and dead channels over steps, for the overview."""
    drift = layer.scalars.get("drift", ([], []))
    steps, fractions = layer.scalars.get("dead_fraction", ([], []))
    channels = [layer.channels.get(s, 0) for s in steps]
    dead = [round(f * c) if math.isfinite(f) else None for f, c in zip(fractions, channels, strict=True)]
    info = layer.info
    return {
        "name": layer.name, "class": info.get("class"), "output_shape": info.get("output_shape"),
        "channels": layer.channel_count, "drift": _series(*drift),
        "dead": {"steps": steps, "values": dead, "channels": channels},
    }  # fmt: skip


class ActivationsLoader(base_plugin.TBLoader):
    """Loads :class:`ActivationsPlugin`; changes nothing in how TensorBoard loads logs.

    TensorBoard samples what it loads (10 images per tag by default). The
    dashboard reads actlog's runs from the log directory itself, so it needs
    no more than that, and no ``--samples_per_plugin`` of anyone else's is
    raised: ``fix_flags`` is TensorBoard's default, which does nothing.
    """

    def load(self, context: base_plugin.TBContext) -> ActivationsPlugin:
        return ActivationsPlugin(context)
