"""Class activation maps in the dashboard: the ``/class_maps`` route and the probe panel.

The routes go through werkzeug's test client over TensorBoard's own loading
(:func:`test_plugin_routes.make_client`); the panel through a real ``tensorboard``
process and headless Chromium (the fixtures of ``test_dashboard_browser``).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_class_maps import planted_model, planted_probes
from test_dashboard_browser import (  # noqa: F401 - fixtures
    CHROMEDRIVER,
    CHROMIUM,
    decoded_pixels,
    driver,
    enter_dashboard,
    fetch_json,
    open_dashboard,
    running_tensorboard,
    wait_for,
)
from test_plugin_routes import get_json, get_png, make_client

import actlog

EPOCHS = 3


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cam_log")
    x, y = planted_probes()
    logger = actlog.ActivationLogger(path, (x, y), layers=["bright"], cam=actlog.ClassMaps("bright"))
    planted_model().fit(x, y, batch_size=4, epochs=EPOCHS, verbose=0, callbacks=[logger])
    return path


def test_the_route_lists_every_step_of_a_probe_with_its_picture(log_dir: Path) -> None:
    client = make_client(log_dir)
    status, body = get_json(client, "class_maps", run="activations", probe=1)
    assert status == 200
    assert (body["layer"], body["classes"], body["score"]) == ("bright", "label", "logit")
    assert [(s["step"], s["class"]) for s in body["steps"]] == [(s, 1) for s in range(EPOCHS + 1)]
    steps, pictures = actlog.read(log_dir).run().class_maps(1)
    for entry, picture in zip(body["steps"], pictures, strict=True):
        np.testing.assert_array_equal(get_png(client, entry["key"]), picture)


def test_the_route_refuses_bad_parameters_and_says_when_a_run_has_none(
    log_dir: Path, tmp_path: Path,
) -> None:
    client = make_client(log_dir)
    status, body = get_json(client, "class_maps", run="activations", probe=4)
    assert status == 400 and "Probe 4 does not exist; this run has 4 probes (0 to 3)" in body["error"]
    x, y = planted_probes()
    plain = tmp_path / "plain"
    logger = actlog.ActivationLogger(plain, x, layers=["bright"])
    planted_model().fit(x, y, epochs=1, verbose=0, callbacks=[logger])
    status, body = get_json(make_client(plain), "class_maps", run="activations", probe=0)
    assert status == 200 and body["steps"] == [] and body["layer"] is None and "cam=" in body["note"]


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs chromium and chromedriver")
def test_the_probe_panel_shows_the_class_map_at_the_slider_step(
    log_dir: Path, driver: Any, tmp_path: Path,  # noqa: F811 - the fixture
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def ready(url: str) -> bool:
        query = urllib.parse.urlencode({"run": "activations", "probe": 0})
        try:
            return len(fetch_json(f"{url}data/plugin/actlog/class_maps?{query}")["steps"]) == EPOCHS + 1
        except urllib.error.HTTPError:
            return False

    steps, pictures = actlog.read(log_dir).run().class_maps(0)
    with running_tensorboard(log_dir, tmp_path, ready) as url:
        open_dashboard(driver, url, 1)
        driver.find_element(By.CSS_SELECTOR, ".layer-card").click()
        panel = "document.getElementById('actlog-cam')"
        wait_for(driver, f"{panel}.dataset.step === arguments[0]", str(EPOCHS))
        image = driver.find_element(By.ID, "actlog-cam-image")
        wait_for(driver, "arguments[0].complete && arguments[0].naturalWidth > 0", image)
        np.testing.assert_array_equal(decoded_pixels(driver, image)[..., :3], pictures[-1])
        caption = driver.find_element(By.ID, "actlog-cam-caption").text
        assert caption == f"class 1 (label), layer bright, epoch {EPOCHS}"
        slider = driver.find_element(By.ID, "actlog-step-slider")
        slider.send_keys(Keys.HOME)
        wait_for(driver, f"{panel}.dataset.step === '0'")
        image = driver.find_element(By.ID, "actlog-cam-image")
        wait_for(driver, "arguments[0].complete && arguments[0].naturalWidth > 0", image)
        np.testing.assert_array_equal(decoded_pixels(driver, image)[..., :3], pictures[0])
