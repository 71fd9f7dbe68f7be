"""The feature atlas on every backend: a planted detector, receptive fields, schedules, faults.

The planted detector is a model whose convolutions are set by hand (and
frozen) to respond to one pattern each, trained on a pool in which those
patterns sit in known images at known places: the atlas must return exactly
those images, at exactly those positions, with crops that show the pattern,
read back through TensorBoard's EventAccumulator and through ``actlog.read``.
Receptive fields from the layer chain (and measured ones) are compared with
brute force: change one input pixel, see which outputs change.
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from conftest import steps, to_numpy

import actlog
from actlog import atlas, metadata, receptive
from actlog.atlas import OUTSIDE, Field
from actlog.faults import LoggingError
from actlog.grid import to_image
from actlog.layers import resolve

pytestmark = pytest.mark.backend

# --------------------------------------------------------------------------- the planted detector

PLUS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)
DIAGONAL = np.eye(3, dtype=np.float32)
SIDE = 16
POOL = 24
# (image, top-left of the pattern, contrast): the contrast decides the rank.
PLANTED_PLUS = [(3, (2, 5), 1.0), (17, (9, 1), 0.9), (11, (12, 12), 0.8)]
PLANTED_DIAGONAL = [(5, (0, 0), 1.0), (20, (7, 9), 0.85)]
CORNER_IMAGE = 8  # a bright 2 x 2 blob in its top-left corner


def planted_pool() -> np.ndarray:
    pool = np.random.default_rng(1).uniform(0.0, 0.05, size=(POOL, SIDE, SIDE, 1)).astype(np.float32)
    for pattern, planted in ((PLUS, PLANTED_PLUS), (DIAGONAL, PLANTED_DIAGONAL)):
        for image, (y, x), contrast in planted:
            pool[image, y : y + 3, x : x + 3, 0] += contrast * pattern
    pool[CORNER_IMAGE, :2, :2, 0] += 1.0
    return pool


def planted_model() -> keras.Model:
    """``detect`` (3 x 3 valid: plus, diagonal) -> ``pool`` (2 x 2 max); ``corner`` (3 x 3
    same) beside it, whose kernel answers a 2 x 2 blob below-right of its centre. Frozen."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIDE, SIDE, 1), name="image")
    detect = keras.layers.Conv2D(2, 3, use_bias=False, name="detect", trainable=False)
    corner = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="corner", trainable=False)
    pooled = keras.layers.MaxPooling2D(2, name="pool")(detect(inputs))
    merged = keras.layers.Concatenate()([
        keras.layers.Flatten()(pooled), keras.layers.Flatten()(corner(inputs)),
    ])
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(merged))
    blob = np.zeros((3, 3), np.float32)
    blob[1:, 1:] = 1.0
    detect.set_weights([np.stack([PLUS - PLUS.mean(), DIAGONAL - DIAGONAL.mean()], -1)[:, :, None, :]])
    corner.set_weights([(blob - blob.mean())[:, :, None, None]])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def planted(tmp_path_factory, read_run):
    log_dir = tmp_path_factory.mktemp("planted")
    pool = planted_pool()
    model = planted_model()
    logger = actlog.ActivationLogger(
        log_dir, pool[:2], layers=["detect", "pool", "corner"],
        atlas=actlog.Atlas(pool, k=3, every=1, batch=5),
    )
    labels = np.arange(POOL) % 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(pool, labels, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    return {
        "pool": pool, "logger": logger, "log_dir": log_dir,
        "run": read_run(log_dir / metadata.EPOCH_RUN), "read": actlog.read(log_dir).run(),
        "warnings": [str(w.message) for w in caught if "actlog" in str(w.message)],
    }


def test_planted_run_has_the_atlas_tags_at_each_atlas_step(planted):
    run = planted["run"]
    assert planted["logger"].misses == {} and planted["warnings"] == []
    for layer in ("detect", "pool", "corner"):
        for field in ("index", "position", "value", "box"):
            assert [s for s, _ in run[metadata.atlas_tag(layer, field)]] == [0, 1]
        assert [s for s, _ in run[metadata.atlas_tag(layer)]] == [0, 1]
        # from the second atlas event on: how much the top-k sets changed (frozen: nothing)
        assert run[metadata.atlas_tag(layer, "change")] == [(1, 0.0)]
        (_, change), = run[metadata.atlas_tag(layer, "channel_change")]
        assert change.dtype == np.float32 and not change.any()
    assert planted["read"].atlas_steps("detect") == [0, 1]


def test_planted_patterns_are_the_top_images_at_their_places(planted):
    run = planted["run"]
    _, index = run["detect/atlas_index"][-1]
    _, position = run["detect/atlas_position"][-1]
    _, value = run["detect/atlas_value"][-1]
    assert index.dtype == np.int32 and index.shape == (2, 3)
    assert index[0].tolist() == [i for i, _, _ in PLANTED_PLUS]
    assert position[0].tolist() == [list(p) for _, p, _ in PLANTED_PLUS]
    assert index[1, :2].tolist() == [i for i, _, _ in PLANTED_DIAGONAL]
    assert position[1, :2].tolist() == [list(p) for _, p, _ in PLANTED_DIAGONAL]
    assert (np.diff(value[0]) < 0).all()
    # through a 2 x 2 max pooling: the same images, at half the position
    _, pooled = run["pool/atlas_index"][-1]
    _, pooled_position = run["pool/atlas_position"][-1]
    assert pooled[0].tolist() == index[0].tolist()
    assert pooled_position[0].tolist() == [[y // 2, x // 2] for _, (y, x), _ in PLANTED_PLUS]
    _, corner = run["corner/atlas_index"][-1]
    _, corner_position = run["corner/atlas_position"][-1]
    assert corner[0, 0] == CORNER_IMAGE and corner_position[0, 0].tolist() == [0, 0]


def test_planted_receptive_fields_and_boxes(planted):
    (_, text), = planted["run"][metadata.MANIFEST_TAG]
    entries = {e["name"]: e for e in json.loads(text)["layers"]}
    expected = {  # jump, start, size
        "detect": ((1, 1), (0, 0), (3, 3)),
        "pool": ((2, 2), (0, 0), (4, 4)),
        "corner": ((1, 1), (-1, -1), (3, 3)),
    }
    for layer, nominal in expected.items():
        entry = entries[layer]["atlas"]
        field = Field.from_dict(entry["field"])
        assert (field.jump, field.start, field.size) == nominal and not field.measured
        assert (entry["k"], entry["pool"], entry["input"]) == (3, POOL, [SIDE, SIDE])
        _, boxes = planted["run"][metadata.atlas_tag(layer, "box")][-1]
        _, positions = planted["run"][metadata.atlas_tag(layer, "position")][-1]
        for box, (y, x) in zip(boxes.reshape(-1, 4), positions.reshape(-1, 2), strict=True):
            assert tuple(box) == field.box(y, x)


CHECKER = {tuple(OUTSIDE[0]), tuple(OUTSIDE[1])}


def test_planted_crops_show_the_pattern(planted):
    atlas_ = planted["read"].atlas("detect")
    pool = planted["pool"]
    crops = atlas_.crops(0)
    scale = atlas_.layout.scale
    # a 3 x 3 field, with one field width of context on each side: 9 x 9 pixels
    assert crops.shape == (3, 9 * scale, 9 * scale, 3)
    for crop, (image, (y, x), _) in zip(crops, PLANTED_PLUS, strict=True):
        small = crop[::scale, ::scale]
        seen = small[3:6, 3:6, 0]  # what the unit sees, in the middle, as it is
        np.testing.assert_array_equal(seen, to_image(pool[image])[y : y + 3, x : x + 3, 0])
        assert ((seen > 128) == PLUS.astype(bool)).all()  # the plus, bright on dark
        for row in range(9):  # the context, faded; outside the image, the checkerboard
            for col in range(9):
                if not (3 <= row < 6 and 3 <= col < 6):
                    inside = 0 <= y - 3 + row < SIDE and 0 <= x - 3 + col < SIDE
                    assert (tuple(small[row, col]) in CHECKER) != inside
    # what TensorBoard shows is the same picture
    _, picture = planted["run"]["detect/atlas"][-1]
    np.testing.assert_array_equal(picture, atlas_.image)


def test_clipping_at_the_border_is_visible(planted):
    atlas_ = planted["read"].atlas("corner")
    top = atlas_.crops(0)[0][:: atlas_.layout.scale, :: atlas_.layout.scale]
    # the corner blob's unit sits at (0, 0): its field starts at (-1, -1), its 9 x 9 window at (-4, -4)
    assert {tuple(p) for p in top[:4].reshape(-1, 3)} <= CHECKER  # rows -4..-1
    assert {tuple(p) for p in top[:, :4].reshape(-1, 3)} <= CHECKER  # cols -4..-1
    assert not {tuple(p) for p in top[4:, 4:].reshape(-1, 3)} & CHECKER
    seen = top[4:6, 4:6, 0]  # the field's rows and cols 0..1: inside the image, as they are
    np.testing.assert_array_equal(seen, to_image(planted["pool"][CORNER_IMAGE])[:2, :2, 0])


def test_atlas_cells_follow_the_grid_tiles(planted):
    atlas_ = planted["read"].atlas("detect")
    assert atlas_.channels == (0, 1) == tuple(planted["read"].channels("detect"))
    grid_layout = planted["read"].layout("detect")
    assert (atlas_.layout.rows, atlas_.layout.cols) == (grid_layout.rows, grid_layout.cols)


# --------------------------------------------------------------------------- the pass against numpy


def test_stream_equals_a_numpy_top_k_and_compiles_once(tiny_model, tiny_data):
    from actlog import backends, probe
    from actlog.atlas_pass import AtlasPass
    from actlog.session import Options, Session  # noqa: F401 - the plans come from a session

    x, _ = tiny_data
    options = atlas.check_options(x, k=4, freq=1, batch=5)
    inputs = probe.to_tensors(tiny_model, x[:2])
    watched = resolve(tiny_model, ["conv_0", "conv_1"], probe.tracer(tiny_model, inputs))
    probe_fn = _probe_function(tiny_model, watched, inputs)
    forward = probe.Forward(tiny_model, watched)
    pass_ = AtlasPass(tiny_model, tiny_model, forward, probe_fn.plans, options, backends.current())
    channels = probe_fn.channels([[3, 1, 0, 2], [5, 0, 1, 2, 3, 4]])
    for _ in range(2):
        tops = pass_.stream(channels)
    # (PyTorch streams the pool eagerly, also on a GPU: no CUDA graph keeps a batch's memory.)
    assert pass_.function.traces == (0 if backends.current().name == "torch" else 1)
    layers = zip(tops, ("conv_0", "conv_1"), ([3, 1, 0, 2], [5, 0, 1, 2, 3, 4]), strict=True)
    for (index, where, value), name, shown in layers:
        acts = to_numpy(keras.Model(tiny_model.input, tiny_model.get_layer(name).output)(x))
        flat = acts.reshape(len(x), -1, acts.shape[-1])[:, :, shown]
        best = flat.max(axis=1)  # (images, shown)
        order = np.lexsort((np.broadcast_to(np.arange(len(x))[:, None], best.shape).T, -best.T))[:, :4]
        np.testing.assert_array_equal(index, order)
        np.testing.assert_allclose(value, np.take_along_axis(best.T, order, axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(where, np.take_along_axis(flat.argmax(axis=1).T, order, axis=1))


def _probe_function(model, watched, inputs):
    from actlog import backends, grid, probe
    from actlog.event import LayerPlan

    plans = []
    for w in watched:
        shape = tuple(w.shape[1:])
        layout = grid.plan_layout(shape[:2], range(shape[-1]))
        plans.append(LayerPlan(w.name, w.path, "Conv2D", shape, "channels_last", layout, "channel", "gray"))
    return probe.ProbeFunction(model, model, watched, inputs, plans, backends.current())


# --------------------------------------------------------------------------- receptive fields


def _stack(name):
    """Stacks of layers whose last output's field the chain rule must get right."""
    layers = keras.layers
    inputs = keras.Input((19, 21, 1), name="image")
    x = inputs
    if name == "conv_valid":
        x = layers.Conv2D(2, 3)(x)
    elif name == "conv_same_strided":
        x = layers.Conv2D(2, 3, strides=2, padding="same")(x)
    elif name == "even_kernel_same_strided":
        x = layers.Conv2D(2, 4, strides=(2, 3), padding="same")(x)
    elif name == "dilated":
        x = layers.Conv2D(2, 3, padding="same")(x)
        x = layers.Conv2D(2, 3, dilation_rate=2, padding="same")(x)
    elif name == "pooling":
        x = layers.Conv2D(3, 3)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(2, 3, padding="same")(x)
        x = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    elif name == "padding_and_cropping":
        x = layers.ZeroPadding2D(((2, 0), (1, 1)))(x)
        x = layers.Conv2D(2, 3)(x)
        x = layers.Cropping2D(((1, 0), (0, 2)))(x)
    elif name == "depthwise_separable_bn":
        x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.SeparableConv2D(2, 3, dilation_rate=2)(x)
    elif name == "residual":
        a = layers.Conv2D(2, 5, padding="same")(x)
        b = layers.Conv2D(2, 1)(x)
        x = layers.Add()([a, b])
        x = layers.Conv2D(2, 3, strides=2)(x)
    elif name == "nested":
        inner_in = keras.Input((None, None, 2))
        inner = keras.Model(inner_in, layers.Conv2D(2, 3, strides=2)(inner_in), name="inner")
        x = layers.Conv2D(2, 3, padding="same")(x)
        x = inner(x)
    return keras.Model(inputs, layers.Activation("linear", name="watched")(x))


STACKS = ["conv_valid", "conv_same_strided", "even_kernel_same_strided", "dilated", "pooling",
          "padding_and_cropping", "depthwise_separable_bn", "residual", "nested"]


def _brute_force_boxes(model, layer):
    """For each output unit, the bounding box of the input pixels that change it when set,
    one at a time, to a large value (either sign, over two random images)."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    height, width = model.input.shape[1:3]
    hits = None
    rng = np.random.default_rng(0)
    for amplitude in (8.0, -8.0):
        base = rng.uniform(0, 1, (height, width, 1)).astype(np.float32)
        batch = np.repeat(base[None], 1 + height * width, axis=0)
        for p in range(height * width):
            batch[1 + p, p // width, p % width, 0] += amplitude
        out = to_numpy(sub(batch, training=False))
        changed = np.abs(out[1:] - out[:1]).max(axis=-1) > 1e-5  # (pixels, H_out, W_out)
        hits = changed if hits is None else hits | changed
    boxes = {}
    for y in range(hits.shape[1]):
        for x in range(hits.shape[2]):
            pixels = np.flatnonzero(hits[:, y, x])
            ys, xs = pixels // width, pixels % width
            boxes[(y, x)] = (ys.min(), xs.min(), ys.max(), xs.max())
    return boxes


def _agrees(field, brute):
    """What each unit sees is what brute force finds, and inside the unit's nominal box."""
    for (y, x), seen in brute.items():
        assert field.seen(y, x) == seen, (y, x)
        top, left, height, width = field.box(y, x)
        assert top <= seen[0] and left <= seen[1]
        assert seen[2] <= top + height - 1 and seen[3] <= left + width - 1


@pytest.mark.parametrize("name", STACKS)
def test_chain_field_equals_brute_force(name):
    model = _stack(name)
    (watched,) = resolve(model, ["watched"])
    field = receptive.chain_field(model, watched, 0, (19, 21))
    assert field is not None and not field.measured
    _agrees(field, _brute_force_boxes(model, "watched"))


def test_no_rule_is_measured_by_perturbation():
    layers = keras.layers
    inputs = keras.Input((19, 21, 1), name="image")
    x = layers.Conv2D(2, 3, padding="same")(inputs)
    x = layers.Lambda(lambda t: t * 2.0)(x)  # no rule for a Lambda
    x = layers.Conv2D(2, 3, strides=2)(x)
    model = keras.Model(inputs, layers.Activation("linear", name="watched")(x))
    (watched,) = resolve(model, ["watched"])
    assert receptive.chain_field(model, watched, 0, (19, 21)) is None
    sub = keras.Model(model.input, model.get_layer("watched").output)
    pool = np.random.default_rng(0).random((4, 19, 21, 1)).astype(np.float32)
    (field,) = receptive.measure(lambda inputs: [to_numpy(sub(inputs))], pool, 0, batch=16)
    assert (field.jump, field.start, field.size, field.measured) == ((2, 2), (-1, -1), (5, 5), True)
    _agrees(field, _brute_force_boxes(model, "watched"))


# --------------------------------------------------------------------------- schedules and faults


def test_atlas_every_2_epochs_at_step_0_and_at_the_end(tmp_path, tiny_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_1"], freq=0,
                                     atlas=actlog.Atlas(x, k=2, every=2))
    tiny_model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[logger])
    run = read_run(tmp_path / metadata.EPOCH_RUN)
    # grid logging off: the run holds the header and the atlas only
    assert {t for t in run if "probe" in t and not t.startswith("actlog/")} == set()
    assert steps(run, "conv_1/atlas") == [0, 2, 4, 5]
    assert steps(run, "conv_1/atlas_change") == [2, 4, 5]
    assert steps(run, metadata.MANIFEST_TAG) == [0]
    assert logger.misses == {}


def test_atlas_continues_across_fits_and_follows_most_active_channels(tmp_path, tiny_model, tiny_data):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_1"], max_channels=3,
                                     channels="most_active", atlas=actlog.Atlas(x, k=2, every=1))
    for _ in range(2):
        tiny_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    run = actlog.read(tmp_path).run()
    assert run.atlas_steps("conv_1") == [0, 1, 2]
    steps, change = run.atlas_change("conv_1")
    assert steps.tolist() == [1, 2] and ((0 <= change) & (change <= 1)).all()
    chosen = run.channels("conv_1")
    assert len(chosen) == 3 and run.atlas("conv_1").channels == tuple(chosen)
    assert run.atlas("conv_1").index.shape == (3, 2)


def test_a_pool_from_a_generator_of_batches(tmp_path, tiny_model, tiny_data):
    x, y = tiny_data

    def batches():
        for start in range(0, len(x), 5):
            yield x[start : start + 5], y[start : start + 5]

    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], freq=0,
                                     atlas=actlog.Atlas(batches(), k=2))
    tiny_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
    atlas_ = actlog.read(tmp_path).run().atlas("conv_0")
    assert atlas_.pool == len(x) and atlas_.step == 1


@pytest.mark.parametrize("where", ["stream", "finish"])
def test_a_fault_in_the_atlas_never_stops_training(tmp_path, tiny_model, tiny_data, monkeypatch, where):
    from actlog.atlas_pass import AtlasPass

    def broken(self, *args):
        raise RuntimeError("atlas broke")

    monkeypatch.setattr(AtlasPass, where, broken)
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], atlas=actlog.Atlas(x, k=2, every=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    assert logger.misses == {"internal": 3}  # steps 0, 1, 2
    messages = [str(w.message) for w in caught if str(w.message).startswith("actlog (")]
    assert len(messages) == 1 and "atlas" in messages[0] and "atlas broke" in messages[0]
    assert actlog.read(tmp_path).run().grid_steps("conv_0", 0) == [0, 1, 2]  # the grids are all there


def test_strict_raises_a_fault_in_the_atlas(tmp_path, tiny_model, tiny_data, monkeypatch):
    from actlog.atlas_pass import AtlasPass

    monkeypatch.setattr(AtlasPass, "stream", lambda self, channels: 1 / 0)
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], atlas=actlog.Atlas(x, k=2),
                                     strict=True)
    with pytest.raises(LoggingError, match=r"could not log the atlas at step 0: ZeroDivisionError"):
        tiny_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])


def test_a_model_without_an_image_input_is_refused_before_training(tmp_path):
    inputs = keras.Input((5,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(3, name="hidden")(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 5), np.float32)
    logger = actlog.ActivationLogger(tmp_path, x[:1], layers=["hidden"], atlas=actlog.Atlas(x, k=1))
    with pytest.raises(ValueError, match=r"atlas needs a model input that is an image \(H, W, c\) .*"
                       r"received a pool of shapes \[\(4, 5\)\]"):
        model.fit(x, np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[logger])


def test_reader_errors_name_what_exists(planted, tmp_path, tiny_model, tiny_probes):
    read = planted["read"]
    with pytest.raises(actlog.LogError, match=r"No step 7 for the atlas of 'detect'; logged: steps 0, 1\."):
        read.atlas("detect", step=7)
    with pytest.raises(actlog.LogError, match=r"Channel 4 of layer 'detect' is not in its atlas; "
                                              r"channels shown: \[0, 1\]\."):
        read.atlas("detect").crops(4)
    logger = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv_0"])
    logger.set_model(tiny_model)
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    logger.on_train_end()
    plain = actlog.read(tmp_path).run()
    assert plain.atlas_steps("conv_0") == [] and plain.atlas_change("conv_0")[0].size == 0
    with pytest.raises(actlog.LogError, match=r"No feature atlas logged for layer 'conv_0' in run "
                                              r"'activations'; layers with one: none \(ActivationLogger"):
        plain.atlas("conv_0")
