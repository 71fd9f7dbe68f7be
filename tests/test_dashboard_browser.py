"""The Activations dashboard end to end: real ``fit`` calls, a real ``tensorboard``
process on 127.0.0.1 and Debian's Chromium, headless, driven by Selenium.

What a person would check by eye is checked here by reading the page: the tab
opens on an overview of every layer, a card opens its layer, the slider moves
through every step (more than TensorBoard's sample of 10), a tile click opens
the channel view with the channel's top-k crops from the feature atlas of the
step at or before the slider's, the pixels on screen are the pixels in the log, a layer named
like an HTML tag is shown as that text with no script run, steps logged while
the page is open appear without a reload (with the new tile geometry of a
wider model), failures show on the status line, and TensorBoard still samples
other logs as it does without actlog.

Screenshots go to a temporary directory. Those of the MNIST example (the
README's) go to ``$ACTLOG_SCREENSHOT_DIR`` when it is set:
``python docs/screenshots.py`` refreshes ``docs/images/`` that way. The layer
with the hostile name is photographed only into the temporary directory.
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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import XSS, fit_log
from PIL import Image

import actlog
from actlog import metadata

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EPOCHS = 11  # 12 steps: more than the 10 images per tag TensorBoard keeps
STEPS = list(range(EPOCHS + 1))
OTHER_STEPS = 20  # image steps of a run that is not actlog's
ATLAS_K = 3
ATLAS_STEPS = [0, 5, 10, 11]  # atlas_freq 5, and the last epoch
SCREEN = (1600, 1200)
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


def conv_model(first: int, second: int | None = None) -> Any:
    import keras

    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(first, 3, padding="same", activation="relu", name="conv_0")(inputs)
    if second:
        h = keras.layers.Conv2D(second, 3, padding="same", activation="relu", name="conv_1")(h)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    return model


def write_log(log_dir: Path) -> None:
    """The hostile-named log (with a feature atlas of the training inputs, every 5 epochs),
    and beside it a run of plain image summaries."""
    import tensorflow as tf

    probes = probe_images()
    x = np.concatenate([probes, np.random.default_rng(0).random((2, 16, 16, 3))]).astype("float32")
    y = np.array([0, 1, 0, 1])
    fit_log(log_dir, lambda: conv_model(8, 6), x, y, probes, EPOCHS, cmap="viridis",
            atlas=actlog.Atlas(x, k=ATLAS_K))
    with tf.summary.create_file_writer(str(log_dir / "other")).as_default():
        for step in range(OTHER_STEPS):
            tf.summary.image("noise", np.full((1, 4, 4, 1), step / OTHER_STEPS, "float32"), step=step)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser_log")
    write_log(path)
    return path


def logged_grid(log_dir: Path, layer: str, probe: int, step: int) -> np.ndarray:
    """The grid as TensorBoard's EventAccumulator reads it (every event), as RGBA uint8."""
    from tensorboard.backend.event_processing import event_accumulator

    # The whole run directory: every `fit` writes an events file of its own.
    acc = event_accumulator.EventAccumulator(
        str(log_dir / metadata.EPOCH_RUN), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    tag = metadata.grid_tag(layer, probe, 2)
    event = max((e for e in acc.Tensors(tag) if e.step == step), key=lambda e: e.wall_time)
    return np.asarray(Image.open(io.BytesIO(event.tensor_proto.string_val[2])).convert("RGBA"))


# -- tensorboard and chromium ------------------------------------------------------------


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


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def steps_route(url: str, layer: str, probe: int = 0) -> dict:
    query = urllib.parse.urlencode({"run": metadata.EPOCH_RUN, "layer": layer, "probe": probe})
    return fetch_json(f"{url}data/plugin/actlog/steps?{query}")


def tensorboard_images(url: str, run: str, tag: str) -> list[int]:
    """Steps TensorBoard's own Images tab is served for ``tag``."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return [entry["step"] for entry in fetch_json(f"{url}data/plugin/images/images?{query}")]


def serves_steps(steps: list[int], layer: str) -> Callable[[str], bool]:
    """``ready(url)``: the plugin lists exactly ``steps`` for ``layer``, probe 0."""

    def ready(url: str) -> bool:
        try:
            return [s["step"] for s in steps_route(url, layer)["steps"]] == steps
        except urllib.error.HTTPError:
            return False  # 400 until the log has the layer

    return ready


@pytest.fixture(scope="module")
def tensorboard_url(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    def ready(url: str) -> bool:
        # Ours at once; TensorBoard's own loading of the other run as well.
        if not serves_steps(STEPS, "conv_1")(url):
            return False
        try:
            return len(tensorboard_images(url, "other", "noise")) > 0
        except urllib.error.HTTPError:
            return False

    workdir = tmp_path_factory.mktemp("tensorboard")
    with running_tensorboard(log_dir, workdir, ready) as url:
        yield url


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
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={SCREEN[0]},{SCREEN[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager is never asked to download one.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    # The page itself gets 1600 x 1200 CSS pixels (the window has a frame around it).
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": SCREEN[0], "height": SCREEN[1], "deviceScaleFactor": 1, "mobile": False},
    )
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_TRAP})
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the README's screenshots go: ``$ACTLOG_SCREENSHOT_DIR``, else a temporary directory."""
    chosen = os.environ.get("ACTLOG_SCREENSHOT_DIR")
    if not chosen:
        return tmp_path_factory.mktemp("screenshots")
    Path(chosen).mkdir(parents=True, exist_ok=True)
    return Path(chosen)


def save_screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path)), f"could not write {path}"


def screenshot(driver: Any, directory: Path, name: str) -> None:
    """The whole tab, TensorBoard's header included; then back into the dashboard."""
    driver.switch_to.default_content()
    save_screenshot(driver, directory / name)
    enter_dashboard(driver)


# -- the page ------------------------------------------------------------------------------


def enter_dashboard(driver: Any) -> Any:
    """Switch into the plugin's iframe (waiting for it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.switch_to.default_content()
    frame = WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='name=actlog']")
    )[0]
    driver.switch_to.frame(frame)
    return driver


def open_dashboard(driver: Any, url: str, layers: int) -> Any:
    """TensorBoard at ``url`` on the Activations tab, inside its iframe, once the
    overview shows the grids of ``layers`` layers."""
    driver.switch_to.default_content()
    driver.get("about:blank")  # same URL again would only move to the #fragment
    driver.get(f"{url}#actlog")
    enter_dashboard(driver)
    shown = "document.querySelectorAll('.layer-card img[data-step]').length === arguments[0]"
    wait_for(driver, shown, layers)
    return driver


def open_layer(driver: Any, name: str, current: int, compared: int) -> None:
    """Click the overview card of ``name``; wait for its grids at the two steps."""
    from selenium.webdriver.common.by import By

    (card,) = [c for c in driver.find_elements(By.CSS_SELECTOR, ".layer-card")
               if c.get_attribute("data-layer") == name]
    card.click()
    wait_shows(driver, "actlog-grid-b", name, current)
    wait_shows(driver, "actlog-grid-a", name, compared)


def wait_for(driver: Any, condition: str, *args: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {condition};", *args))


def wait_shows(driver: Any, image_id: str, layer: str, step: int, probe: int = 0) -> None:
    wait_for(
        driver,
        "(i => i && i.dataset.layer === arguments[1] && i.dataset.step === arguments[2]"
        " && i.dataset.probe === arguments[3])(document.getElementById(arguments[0]))",
        image_id, layer, str(step), str(probe),
    )  # fmt: skip


@pytest.fixture
def page(driver: Any, tensorboard_url: str) -> Any:
    """TensorBoard opened on the Activations tab, inside the plugin's iframe, overview shown."""
    return open_dashboard(driver, tensorboard_url, 2)


def decoded_pixels(driver: Any, element: Any) -> np.ndarray:
    """RGBA pixels of an <img> (its natural size) or a <canvas>, read in the page."""
    width, height, data = driver.execute_script(READ_PIXELS, element)
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def screen_pixels(driver: Any, image: Any) -> np.ndarray:
    """What the screen shows of an <img>, one sample at the centre of each of its pixels, RGB."""
    geometry = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "const f = window.frameElement.getBoundingClientRect();"
        "return [r.left + f.left, r.top + f.top, r.width, r.height,"
        " arguments[0].naturalWidth, arguments[0].naturalHeight];",
        image,
    )
    left, top, width, height, natural_w, natural_h = geometry
    assert width >= natural_w and height >= natural_h  # upscaled: every pixel has a centre on screen
    shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    xs = np.floor(left + (np.arange(natural_w) + 0.5) * width / natural_w).astype(int)
    ys = np.floor(top + (np.arange(natural_h) + 0.5) * height / natural_h).astype(int)
    return shot[ys][:, xs]


def no_script_ran(driver: Any) -> None:
    """No alert in any frame, and no element was made out of the layer's name."""
    for frame_check in ("frame", "top"):
        if frame_check == "top":
            driver.switch_to.default_content()
        assert driver.execute_script("return window.__actlogAlerts") == []
        assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    enter_dashboard(driver)


def tile_offset(driver: Any, image: Any, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Offset from the element's centre (Selenium's origin) to the centre of a tile's box."""
    y, x, height, width = box
    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];",
        image,
    )
    scale_x, scale_y = rect[0] / rect[2], rect[1] / rect[3]
    return round((x + width / 2) * scale_x - rect[0] / 2), round((y + height / 2) * scale_y - rect[1] / 2)


def status(driver: Any) -> tuple[str, str]:
    return tuple(driver.execute_script(
        "const s = document.getElementById('actlog-status'); return [s.dataset.kind, s.textContent];"
    ))  # fmt: skip


def wait_atlas(driver: Any, step: int, k: int) -> list:
    """Wait until the channel view's atlas panel shows ``k`` crops of the atlas at ``step``;
    their <figure>s."""
    from selenium.webdriver.common.by import By

    wait_for(
        driver,
        "(p => p.dataset.step === arguments[0] && p.querySelectorAll('figure canvas').length"
        " === arguments[1])(document.getElementById('actlog-atlas'))",
        str(step), k,
    )  # fmt: skip
    return driver.find_elements(By.CSS_SELECTOR, "#actlog-atlas figure.atlas-crop")


def check_atlas_crops(driver: Any, figures: list, atlas: Any, channel: int) -> None:
    """The crops on the page are the reader's, pixel for pixel, with their pool indices,
    drawn upscaled by a whole factor."""
    from selenium.webdriver.common.by import By

    expected = atlas.crops(channel)
    row = atlas.row(channel)
    assert len(figures) == atlas.k
    for rank, figure in enumerate(figures):
        canvas = figure.find_element(By.TAG_NAME, "canvas")
        pixels = decoded_pixels(driver, canvas)
        np.testing.assert_array_equal(pixels[..., :3], expected[rank])
        assert (pixels[..., 3] == 255).all()
        width = driver.execute_script("return arguments[0].getBoundingClientRect().width", canvas)
        assert width >= expected.shape[2] and width % expected.shape[2] == 0
        assert figure.get_attribute("data-index") == str(atlas.index[row, rank])
        assert figure.find_element(By.CSS_SELECTOR, ".pool-index").text == f"#{atlas.index[row, rank]}"
        value = float(figure.find_element(By.CSS_SELECTOR, ".value").text)
        assert value == pytest.approx(float(atlas.value[row, rank]), rel=5e-3, abs=1e-3)


# -- what a person sees ------------------------------------------------------------------


def test_tab_opens_on_an_overview_of_every_layer(page: Any, log_dir: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    cards = page.find_elements(By.CSS_SELECTOR, ".layer-card")
    assert [c.find_element(By.TAG_NAME, "h3").text for c in cards] == [XSS, "conv_1"]
    assert [c.get_attribute("data-layer") for c in cards] == [XSS, "conv_1"]
    run = actlog.read(log_dir).run()
    for card, layer in zip(cards, (XSS, "conv_1"), strict=True):
        image = card.find_element(By.CSS_SELECTOR, "img.grid")
        assert image.get_attribute("data-step") == str(STEPS[-1])
        np.testing.assert_array_equal(decoded_pixels(page, image), logged_grid(log_dir, layer, 0, STEPS[-1]))
        drift, dead = card.find_elements(By.CSS_SELECTOR, ".spark")
        assert drift.get_attribute("data-stat") == "drift"
        assert drift.find_element(By.CSS_SELECTOR, "svg path").get_attribute("d").count("L") == EPOCHS - 1
        channels = run.layer_info(layer)["output_shape"][-1]
        dead_now = round(run.scalar(layer, "dead_fraction")[1][-1] * channels)
        assert dead.find_element(By.CSS_SELECTOR, ".spark-value").text == f"{dead_now} / {channels}"
    slider = page.find_element(By.ID, "actlog-step-slider")
    assert (slider.get_attribute("max"), slider.get_attribute("value")) == (str(EPOCHS), str(EPOCHS))
    assert page.find_element(By.ID, "actlog-step-label").text == f"epoch {EPOCHS}  (12 of 12)"
    assert page.find_element(By.ID, "actlog-message").is_displayed() is False
    wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'live'")
    # Another step for every layer at once.
    slider.send_keys("\ue011")  # Home
    wait_for(page, "[...document.querySelectorAll('.layer-card img')].every(i => i.dataset.step === '0')")
    image = cards[1].find_element(By.CSS_SELECTOR, "img.grid")
    np.testing.assert_array_equal(decoded_pixels(page, image), logged_grid(log_dir, "conv_1", 0, 0))
    no_script_ran(page)
    screenshot(page, tmp_path, "hostile_overview.png")


def test_slider_moves_through_every_step_and_the_screen_shows_the_logged_pixels(
    page: Any, log_dir: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_layer(page, XSS, STEPS[-1], STEPS[0])
    assert page.find_element(By.ID, "actlog-view-layer").get_attribute("aria-pressed") == "true"
    assert page.find_element(By.ID, "actlog-layer").get_attribute("value") == "0"
    slider = page.find_element(By.ID, "actlog-step-slider")
    assert slider.get_attribute("max") == str(len(STEPS) - 1)  # every step: 12, not TensorBoard's 10
    grid_a = page.find_element(By.ID, "actlog-grid-a")
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    for image, step in ((grid_b, STEPS[-1]), (grid_a, STEPS[0])):
        expected = logged_grid(log_dir, XSS, 0, step)
        np.testing.assert_array_equal(decoded_pixels(page, image), expected)
        np.testing.assert_array_equal(screen_pixels(page, image), expected[..., :3])
    # Two steps side by side, both upscaled, within the 1600 px page.
    rects = page.execute_script(
        "return [...arguments].map(i => i.getBoundingClientRect()).map(r => [r.left, r.right, r.width]);",
        grid_a, grid_b,
    )
    natural = int(grid_b.get_attribute("naturalWidth"))
    assert rects[0][1] <= rects[1][0] and rects[1][1] <= SCREEN[0]
    assert all(width >= 2 * natural for _, _, width in rects)

    slider.send_keys(Keys.HOME)
    wait_shows(page, "actlog-grid-b", XSS, 0)
    assert page.find_element(By.ID, "actlog-step-label").text.startswith("epoch 0 ")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    wait_shows(page, "actlog-grid-b", XSS, 2)
    np.testing.assert_array_equal(decoded_pixels(page, grid_b), logged_grid(log_dir, XSS, 0, 2))
    # Left/right keys on the page step through time too.
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    wait_shows(page, "actlog-grid-b", XSS, 1)
    assert slider.get_attribute("value") == "1"
    # Every step is reachable, the eleventh and twelfth included.
    slider.send_keys(Keys.END)
    wait_shows(page, "actlog-grid-b", XSS, 11)
    slider.send_keys(Keys.ARROW_LEFT)
    wait_shows(page, "actlog-grid-b", XSS, 10)
    np.testing.assert_array_equal(decoded_pixels(page, grid_b), logged_grid(log_dir, XSS, 0, 10))
    # The tooltip of a tile under a still pointer follows the keys to the new step.
    box = actlog.read(log_dir).run().layout(XSS, 10).channel_box(2)
    ActionChains(page).move_to_element_with_offset(grid_b, *tile_offset(page, grid_b, box)).perform()
    hover = page.find_element(By.ID, "actlog-hover")
    assert hover.text == f"{XSS} \u00b7 channel 2 \u00b7 epoch 10"
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    wait_shows(page, "actlog-grid-b", XSS, 9)
    assert hover.text == f"{XSS} \u00b7 channel 2 \u00b7 epoch 9"
    slider.send_keys(Keys.ARROW_RIGHT)
    wait_shows(page, "actlog-grid-b", XSS, 10)

    # Another probe and layer keep the step in view; then another step on the left.
    page.find_element(By.CSS_SELECTOR, "#actlog-probe option[value='1']").click()
    wait_shows(page, "actlog-grid-b", XSS, 10, probe=1)
    page.find_element(By.CSS_SELECTOR, "#actlog-layer option[value='1']").click()
    wait_shows(page, "actlog-grid-b", "conv_1", 10, probe=1)
    wait_shows(page, "actlog-grid-a", "conv_1", 0, probe=1)
    np.testing.assert_array_equal(decoded_pixels(page, grid_b), logged_grid(log_dir, "conv_1", 1, 10))
    page.find_element(By.CSS_SELECTOR, "#actlog-compare-step option[value='3']").click()
    wait_shows(page, "actlog-grid-a", "conv_1", 3, probe=1)
    np.testing.assert_array_equal(screen_pixels(page, grid_a), logged_grid(log_dir, "conv_1", 1, 3)[..., :3])
    no_script_ran(page)


def test_tile_click_follows_one_channel_through_every_step(page: Any, log_dir: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_layer(page, XSS, STEPS[-1], STEPS[0])
    layout = actlog.read(log_dir).run().layout(XSS, STEPS[-1])  # the geometry's one owner
    tile = 1
    channel = layout.channels[tile]
    box = layout.tile_box(tile)
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    ActionChains(page).move_to_element_with_offset(grid_b, *tile_offset(page, grid_b, box)).perform()
    hover = page.find_element(By.ID, "actlog-hover")
    assert hover.is_displayed()
    assert hover.text == f"{XSS} \u00b7 channel {channel} \u00b7 epoch {STEPS[-1]}"

    ActionChains(page).move_to_element_with_offset(grid_b, *tile_offset(page, grid_b, box)).click().perform()
    view = page.find_element(By.ID, "actlog-channel-view")
    assert view.is_displayed()
    assert view.get_attribute("data-channel") == str(channel)
    assert page.find_element(By.ID, "actlog-channel-title").text == f"{XSS} \u00b7 channel {channel}"

    frames = page.find_elements(By.CSS_SELECTOR, "#actlog-filmstrip figure.frame")
    assert [f.get_attribute("data-step") for f in frames] == [str(s) for s in STEPS]
    wait_for(page, "[...document.querySelectorAll('#actlog-filmstrip figure')].every(f => f.dataset.drawn)")
    y, x, height, width = box
    for frame, step in zip(frames, STEPS, strict=True):
        canvas = frame.find_element(By.TAG_NAME, "canvas")
        crop = logged_grid(log_dir, XSS, 0, step)[y : y + height, x : x + width]
        np.testing.assert_array_equal(decoded_pixels(page, canvas), crop)

    wait_for(page, "document.querySelectorAll('#actlog-stats-plot svg').length === 3")
    charts = page.find_elements(By.CSS_SELECTOR, "#actlog-stats-plot svg")
    assert [c.get_attribute("data-stat") for c in charts] == list(metadata.CHANNEL_STATS)
    for chart in charts:
        labels = [t.text for t in chart.find_elements(By.CSS_SELECTOR, "text.axis")]
        assert {"0", "10"} <= set(labels)  # step ticks
        assert len(labels) >= 5  # and value ticks
        assert chart.find_element(By.CSS_SELECTOR, "text.axis-title").text == "epoch"
    # Hovering a chart reads the value at the nearest step.
    hit = charts[0].find_element(By.CSS_SELECTOR, "rect.hit")
    ActionChains(page).move_to_element(hit).perform()
    readout = charts[0].find_element(By.CSS_SELECTOR, "text.readout").text
    match = re.fullmatch(r"epoch (\d+): (\S+)", readout)
    assert match, readout
    steps, means = actlog.read(log_dir).run().channel_stat(XSS, "channel_mean", channel)
    expected = float(means[steps.tolist().index(int(match.group(1)))])
    assert float(match.group(2)) == pytest.approx(expected, rel=1e-2)

    # A filmstrip frame is a way to move in time.
    frames[2].click()
    wait_shows(page, "actlog-grid-b", XSS, 2)
    no_script_ran(page)
    screenshot(page, tmp_path, "hostile_channel.png")


def test_channel_view_shows_its_top_k_of_the_atlas_at_or_before_the_slider(
    page: Any, log_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = actlog.read(log_dir).run()
    assert run.atlas_steps(XSS) == ATLAS_STEPS
    open_layer(page, XSS, STEPS[-1], STEPS[0])
    layout = run.layout(XSS, STEPS[-1])
    channel = layout.channels[2]
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    offset = tile_offset(page, grid_b, layout.channel_box(channel))
    ActionChains(page).move_to_element_with_offset(grid_b, *offset).click().perform()

    panel = page.find_element(By.ID, "actlog-atlas")
    figures = wait_atlas(page, 11, ATLAS_K)
    assert panel.is_displayed()
    check_atlas_crops(page, figures, run.atlas(XSS, 11), channel)
    title = page.find_element(By.ID, "actlog-atlas-title").text
    assert title == f"Top {ATLAS_K} in the atlas pool (4 inputs)"
    assert page.find_element(By.ID, "actlog-atlas-step").text == "atlas at epoch 11"
    last = run.atlas(XSS, 11)
    change = float(last.change[last.row(channel)])
    text = page.find_element(By.ID, "actlog-atlas-change").text
    said = re.search(r"Change since epoch 10: (\S+) \(Jaccard distance of the top-3 sets", text)
    assert said, text
    assert float(said.group(1)) == pytest.approx(change, abs=1e-3)
    # Beside the filmstrip, not below the charts.
    filmstrip = page.find_element(By.ID, "actlog-filmstrip")
    assert panel.rect["x"] >= filmstrip.rect["x"] + filmstrip.rect["width"]
    assert panel.rect["y"] < filmstrip.rect["y"] + filmstrip.rect["height"]

    # An earlier step: the last atlas at or before it.
    slider = page.find_element(By.ID, "actlog-step-slider")
    slider.send_keys(Keys.HOME, *[Keys.ARROW_RIGHT] * 7)
    wait_shows(page, "actlog-grid-b", XSS, 7)
    figures = wait_atlas(page, 5, ATLAS_K)
    check_atlas_crops(page, figures, run.atlas(XSS, 5), channel)
    assert page.find_element(By.ID, "actlog-atlas-step").text == "atlas at epoch 5, the last at or before 7"
    assert "Change since epoch 0: " in page.find_element(By.ID, "actlog-atlas-change").text
    # A filmstrip frame moves time too; the first atlas has nothing before it.
    page.find_element(By.CSS_SELECTOR, "#actlog-filmstrip figure.frame[data-step='4']").click()
    figures = wait_atlas(page, 0, ATLAS_K)
    check_atlas_crops(page, figures, run.atlas(XSS, 0), channel)
    assert "The first atlas of this layer" in page.find_element(By.ID, "actlog-atlas-change").text
    # Another channel of the same layer: its own crops of the same picture.
    other = layout.channels[0]
    offset = tile_offset(page, grid_b, layout.channel_box(other))
    ActionChains(page).move_to_element_with_offset(grid_b, *offset).click().perform()
    view = "document.getElementById('actlog-channel-view')"
    wait_for(page, f"{view}.dataset.channel === arguments[0]", str(other))
    check_atlas_crops(page, wait_atlas(page, 0, ATLAS_K), run.atlas(XSS, 0), other)
    assert page.find_element(By.ID, "actlog-atlas-step").text == "atlas at epoch 0, the last at or before 4"
    no_script_ran(page)
    screenshot(page, tmp_path, "hostile_atlas.png")


def test_a_layer_without_an_atlas_says_so_and_atlas_failures_show(driver: Any, tmp_path: Path) -> None:
    import keras
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    keras.utils.set_random_seed(0)
    probes = probe_images()
    log = tmp_path / "log"
    logger = actlog.ActivationLogger(str(log), probes, layers=["conv_0"])
    conv_model(4).fit(probes, np.array([0, 1]), epochs=1, batch_size=2, verbose=0, callbacks=[logger])
    layout = actlog.read(log).run().layout("conv_0")
    with running_tensorboard(log, tmp_path, serves_steps([0, 1], "conv_0")) as url:
        page = open_dashboard(driver, url, 1)
        open_layer(page, "conv_0", 1, 0)
        grid_b = page.find_element(By.ID, "actlog-grid-b")
        offset = tile_offset(page, grid_b, layout.channel_box(1))
        ActionChains(page).move_to_element_with_offset(grid_b, *offset).click().perform()
        wait_for(page, "document.getElementById('actlog-atlas').classList.contains('empty')")
        note = page.find_element(By.ID, "actlog-atlas-note").text
        assert note == (
            "No feature atlas was logged for layer 'conv_0'; ActivationLogger(atlas=...) was not used."
        )
        assert page.find_elements(By.CSS_SELECTOR, "#actlog-atlas figure") == []
        # One line under the charts, which keep the whole width.
        plot = page.find_element(By.ID, "actlog-stats-plot")
        panel = page.find_element(By.ID, "actlog-atlas")
        assert panel.rect["y"] >= plot.rect["y"] + plot.rect["height"]
        assert panel.rect["height"] < 40
        screenshot(page, tmp_path, "no_atlas.png")

        # /atlas fails: the panel and the status line say so.
        page.execute_script("""
            window.__realFetch = window.fetch;
            window.fetch = (url, options) => String(url).startsWith('atlas?')
                ? Promise.resolve(new Response('{"error": "the atlas broke"}',
                                               {status: 500, headers: {'Content-Type': 'application/json'}}))
                : window.__realFetch(url, options);
        """)
        offset = tile_offset(page, grid_b, layout.channel_box(2))
        ActionChains(page).move_to_element_with_offset(grid_b, *offset).click().perform()
        wait_for(page, "document.getElementById('actlog-atlas').classList.contains('problem')")
        assert page.find_element(By.ID, "actlog-atlas-note").text == "No atlas: the atlas broke"
        wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'error'", timeout=5)
        assert status(page)[1] == "the atlas broke"
        page.execute_script("window.fetch = window.__realFetch;")


def test_failures_are_shown_on_the_status_line(page: Any) -> None:
    """A programming error and a lost connection each say so; polling goes on after both."""
    open_layer(page, "conv_1", STEPS[-1], STEPS[0])
    wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'live'")
    poll_now = (
        "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'));"
    )
    # A /steps answer the page cannot use: its own code fails, and says so.
    page.execute_script("""
        window.__realFetch = window.fetch;
        window.fetch = (url, options) => String(url).startsWith('steps?')
            ? Promise.resolve(new Response('{"version": -1, "steps": null}',
                                           {headers: {'Content-Type': 'application/json'}}))
            : window.__realFetch(url, options);
    """ + poll_now)
    wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'error'", timeout=15)
    kind, text = status(page)
    assert text.startswith("Dashboard error (TypeError)"), text
    # The network goes away: reconnecting, with a try count.
    page.execute_script(
        "window.fetch = () => Promise.reject(new TypeError('Failed to fetch'));" + poll_now
    )
    wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'reconnecting'", timeout=15)
    kind, text = status(page)
    assert "reconnecting in 1 s (attempt 1)" in text, text
    page.execute_script("window.fetch = window.__realFetch;")
    wait_for(page, "document.getElementById('actlog-status').dataset.kind === 'live'", timeout=15)
    # Steps 0 to 11: 11 epochs trained (a count of steps would say 12).
    assert status(page)[1].startswith("Live \u00b7 epochs 0\u201311 \u00b7 checked ")


def test_tensorboard_samples_other_logs_as_without_actlog(tensorboard_url: str) -> None:
    """TensorBoard's own Images tab keeps its default sample of 10, for every run;
    the Activations tab reads every step itself."""
    assert len(tensorboard_images(tensorboard_url, "other", "noise")) == 10  # of 20 logged
    actlog_tag = metadata.grid_tag("conv_1", 0, 2)
    assert len(tensorboard_images(tensorboard_url, metadata.EPOCH_RUN, actlog_tag)) == 10  # of 12
    assert [s["step"] for s in steps_route(tensorboard_url, "conv_1")["steps"]] == STEPS


# -- training still running: new steps reach the open page ---------------------------------

IMAGE_FETCHES = """
return performance.getEntriesByType('resource')
    .filter((entry) => new URL(entry.name).pathname.endsWith('/image'))
    .map((entry) => new URL(entry.name).searchParams.get('key'));
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
    """A second `fit` with the same logger on a wider model: the open page follows
    to its last step, drawn and hit-tested with the new tile geometry, and to its
    last atlas."""
    import keras
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    keras.utils.set_random_seed(0)
    probes = probe_images()
    y = np.array([0, 1])
    log = tmp_path / "log"
    logger = actlog.ActivationLogger(str(log), probes, layers=["conv_0"], atlas=actlog.Atlas(probes, k=2))
    conv_model(4).fit(probes, y, epochs=2, batch_size=2, verbose=0, callbacks=[logger])

    # --reload_interval 1: TensorBoard's own loading is quick too; the page's poll
    # (every 5 s) and the plugin's look at the log (every 2 s) are what is measured.
    extra = ["--reload_interval", "1"]
    with running_tensorboard(log, tmp_path, serves_steps([0, 1, 2], "conv_0"), extra) as url:
        page = open_dashboard(driver, url, 1)
        open_layer(page, "conv_0", 2, 0)
        slider = page.find_element(By.ID, "actlog-step-slider")
        assert (slider.get_attribute("min"), slider.get_attribute("max"), slider.get_attribute("value")) == (
            "0", "2", "2",
        )
        # Follow one channel: its filmstrip and statistics must grow as well.
        old = actlog.read(log).run().layout("conv_0", 2)
        grid_b = page.find_element(By.ID, "actlog-grid-b")
        offset = tile_offset(page, grid_b, old.tile_box(0))
        ActionChains(page).move_to_element_with_offset(grid_b, *offset).click().perform()
        wait_for(page, "document.querySelectorAll('#actlog-filmstrip figure[data-drawn]').length === 3")
        assert actlog.read(log).run().atlas_steps("conv_0") == [0, 2]
        wait_atlas(page, 2, 2)
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

        conv_model(6).fit(probes, y, epochs=2, batch_size=2, verbose=0, callbacks=[logger])
        # What the page has to find by itself: the same logger went on at step 3, 6 channels wide.
        run = actlog.read(log).run(metadata.EPOCH_RUN)
        assert run.steps == [0, 1, 2, 3, 4]
        new = run.layout("conv_0", 4)
        assert len(new.channels) == 6 and new != old

        wait_shows(page, "actlog-grid-b", "conv_0", 4, probe=0)
        assert page.execute_script("return window.__actlogSamePage") is True
        assert (slider.get_attribute("max"), slider.get_attribute("value")) == ("4", "4")
        label = page.find_element(By.ID, "actlog-step-label").get_attribute("textContent")
        assert label == "epoch 4  (5 of 5)"
        np.testing.assert_array_equal(decoded_pixels(page, grid_b), logged_grid(log, "conv_0", 0, 4))
        # Tiles of the new layout, from the backend's boxes: channel 5 exists only there.
        offset = tile_offset(page, grid_b, new.channel_box(5))
        ActionChains(page).move_to_element_with_offset(grid_b, *offset).perform()
        assert page.find_element(By.ID, "actlog-hover").text == "conv_0 \u00b7 channel 5 \u00b7 epoch 4"
        # The compared step stays where it was, in its own geometry; new steps are offered there too.
        grid_a = page.find_element(By.ID, "actlog-grid-a")
        assert grid_a.get_attribute("data-step") == "0"
        assert int(grid_a.get_attribute("naturalWidth")) == old.width
        options = [o.text for o in page.find_elements(By.CSS_SELECTOR, "#actlog-compare-step option")]
        assert options == [f"epoch {s}" for s in range(5)]
        # Channel 0 is followed in both geometries: every frame cut with its own step's box.
        wait_for(page, "document.querySelectorAll('#actlog-filmstrip figure[data-drawn]').length === 5")
        frames = page.find_elements(By.CSS_SELECTOR, "#actlog-filmstrip figure.frame")
        assert [f.get_attribute("data-step") for f in frames] == [str(s) for s in range(5)]
        for frame, step in zip(frames, range(5), strict=True):
            y0, x0, height, width = run.layout("conv_0", step).channel_box(0)
            crop = logged_grid(log, "conv_0", 0, step)[y0 : y0 + height, x0 : x0 + width]
            canvas = frame.find_element(By.TAG_NAME, "canvas")
            np.testing.assert_array_equal(decoded_pixels(page, canvas), crop)
        # The atlas panel follows to the new fit's last atlas, cut with its own boxes.
        assert run.atlas_steps("conv_0")[-1] == 4
        check_atlas_crops(page, wait_atlas(page, 4, 2), run.atlas("conv_0", 4), 0)
        mean_path = "document.querySelector('#actlog-stats-plot svg[data-stat=channel_mean] path')"
        wait_for(page, f"{mean_path}?.getAttribute('d').split('L').length === 5")
        # Only the new steps' grids were fetched; none already on the page twice.
        wait_for(page, "window.actlogDashboard.loaded() === 5")
        keys = [s["key"] for s in steps_route(url, "conv_0")["steps"]]
        fetched = page.execute_script(IMAGE_FETCHES)
        assert sorted(k for k in fetched if k in keys) == sorted(keys)


# -- the README's main example -----------------------------------------------------------

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
    """examples/mnist_convnet.py run for real: offline digits, its default 5 epochs."""
    path = tmp_path_factory.mktemp("mnist_example")
    run_mnist_example(path)
    return path


def run_mnist_example(path: Path, *options: str) -> None:
    """examples/mnist_convnet.py into ``path``: offline digits (1000), its defaults, ``options``."""
    sys.path.insert(0, str(ROOT / "examples"))
    saved = os.environ.get("ACTLOG_OFFLINE")
    os.environ["ACTLOG_OFFLINE"] = "1"
    try:
        import mnist_convnet

        assert mnist_convnet.main(["--logdir", str(path), "--samples", "1000", *options]) == 0
    finally:
        sys.path.remove(str(ROOT / "examples"))
        if saved is None:
            os.environ.pop("ACTLOG_OFFLINE")
        else:
            os.environ["ACTLOG_OFFLINE"] = saved


@pytest.fixture(scope="module")
def example_url(example_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    steps = actlog.read(example_log).run(metadata.EPOCH_RUN).steps

    def every_image_step(url: str) -> bool:
        # TensorBoard's own Images tab, and the dashboard, both have every step.
        try:
            return tensorboard_images(url, metadata.EPOCH_RUN, "conv_0/probe_0") == steps and serves_steps(
                steps, "conv_1"
            )(url)
        except urllib.error.HTTPError:
            return False

    workdir = tmp_path_factory.mktemp("tensorboard_example")
    with running_tensorboard(example_log, workdir, every_image_step) as url:
        yield url


def loaded_images(driver: Any, widths: set[int], count: int) -> list:
    """Wait until ``count`` loaded <img> (shadow DOM included) have a width in ``widths``."""
    from selenium.webdriver.support.ui import WebDriverWait

    def matching(d: Any) -> list | bool:
        found = [i for i in d.execute_script(LOADED_IMAGES) if i.get_property("naturalWidth") in widths]
        return found if len(found) >= count else False

    return WebDriverWait(driver, 90).until(matching)


def test_tensorboard_tabs_show_the_grids_of_the_mnist_example(
    driver: Any, example_log: Path, example_url: str, screenshot_dir: Path
) -> None:
    """Time Series and Images tabs paint actlog's grids, pixel for pixel."""
    run = actlog.read(example_log).run(metadata.EPOCH_RUN)
    assert run.steps == [0, 1, 2, 3, 4, 5]
    expected = {}
    for layer in ("conv_0", "conv_1"):
        gray = run.grid(layer, 0)[..., 0]
        expected[gray.shape[1]] = np.asarray(Image.fromarray(gray).convert("RGBA"))
    assert len(expected) == 2  # 4 x 8 and 8 x 8 grids of different widths

    driver.switch_to.default_content()
    driver.get("about:blank")
    driver.get(f"{example_url}?tagFilter=conv_%5Cd%2Fprobe_0%24#timeseries")
    shown = loaded_images(driver, set(expected), 2)
    for image in shown:  # the cards open at the last step
        pixels = decoded_pixels(driver, image)
        np.testing.assert_array_equal(pixels, expected[pixels.shape[1]])
    save_screenshot(driver, screenshot_dir / "tensorboard_time_series.png")

    driver.get("about:blank")
    driver.get(f"{example_url}#images")
    loaded_images(driver, set(expected), 1)
    save_screenshot(driver, screenshot_dir / "tensorboard_images.png")


def test_dashboard_of_the_mnist_example(
    driver: Any, example_log: Path, example_url: str, screenshot_dir: Path
) -> None:
    """The README's pictures of the Activations tab: overview, two steps, one channel
    with its top k in the atlas pool."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    run = actlog.read(example_log).run(metadata.EPOCH_RUN)
    page = open_dashboard(driver, example_url, 2)
    # Each grid fills its card's width with square pixels; the drift sparklines share one scale.
    geometry = page.execute_script(
        "return [...document.querySelectorAll('.layer-card')].map((card) => {"
        " const image = card.querySelector('img.grid'); const box = image.getBoundingClientRect();"
        " return [box.width, box.height, image.naturalWidth, image.naturalHeight,"
        " card.querySelector('.thumb').clientWidth, card.querySelector('.spark').dataset.top]; });"
    )
    for width, height, natural_w, natural_h, available, _ in geometry:
        assert width == available and abs(height - natural_h * width / natural_w) < 1
    (top,) = {float(top) for *_, top in geometry}
    drift = max(max(run.scalar(layer, "drift")[1]) for layer in ("conv_0", "conv_1"))
    assert drift <= top < 2 * drift
    screenshot(page, screenshot_dir, "dashboard_overview.png")

    open_layer(page, "conv_1", 5, 0)
    grid_b = page.find_element(By.ID, "actlog-grid-b")
    np.testing.assert_array_equal(screen_pixels(page, grid_b), run.grid("conv_1", 0, 5).repeat(3, axis=-1))
    screenshot(page, screenshot_dir, "dashboard.png")

    # A channel that visibly forms: its mean activation grew the most since epoch 0, and
    # its atlas (the example's: before training and at the last epoch) shows one pattern.
    _, means = run.channel_stats("conv_1", "channel_mean")
    layout = run.layout("conv_1", 5)
    grown = [int(c) for c in np.argsort(means[0] - means[-1]) if c in layout.channels]
    box = layout.channel_box(grown[0])
    ActionChains(page).move_to_element_with_offset(grid_b, *tile_offset(page, grid_b, box)).click().perform()
    wait_for(page, "[...document.querySelectorAll('#actlog-filmstrip figure')].every(f => f.dataset.drawn)")
    wait_for(page, "document.querySelectorAll('#actlog-stats-plot svg').length === 3")
    assert run.atlas_steps("conv_1") == [0, 5]
    atlas = run.atlas("conv_1", 5)
    check_atlas_crops(page, wait_atlas(page, 5, atlas.k), atlas, grown[0])
    chart = page.find_element(By.CSS_SELECTOR, "#actlog-stats-plot svg[data-stat=channel_mean] rect.hit")
    ActionChains(page).move_to_element(chart).perform()
    screenshot(page, screenshot_dir, "dashboard_channel.png")
    no_script_ran(page)
