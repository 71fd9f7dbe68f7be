"""Routes of the Activations dashboard, through werkzeug's test client.

The log comes from a real ``fit`` with ``ActivationLogger``; TensorBoard's own
multiplexer and data provider read it, sized the way ``tensorboard`` sizes
them, and the plugin is mounted in TensorBoard's WSGI application so requests
take the same path as in a browser.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester, event_accumulator, plugin_event_multiplexer
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from actlog import metadata
from actlog.plugin.plugin import KEEP_IMAGES, ActivationsLoader, ActivationsPlugin

XSS = "<img src=x onerror=alert(1)>"
EPOCHS = 11  # 12 steps: more than the 10 images TensorBoard keeps by default
PREFIX = "/data/plugin/actlog"


def fit_log(log_dir: Path, epochs: int) -> None:
    """Train a tiny CNN with ActivationLogger: conv_0 shown as XSS, conv_1 as itself."""
    import keras

    import actlog

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    y = np.array([0, 1, 0, 1])
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv_0")(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_1")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = actlog.ActivationLogger(str(log_dir), x[:2], layers={XSS: "conv_0", "conv_1": "conv_1"})
    model.fit(x, y, epochs=epochs, batch_size=2, verbose=0, callbacks=[logger])


def make_client(log_dir: Path, samples_per_plugin: dict[str, int]) -> werkzeug_test.Client:
    """TensorBoard's WSGI app with only this plugin, over a real data provider."""
    guidance = dict(data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE)
    guidance.update(samples_per_plugin)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE, tensor_size_guidance=guidance
    )
    multiplexer.AddRunsFromDirectory(str(log_dir))
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, str(log_dir))
    context = base_plugin.TBContext(data_provider=provider, logdir=str(log_dir))
    plugin = ActivationsLoader().load(context)
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    return werkzeug_test.Client(app, wrappers.Response)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("routes_log")
    fit_log(path, EPOCHS)
    return path


@pytest.fixture(scope="module")
def client(log_dir: Path) -> werkzeug_test.Client:
    # What `tensorboard` does when ActivationsLoader is the entry point.
    flags = argparse.Namespace(samples_per_plugin={})
    ActivationsLoader().fix_flags(flags)
    return make_client(log_dir, flags.samples_per_plugin)


@pytest.fixture(scope="module")
def logged(log_dir: Path) -> event_accumulator.EventAccumulator:
    """The same log read by TensorBoard's EventAccumulator, keeping everything."""
    (events,) = (log_dir / metadata.EPOCH_RUN).glob("events.out.tfevents.*")
    acc = event_accumulator.EventAccumulator(
        str(events), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0}
    )
    acc.Reload()
    return acc


def logged_image(acc: event_accumulator.EventAccumulator, tag: str, step: int) -> np.ndarray:
    (event,) = [e for e in acc.Tensors(tag) if e.step == step]
    return np.asarray(Image.open(io.BytesIO(event.tensor_proto.string_val[2])))


def get_json(client: werkzeug_test.Client, route: str, **params: object) -> tuple[int, dict]:
    response = client.get(f"{PREFIX}/{route}", query_string=params)
    assert response.headers["Content-Type"].startswith("application/json"), response.data
    return response.status_code, json.loads(response.data)


def test_plugin_listing_names_the_tab_and_module(client: werkzeug_test.Client) -> None:
    listing = json.loads(client.get("/data/plugins_listing").data)
    entry = listing[metadata.PLUGIN_NAME]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Activations"
    assert entry["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": f"{PREFIX}/index.js",
    }


def test_plugin_inactive_without_actlog_data(tmp_path: Path) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(tmp_path / "train")).as_default():
        tf.summary.scalar("loss", 1.0, step=0)
    listing = json.loads(make_client(tmp_path, {}).get("/data/plugins_listing").data)
    assert listing[metadata.PLUGIN_NAME]["enabled"] is False


def test_static_files(client: werkzeug_test.Client) -> None:
    js = client.get(f"{PREFIX}/index.js")
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert b"export async function render" in js.data
    css = client.get(f"{PREFIX}/style.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    for path in ("/static/../index.js", "/..%2f..%2fsetup.py", "/%2e%2e/plugin.py", "/plugin.py"):
        response = client.get(PREFIX + path)
        assert response.status_code == 404, path
        assert b"ActivationsPlugin" not in response.data


def test_runs_describe_layers_from_the_manifest(client: werkzeug_test.Client) -> None:
    status, body = get_json(client, "runs")
    assert status == 200
    (run,) = body["runs"]
    assert run["run"] == metadata.EPOCH_RUN
    assert run["step_axis"] == metadata.STEP_AXIS_EPOCH
    assert run["probes"] == 2
    assert run["probe_images"] == [True, True]
    assert [layer["name"] for layer in run["layers"]] == [XSS, "conv_1"]
    assert [layer["channels"] for layer in run["layers"]] == [[0, 1, 2], [0, 1, 2, 3]]
    for layer in run["layers"]:
        assert set(layer["grid"]) >= {"rows", "cols", "tile_height", "tile_width", "pad"}


def test_steps_lists_every_logged_step(client: werkzeug_test.Client) -> None:
    for layer in (XSS, "conv_1"):
        for probe in (0, 1):
            status, body = get_json(client, "steps", run="activations", layer=layer, probe=probe)
            assert status == 200
            assert body["steps"] == list(range(EPOCHS + 1))
            assert body["missing_steps"] == 0


def test_steps_says_how_many_steps_tensorboard_dropped(log_dir: Path) -> None:
    # Without ActivationsLoader TensorBoard keeps 10 images per tag.
    status, body = get_json(make_client(log_dir, {}), "steps", run="activations", layer="conv_1", probe=0)
    assert status == 200
    assert len(body["steps"]) == 10
    assert body["missing_steps"] == EPOCHS + 1 - 10


@pytest.mark.parametrize("layer", [XSS, "conv_1"])
def test_grid_bytes_decode_to_the_logged_pixels(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator, layer: str
) -> None:
    for probe in (0, 1):
        for step in (0, 5, EPOCHS):
            response = client.get(
                f"{PREFIX}/grid",
                query_string={"run": "activations", "layer": layer, "probe": probe, "step": step},
            )
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "image/png"
            served = np.asarray(Image.open(io.BytesIO(response.data)))
            tag = metadata.grid_tag(layer, probe, 2)
            np.testing.assert_array_equal(served, logged_image(logged, tag, step))


def test_probe_image_is_the_logged_probe(
    client: werkzeug_test.Client, logged: event_accumulator.EventAccumulator
) -> None:
    for probe in (0, 1):
        response = client.get(f"{PREFIX}/probe", query_string={"run": "activations", "probe": probe})
        assert response.status_code == 200
        served = np.asarray(Image.open(io.BytesIO(response.data)))
        tag = metadata.probe_image_tag(probe, 2)
        step = logged.Tensors(tag)[-1].step
        np.testing.assert_array_equal(served, logged_image(logged, tag, step))


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
        assert body["stats"]["channel_mean"]["steps"] == list(range(EPOCHS + 1))


VALID = {
    "steps": {"run": "activations", "layer": "conv_1", "probe": "0"},
    "grid": {"run": "activations", "layer": "conv_1", "probe": "0", "step": "3"},
    "probe": {"run": "activations", "probe": "1"},
    "channel": {"run": "activations", "layer": "conv_1", "channel": "3"},
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
            cases.append((route, {k: v for k, v in params.items() if k != name}))  # missing
            values = HOSTILE_NAMES if name in ("run", "layer") else HOSTILE_INTS
            for value in values:
                cases.append((route, {**params, name: value}))
    cases += [
        ("steps", {**VALID["steps"], "probe": "2"}),  # 2 probes: 0 and 1
        ("grid", {**VALID["grid"], "step": str(EPOCHS + 1)}),  # never logged
        ("grid", {**VALID["grid"], "step": "999999999"}),
        ("probe", {**VALID["probe"], "probe": "2"}),
        ("channel", {**VALID["channel"], "channel": "4"}),  # conv_1 has 4 channels
        ("channel", {**VALID["channel"], "layer": XSS, "channel": "3"}),  # conv_0 has 3
        ("steps", {**VALID["steps"], "layer": "conv_0"}),  # model name, not display name
    ]
    return cases


@pytest.mark.parametrize("route,params", bad_requests())
def test_bad_parameters_get_400_json(client: werkzeug_test.Client, route: str, params: dict) -> None:
    status, body = get_json(client, route, **params)
    assert status == 400
    assert isinstance(body["error"], str) and body["error"]


def test_error_says_what_was_received_and_what_is_accepted(client: werkzeug_test.Client) -> None:
    _, body = get_json(client, "steps", run="nope", layer="conv_1", probe="0")
    assert "'nope'" in body["error"] and "['activations']" in body["error"]
    _, body = get_json(client, "steps", run="activations", layer="conv_9", probe="0")
    assert "'conv_9'" in body["error"] and "conv_1" in body["error"]
    _, body = get_json(client, "grid", **{**VALID["grid"], "probe": "-1"})
    assert "'-1'" in body["error"] and "non-negative integer" in body["error"]
    _, body = get_json(client, "channel", **{**VALID["channel"], "channel": "4"})
    assert "4 channels (0 to 3)" in body["error"]


def test_duplicated_parameters_are_refused(client: werkzeug_test.Client) -> None:
    response = client.get(f"{PREFIX}/grid?run=activations&layer=conv_1&probe=0&probe=1&step=1")
    assert response.status_code == 400
    assert "exactly one 'probe'" in json.loads(response.data)["error"]


def test_data_routes_never_touch_the_filesystem(client: werkzeug_test.Client) -> None:
    touched = []

    def record(name):
        real = getattr(os, name) if name != "open" else builtins.open

        def spy(*args, **kwargs):
            touched.append((name, args[:1]))
            return real(*args, **kwargs)

        return spy

    requests = [(route, params) for route, params in VALID.items()]
    requests += [(route, params) for route, params in bad_requests()[:40]]
    with (
        mock.patch("builtins.open", record("open")),
        mock.patch("os.open", record("open")),
        mock.patch("os.stat", record("stat")),
        mock.patch("os.listdir", record("listdir")),
        mock.patch("os.scandir", record("scandir")),
    ):
        for route, params in requests:
            client.get(f"{PREFIX}/{route}", query_string=params)
    assert touched == []


def test_loader_keeps_every_actlog_sample_unless_told_otherwise() -> None:
    flags = argparse.Namespace(samples_per_plugin={})
    ActivationsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": KEEP_IMAGES, "actlog": 0}
    flags = argparse.Namespace(samples_per_plugin={"images": 5, "scalars": 100})
    ActivationsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 5, "scalars": 100, "actlog": 0}
    plugin = ActivationsLoader().load(base_plugin.TBContext())
    assert isinstance(plugin, ActivationsPlugin)
    assert plugin.data_plugin_names() == (metadata.PLUGIN_NAME,)
    assert plugin.frontend_metadata().es_module_path == "/index.js"
