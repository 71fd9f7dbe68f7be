"""The Activations dashboard end to end: a real ``fit``, a real ``tensorboard``
process on 127.0.0.1 and Debian's Chromium, headless, driven by Selenium.

What a person would check by eye is checked here by reading the page: the tab
loads, the slider moves the step, a tile click opens the channel view, the
pixels on screen are the pixels in the log, and a layer named like an HTML tag
is shown as that text with no script run, and steps logged while the page is
open appear on it without a reload. Screenshots land in ``docs/images/``
(or ``$ACTLOG_SCREENSHOT_DIR``) for the README.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import actlog
from actlog import metadata

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
XSS = "<img src=x onerror=alert(1)>"
EPOCHS = 5
STEPS = list(range(EPOCHS + 1))
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs Debian's chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER} "
        "(apt-get install chromium chromium-driver)",
    ),
]

# Installed in every frame before its scripts run: any alert/confirm/prompt is
# recorded instead of shown, so a script injected through a layer name is seen.
ALERT_TRAP = """
window.__actlogAlerts = [];
for (const name of ['alert', 'confirm', 'prompt']) {
  window[name] = (message) => { window.__actlogAlerts.push(String(message)); };
}
"""

READ_PIXELS = """
const source = arguments[0];
let canvas = source;
if (source.tagName === 'IMG') {
  canvas = document.createElement('canvas');
  canvas.width = source.naturalWidth;
  canvas.height = source.naturalHeight;
  canvas.getContext('2d').drawImage(source, 0, 0);
}
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let text = '';
for (let i = 0; i < data.length; i += 8192) {
  text += String.fromCharCode.apply(null, data.subarray(i, i + 8192));
}
return [canvas.width, canvas.height, btoa(text)];
"""


def probe_images() -> np.ndarray:
    """Two 16x16 RGB probes with structure a conv layer responds to."""
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    stripes = np.stack([np.sin(xx * 9) * 0.5 + 0.5, yy, 1 - xx], axis=-1)
    rings = np.stack([np.cos(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 40) * 0.5 + 0.5, xx * yy, yy], -1)
    return np.stack([stripes, rings]).astype("float32")


def fit_log(log_dir: Path) -> None:
    import keras

    import actlog

    keras.utils.set_random_seed(0)
    probes = probe_images()
    x = np.concatenate([probes, np.random.default_rng(0).random((2, 16, 16, 3))]).astype("float32")
    y = np.array([0, 1, 0, 1])
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_0")(inputs)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    logger = actlog.ActivationLogger(
        str(log_dir), probes, layers={XSS: "conv_0", "conv_1": "conv_1"}, cmap="viridis"
    )
    model.fit(x, y, epochs=EPOCHS, batch_size=2, verbose=0, callbacks=[logger])


def logged_grid(log_dir: Path, layer: str, probe: int, step: int) -> np.ndarray:
    """The grid as TensorBoard's EventAccumulator reads it, as RGBA uint8."""
    from tensorboard.backend.event_processing import event_accumulator

    # The whole run directory: every `fit` writes an events file of its own.
    run_dir = str(log_dir / metadata.EPOCH_RUN)
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tag = metadata.grid_tag(layer, probe, 2)
    (event,) = [e for e in acc.Tensors(tag) if e.step == step]
    png = event.tensor_proto.string_val[2]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser_log")
    fit_log(path)
    return path


@contextlib.contextmanager
def running_tensorboard(
    log_dir: Path, workdir: Path, ready: Callable[[str], bool], extra_args: Sequence[str] = ()
) -> Iterator[str]:
    """A real `tensorboard` process on 127.0.0.1, port chosen by itself, until ``ready(url)``."""
    stderr_path = workdir / "stderr.txt"
    command = [
        str(Path(sys.executable).with_name("tensorboard")),
        "--logdir", str(log_dir),
        "--host", "127.0.0.1",
        "--port", "0",
        *extra_args,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        yield wait_until_serving(process, stderr_path, log_dir, ready)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serves_steps(steps: list[int], layer: str) -> Callable[[str], bool]:
    """``ready(url)``: the plugin lists exactly ``steps`` for ``layer``, probe 0."""

    def ready(url: str) -> bool:
        query = f"run=activations&layer={layer}&probe=0"
        try:
            with urllib.request.urlopen(f"{url}data/plugin/actlog/steps?{query}") as response:
                return json.loads(response.read())["steps"] == steps
        except urllib.error.HTTPError:
            return False  # 400 until the data server has read the manifest

    return ready


@pytest.fixture(scope="module")
def tensorboard_url(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("tensorboard")
    with running_tensorboard(log_dir, workdir, serves_steps(STEPS, "conv_1")) as url:
        yield url


def wait_until_serving(
    process: subprocess.Popen, stderr_path: Path, log_dir: Path, ready: Callable[[str], bool]
) -> str:
    """Wait for the URL line, then until ``ready(url)``."""
    deadline = time.monotonic() + 180
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tensorboard exited:\n{stderr_path.read_text()[-3000:]}")
        if url is None:
            match = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)", stderr_path.read_text())
            url = match.group(1) if match else None
        if url is not None and ready(url):
            return url
        time.sleep(0.5)
    raise TimeoutError(f"tensorboard did not serve {log_dir} in time:\n{stderr_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager is never asked to download one.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_TRAP})
    try:
        yield browser
    finally:
        browser.quit()


def open_dashboard(driver: Any, url: str, first_step: int, last_step: int) -> Any:
    """TensorBoard at ``url`` on the Activations tab, switched into the plugin's iframe,
    once the grids of ``last_step`` (current) and ``first_step`` (compared) are shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.switch_to.default_content()
    driver.get("about:blank")  # same URL again would only move to the #fragment
    driver.get(f"{url}#actlog")
    frame = WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='name=actlog']")
    )[0]
    driver.switch_to.frame(frame)
    shows = "document.getElementById(arguments[0])?.dataset.step === String(arguments[1])"
    wait_for(driver, shows, "actlog-grid-b", last_step)
    wait_for(driver, shows, "actlog-grid-a", first_step)
    return driver


@pytest.fixture
def page(driver: Any, tensorboard_url: str) -> Any:
    """TensorBoard opened on the Activations tab, switched into the plugin's iframe."""
    return open_dashboard(driver, tensorboard_url, STEPS[0], STEPS[-1])


def wait_for(driver: Any, condition: str, *args: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {condition};", *args))


def displayed_pixels(driver: Any, element: Any) -> np.ndarray:
    width, height, data = driver.execute_script(READ_PIXELS, element)
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def screenshot(driver: Any, name: str) -> None:
    directory = Path(os.environ.get("ACTLOG_SCREENSHOT_DIR", ROOT / "docs" / "images"))
    directory.mkdir(parents=True, exist_ok=True)
    driver.switch_to.default_content()
    driver.save_screenshot(str(directory / name))


def no_script_ran(driver: Any) -> None:
    """No alert in any frame, and no element was made out of the layer's name."""
    for frame_check in ("frame", "top"):
        if frame_check == "top":
            driver.switch_to.default_content()
        assert driver.execute_script("return window.__actlogAlerts") == []
        assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0


def tile_center_offset(driver: Any, image: Any, layer: dict, tile: int) -> tuple[int, int]:
    """Offset from the element's centre (Selenium's origin) to a tile's centre."""
    grid = layer["grid"]
    row, col = divmod(tile, grid["cols"])
    x = grid["pad"] + col * (grid["tile_width"] + grid["pad"]) + grid["tile_width"] / 2
    y = grid["pad"] + row * (grid["tile_height"] + grid["pad"]) + grid["tile_height"] / 2
    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];",
        image,
    )
    scale_x, scale_y = rect[0] / rect[2], rect[1] / rect[3]
    return round(x * scale_x - rect[0] / 2), round(y * scale_y - rect[1] / 2)


def test_tab_loads_and_layer_names_are_text(page: Any) -> None:
    from selenium.webdriver.common.by import By

    layers = [o.text for o in page.find_elements(By.CSS_SELECTOR, "#actlog-layer option")]
    assert layers == [XSS, "conv_1"]
    assert page.find_element(By.ID, "actlog-layer").get_attribute("value") == "0"
    assert page.execute_script("return document.getElementById('actlog-probe-image').naturalWidth") > 0
    assert page.find_element(By.ID, "actlog-error").is_displayed() is False
    no_script_ran(page)
    tabs = page.execute_script("return document.body.textContent")
    assert "Activations" in tabs  # the tab's name in TensorBoard's header
    screenshot(page, "dashboard.png")


def test_slider_moves_the_step_and_pixels_match_the_log(page: Any, log_dir: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    slider = page.find_element(By.ID, "actlog-step-slider")
    assert slider.get_attribute("max") == str(len(STEPS) - 1)
    grid_a = page.find_element(By.ID, "actlog-grid-a")
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    for step in (STEPS[-1], STEPS[0]):
        # The layer on screen is the first one: the one named like an <img> tag.
        expected = logged_grid(log_dir, XSS, 0, step)
        image = grid_b if step == STEPS[-1] else grid_a
        np.testing.assert_array_equal(displayed_pixels(page, image), expected)

    slider.send_keys(Keys.HOME)
    wait_for(page, "document.getElementById('actlog-grid-b').dataset.step === '0'")
    assert page.find_element(By.ID, "actlog-step-label").text.startswith("epoch 0 ")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_for(page, "document.getElementById('actlog-grid-b').dataset.step === '2'")
    np.testing.assert_array_equal(displayed_pixels(page, grid_b), logged_grid(log_dir, XSS, 0, 2))

    # Left/right keys on the page step through time too.
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    wait_for(page, "document.getElementById('actlog-grid-b').dataset.step === '1'")
    assert slider.get_attribute("value") == "1"

    # Another probe and layer keep the steps in view; then another step on the left.
    page.find_element(By.CSS_SELECTOR, "#actlog-probe option[value='1']").click()
    page.find_element(By.CSS_SELECTOR, "#actlog-layer option[value='1']").click()
    shows = (
        "(id, step) => {const i = document.getElementById(id);"
        "return i.dataset.layer === 'conv_1' && i.dataset.probe === '1' && i.dataset.step === step;}"
    )
    wait_for(page, f"({shows})('actlog-grid-b', '1') && ({shows})('actlog-grid-a', '0')")
    np.testing.assert_array_equal(displayed_pixels(page, grid_b), logged_grid(log_dir, "conv_1", 1, 1))
    page.find_element(By.CSS_SELECTOR, "#actlog-compare-step option[value='3']").click()
    wait_for(page, f"({shows})('actlog-grid-a', '3')")
    np.testing.assert_array_equal(displayed_pixels(page, grid_a), logged_grid(log_dir, "conv_1", 1, 3))


def test_tile_click_follows_one_channel_through_every_step(page: Any, log_dir: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    run = json.loads(page.execute_script("return JSON.stringify(window.actlogDashboard.state.run)"))
    layer = run["layers"][0]
    tile = 1
    channel = layer["channels"][tile]
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    dx, dy = tile_center_offset(page, grid_b, layer, tile)
    ActionChains(page).move_to_element_with_offset(grid_b, dx, dy).perform()
    hover = page.find_element(By.ID, "actlog-hover")
    assert hover.is_displayed()
    assert hover.text == f"{XSS} \u00b7 channel {channel} \u00b7 epoch {STEPS[-1]}"

    ActionChains(page).move_to_element_with_offset(grid_b, dx, dy).click().perform()
    view = page.find_element(By.ID, "actlog-channel-view")
    assert view.is_displayed()
    assert view.get_attribute("data-channel") == str(channel)
    assert page.find_element(By.ID, "actlog-channel-title").text == f"{XSS} \u00b7 channel {channel}"

    frames = page.find_elements(By.CSS_SELECTOR, "#actlog-filmstrip figure.frame")
    assert [f.get_attribute("data-step") for f in frames] == [str(s) for s in STEPS]
    wait_for(page, "[...document.querySelectorAll('#actlog-filmstrip figure')].every(f => f.dataset.drawn)")
    grid = layer["grid"]
    y0 = grid["pad"] + (tile // grid["cols"]) * (grid["tile_height"] + grid["pad"])
    x0 = grid["pad"] + (tile % grid["cols"]) * (grid["tile_width"] + grid["pad"])
    for frame, step in zip(frames, STEPS, strict=True):
        canvas = frame.find_element(By.TAG_NAME, "canvas")
        crop = logged_grid(log_dir, XSS, 0, step)[y0 : y0 + grid["tile_height"], x0 : x0 + grid["tile_width"]]
        np.testing.assert_array_equal(displayed_pixels(page, canvas), crop)

    wait_for(page, "document.querySelectorAll('#actlog-stats-plot svg').length === 3")
    charts = page.find_elements(By.CSS_SELECTOR, "#actlog-stats-plot svg")
    assert [c.get_attribute("data-stat") for c in charts] == list(metadata.CHANNEL_STATS)
    points = page.execute_script(
        "return [...document.querySelectorAll('#actlog-stats-plot polyline')]"
        ".map(p => p.getAttribute('points').split(' ').length)"
    )
    assert points == [len(STEPS), len(STEPS), len(STEPS) - 1]  # no drift at the first step

    # A filmstrip frame is a way to move in time.
    frames[2].click()
    wait_for(page, "document.getElementById('actlog-grid-b').dataset.step === '2'")
    no_script_ran(page)
    screenshot(page, "dashboard_channel.png")


# -- Training still running: new steps reach the open page ----------------------------

GRID_FETCHES = """
return performance.getEntriesByType('resource')
    .filter((entry) => new URL(entry.name).pathname.endsWith('/grid'))
    .map((entry) => Number(new URL(entry.name).searchParams.get('step')));
"""


STEPS_POLLS = (
    "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/steps?')).length"
)

# The headless page is always visible: pretend the person switched browser tabs and back.
SET_HIDDEN = """
Object.defineProperty(document, 'hidden', {value: arguments[0], configurable: true});
document.dispatchEvent(new Event('visibilitychange'));
"""


def test_steps_logged_while_the_page_is_open_appear_without_a_reload(driver: Any, tmp_path: Path) -> None:
    """A second `fit` with the same logger: the open page follows to its last step."""
    import keras
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    keras.utils.set_random_seed(0)
    probes = probe_images()
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_0")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    logger = actlog.ActivationLogger(str(tmp_path / "log"), probes, layers=["conv_0"])
    y = np.array([0, 1])
    model.fit(probes, y, epochs=2, batch_size=2, verbose=0, callbacks=[logger])


    # --reload_interval 1: TensorBoard reads new events every second, so the
    # page's own poll (every 5 s) is what the wait below measures.
    extra = ["--reload_interval", "1"]
    with running_tensorboard(tmp_path / "log", tmp_path, serves_steps([0, 1, 2], "conv_0"), extra) as url:
        page = open_dashboard(driver, url, 0, 2)
        slider = page.find_element(By.ID, "actlog-step-slider")
        assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "2")
        assert slider.get_attribute("value") == "2"
        # Follow one channel: its filmstrip and statistics must grow as well.
        run = json.loads(page.execute_script("return JSON.stringify(window.actlogDashboard.state.run)"))
        layer = run["layers"][0]
        grid_b = page.find_element(By.ID, "actlog-grid-b")
        ActionChains(page).move_to_element_with_offset(
            grid_b, *tile_center_offset(page, grid_b, layer, 0)
        ).click().perform()
        wait_for(page, "document.querySelectorAll('#actlog-filmstrip figure[data-drawn]').length === 3")
        # Gone if the frame is reloaded: the page must update in place.
        page.execute_script("window.__actlogSamePage = true;")

        # A hidden page does not poll (longer than one poll interval); shown again, it polls at once.
        page.execute_script(SET_HIDDEN, True)
        time.sleep(1)  # a poll already on its way may still land
        polls = page.execute_script(STEPS_POLLS)
        time.sleep(6)
        assert page.execute_script(STEPS_POLLS) == polls
        page.execute_script(SET_HIDDEN, False)
        wait_for(page, f"({STEPS_POLLS.removeprefix('return ')}) > {polls}", timeout=3)

        model.fit(probes, y, epochs=2, batch_size=2, verbose=0, callbacks=[logger])
        # What the page has to find by itself: the same logger went on at step 3.
        assert actlog.read(tmp_path / "log").run(metadata.EPOCH_RUN).steps == [0, 1, 2, 3, 4]

        wait_for(
            page,
            "document.getElementById('actlog-step-slider').max === '4'"
            " && document.getElementById('actlog-step-slider').value === '4'"
            " && document.getElementById('actlog-grid-b').dataset.step === '4'",
            timeout=60,
        )
        assert page.execute_script("return window.__actlogSamePage") is True
        label = page.find_element(By.ID, "actlog-step-label").get_attribute("textContent")
        assert label == "epoch 4  (5 of 5)"
        grid_b = page.find_element(By.ID, "actlog-grid-b")
        np.testing.assert_array_equal(
            displayed_pixels(page, grid_b), logged_grid(tmp_path / "log", "conv_0", 0, 4)
        )
        # The compared step stays where it was; the new steps are offered there too.
        assert page.find_element(By.ID, "actlog-grid-a").get_attribute("data-step") == "0"
        options = [o.text for o in page.find_elements(By.CSS_SELECTOR, "#actlog-compare-step option")]
        assert options == [f"epoch {s}" for s in range(5)]
        wait_for(page, "document.querySelectorAll('#actlog-filmstrip figure[data-drawn]').length === 5")
        frames = page.find_elements(By.CSS_SELECTOR, "#actlog-filmstrip figure.frame")
        assert [f.get_attribute("data-step") for f in frames] == [str(s) for s in range(5)]
        g = layer["grid"]
        crop = logged_grid(tmp_path / "log", "conv_0", 0, 4)[
            g["pad"] : g["pad"] + g["tile_height"], g["pad"] : g["pad"] + g["tile_width"]
        ]
        np.testing.assert_array_equal(
            displayed_pixels(page, frames[4].find_element(By.TAG_NAME, "canvas")), crop
        )
        mean_points = "document.querySelector('#actlog-stats-plot svg[data-stat=channel_mean] polyline')"
        wait_for(page, f"{mean_points}?.getAttribute('points').split(' ').length === 5")
        # Only the new steps' grids were fetched; none already on the page twice.
        wait_for(page, "window.actlogDashboard.state.loaded === 5")
        assert sorted(page.execute_script(GRID_FETCHES)) == [0, 1, 2, 3, 4]


# -- TensorBoard's own tabs, on the README's main example ------------------------------

LOADED_IMAGES = """
const found = [];
const walk = (root) => root.querySelectorAll('*').forEach((element) => {
  if (element.tagName === 'IMG' && element.complete && element.naturalWidth > 0) found.push(element);
  if (element.shadowRoot) walk(element.shadowRoot);
});
walk(document);
return found;
"""


@pytest.fixture(scope="module")
def example_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/mnist_convnet.py run for real: offline digits, 3 epochs."""
    path = tmp_path_factory.mktemp("mnist_example")
    sys.path.insert(0, str(ROOT / "examples"))
    saved = os.environ.get("ACTLOG_OFFLINE")
    os.environ["ACTLOG_OFFLINE"] = "1"
    try:
        import mnist_convnet

        assert mnist_convnet.main(["--logdir", str(path), "--epochs", "3", "--samples", "1000"]) == 0
    finally:
        sys.path.remove(str(ROOT / "examples"))
        if saved is None:
            os.environ.pop("ACTLOG_OFFLINE")
        else:
            os.environ["ACTLOG_OFFLINE"] = saved
    return path


def loaded_images(driver: Any, widths: set[int], count: int) -> list:
    """Wait until ``count`` loaded <img> (shadow DOM included) have a width in ``widths``."""
    from selenium.webdriver.support.ui import WebDriverWait

    def matching(d: Any) -> list | bool:
        found = [i for i in d.execute_script(LOADED_IMAGES) if i.get_property("naturalWidth") in widths]
        return found if len(found) >= count else False

    return WebDriverWait(driver, 90).until(matching)


def test_tensorboard_tabs_show_the_grids_of_the_mnist_example(
    driver: Any, example_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Time Series and Images tabs paint actlog's grids, pixel for pixel, at every step."""
    run = actlog.read(example_log).run(metadata.EPOCH_RUN)
    assert run.steps == [0, 1, 2, 3]
    expected = {}
    for layer in ("conv_0", "conv_1"):
        gray = run.grid(layer, 0)[..., 0]
        expected[gray.shape[1]] = np.asarray(Image.fromarray(gray).convert("RGBA"))
    assert len(expected) == 2  # 4 x 8 and 8 x 8 grids of different widths

    def every_image_step(url: str) -> bool:
        query = "run=activations&tag=conv_0%2Fprobe_0"
        with urllib.request.urlopen(f"{url}data/plugin/images/images?{query}") as response:
            return [e["step"] for e in json.loads(response.read())] == run.steps

    workdir = tmp_path_factory.mktemp("tensorboard_example")
    with running_tensorboard(example_log, workdir, every_image_step) as url:
        driver.switch_to.default_content()
        driver.get("about:blank")
        driver.get(f"{url}?tagFilter=conv_%5Cd%2Fprobe_0%24#timeseries")
        shown = loaded_images(driver, set(expected), 2)
        for image in shown:  # the cards open at the last step
            pixels = displayed_pixels(driver, image)
            np.testing.assert_array_equal(pixels, expected[pixels.shape[1]])
        screenshot(driver, "tensorboard_time_series.png")

        driver.get("about:blank")
        driver.get(f"{url}#images")
        loaded_images(driver, set(expected), 1)
        screenshot(driver, "tensorboard_images.png")
