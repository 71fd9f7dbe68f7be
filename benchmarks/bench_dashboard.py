"""How responsive the Activations dashboard is on a big log.

Writes a log of ``--epochs`` epochs x ``--layers`` layers x ``--probes`` probes
(default 100 x 20 x 8: 101 steps, 16,160 grid images) through actlog's own
writer (:class:`actlog.summary.RunWriter`, the one the callback uses) with a
manifest from :func:`actlog.metadata.manifest`, then:

1. starts a real ``tensorboard`` process on it and times how long until the
   dashboard's ``/steps`` lists every step of the last layer's last probe;
2. times each backend route over HTTP against that process (median, p95);
3. drives headless Chromium (as the browser tests do) and times, inside the
   page, each step change from the key press to the new grid decoded on screen,
   plus how long a layer switch takes to show its first grid and to preload all
   of its steps.

The grids are smooth 8 x 8 maps per channel upscaled to 32 px tiles, 32
channels per layer (4 x 8 tiles): the shape and PNG size of real grids, not
noise. TensorBoard is started with ``--samples_per_plugin=images=10000,actlog=0``,
what ``ActivationsLoader`` sets by itself.

```
python benchmarks/bench_dashboard.py                      # ~5-10 minutes on 2 cores
python benchmarks/bench_dashboard.py --epochs 20 --layers 4 --probes 2
```
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from actlog import metadata

CHANNELS, ROWS, COLS, MAP, SCALE, PAD = 32, 4, 8, 8, 4, 1
TILE = MAP * SCALE


def write_log(log_dir: Path, epochs: int, layers: int, probes: int) -> float:
    """Write the log through actlog's writer; returns seconds taken."""
    from actlog.summary import RunWriter

    rng = np.random.default_rng(0)
    names = [f"block_{i // 2}/conv_{i % 2}" for i in range(layers)]
    grid = {"rows": ROWS, "cols": COLS, "tile_height": TILE, "tile_width": TILE, "pad": PAD}
    manifest = metadata.manifest(
        actlog_version="bench",
        step_axis=metadata.STEP_AXIS_EPOCH,
        probes=probes,
        layers=[
            {
                "name": name, "path": name, "class": "Conv2D",
                "output_shape": [MAP, MAP, CHANNELS], "data_format": "channels_last",
                "channels": list(range(CHANNELS)), "grid": grid, "norm": "channel",
                "cmap": "gray", "tags": [metadata.grid_tag(name, p, probes) for p in range(probes)],
            }
            for name in names
        ],
    )  # fmt: skip
    maps = rng.random((layers, probes, CHANNELS, MAP, MAP))
    drift = rng.normal(0, 0.03, maps.shape)
    height, width = PAD + ROWS * (TILE + PAD), PAD + COLS * (TILE + PAD)
    writer = RunWriter(str(log_dir / metadata.EPOCH_RUN))
    started = time.perf_counter()
    for step in range(epochs + 1):
        maps = np.clip(maps + drift, 0, 1)
        images, scalars, channel_stats = [], [], []
        if step == 0:
            for p in range(probes):
                probe = (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
                images.append((metadata.probe_image_tag(p, probes), probe))
        for li, name in enumerate(names):
            for p in range(probes):
                canvas = np.zeros((height, width, 1), np.uint8)
                for c in range(CHANNELS):
                    r, k = divmod(c, COLS)
                    y, x = PAD + r * (TILE + PAD), PAD + k * (TILE + PAD)
                    tile = np.kron(maps[li, p, c], np.ones((SCALE, SCALE)))
                    canvas[y : y + TILE, x : x + TILE, 0] = (tile * 255).astype(np.uint8)
                images.append((metadata.grid_tag(name, p, probes), canvas))
            for stat in metadata.SCALAR_STATS:
                if stat != "drift" or step:
                    scalars.append((metadata.stat_tag(name, stat), float(maps[li].mean())))
            for stat in metadata.CHANNEL_STATS:
                if stat != "channel_drift" or step:
                    values = maps[li].mean(axis=(0, 2, 3)).astype(np.float32)
                    channel_stats.append((metadata.stat_tag(name, stat), name, stat, values))
        writer.write(
            step, images=images, scalars=scalars, channel_stats=channel_stats,
            manifest=manifest if step == 0 else None,
        )  # fmt: skip
    writer.close()
    return time.perf_counter() - started


def start_tensorboard(log_dir: Path, stderr_path: Path) -> tuple[subprocess.Popen, str]:
    command = [
        str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(log_dir),
        "--host", "127.0.0.1", "--port", "0", "--samples_per_plugin", "images=10000,actlog=0",
    ]  # fmt: skip
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+/)", stderr_path.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"tensorboard did not start:\n{stderr_path.read_text()[-2000:]}")


def get(url: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    return status, body, time.perf_counter() - started


def wait_loaded(base: str, layer: str, probe: int, steps: int) -> float:
    started = time.perf_counter()
    query = urllib.parse.urlencode({"run": metadata.EPOCH_RUN, "layer": layer, "probe": probe})
    while True:
        status, body, _ = get(f"{base}data/plugin/actlog/steps?{query}")
        if status == 200 and len(json.loads(body)["steps"]) == steps:
            return time.perf_counter() - started
        time.sleep(0.25)


def summary(name: str, seconds: list[float], sizes: list[int] | None = None) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    size = f", {statistics.median(sizes) / 1024:.1f} KiB" if sizes else ""
    return f"  {name:<9} n={len(ms):<4} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms{size}"


def time_routes(base: str, names: list[str], probes: int, steps: int, rng: np.random.Generator) -> None:
    plugin = f"{base}data/plugin/actlog/"
    run = metadata.EPOCH_RUN

    def url(route: str, **params: object) -> str:
        return plugin + route + "?" + urllib.parse.urlencode({"run": run, **params})

    cases = {
        "runs": [plugin + "runs"] * 20,
        "steps": [url("steps", layer=rng.choice(names), probe=rng.integers(probes)) for _ in range(40)],
        "grid": [
            url("grid", layer=rng.choice(names), probe=rng.integers(probes), step=rng.integers(steps))
            for _ in range(200)
        ],
        "probe": [url("probe", probe=rng.integers(probes)) for _ in range(20)],
        "channel": [
            url("channel", layer=rng.choice(names), channel=rng.integers(CHANNELS)) for _ in range(40)
        ],
        "bad": [url("grid", layer="../../etc/passwd", probe=0, step=0)] * 20,
    }
    print("routes over HTTP (sequential requests, one client):")
    for name, urls in cases.items():
        times, sizes = [], []
        for u in urls:
            status, body, seconds = get(u)
            if status != (400 if name == "bad" else 200):
                raise RuntimeError(f"{u} -> {status}: {body[:200]!r}")
            times.append(seconds)
            sizes.append(len(body))
        print(summary(name, times, sizes))


def time_browser(base: str, names: list[str], steps: int, moves: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="actlog-bench-chromium-")
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        started = time.perf_counter()
        driver.get(f"{base}#actlog")
        frame = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='name=actlog']")
        )[0]
        driver.switch_to.frame(frame)
        wait = WebDriverWait(driver, 120, poll_frequency=0.02)
        shown = "return document.getElementById('actlog-grid-b')?.dataset.step"
        wait.until(lambda d: d.execute_script(shown))
        first = time.perf_counter() - started
        state = "window.actlogDashboard.state"
        wait.until(lambda d: d.execute_script(f"return {state}.loaded === {state}.steps.length"))
        preload = time.perf_counter() - started
        print("browser (headless Chromium, times measured in the page unless noted):")
        print(
            f"  page open -> first grid shown: {first:.2f} s; "
            f"all {steps} steps preloaded: {preload:.2f} s (wall)"
        )

        body = driver.find_element(By.TAG_NAME, "body")
        driver.find_element(By.ID, "actlog-step-label").click()  # focus the dashboard, as a user would
        driver.execute_script("window.actlogDashboard.timings.length = 0")
        wall = []
        for i in range(moves):
            expected = str(steps - 2 - i)
            t = time.perf_counter()
            body.send_keys(Keys.ARROW_LEFT)
            wait.until(
                lambda d, e=expected: d.execute_script(
                    "return document.getElementById('actlog-grid-b').dataset.step === arguments[0]", e
                )
            )
            wall.append(time.perf_counter() - t)
        timings = driver.execute_script("return window.actlogDashboard.timings") or []
        print(summary("step key", [t / 1000 for t in timings]) + "   (key -> new grid decoded)")
        print(summary("step", wall) + "   (wall, incl. WebDriver round trips)")

        switch = []
        for name in names[1:4]:
            t = time.perf_counter()
            Select(driver.find_element(By.ID, "actlog-layer")).select_by_visible_text(name)
            wait.until(
                lambda d, n=name: d.execute_script(
                    "return document.getElementById('actlog-grid-b').dataset.layer === arguments[0]", n
                )
            )
            shown = time.perf_counter() - t
            wait.until(lambda d: d.execute_script(f"return {state}.loaded === {state}.steps.length"))
            switch.append((shown, time.perf_counter() - t))
        for shown, loaded in switch:
            print(f"  layer switch: first grid {shown * 1000:.0f} ms, all {steps} steps {loaded:.2f} s")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--moves", type=int, default=60, help="step changes timed in the browser")
    parser.add_argument("--logdir", type=Path, help="reuse/keep a log here (default: a temp dir)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    root = args.logdir or Path(tempfile.mkdtemp(prefix="actlog-bench-"))
    names = [f"block_{i // 2}/conv_{i % 2}" for i in range(args.layers)]
    steps = args.epochs + 1
    if not (root / metadata.EPOCH_RUN).exists():
        seconds = write_log(root, args.epochs, args.layers, args.probes)
        print(f"wrote {steps} steps x {args.layers} layers x {args.probes} probes in {seconds:.1f} s")
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"log: {root} ({size / 2**20:.1f} MiB, {steps * args.layers * args.probes} grid images)")

    process, base = start_tensorboard(root, root.parent / f"{root.name}-tensorboard.txt")
    try:
        loaded = wait_loaded(base, names[-1], args.probes - 1, steps)
        print(f"tensorboard serving; every step of the last grid listed {loaded:.1f} s after startup")
        rng = np.random.default_rng(1)
        time_routes(base, names, args.probes, steps, rng)
        if not args.no_browser:
            time_browser(base, names, steps, min(args.moves, steps - 1))
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
