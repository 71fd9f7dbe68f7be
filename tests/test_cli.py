"""The ``actlog`` command on a log written by a real ``fit``: ls, GIF, PNG strip, errors."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

import actlog
from actlog import atlas, codec, metadata
from actlog import export as export_lib
from actlog.cli import main
from actlog.export import GAP

LAYERS = ("conv_0", "conv_1")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory, tiny_model_factory, tiny_data) -> Path:
    """3 epochs with colour grids, batch-level logging during the first epoch, a feature
    atlas (top 3 of the 16 samples) and class maps of conv_1 for the predicted classes at
    every epoch."""
    model = tiny_model_factory(seed=1)
    x, y = tiny_data
    path = tmp_path_factory.mktemp("cli") / "exp"
    logger = actlog.ActivationLogger(
        path, x[:2].copy(), layers=list(LAYERS), freq=1, batch_freq=1, cmap="viridis",
        atlas=actlog.Atlas(x, k=3, every=1), cam=actlog.ClassMaps("conv_1", classes="predicted"),
    )
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[logger])
    assert logger.misses == {}
    return path


@pytest.fixture(scope="module")
def run(log_dir):
    return actlog.read(log_dir).run(metadata.EPOCH_RUN)


def export(log_dir, output, *extra: str) -> int:
    return main(
        ["export", str(log_dir), "--layer", "conv_0", "--probe", "0", "-o", str(output), *extra]
    )


def gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as image:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]


def cell(strip: np.ndarray, index: int, columns: int, frame_hw, image_hw) -> np.ndarray:
    """The picture in filmstrip cell ``index``: frames are centred above their label."""
    frame_h, frame_w = frame_hw
    row, col = divmod(index, columns)
    y = GAP + row * (frame_h + GAP)
    x = GAP + col * (frame_w + GAP) + (frame_w - image_hw[1]) // 2
    return strip[y : y + image_hw[0], x : x + image_hw[1]]


# -- ls -----------------------------------------------------------------------------------


def test_ls_lists_runs_layers_probes_steps_bytes(log_dir, capsys):
    assert main(["ls", str(log_dir)]) == 0
    out = capsys.readouterr().out
    batch = actlog.read(log_dir).run(metadata.BATCH_RUN)
    for name, steps in ((metadata.EPOCH_RUN, [0, 1, 2, 3]), (metadata.BATCH_RUN, batch.steps)):
        block = out.split(f"run {name}\n", 1)[1].split("\nrun ", 1)[0]
        size = sum(p.stat().st_size for p in (log_dir / name).iterdir())
        assert f"steps:     {len(steps)} ({steps[0]}..{steps[-1]})" in block
        assert "probes:    2" in block
        assert f"bytes:     {size} " in block
        cam = "  class maps: the predicted classes, steps 4 (0..3)"
        assert [cam in line for line in block.splitlines() if "Conv2D" in line] == (
            [False, True] if name == metadata.EPOCH_RUN else [False, False])
        for layer in LAYERS:
            assert f"    {layer}  Conv2D" in block
    assert batch.step_axis == "global_step" and batch.steps == [1, 2]
    assert "grid 2x3 tiles" in out  # conv_1: 6 channels


def test_python_dash_m_and_console_script(log_dir):
    script = Path(sys.executable).with_name("actlog")
    commands = [[sys.executable, "-m", "actlog", "ls", str(log_dir)]]
    if script.exists():  # the entry point of an installed actlog
        commands.append([str(script), "ls", str(log_dir)])
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"run {metadata.EPOCH_RUN}" in result.stdout


@pytest.fixture(scope="module")
def long_log(log_dir, tmp_path_factory) -> Path:
    """400 copies of the epoch run: about 150 kB of `ls`, more than a pipe holds."""
    path = tmp_path_factory.mktemp("long")
    for index in range(400):
        shutil.copytree(log_dir / metadata.EPOCH_RUN, path / f"r{index:03}" / metadata.EPOCH_RUN)
    return path


def start_ls(log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "actlog", "ls", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_hear_ctrl_c,
    )


def _hear_ctrl_c() -> None:
    """A shell running the tests in the background (`cmd &`) starts them with Ctrl-C
    ignored, and children inherit that; a terminal's Ctrl-C is what these tests mean."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ls_into_a_pipe_closed_early_is_quiet(long_log):
    lister = start_ls(long_log)  # `head` is gone while actlog still writes
    head = subprocess.Popen(["head", "-1"], stdin=lister.stdout, stdout=subprocess.PIPE, text=True)
    lister.stdout.close()  # head holds the only read end now
    first, _ = head.communicate(timeout=120)
    errors = lister.stderr.read().decode()
    lister.stderr.close()
    assert lister.wait(timeout=120) == 0, errors
    assert errors == ""
    assert first.startswith(f"{long_log}: 400 actlog run(s), ") and first.endswith(" MB\n")


def test_ctrl_c_is_one_line_and_status_130(long_log):
    lister = start_ls(long_log)
    assert lister.stdout.read(1) == str(long_log).encode()[:1]  # listing, now blocked on a full pipe
    lister.send_signal(signal.SIGINT)
    _, errors = lister.communicate(timeout=120)
    assert lister.returncode == 130
    assert errors.decode() == "actlog: interrupted\n"


def test_ctrl_c_during_export_ends_the_progress_line_first(log_dir, tmp_path, capsys, monkeypatch):
    from actlog import export as export_module

    real_export = export_module.export

    def interrupted(*args, progress, **kwargs):
        def stop(done: int, total: int) -> None:
            progress(done, total)
            if done == 2:
                raise KeyboardInterrupt

        return real_export(*args, progress=stop, **kwargs)

    monkeypatch.setattr(export_module, "export", interrupted)
    assert export(log_dir, tmp_path / "i.gif", "--progress") == 130
    assert capsys.readouterr().err.endswith(" 2/4 frames\nactlog: interrupted\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [[], ["ls"], ["export"]])
def test_help_shows_exit_statuses_and_examples_that_work(log_dir, tmp_path, capsys, monkeypatch, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "exit status:" in text and "\n  2    a usage error" in text and "\n  130  interrupted" in text
    examples = [line.strip() for line in text.splitlines() if line.startswith("  actlog ")]
    assert examples and all(e.startswith(f"actlog {command[0]} ") for e in examples if command)
    monkeypatch.chdir(tmp_path)
    for example in examples:
        example = example.replace("runs/exp1", str(log_dir))
        if "|" in example:
            example = example.replace("actlog ", f"{sys.executable} -m actlog ", 1)
            result = subprocess.run(["bash", "-o", "pipefail", "-c", example], capture_output=True)
            assert result.returncode == 0 and result.stdout and not result.stderr, example
        else:
            assert main(shlex.split(example)[1:]) == 0, example
            assert "wrote " in capsys.readouterr().out or example.startswith("actlog ls")


# -- export ------------------------------------------------------------------------------


def test_class_map_export_captions_each_step_with_its_class(log_dir, run, tmp_path, capsys):
    gif, strip_path = tmp_path / "cam.gif", tmp_path / "cam.png"
    command = ["export", str(log_dir), "--layer", "conv_1", "--probe", "1", "--cam"]
    assert main([*command, "-o", str(gif)]) == 0
    assert "4 frame(s) (epoch 0..3)" in capsys.readouterr().out
    assert main([*command, "--columns", "1", "--scale", "2", "-o", str(strip_path)]) == 0
    steps, pictures = run.class_maps(1)
    value_steps, _, classes = run.class_map_values()
    assert steps.tolist() == value_steps.tolist() == [0, 1, 2, 3]
    strip = np.asarray(Image.open(strip_path).convert("RGB"))
    frame_w = strip.shape[1] - 2 * GAP
    frame_h = (strip.shape[0] - GAP) // len(steps) - GAP
    for index, (step, picture) in enumerate(zip(steps, pictures, strict=True)):
        # each frame: the logged picture, upscaled, captioned with its step and class
        expected = export_lib.label(picture.repeat(2, axis=0).repeat(2, axis=1),
                                    f"epoch {step}, class {classes[index, 1]}", width=frame_w)
        y = GAP + index * (frame_h + GAP)
        np.testing.assert_array_equal(strip[y : y + frame_h, GAP : GAP + frame_w], expected)
    assert len(gif_frames(gif)) == 4


@pytest.mark.parametrize(("extra", "said"), [
    (["--layer", "conv_0", "--probe", "0"], "holds the class maps of layer 'conv_1', not 'conv_0'"),
    (["--layer", "conv_1", "--probe", "0", "--channel", "1"], "--cam exports one probe's class maps"),
    (["--layer", "conv_1", "--probe", "2"], "No probe 2 in run 'activations': it has 2 probes (0..1)"),
])
def test_class_map_export_errors(log_dir, tmp_path, capsys, extra, said):
    assert main(["export", str(log_dir), "--cam", *extra, "-o", str(tmp_path / "c.gif")]) == 2
    assert said in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_class_map_export_of_a_run_without_class_maps(tmp_path, tiny_model_factory, tiny_data, capsys):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path / "log", x[:2], layers=["conv_1"])
    tiny_model_factory(seed=0).fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[logger])
    output = tmp_path / "c.gif"
    assert main(["export", str(tmp_path / "log"), "--layer", "conv_1", "--cam", "-o", str(output)]) == 2
    assert "has no class maps: they are logged with ActivationLogger(cam=" in capsys.readouterr().err
    assert not output.exists()


def test_gif_has_one_labelled_frame_per_step(log_dir, run, tmp_path, capsys):
    output = tmp_path / "conv_0.gif"
    assert export(log_dir, output, "--fps", "5") == 0
    assert "4 frame(s)" in capsys.readouterr().out
    steps, grids = run.grids("conv_0", 0)
    with Image.open(output) as image:
        assert image.n_frames == len(steps) == 4
        frame_ms = image.info["duration"]  # GIF frame length that --fps 5 asks for
        assert frame_ms == 1000 // 5
        assert image.info["loop"] == 0
        width, height = image.size
    height_grid, width_grid = grids.shape[1:3]
    assert width >= width_grid and height > height_grid  # the label band is below
    frames = gif_frames(output)
    x0 = (width - width_grid) // 2
    for frame, grid in zip(frames, grids, strict=True):
        picture = frame[:height_grid, x0 : x0 + width_grid].astype(int)
        # A GIF has a 256-colour palette per frame: close to, not equal to, the grid.
        assert np.abs(picture - grid.astype(int)).mean() < 4
        band = frame[height_grid:]
        assert (band == 255).mean() > 0.5 and (band < 128).any()  # white band, dark text
    bands = [frame[height_grid:].tobytes() for frame in frames]
    assert len(set(bands)) == len(frames)  # each frame shows its own step


def test_png_strip_holds_every_step_exactly(log_dir, run, tmp_path):
    gif, strip_path = tmp_path / "a.gif", tmp_path / "a.png"
    assert export(log_dir, gif) == 0
    assert export(log_dir, strip_path, "--columns", "3") == 0
    with Image.open(gif) as image:
        frame_w, frame_h = image.size
    steps, grids = run.grids("conv_0", 0)
    strip = np.asarray(Image.open(strip_path).convert("RGB"))
    rows = -(-len(steps) // 3)
    assert strip.shape[:2] == (GAP + rows * (frame_h + GAP), GAP + 3 * (frame_w + GAP))
    for index, grid in enumerate(grids):
        picture = cell(strip, index, 3, (frame_h, frame_w), grid.shape[:2])
        np.testing.assert_array_equal(picture, grid)


def test_channel_follows_one_tile(log_dir, run, tmp_path):
    output = tmp_path / "ch.png"
    assert export(log_dir, output, "--channel", "2", "--scale", "2", "--columns", "4") == 0
    steps, tiles = run.tiles("conv_0", 0, 2)
    big = tiles.repeat(2, axis=1).repeat(2, axis=2)
    strip = np.asarray(Image.open(output).convert("RGB"))
    frame_h = strip.shape[0] - 2 * GAP
    frame_w = (strip.shape[1] - GAP) // 4 - GAP
    for index, tile in enumerate(big):
        picture = cell(strip, index, 4, (frame_h, frame_w), tile.shape[:2])
        np.testing.assert_array_equal(picture, tile)

    gif = tmp_path / "ch.gif"
    assert export(log_dir, gif, "--channel", "2") == 0
    with Image.open(gif) as image:
        assert image.n_frames == len(steps)
        # upscaled by default so that a small tile stays visible
        assert image.size[0] >= 2 * tiles.shape[2]


def test_atlas_export_shows_one_channels_crops_at_every_atlas_step(log_dir, run, tmp_path, capsys):
    gif, strip_path = tmp_path / "a.gif", tmp_path / "a.png"
    command = ["export", str(log_dir), "--layer", "conv_1", "--atlas", "--channel", "5"]
    assert main([*command, "-o", str(gif)]) == 0
    assert "4 frame(s) (epoch 0..3)" in capsys.readouterr().out
    assert main([*command, "--columns", "1", "-o", str(strip_path)]) == 0
    with Image.open(gif) as image:
        frame_w, frame_h = image.size
        assert image.n_frames == 4 and image.info["duration"] == 250  # 4 frames per second
    strip = np.asarray(Image.open(strip_path).convert("RGB"))
    assert strip.shape[:2] == (GAP + 4 * (frame_h + GAP), GAP + frame_w + GAP)
    for index, step in enumerate(run.atlas_steps("conv_1")):
        crops = run.atlas("conv_1", step).crops(5)  # (3, h, w, 3), best first
        k, height, width, _ = crops.shape
        side_by_side = np.concatenate(
            [np.pad(c, ((0, 0), (0, GAP if r < k - 1 else 0), (0, 0)), constant_values=atlas.BACKGROUND)
             for r, c in enumerate(crops)], axis=1)
        np.testing.assert_array_equal(cell(strip, index, 1, (frame_h, frame_w), side_by_side.shape[:2]),
                                      side_by_side)


def test_ls_says_which_layers_have_an_atlas(log_dir, capsys):
    assert main(["ls", str(log_dir)]) == 0
    block = capsys.readouterr().out.split(f"run {metadata.EPOCH_RUN}\n", 1)[1].split("\nrun ", 1)[0]
    assert block.count("atlas: top 3 of 16, steps 4 (0..3)") == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--atlas"], "--atlas exports one channel's top-k crops: give --channel C, and no --probe."),
        (["--atlas", "--channel", "1", "--probe", "0"],
         "--atlas exports one channel's top-k crops: give --channel C, and no --probe."),
        (["--atlas", "--channel", "9"],
         "Channel 9 of layer 'conv_1' is not in its atlas; channels shown: 0..5."),
    ],
    ids=["no_channel", "with_probe", "unknown_channel"],
)
def test_atlas_export_errors(log_dir, tmp_path, capsys, extra, message):
    output = tmp_path / "out.gif"
    assert main(["export", str(log_dir), "--layer", "conv_1", *extra, "-o", str(output)]) == 2
    assert capsys.readouterr().err == f"actlog: error: {message}\n"
    assert not output.exists()


def test_probe_defaults_to_0_and_names_are_checked_before_options(log_dir, tmp_path, capsys):
    assert main(["export", str(log_dir), "--layer", "conv_1", "-o", str(tmp_path / "p.gif")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'p.gif'}: animated GIF")
    grid_0 = ["export", str(log_dir), "--layer", "conv_1", "--probe", "0", "-o", str(tmp_path / "q.gif")]
    assert main(grid_0) == 0
    assert (tmp_path / "p.gif").read_bytes() == (tmp_path / "q.gif").read_bytes()
    assert main(["export", str(log_dir), "--layer", "conv1", "--atlas", "-o", str(tmp_path / "r.gif")]) == 2
    assert capsys.readouterr().err == (
        "actlog: error: No layer 'conv1' in run 'activations'. Layers: ['conv_0', 'conv_1']. "
        "Did you mean 'conv_1' or 'conv_0'?\n"
    )


def test_run_option_chooses_the_batch_run(log_dir, tmp_path):
    output = tmp_path / "batch.gif"
    assert export(log_dir, output, "--run", metadata.BATCH_RUN) == 0
    batch = actlog.read(log_dir).run(metadata.BATCH_RUN)
    with Image.open(output) as image:
        assert image.n_frames == len(batch.steps)


def test_progress_bar_only_when_asked_or_on_a_terminal(log_dir, tmp_path, capsys):
    assert export(log_dir, tmp_path / "p.gif", "--progress") == 0
    err = capsys.readouterr().err
    assert "4/4 frames" in err and "[" + "#" * 30 + "]" in err
    assert export(log_dir, tmp_path / "q.gif") == 0  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


# -- errors: one line, exit status 2, no traceback -----------------------------------------


def export_args(default_logdir, tmp, **changes: str) -> list[str]:
    """A valid ``export`` command line for the log, with ``changes`` applied."""
    logdir = changes.pop("logdir", str(default_logdir))
    options = {"layer": "conv_0", "probe": "0", "o": str(tmp / "out.gif"), **changes}
    args = ["export", logdir]
    for key, value in options.items():
        args += [f"-{key}" if len(key) == 1 else f"--{key}", value]
    return args


ERRORS = {
    # case: (changes to a valid export command, texts the one-line error must hold)
    "unknown run": ({"run": "nope"}, ["No run 'nope'", "['activations', 'activations_batch']"]),
    "unknown layer": ({"layer": "dense"}, ["No layer 'dense'", "['conv_0', 'conv_1']"]),
    "misspelt run": (
        {"run": "activation"},
        ["No run 'activation'", "Did you mean 'activations' or 'activations_batch'?"],
    ),
    "misspelt layer": (
        {"layer": "conv0"},
        ["No layer 'conv0'", "['conv_0', 'conv_1']. Did you mean 'conv_0' or 'conv_1'?"],
    ),
    "unknown probe": ({"probe": "5"}, ["No probe 5", "2 probes (0..1)"]),
    "unknown channel": ({"channel": "99"}, ["Channel 99", "channels shown: 0..3"]),
    "unknown extension": ({"o": "{tmp}/out.jpg"}, ["'.jpg'", ".gif (animated GIF), .png"]),
    "missing output dir": ({"o": "{tmp}/no/such/out.gif"}, ["annot write", "does not exist"]),
    "output is a dir": ({"o": "{tmp}/d.gif"}, ["annot write", "it is a directory"]),
    "unwritable output": ({"o": "/proc/actlog_test.gif"}, ["annot write", "/proc/actlog_test"]),
    "missing logdir": ({"logdir": "{tmp}/missing"}, ["Log directory", "does not exist"]),
    "empty logdir": ({"logdir": "{tmp}/empty"}, ["No actlog runs", "no event files at all"]),
}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "actlog", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("case", list(ERRORS))
def test_export_errors(log_dir, tmp_path, case):
    changes, expected = ERRORS[case]
    (tmp_path / "d.gif").mkdir()
    (tmp_path / "empty").mkdir()
    changes = {key: value.format(tmp=tmp_path) for key, value in changes.items()}
    result = cli(*export_args(log_dir, tmp_path, **changes))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("actlog: error: ")
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]
    assert {p.name for p in tmp_path.iterdir()} == {"d.gif", "empty"}  # nothing written


def test_several_runs_and_no_default_ask_for_run(log_dir, tmp_path):
    two = tmp_path / "two"
    for name in ("a", "b"):
        shutil.copytree(log_dir / metadata.EPOCH_RUN, two / name / metadata.EPOCH_RUN)
    result = cli(*export_args(two, tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"actlog: error: Several runs under {str(two)!r} and none is 'activations'; "
        "choose one with --run: ['a/activations', 'b/activations'].\n"
    )
    assert not (tmp_path / "out.gif").exists()
    assert cli(*export_args(two, tmp_path, run="b/activations")).returncode == 0
    assert (tmp_path / "out.gif").exists()


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_ls_errors(tmp_path, where):
    (tmp_path / "empty").mkdir()
    result = cli("ls", str(tmp_path / where))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("actlog: error: ")
    assert str(tmp_path / where) in result.stderr


def test_bad_option_values_are_usage_errors(log_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(log_dir, tmp_path / "x.gif", "--fps", "0")
    assert exit_info.value.code == 2
    assert "expected a number > 0, received '0'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.gif")


# -- a log cut short by a crash: what is complete, and one note ---------------------------


def torn_copy(log_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the epoch run whose event file ends 10 bytes into the record of
    conv_0's last grid for probe 0, as a crash mid-write leaves it: ``(log, file)``."""
    from tensorboard.compat.proto import event_pb2

    log = tmp_path / "torn"
    shutil.copytree(log_dir / metadata.EPOCH_RUN, log / metadata.EPOCH_RUN)
    (path,) = (log / metadata.EPOCH_RUN).iterdir()
    data = path.read_bytes()
    tag = metadata.grid_tag("conv_0", 0, 2)
    last = max(
        offset
        for offset, length in codec.scan(data).records
        if tag in {v.tag for v in event_pb2.Event.FromString(data[offset : offset + length]).summary.value}
    )
    path.write_bytes(data[: last + 10])
    return log, path


def test_torn_last_record_is_one_clean_note(log_dir, tmp_path):
    log, path = torn_copy(log_dir, tmp_path)
    with pytest.warns(RuntimeWarning, match="complete records before it"):
        assert actlog.read(log).run().grid_steps("conv_0", 0) == [0, 1, 2]
    listing = cli("ls", str(log))
    exported = cli(*export_args(log, tmp_path))
    for result in (listing, exported):
        assert result.returncode == 0, result.stderr
        (note,) = result.stderr.splitlines()  # one line: no source line under it
        assert note.startswith(f"actlog: note: {path}: the record at byte ")
        assert note.endswith("(a run still being written, or a crash mid-write); "
                             "returning the complete records before it.")
        assert "Warning" not in note and "cli.py" not in note
    assert "steps:     3 (0..2)" in listing.stdout
    assert "3 frame(s) (epoch 0..2)" in exported.stdout
    with Image.open(tmp_path / "out.gif") as image:
        assert image.n_frames == 3
