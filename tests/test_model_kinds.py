"""Every model a user trains: model kinds, layer kinds and training setups (issue 5).

Each test trains a tiny seeded model briefly with ``ActivationLogger``, reads
the run back through TensorBoard's ``EventAccumulator`` (conftest
``read_run``) and compares the logged grids pixel for pixel with grids drawn
from activations computed here independently: by calling the watched layer
itself (or a sub-model of the backbone that owns it) on its input, with the
trained weights. Unsupported setups must fail before the first training step
with a message that names what was received.
"""

from __future__ import annotations

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
)

import actlog
from actlog import grid, metadata

pytestmark = pytest.mark.backend

L = keras.layers
RNG_SEED = 0


# --------------------------------------------------------------------------- helpers


def data(shape: tuple[int, ...], n: int = 4, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def train(model, x, y, log_dir, probes, *, epochs=1, fit_kwargs=None, callbacks=(), **logger_kwargs):
    """Compile (unless compiled), fit with an ActivationLogger; return the logger."""
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    logger = actlog.ActivationLogger(log_dir, probes, **logger_kwargs)
    model.fit(x, y, epochs=epochs, batch_size=2, verbose=0, callbacks=[*callbacks, logger],
              **(fit_kwargs or {}))
    assert logger.misses == {}
    return logger


def manifest_entries(run: dict) -> dict[str, dict]:
    _, text = run[metadata.MANIFEST_TAG][-1]
    return {entry["name"]: entry for entry in metadata.parse_manifest(text)["layers"]}


def draw(maps: np.ndarray, entry: dict) -> np.ndarray:
    """One probe's (H, W, C) maps drawn the way the manifest says the grid was drawn."""
    norm = tuple(entry["norm"]) if isinstance(entry["norm"], list) else entry["norm"]
    return grid.render(maps, layout_of(entry), norm=norm, cmap=entry["cmap"])


def assert_same_image(logged: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to one grey level on rare pixels: the logger's compiled graph and an
    eager layer call may round the last float bit differently."""
    assert logged.shape == expected.shape
    diff = np.abs(logged.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} pixels differ by more than one level"
    assert (diff == 0).mean() >= 0.99


def assert_grids(run: dict, name: str, maps_per_probe, step: int) -> None:
    """Every probe's logged grid of layer ``name`` at ``step`` equals ``maps_per_probe[i]`` drawn."""
    entry = manifest_entries(run)[name]
    assert len(entry["tags"]) == len(maps_per_probe)
    for tag, maps in zip(entry["tags"], maps_per_probe, strict=True):
        logged = dict(run[tag])
        assert step in logged, f"{tag}: steps {sorted(logged)}"
        assert_same_image(logged[step], draw(np.asarray(maps, np.float32), entry))


def grid_tags(run: dict) -> set[str]:
    return {tag for tag in run if metadata.parse_grid_tag(tag)}


def expected_tags(names, k: int) -> set[str]:
    return {metadata.grid_tag(name, i, k) for name in names for i in range(k)}


def np_(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)


def head(x):
    return L.Dense(1, name="out")(L.Flatten()(x))


# --------------------------------------------------------------------------- model kinds

X8, Y = data((8, 8, 1)), data((1,))


def sequential(kind: str) -> keras.Model:
    keras.utils.set_random_seed(1)
    if kind == "keras_input":
        first = [keras.Input((8, 8, 1)), L.Conv2D(3, 3, name="conv", activation="relu")]
    elif kind == "input_shape":
        first = [L.Conv2D(3, 3, name="conv", activation="relu", input_shape=(8, 8, 1))]
    else:  # deferred: no input shape until fit() sees data
        first = [L.Conv2D(3, 3, name="conv", activation="relu")]
    return keras.Sequential([*first, L.MaxPooling2D(name="pool"), L.Flatten(), L.Dense(1)])


@pytest.mark.parametrize("kind", ["keras_input", "input_shape", "deferred"])
def test_sequential(kind, tmp_path, read_run):
    model = sequential(kind)
    logger = train(model, X8, Y, tmp_path, X8[:2], epochs=2)
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags(["conv", "pool"], 2)
    assert steps(run, "conv/probe_0") == [0, 1, 2]
    assert logger.probe_function.output_shapes == [(6, 6, 3), (3, 3, 3)]
    conv = np_(model.get_layer("conv")(X8[:2]))
    assert_grids(run, "conv", conv, step=2)
    assert_grids(run, "pool", np_(model.get_layer("pool")(conv)), step=2)


class Block(L.Layer):
    """A user-written composite layer: conv then batch norm, both tracked."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(filters, 3, padding="same", name="block_conv")
        self.norm = L.BatchNormalization(name="block_norm")

    def call(self, x, training=None):
        return keras.ops.relu(self.norm(self.conv(x), training=training))


class Subclassed(keras.Model):
    """No symbolic graph: layers have no ``.output``; one layer is never called."""

    def __init__(self):
        super().__init__()
        self.stem = L.Conv2D(4, 3, name="stem")
        self.block = Block(2, name="block")
        self.unused = L.Conv2D(2, 1, name="unused")
        self.flat = L.Flatten()
        self.dense = L.Dense(1, name="dense")

    def call(self, x):
        return self.dense(self.flat(self.block(self.stem(x))))


def test_subclassed_every_spatial_layer_found_by_running_the_model(tmp_path, read_run):
    keras.utils.set_random_seed(2)
    model = Subclassed()
    logger = train(model, X8, Y, tmp_path, X8[:2], layers="*")
    assert logger.probe_function.strategy == "capture"
    # Walked into the composite layer; the never-called layer and the Dense are left out.
    assert [w.path for w in logger.probe_function.watched] == ["stem", "block/block_conv", "block/block_norm"]
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags(["stem", "block/block_conv", "block/block_norm"], 2)
    stem = np_(model.stem(X8[:2]))
    conv = np_(model.block.conv(stem))
    assert_grids(run, "stem", stem, step=1)
    assert_grids(run, "block/block_conv", conv, step=1)
    assert_grids(run, "block/block_norm", np_(model.block.norm(conv, training=False)), step=1)


def test_subclassed_explicit_dense_and_composite_output(tmp_path, read_run):
    keras.utils.set_random_seed(2)
    model = Subclassed()
    train(model, X8, Y, tmp_path, X8[:2], layers={"features": "block", "score": model.dense})
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    entries = manifest_entries(run)
    assert entries["features"]["output_shape"] == [6, 6, 2]
    assert entries["score"]["output_shape"] == [1]
    stem = np_(model.stem(X8[:2]))
    features = np_(model.block(stem, training=False))
    assert_grids(run, "features", features, step=1)
    score = np_(model.dense(model.flat(features)))
    assert_grids(run, "score", score[:, None, None, :], step=1)


def test_subclassed_layer_never_called_fails_before_training(tmp_path):
    keras.utils.set_random_seed(2)
    model = Subclassed()
    logger = actlog.ActivationLogger(tmp_path, X8[:2], layers=["stem", "unused"])
    fails_before_training(
        model, X8, Y, logger,
        r"Layer 'unused' \(Conv2D\) was not called when the model ran on the probes, so it "
        r"has no output to draw",
    )


def nested_depth_two() -> tuple[keras.Model, keras.Model]:
    """model -> middle -> inner -> conv: the recipe's "not connected to inputs" case."""
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(3, 3, name="deep_conv")],
                             name="inner")
    i = keras.Input((8, 8, 1))
    middle = keras.Model(i, L.ReLU(name="mid_relu")(inner(i)), name="middle")
    j = keras.Input((8, 8, 1))
    return keras.Model(j, head(middle(j))), inner


def test_nested_models_at_depth_two(tmp_path, read_run):
    model, inner = nested_depth_two()
    logger = train(model, X8, Y, tmp_path, X8[:2], epochs=2, layers="*")
    assert logger.probe_function.strategy == "capture"
    assert [w.path for w in logger.probe_function.watched] == ["middle/inner/deep_conv", "middle/mid_relu"]
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert steps(run, "middle/inner/deep_conv/probe_1") == [0, 1, 2]
    deep = np_(inner.get_layer("deep_conv")(X8[:2]))
    assert_grids(run, "middle/inner/deep_conv", deep, step=2)
    assert_grids(run, "middle/mid_relu", np.maximum(deep, 0), step=2)
    assert logger.probe_function.traces == 1


def test_mobilenetv2_backbone_nested_in_a_model(tmp_path, read_run):
    """A layer inside MobileNetV2 (96 x 96) inside a feature model inside the trained model."""
    keras.utils.set_random_seed(4)
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False,
                                              input_shape=(96, 96, 3))
    i = keras.Input((96, 96, 3))
    features = keras.Model(i, backbone(i), name="features")
    j = keras.Input((96, 96, 3))
    model = keras.Model(j, L.Dense(1)(L.GlobalAveragePooling2D()(features(j))))
    x = data((96, 96, 3), n=2)
    names = ["block_1_expand", "block_3_depthwise", "out_relu"]
    logger = train(model, x, Y[:2], tmp_path, x, layers=names, max_channels=16)
    prefix = f"features/{backbone.name}/"
    assert [w.path for w in logger.probe_function.watched] == [prefix + n for n in names]
    assert logger.probe_function.output_shapes == [(48, 48, 96), (12, 12, 144), (3, 3, 1280)]
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags([prefix + n for n in names], 2)
    recipe = keras.Model(backbone.input, [backbone.get_layer(n).output for n in names])
    for name, acts in zip(names, recipe(x, training=False), strict=True):
        assert_grids(run, prefix + name, np_(acts), step=1)


def two_in_two_out() -> keras.Model:
    keras.utils.set_random_seed(5)
    left = keras.Input((8, 8, 1), name="left")
    right = keras.Input((6, 6, 2), name="right")
    a = L.Conv2D(2, 3, name="conv_left")(left)
    b = L.Conv2D(3, 3, name="conv_right")(right)
    merged = L.Concatenate()([L.Flatten()(a), L.Flatten()(b)])
    model = keras.Model([left, right], [L.Dense(1, name="y1")(merged), L.Dense(2, name="y2")(merged)])
    model.compile(optimizer="sgd", loss=["mse", "mse"])
    return model


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict_probes", "list_probes"])
def test_multi_input_multi_output(as_dict, tmp_path, read_run):
    model = two_in_two_out()
    xl, xr = X8, data((6, 6, 2))
    probes = {"right": xr[:2], "left": xl[:2]} if as_dict else [xl[:2], xr[:2]]
    x = {"left": xl, "right": xr} if as_dict else [xl, xr]
    train(model, x, [Y, data((2,))], tmp_path, probes)
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags(["conv_left", "conv_right"], 2)
    assert_grids(run, "conv_left", np_(model.get_layer("conv_left")(xl[:2])), step=1)
    assert_grids(run, "conv_right", np_(model.get_layer("conv_right")(xr[:2])), step=1)


def test_multi_input_probes_missing_an_input_fail_before_training(tmp_path):
    model = two_in_two_out()
    logger = actlog.ActivationLogger(tmp_path, {"left": X8[:2]})
    fails_before_training(
        model, [X8, data((6, 6, 2))], [Y, data((2,))], logger,
        r"probes is a dict with keys \['left'\], but the model's inputs are named "
        r"\['left', 'right'\]; missing \['right'\]",
    )


def test_shared_layer_is_captured_at_its_first_call(tmp_path, read_run):
    keras.utils.set_random_seed(13)
    shared = L.Conv2D(2, 3, name="shared")
    a, b = keras.Input((8, 8, 1), name="a"), keras.Input((8, 8, 1), name="b")
    model = keras.Model([a, b], head(L.Add()([shared(a), shared(b)])))
    probes = [X8[:2], X8[2:]]
    train(model, [X8, X8[::-1]], Y, tmp_path, probes, layers=["shared"])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert_grids(run, "shared", np_(shared(probes[0])), step=1)


def test_model_saved_to_keras_file_loaded_and_trained(tmp_path, read_run):
    keras.utils.set_random_seed(6)
    i = keras.Input((8, 8, 1))
    original = keras.Model(i, head(L.Conv2D(3, 3, name="conv")(i)))
    original.compile(optimizer="sgd", loss="mse")
    original.save(tmp_path / "model.keras")
    model = keras.models.load_model(tmp_path / "model.keras")
    logger = train(model, X8, Y, tmp_path / "logs", X8[:2])
    assert logger.probe_function.strategy == "symbolic"
    run = read_run(tmp_path / "logs" / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags(["conv"], 2)
    assert_grids(run, "conv", np_(model.get_layer("conv")(X8[:2])), step=1)


# --------------------------------------------------------------------------- layer kinds


def test_conv1d_is_a_channel_by_time_map(tmp_path, read_run):
    keras.utils.set_random_seed(7)
    x = data((16, 2))
    i = keras.Input((16, 2))
    model = keras.Model(i, head(L.Conv1D(3, 3, name="conv1d")(i)))
    train(model, x, Y, tmp_path, x[:2], layout=actlog.Layout(min_tile=4))
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    entry = manifest_entries(run)["conv1d"]
    # One row per channel, time along x: the grid reads as a channel x time map.
    assert (entry["grid"]["rows"], entry["grid"]["cols"]) == (3, 1)
    scale = entry["grid"]["scale"]
    assert (entry["grid"]["tile_height"], entry["grid"]["tile_width"]) == (scale, 14 * scale)
    acts = np_(model.get_layer("conv1d")(x[:2]))  # (2, 14, 3)
    assert_grids(run, "conv1d", acts[:, None, :, :], step=1)


def test_conv3d_is_the_maximum_over_depth(tmp_path, read_run):
    keras.utils.set_random_seed(8)
    x = data((4, 6, 6, 1))
    i = keras.Input((4, 6, 6, 1))
    model = keras.Model(i, head(L.Conv3D(2, 3, padding="same", name="conv3d")(i)))
    train(model, x, Y, tmp_path, x[:2])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert manifest_entries(run)["conv3d"]["output_shape"] == [4, 6, 6, 2]
    acts = np_(model.get_layer("conv3d")(x[:2]))  # (2, D=4, 6, 6, 2)
    assert_grids(run, "conv3d", acts.max(axis=1), step=1)


def conv_zoo() -> keras.Model:
    keras.utils.set_random_seed(9)
    i = keras.Input((10, 10, 2))
    h = L.DepthwiseConv2D(3, name="depthwise")(i)
    h = L.SeparableConv2D(4, 3, name="separable")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Activation("linear", name="linear")(h)
    h = L.MaxPooling2D(name="max_pool")(h)
    h = L.AveragePooling2D(1, name="avg_pool")(h)
    h = L.Dense(5, name="dense")(L.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(i, L.Dense(1)(h))


def test_every_spatial_kind_drawn_and_signed_values_diverging(tmp_path, read_run):
    model = conv_zoo()
    x = data((10, 10, 2))
    logger = train(model, x, Y, tmp_path, x[:2], cmap="diverging", layers="*")
    spatial = ["depthwise", "separable", "bn", "linear", "max_pool", "avg_pool"]
    assert [w.name for w in logger.probe_function.watched] == spatial
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert grid_tags(run) == expected_tags(spatial, 2)
    acts = {}
    h = x[:2]
    for name in spatial:
        layer = model.get_layer(name)
        h = layer(h, training=False) if name == "bn" else layer(h)
        acts[name] = np_(h)
        assert_grids(run, name, acts[name], step=1)
    # Batch norm output is signed: the diverging map shows both blue and red,
    # and the white centre is 0.
    assert acts["bn"].min() < 0 < acts["bn"].max()
    image = dict(run["bn/probe_0"])[1]
    assert image.shape[-1] == 3
    blue = (image[..., 2] > image[..., 0] + 40).any()
    red = (image[..., 0] > image[..., 2] + 40).any()
    assert blue and red


def test_dense_and_global_pooling_drawn_when_named(tmp_path, read_run):
    model = conv_zoo()
    x = data((10, 10, 2))
    train(model, x, Y, tmp_path, x[:2], layers=["gap", "dense"], layout=actlog.Layout(min_tile=8))
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    entries = manifest_entries(run)
    assert entries["dense"]["output_shape"] == [5] and entries["gap"]["output_shape"] == [4]
    h = model.get_layer("separable")(model.get_layer("depthwise")(x[:2]))
    h = model.get_layer("max_pool")(model.get_layer("bn")(h, training=False))
    gap = np_(model.get_layer("gap")(h))
    dense = np_(model.get_layer("dense")(gap))
    assert_grids(run, "gap", gap[:, None, None, :], step=1)
    assert_grids(run, "dense", dense[:, None, None, :], step=1)


def test_channels_first_layer(tmp_path, read_run):
    """CPU TensorFlow runs no channels_first convolution (NCHW Conv2D/Conv1D are GPU-only),
    so this model uses channels_first pooling, which runs everywhere."""
    keras.utils.set_random_seed(10)
    x = data((3, 8, 8))  # (C, H, W)
    i = keras.Input((3, 8, 8))
    pooled = L.MaxPooling2D(2, data_format="channels_first", name="pool_cf")(i)
    model = keras.Model(i, head(pooled))
    train(model, x, Y, tmp_path, x[:2])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    entry = manifest_entries(run)["pool_cf"]
    assert entry["data_format"] == "channels_first" and entry["output_shape"] == [3, 4, 4]
    assert entry["channels"] == [0, 1, 2]
    acts = np_(model.get_layer("pool_cf")(x[:2]))  # (2, 3, 4, 4)
    assert_grids(run, "pool_cf", np.moveaxis(acts, 1, -1), step=1)


def test_batch_normalization_over_axis_1_is_read_channels_first(tmp_path, read_run):
    """BatchNormalization has no data_format: its axis says where the channels are."""
    keras.utils.set_random_seed(12)
    x = data((3, 8, 8))  # (C, H, W)
    i = keras.Input((3, 8, 8))
    pooled = L.MaxPooling2D(2, data_format="channels_first", name="pool_cf")(i)
    normed = L.BatchNormalization(axis=1, name="bn_cf")(pooled)
    model = keras.Model(i, head(normed))
    train(model, x, Y, tmp_path, x[:2], layers=["bn_cf"])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    entry = manifest_entries(run)["bn_cf"]
    assert entry["data_format"] == "channels_first" and entry["channels"] == [0, 1, 2]
    acts = np_(keras.Model(model.inputs, model.get_layer("bn_cf").output)(x[:2], training=False))
    assert_grids(run, "bn_cf", np.moveaxis(acts, 1, -1), step=1)


def test_mixed_float16(tmp_path, read_run):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(11)
        i = keras.Input((8, 8, 1))
        conv = L.Conv2D(3, 3, name="conv")(i)
        model = keras.Model(i, L.Dense(1, dtype="float32")(L.Flatten()(conv)))
        logger = train(model, X8, Y, tmp_path, X8[:2], layers=["conv"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv").compute_dtype == "float16"
    assert logger.misses == {}
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    assert all(np.isfinite(value) for _, value in run["conv/std"])
    expected = np_(model.get_layer("conv")(X8[:2]))
    assert_grids(run, "conv", expected, step=1)


# --------------------------------------------------------------------------- training setups


class _Batches(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int) -> None:
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def __getitem__(self, i: int) -> tuple:
        return self.x[i * self.batch:(i + 1) * self.batch], self.y[i * self.batch:(i + 1) * self.batch]


def dataset(x: np.ndarray, y: np.ndarray, batch: int) -> object:
    """A tf.data.Dataset on TensorFlow, a keras.utils.PyDataset elsewhere."""
    if BACKEND != "tensorflow":
        return _Batches(x, y, batch)
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.fixture(scope="module")
def setups_run(tmp_path_factory):
    """A dataset with validation, Keras' TensorBoard(update_freq=1) in the same log_dir (on
    TensorFlow), then a resume with initial_epoch, then a third fit that restarts epochs at 0."""
    log_dir = tmp_path_factory.mktemp("setups")
    keras.utils.set_random_seed(12)
    i = keras.Input((8, 8, 1))
    model = keras.Model(i, head(L.Conv2D(2, 3, name="conv")(i)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    train_ds = dataset(X8, Y, 2)  # 2 batches per epoch
    val_ds = dataset(X8[:2], Y[:2], 2)
    logger = actlog.ActivationLogger(log_dir, X8[:2])
    board = keras_tensorboard(log_dir, update_freq=1)
    model.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0, callbacks=[*board, logger])
    model.fit(train_ds, validation_data=val_ds, initial_epoch=2, epochs=3, verbose=0,
              callbacks=[*board, logger])
    model.fit(train_ds, epochs=1, verbose=0, callbacks=[*board, logger])
    return model, logger, log_dir


def test_steps_continue_across_dataset_fits_and_resume(setups_run, read_run):
    model, logger, log_dir = setups_run
    assert logger.misses == {}
    run = read_run(log_dir / metadata.EPOCH_RUN)
    for tag in grid_tags(run) | {"conv/mean"}:
        assert steps(run, tag) == [0, 1, 2, 3, 4], tag
    assert_grids(run, "conv", np_(model.get_layer("conv")(X8[:2])), step=4)
    assert logger.probe_function.traces == 1


@tensorflow_only
def test_keras_tensorboard_keeps_its_data_beside_actlog(setups_run, read_run):
    _, _, log_dir = setups_run
    train_run = read_run(log_dir / "train")
    # An epoch scalar for each of the 4 epochs of 3 fits (Keras restarts at epoch 0 in the
    # third), and a batch-level scalar for each of the 8 optimizer steps (update_freq=1;
    # Keras counts its batch step from 1 again in every fit).
    assert steps(train_run, "epoch_loss") == [0, 0, 1, 2]
    assert steps(train_run, "batch_loss") == [1, 1, 1, 2, 2, 2, 3, 4]
    validation = read_run(log_dir / "validation")
    assert steps(validation, "epoch_loss") == [0, 1, 2]
