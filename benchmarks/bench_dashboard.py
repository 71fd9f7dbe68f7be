"""How responsive the Activations dashboard is on a big log.

Writes a log of ``--epochs`` epochs x ``--layers`` layers x ``--probes`` probes
(default 100 x 20 x 8: 101 steps, 16,160 grid images) the way the callback
writes it: tile levels, statistics and one record per step made by
:class:`actlog.event.EventAssembler`, written by :class:`actlog.writer.RunWriter`.
Then:

1. starts a real ``tensorboard`` process on it, with TensorBoard's default
   sampling (the dashboard reads the log itself), and times how long until the
   dashboard's ``/steps`` lists every step of the last layer's last probe;
2. times each backend route over HTTP against that process (median, p95);
3. drives headless Chromium (as the browser tests do) and times how long the
   page takes to show its first grids (the overview of every layer), then,
   in one layer's view, to have all of its steps; each step change from the
   key press to the new grid decoded on screen (measured in the page); and
   how long a layer switch takes to show its first grid and all its steps.

The grids are smooth 8 x 8 maps per channel upscaled to 32 px tiles, 32
channels per layer (4 x 8 tiles): the shape and PNG size of real grids, not
noise.

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
import shutil
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
    """Write the log as the callback would; returns seconds taken."""
    from actlog import grid, stats, storage
    from actlog.arrays import NUMPY
    from actlog.event import EventAssembler, LayerPlan, LayerResult
    from actlog.writer import RunWriter

    rng = np.random.default_rng(0)
    names = [f"block_{i // 2}/conv_{i % 2}" for i in range(layers)]
    layout = grid.GridLayout(
        channels=tuple(range(CHANNELS)), rows=ROWS, cols=COLS, tile_height=TILE, tile_width=TILE,
        pad=PAD, scale=SCALE, stride=1,
    )  # fmt: skip
    plans = [
        LayerPlan(name, name, "Conv2D", (MAP, MAP, CHANNELS), "channels_last", layout, "channel", "gray")
        for name in names
    ]
    probe_images = [
        (rng.random((8, 8, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1) for _ in range(probes)
    ]
    assembler = EventAssembler(
        plans, probes=probes, step_axis=metadata.STEP_AXIS_EPOCH, probe_images=probe_images
    )
    maps = rng.random((layers, probes, MAP, MAP, CHANNELS)).astype(np.float32)
    drift = rng.normal(0, 0.03, maps.shape).astype(np.float32)
    store = storage.for_path(str(log_dir))
    writer = RunWriter(store, store.join(str(log_dir), metadata.EPOCH_RUN))
    started = time.perf_counter()
    previous = None
    for step in range(epochs + 1):
        maps = np.clip(maps + drift, 0, 1)
        results = []
        for li in range(layers):
            levels, _ = grid.levels(NUMPY, maps[li], layout.channels, layout, norm="channel", cmap="gray")
            results.append(LayerResult(
                levels=np.asarray(levels), sums=stats.reduce_layer(NUMPY, maps[li]),
                drift=None if previous is None else stats.drift_sums(NUMPY, maps[li], previous[li]),
                nonfinite=lambda: None,
            ))  # fmt: skip
        body, _ = assembler.layers(range(layers), results)
        header = assembler.header() if step == 0 else None
        writer.write(step, [header, body] if header else [body], header=header)
        previous = maps
    writer.close()
    return time.perf_counter() - started


def start_tensorboard(log_dir: Path, stderr_path: Path) -> tuple[subprocess.Popen, str]:
    command = [
        str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(log_dir),
        "--host", "127.0.0.1", "--port", "0",
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

    # Image keys as the page gets them: from /steps.
    series = {
        (name, probe): json.loads(get(url("steps", layer=name, probe=probe))[1])["steps"]
        for name in names[:4] for probe in range(probes)
    }  # fmt: skip
    keys = [entry["key"] for entries in series.values() for entry in entries]
    cases = {
        "runs": [plugin + "runs"] * 20,
        "overview": [
            url("overview", probe=rng.integers(probes), step=rng.integers(steps)) for _ in range(40)
        ],
        "steps": [url("steps", layer=rng.choice(names), probe=rng.integers(probes)) for _ in range(40)],
        "image": [plugin + "image?" + urllib.parse.urlencode({"key": rng.choice(keys)}) for _ in range(200)],
        "channel": [
            url("channel", layer=rng.choice(names), channel=rng.integers(CHANNELS)) for _ in range(40)
        ],
        "bad": [url("steps", layer="../../etc/passwd", probe=0)] * 20,
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
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1600,1200", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    all_loaded = (
        "const d = window.actlogDashboard;"
        "return d.state.series !== null && d.loaded() === d.state.series.steps.length;"
    )
    try:
        started = time.perf_counter()
        driver.get(f"{base}#actlog")
        frame = WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "iframe[src*='name=actlog']")
        )[0]
        driver.switch_to.frame(frame)
        wait = WebDriverWait(driver, 120, poll_frequency=0.02)
        wait.until(lambda d: d.execute_script("return document.querySelector('.layer-card img[data-step]')"))
        first = time.perf_counter() - started
        count = f"document.querySelectorAll('.layer-card img[data-step]').length === {len(names)}"
        wait.until(lambda d: d.execute_script(f"return {count}"))
        overview = time.perf_counter() - started
        driver.find_element(By.CSS_SELECTOR, ".layer-card").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('actlog-grid-b').dataset.step"))
        wait.until(lambda d: d.execute_script(all_loaded))
        preload = time.perf_counter() - started
        print("browser (headless Chromium, times measured in the page unless noted):")
        print(
            f"  page open -> first grid shown: {first:.2f} s; all {len(names)} layers' grids (overview): "
            f"{overview:.2f} s; one layer opened, all {steps} steps loaded: {preload:.2f} s (wall)"
        )

        body = driver.find_element(By.TAG_NAME, "body")
        driver.find_element(By.ID, "actlog-step-label").click()  # focus the dashboard, as a user would
        driver.execute_script("window.actlogDashboard.timings.clear()")
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
        timings = driver.execute_script("return window.actlogDashboard.timings.values()") or []
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
            wait.until(lambda d: d.execute_script(all_loaded))
            switch.append((shown, time.perf_counter() - t))
        for shown, loaded in switch:
            print(f"  layer switch: first grid {shown * 1000:.0f} ms, all {steps} steps {loaded:.2f} s")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--moves", type=int, default=60, help="step changes timed in the browser")
    parser.add_argument("--logdir", type=Path, help="keep a log here (default: a temp dir, removed)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    if args.logdir is None:
        with tempfile.TemporaryDirectory(prefix="actlog-bench-") as temporary:
            _bench(args, Path(temporary) / "log")
    else:
        _bench(args, args.logdir)


def _bench(args: argparse.Namespace, root: Path) -> None:
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
