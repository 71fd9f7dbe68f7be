"""Routes of the Activations dashboard, through werkzeug's test client.

Logs come from real ``fit`` calls with ``ActivationLogger``. The plugin is
mounted in TensorBoard's WSGI application over TensorBoard's own multiplexer
and data provider, sized as ``tensorboard`` sizes them by default, so requests
take the same path as in a browser. Expected pixels and statistics are read
back with TensorBoard's ``EventAccumulator`` keeping every event.
"""

from __future__ import annotations

import argparse
import base64
import builtins
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from conftest import XSS, fit_log
from PIL import Image
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester, event_accumulator, plugin_event_multiplexer
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

import actlog
from actlog import metadata
from actlog.atlas import AtlasLayout
from actlog.plugin import catalog as catalog_module
from actlog.plugin import keys as keys_module
from actlog.plugin.catalog import NO_LOGDIR, Catalog, Source
from actlog.plugin.plugin import _STATIC_FILES, ActivationsLoader, ActivationsPlugin

EPOCHS = 11  # 12 steps: more than the 10 images TensorBoard keeps by default
STEPS = list(range(EPOCHS + 1))
PREFIX = "/data/plugin/actlog"
STATIC = Path(actlog.__file__).parent / "plugin" / "static"


def tiny_model(channels: tuple[int, int] = (3, 4)) -> Any:
    import keras

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(channels[0], 3, padding="same", activation="relu", name="conv_0")(inputs)
    h = keras.layers.Conv2D(channels[1], 3, padding="same", activation="relu", name="conv_1")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    return x, np.array([0, 1, 0, 1])


def fit(model: Any, loggers: list[Any], epochs: int) -> None:
    x, y = tiny_data()
    model.fit(x, y, epochs=epochs, batch_size=2, verbose=0, callbacks=loggers)


def make_client(
    log_dir: Path | None, *, catalog: Catalog | None = None, flags: Any = None
) -> werkzeug_test.Client:
    """TensorBoard's WSGI app with only this plugin, over TensorBoard's default loading."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE,
    )
    if log_dir is not None:
        multiplexer.AddRunsFromDirectory(str(log_dir))
        multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(log_dir or ""))
    context = base_plugin.TBContext(
        data_provider=provider, logdir=None if log_dir is None else str(log_dir), flags=flags
    )
    plugin = ActivationsPlugin(context, catalog=catalog) if catalog else ActivationsLoader().load(context)
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    return werkzeug_test.Client(app, wrappers.Response)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("routes_log")
    fit_log(path, tiny_model, *tiny_data(), tiny_data()[0][:2], EPOCHS)
    return path


@pytest.fixture(scope="module")
def client(log_dir: Path) -> werkzeug_test.Client:
    return make_client(log_dir)


def accumulator(run_dir: Path) -> event_accumulator.EventAccumulator:
    """A run read by TensorBoard's EventAccumulator, keeping every event."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged(log_dir: Path) -> event_accumulator.EventAccumulator:
    return accumulator(log_dir / metadata.EPOCH_RUN)


def logged_image(acc: event_accumulator.EventAccumulator, tag: str, step: int) -> np.ndarray:
    """The image of ``tag`` at ``step``; the last one written, when it was written again."""
    event = max((e for e in acc.Tensors(tag) if e.step == step), key=lambda e: e.wall_time)
    return np.asarray(Image.open(io.BytesIO(event.tensor_proto.string_val[2])))


def get_json(client: werkzeug_test.Client, route: str, **params: object) -> tuple[int, dict]:
    response = client.get(f"{PREFIX}/{route}", query_string=params)
    assert response.headers["Content-Type"].startswith("application/json"), response.data
    return response.status_code, json.loads(response.data)


def get_png(client: werkzeug_test.Client, key: str) -> np.ndarray:
    response = client.get(f"{PREFIX}/image", query_string={"key": key})
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.data)))


def steps_of(client: werkzeug_test.Client, layer: str, probe: int = 0, run: str = "activations") -> dict:
    status, body = get_json(client, "steps", run=run, layer=layer, probe=probe)
    assert status == 200, body
    return body


# -- the tab, the loader and the static files ---------------------------------------------


def test_plugin_listing_names_the_tab_and_module(client: werkzeug_test.Client) -> None:
    listing = json.loads(client.get("/data/plugins_listing").data)
    entry = listing[metadata.PLUGIN_NAME]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Activations"
    assert entry["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{PREFIX}/index.js"}


def test_plugin_inactive_without_actlog_data(tmp_path: Path) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(tmp_path / "train")).as_default():
        tf.summary.scalar("loss", 1.0, step=0)
    listing = json.loads(make_client(tmp_path).get("/data/plugins_listing").data)
    assert listing[metadata.PLUGIN_NAME]["enabled"] is False


def test_loader_changes_nothing_in_how_tensorboard_samples() -> None:
    for hints in ({}, {"images": 5, "scalars": 100}):
        flags = argparse.Namespace(samples_per_plugin=dict(hints))
        ActivationsLoader().fix_flags(flags)
        assert flags.samples_per_plugin == hints
    plugin = ActivationsLoader().load(base_plugin.TBContext())
    assert isinstance(plugin, ActivationsPlugin)
    assert plugin.data_plugin_names() == (metadata.PLUGIN_NAME,)
    assert plugin.frontend_metadata().es_module_path == "/index.js"


def test_static_files_are_served_and_nothing_else(client: werkzeug_test.Client) -> None:
    packaged = sorted(p.name for p in STATIC.iterdir())
    assert sorted(name for name, _ in _STATIC_FILES.values()) == packaged
    for route, (_, content_type) in _STATIC_FILES.items():
        response = client.get(PREFIX + route)
        assert response.status_code == 200, route
        assert response.headers["Content-Type"].startswith(content_type)
    assert b"export async function render" in client.get(f"{PREFIX}/index.js").data
    for path in ("/static/../index.js", "/..%2f..%2fsetup.py", "/%2e%2e/plugin.py", "/plugin.py"):
        response = client.get(PREFIX + path)
        assert response.status_code == 404, path
        assert b"ActivationsPlugin" not in response.data


def test_front_end_never_parses_html_and_fetches_only_its_own_routes() -> None:
    """Log strings enter the DOM as text only; imports stay among the served modules."""
    served = {name for name, _ in _STATIC_FILES.values()}
    for module in STATIC.glob("*.js"):
        # Comments may name what the code must never do.
        source = re.sub(r"/\*.*?\*/|^\s*//.*$", "", module.read_text(), flags=re.MULTILINE | re.DOTALL)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "DOMParser", "createContextualFragment", "eval(", "new Function"):
            assert sink not in source, (module.name, sink)
        imports = re.findall(r"""^import .* from '([^']+)';$""", source, re.MULTILINE)
        assert all(i.startswith("./") and i[2:] in served for i in imports), (module.name, imports)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", source), module.name


# -- what the routes say -------------------------------------------------------------------


def test_runs_describe_layers_from_the_manifest(client: werkzeug_test.Client, log_dir: Path) -> None:
    status, body = get_json(client, "runs")
    assert status == 200
    assert body["logdirs"] == [str(log_dir)]
    assert body["problem"] is None
    (run,) = body["runs"]
    assert run["run"] == metadata.EPOCH_RUN
    assert run["step_axis"] == metadata.STEP_AXIS_EPOCH
    assert (run["probes"], run["steps"], run["last_step"]) == (2, len(STEPS), STEPS[-1])
    assert [layer["name"] for layer in run["layers"]] == [XSS, "conv_1"]
    assert [(layer["channels"], layer["shown"]) for layer in run["layers"]] == [(3, 3), (4, 4)]
    assert [layer["output_shape"] for layer in run["layers"]] == [[8, 8, 3], [8, 8, 4]]


def test_steps_list_every_logged_step_with_a_key_and_its_layout(
    client: werkzeug_test.Client, log_dir: Path
) -> None:
    run = actlog.read(log_dir).run()
    keys = set()
    for layer in (XSS, "conv_1"):
        for probe in (0, 1):
            body = steps_of(client, layer, probe)
            assert [s["step"] for s in body["steps"]] == STEPS  # all 12, not TensorBoard's 10
            assert all(s["layout"] == 0 for s in body["steps"])
            keys.update(s["key"] for s in body["steps"])
            (layout,) = body["layouts"]
            expected = run.layout(layer, STEPS[-1])
            assert layout["boxes"] == expected.boxes()
            assert layout["channels"] == list(expected.channels)
            assert (layout["width"], layout["height"]) == (expected.width, expected.height)
            assert layout["from_step"] == 0
    assert len(keys) == 2 * 2 * len(STEPS)  # one key per image


@pytest.mark.parametrize("layer", [XSS, "conv_1"])
def test_images_by_key_are_the_logged_pixels(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator, layer: str
) -> None:
    for probe in (0, 1):
        for entry in steps_of(client, layer, probe)["steps"]:
            expected = logged_image(logged, metadata.grid_tag(layer, probe, 2), entry["step"])
            np.testing.assert_array_equal(get_png(client, entry["key"]), expected)


def test_probe_images_by_key(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator
) -> None:
    (run,) = get_json(client, "runs")[1]["runs"]
    for probe, key in enumerate(run["probe_images"]):
        tag = metadata.probe_image_tag(probe, 2)
        expected = logged_image(logged, tag, logged.Tensors(tag)[-1].step)
        np.testing.assert_array_equal(get_png(client, key), expected)


def test_images_may_be_cached_by_the_browser(client: werkzeug_test.Client) -> None:
    key = steps_of(client, "conv_1")["steps"][0]["key"]
    response = client.get(f"{PREFIX}/image", query_string={"key": key})
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert "no-cache" in client.get(f"{PREFIX}/runs").headers["Cache-Control"]


def test_overview_shows_every_layer_at_a_step_with_sparklines(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator, log_dir: Path
) -> None:
    run = actlog.read(log_dir).run()
    status, last = get_json(client, "overview", run="activations", probe=1)
    assert status == 200
    assert (last["steps"], last["step"]) == (STEPS, STEPS[-1])
    status, body = get_json(client, "overview", run="activations", probe=1, step=4)
    assert status == 200 and body["step"] == 4
    assert [layer["name"] for layer in body["layers"]] == [XSS, "conv_1"]
    for layer in body["layers"]:
        assert layer["grid"]["step"] == 4
        tag = metadata.grid_tag(layer["name"], 1, 2)
        np.testing.assert_array_equal(get_png(client, layer["grid"]["key"]), logged_image(logged, tag, 4))
        steps, drift = run.scalar(layer["name"], "drift")
        assert layer["drift"]["steps"] == steps.tolist() == STEPS[1:]
        np.testing.assert_allclose(layer["drift"]["values"], drift, rtol=1e-6)
        steps, dead = run.scalar(layer["name"], "dead_fraction")
        assert layer["dead"]["steps"] == steps.tolist()
        assert layer["dead"]["values"] == [round(f * layer["channels"]) for f in dead]
        assert layer["dead"]["channels"] == [layer["channels"]] * len(STEPS)


def test_channel_statistics_follow_one_channel(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator
) -> None:
    for layer, channel in ((XSS, 2), ("conv_1", 0), ("conv_1", 3)):
        status, body = get_json(client, "channel", run="activations", layer=layer, channel=channel)
        assert status == 200
        assert body["channel"] == channel
        assert set(body["stats"]) == set(metadata.CHANNEL_STATS)
        for stat in metadata.CHANNEL_STATS:
            events = logged.Tensors(metadata.stat_tag(layer, stat))
            expected = [float(tensor_util.make_ndarray(e.tensor_proto)[channel]) for e in events]
            assert body["stats"][stat]["steps"] == [e.step for e in events]
            np.testing.assert_allclose(body["stats"][stat]["values"], expected, rtol=1e-6)
        assert body["stats"]["channel_mean"]["steps"] == STEPS


# -- what the routes refuse ---------------------------------------------------------------

VALID = {
    "steps": {"run": "activations", "layer": "conv_1", "probe": "0"},
    "overview": {"run": "activations", "probe": "1", "step": "3"},
    "channel": {"run": "activations", "layer": "conv_1", "channel": "3"},
    "atlas": {"run": "activations", "layer": "conv_1", "channel": "3"},
}

HOSTILE_NAMES = [
    "",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "activations/../activations",
    "activations\x00",
    "conv_1/probe_0",
    "CONV_1",
    XSS + "/x",
    "<script>window.pwned=1</script>",
    "x" * 10_000,
]

HOSTILE_INTS = [
    "",
    "-1",
    "1.0",
    "1e3",
    "0x1",
    " 1",
    "+1",
    "01",
    "nan",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: int() would accept it
    "99999999999999999999999999",
    "1; DROP TABLE",
    "../1",
]


def bad_requests() -> list[tuple[str, dict]]:
    cases = []
    for route, params in VALID.items():
        for name in params:
            if not (route == "overview" and name == "step"):  # step is optional there
                cases.append((route, {k: v for k, v in params.items() if k != name}))  # missing
            values = HOSTILE_NAMES if name in ("run", "layer") else HOSTILE_INTS
            for value in values:
                cases.append((route, {**params, name: value}))
    cases += [
        ("steps", {**VALID["steps"], "probe": "2"}),  # 2 probes: 0 and 1
        ("overview", {**VALID["overview"], "step": str(EPOCHS + 1)}),  # never logged
        ("overview", {**VALID["overview"], "step": "999999999"}),
        ("channel", {**VALID["channel"], "channel": "4"}),  # conv_1 has 4 channels
        ("channel", {**VALID["channel"], "layer": XSS, "channel": "3"}),  # conv_0 has 3
        ("atlas", {**VALID["atlas"], "channel": "4"}),
        ("atlas", {**VALID["atlas"], "layer": XSS, "channel": "3"}),
        ("atlas", {**VALID["atlas"], "layer": "conv_1/atlas"}),  # a tag, not a layer
        ("steps", {**VALID["steps"], "layer": "conv_0"}),  # model name, not display name
        ("image", {}),
    ]
    cases += [("image", {"key": key}) for key in malformed_keys()]
    return cases


def encode_key(parts: Any) -> str:
    text = json.dumps(parts) if not isinstance(parts, bytes) else parts
    raw = text if isinstance(text, bytes) else text.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def malformed_keys() -> list[str]:
    return [
        "",
        "not a key",
        "../../etc/passwd",
        "%2e%2e%2f",
        "A" * 5000,
        "////",
        encode_key(b"\xff\xfe"),
        encode_key("{}"),
        encode_key(["g", "activations", "conv_1", 0]),
        encode_key(["g", "activations", "conv_1", 0, 0, 0]),  # stamp must be a string
        encode_key(["g", "activations", "conv_1", True, 0, "x"]),
        encode_key(["g", "activations", "conv_1", -1, 0, "x"]),
        encode_key(["g", "activations", "conv_1", 0, 1.5, "x"]),
        encode_key(["x", "activations", 0, "x"]),
        encode_key(["p", "activations", "0", "x"]),
        encode_key(["a", "activations", "conv_1", 0]),
        encode_key(["a", "activations", "conv_1", "0", "x"]),  # the step must be an int
        encode_key(["a", "activations", "conv_1", -1, "x"]),
        encode_key(["a", "activations", "conv_1", False, "x"]),
        encode_key(["a", "activations", None, 0, "x"]),
        encode_key(["a", "activations", "conv_1", 0, 0, "x"]),  # a grid's shape, an atlas' kind
        encode_key(["g", "activations", "conv_1", 0, "x"]),  # an atlas' shape, a grid's kind
    ]


@pytest.mark.parametrize("route,params", bad_requests())
def test_bad_parameters_get_400_json(client: werkzeug_test.Client, route: str, params: dict) -> None:
    status, body = get_json(client, route, **params)
    assert status == 400
    assert isinstance(body["error"], str) and body["error"]


def test_keys_naming_nothing_get_404_json(client: werkzeug_test.Client) -> None:
    (entry,) = [s for s in steps_of(client, "conv_1")["steps"] if s["step"] == 3]
    run, layer, probe, step, stamp = json.loads(base64.urlsafe_b64decode(entry["key"] + "=="))[1:]
    for parts, says in [
        (["g", "elsewhere", layer, probe, step, stamp], "No run 'elsewhere'"),
        (["g", run, "conv_9", probe, step, stamp], "holds no grid of layer 'conv_9'"),
        (["g", run, layer, 7, step, stamp], "probe 7"),
        (["g", run, layer, probe, 99, stamp], "step 99"),
        (["g", run, layer, probe, step, "0123456789ab"], "written again"),
        (["p", run, 9, stamp], "holds no probe image 9"),
    ]:
        status, body = get_json(client, "image", key=encode_key(parts))
        assert status == 404, parts
        assert says in body["error"]


def test_error_says_what_was_received_and_what_is_accepted(client: werkzeug_test.Client) -> None:
    _, body = get_json(client, "steps", run="nope", layer="conv_1", probe="0")
    assert "'nope'" in body["error"] and "['activations']" in body["error"]
    _, body = get_json(client, "steps", run="activations", layer="conv_9", probe="0")
    assert "'conv_9'" in body["error"] and "conv_1" in body["error"]
    _, body = get_json(client, "steps", **{**VALID["steps"], "probe": "-1"})
    assert "'-1'" in body["error"] and "non-negative integer" in body["error"]
    _, body = get_json(client, "channel", **{**VALID["channel"], "channel": "4"})
    assert "4 channels (0 to 3)" in body["error"]
    _, body = get_json(client, "atlas", **{**VALID["atlas"], "channel": "4"})
    assert "4 channels (0 to 3)" in body["error"]
    _, body = get_json(client, "atlas", **{**VALID["atlas"], "layer": "conv_9"})
    assert "'conv_9'" in body["error"] and "conv_1" in body["error"]
    _, body = get_json(client, "overview", **{**VALID["overview"], "step": "12"})
    assert "No step 12" in body["error"] and "0, 1, 2" in body["error"]
    _, body = get_json(client, "image", key="not a key")
    assert "Malformed image key" in body["error"]


def test_duplicated_parameters_are_refused(client: werkzeug_test.Client) -> None:
    response = client.get(f"{PREFIX}/steps?run=activations&layer=conv_1&probe=0&probe=1")
    assert response.status_code == 400
    assert "exactly one 'probe'" in json.loads(response.data)["error"]


def test_request_parameters_never_reach_the_filesystem(log_dir: Path) -> None:
    """Every request reads the log directory again here; only its files are ever touched."""
    client = make_client(log_dir, catalog=Catalog([Source(str(log_dir))], min_refresh=0))
    touched: list[str] = []

    def spy(real: Callable[..., Any]) -> Callable[..., Any]:
        def recording(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], (str, bytes, os.PathLike)):
                touched.append(os.fsdecode(args[0]))
            return real(*args, **kwargs)

        return recording

    requests = [(route, params) for route, params in bad_requests()]
    with (
        mock.patch("builtins.open", spy(builtins.open)),
        mock.patch("os.open", spy(os.open)),
        mock.patch("os.stat", spy(os.stat)),
        mock.patch("os.listdir", spy(os.listdir)),
        mock.patch("os.scandir", spy(os.scandir)),
    ):
        for route, params in requests:
            client.get(f"{PREFIX}/{route}", query_string=params)
    assert touched  # the spies see the reader at work
    allowed = (str(log_dir), str(STATIC))
    assert all(path.startswith(allowed) for path in touched), sorted(set(touched))
    assert not [p for p in touched if any(bad in p for bad in ("passwd", "..", "<", "\x00"))]


# -- logs with more than one logger, log directory or geometry ------------------------------


def test_two_loggers_in_one_run_and_two_log_directories(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    probes = tiny_data()[0][:2]
    first = actlog.ActivationLogger(str(tmp_path / "exp1"), probes, layers=["conv_0"])
    second = actlog.ActivationLogger(str(tmp_path / "exp1"), probes, layers=["conv_1"], max_channels=2)
    fit(tiny_model(), [first, second], 2)
    fit(tiny_model(), [actlog.ActivationLogger(str(tmp_path / "exp2"), probes, layers=["conv_1"])], 1)
    client = make_client(tmp_path)
    _, body = get_json(client, "runs")
    runs = {run["run"]: run for run in body["runs"]}
    assert sorted(runs) == ["exp1/activations", "exp2/activations"]
    layers = {layer["name"]: layer for layer in runs["exp1/activations"]["layers"]}
    assert sorted(layers) == ["conv_0", "conv_1"]  # both manifests of the run
    assert (layers["conv_0"]["shown"], layers["conv_1"]["shown"]) == (3, 2)
    acc = accumulator(tmp_path / "exp1" / metadata.EPOCH_RUN)
    for layer in ("conv_0", "conv_1"):
        body = steps_of(client, layer, 1, run="exp1/activations")
        assert [s["step"] for s in body["steps"]] == [0, 1, 2]
        tag = metadata.grid_tag(layer, 1, 2)
        for entry in body["steps"]:
            expected = logged_image(acc, tag, entry["step"])
            np.testing.assert_array_equal(get_png(client, entry["key"]), expected)
    assert [s["step"] for s in steps_of(client, "conv_1", run="exp2/activations")["steps"]] == [0, 1]
    status, body = get_json(client, "steps", run="activations", layer="conv_1", probe=0)
    assert status == 400 and "exp1/activations" in body["error"]


def test_geometry_that_changes_between_fits_comes_per_step(tmp_path: Path) -> None:
    """One logger, a second fit on a wider model: new tiles from the step it starts at."""
    import keras

    keras.utils.set_random_seed(0)
    logger = actlog.ActivationLogger(str(tmp_path), tiny_data()[0][:2], layers=["conv_0"])
    fit(tiny_model((3, 4)), [logger], 2)
    fit(tiny_model((6, 4)), [logger], 2)
    client = make_client(tmp_path)
    run = actlog.read(tmp_path).run()
    body = steps_of(client, "conv_0")
    assert [(s["step"], s["layout"]) for s in body["steps"]] == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]
    assert [layout["from_step"] for layout in body["layouts"]] == [0, 3]
    assert [layout["channels"] for layout in body["layouts"]] == [[0, 1, 2], [0, 1, 2, 3, 4, 5]]
    for entry in body["steps"]:
        layout = body["layouts"][entry["layout"]]
        assert layout["boxes"] == run.layout("conv_0", entry["step"]).boxes()
        assert get_png(client, entry["key"]).shape[:2] == (layout["height"], layout["width"])
    # Every channel's statistics exist only while the layer had that channel.
    _, stats = get_json(client, "channel", run="activations", layer="conv_0", channel=5)
    assert stats["stats"]["channel_mean"]["steps"] == [3, 4]
    _, stats = get_json(client, "channel", run="activations", layer="conv_0", channel=0)
    assert stats["stats"]["channel_mean"]["steps"] == [0, 1, 2, 3, 4]
    status, error = get_json(client, "channel", run="activations", layer="conv_0", channel=6)
    assert status == 400 and "6 channels (0 to 5)" in error["error"]
    _, overview = get_json(client, "overview", run="activations", probe=0)
    (layer,) = overview["layers"]
    assert layer["dead"]["channels"] == [3, 3, 3, 6, 6]


def test_a_step_written_again_gets_a_new_key_and_the_old_one_404(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    probes = tiny_data()[0][:2]
    fit(tiny_model(), [actlog.ActivationLogger(str(tmp_path), probes, layers=["conv_1"])], 2)
    clock = FakeClock()
    client = make_client(tmp_path, catalog=Catalog([Source(str(tmp_path))], clock=clock))
    before = steps_of(client, "conv_1")["steps"]
    # A new logger writing steps 0.. again into the same run. actlog itself moves a second
    # run to activations-2 (see actlog.runs); an older actlog, or another writer, would not.
    again = actlog.ActivationLogger(str(tmp_path), probes, layers=["conv_1"])
    again._destination.suffix = ""
    fit(tiny_model(), [again], 1)
    clock.now += 5
    after = steps_of(client, "conv_1")["steps"]
    assert [s["step"] for s in after] == [0, 1, 2]
    assert [a["key"] != b["key"] for a, b in zip(after, before, strict=True)] == [True, True, False]
    status, body = get_json(client, "image", key=before[0]["key"])
    assert status == 404 and "written again" in body["error"]
    acc = accumulator(tmp_path / metadata.EPOCH_RUN)
    np.testing.assert_array_equal(
        get_png(client, after[0]["key"]), logged_image(acc, metadata.grid_tag("conv_1", 0, 2), 0)
    )


# -- where the runs come from, and when they are read ---------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_logdir_spec_names_runs_as_tensorboard_does(log_dir: Path) -> None:
    flags = argparse.Namespace(logdir="", logdir_spec=f"first:{log_dir},second:{log_dir}")
    client = make_client(None, flags=flags)
    _, body = get_json(client, "runs")
    assert [run["run"] for run in body["runs"]] == ["first/activations", "second/activations"]
    assert body["logdirs"] == [str(log_dir), str(log_dir)]
    assert [s["step"] for s in steps_of(client, "conv_1", run="second/activations")["steps"]] == STEPS


def test_no_readable_log_directory_is_said_in_the_json(tmp_path: Path) -> None:
    status, body = get_json(make_client(None), "runs")
    assert status == 200
    assert body == {"logdirs": [], "problem": NO_LOGDIR, "runs": []}
    missing = tmp_path / "not_yet"
    clock = FakeClock()
    client = make_client(None, catalog=Catalog([Source(str(missing))], clock=clock))
    _, body = get_json(client, "runs")
    assert body["runs"] == []
    assert body["problem"] == f"The log directory {str(missing)!r} does not exist (yet)."
    fit_log(missing, tiny_model, *tiny_data(), tiny_data()[0][:2], 1)  # training starts and creates it
    clock.now += 5
    _, body = get_json(client, "runs")
    assert body["problem"] is None
    assert [run["run"] for run in body["runs"]] == ["activations"]


def test_new_steps_are_read_when_asked_at_most_every_couple_of_seconds(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    logger = actlog.ActivationLogger(str(tmp_path), tiny_data()[0][:2], layers=["conv_1"])
    model = tiny_model()
    fit(model, [logger], 1)
    clock = FakeClock()
    built = mock.Mock(wraps=catalog_module.index_run)
    with mock.patch.object(catalog_module, "index_run", built), \
            mock.patch.object(actlog.reader.Log, "refresh", autospec=True,
                              side_effect=actlog.reader.Log.refresh) as refreshed:
        client = make_client(tmp_path, catalog=Catalog([Source(str(tmp_path))], clock=clock))
        first = steps_of(client, "conv_1")["steps"]
        assert [s["step"] for s in first] == [0, 1]
        fit(model, [logger], 2)
        for _ in range(10):  # polls within the same couple of seconds: nothing read
            assert steps_of(client, "conv_1")["steps"] == first
            get_json(client, "runs")
            clock.now += 0.1
        assert refreshed.call_count == 1
        clock.now += 2
        body = steps_of(client, "conv_1")
        assert [s["step"] for s in body["steps"]] == [0, 1, 2, 3]
        assert body["steps"][:2] == first  # keys of steps already seen stay valid
        for _ in range(10):  # nothing new: the run's index is not built again
            clock.now += 3
            steps_of(client, "conv_1")
        assert refreshed.call_count == 12
    assert built.call_count == 2  # once per change of the run


# -- the feature atlas ---------------------------------------------------------------------

ATLAS_EPOCHS = 3  # atlas at every step: 0, 1, 2, 3
ATLAS_K = 3
ATLAS_POOL = 6


@pytest.fixture(scope="module")
def atlas_log(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_factory: Callable[..., Any],
    tiny_data: tuple[np.ndarray, np.ndarray],
) -> Path:
    """conftest's tiny model, two loggers in one run: conv_0 and conv_1 (4 of its 6 channels
    shown) with a feature atlas at every epoch, pool_0 without one."""
    path = tmp_path_factory.mktemp("atlas_log")
    x, y = tiny_data
    with_atlas = actlog.ActivationLogger(
        str(path), x[:2], layers=["conv_0", "conv_1"], max_channels=4, freq=1,
        atlas=actlog.Atlas(x[:ATLAS_POOL], k=ATLAS_K, every=1),
    )  # fmt: skip
    without = actlog.ActivationLogger(str(path), x[:2], layers=["pool_0"], freq=1)
    tiny_model_factory(0).fit(x, y, epochs=ATLAS_EPOCHS, batch_size=8, verbose=0,
                              callbacks=[with_atlas, without])
    return path


@pytest.fixture(scope="module")
def atlas_client(atlas_log: Path) -> werkzeug_test.Client:
    return make_client(atlas_log)


def atlas_of(client: werkzeug_test.Client, layer: str, channel: int) -> dict:
    status, body = get_json(client, "atlas", run="activations", layer=layer, channel=channel)
    assert status == 200, body
    return body


def cut(picture: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    return np.stack([picture[y : y + h, x : x + w] for y, x, h, w in boxes])


def test_atlas_route_gives_each_atlas_step_of_a_channel(
    atlas_client: werkzeug_test.Client, atlas_log: Path
) -> None:
    """Keys of the logged pictures, the backend's boxes of the channel's crops, and the
    pixels cut with those boxes are the reader's crops."""
    run = actlog.read(atlas_log).run()
    for layer in ("conv_0", "conv_1"):
        assert run.atlas_steps(layer) == list(range(ATLAS_EPOCHS + 1))
        for channel in run.channels(layer):
            body = atlas_of(atlas_client, layer, channel)
            assert (body["run"], body["layer"], body["channel"], body["note"]) == (
                "activations", layer, channel, None)
            assert [entry["step"] for entry in body["steps"]] == run.atlas_steps(layer)
            for i, entry in enumerate(body["steps"]):
                atlas = run.atlas(layer, entry["step"])
                row = atlas.row(channel)
                key = keys_module.decode(entry["key"])
                assert (key.kind, key.run, key.layer, key.probe, key.step) == (
                    keys_module.ATLAS, "activations", layer, None, entry["step"])
                info = run.layer_info(layer, entry["step"])
                layout = AtlasLayout.from_dict(info["atlas"]["layout"], info["channels"])
                assert [c["box"] for c in entry["crops"]] == layout.boxes()[row]
                assert (entry["width"], entry["height"]) == (layout.width, layout.height)
                assert (entry["k"], entry["pool"]) == (ATLAS_K, ATLAS_POOL)
                assert [c["index"] for c in entry["crops"]] == atlas.index[row].tolist()
                np.testing.assert_allclose([c["value"] for c in entry["crops"]], atlas.value[row], rtol=1e-6)
                if i == 0:
                    assert (entry["change"], entry["since"]) == (None, None)  # nothing before it
                else:
                    assert entry["change"] == pytest.approx(float(atlas.change[row]), rel=1e-6)
                    assert entry["since"] == body["steps"][i - 1]["step"]
                picture = get_png(atlas_client, entry["key"])
                np.testing.assert_array_equal(picture, atlas.image)
                np.testing.assert_array_equal(cut(picture, [c["box"] for c in entry["crops"]]),
                                              atlas.crops(channel))


def test_atlas_pictures_are_the_logged_ones(atlas_client: werkzeug_test.Client, atlas_log: Path) -> None:
    acc = accumulator(atlas_log / metadata.EPOCH_RUN)
    for entry in atlas_of(atlas_client, "conv_1", 0)["steps"]:
        expected = logged_image(acc, metadata.atlas_tag("conv_1"), entry["step"])
        np.testing.assert_array_equal(get_png(atlas_client, entry["key"]), expected)


def test_runs_say_which_layers_have_an_atlas(atlas_client: werkzeug_test.Client) -> None:
    (run,) = get_json(atlas_client, "runs")[1]["runs"]
    atlas = {layer["name"]: layer["atlas"] for layer in run["layers"]}
    expected = {"k": ATLAS_K, "pool": ATLAS_POOL}
    assert atlas == {"conv_0": expected, "conv_1": expected, "pool_0": None}


def test_layers_and_channels_without_an_atlas_get_a_note(
    atlas_client: werkzeug_test.Client, atlas_log: Path, client: werkzeug_test.Client
) -> None:
    body = atlas_of(atlas_client, "pool_0", 1)
    assert body["steps"] == []
    assert body["note"] == (
        "No feature atlas was logged for layer 'pool_0'; layers with one: ['conv_0', 'conv_1']."
    )
    body = atlas_of(client, "conv_1", 0)  # a log written without atlas=
    assert body["steps"] == []
    assert "ActivationLogger(atlas=...) was not used" in body["note"]
    # conv_1 shows 4 of its 6 channels: the others have no crops in its atlas.
    run = actlog.read(atlas_log).run()
    (hidden, *_) = sorted(set(range(6)) - set(run.channels("conv_1")))
    body = atlas_of(atlas_client, "conv_1", hidden)
    assert len(body["steps"]) == ATLAS_EPOCHS + 1
    assert all(entry["crops"] is None and entry["change"] is None for entry in body["steps"])
    assert f"Channel {hidden} is in none of the layer's atlas pictures" in body["note"]


def test_atlas_keys_naming_nothing_get_404(atlas_client: werkzeug_test.Client) -> None:
    entry = atlas_of(atlas_client, "conv_1", 0)["steps"][1]
    _, run, layer, step, stamp = json.loads(base64.urlsafe_b64decode(entry["key"] + "=="))
    for parts, says in [
        (["a", "elsewhere", layer, step, stamp], "No run 'elsewhere'"),
        (["a", run, "pool_0", step, stamp], "holds no atlas of layer 'pool_0'"),
        (["a", run, "conv_9", step, stamp], "holds no atlas of layer 'conv_9'"),
        (["a", run, layer, 99, stamp], "at step 99"),
        (["a", run, layer, step, "0123456789ab"], "ask /atlas for the new one"),
    ]:
        status, body = get_json(atlas_client, "image", key=encode_key(parts))
        assert status == 404, parts
        assert says in body["error"]
    # A grid key is not an atlas key, nor the other way round, even with the same stamp.
    status, _ = get_json(atlas_client, "image", key=encode_key(["g", run, layer, 0, step, stamp]))
    assert status == 404


def test_atlas_steps_logged_later_appear_once_the_run_changes(
    tmp_path: Path, tiny_model_factory: Callable[..., Any], tiny_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = tiny_data
    logger = actlog.ActivationLogger(str(tmp_path), x[:2], layers=["conv_1"], freq=1,
                                     atlas=actlog.Atlas(x[:ATLAS_POOL], k=2, every=2))
    model = tiny_model_factory(0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[logger])
    clock = FakeClock()
    built = mock.Mock(wraps=catalog_module.index_run)
    with mock.patch.object(catalog_module, "index_run", built):
        client = make_client(tmp_path, catalog=Catalog([Source(str(tmp_path))], clock=clock))
        first = atlas_of(client, "conv_1", 0)
        assert [entry["step"] for entry in first["steps"]] == [0, 1]  # step 0, and the last epoch
        assert first["steps"][1]["since"] == 0
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[logger])
        assert atlas_of(client, "conv_1", 0) == first  # read again at most every couple of seconds
        clock.now += 5
        body = atlas_of(client, "conv_1", 0)
    assert body["version"] > first["version"]
    # The logger goes on at step 2: atlas every second epoch, and at the last one.
    assert [entry["step"] for entry in body["steps"]] == [0, 1, 2, 4]
    assert body["steps"][:2] == first["steps"][:2]  # keys of steps already seen stay valid
    assert [entry["since"] for entry in body["steps"]] == [None, 0, 1, 2]
    assert built.call_count == 2
    run = actlog.read(tmp_path).run()
    for entry in body["steps"]:
        atlas = run.atlas("conv_1", entry["step"])
        np.testing.assert_array_equal(cut(get_png(client, entry["key"]), [c["box"] for c in entry["crops"]]),
                                      atlas.crops(0))
