"""Real models and setups as users bring them: defaults, odd shapes, odd models, reused logs.

Each test is one thing that did not work, or cost too much, when about a
hundred models and setups were tried as a user would (issue 13).
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, load_example, make_classic_model, to_numpy
from keras import layers as L

import actlog
from actlog import layers as actlog_layers
from actlog import metadata

pytestmark = pytest.mark.backend
RNG = np.random.default_rng(0)


def fit(model, x, y, logger, epochs=1, batch_size=4, **kwargs):
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[logger], **kwargs)
    assert logger.misses == {}
    return actlog.read(logger.log_dir)


# --------------------------------------------------------------------------- layers=None


def _chosen(model) -> list[str]:
    return [w.path for w in actlog_layers.resolve(model, None)]


def test_layers_none_is_the_last_layer_of_each_spatial_stage():
    assert _chosen(make_classic_model(0)) == ["conv_0", "pool_0", "conv_1", "pool_1"]
    # The README's example: its Dropout after pool_1 is no feature of its own.
    assert _chosen(load_example("mnist_convnet").build_classic_model()) == ["conv_0", "conv_1", "pool_1"]
    i = keras.Input((32, 32, 3))
    h = L.ZeroPadding2D(1, name="pad")(i)  # a padding-only stage is never picked
    h = L.Conv2D(4, 3, name="stem")(h)
    h = L.ReLU(name="stem_relu")(h)
    for stage in range(3):
        h = L.Conv2D(8, 3, strides=2, padding="same", name=f"s{stage}_down")(h)
        h = L.BatchNormalization(name=f"s{stage}_bn")(h)
        h = L.ReLU(name=f"s{stage}_out")(h)
    model = keras.Model(i, L.Dense(2)(L.GlobalAveragePooling2D()(h)))
    assert _chosen(model) == ["stem_relu", "s0_out", "s1_out", "s2_out"]


def test_a_stage_ends_at_its_last_layer_that_computes_features():
    """Not the input preprocessed, not the identity at inference, not a 1 x 1 map."""
    i = keras.Input((16, 16, 3))
    h = L.Rescaling(1 / 255, name="rescale")(i)  # the input, rescaled: a stage of its own before
    h = L.RandomFlip(name="flip")(h)
    h = L.Resizing(20, 20, name="resize")(h)
    h = L.Normalization(mean=0.5, variance=0.25, name="norm")(h)
    h = L.Conv2D(4, 3, name="conv_a")(h)  # 18 x 18
    h = L.GaussianNoise(0.1, name="noise")(h)
    h = L.Activation("linear", name="linear")(h)
    h = L.MaxPooling2D(2, name="pool_a")(h)  # 9 x 9
    h = L.SpatialDropout2D(0.1, name="spatial_dropout")(h)
    h = L.Identity(name="identity")(h)
    squeeze = L.Conv2D(4, 1, name="squeeze")(L.GlobalAveragePooling2D(keepdims=True, name="gap")(h))
    h = L.Multiply(name="excite")([h, squeeze])  # back at 9 x 9 after a 1 x 1 branch
    h = L.Conv2D(4, 3, padding="same", name="conv_b")(h)
    h = L.Dropout(0.5, name="dropout")(h)
    model = keras.Model(i, L.Dense(2)(L.Flatten()(h)))
    assert _chosen(model) == ["conv_a", "conv_b"]
    assert [w.path for w in actlog_layers.resolve(model, "*")][:2] == ["rescale", "flip"]  # "*" keeps all


@pytest.mark.slow
def test_layers_none_on_mobilenetv3small_and_efficientnetb0():
    """keras.applications' preprocessing inside the model (Rescaling, Normalization) and their
    squeeze-and-excitation branches (1 x 1) are never a stage's end."""
    mobile = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), classes=2)
    assert _chosen(mobile) == ["activation", "re_lu_2", "activation_1", "activation_11", "activation_17"]
    efficient = keras.applications.EfficientNetB0(weights=None, input_shape=(96, 96, 3), classes=2)
    assert _chosen(efficient) == [
        "block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
        "block6a_expand_activation", "top_activation",
    ]
    for model, chosen in ((mobile, _chosen(mobile)), (efficient, _chosen(efficient))):
        sizes = [tuple(model.get_layer(name).output.shape[1:3]) for name in chosen]
        assert sizes == [(48, 48), (24, 24), (12, 12), (6, 6), (3, 3)]


@pytest.mark.slow
def test_layers_none_on_resnet50_and_mobilenetv2():
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=2)
    assert _chosen(resnet) == ["conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                               "conv5_block3_out"]
    mobile = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=2)
    chosen = _chosen(mobile)
    assert chosen[-1] == "out_relu" and len(chosen) <= actlog_layers.DEFAULT_BUDGET
    sizes = [tuple(mobile.get_layer(name).output.shape[1:3]) for name in chosen]
    assert len(set(sizes)) == len(sizes)  # one per resolution
    assert len(actlog_layers.resolve(mobile, "*")) > 100


def test_layers_none_keeps_within_its_budget():
    i = keras.Input((64, 64, 1))
    h = i
    for n in range(actlog_layers.DEFAULT_BUDGET + 6):
        h = L.Conv2D(1, 2, name=f"c{n}")(h)  # every layer shrinks the map: each is a stage
    model = keras.Model(i, L.Flatten()(h))
    chosen = _chosen(model)
    assert len(chosen) == actlog_layers.DEFAULT_BUDGET
    assert chosen[0] == "c0" and chosen[-1] == f"c{actlog_layers.DEFAULT_BUDGET + 5}"


def test_an_expensive_explicit_choice_is_said_before_training(tmp_path):
    i = keras.Input((96, 96, 3))
    h = i
    for n in range(6):
        h = L.Conv2D(64, 3, padding="same", name=f"c{n}")(h)
    model = keras.Model(i, L.Dense(1)(L.GlobalAveragePooling2D()(h)))
    model.compile("sgd", "mse")
    x = RNG.random((8, 96, 96, 3)).astype(np.float32)
    logger = actlog.ActivationLogger(tmp_path, x, layers="*", freq=0, batch_freq=1,
                                     layout=actlog.Layout(min_tile=96, max_pixels=2**22))
    with pytest.warns(UserWarning, match=r"actlog: 6 layers x 8 probes draw \d+\.\d Mpixel of grids per "
                                         r"event, over actlog's budget of 24 Mpixel"):
        model.fit(x, np.zeros(8), epochs=1, batch_size=8, verbose=0, callbacks=[logger])


# --------------------------------------------------------------------------- rank 5


def _video_model():
    i = keras.Input((3, 4, 6, 6, 1))
    td = L.TimeDistributed(L.Conv3D(2, 3, padding="same"), name="td_conv3d")(i)
    lstm = L.ConvLSTM3D(2, 3, padding="same", return_sequences=True, name="convlstm")(td)
    per_step = L.TimeDistributed(L.GlobalAveragePooling3D(), name="per_step")(lstm)  # (3, 2)
    model = keras.Model(i, L.Dense(1)(L.Flatten()(per_step)))
    model.compile("sgd", "mse")
    return model


def test_rank_5_outputs_are_skipped_by_none_and_refused_by_name(tmp_path):
    model = _video_model()
    x = RNG.random((2, 3, 4, 6, 6, 1)).astype(np.float32)
    log = fit(model, x, np.zeros(2), actlog.ActivationLogger(tmp_path / "none", x))
    assert log.run().layers == ["per_step"]
    logger = actlog.ActivationLogger(tmp_path / "named", x, layers=["convlstm"])
    with pytest.raises(ValueError, match=re.escape(
        "Layer 'convlstm' (ConvLSTM3D) has output shape (None, 3, 4, 6, 6, 2): rank 5 per sample "
        "cannot be drawn."
    )):
        model.fit(x, np.zeros(2), epochs=1, verbose=0, callbacks=[logger])


# --------------------------------------------------------------------------- models with no call()


def _gan():
    keras.utils.set_random_seed(3)
    discriminator = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(4, 3, name="d_conv1"), L.Conv2D(2, 3, name="d_conv2"),
         L.Flatten(), L.Dense(1)], name="discriminator")
    generator = keras.Sequential(
        [keras.Input((4,)), L.Dense(64), L.Reshape((8, 8, 1)), L.Conv2D(1, 3, padding="same", name="g_out")],
        name="generator")

    class GAN(keras.Model):
        """The keras.io pattern: no call(), a train_step over two sub-models."""

        def __init__(self):
            super().__init__()
            self.discriminator, self.generator = discriminator, generator
            self.built = True  # its sub-models are; Keras cannot build a model with no call()

        def train_step(self, *args):  # actlog only needs fit's callbacks here
            if keras.backend.backend() == "jax":
                return {"loss": 0.0}, args[0]
            return {"loss": 0.0}

    gan = GAN()
    gan.compile()
    return gan


def test_layers_of_a_sub_model_of_a_model_with_no_call(tmp_path):
    gan = _gan()
    images = RNG.random((2, 8, 8, 1)).astype(np.float32)
    logger = actlog.ActivationLogger(tmp_path, images, layers=["discriminator/d_conv1", "d_conv2"])
    gan.fit(images, epochs=1, verbose=0, callbacks=[logger])
    assert logger.misses == {}
    run = actlog.read(tmp_path).run()
    assert run.layers == ["discriminator/d_conv1", "discriminator/d_conv2"]
    sub = keras.Model(gan.discriminator.inputs, gan.discriminator.get_layer("d_conv1").output)
    acts = to_numpy(sub(images))
    np.testing.assert_array_equal(
        run.grid("discriminator/d_conv1", 1), actlog.grid.render(acts[1], run.layout("discriminator/d_conv1"))
    )


def test_layers_of_two_sub_models_of_a_model_with_no_call_are_refused(tmp_path):
    gan = _gan()
    images = RNG.random((2, 8, 8, 1)).astype(np.float32)
    logger = actlog.ActivationLogger(tmp_path, images, layers=["d_conv1", "g_out"])
    with pytest.raises(ValueError, match=(
        r"has no call\(\) of its own, so actlog runs one of its sub-models; the watched layers "
        r"\['discriminator/d_conv1', 'generator/g_out'\] are not all inside one.*"
        r"Sub-models: \['discriminator', 'generator'\]"
    )):
        gan.fit(images, epochs=1, verbose=0, callbacks=[logger])


class EagerOnly(keras.Model):
    """A call() that leaves the graph: it only runs eagerly (run_eagerly=True)."""

    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(3, 3, name="conv")
        self.flat, self.out = L.Flatten(), L.Dense(1)

    def call(self, x):
        h = self.conv(x)
        h = keras.ops.convert_to_tensor(np.maximum(keras.ops.convert_to_numpy(h), 0.0))
        return self.out(self.flat(h))


@pytest.mark.skipif(BACKEND == "jax", reason="Keras' JAX trainer differentiates call() with jax.grad: a "
                    "call() that leaves the graph cannot be trained there, with or without actlog")
def test_run_eagerly_models_are_probed_eagerly(tmp_path):
    keras.utils.set_random_seed(4)
    model = EagerOnly()
    x = RNG.random((4, 8, 8, 1)).astype(np.float32)
    model(x[:1])  # built eagerly: Keras cannot trace this call() to build it
    model.compile("sgd", "mse", run_eagerly=True)
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv"])
    fit(model, x, np.zeros(4), logger)
    assert logger.probe_function.traces == 0  # never compiled
    run = actlog.read(tmp_path).run()
    np.testing.assert_array_equal(run.grid("conv", 0), actlog.grid.render(to_numpy(model.conv(x[:1]))[0],
                                                                            run.layout("conv")))


# --------------------------------------------------------------------------- a log directory used twice


def _tiny(seed=0):
    from conftest import make_tiny_model

    return make_tiny_model(seed)


def test_a_second_run_in_the_same_log_dir_gets_its_own_run(tmp_path, tiny_data, tiny_probes):
    x, y = tiny_data
    first = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv_0"], batch_freq=2)
    _tiny(0).fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[first])
    second = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv_0"], batch_freq=2)
    with pytest.warns(UserWarning, match=(
        r"activations already holds steps 0\.\.2 written by an earlier run; this run writes to "
        r".*activations-2 \(and activations_batch-2\)"
    )):
        _tiny(1).fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[second])
    log = actlog.read(tmp_path)
    assert log.runs == ["activations", "activations-2", "activations_batch", "activations_batch-2"]
    assert log.run("activations").steps == [0, 1, 2] and log.run("activations-2").steps == [0, 1]
    assert second.run_dirs[metadata.EPOCH_RUN].endswith("activations-2")
    # a resume that says where it starts continues the first run
    third = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv_0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _tiny(0).fit(x, y, initial_epoch=3, epochs=4, batch_size=8, verbose=0, callbacks=[third])
    assert actlog.read(tmp_path).run("activations").steps == [0, 1, 2, 4]


def test_two_loggers_with_other_layers_share_one_run(tmp_path, tiny_model, tiny_data, tiny_probes):
    a = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv_0"])
    b = actlog.ActivationLogger(tmp_path, tiny_probes, layers={"second": "conv_1"}, cmap="viridis")
    tiny_model.fit(*tiny_data, epochs=1, batch_size=8, verbose=0, callbacks=[a, b])
    run = actlog.read(tmp_path).run()
    assert actlog.read(tmp_path).runs == ["activations"]
    assert sorted(run.layers) == ["conv_0", "second"]
    assert run.grid("conv_0", 0).shape[-1] == 1 and run.grid("second", 0).shape[-1] == 3


def test_one_logger_on_two_differently_shaped_models_reads_each_step_right(tmp_path, tiny_probes):
    logger = actlog.ActivationLogger(tmp_path, tiny_probes, layers=["conv"])

    def model(filters):
        keras.utils.set_random_seed(filters)
        i = keras.Input((12, 12, 1))
        m = keras.Model(i, L.Dense(1)(L.Flatten()(L.Conv2D(filters, 3, name="conv")(i))))
        m.compile("sgd", "mse")
        return m

    small, large = model(2), model(9)
    small.fit(tiny_probes, np.zeros(2), epochs=1, verbose=0, callbacks=[logger])
    large.fit(tiny_probes, np.zeros(2), epochs=1, verbose=0, callbacks=[logger])
    run = actlog.read(tmp_path).run()
    assert run.steps == [0, 1, 2]  # steps continue; each fit wrote its own manifest
    assert len(run.channels("conv", step=0)) == 2 and len(run.channels("conv", step=2)) == 9
    for m, step in ((small, 1), (large, 2)):
        acts = to_numpy(m.get_layer("conv")(tiny_probes))
        layout = run.layout("conv", step)
        np.testing.assert_array_equal(run.grid("conv", 0, step), actlog.grid.render(acts[0], layout))
        np.testing.assert_array_equal(
            run.tile("conv", 0, 1, step),
            actlog.grid.render(acts[0], layout)[slice(*_span(layout, 1, 0)), slice(*_span(layout, 1, 1))],
        )


def _span(layout, channel, axis):
    y, x, h, w = layout.channel_box(channel)
    return (y, y + h) if axis == 0 else (x, x + w)


# --------------------------------------------------------------------------- probes as people pass them


def _dataset(x, y):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    return ((x[i : i + 3], y[i : i + 3]) for i in range(0, len(x), 3))


@pytest.mark.parametrize("form", ["dataset", "x_y_tuple", "list_of_images", "one_image"])
def test_probes_as_people_pass_them(form, tmp_path, tiny_model, tiny_data):
    x, y = tiny_data
    probes = {
        "dataset": lambda: _dataset(x, y),
        "x_y_tuple": lambda: (x[:8], y[:8]),
        "list_of_images": lambda: [x[i] for i in range(8)],
        "one_image": lambda: x[0],
    }[form]()
    count = {"dataset": 4, "x_y_tuple": 8, "list_of_images": 8, "one_image": 1}[form]
    logger = actlog.ActivationLogger(
        tmp_path, actlog.Probes(probes, count=count if form == "dataset" else None), layers=["conv_0"]
    )
    run = fit(tiny_model, x, y, logger).run()
    assert run.probes == count
    last = count - 1  # every form keeps the samples in order: the last probe is x[last]
    np.testing.assert_array_equal(run.probe_image(last), actlog.grid.to_image(x[last]))
    acts = to_numpy(tiny_model.get_layer("conv_0")(x[last : last + 1]))
    np.testing.assert_array_equal(run.grid("conv_0", last), actlog.grid.render(acts[0], run.layout("conv_0")))


def test_dict_probes_log_the_first_image_like_input(tmp_path):
    meta = keras.Input((5,), name="meta")
    image = keras.Input((8, 8, 1), name="image")
    conv = L.Conv2D(2, 3, name="conv")(image)
    model = keras.Model({"meta": meta, "image": image},
                        L.Dense(1)(L.Concatenate()([L.Flatten()(conv), meta])))
    model.compile("sgd", "mse")
    probes = {"meta": RNG.random((2, 5)).astype(np.float32),
              "image": RNG.random((2, 8, 8, 1)).astype(np.float32)}
    run = fit(model, probes, np.zeros(2), actlog.ActivationLogger(tmp_path, probes, layers=["conv"])).run()
    logged = run.probe_image(1)
    assert logged.shape == (8, 8, 1)
    expected = actlog.grid.to_image(probes["image"][1])
    np.testing.assert_array_equal(logged, expected)


# --------------------------------------------------------------------------- reload


@keras.saving.register_keras_serializable(package="actlog_tests")
class ResidualBlock(L.Layer):
    """A user-written composite layer whose inner layers have names Keras makes up."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(1, 3, padding="same")
        self.mix = [L.Conv2D(1, 1), L.Conv2D(1, 1)]

    def call(self, x):
        return x + self.mix[1](self.mix[0](self.conv(x)))


def test_tags_of_composite_layers_survive_a_reload(tmp_path, tiny_probes):
    keras.utils.set_random_seed(5)
    i = keras.Input((12, 12, 1))
    model = keras.Model(i, L.Dense(1)(L.Flatten()(ResidualBlock(name="rb1")(i))))
    model.compile("sgd", "mse")
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    block = reloaded.get_layer("rb1")
    renamed = [layer.name for layer in block._flatten_layers(include_self=False, recursive=False)]
    original = [layer.name for layer in model.get_layer("rb1")._flatten_layers(include_self=False,
                                                                               recursive=False)]
    assert renamed != original  # Keras made up new names for the rebuilt inner layers
    tags = []
    for m, where in ((model, "before"), (reloaded, "after")):
        logger = actlog.ActivationLogger(tmp_path / where, tiny_probes, layers="*")
        m.fit(tiny_probes, np.zeros(2), epochs=1, verbose=0, callbacks=[logger])
        tags.append(actlog.read(tmp_path / where).run().layers)
    assert tags[0] == tags[1] == ["rb1/conv", "rb1/mix.0", "rb1/mix.1"]
