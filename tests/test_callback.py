"""ActivationLogger end to end: what lands in TensorBoard, read back exactly.

Each module-scoped fixture trains once and reads its runs back through
TensorBoard's EventAccumulator (conftest ``read_run``); the tests assert on
exact tag sets, steps and pixels. Configuration errors are checked to be
raised in ``__init__`` or before the first training step.
"""

from __future__ import annotations

import os
import re
import types
import warnings

import keras
import numpy as np
import pytest
from conftest import (
    BACKEND,
    fails_before_training,
    keras_tensorboard,
    layout_of,
    steps,
    tensorflow_only,
    to_numpy,
)

import actlog
from actlog import grid, metadata

pytestmark = pytest.mark.backend

TINY_LAYERS = ("conv_0", "pool_0", "conv_1")
EPOCH_LOG_RUNS = [] if BACKEND == "tensorflow" else ["train"]  # epoch_logs=None: Keras' logs off TensorFlow
TINY_SHAPES = {"conv_0": (10, 10, 4), "pool_0": (5, 5, 4), "conv_1": (3, 3, 6)}
TINY_CLASSES = {"conv_0": "Conv2D", "pool_0": "MaxPooling2D", "conv_1": "Conv2D"}


def grid_tags(layer: str, k: int) -> set[str]:
    return {metadata.grid_tag(layer, i, k) for i in range(k)}


def epoch_tags(layers, k: int, *, stats: bool = True, probes: bool = True) -> set[str]:
    """Every tag one epoch run holds after at least two events."""
    tags = {metadata.LAYERS_TEXT_TAG, metadata.MANIFEST_TAG}
    if probes:
        tags |= {metadata.probe_image_tag(i, k) for i in range(k)}
    for layer in layers:
        tags |= grid_tags(layer, k) | {metadata.gram_tag(layer)}  # with statistics on or off
        if stats:
            tags |= {metadata.stat_tag(layer, s) for s in metadata.SCALAR_STATS + metadata.CHANNEL_STATS}
    return tags


def manifests(run: dict) -> list[tuple[int, dict]]:
    return [(step, metadata.parse_manifest(text)) for step, text in run[metadata.MANIFEST_TAG]]


def layer_outputs(model, probes) -> dict[str, np.ndarray]:
    """Each tiny layer's output for the probes, from a hand-built intermediate model."""
    out = {}
    for name in TINY_LAYERS:
        sub = keras.Model(model.input, model.get_layer(name).output)
        out[name] = to_numpy(sub(probes, training=False))
    return out


def expected_grid(acts: np.ndarray, entry: dict) -> np.ndarray:
    return grid.render(grid.as_maps(acts), layout_of(entry), norm=entry["norm"], cmap=entry["cmap"])


def log_step_zero(model, log_dir, probes, **kwargs) -> actlog.ActivationLogger:
    """Drive the Keras hooks by hand up to the step-0 event: no training needed."""
    logger = actlog.ActivationLogger(log_dir, probes, **kwargs)
    logger.set_model(model)
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    logger.on_train_end()
    return logger


def ns(**kwargs) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kwargs)


# --------------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, tiny_model_factory, tiny_data, read_run):
    """3 epochs, freq=1, batch logging every 2 batches in epoch 0, next to Keras' TensorBoard.

    16 samples, batch size 4: 4 optimizer steps per epoch, so batch events
    fall at global steps 2 and 4. Keras' TensorBoard(update_freq=3) sets a
    recording condition (global batch % 3 == 0) that is false at both of
    them and at the ends of epochs 1 and 2 (batches 4 and 8).
    """
    log_dir = tmp_path_factory.mktemp("main")
    model = tiny_model_factory(0)
    x, y = tiny_data
    probes = x[:2].copy()
    probes_before = probes.copy()
    logger = actlog.ActivationLogger(log_dir, probes, freq=1, batch_freq=actlog.Batches(2, epochs=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
            callbacks=[logger, *keras_tensorboard(log_dir, update_freq=3)],
        )
    return ns(
        log_dir=log_dir, model=model, logger=logger, probes=probes, probes_before=probes_before,
        acts=layer_outputs(model, probes), warnings=[str(w.message) for w in caught],
        epoch=read_run(log_dir / metadata.EPOCH_RUN),
        batch=read_run(log_dir / metadata.BATCH_RUN),
        train=read_run(log_dir / "train"),
    )


def test_main_run_directories(main_run):
    # train/: Keras' TensorBoard callback's on TensorFlow, actlog's epoch logs elsewhere.
    assert sorted(os.listdir(main_run.log_dir)) == ["activations", "activations_batch", "train"]
    # (Keras' own, with update_freq=3, keeps only what its recording condition lets through.)
    logged = [step for step, _ in main_run.train["epoch_loss"]]
    assert logged == ([2] if BACKEND == "tensorflow" else [0, 1, 2])
    assert main_run.logger.misses == {}
    assert not [w for w in main_run.warnings if "actlog" in w]


def test_epoch_run_has_exactly_the_documented_tags(main_run):
    assert set(main_run.epoch) == epoch_tags(TINY_LAYERS, 2)


def test_epoch_steps_are_epochs_completed(main_run):
    run = main_run.epoch
    for layer in TINY_LAYERS:
        for tag in grid_tags(layer, 2):
            assert steps(run, tag) == [0, 1, 2, 3]
        for stat in ("mean", "std", "sparsity", "dead_fraction", "channel_mean", "channel_max"):
            assert steps(run, f"{layer}/{stat}") == [0, 1, 2, 3]
        # drift compares with the previous event: from the second event on
        assert steps(run, f"{layer}/drift") == [1, 2, 3]
        assert steps(run, f"{layer}/channel_drift") == [1, 2, 3]
    for tag in (metadata.MANIFEST_TAG, metadata.LAYERS_TEXT_TAG, "actlog/probe_0", "actlog/probe_1"):
        assert steps(run, tag) == [0]


def test_batch_run_uses_global_steps_during_first_epoch_only(main_run):
    run = main_run.batch
    assert set(run) == epoch_tags(TINY_LAYERS, 2)
    # batch_freq=2 with 4 batches per epoch: after batches 2 and 4 of epoch 0
    for layer in TINY_LAYERS:
        for tag in grid_tags(layer, 2):
            assert steps(run, tag) == [2, 4]
        assert steps(run, f"{layer}/drift") == [4]
    (_, batch_manifest), = manifests(run)
    (_, epoch_manifest), = manifests(main_run.epoch)
    assert batch_manifest["step_axis"] == metadata.STEP_AXIS_GLOBAL_STEP == "global_step"
    assert epoch_manifest["step_axis"] == metadata.STEP_AXIS_EPOCH == "epoch"


@tensorflow_only
def test_keras_tensorboard_in_same_log_dir_keeps_everything(main_run):
    # Keras' own scalars are written as Keras alone writes them: its recording condition
    # also gates its own epoch summaries, kept only where epoch e ends on a batch % 3 == 0 ...
    assert steps(main_run.train, "epoch_loss") == [e for e in range(3) if 4 * (e + 1) % 3 == 0] == [2]
    assert steps(main_run.train, "batch_loss") == [3, 6, 9, 12]
    # ... and its update_freq=3 recording condition dropped none of actlog's summaries,
    # though it was false at the batch events and at the ends of epochs 1 and 2.
    for layer in TINY_LAYERS:
        for tag in grid_tags(layer, 2):
            assert steps(main_run.epoch, tag) == [0, 1, 2, 3]
            assert steps(main_run.batch, tag) == [2, 4]
        assert steps(main_run.epoch, f"{layer}/mean") == [0, 1, 2, 3]


def test_manifest_describes_every_grid(main_run):
    (step, manifest), = manifests(main_run.epoch)
    assert step == 0
    assert manifest["version"] == metadata.METADATA_VERSION
    assert manifest["actlog_version"] == actlog.__version__
    assert manifest["probes"] == 2
    assert manifest["probe_tags"] == ["actlog/probe_0", "actlog/probe_1"]
    assert [e["name"] for e in manifest["layers"]] == list(TINY_LAYERS)
    for entry in manifest["layers"]:
        name = entry["name"]
        assert entry["path"] == name
        assert entry["class"] == TINY_CLASSES[name]
        assert tuple(entry["output_shape"]) == TINY_SHAPES[name]
        assert entry["channels"] == list(range(TINY_SHAPES[name][-1]))
        assert entry["norm"] == "channel" and entry["cmap"] == "gray"
        assert entry["tags"] == [f"{name}/probe_0", f"{name}/probe_1"]
        # the stored layout is the one plan_layout gives for these channels
        assert layout_of(entry) == grid.plan_layout(TINY_SHAPES[name][:2], entry["channels"])


def test_last_grids_equal_grids_recomputed_from_trained_model(main_run):
    (_, manifest), = manifests(main_run.epoch)
    for entry in manifest["layers"]:
        for i, tag in enumerate(entry["tags"]):
            last_step, image = main_run.epoch[tag][-1]
            assert last_step == 3
            expected = expected_grid(main_run.acts[entry["name"]][i], entry)
            assert image.dtype == np.uint8 and expected.dtype == np.uint8
            np.testing.assert_array_equal(image, expected)
    # the grids did change while training: step 0 differs from step 3
    first, last = main_run.epoch["conv_1/probe_0"][0][1], main_run.epoch["conv_1/probe_0"][-1][1]
    assert not np.array_equal(first, last)


def test_probe_images_are_the_probes(main_run):
    for i in range(2):
        (step, image), = main_run.epoch[f"actlog/probe_{i}"]
        np.testing.assert_array_equal(image, grid.to_image(main_run.probes_before[i]))


def test_statistics_match_the_activations(main_run):
    for name in TINY_LAYERS:
        acts = main_run.acts[name].astype(np.float64)
        step, channel_mean = main_run.epoch[f"{name}/channel_mean"][-1]
        assert step == 3 and channel_mean.dtype == np.float32
        np.testing.assert_allclose(channel_mean, acts.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
        _, channel_max = main_run.epoch[f"{name}/channel_max"][-1]
        np.testing.assert_allclose(channel_max, acts.max(axis=(0, 1, 2)), rtol=1e-6)
        _, mean = main_run.epoch[f"{name}/mean"][-1]
        assert mean == pytest.approx(acts.mean(), rel=1e-5, abs=1e-6)
        _, sparsity = main_run.epoch[f"{name}/sparsity"][-1]
        assert sparsity == pytest.approx(float((acts == 0).mean()))


def test_probe_function_traced_once_for_every_event(main_run):
    # 4 epoch events and 2 batch events through one compiled function
    assert main_run.logger.probe_function.traces == 1


def test_callers_probes_untouched(main_run):
    np.testing.assert_array_equal(main_run.probes, main_run.probes_before)
    assert main_run.probes.flags.writeable
    assert not np.shares_memory(main_run.logger.probes, main_run.probes)
    assert not main_run.logger.probes.flags.writeable


def test_layers_text_summary(main_run):
    (step, text), = main_run.epoch[metadata.LAYERS_TEXT_TAG]
    assert step == 0
    assert text.splitlines() == [
        "| layer | path | class | output shape | channels shown |",
        "|---|---|---|---|---|",
        "| conv_0 | conv_0 | Conv2D | (10, 10, 4) | 4 of 4 |",
        "| pool_0 | pool_0 | MaxPooling2D | (5, 5, 4) | 4 of 4 |",
        "| conv_1 | conv_1 | Conv2D | (3, 3, 6) | 6 of 6 |",
    ]


@pytest.fixture(scope="module")
def two_fits(tmp_path_factory, tiny_model_factory, tiny_data, read_run):
    """One logger, two fit() calls (3 then 2 epochs), 3 most active channels per layer."""
    log_dir = tmp_path_factory.mktemp("two_fits")
    model = tiny_model_factory(1)
    x, y = tiny_data
    probes = x[:2].copy()
    # The step-0 event sees the untrained weights: the selection must be made from these.
    before = layer_outputs(model, probes)
    logger = actlog.ActivationLogger(
        log_dir, probes, layers=["conv_0", "conv_1"], max_channels=3, channels="most_active",
        cmap="viridis",
    )
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    after_first = read_run(log_dir / metadata.EPOCH_RUN)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    return ns(
        logger=logger, before=before, after_first=after_first,
        acts=layer_outputs(model, probes), run=read_run(log_dir / metadata.EPOCH_RUN),
    )


def test_second_fit_continues_steps(two_fits):
    assert steps(two_fits.after_first, "conv_0/probe_0") == [0, 1, 2, 3]
    for tag in grid_tags("conv_0", 2) | grid_tags("conv_1", 2) | {"conv_1/mean"}:
        assert steps(two_fits.run, tag) == [0, 1, 2, 3, 4, 5]
    # the manifest, layer table and probe images are rewritten at each fit's first event
    assert steps(two_fits.run, metadata.MANIFEST_TAG) == [0, 4]
    assert steps(two_fits.run, metadata.LAYERS_TEXT_TAG) == [0, 4]
    assert steps(two_fits.run, "actlog/probe_1") == [0, 4]
    assert two_fits.logger.misses == {}


def test_most_active_channels_fixed_at_first_event(two_fits):
    expected = {
        name: [
            int(c)
            for c in grid.select_channels(
                np.stack([grid.as_maps(a) for a in two_fits.before[name]]), 3, "most_active"
            )
        ]
        for name in ("conv_0", "conv_1")
    }
    # the seed makes "most active" differ from "first", so the choice is really exercised
    assert expected["conv_1"] != [0, 1, 2]
    for _, manifest in manifests(two_fits.run):
        assert {e["name"]: e["channels"] for e in manifest["layers"]} == expected
        for entry in manifest["layers"]:
            shape = TINY_SHAPES[entry["name"]]
            assert layout_of(entry) == grid.plan_layout(shape[:2], expected[entry["name"]])


def test_most_active_grids_show_the_chosen_channels(two_fits):
    (_, manifest), = manifests(two_fits.run)[-1:]
    for entry in manifest["layers"]:
        for i, tag in enumerate(entry["tags"]):
            step, image = two_fits.run[tag][-1]
            assert step == 5 and image.shape[-1] == 3
            np.testing.assert_array_equal(image, expected_grid(two_fits.acts[entry["name"]][i], entry))


def test_text_summary_counts_shown_channels(two_fits):
    _, text = two_fits.run[metadata.LAYERS_TEXT_TAG][-1]
    assert text.splitlines()[2:] == [
        "| conv_0 | conv_0 | Conv2D | (10, 10, 4) | 3 of 4 |",
        "| conv_1 | conv_1 | Conv2D | (3, 3, 6) | 3 of 6 |",
    ]


# --------------------------------------------------------------------------- schedules


@pytest.fixture(scope="module")
def shared_model(tiny_model_factory):
    """One model for the schedule tests: its compiled train function is reused between fits."""
    return tiny_model_factory(2)


def test_freq_2_logs_every_other_epoch(tmp_path, shared_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers="conv_1", freq=2)
    shared_model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[logger])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert set(run) == epoch_tags(["conv_1"], 2)
    assert steps(run, "conv_1/probe_0") == [0, 2, 4]
    assert steps(run, "conv_1/drift") == [2, 4]
    assert sorted(os.listdir(tmp_path)) == ["activations", *EPOCH_LOG_RUNS]


def test_freq_2_across_two_fits_counts_every_epoch(tmp_path, shared_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, actlog.Probes(x[:2], stats=False), layers="conv_0", freq=2)
    for _ in range(2):
        shared_model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    # step = epochs completed over both fits (6), logged when it is a multiple of 2
    assert steps(run, "conv_0/probe_0") == [0, 2, 4, 6]
    assert steps(run, metadata.MANIFEST_TAG) == [0, 4]


def test_freq_0_writes_no_run(tmp_path, shared_model, tiny_data):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], freq=0, epoch_logs=False)
    shared_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    assert os.listdir(tmp_path) == []
    assert logger.probe_function is None


def test_initial_epoch_resume_in_fresh_logger(tmp_path, shared_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], freq=1)
    shared_model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0, callbacks=[logger])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    # no step-0 baseline: the weights are not the untrained ones
    assert steps(run, "conv_0/probe_0") == [3, 4]
    assert steps(run, "conv_0/probe_1") == [3, 4]
    assert steps(run, metadata.MANIFEST_TAG) == [3]
    assert steps(run, "conv_0/drift") == [4]


def test_batch_freq_with_epoch_logging_off(tmp_path, shared_model, tiny_data, read_run):
    x, y = tiny_data
    start = int(shared_model.optimizer.iterations.numpy())
    logger = actlog.ActivationLogger(
        tmp_path, actlog.Probes(x[:2], stats=False), layers=["conv_0"], freq=0,
        batch_freq=actlog.Batches(1, epochs=2),
    )
    shared_model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    assert sorted(os.listdir(tmp_path)) == ["activations_batch", *EPOCH_LOG_RUNS]
    run = read_run(tmp_path / metadata.BATCH_RUN)
    # two batches per epoch, logged after each during the first two epochs
    assert steps(run, "conv_0/probe_0") == [start + 1, start + 2, start + 3, start + 4]
    assert set(run) == epoch_tags(["conv_0"], 2, stats=False)
    assert logger.probe_function.traces == 1


# --------------------------------------------------------------------------- probes


def test_probes_copied_once_and_read_only(tmp_path, tiny_probes):
    original = tiny_probes.copy()
    logger = actlog.ActivationLogger(tmp_path, tiny_probes)
    assert logger.probes is not tiny_probes
    assert not np.shares_memory(logger.probes, tiny_probes)
    assert not logger.probes.flags.writeable
    assert tiny_probes.flags.writeable
    tiny_probes[:] = 7.0  # the caller may reuse their array
    np.testing.assert_array_equal(logger.probes, original)
    with pytest.raises(ValueError, match="read-only"):
        logger.probes[0, 0, 0, 0] = 1.0


def test_list_of_probe_batches_copied_each(tmp_path):
    a = np.ones((2, 4, 4, 1), np.float32)
    b = np.zeros((2, 3), np.int32)
    logger = actlog.ActivationLogger(tmp_path, [a, b])
    assert isinstance(logger.probes, list) and len(logger.probes) == 2
    for copy, source in zip(logger.probes, (a, b), strict=True):
        assert not np.shares_memory(copy, source) and not copy.flags.writeable
        np.testing.assert_array_equal(copy, source)
    assert a.flags.writeable and b.flags.writeable


# --------------------------------------------------------------------------- layer choice


LAYER_CHOICES = {
    "name": (lambda m: "conv_1", {"conv_1": "conv_1"}),
    "names_in_given_order": (lambda m: ["conv_1", "conv_0"], {"conv_1": "conv_1", "conv_0": "conv_0"}),
    "layer_object": (lambda m: m.get_layer("pool_0"), {"pool_0": "pool_0"}),
    "class": (lambda m: keras.layers.Conv2D, {"conv_0": "conv_0", "conv_1": "conv_1"}),
    "regex": (lambda m: re.compile(r"(conv|pool)_0"), {"conv_0": "conv_0", "pool_0": "pool_0"}),
    "mixed_list": (
        lambda m: [m.get_layer("conv_1"), "conv_0", keras.layers.MaxPooling2D],
        {"conv_1": "conv_1", "conv_0": "conv_0", "pool_0": "pool_0"},
    ),
    "mapping": (
        lambda m: {"edges": "conv_0", "parts": m.get_layer("conv_1"), "pooled": re.compile("pool_.")},
        {"edges": "conv_0", "parts": "conv_1", "pooled": "pool_0"},
    ),
    "none": (lambda m: None, {"conv_0": "conv_0", "pool_0": "pool_0", "conv_1": "conv_1"}),
    "dense_by_name": (lambda m: ["logits"], {"logits": "logits"}),
}


@pytest.mark.parametrize("choice", list(LAYER_CHOICES))
def test_layer_choice(choice, tmp_path, shared_model, tiny_probes, read_run):
    spec, expected = LAYER_CHOICES[choice]
    logger = log_step_zero(shared_model, tmp_path, tiny_probes, layers=spec(shared_model))
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    (_, manifest), = manifests(run)
    # display name -> layer path, in the order chosen
    assert {e["name"]: e["path"] for e in manifest["layers"]} == expected
    assert [e["name"] for e in manifest["layers"]] == list(expected)
    shown = {metadata.parse_grid_tag(tag) for tag in run} - {None}
    assert shown == {(name, i) for name in expected for i in range(2)}
    assert steps(run, f"{next(iter(expected))}/probe_0") == [0]
    assert logger.misses == {}


def test_mapping_display_names_carry_through_tags_and_table(tmp_path, shared_model, tiny_probes, read_run):
    log_step_zero(shared_model, tmp_path, tiny_probes, layers={"edge detectors": "conv_0"})
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert set(run) == {
        metadata.MANIFEST_TAG, metadata.LAYERS_TEXT_TAG, "actlog/probe_0", "actlog/probe_1",
        "edge detectors/probe_0", "edge detectors/probe_1", "edge detectors/gram",
        *(f"edge detectors/{s}" for s in ("mean", "std", "sparsity", "dead_fraction",
                                           "channel_mean", "channel_max")),
    }
    _, text = run[metadata.LAYERS_TEXT_TAG][0]
    assert text.splitlines()[2] == "| edge detectors | conv_0 | Conv2D | (10, 10, 4) | 4 of 4 |"


def test_dense_layer_drawn_as_one_pixel_tiles_on_a_near_square_grid(tmp_path, read_run):
    """As the README says: a 16-unit Dense layer is a 4 x 4 grid of one-pixel tiles, upscaled."""
    keras.utils.set_random_seed(1)
    i = keras.Input((12, 12, 1))
    model = keras.Model(i, keras.layers.Dense(16, name="units")(keras.layers.Flatten()(i)))
    model.compile("sgd", "mse")
    probes = np.random.default_rng(1).random((2, 12, 12, 1)).astype(np.float32)
    log_step_zero(model, tmp_path, probes, layers=["units"], layout=actlog.Layout(min_tile=4))
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    (_, manifest), = manifests(run)
    (entry,) = manifest["layers"]
    assert tuple(entry["output_shape"]) == (16,) and entry["channels"] == list(range(16))
    assert (entry["grid"]["rows"], entry["grid"]["cols"], entry["grid"]["tile_height"]) == (4, 4, 4)
    acts = to_numpy(model(probes, training=False))
    for i in range(2):
        np.testing.assert_array_equal(run[f"units/probe_{i}"][0][1], expected_grid(acts[i], entry))


def test_dense_layer_of_three_units(tmp_path, shared_model, tiny_probes, read_run):
    log_step_zero(shared_model, tmp_path, tiny_probes, layers=["logits"],
                  layout=actlog.Layout(min_tile=4))
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    (_, manifest), = manifests(run)
    (entry,) = manifest["layers"]
    assert tuple(entry["output_shape"]) == (3,) and entry["channels"] == [0, 1, 2]
    acts = to_numpy(keras.Model(shared_model.input, shared_model.output)(tiny_probes, training=False))
    for i in range(2):
        np.testing.assert_array_equal(run[f"logits/probe_{i}"][0][1], expected_grid(acts[i], entry))


# --------------------------------------------------------------------------- errors
# (The table of bad configurations is tests/test_validation.py; these need other models.)


@pytest.fixture(scope="module")
def scalar_model():
    """A model whose last layer gives one scalar per sample and which has no spatial layer."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    score = keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=-1), name="score")(hidden)
    model = keras.Model(inputs, score)
    model.compile(optimizer="sgd", loss="mse")
    return model


SCALAR_DATA = (np.ones((8, 4), np.float32), np.zeros((8,), np.float32))


def test_explicit_layer_without_drawable_output(tmp_path, scalar_model):
    logger = actlog.ActivationLogger(tmp_path, SCALAR_DATA[0][:2], layers=["score"])
    fails_before_training(
        scalar_model, *SCALAR_DATA, logger, exc=ValueError, batch_size=8, match=
        r"Layer 'score' \(Lambda\) has output shape \(None,\): .*cannot be drawn\. "
        r"Accepted: layers whose output per sample has rank 1 to 4",
    )


def test_layers_none_without_spatial_layers(tmp_path, scalar_model):
    logger = actlog.ActivationLogger(tmp_path, SCALAR_DATA[0][:2])
    fails_before_training(
        scalar_model, *SCALAR_DATA, logger, exc=ValueError, batch_size=8, match=
        r"layers=None watches layers with a spatial output \(rank 2 to 4 per sample.*"
        r"Layers and their outputs: hidden \(None, 3\), score \(None,\)",
    )


def test_log_dir_created_in_init(tmp_path, tiny_probes):
    target = tmp_path / "a" / "b"
    logger = actlog.ActivationLogger(target, tiny_probes)
    assert target.is_dir() and os.listdir(target) == []
    assert logger.log_dir == str(target)


def test_log_now_before_training(tmp_path, tiny_probes):
    logger = actlog.ActivationLogger(tmp_path, tiny_probes)
    with pytest.raises(RuntimeError, match=r"log_now\(\) needs a model"):
        logger.log_now(0)


# --------------------------------------------------------------------------- classic MNIST


@pytest.fixture(scope="module")
def classic_run(tmp_path_factory, classic_model_factory, read_run):
    """The article's ConvNet, 1 epoch on 64 random 28 x 28 digits, 8 probes."""
    log_dir = tmp_path_factory.mktemp("classic")
    rng = np.random.default_rng(7)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=64)
    model = classic_model_factory(0)
    logger = actlog.ActivationLogger(log_dir, x[:8], layers=["conv_0", "conv_1"], freq=1)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[logger])
    return ns(logger=logger, run=read_run(log_dir / metadata.EPOCH_RUN))


def test_classic_mnist_grid_tags_and_steps(classic_run):
    run = classic_run.run
    expected = {f"{layer}/probe_{i}" for layer in ("conv_0", "conv_1") for i in range(8)}
    assert {tag for tag in run if metadata.parse_grid_tag(tag)} == expected
    assert {tag for tag in run if tag.startswith("actlog/probe_")} == {f"actlog/probe_{i}" for i in range(8)}
    for tag in expected:
        assert steps(run, tag) == [0, 1]
    assert classic_run.logger.probe_function.traces == 1
    assert classic_run.logger.misses == {}


def test_classic_mnist_layouts(classic_run):
    (_, manifest), = manifests(classic_run.run)
    conv_0, conv_1 = manifest["layers"]
    assert (conv_0["name"], tuple(conv_0["output_shape"])) == ("conv_0", (26, 26, 32))
    assert (conv_1["name"], tuple(conv_1["output_shape"])) == ("conv_1", (11, 11, 64))
    assert conv_0["channels"] == list(range(32)) and conv_1["channels"] == list(range(64))
    # 32 tiles of 26 x 26 -> 4 x 8, upscaled x2 to 52 px; 64 tiles of 11 x 11 -> 8 x 8, x5 to 55 px
    assert conv_0["grid"] == dict(rows=4, cols=8, tile_height=52, tile_width=52, pad=1, scale=2, stride=1)
    assert conv_1["grid"] == dict(rows=8, cols=8, tile_height=55, tile_width=55, pad=1, scale=5, stride=1)
    for i in range(8):
        assert classic_run.run[f"conv_0/probe_{i}"][-1][1].shape == (4 * 52 + 5, 8 * 52 + 9, 1)
        assert classic_run.run[f"conv_1/probe_{i}"][-1][1].shape == (8 * 55 + 9, 8 * 55 + 9, 1)

