"""Activation maximisation (optional) on every backend: the gradient seam, the ascent, the log."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import to_numpy
from test_atlas_logger import planted_model, planted_pool

import actlog
from actlog import backends, maximize, metadata

pytestmark = pytest.mark.backend


def test_each_backend_differentiates_with_respect_to_the_input():
    """d/dx of a linear convolution's summed output: every kernel weight, summed over the
    positions each pixel takes part in (a full correlation of ones with the kernel)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 7, 1))
    conv = keras.layers.Conv2D(1, 3, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    kernel = conv.get_weights()[0][:, :, 0, 0]
    step = backends.current().gradient(lambda x, scale: keras.ops.sum(model(x)) * scale, model)
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random((2, 6, 7, 1)), dtype="float32")
    value, grad = step(x, keras.ops.convert_to_tensor(2.0))
    expected = np.zeros((6, 7))
    for y in range(4):
        for z in range(5):
            expected[y : y + 3, z : z + 3] += 2.0 * kernel
    assert to_numpy(grad).shape == (2, 6, 7, 1)
    np.testing.assert_allclose(to_numpy(grad)[1, :, :, 0], expected, rtol=1e-5, atol=1e-6)
    assert float(to_numpy(value)) == pytest.approx(2.0 * float(to_numpy(keras.ops.sum(model(x)))), rel=1e-5)


def test_penalty_gradient_is_the_gradient_of_the_penalty():
    z = np.random.default_rng(0).normal(size=(1, 5, 4, 1))

    def penalty(z):
        tv = sum(float((np.diff(z, axis=a) ** 2).sum()) for a in (1, 2))
        return maximize.L2 * float((z**2).sum()) + maximize.TV * tv

    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        bump = np.zeros_like(z)
        bump[index] = 1e-6
        numeric[index] = (penalty(z + bump) - penalty(z - bump)) / 2e-6
    np.testing.assert_allclose(maximize.penalty_gradient(z), numeric, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def maximised(tmp_path_factory, read_run):
    log_dir = tmp_path_factory.mktemp("actmax")
    pool = planted_pool()
    model = planted_model()
    # "pool" (a max pooling of the plus and diagonal detectors): the mean of a linear,
    # zero-mean filter's response over positions hardly depends on the image; after a max it does.
    logger = actlog.ActivationLogger(log_dir, pool[:2], layers=["pool", "corner"], freq=0,
                                     actmax=actlog.Maximize({"pool": [1, 0], "corner": 0}, every=2))
    model.fit(pool, np.arange(len(pool)) % 2, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    return {"model": model, "logger": logger, "run": read_run(log_dir / metadata.EPOCH_RUN),
            "read": actlog.read(log_dir).run(), "pool": pool}


def test_maximisation_is_logged_on_its_schedule(maximised):
    run, read = maximised["run"], maximised["read"]
    assert maximised["logger"].misses == {}
    for layer in ("pool", "corner"):
        assert [s for s, _ in run[metadata.actmax_tag(layer)]] == [0, 2, 3]  # step 0, every 2, the end
        assert read.actmax_steps(layer) == [0, 2, 3]
    channels, images = read.actmax("pool")
    assert channels == [1, 0] and images.shape == (2, 64, 64, 1) and images.dtype == np.uint8
    _, picture = run["pool/actmax"][-1]
    np.testing.assert_array_equal(picture[:, :64], images[0])
    entry = read.layer_info("pool")["actmax"]
    assert entry["channels"] == [1, 0] and entry["seed"] == maximize.SEED and entry["steps"] == maximize.STEPS


def test_the_ascent_excites_its_channel_and_repeats_exactly(maximised):
    model = maximised["model"]
    sub = keras.Model(model.input, model.get_layer("pool").output)
    channels, first = maximised["read"].actmax("pool", step=0)
    _, last = maximised["read"].actmax("pool", step=3)
    np.testing.assert_array_equal(first, last)  # frozen weights, fixed seed: the same images
    images = first[:, ::4, ::4].astype(np.float32) / 255.0  # back to 16 x 16 in [0, 1]
    noise = np.random.default_rng(0).uniform(0, 1, size=images.shape).astype(np.float32)
    for i, channel in enumerate(channels):
        mean = to_numpy(sub(images[i : i + 1]))[0, :, :, channel].mean()
        baseline = to_numpy(sub(noise[i : i + 1]))[0, :, :, channel].mean()
        assert mean > baseline + 0.3, (channel, mean, baseline)


def test_bad_targets_fail_before_training(tmp_path, tiny_model, tiny_data):
    x, y = tiny_data
    cases = (({"pool_0": 1}, r"actmax names layer 'pool_0', which is not watched; watched: \['conv_0'\]"),
             ({"conv_0": 7}, r"actmax names channel 7 of 'conv_0', which has 4 channels \(0\.\.3\)"))
    for actmax, match in cases:
        logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], actmax=actmax)
        with pytest.raises(ValueError, match=match):
            tiny_model.fit(x, y, epochs=1, verbose=0, callbacks=[logger])
