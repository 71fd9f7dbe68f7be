"""Two runs compared: the reader's ``actlog.compare``, ``actlog compare``, the dashboard's
``/compare`` route and its compare mode in a real browser.

Both logs come from real ``fit`` calls of the tiny model with different seeds:
run ``a`` logs every epoch (0..3), run ``b`` every other epoch of 4 (0, 2, 4), so
they share steps 0 and 2, and each has steps the other lacks. Both log a
feature atlas every 2 epochs. Expected pixels and statistics come from
``actlog.read`` of each log alone.
"""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageSequence

# The real tensorboard and headless Chromium of the dashboard's browser tests.
from test_dashboard_browser import driver, screenshot_dir  # noqa: F401

import actlog
from actlog import metadata
from actlog.cli import main
from actlog.comparison import GAP, CompareError

LAYERS = ["conv_0", "conv_1"]
STEPS_A = [0, 1, 2, 3]
STEPS_B = [0, 2, 4]
COMMON = [0, 2]


def write_run(path: Path, seed: int, epochs: int, freq: int, probes: int = 2, layers=LAYERS,
              initial_epoch: int = 0) -> None:
    from conftest import make_tiny_data, make_tiny_model

    x, y = make_tiny_data()
    model = make_tiny_model(seed=seed)
    logger = actlog.ActivationLogger(
        str(path), x[:probes].copy(), layers=list(layers), freq=freq, atlas=actlog.Atlas(x, k=3, every=2)
    )
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[logger], initial_epoch=initial_epoch)
    assert logger.misses == {}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``logs/a`` and ``logs/b``: the two runs described above, under one parent."""
    root = tmp_path_factory.mktemp("compare")
    write_run(root / "a", seed=0, epochs=3, freq=1)
    write_run(root / "b", seed=1, epochs=4, freq=2)
    return root


def runs(logs: Path) -> tuple[Any, Any]:
    return actlog.read(logs / "a").run(), actlog.read(logs / "b").run()


# -- the reader ------------------------------------------------------------------------


@pytest.mark.backend
def test_compare_lines_up_the_common_steps_and_frames_both_grids(logs: Path) -> None:
    a, b = runs(logs)
    assert (a.grid_steps("conv_1", 1), b.grid_steps("conv_1", 1)) == (STEPS_A, STEPS_B)
    pair = actlog.compare(logs / "a", logs / "b", "conv_1", probe=1)  # directories: the epoch runs
    assert pair.steps == COMMON
    assert pair.all_steps == [0, 1, 2, 3, 4]
    assert pair.labels == ("a", "b")  # same run names: their log directories name them
    for step in COMMON:
        grid_a, grid_b = pair.grids(step)
        np.testing.assert_array_equal(grid_a, a.grid("conv_1", 1, step))
        np.testing.assert_array_equal(grid_b, b.grid("conv_1", 1, step))
        frame = pair.frame(step)
        width_a, width_b = grid_a.shape[1], grid_b.shape[1]
        assert frame.dtype == np.uint8 and frame.shape[2] == 3
        assert frame.shape[1] == width_a + GAP + width_b
        band = frame.shape[0] - grid_a.shape[0]  # the label strip above each grid
        assert band > 0
        np.testing.assert_array_equal(frame[band:, :width_a], np.repeat(grid_a, 3, axis=2))
        np.testing.assert_array_equal(frame[band:, width_a + GAP :], np.repeat(grid_b, 3, axis=2))
        assert (frame[:, width_a : width_a + GAP] == 255).all()
        assert (frame[:band] < 128).any()  # the names are written
    steps, frames = pair.frames()
    assert steps == COMMON and len(frames) == 2
    np.testing.assert_array_equal(frames[1], pair.frame(2))


@pytest.mark.backend
def test_a_step_one_run_lacks_shows_its_nearest_earlier_step(logs: Path) -> None:
    a, b = runs(logs)
    pair = actlog.compare(a, b, "conv_0")
    shown = {step: tuple(side.step for side in pair.at(step)) for step in pair.all_steps}
    assert shown == {0: (0, 0), 1: (1, 0), 2: (2, 2), 3: (3, 2), 4: (3, 4)}
    grid_a, grid_b = pair.grids(3)
    np.testing.assert_array_equal(grid_a, a.grid("conv_0", 0, 3))
    np.testing.assert_array_equal(grid_b, b.grid("conv_0", 0, 2))
    assert pair.frame(3).shape[1] == grid_a.shape[1] + GAP + grid_b.shape[1]
    with pytest.raises(CompareError, match=r"No step 5 in either run; steps: steps 0, 1, 2, 3, 4"):
        pair.at(5)


@pytest.mark.backend
def test_statistics_and_atlases_are_aligned(logs: Path) -> None:
    a, b = runs(logs)
    pair = actlog.compare(a, b, "conv_1", labels=("small", "big"))
    assert pair.labels == ("small", "big")
    for stat in ("mean", "std", "sparsity"):
        steps, values_a, values_b = pair.scalars(stat)
        assert steps.tolist() == COMMON
        steps_a, all_a = a.scalar("conv_1", stat)
        steps_b, all_b = b.scalar("conv_1", stat)
        assert values_a.tolist() == [all_a[steps_a.tolist().index(s)] for s in COMMON]
        assert values_b.tolist() == [all_b[steps_b.tolist().index(s)] for s in COMMON]
    assert pair.scalars("drift")[0].tolist() == [2]  # drift starts at each run's second step
    assert (a.atlas_steps("conv_1"), b.atlas_steps("conv_1")) == ([0, 2, 3], [0, 2, 4])
    atlas_a, atlas_b = pair.atlas(3)
    assert (atlas_a.step, atlas_b.step) == (3, 2)
    np.testing.assert_array_equal(atlas_a.image, a.atlas("conv_1", 3).image)
    lines = pair.table().splitlines()
    assert lines[0] == f"a: small ({a.path})" and lines[1] == f"b: big ({b.path})"
    assert lines[3].split() == ["step", *[w for s in metadata.SCALAR_STATS for w in (s, "a", s, "b")]]
    rows = {int(line.split()[0]): line.split()[1:] for line in lines[4:]}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    _, means_b = b.scalar("conv_1", "mean")
    assert rows[4][:2] == ["-", f"{means_b[-1]:.4g}"]  # mean a, mean b at a step only b logged


@pytest.mark.backend
def test_compare_errors_name_what_was_received_and_what_exists(logs: Path, tmp_path: Path) -> None:
    a, b = runs(logs)
    both = r"Layers in both runs: \['conv_0', 'conv_1'\]"
    with pytest.raises(CompareError, match=rf"No layer 'conv_9' in run a .*{both}"):
        actlog.compare(a, b, "conv_9")
    with pytest.raises(CompareError, match=r"No probe 2: both runs have 2 probes \(0\.\.1\)"):
        actlog.compare(a, b, "conv_0", probe=2)
    common = r"Steps \[1\] are not logged in both runs; common steps: steps 0, 2"
    with pytest.raises(CompareError, match=common):
        actlog.compare(a, b, "conv_0", steps=[1])
    with pytest.raises(CompareError, match=r"takes actlog.Run objects or log directories; received int"):
        actlog.compare(a, 3, "conv_0")
    assert issubclass(CompareError, ValueError)

    write_run(tmp_path / "one_layer", seed=2, epochs=1, freq=1, layers=["conv_0"])
    only = actlog.read(tmp_path / "one_layer").run()
    with pytest.raises(CompareError, match=r"No layer 'conv_1' in run b .*in both runs: \['conv_0'\]"):
        actlog.compare(a, only, "conv_1")
    write_run(tmp_path / "three_probes", seed=2, epochs=1, freq=1, probes=3)
    with pytest.raises(CompareError, match=r"different probes: a has 2, b has 3"):
        actlog.compare(a, tmp_path / "three_probes", "conv_0")
    write_run(tmp_path / "late", seed=2, epochs=6, freq=1, initial_epoch=4)  # a resumed run
    late = actlog.read(tmp_path / "late").run()
    steps = late.grid_steps("conv_0", 0)
    assert steps[0] > 3
    message = (r"No step at which both runs logged 'conv_0' for probe 0: a has steps 0, 1, 2, 3, "
               rf"b has steps {steps[0]}")
    with pytest.raises(CompareError, match=message):
        actlog.compare(a, late, "conv_0")


# -- the command -------------------------------------------------------------------------


def test_cli_writes_a_side_by_side_gif_of_the_common_steps(logs: Path, tmp_path: Path, capsys) -> None:
    a, b = runs(logs)
    output = tmp_path / "pair.gif"
    status = main(["compare", str(logs / "a"), str(logs / "b"), "--layer", "conv_1", "--probe", "1",
                   "-o", str(output)])
    out = capsys.readouterr().out
    assert status == 0, out
    width = a.grid("conv_1", 1, 0).shape[1] + GAP + b.grid("conv_1", 1, 0).shape[1]
    with Image.open(output) as image:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    assert len(frames) == len(COMMON)
    assert {frame.shape[1] for frame in frames} == {width}
    pair = actlog.compare(a, b, "conv_1", probe=1)
    for frame, step in zip(frames, COMMON, strict=True):
        np.testing.assert_array_equal(frame, pair.frame(step))  # gray levels: exact in a GIF
    size = f"{width}x{frames[0].shape[0]} px"
    assert out == f"wrote {output}: animated GIF, 2 frame(s) (common steps 0..2), {size}\n"


def test_cli_without_output_prints_the_statistics_and_errors_take_one_line(logs: Path, capsys) -> None:
    assert main(["compare", str(logs / "a"), str(logs / "b"), "--layer", "conv_0"]) == 0
    out = capsys.readouterr().out
    pair = actlog.compare(logs / "a", logs / "b", "conv_0")
    assert out == pair.table() + "\n"
    assert main(["compare", str(logs), str(logs / "b"), "--layer", "conv_0"]) == 2
    err = capsys.readouterr().err
    assert err == (f"actlog: error: Several runs under {str(logs)!r} and none is 'activations'; choose one "
                   "with --run-a: ['a/activations', 'b/activations'].\n")
    assert main(["compare", str(logs), str(logs), "--run-a", "a/activations", "--run-b", "b/activations",
                 "--layer", "conv_7"]) == 2
    assert "actlog: error: No layer 'conv_7' in run a" in capsys.readouterr().err
    assert main(["compare", str(logs / "a"), str(logs / "b"), "--layer", "conv_0", "-o", "x.mp4"]) == 2
    assert "Unknown output extension '.mp4'" in capsys.readouterr().err


# -- the dashboard's route -----------------------------------------------------------------


def test_compare_route_aligns_both_runs_step_by_step(logs: Path) -> None:
    from test_plugin_routes import get_json, get_png, make_client

    client = make_client(logs)
    a, b = runs(logs)
    status, body = get_json(client, "compare", run="a/activations", other="b/activations",
                            layer="conv_1", probe=1)
    assert status == 200, body
    assert (body["steps"], body["common"]) == ([0, 1, 2, 3, 4], COMMON)
    side_a, side_b = body["sides"]
    assert (side_a["run"], side_b["run"]) == ("a/activations", "b/activations")
    assert [g["step"] for g in side_a["grids"]] == STEPS_A
    assert [g["step"] for g in side_b["grids"]] == STEPS_B
    assert side_a["at"] == [0, 1, 2, 3, 3] and side_b["at"] == [0, 0, 1, 1, 2]
    for side, run in ((side_a, a), (side_b, b)):
        for entry in side["grids"]:
            expected = run.grid("conv_1", 1, entry["step"])[..., 0]
            np.testing.assert_array_equal(get_png(client, entry["key"]), expected)
        steps, values = run.scalar("conv_1", "std")
        assert side["scalars"]["std"] == {str(s): float(v) for s, v in zip(steps, values, strict=True)}
        assert [e["step"] for e in side["atlas"]] == run.atlas_steps("conv_1")
        np.testing.assert_array_equal(get_png(client, side["atlas"][-1]["key"]),
                                      run.atlas("conv_1").image)


def test_compare_route_with_two_log_directories_given_to_tensorboard(logs: Path) -> None:
    """``tensorboard --logdir_spec small:DIR1,big:DIR2``: each log's epoch run, compared."""
    import argparse

    from test_plugin_routes import get_json, make_client

    flags = argparse.Namespace(logdir="", logdir_spec=f"small:{logs / 'a'},big:{logs / 'b'}")
    client = make_client(None, flags=flags)
    status, body = get_json(client, "compare", run="small/activations", other="big/activations",
                            layer="conv_0", probe=0)
    assert status == 200, body
    assert [side["run"] for side in body["sides"]] == ["small/activations", "big/activations"]
    assert (body["steps"], body["common"]) == ([0, 1, 2, 3, 4], COMMON)
    status, body = get_json(client, "compare", run="small/activations", other="small/activations",
                            layer="conv_0", probe=0)
    assert status == 200 and body["sides"][0]["grids"] == body["sides"][1]["grids"]  # itself: allowed


@pytest.mark.parametrize("params,message", [
    ({"other": "c/activations"}, r"Unknown run 'c/activations'. Runs with actlog data: \['a/activations', "),
    ({"layer": "conv_9"}, r"Layer 'conv_9' is not in run\(s\) \['a/activations', 'b/activations'\]. "
                          r"Layers in both runs: \['conv_0', 'conv_1'\]"),
    ({"probe": "2"}, r"Probe 2 does not exist; both runs have 2 probes"),
    ({"probe": "-1"}, r"Parameter 'probe' must be a non-negative integer"),
    ({"other": None}, r"Expected exactly one 'other' parameter, received 0"),
])
def test_compare_route_refuses_what_cannot_be_compared(logs: Path, params: dict, message: str) -> None:
    import re

    from test_plugin_routes import get_json, make_client

    query = {"run": "a/activations", "other": "b/activations", "layer": "conv_0", "probe": "0", **params}
    status, body = get_json(make_client(logs), "compare", **{k: v for k, v in query.items() if v is not None})
    assert status == 400 and re.search(message, body["error"]), body


# -- the dashboard in a real browser ---------------------------------------------------------


def choose_comparison(page: Any, other: str) -> None:
    """Pick ``other`` in the "Compare with" selector, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(page.find_element(By.ID, "actlog-compare-with")).select_by_visible_text(other)


def shown_steps(page: Any) -> list:
    """Per column: [run, step of its grid, its caption], once both grids are on screen."""
    return page.execute_script(
        "return ['a', 'b'].map((w) => { const i = document.getElementById('actlog-compare-' + w);"
        " return [i.dataset.run, i.dataset.step, document.getElementById('actlog-compare-caption-' + w)"
        ".textContent]; });"
    )


def lists_runs(names: list[str]) -> Any:
    """``ready(url)`` for ``running_tensorboard``: the dashboard lists exactly these runs."""
    from test_dashboard_browser import fetch_json

    def ready(url: str) -> bool:
        try:
            listed = fetch_json(f"{url}data/plugin/actlog/runs")["runs"]
        except urllib.error.URLError:
            return False
        return [r["run"] for r in listed] == names

    return ready


def wait_steps(page: Any, expected: list, layer: str = "conv_0") -> None:
    """Wait until the columns show ``expected`` ``[(run, step), (run, step)]`` of ``layer``,
    drawn for the slider's step (the later of the two: the run that logged it shows it)."""
    from test_dashboard_browser import wait_for

    slider = str(max(step for _, step in expected))
    wait_for(page, "JSON.stringify(arguments[0]) === JSON.stringify(['a', 'b'].map((w) => {"
             " const i = document.getElementById('actlog-compare-' + w); return [i.dataset.run || null,"
             " i.dataset.step || null, i.dataset.layer || null, i.dataset.at || null,"
             " i.complete && i.naturalWidth > 0]; }))",
             [[run, str(step), layer, slider, True] for run, step in expected])


@pytest.mark.browser
def test_dashboard_compares_two_runs_side_by_side_on_one_slider(
    logs: Path, driver: Any, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from test_dashboard_browser import (
        CHROMEDRIVER,
        CHROMIUM,
        decoded_pixels,
        open_dashboard,
        running_tensorboard,
    )

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs Debian's chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER}")
    copy = tmp_path_factory.mktemp("compare_live") / "logs"
    shutil.copytree(logs, copy)  # run b gets more epochs below; the other tests keep theirs
    a, b = runs(copy)

    ready = lists_runs(["a/activations", "b/activations"])
    with running_tensorboard(copy, tmp_path_factory.mktemp("tb_compare"), ready) as url:
        page = open_dashboard(driver, url, 2)
        choose_comparison(page, "b/activations")
        # The last step of either run: b's 4; a shows its last, 3, and says so.
        wait_steps(page, [("a/activations", 3), ("b/activations", 4)])
        captions = [caption for *_, caption in shown_steps(page)]
        assert captions == ["epoch 3 (its last at or before 4)", "epoch 4"]
        left, right = (page.find_element(By.ID, f"actlog-compare-{w}").rect for w in "ab")
        assert left["x"] + left["width"] < right["x"] and abs(left["y"] - right["y"]) < 1  # side by side
        assert left["width"] == right["width"]  # same size grids, same upscaling
        label = page.find_element(By.ID, "actlog-step-label").text
        assert label.startswith("epoch 4") and "(5 of 5)" in label

        page.find_element(By.ID, "actlog-prev").click()  # to 3: b shows its 2
        wait_steps(page, [("a/activations", 3), ("b/activations", 2)])
        page.find_element(By.ID, "actlog-prev").click()  # to 2: both have it
        wait_steps(page, [("a/activations", 2), ("b/activations", 2)])
        assert [caption for *_, caption in shown_steps(page)] == ["epoch 2", "epoch 2"]
        for which, run in (("a", a), ("b", b)):
            image = page.find_element(By.ID, f"actlog-compare-{which}")
            expected = run.grid("conv_0", 0, 2)[..., 0]
            np.testing.assert_array_equal(decoded_pixels(page, image)[..., 0], expected)
            stats = page.find_element(By.CSS_SELECTOR, f"#actlog-compare-stats-{which} dd[data-stat=mean]")
            steps, means = run.scalar("conv_0", "mean")
            assert stats.text == f"{means[steps.tolist().index(2)]:.3g}"  # formatNumber's 3 digits
            wait_atlas_step(page, which, 2)

        # Another layer keeps the comparison; "none" goes back to the one-run layer view.
        from selenium.webdriver.support.ui import Select

        Select(page.find_element(By.ID, "actlog-layer")).select_by_visible_text("conv_1")
        wait_steps(page, [("a/activations", 2), ("b/activations", 2)], "conv_1")
        choose_comparison(page, "none")
        from test_dashboard_browser import wait_shows

        wait_shows(page, "actlog-grid-b", "conv_1", 2)
        assert not page.find_element(By.ID, "actlog-compare-view").is_displayed()

        # Live: on the last step, a step run b logs while the page is open comes without a reload.
        choose_comparison(page, "b/activations")
        wait_steps(page, [("a/activations", 2), ("b/activations", 2)], "conv_1")
        page.find_element(By.ID, "actlog-next").click()
        page.find_element(By.ID, "actlog-next").click()
        wait_steps(page, [("a/activations", 3), ("b/activations", 4)], "conv_1")
        write_run(copy / "b", seed=1, epochs=6, freq=2, initial_epoch=4)
        assert actlog.read(copy / "b").run().grid_steps("conv_1", 0) == [0, 2, 4, 6]
        wait_steps(page, [("a/activations", 3), ("b/activations", 6)], "conv_1")
        assert page.find_element(By.ID, "actlog-step-label").text.startswith("epoch 6")


@pytest.mark.browser
def test_compare_view_of_the_mnist_example(
    driver: Any, tmp_path_factory: pytest.TempPathFactory, screenshot_dir: Path  # noqa: F811
) -> None:
    """The README's picture of compare mode: examples/mnist_convnet.py trained twice from the
    same seed (the same weights at first, the same probes), in batches of 64 and of 16."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from test_dashboard_browser import (
        decoded_pixels,
        open_dashboard,
        run_mnist_example,
        running_tensorboard,
        screenshot,
        wait_shows,
    )

    root = tmp_path_factory.mktemp("mnist_pair")
    run_mnist_example(root / "batch_64")
    run_mnist_example(root / "batch_16", "--batch-size", "16")
    runs_ = {name: actlog.read(root / name).run() for name in ("batch_16", "batch_64")}
    assert {name: run.steps for name, run in runs_.items()} == {n: [0, 1, 2, 3, 4, 5] for n in runs_}

    ready = lists_runs(["batch_16/activations", "batch_64/activations"])
    with running_tensorboard(root, tmp_path_factory.mktemp("tb_mnist_pair"), ready) as url:
        page = open_dashboard(driver, url, 2)
        Select(page.find_element(By.ID, "actlog-layer")).select_by_visible_text("conv_1")
        wait_shows(page, "actlog-grid-b", "conv_1", 5)
        choose_comparison(page, "batch_64/activations")
        wait_steps(page, [("batch_16/activations", 5), ("batch_64/activations", 5)], "conv_1")
        for which, name in (("a", "batch_16"), ("b", "batch_64")):
            image = page.find_element(By.ID, f"actlog-compare-{which}")
            expected = runs_[name].grid("conv_1", 0, 5)[..., 0]
            np.testing.assert_array_equal(decoded_pixels(page, image)[..., 0], expected)
            wait_atlas_step(page, which, 5)
        screenshot(page, screenshot_dir, "compare.png")


def wait_atlas_step(page: Any, which: str, step: int) -> None:
    from test_dashboard_browser import wait_for

    wait_for(page, "(i => !i.hidden && i.complete && i.dataset.step === arguments[1])"
             "(document.getElementById(arguments[0]))", f"actlog-compare-atlas-{which}", str(step))
