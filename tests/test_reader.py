"""actlog.read on logs written by a real ``fit``: round trip, statistics, damage, interop."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from google_crc32c import value as crc32c
from PIL import Image

import actlog
from actlog import codec, metadata
from actlog.codec import masked_crc32c
from actlog.reader import LogError

LAYERS = ("conv_0", "conv_1")
PROBES = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_factory, tiny_data):
    """Two ``fit`` calls (epochs 0-2, then 2-3) with the real callback and Keras' TensorBoard.

    A capturing callback records the watched layers' outputs on the probes at
    every logged step, so that statistics can be recomputed here with numpy.
    """
    import keras

    log_dir = tmp_path_factory.mktemp("reader") / "exp"
    x, y = tiny_data
    probes = x[:PROBES].copy()
    model = tiny_model_factory(seed=0)
    captured: dict[int, list[np.ndarray]] = {}

    class Capture(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not captured:
                self._watch = keras.Model(
                    self.model.inputs, [self.model.get_layer(n).output for n in LAYERS]
                )
                self._grab(0)

        def on_epoch_end(self, epoch, logs=None):
            self._grab(epoch + 1)

        def _grab(self, step):
            captured[step] = [np.asarray(a) for a in self._watch([probes], training=False)]

    logger = actlog.ActivationLogger(log_dir, probes, layers=list(LAYERS), freq=1)
    board = keras.callbacks.TensorBoard(str(log_dir), write_graph=False)
    capture = Capture()
    callbacks = [logger, board, capture]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, verbose=0, callbacks=callbacks)
    assert logger.misses == {}
    return {"log_dir": log_dir, "model": model, "probes": probes, "captured": captured}


def run_dir(trained):
    return trained["log_dir"] / metadata.EPOCH_RUN


def event_files(directory):
    return sorted(p for p in directory.iterdir() if p.name.startswith("events.out.tfevents."))


def accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def png(data: bytes) -> np.ndarray:
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[:, :, None] if array.ndim == 2 else array


def records(path):
    """(start offset, payload length) of each complete record: the test's own framing parser."""
    data = path.read_bytes()
    offset, found = 0, []
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        if offset + 16 + length > len(data):
            break
        found.append((offset, length))
        offset += 16 + length
    return found


def tag_steps(path, limit=None):
    """{tag: {steps}} of the summary values in the first ``limit`` records of ``path``."""
    from tensorboard.compat.proto import event_pb2

    data = path.read_bytes()
    out: dict[str, set[int]] = {}
    for start, length in records(path)[:limit]:
        event = event_pb2.Event.FromString(data[start + 12 : start + 12 + length])
        for value in event.summary.value:
            out.setdefault(value.tag, set()).add(event.step)
    return out


# -- what is in the log -------------------------------------------------------------


def test_runs_layers_probes_steps(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact log reads without any warning
        log = actlog.read(trained["log_dir"])
    assert log.runs == [metadata.EPOCH_RUN]  # Keras' train/ run holds no actlog data
    run = log.run(metadata.EPOCH_RUN)
    assert log.run() is run and log[metadata.EPOCH_RUN] is run
    assert run.layers == list(LAYERS)
    assert run.probes == PROBES
    assert run.steps == [0, 1, 2, 3]
    assert run.step_axis == "epoch"
    assert run.bytes == sum(p.stat().st_size for p in event_files(run_dir(trained)))
    assert len(event_files(run_dir(trained))) == 2  # one per fit; both are read
    assert run.manifest["probes"] == PROBES
    assert [entry["name"] for entry in run.manifest["layers"]] == list(LAYERS)
    assert run.layer_info("conv_1")["output_shape"] == [3, 3, 6]
    assert run.channels("conv_0") == [0, 1, 2, 3]


def test_run_names_are_relative_paths(trained):
    log = actlog.read(trained["log_dir"].parent)
    assert log.runs == [f"exp/{metadata.EPOCH_RUN}"]
    assert log.run().layers == list(LAYERS)


def test_grids_equal_what_tensorboard_reads(trained):
    run = actlog.read(trained["log_dir"]).run()
    acc = accumulator(run_dir(trained))
    for layer in LAYERS:
        for probe in range(PROBES):
            tag = metadata.grid_tag(layer, probe, PROBES)
            events = acc.Tensors(tag)
            expected_steps = [e.step for e in events]
            expected = np.stack([png(e.tensor_proto.string_val[2]) for e in events])
            steps, grids = run.grids(layer, probe)
            assert steps.tolist() == expected_steps == [0, 1, 2, 3]
            assert grids.dtype == np.uint8 and grids.shape == expected.shape
            np.testing.assert_array_equal(grids, expected)
            np.testing.assert_array_equal(run.grid(layer, probe), expected[-1])
            np.testing.assert_array_equal(run.grid(layer, probe, step=1), expected[1])


def test_probe_images_equal_what_tensorboard_reads(trained):
    run = actlog.read(trained["log_dir"]).run()
    acc = accumulator(run_dir(trained))
    for probe in range(PROBES):
        events = acc.Tensors(metadata.probe_image_tag(probe, PROBES))
        np.testing.assert_array_equal(
            run.probe_image(probe), png(events[-1].tensor_proto.string_val[2])
        )
    assert run.probe_image(0).shape == (12, 12, 1)


def test_tile_is_the_channel_normalised_and_upscaled(trained):
    """The crop of a channel's tile shows that channel (per-channel min-max, gray)."""
    run = actlog.read(trained["log_dir"]).run()
    acts = trained["captured"][3][0]  # conv_0 at the last step, (probes, 10, 10, 4)
    grid = run.layer_info("conv_0")["grid"]
    scale = grid["tile_height"] // acts.shape[1]
    for channel in range(acts.shape[-1]):
        tile = run.tile("conv_0", 1, channel, step=3)
        assert tile.shape == (grid["tile_height"], grid["tile_width"], 1)
        a = acts[1, :, :, channel].astype(np.float64)
        span = a.max() - a.min()
        expected = np.rint(255 * (a - a.min()) / span) if span > 1e-6 else np.zeros_like(a)
        np.testing.assert_allclose(tile[::scale, ::scale, 0], expected, atol=1)
    steps, tiles = run.tiles("conv_0", 1, 2)
    assert steps.tolist() == run.steps and tiles.shape[0] == len(steps)
    np.testing.assert_array_equal(tiles[-1], run.tile("conv_0", 1, 2))


# -- statistics ----------------------------------------------------------------------


def numpy_stats(a: np.ndarray) -> dict[str, float]:
    a = a.astype(np.float64)
    flat = a.reshape(-1, a.shape[-1])
    return {
        "mean": a.mean(),
        "std": a.std(),
        "sparsity": np.mean(a == 0),
        "dead_fraction": np.mean(flat.max(axis=0) - flat.min(axis=0) <= 1e-6),
    }


def one_minus_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_last_step_statistics_match_numpy_after_training(trained):
    import keras

    model = trained["model"]
    run = actlog.read(trained["log_dir"]).run()
    for layer in LAYERS:
        probe_model = keras.Model(model.inputs, model.get_layer(layer).output)
        acts = np.asarray(probe_model([trained["probes"]], training=False))
        for stat, value in numpy_stats(acts).items():
            steps, values = run.scalar(layer, stat)
            assert steps[-1] == 3
            assert values.dtype == np.float64
            np.testing.assert_allclose(values[-1], value, rtol=1e-5, atol=1e-6, err_msg=stat)
        flat = acts.reshape(-1, acts.shape[-1])
        steps, means = run.channel_stats(layer, "channel_mean")
        assert means.dtype == np.float32 and means.shape == (4, acts.shape[-1])
        np.testing.assert_allclose(means[-1], flat.mean(axis=0), rtol=1e-5, atol=1e-6)
        _, maxima = run.channel_stats(layer, "max")  # short form accepted
        np.testing.assert_allclose(maxima[-1], flat.max(axis=0), rtol=1e-5, atol=1e-6)


def test_every_step_statistics_and_drift_match_numpy(trained):
    captured = trained["captured"]
    run = actlog.read(trained["log_dir"]).run()
    for index, layer in enumerate(LAYERS):
        scalars = run.scalars(layer)
        assert set(scalars) == set(metadata.SCALAR_STATS)
        for stat in ("mean", "std", "sparsity", "dead_fraction"):
            steps, values = scalars[stat]
            assert steps.tolist() == [0, 1, 2, 3]
            expected = [numpy_stats(captured[s][index])[stat] for s in steps]
            np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6, err_msg=stat)
        steps, drift = scalars["drift"]
        assert steps.tolist() == [1, 2, 3]  # no drift before a previous event exists
        expected = [one_minus_cos(captured[s][index], captured[s - 1][index]) for s in steps]
        np.testing.assert_allclose(drift, expected, rtol=1e-3, atol=1e-6)
        steps, channel_drift = run.channel_stats(layer, "channel_drift")
        assert steps.tolist() == [1, 2, 3]
        acts, before = captured[3][index], captured[2][index]
        per_channel = [
            one_minus_cos(acts[..., c], before[..., c])
            if np.any(acts[..., c]) and np.any(before[..., c])
            else channel_drift[-1][c]  # zero-vector conventions are stats.py's to test
            for c in range(acts.shape[-1])
        ]
        np.testing.assert_allclose(channel_drift[-1], per_channel, rtol=1e-3, atol=1e-6)


def test_channel_stat_is_one_column_of_channel_stats(trained):
    run = actlog.read(trained["log_dir"]).run()
    for stat in metadata.CHANNEL_STATS:
        steps, values = run.channel_stats("conv_1", stat)
        one_steps, one = run.channel_stat("conv_1", stat, 5)
        assert one_steps.tolist() == steps.tolist()
        assert one.dtype == np.float32
        np.testing.assert_array_equal(one, values[:, 5])
    # conv_1 has 6 channels: a 7th exists at no step (a layer can grow between fits).
    steps, values = run.channel_stat("conv_1", "mean", 6)
    assert steps.tolist() == [] and values.shape == (0,)


# -- errors that name what exists ---------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda log: log.run("nope"), r"No run 'nope'.*Runs: \['activations'\]"),
        (lambda log: log.run().grid("dense", 0), r"No layer 'dense'.*\['conv_0', 'conv_1'\]"),
        (lambda log: log.run().grid("conv_0", 2), r"No probe 2 .* 2 probes \(0\.\.1\)"),
        (lambda log: log.run().grid("conv_0", 0, step=9), r"No step 9 .*steps 0, 1, 2, 3"),
        (lambda log: log.run().tile("conv_1", 0, 6), r"Channel 6 of layer 'conv_1'.*0\.\.5"),
        (lambda log: log.run().scalar("conv_0", "median"), r"Unknown statistic 'median'"),
        (lambda log: log.run().channel_stats("conv_0", "min"), r"Accepted: \['channel_mean'"),
        (lambda log: log.run().channel_stat("conv_0", "mean", -1), r"non-negative integer; received -1"),
        (lambda log: log["nope"], r"No run 'nope'"),
    ],
)
def test_errors_name_what_exists(trained, call, match):
    log = actlog.read(trained["log_dir"])
    with pytest.raises(LogError, match=match):
        call(log)


def test_missing_and_foreign_log_dirs(trained, tmp_path):
    with pytest.raises(LogError, match=r"does not exist"):
        actlog.read(tmp_path / "missing")
    with pytest.raises(LogError, match=r"no event files at all"):
        actlog.read(tmp_path)
    with pytest.raises(LogError, match=r"without actlog data in: \['\.'\]"):
        actlog.read(trained["log_dir"] / "train")
    assert issubclass(LogError, ValueError)


# -- damaged and unfinished files ------------------------------------------------------


def damaged_copy(trained, tmp_path, cut):
    """Copy the epoch run; damage the second file inside the record holding conv_0/probe_1 at step 3.

    Returns the copy, the damaged file and the number of records left intact in it.
    """
    from tensorboard.compat.proto import event_pb2

    copy = tmp_path / "log" / metadata.EPOCH_RUN
    shutil.copytree(run_dir(trained), copy)
    last = event_files(copy)[-1]
    data = bytearray(last.read_bytes())
    target = metadata.grid_tag("conv_0", 1, PROBES)
    found = [
        (index, start, length)
        for index, (start, length) in enumerate(records(last))
        if any(
            v.tag == target
            for v in event_pb2.Event.FromString(
                bytes(data[start + 12 : start + 12 + length])
            ).summary.value
        )
    ]
    assert len(found) == 1, f"{target} once in {last}"
    index, start, length = found[0]
    if cut == "length_crc":
        data[start + 8] ^= 0xFF
        last.write_bytes(bytes(data))
    else:
        keep = {"header": start + 6, "data": start + 12 + length // 2, "footer": start + length + 14}
        last.write_bytes(bytes(data[: keep[cut]]))
    return copy, last, index


@pytest.mark.parametrize("cut", ["header", "data", "footer", "length_crc"])
def test_damaged_last_record_keeps_everything_before_it(trained, tmp_path, cut):
    copy, last, intact = damaged_copy(trained, tmp_path, cut)
    with pytest.warns(RuntimeWarning, match=last.name) as caught:
        run = actlog.read(copy.parent).run()
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1

    expected: dict[str, set[int]] = {}
    for path in event_files(copy)[:-1]:
        for tag, steps in tag_steps(path).items():
            expected.setdefault(tag, set()).update(steps)
    for tag, steps in tag_steps(last, limit=intact).items():
        expected.setdefault(tag, set()).update(steps)
    full = actlog.read(trained["log_dir"]).run()
    for layer in LAYERS:
        for probe in range(PROBES):
            tag = metadata.grid_tag(layer, probe, PROBES)
            steps, grids = run.grids(layer, probe)
            assert steps.tolist() == sorted(expected[tag]), tag
            full_steps, full_grids = full.grids(layer, probe)
            np.testing.assert_array_equal(grids, full_grids[: len(steps)])
        for stat, (steps, _) in run.scalars(layer).items():
            assert steps.tolist() == sorted(expected[metadata.stat_tag(layer, stat)])
    # The damaged record held step 3 (an event is one record): step 3 is gone for
    # every tag, and nothing before it.
    assert run.grid_steps("conv_0", 1) == [0, 1, 2]
    assert run.grid_steps("conv_0", 0) == [0, 1, 2]


def test_record_cut_at_a_boundary_reads_without_warning(trained, tmp_path):
    copy = tmp_path / "log" / metadata.EPOCH_RUN
    shutil.copytree(run_dir(trained), copy)
    last = event_files(copy)[-1]
    start, _ = records(last)[-1]  # the last event (step 3) is one record
    last.write_bytes(last.read_bytes()[:start])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = actlog.read(copy.parent).run()
    assert run.steps == [0, 1, 2]


def test_verify_checks_data_crc(trained, tmp_path):
    copy = tmp_path / "log" / metadata.EPOCH_RUN
    shutil.copytree(run_dir(trained), copy)
    first = event_files(copy)[0]
    data = bytearray(first.read_bytes())
    start, length = records(first)[-1]
    data[start + 12 + length + 1] ^= 0xFF  # the last record's data CRC
    first.write_bytes(bytes(data))
    intact = actlog.read(trained["log_dir"], verify=True).run()
    assert intact.steps == [0, 1, 2, 3]
    with pytest.warns(RuntimeWarning, match="fails its CRC check"):
        actlog.read(copy.parent, verify=True)


def _log_with_metadata_version(log_dir, version: int) -> None:
    """A run of one event: a manifest and a channel statistic whose plugin metadata has ``version``."""
    from tensorboard.compat.proto import summary_pb2

    from actlog import storage
    from actlog.writer import RunWriter

    text = metadata.manifest(actlog_version="0", step_axis="epoch", probes=0, layers=[])
    manifest = summary_pb2.Summary.Value(tag=metadata.MANIFEST_TAG)
    manifest.tensor.dtype = 7  # DT_STRING
    manifest.tensor.string_val.append(text.encode())
    stat = summary_pb2.Summary.Value(tag="conv_0/channel_mean")
    stat.metadata.plugin_data.plugin_name = metadata.PLUGIN_NAME
    stat.metadata.plugin_data.content = json.dumps(
        {"version": version, "kind": metadata.KIND_CHANNEL_STATS, "layer": "conv_0"}
    ).encode()
    stat.tensor.dtype = 1  # DT_FLOAT
    stat.tensor.tensor_shape.dim.add(size=2)
    stat.tensor.float_val.extend([0.5, 1.5])
    writer = RunWriter(storage.LocalStorage(), str(log_dir / metadata.EPOCH_RUN))
    writer.write(1, summary_pb2.Summary(value=[manifest, stat]).SerializeToString())
    writer.close()


def test_plugin_metadata_of_a_newer_actlog_is_refused(tmp_path):
    _log_with_metadata_version(tmp_path / "known", codec.METADATA_VERSION)
    assert actlog.read(tmp_path / "known").runs == [metadata.EPOCH_RUN]
    newer = codec.METADATA_VERSION + 1
    _log_with_metadata_version(tmp_path / "newer", newer)
    with pytest.raises(
        LogError,
        match=rf"tag 'conv_0/channel_mean': actlog metadata version {newer} is newer than this actlog "
        rf"understands \({codec.METADATA_VERSION}\); upgrade actlog to read this log",
    ):
        actlog.read(tmp_path / "newer")


def test_crc32c_known_values():
    # The CRC-32C check value (RFC 3720); the masking is checked on real files below.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_length_crcs_of_a_real_file_verify(trained):
    path = event_files(run_dir(trained))[0]
    data = path.read_bytes()
    for start, length in records(path):
        (stored,) = struct.unpack("<I", data[start + 8 : start + 12])
        assert masked_crc32c(data[start : start + 8]) == stored
        (stored,) = struct.unpack("<I", data[start + 12 + length : start + 16 + length])
        assert masked_crc32c(data[start + 12 : start + 12 + length]) == stored


# -- no TensorFlow; a third-party reader ------------------------------------------------------


def test_reading_and_exporting_import_no_tensorflow(trained, tmp_path):
    code = f"""
import sys
import actlog
from actlog import export
run = actlog.read({str(trained["log_dir"])!r}).run()
run.grids("conv_0", 0); run.scalars("conv_1"); run.channel_stats("conv_1", "channel_mean")
export.export(run, "conv_0", 0, {str(tmp_path / "x.gif")!r})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tbparse_reads_actlog_images_and_scalars(trained):
    from tbparse import SummaryReader

    run = actlog.read(trained["log_dir"]).run()
    # tf.summary writes TF2 images and scalars as tensors; tbparse lists them there.
    frame = SummaryReader(str(run_dir(trained)), pivot=False).tensors
    mean = frame[frame.tag == "conv_1/mean"].sort_values("step")
    steps, values = run.scalar("conv_1", "mean")
    assert mean.step.tolist() == steps.tolist()
    np.testing.assert_allclose(mean.value.to_numpy(dtype=np.float64), values, rtol=1e-6)
    images = frame[frame.tag == metadata.grid_tag("conv_1", 0, PROBES)].sort_values("step")
    steps, grids = run.grids("conv_1", 0)
    assert images.step.tolist() == steps.tolist()
    for value, grid in zip(images.value, grids, strict=True):
        width, height, encoded = value[0], value[1], value[2]
        assert (int(width), int(height)) == (grid.shape[1], grid.shape[0])
        np.testing.assert_array_equal(png(encoded), grid)
