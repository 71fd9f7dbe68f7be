"""Representation similarity: Gram matrices logged on every backend, linear CKA read back.

The backend tests train a small model with a frozen layer, a trained layer and a
layer re-initialised mid-run, record the watched layers' float activations on the
probes themselves at every logged step, and compare :meth:`actlog.reader.Run.similarity`
with the textbook linear CKA (Kornblith et al. 2019) computed from those activations.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import actlog
from actlog import similarity
from actlog.index import LogError

try:  # Chromium under Selenium, shared with the dashboard's browser tests
    from test_dashboard_browser import driver, screenshot_dir  # noqa: F401
except ImportError:  # pragma: no cover - selenium missing: the browser test is skipped
    pass

EPOCHS = 5
REINIT_EPOCH = 3  # the "reset" layer gets fresh weights before this epoch trains: step 3 -> 4 drops
PROBES = 6


def textbook_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from the activations themselves, in feature space (Kornblith et al. 2019, eq. 5):
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` with centred columns."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="frozen", trainable=False)(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="trained")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(2, name="reset")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
    y = (x[:, 3:9, 3:9, 0].mean(axis=(1, 2)) > 0).astype(np.int32) + (x[:, 0, 0, 0] > 1)
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of EPOCHS epochs, and the activations recorded at each of its steps."""
    import keras

    log_dir = tmp_path_factory.mktemp("similarity")
    x, y = _data()
    probes = x[:PROBES].copy()
    model = _model()
    names = ["frozen", "trained", "reset"]
    recorded: dict[int, list[np.ndarray]] = {}

    class Record(keras.callbacks.Callback):
        """The watched layers' float outputs on the probes, at each step actlog logs."""

        def on_train_begin(self, logs=None):
            self.taps = keras.Model(model.input, [model.get_layer(n).output for n in names])

        def _record(self, step):
            outputs = self.taps(probes, training=False)
            recorded[step] = [np.asarray(keras.ops.convert_to_numpy(o), np.float32) for o in outputs]

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                self._record(0)
            if epoch == REINIT_EPOCH:
                layer = model.get_layer("reset")
                rng = np.random.default_rng(1)
                # fresh values of the same scale: two random 2-d views of the same features
                layer.set_weights([(rng.normal(size=w.shape) * (w.std() or 0.1)).astype(np.float32)
                                   for w in layer.get_weights()])

        def on_epoch_end(self, epoch, logs=None):
            self._record(epoch + 1)

    logger = actlog.ActivationLogger(log_dir, probes, layers=names, freq=1)
    model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, shuffle=False, callbacks=[logger, Record()])
    return actlog.read(log_dir).run(), recorded, names


@pytest.mark.backend
def test_cka_equals_the_textbook_formula_on_every_pair_of_steps(trained):
    run, recorded, names = trained
    for index, name in enumerate(names):
        steps, matrix = run.similarity(name)
        assert steps.tolist() == list(range(EPOCHS + 1))
        expected = np.array([[textbook_cka(recorded[a][index], recorded[b][index]) for b in steps]
                             for a in steps])
        np.testing.assert_allclose(matrix, expected, atol=0.02, err_msg=name)
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), 1.0)


@pytest.mark.backend
def test_a_frozen_layer_stays_at_one_and_a_reinitialised_layer_drops(trained):
    run, _, _ = trained
    _, frozen = run.similarity("frozen")
    np.testing.assert_allclose(frozen, 1.0, atol=1e-5)
    _, reset = run.similarity("reset")
    before, after = REINIT_EPOCH, REINIT_EPOCH + 1  # steps: epochs completed
    assert reset[before, after] < 0.9, reset
    for step in range(EPOCHS):
        if step != before:
            assert reset[step, step + 1] > 0.95, (step, reset)
    # training moves a layer less than a fresh start
    _, changed = run.similarity("trained")
    assert changed[0, -1] > reset[before, after]


@pytest.mark.backend
def test_layer_similarity_at_a_step(trained):
    run, recorded, names = trained
    layers, matrix = run.layer_similarity()
    assert layers == names
    expected = np.array([[textbook_cka(recorded[EPOCHS][i], recorded[EPOCHS][j]) for j in range(3)]
                         for i in range(3)])
    np.testing.assert_allclose(matrix, expected, atol=0.02)
    layers, at_two = run.layer_similarity(2)
    expected = np.array([[textbook_cka(recorded[2][i], recorded[2][j]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(at_two, expected, atol=0.02)
    with pytest.raises(LogError, match=r"No Gram matrices at step 99 .*steps 0, 1, 2, 3, 4, 5"):
        run.layer_similarity(99)
    with pytest.raises(LogError, match="step must be an integer; received '2'"):
        run.layer_similarity("2")


@pytest.mark.backend
def test_grams_are_written_with_statistics_off(tmp_path, tiny_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, actlog.Probes(x[:3].copy(), stats=False),
                                     layers=["conv_0", "conv_1"])
    tiny_model.fit(x, y, epochs=1, verbose=0, callbacks=[logger])
    tags = read_run(tmp_path / "activations")
    assert [s for s, _ in tags["conv_1/gram"]] == [0, 1]
    assert "conv_1/mean" not in tags
    gram = tags["conv_1/gram"][0][1]
    assert gram.shape == (3, 3) and gram.dtype == np.float32
    np.testing.assert_allclose(gram.sum(axis=0), 0.0, atol=1e-3 * np.abs(gram).max())


# --------------------------------------------------------------------------- numpy only


def test_linear_cka_matches_the_feature_space_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 30)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(30, 5))).astype(np.float32)
    gx = np.asarray(similarity.centred_gram(actlog_numpy(), x))
    gy = np.asarray(similarity.centred_gram(actlog_numpy(), y))
    assert similarity.linear_cka(gx, gy) == pytest.approx(textbook_cka(x, y), abs=1e-5)
    # invariant to rotation and isotropic scale
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    rotated = np.asarray(similarity.centred_gram(actlog_numpy(), 3.0 * x @ q))
    assert similarity.linear_cka(gx, rotated) == pytest.approx(1.0, abs=1e-5)


def test_undefined_cka_is_nan():
    rng = np.random.default_rng(0)
    xp = actlog_numpy()
    good = np.asarray(similarity.centred_gram(xp, rng.normal(size=(4, 10)).astype(np.float32)))
    dead = np.asarray(similarity.centred_gram(xp, np.zeros((4, 10), np.float32)))
    acts = rng.normal(size=(4, 10)).astype(np.float32)
    acts[1, 3] = np.inf
    with np.errstate(invalid="ignore"):
        broken = np.asarray(similarity.centred_gram(xp, acts))
    assert np.isnan(broken).all()
    matrix = similarity.cka_matrix([good, dead, broken, good])
    assert matrix[0, 3] == pytest.approx(1.0, abs=1e-12) and matrix[0, 0] == 1.0
    assert np.isnan(matrix[1:3]).all() and np.isnan(matrix[:, 1:3]).all()
    assert np.isnan(similarity.linear_cka(good, dead))
    with pytest.raises(ValueError, match=r"square and of the same shape; received \(4, 4\) and \(3, 3\)"):
        similarity.linear_cka(good, good[:3, :3])


def actlog_numpy():
    from actlog.arrays import NUMPY

    return NUMPY


# --------------------------------------------------------------------------- NaN on the device


@pytest.mark.backend
def test_a_dead_layer_and_nonfinite_activations_read_as_nan(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    dead = keras.layers.Conv2D(2, 3, kernel_initializer="zeros", bias_initializer="zeros",
                               trainable=False, name="dead")(h)
    both = keras.layers.Concatenate()([dead, h[:, 1:-1, 1:-1]])
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(both))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(8)
    probes = x[:3].copy()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[actlog.ActivationLogger(tmp_path / "fine", probes,
                                                                              layers=["conv", "dead"])])
    # activations that overflow float32 (probes must be finite themselves)
    huge = keras.layers.Rescaling(3e38, name="huge")(inputs)
    overflowing = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(huge)))
    overflowing.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(RuntimeWarning, match="NaN or Inf"):
        overflowing.fit(x, y, epochs=1, verbose=0,
                        callbacks=[actlog.ActivationLogger(tmp_path / "broken", probes, layers=["huge"])])

    run = actlog.read(tmp_path / "fine").run()
    np.testing.assert_array_equal(run.grams("dead")[1], 0.0)
    steps, dead = run.similarity("dead")
    assert steps.tolist() == [0, 1] and np.isnan(dead).all()
    _, conv = run.similarity("conv")
    assert np.isfinite(conv).all() and conv[0, 0] == 1.0
    layers, between = run.layer_similarity(1)
    assert layers == ["conv", "dead"]
    assert between[0, 0] == 1.0 and np.isnan(between[1]).all() and np.isnan(between[:, 1]).all()

    run = actlog.read(tmp_path / "broken").run()
    assert np.isnan(run.grams("huge")[1]).all()
    assert np.isnan(run.similarity("huge")[1]).all()


# --------------------------------------------------------------------------- reader errors


def test_an_unknown_layer_is_named(trained):
    run, _, _ = trained
    layers = r"Layers: \['frozen', 'trained', 'reset'\]"
    with pytest.raises(LogError, match=r"No layer 'nope' in run 'activations'\. " + layers):
        run.similarity("nope")


@pytest.mark.backend
def test_a_log_without_grams_says_so(tmp_path, tiny_model, tiny_data, monkeypatch):
    from actlog import probe

    monkeypatch.setattr(probe, "GRAM", False)  # as a log of an actlog before similarity
    x, y = tiny_data
    tiny_model.fit(x, y, epochs=1, verbose=0,
                   callbacks=[actlog.ActivationLogger(tmp_path, x[:2].copy(), layers=["conv_0"])])
    run = actlog.read(tmp_path).run()
    assert "conv_0/gram" not in run.tags and "conv_0/probe_0" in run.tags
    with pytest.raises(LogError, match="No Gram matrices logged for layer 'conv_0' in run 'activations'"):
        run.similarity("conv_0")
    with pytest.raises(LogError, match="No Gram matrices logged in run 'activations'"):
        run.layer_similarity()


# --------------------------------------------------------------------------- CLI


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from actlog.cli import main

    status = main(["similarity", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_prints_the_step_matrix_with_heads(trained, capsys):
    run, _, _ = trained
    status, out, err = _cli(capsys, str(Path(run.path).parent), "--layer", "reset")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["epoch", "0", "1", "2", "3", "4", "5"]
    steps, matrix = run.similarity("reset")
    for step, line in zip(steps, lines[1:], strict=True):
        head, *cells = line.split()
        assert int(head) == step
        assert cells == [f"{v:.3f}" for v in matrix[step]]


def test_cli_prints_the_layer_matrix_at_a_step(trained, capsys):
    run, _, _ = trained
    status, out, _ = _cli(capsys, str(Path(run.path).parent), "--step", "2")
    assert status == 0
    layers, matrix = run.layer_similarity(2)
    lines = out.splitlines()
    assert lines[0].split() == ["layer", *layers]
    assert [line.split()[0] for line in lines[1:]] == layers
    assert lines[2].split()[1:] == [f"{v:.3f}" for v in matrix[1]]


def test_cli_draws_the_heat_map_png(trained, capsys, tmp_path):
    from PIL import Image

    from actlog import grid

    run, _, _ = trained
    output = tmp_path / "cka.png"
    status, out, _ = _cli(capsys, str(Path(run.path).parent), "--layer", "reset", "-o", str(output))
    assert status == 0
    with Image.open(output) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert out == f"wrote {output}: heat map of 6x6, {pixels.shape[1]}x{pixels.shape[0]} px\n"
    _, matrix = run.similarity("reset")
    cell = 48  # min(48, 640 // 6)
    assert pixels.shape[0] > 6 * cell  # the caption below
    left = (pixels.shape[1] - 6 * cell) // 2  # centred above a caption wider than it
    for i, j in [(0, 0), (3, 4), (5, 0)]:
        expected = grid.colorize(np.array([matrix[i, j]]), "viridis")[0]
        block = pixels[i * cell:(i + 1) * cell, left + j * cell:left + (j + 1) * cell]
        assert (block == expected).all(), (i, j)


@pytest.mark.parametrize(("extra", "message"), [
    ((), "give --layer L .* or --step S .*, not both"),
    (("--layer", "reset", "--step", "1"), "not both"),
    (("--layer", "rest"), "No layer 'rest' in run 'activations'.*Did you mean 'reset'"),
    (("--step", "9"), "No Gram matrices at step 9 in run 'activations'; logged: steps 0, 1, 2, 3, 4, 5"),
    (("--layer", "reset", "-o", "cka.gif"), r"a PNG: give OUT.png; received '.*cka.gif'"),
])
def test_cli_errors_name_what_exists(trained, capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    run, _, _ = trained
    status, out, err = _cli(capsys, str(Path(run.path).parent), *extra)
    assert status == 2 and out == ""
    assert err.startswith("actlog: error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err


# --------------------------------------------------------------------------- dashboard routes


@pytest.fixture(scope="module")
def client(trained):
    from test_plugin_routes import make_client

    run, _, _ = trained
    return make_client(Path(run.path).parent)


def _get(client, route, **params):
    import json

    response = client.get(f"/data/plugin/actlog/{route}", query_string=params)
    assert response.headers["Content-Type"].startswith("application/json"), response.data
    return response.status_code, json.loads(response.data)


def test_similarity_route_is_the_readers_matrix(client, trained):
    run, _, _ = trained
    status, body = _get(client, "similarity", run="activations", layer="reset")
    assert status == 200, body
    steps, matrix = run.similarity("reset")
    assert body["steps"] == steps.tolist() and body["step_axis"] == "epoch" and body["note"] is None
    np.testing.assert_allclose(np.array(body["matrix"], dtype=float), matrix, atol=5e-5)


def test_similarity_overview_gives_each_layer_against_its_last_step(client, trained):
    run, _, names = trained
    status, body = _get(client, "similarity_overview", run="activations")
    assert status == 200, body
    assert [layer["name"] for layer in body["layers"]] == names
    for layer in body["layers"]:
        steps, matrix = run.similarity(layer["name"])
        assert layer["steps"] == steps.tolist() and layer["last"] == EPOCHS
        np.testing.assert_allclose(np.array(layer["values"], dtype=float), matrix[:, -1], atol=5e-5)
        assert layer["values"][-1] == 1.0


@pytest.mark.parametrize(("route", "params", "message"), [
    ("similarity", {"run": "activations", "layer": "nope"},
     r"Unknown layer 'nope'. Layers in this run: \['frozen', 'trained', 'reset'\]"),
    ("similarity", {"run": "nope", "layer": "reset"},
     r"Unknown run 'nope'. Runs with actlog data: \['activations'\]"),
    ("similarity", {"run": "activations"}, r"Expected exactly one 'layer' parameter, received 0"),
    ("similarity_overview", {}, r"Expected exactly one 'run' parameter, received 0"),
])
def test_similarity_routes_refuse_bad_parameters(client, route, params, message):
    status, body = _get(client, route, **params)
    assert status == 400
    assert re.search(message, body["error"]), body


def test_a_heat_map_of_many_steps_is_thinned_evenly():
    from actlog.plugin import similarity_routes

    rng = np.random.default_rng(0)
    grams = np.stack([np.cov(rng.normal(size=(3, 5))) for _ in range(450)])
    body = similarity_routes.heatmap_body("r", "l", "global_step", 1, (np.arange(450) * 10, grams))
    steps = body["steps"]
    assert len(steps) == similarity_routes.MAX_HEATMAP_STEPS and steps[0] == 0 and steps[-1] == 4490
    assert body["note"] == "200 of the 450 logged steps, evenly spread."
    assert np.array(body["matrix"]).shape == (200, 200)


# --------------------------------------------------------------------------- in a browser


@pytest.mark.browser
@pytest.mark.skipif(not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()),
                    reason="needs Debian's chromium and chromedriver")
def test_the_layer_view_shows_the_heat_map_with_hover_values(trained, driver, tmp_path, screenshot_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from test_dashboard_browser import (
        fetch_json,
        open_dashboard,
        running_tensorboard,
        save_screenshot,
        wait_for,
    )

    run, _, names = trained
    _, matrix = run.similarity("reset")

    def ready(url: str) -> bool:
        try:
            body = fetch_json(f"{url}data/plugin/actlog/similarity?run=activations&layer=reset")
            return len(body["steps"]) == 6
        except OSError:
            return False

    with running_tensorboard(Path(run.path).parent, tmp_path, ready) as url:
        open_dashboard(driver, url, len(names))
        # the overview: every layer against its last step, read at the last step
        wait_for(driver, "document.querySelectorAll('#actlog-settling-chart path[data-layer]').length === 3")
        hit = driver.find_element(By.CSS_SELECTOR, "#actlog-settling-chart rect.hit")
        ActionChains(driver).move_to_element_with_offset(hit, hit.size["width"] // 2 - 2, 0).perform()
        readout = driver.find_element(By.ID, "actlog-settling-readout")
        assert readout.text == "epoch 5: frozen 1.000, trained 1.000, reset 1.000"
        save_screenshot(driver, screenshot_dir / "similarity_overview.png")
        (card,) = [c for c in driver.find_elements(By.CSS_SELECTOR, ".layer-card")
                   if c.get_attribute("data-layer") == "reset"]
        card.click()
        wait_for(driver, "(() => { const c = document.getElementById('actlog-similarity-heatmap'); return c"
                         " && !c.hidden && c.dataset.layer === 'reset' && c.dataset.steps === '6'; })()")
        canvas = driver.find_element(By.ID, "actlog-similarity-heatmap")
        side = canvas.size["width"]
        assert canvas.size["height"] == side and side >= 100
        # the diagonal is 1: viridis' yellow
        top_left = driver.execute_script(
            "return Array.from(arguments[0].getContext('2d').getImageData(2, 2, 1, 1).data);", canvas)
        assert top_left == [253, 231, 37, 255]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
        cell = side / 6
        ActionChains(driver).move_to_element_with_offset(
            canvas, int(4.5 * cell - side / 2), int(3.5 * cell - side / 2)).perform()
        wait_for(driver, "!document.getElementById('actlog-similarity-hover').hidden")
        hover = driver.find_element(By.ID, "actlog-similarity-hover")
        assert hover.text == f"epoch 3 \u00d7 epoch 4: CKA {matrix[3, 4]:.3f}"
        save_screenshot(driver, screenshot_dir / "similarity.png")


# --------------------------------------------------------------------------- other kinds of layer


def _numpy_gram(acts: np.ndarray) -> np.ndarray:
    rows = acts.reshape(len(acts), -1).astype(np.float64)
    rows = rows - rows.mean(axis=0)
    return rows @ rows.T


@pytest.mark.backend
def test_token_layers_attention_and_channels_first_have_their_grams(tmp_path):
    import keras
    from test_tokens import PATCH, attention_model, fit, planted_images, tiny_vit

    keras.utils.set_random_seed(0)
    probes = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    model = tiny_vit(1)
    run = fit(model, probes, tmp_path / "vit", layers=["patch", "b0_out"])
    for name in ("patch", "b0_out"):
        acts = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer(name).output)(probes))
        steps, grams = run.grams(name)
        assert steps.tolist() == [0, 1] and grams.shape == (2, 3, 3)
        np.testing.assert_allclose(grams[1], _numpy_gram(acts), rtol=1e-3, atol=1e-4 * np.abs(grams[1]).max())
    # attention maps, one per head: head 0 looks at each probe's bright patch, head 1 everywhere
    places = [(1, 2), (3, 0), (0, 3)]
    lit = np.concatenate([planted_images(1, patch=p, side=4, size=PATCH // 2) for p in places])
    run = fit(attention_model(False), lit, tmp_path / "attention", layers=["mha"])
    steps, grams = run.grams("mha")
    assert grams.shape == (2, 3, 3) and np.isfinite(grams).all() and np.abs(grams).max() > 0
    np.testing.assert_array_equal(run.similarity("mha")[1], 1.0)  # nothing trains at learning rate 0

    inputs = keras.Input((3, 10, 10))
    # channels first (axis=1); TensorFlow on the CPU has no channels-first convolution
    first = keras.layers.BatchNormalization(axis=1, name="first")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(first)))
    images = np.random.default_rng(1).random((3, 3, 10, 10)).astype(np.float32)
    run = fit(model, images, tmp_path / "cf", layers=["first"])
    assert run.layer_info("first")["data_format"] == "channels_first"
    acts = keras.ops.convert_to_numpy(keras.Model(model.input, first)(images))  # (k, C, H, W)
    # a permutation of the features leaves the Gram as it is: channels first or last alike
    np.testing.assert_allclose(run.grams("first")[1][1], _numpy_gram(acts), rtol=1e-3,
                               atol=1e-4 * np.abs(_numpy_gram(acts)).max())
