"""Logging never breaks training: faults during training, interrupts, long runs.

Each fault test trains the tiny model of ``conftest.py`` for a few epochs with
a fault injected between or during events, then checks that ``fit`` finished,
that actlog warned exactly once per kind of fault and counted every miss, that
what was logged before the fault (and after it, where possible) reads back
through TensorBoard's ``EventAccumulator`` and ``actlog.read``, and that
``strict=True`` raises instead. Tests that place a fault between two given
events log synchronously (``background=False``); the background path has
tests of its own at the end.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from conftest import faulty_log_dir, steps

import actlog
from actlog import metadata
from actlog.faults import LoggingError

pytestmark = pytest.mark.backend
# Every logger here passes epoch_logs=False: the faults, counts and messages asserted are those of
# the activation events (on JAX and PyTorch the epoch logs would meet an injected write fault
# first); the epoch logs' own faults are tested in tests/test_epoch_logs.py.

GRID_TAG = "conv_0/probe_0"
EPOCHS = 4


class AtEpochEnd(keras.callbacks.Callback):
    """Runs ``action(epoch)`` at the end of every epoch (placed before or after actlog)."""

    def __init__(self, action: Any) -> None:
        super().__init__()
        self.action = action
        self.epochs_done = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_done += 1
        self.action(epoch)


def _fit(model: Any, data: Any, callbacks: list, epochs: int = EPOCHS) -> list[warnings.WarningMessage]:
    x, y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)
    return [w for w in caught if str(w.message).startswith("actlog (")]


def _read_steps(log_dir: Path) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader's notes on cut-short files
        return actlog.read(log_dir).run(metadata.EPOCH_RUN).grid_steps("conv_0", 0)


# -- the log directory removed mid-run --------------------------------------------


@pytest.mark.parametrize("what", ["run", "log_dir"])
def test_removed_log_directory_is_recreated(tmp_path, tiny_model, tiny_data, tiny_probes, read_run, what):
    log_dir = tmp_path / "logs"
    logger = actlog.ActivationLogger(log_dir, tiny_probes, layers=["conv_0", "conv_1"], background=False,
                                     epoch_logs=False)
    victim = log_dir / metadata.EPOCH_RUN if what == "run" else log_dir

    def remove(epoch: int) -> None:
        if epoch == 1:  # after actlog wrote step 2
            shutil.rmtree(victim)

    after = AtEpochEnd(remove)
    caught = _fit(tiny_model, tiny_data, [logger, after])

    assert after.epochs_done == EPOCHS
    assert logger.misses == {"removed": 1}
    assert len(caught) == 1
    assert "disappeared" in str(caught[0].message) and "Step 3" in str(caught[0].message)
    # Steps 0-2 went with the directory; 3 and 4 are in a new file that stands on its own.
    run = read_run(log_dir / metadata.EPOCH_RUN)
    assert steps(run, GRID_TAG) == [3, 4]
    assert steps(run, metadata.MANIFEST_TAG) == [3]
    assert steps(run, "actlog/probe_0") == [3]
    assert _read_steps(log_dir) == [3, 4]


def test_run_directory_replaced_by_a_file_counts_every_lost_event(
    tmp_path, tiny_model, tiny_data, tiny_probes, read_run
):
    log_dir = tmp_path / "logs"
    logger = actlog.ActivationLogger(log_dir, tiny_probes, layers=["conv_0"], background=False,
                                     epoch_logs=False)
    run_dir = log_dir / metadata.EPOCH_RUN
    kept = tmp_path / "kept"

    def break_run(epoch: int) -> None:
        if epoch == 1:
            shutil.copytree(run_dir, kept)  # what was there, to check it was complete
            shutil.rmtree(run_dir)
            run_dir.write_text("not a directory")

    caught = _fit(tiny_model, tiny_data, [logger, AtEpochEnd(break_run)])

    assert logger.misses == {"write": 2}  # steps 3 and 4
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "could not write step 3" in message and str(log_dir) in message
    assert steps(read_run(kept), GRID_TAG) == [0, 1, 2]


# -- the store failing --------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "Permission denied")],
    ids=["ENOSPC", "EACCES"],
)
def test_failing_store_keeps_training_and_earlier_events(
    tmp_path, monkeypatch, tiny_model, tiny_data, tiny_probes, read_run, error
):
    log_dir = tmp_path / "logs"
    # version, step 0, step 1, then step 2 fails
    store = faulty_log_dir(monkeypatch, log_dir, error=error, fail_at={4})
    logger = actlog.ActivationLogger(store, tiny_probes, layers=["conv_0"], background=False,
                                     epoch_logs=False)
    caught = _fit(tiny_model, tiny_data, [logger])

    assert logger.misses == {"write": 1}
    assert len(caught) == 1
    assert "could not write step 2" in str(caught[0].message)
    assert error.strerror in str(caught[0].message)
    run = read_run(log_dir / metadata.EPOCH_RUN)
    # The failed file is left as it was and later events go to a new one with its
    # own manifest: nothing before the fault is lost, training and logging go on.
    assert len(os.listdir(log_dir / metadata.EPOCH_RUN)) == 2
    assert steps(run, GRID_TAG) == [0, 1, 3, 4]
    assert steps(run, metadata.MANIFEST_TAG) == [0, 3]
    assert _read_steps(log_dir) == [0, 1, 3, 4]


# -- NaN and Inf activations -----------------------------------------------------------


def _poison(model: Any, value: float) -> Any:
    """From the end of epoch 1 on, conv_1 (no activation) outputs ``value`` everywhere."""

    def action(epoch: int) -> None:
        if epoch == 1:
            layer = model.get_layer("conv_1")
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.full_like(bias, value)])

    return action


@pytest.mark.parametrize("with_stats", [True, False], ids=["stats", "no_stats"])
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_nonfinite_activations_are_logged_and_counted(
    tmp_path, tiny_model, tiny_data, tiny_probes, read_run, value, with_stats
):
    log_dir = tmp_path / "logs"
    logger = actlog.ActivationLogger(
        log_dir, actlog.Probes(tiny_probes, stats=with_stats), layers=["conv_0", "conv_1"], cmap="viridis",
        epoch_logs=False)
    # conv_0 frozen: the NaN loss cannot spread the poison back to it.
    tiny_model.get_layer("conv_0").trainable = False
    tiny_model.compile(optimizer=keras.optimizers.SGD(0.05), loss=tiny_model.loss)
    before = AtEpochEnd(_poison(tiny_model, value))  # before actlog: step 2 sees the poison
    caught = _fit(tiny_model, tiny_data, [before, logger])

    assert before.epochs_done == EPOCHS
    assert logger.misses == {"nonfinite": 3}  # conv_1 at steps 2, 3, 4
    assert len(caught) == 1
    assert "layer 'conv_1' has NaN or Inf activations at step 2" in str(caught[0].message)
    run = read_run(log_dir / metadata.EPOCH_RUN)
    assert steps(run, "conv_1/probe_0") == [0, 1, 2, 3, 4]
    # Every pixel of every tile is the marker colour (magenta in colour maps).
    marked = dict(run["conv_1/probe_0"])[2]
    tile = marked[1:4, 1:4]  # 3 x 3 maps, upscaled x16: the first tile's corner
    assert (tile == np.array([255, 0, 255], np.uint8)).all()
    if with_stats:
        means = dict(run["conv_1/mean"])
        assert np.isfinite(means[1]) and not np.isfinite(means[2])
        assert np.isfinite(dict(run["conv_0/mean"])[2])
    else:
        assert "conv_1/mean" not in run


# -- a layer far larger than the pixel budget ---------------------------------------------


def test_grid_over_the_pixel_budget_is_said_once_and_not_a_fault(
    tmp_path, tiny_model, tiny_data, tiny_probes, read_run
):
    log_dir = tmp_path / "logs"
    # conv_0: 4 tiles of 10 x 10 in 2 x 2 with pad 1 need 23 x 23 = 529 pixels at least;
    # conv_1: 6 tiles of 3 x 3 fit in 200 pixels.
    logger = actlog.ActivationLogger(
        log_dir, tiny_probes, layers=["conv_0", "conv_1"], layout=actlog.Layout(max_pixels=200),
        strict=True, epoch_logs=False)
    with pytest.warns(UserWarning, match=r"drawing 'conv_0' at 1/2 of full resolution .*max_pixels=200"):
        tiny_model.fit(*tiny_data, batch_size=8, epochs=2, verbose=0, callbacks=[logger])

    assert logger.misses == {}
    run = read_run(log_dir / metadata.EPOCH_RUN)
    assert [image.shape for _, image in run[GRID_TAG]] == [(13, 13, 1)] * 3
    manifest = metadata.parse_manifest(run[metadata.MANIFEST_TAG][0][1])
    assert [layer["grid"]["stride"] for layer in manifest["layers"]] == [2, 1]
    assert _read_steps(log_dir) == [0, 1, 2]


# -- strict=True raises instead --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["removed", "nonfinite", "write"])
def test_strict_raises_instead_of_warning(tmp_path, monkeypatch, tiny_model, tiny_data, tiny_probes, kind):
    log_dir = tmp_path / "logs"
    error = OSError(errno.EIO, "Input/output error")
    # kind "write": the 3rd append (version, step 0, then step 1) fails
    store = faulty_log_dir(monkeypatch, log_dir, error=error, fail_at={3}) if kind == "write" else log_dir
    logger = actlog.ActivationLogger(store, tiny_probes, layers=["conv_1"], strict=True,
                                     background=False, epoch_logs=False)
    before = [AtEpochEnd(_poison(tiny_model, np.nan))] if kind == "nonfinite" else []
    after = [AtEpochEnd(lambda e: e == 0 and shutil.rmtree(log_dir))] if kind == "removed" else []
    counter = AtEpochEnd(lambda epoch: None)
    match = {"removed": "disappeared", "nonfinite": "NaN or Inf", "write": "could not write step 1"}[kind]
    with pytest.raises(LoggingError, match=match) as info:
        tiny_model.fit(
            *tiny_data, batch_size=8, epochs=EPOCHS, verbose=0,
            callbacks=[*before, counter, logger, *after],
        )
    assert info.value.kind == kind
    assert logger.misses == {kind: 1}
    assert counter.epochs_done < EPOCHS
    if kind == "write":
        assert info.value.error is error


# -- the background thread ------------------------------------------------------------------


def test_background_fault_reaches_the_training_thread_at_the_next_callback(
    tmp_path, monkeypatch, tiny_model, tiny_data, tiny_probes
):
    error = OSError(errno.ENOSPC, "No space left on device")
    # the 3rd append: step 1, written in the background
    store = faulty_log_dir(monkeypatch, tmp_path / "logs", error=error, fail_at={3})
    seen: list[dict] = []
    logger = actlog.ActivationLogger(store, tiny_probes, layers=["conv_0"], strict=True, epoch_logs=False)
    probe = AtEpochEnd(lambda epoch: seen.append(dict(logger.misses)))
    with pytest.raises(LoggingError, match="could not write step 1") as info:
        tiny_model.fit(*tiny_data, batch_size=8, epochs=EPOCHS, verbose=0, callbacks=[logger, probe])
    # Raised on the training thread, at a callback after the background wrote step 1.
    assert info.value.kind == "write" and info.value.error is error
    assert logger.misses == {"write": 1}
    assert all(m == {} for m in seen)


def test_full_queue_waits_by_default_and_skips_when_asked(
    tmp_path, monkeypatch, tiny_model, tiny_data, tiny_probes, read_run
):
    x, y = tiny_data
    waits = actlog.ActivationLogger(faulty_log_dir(monkeypatch, tmp_path / "wait", delay=0.3), tiny_probes,
                                    layers=["conv_0"], freq=0, batch_freq=1,
                                    background=actlog.Background(max_pending=1), epoch_logs=False)
    tiny_model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[waits])
    assert waits.misses == {}
    assert steps(read_run(tmp_path / "wait" / metadata.BATCH_RUN), GRID_TAG) == list(range(1, 9))

    skips = actlog.ActivationLogger(faulty_log_dir(monkeypatch, tmp_path / "skip", delay=0.3), tiny_probes,
                                    layers=["conv_0"], freq=0, batch_freq=1,
                                    background=actlog.Background(max_pending=1, on_full="skip"),
                                        epoch_logs=False)
    with pytest.warns(RuntimeWarning, match=r"actlog \(skipped\): step \d+ of run 'activations_batch' "
                                            r"was not logged"):
        tiny_model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[skips])
    written = steps(read_run(tmp_path / "skip" / metadata.BATCH_RUN), GRID_TAG)
    assert skips.misses["skipped"] >= 1
    assert len(written) + skips.misses["skipped"] == 8
    assert written == sorted(set(written))  # in step order, each once


def test_flush_waits_for_the_background(tmp_path, monkeypatch, tiny_model, tiny_data, tiny_probes):
    logger = actlog.ActivationLogger(faulty_log_dir(monkeypatch, tmp_path / "logs", delay=0.2), tiny_probes,
                                     layers=["conv_0"], epoch_logs=False)
    grids: list[list[int]] = []

    def look(epoch: int) -> None:
        assert logger.flush(timeout=30)
        grids.append(actlog.read(tmp_path / "logs").run().grid_steps("conv_0", 0))

    _fit(tiny_model, tiny_data, [logger, AtEpochEnd(look)], epochs=2)
    assert grids == [[0, 1], [0, 1, 2]]


# -- interrupts -----------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_data, make_tiny_model
    import actlog

    x, y = make_tiny_data(64)

    def train(log_dir):
        # A fresh model each time: on JAX, Ctrl-C inside a train step leaves the
        # interrupted model's buffers donated away (Keras' own limit, not actlog's).
        model = make_tiny_model(0)
        logger = actlog.ActivationLogger(log_dir, x[:2], layers=["conv_0", "conv_1"],
                                         batch_freq=actlog.Batches(1, epochs=10_000), epoch_logs=False)
        model.fit(x, y, batch_size=2, epochs=10_000, verbose=0, callbacks=[logger])

    try:
        train(sys.argv[1])  # Ctrl-C lands here, as in a notebook
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the second fit is ended by a kill
        open(sys.argv[3], "w").close()
    train(sys.argv[2])  # and a kill here
    """
)


def _event_bytes(run_dir: Path) -> int:
    return sum(f.stat().st_size for f in run_dir.glob("events.out.tfevents.*")) if run_dir.is_dir() else 0


@pytest.mark.slow
def test_interrupted_runs_leave_readable_event_files(tmp_path, read_run):
    """SIGINT (Ctrl-C), then SIGKILL, while a child process logs at every batch.

    One process for both (the backend starts once): Ctrl-C interrupts a first
    ``fit`` and the script goes on to a second one, which is killed. A kill
    loses what was still queued for the background; everything before is complete.
    Ctrl-C is pressed again while the first ``fit`` goes on: Keras swallows one
    that lands in its own batch-end code (seen on JAX, about one run in five).
    """
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(Path(__file__).parent)))
    log_dirs = {signal.SIGINT: tmp_path / "sigint", signal.SIGKILL: tmp_path / "sigkill"}
    interrupted = tmp_path / "interrupted"
    child = subprocess.Popen(
        [sys.executable, str(script), *map(str, log_dirs.values()), str(interrupted)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # As from a terminal: a shell running the tests in the background (`cmd &`)
        # starts them with Ctrl-C ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    def wait_for(done, what, resend=None):
        deadline = time.monotonic() + 150
        while not done():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            if time.monotonic() > deadline:  # a hang guard, not a speed check
                raise TimeoutError(what)
            if resend is not None and time.monotonic() > resend[0]:
                # Keras itself may swallow a Ctrl-C: its pythonify_logs (run at every
                # batch end) has a bare `except: pass`. A user presses it again; so do we.
                child.send_signal(signal.SIGINT)
                resend[0] = time.monotonic() + 2
            time.sleep(0.05)

    try:
        # Logging at every batch: a signal lands during an event most of the time.
        wait_for(lambda: _event_bytes(log_dirs[signal.SIGINT] / metadata.BATCH_RUN) >= 20_000,
                 "the first fit never logged enough")
        child.send_signal(signal.SIGINT)
        wait_for(interrupted.exists, "Ctrl-C never ended the first fit", resend=[time.monotonic() + 2])
        wait_for(lambda: _event_bytes(log_dirs[signal.SIGKILL] / metadata.BATCH_RUN) >= 20_000,
                 "the second fit never logged enough")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    for sig, log_dir in log_dirs.items():
        run = read_run(log_dir / metadata.BATCH_RUN)
        logged = sorted({s for tag, points in run.items() for s, _ in points if tag != metadata.MANIFEST_TAG})
        assert len(logged) >= 3, (sig, logged)
        assert logged == list(range(logged[0], logged[0] + len(logged))), sig  # every batch, none skipped
        # Every step but possibly the last (cut by the signal) is complete in every tag.
        for tag in ("conv_0/probe_0", "conv_1/probe_1", "conv_1/channel_max"):
            assert steps(run, tag)[: len(logged) - 1] == logged[:-1], (sig, tag)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read = actlog.read(log_dir).run(metadata.BATCH_RUN)
        assert read.grid_steps("conv_1", 1)[: len(logged) - 1] == logged[:-1], sig


_EXITING_CHILD = textwrap.dedent(
    """
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests!r})
    from conftest import FaultyFiles, make_tiny_data, make_tiny_model
    import keras
    import actlog

    FaultyFiles.delay = 0.4  # every append of the faulty:// log directory is slow

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:
                print("pending", logger.pending, flush=True)
                raise KeyboardInterrupt

    x, y = make_tiny_data(16)
    logger = actlog.ActivationLogger("faulty://" + sys.argv[1], x[:2], layers=["conv_0"],
                                     background=actlog.Background(max_pending=8), epoch_logs=False)
    make_tiny_model(0).fit(x, y, batch_size=8, epochs=10, verbose=0, callbacks=[logger, Interrupt()])
    """
)


@pytest.mark.slow
def test_interpreter_exit_drains_the_queue(tmp_path):
    """Ctrl-C ends the script with events still queued: they are written before it exits."""
    script = tmp_path / "child.py"
    script.write_text(_EXITING_CHILD.format(tests=str(Path(__file__).parent)))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "logs")], capture_output=True, text=True, timeout=300
    )
    assert "KeyboardInterrupt" in done.stderr
    pending = int(done.stdout.split("pending")[1].split()[0])
    assert pending >= 1  # events were still waiting when Python began to exit
    assert _read_steps(tmp_path / "logs") == [0, 1, 2, 3, 4]


def test_event_file_cut_mid_record_reads_up_to_the_last_complete_event(
    tmp_path, tiny_model, tiny_data, tiny_probes, read_run
):
    """What a kill during a write leaves, made exact: the file cut inside its last record."""
    log_dir = tmp_path / "logs"
    sizes: list[int] = []
    run_dir = log_dir / metadata.EPOCH_RUN
    logger = actlog.ActivationLogger(log_dir, tiny_probes, layers=["conv_0"], background=False,
                                     epoch_logs=False)
    _fit(tiny_model, tiny_data, [logger, AtEpochEnd(lambda e: sizes.append(_event_bytes(run_dir)))], epochs=3)
    (name,) = os.listdir(run_dir)
    full = (run_dir / name).read_bytes()
    assert sizes[-1] == len(full)
    whole = read_run(run_dir)
    points = {(tag, step) for tag, series in whole.items() for step, _ in series}
    # sizes[1] is the file after step 2. An event is one record, so a cut anywhere
    # in step 3 (its start, its middle, its very last byte) loses step 3 whole
    # and nothing else: events are atomic.
    assert {step for _, step in points} == {0, 1, 2, 3}
    for cut in (sizes[1] + 1, sizes[1] + 20, len(full) - 1):
        cut_dir = tmp_path / f"cut_{cut}" / metadata.EPOCH_RUN
        cut_dir.mkdir(parents=True)
        (cut_dir / name).write_bytes(full[:cut])
        run = read_run(cut_dir)
        left = {(tag, step) for tag, series in run.items() for step, _ in series}
        assert left == {(tag, step) for tag, step in points if step <= 2}
        assert all(_values_equal(run[tag], whole[tag][: len(run[tag])]) for tag in run)
        with pytest.warns(RuntimeWarning, match="cut short|needs"):
            read = actlog.read(cut_dir.parent).run(metadata.EPOCH_RUN)
        assert read.grid_steps("conv_0", 0) == steps(run, GRID_TAG)


def _values_equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        sa == sb and np.array_equal(np.asarray(va), np.asarray(vb))
        for (sa, va), (sb, vb) in zip(a, b, strict=True)
    )


# -- long runs ---------------------------------------------------------------------------------


def test_bytes_per_event_are_constant_and_nothing_retraces(tmp_path, tiny_data, tiny_probes):
    """30 events of a model whose weights do not move: every event after the second
    (the first carries the manifest, the second starts ``drift``) adds the same bytes."""
    from conftest import make_tiny_model

    model = make_tiny_model(0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=model.loss)
    log_dir = tmp_path / "logs"
    run_dir = log_dir / metadata.EPOCH_RUN
    logger = actlog.ActivationLogger(log_dir, tiny_probes, layers=["conv_0", "conv_1"], background=False,
                                     epoch_logs=False)
    sizes: list[int] = []

    def measure(epoch: int) -> None:
        sizes.append(_event_bytes(run_dir))

    x, y = tiny_data
    caught = _fit(model, (x[:8], y[:8]), [logger, AtEpochEnd(measure)], epochs=30)

    assert caught == [] and logger.misses == {}
    growth = np.diff(sizes)
    assert len(growth) == 29
    assert growth[0] > 0 and set(growth[1:].tolist()) == {int(growth[1])}, growth
    assert logger.probe_function.traces == 1
