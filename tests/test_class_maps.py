"""Class activation maps (Grad-CAM) on every backend: a planted classifier, the log, the checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import fails_before_training, make_classic_model, make_tiny_model, to_numpy

import actlog
from actlog import backends, class_maps, metadata

pytestmark = pytest.mark.backend

SIDE = 12
SQUARE = (slice(4, 8), slice(8, 12))
"""Where class 1's bright square is, in pixels and in the cells of the 1 x 1 convolution's map."""


def planted_model(head: str = "dense") -> keras.Model:
    """Class 1 is decided by brightness inside :data:`SQUARE`, class 0 by darkness anywhere.

    ``bright`` (1 x 1 convolution): channel 0 is the pixel's brightness, channel 1 its darkness
    (1 - x). The output Dense reads channel 0 only inside the square for class 1 and channel 1
    everywhere for class 0. ``head="softmax"`` ends in a ``Softmax`` layer instead of the
    Dense's own activation. A learning rate of 0 keeps the planted weights through ``fit``.
    """
    inputs = keras.Input((SIDE, SIDE, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, name="bright")
    x = keras.layers.Flatten(name="flat")(conv(inputs))
    dense = keras.layers.Dense(2, activation="softmax" if head == "dense" else None, name="scores")
    x = dense(x)
    if head == "softmax":
        x = keras.layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, x, name="planted")
    conv.set_weights([np.float32([1.0, -1.0]).reshape(1, 1, 1, 2), np.float32([0.0, 1.0])])
    kernel = np.zeros((SIDE, SIDE, 2, 2), np.float32)
    kernel[SQUARE[0], SQUARE[1], 0, 1] = 1.0
    kernel[:, :, 1, 0] = 0.05
    dense.set_weights([kernel.reshape(-1, 2), np.array([0.0, -8.0], np.float32)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    return model


def planted_probes() -> tuple[np.ndarray, np.ndarray]:
    """Four probes: dim noise, the first two with the bright square (labels 1, 1, 0, 0)."""
    x = np.random.default_rng(0).uniform(0.0, 0.3, (4, SIDE, SIDE, 1)).astype(np.float32)
    x[:2, SQUARE[0], SQUARE[1]] = 1.0
    return x, np.array([1, 1, 0, 0], np.int64)


def in_square(cam: np.ndarray) -> bool:
    y, x = np.unravel_index(np.argmax(cam), cam.shape)
    return SQUARE[0].start <= y < SQUARE[0].stop and SQUARE[1].start <= x < SQUARE[1].stop


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("cam")
    x, y = planted_probes()
    model = planted_model()
    logger = actlog.ActivationLogger(log_dir, (x, y), layers=["bright"], cam=actlog.ClassMaps("bright"))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[logger])
    return {"logger": logger, "run": actlog.read(log_dir).run(), "model": model}


def test_the_map_of_class_1_peaks_on_the_square(logged):
    run = logged["run"]
    assert logged["logger"].misses == {}
    steps, maps, classes = run.class_map_values()
    assert steps.tolist() == [0, 1, 2]
    assert maps.shape == (3, 4, SIDE, SIDE) and maps.dtype == np.float32
    assert classes.tolist() == [[1, 1, 0, 0]] * 3
    for cam in maps[-1, :2]:  # class 1 on the probes with the square: there
        assert in_square(cam)
    for cam in maps[-1, 2:]:  # class 0 (darkness): anywhere but the bright square
        assert cam.max() > 0 and not in_square(cam)


def test_the_map_is_grad_cam_of_the_logit(logged):
    """By hand: class 1's logit is the Dense's channel-0 weights over the square, so the
    gradient is 1 there, the channel weight 16 / 144, and the map that times the brightness."""
    x, _ = planted_probes()
    _, maps, _ = logged["run"].class_map_values()
    expected = np.maximum(16 / 144 * x[0, :, :, 0], 0)
    np.testing.assert_allclose(maps[-1, 0], expected, rtol=1e-5, atol=1e-6)


def test_the_pictures_are_read_back_at_the_probe_size(logged):
    run = logged["run"]
    info = run.class_map_info()
    scale = -(-class_maps.MIN_SIDE // SIDE)
    assert info == {"classes": "label", "score": "logit", "scale": scale,
                    "tags": [metadata.cam_tag("bright", i, 4) for i in range(4)]}
    assert run.class_map_layer == "bright" and run.class_map_steps() == [0, 1, 2]
    steps, pictures = run.class_maps(0)
    assert steps.tolist() == [0, 1, 2]
    assert pictures.shape == (3, SIDE * scale, SIDE * scale, 3) and pictures.dtype == np.uint8
    expected = class_maps.overlay(np.uint8(np.rint(planted_probes()[0][0] * 255)),
                                  run.class_map_values()[1][-1, 0], scale)
    # the probe image is min-max scaled from [min, 1]: compare where the overlay is opaque enough
    assert np.abs(pictures[-1].astype(int) - expected.astype(int)).max() <= 80
    np.testing.assert_array_equal(pictures[-1], run.class_maps(0)[1][-1])


def test_each_function_is_compiled_once(logged):
    """Three events; PyTorch traces the forward pass once and runs autograd and the map eagerly."""
    torch = backends.current().name == "torch"
    assert logged["logger"].class_maps.traces == {"forward": 1, "gradient": 3 if torch else 1,
                                                  "map": 0 if torch else 1}


def test_batch_level_events_have_their_class_maps(tmp_path):
    """With the batch-level grids, in their run: the planted weights stay (learning rate 0),
    so every map equals the epoch run's."""
    x, y = planted_probes()
    logger = actlog.ActivationLogger(tmp_path, (x, y), layers=["bright"], batch_freq=1,
                                     cam=actlog.ClassMaps("bright"))
    planted_model().fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[logger])
    assert logger.misses == {}
    log = actlog.read(tmp_path)
    batch, epoch = log.run(metadata.BATCH_RUN), log.run(metadata.EPOCH_RUN)
    steps, maps, classes = batch.class_map_values()
    assert steps.tolist() == batch.steps == [1, 2] and classes.tolist() == [[1, 1, 0, 0]] * 2
    assert batch.class_map_info() == epoch.class_map_info()
    np.testing.assert_allclose(maps, epoch.class_map_values()[1][:2], rtol=1e-5, atol=1e-6)
    assert all(in_square(cam) for cam in maps[:, 0]) and batch.class_maps(3)[1].shape[0] == 2
    assert epoch.class_map_steps() == [0, 1, 2]


def test_predicted_classes_and_a_softmax_layer(tmp_path):
    x, y = planted_probes()
    model = planted_model("softmax")
    logger = actlog.ActivationLogger(tmp_path, x, layers=["bright"], freq=2,
                                     cam=actlog.ClassMaps("bright", classes="predicted"))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[logger])
    run = actlog.read(tmp_path).run()
    steps, maps, classes = run.class_map_values()
    assert steps.tolist() == [0, 2] and classes.tolist() == [[1, 1, 0, 0]] * 2
    assert run.class_map_info()["score"] == "logit" and run.class_map_info()["classes"] == "predicted"
    assert all(in_square(cam) for cam in maps[-1, :2])


def test_given_classes(tmp_path):
    x, y = planted_probes()
    logger = actlog.ActivationLogger(tmp_path, x, layers=["bright"],
                                     cam=actlog.ClassMaps("bright", [1, 1, 1, 1]))
    planted_model().fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[logger])
    _, maps, classes = actlog.read(tmp_path).run().class_map_values()
    assert classes.tolist() == [[1, 1, 1, 1]] * 2
    assert in_square(maps[-1, 0]) and in_square(maps[-1, 1])


@pytest.mark.parametrize(("cam", "match"), [
    (actlog.ClassMaps("nope"), r"layer 'nope', which is not watched; watched: \['bright', 'flat'\]"),
    (actlog.ClassMaps("flat"), r"spatial map \(H, W, channels\).*'flat' \(Flatten\) outputs \(288,\)"),
    (actlog.ClassMaps("bright", [1, 0]), r"names 2 classes; accepted: one per probe \(4\)"),
    (actlog.ClassMaps("bright", [1, 0, 5, 0]), r"classes \[5\] are not classes of the model.*2 \(0..1\)"),
])
def test_configuration_errors_before_training(tmp_path, cam, match):
    x, y = planted_probes()
    logger = actlog.ActivationLogger(tmp_path, (x, y), layers=["bright", "flat"], cam=cam)
    fails_before_training(planted_model(), x, y, logger, match)


def test_label_needs_labelled_probes(tmp_path):
    x, y = planted_probes()
    logger = actlog.ActivationLogger(tmp_path, x, layers=["bright"], cam="bright")
    fails_before_training(planted_model(), x, y, logger, r"needs labelled probes: pass probes as an \(x, y\)")


def test_a_model_whose_output_is_not_class_scores(tmp_path):
    x, y = planted_probes()
    inputs = keras.Input((SIDE, SIDE, 1))
    conv = keras.layers.Conv2D(3, 3, name="conv")
    model = keras.Model(inputs, conv(inputs))
    logger = actlog.ActivationLogger(tmp_path, x, layers=["conv"], cam=actlog.ClassMaps("conv", "predicted"))
    fails_before_training(model, x, np.zeros((4, 10, 10, 3)), logger,
                          r"output is class scores \(batch, classes\).*outputs \[\(None, 10, 10, 3\)\]")


def test_options_are_checked_when_made(tmp_path):
    with pytest.raises(ValueError, match=r"must be one of \['label', 'predicted'\].*received 'labels'"):
        actlog.ClassMaps("conv_1", "labels")
    with pytest.raises(ValueError, match=r"sequence of class indices.*received \[1, -1\]"):
        actlog.ClassMaps("conv_1", [1, -1])
    with pytest.raises(TypeError, match=r"display name \(str\); received 3"):
        actlog.ClassMaps(3)
    with pytest.raises(ValueError, match=r"cam is logged with the grids.*received freq=0"):
        actlog.ActivationLogger(tmp_path, np.zeros((2, 12, 12, 1)), freq=0, cam="conv_1")


def test_labels_from_a_dataset_of_batches(tmp_path):
    """A generator of ``(x, y)`` batches keeps its labels for ``classes="label"``."""
    x, y = planted_probes()
    batches = ((x[i : i + 2], y[i : i + 2]) for i in (0, 2))
    probes = actlog.Probes(batches, count=4, labels=True)
    logger = actlog.ActivationLogger(tmp_path, probes, layers=["bright"], cam="bright")
    planted_model().fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[logger])
    _, _, classes = actlog.read(tmp_path).run().class_map_values()
    assert classes.tolist() == [[1, 1, 0, 0]] * 2


def test_a_layer_of_the_tiny_model(tmp_path, tiny_data):
    """A convolution before pooling, on a model trained for real: maps of the layer's shape."""
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, (x[:3], y[:3]), layers=["conv_0", "conv_1"], cam="conv_1")
    make_tiny_model().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    run = actlog.read(tmp_path).run()
    _, maps, classes = run.class_map_values()
    assert logger.misses == {} and maps.shape == (2, 3, 3, 3) and classes[0].tolist() == y[:3].tolist()
    assert run.class_map_info()["score"] == "output"  # logits already: no softmax to step around


def test_a_sequential_model_ending_in_a_softmax_dense(tmp_path):
    """The article's ConvNet (a Sequential: cut through the functional model over its graph),
    its Dense softmax stepped around to the logits, dropout in the head in inference mode."""
    x = np.random.default_rng(1).random((2, 28, 28, 1)).astype(np.float32)
    logger = actlog.ActivationLogger(tmp_path, x, layers=["conv_1"],
                                     cam=actlog.ClassMaps("conv_1", "predicted"))
    model = make_classic_model()
    model.fit(x, np.array([3, 7]), batch_size=2, epochs=1, verbose=0, callbacks=[logger])
    run = actlog.read(tmp_path).run()
    _, maps, classes = run.class_map_values()
    expected = np.argmax(to_numpy(model(x, training=False)), axis=-1)
    assert logger.misses == {} and maps.shape == (2, 2, 11, 11) and classes[-1].tolist() == expected.tolist()
    assert run.class_map_info()["score"] == "logit" and np.isfinite(maps).all()


def test_a_subclassed_model_is_refused_before_training(tmp_path):
    """No graph to cut at the layer: said by name, before the first batch."""

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.conv = keras.layers.Conv2D(2, 1, name="bright")
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.flat(self.conv(x)))

    x, y = planted_probes()
    cam = actlog.ClassMaps("bright", "predicted")
    logger = actlog.ActivationLogger(tmp_path, x, layers=["bright"], cam=cam)
    fails_before_training(Subclassed(), x, y, logger, r"'subclassed' \(Subclassed\) has no symbolic graph")
