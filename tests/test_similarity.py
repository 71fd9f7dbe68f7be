"""Representation similarity: Gram matrices logged on every backend, linear CKA read back.

The backend tests train a small model with a frozen layer, a trained layer and a
layer re-initialised mid-run, record the watched layers' float activations on the
probes themselves at every logged step, and compare :meth:`actlog.reader.Run.similarity`
with the textbook linear CKA (Kornblith et al. 2019) computed from those activations.
"""

from __future__ import annotations

import numpy as np
import pytest

import actlog
from actlog import similarity
from actlog.index import LogError

EPOCHS = 5
REINIT_EPOCH = 3  # the "reset" layer gets fresh weights before this epoch trains: step 3 -> 4 drops
PROBES = 6


def textbook_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from the activations themselves, in feature space (Kornblith et al. 2019, eq. 5):
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` with centred columns."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="frozen", trainable=False)(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="trained")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(2, name="reset")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
    y = (x[:, 3:9, 3:9, 0].mean(axis=(1, 2)) > 0).astype(np.int32) + (x[:, 0, 0, 0] > 1)
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of EPOCHS epochs, and the activations recorded at each of its steps."""
    import keras

    log_dir = tmp_path_factory.mktemp("similarity")
    x, y = _data()
    probes = x[:PROBES].copy()
    model = _model()
    names = ["frozen", "trained", "reset"]
    recorded: dict[int, list[np.ndarray]] = {}

    class Record(keras.callbacks.Callback):
        """The watched layers' float outputs on the probes, at each step actlog logs."""

        def on_train_begin(self, logs=None):
            self.taps = keras.Model(model.input, [model.get_layer(n).output for n in names])

        def _record(self, step):
            outputs = self.taps(probes, training=False)
            recorded[step] = [np.asarray(keras.ops.convert_to_numpy(o), np.float32) for o in outputs]

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                self._record(0)
            if epoch == REINIT_EPOCH:
                layer = model.get_layer("reset")
                rng = np.random.default_rng(1)
                # fresh values of the same scale: two random 2-d views of the same features
                layer.set_weights([(rng.normal(size=w.shape) * (w.std() or 0.1)).astype(np.float32)
                                   for w in layer.get_weights()])

        def on_epoch_end(self, epoch, logs=None):
            self._record(epoch + 1)

    logger = actlog.ActivationLogger(log_dir, probes, layers=names, freq=1)
    model.fit(x, y, epochs=EPOCHS, batch_size=8, verbose=0, shuffle=False, callbacks=[logger, Record()])
    return actlog.read(log_dir).run(), recorded, names


@pytest.mark.backend
def test_cka_equals_the_textbook_formula_on_every_pair_of_steps(trained):
    run, recorded, names = trained
    for index, name in enumerate(names):
        steps, matrix = run.similarity(name)
        assert steps.tolist() == list(range(EPOCHS + 1))
        expected = np.array([[textbook_cka(recorded[a][index], recorded[b][index]) for b in steps]
                             for a in steps])
        np.testing.assert_allclose(matrix, expected, atol=0.02, err_msg=name)
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), 1.0)


@pytest.mark.backend
def test_a_frozen_layer_stays_at_one_and_a_reinitialised_layer_drops(trained):
    run, _, _ = trained
    _, frozen = run.similarity("frozen")
    np.testing.assert_allclose(frozen, 1.0, atol=1e-5)
    _, reset = run.similarity("reset")
    before, after = REINIT_EPOCH, REINIT_EPOCH + 1  # steps: epochs completed
    assert reset[before, after] < 0.9, reset
    for step in range(EPOCHS):
        if step != before:
            assert reset[step, step + 1] > 0.95, (step, reset)
    # training moves a layer less than a fresh start
    _, changed = run.similarity("trained")
    assert changed[0, -1] > reset[before, after]


@pytest.mark.backend
def test_layer_similarity_at_a_step(trained):
    run, recorded, names = trained
    layers, matrix = run.layer_similarity()
    assert layers == names
    expected = np.array([[textbook_cka(recorded[EPOCHS][i], recorded[EPOCHS][j]) for j in range(3)]
                         for i in range(3)])
    np.testing.assert_allclose(matrix, expected, atol=0.02)
    layers, at_two = run.layer_similarity(2)
    expected = np.array([[textbook_cka(recorded[2][i], recorded[2][j]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(at_two, expected, atol=0.02)
    with pytest.raises(LogError, match=r"No Gram matrices at step 99 .*steps 0, 1, 2, 3, 4, 5"):
        run.layer_similarity(99)
    with pytest.raises(LogError, match="step must be an integer; received '2'"):
        run.layer_similarity("2")


@pytest.mark.backend
def test_grams_are_written_with_statistics_off(tmp_path, tiny_model, tiny_data, read_run):
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:3].copy(), layers=["conv_0", "conv_1"], stats=False)
    tiny_model.fit(x, y, epochs=1, verbose=0, callbacks=[logger])
    tags = read_run(tmp_path / "activations")
    assert [s for s, _ in tags["conv_1/gram"]] == [0, 1]
    assert "conv_1/mean" not in tags
    gram = tags["conv_1/gram"][0][1]
    assert gram.shape == (3, 3) and gram.dtype == np.float32
    np.testing.assert_allclose(gram.sum(axis=0), 0.0, atol=1e-3 * np.abs(gram).max())


# --------------------------------------------------------------------------- numpy only


def test_linear_cka_matches_the_feature_space_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 30)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(30, 5))).astype(np.float32)
    gx = np.asarray(similarity.centred_gram(actlog_numpy(), x))
    gy = np.asarray(similarity.centred_gram(actlog_numpy(), y))
    assert similarity.linear_cka(gx, gy) == pytest.approx(textbook_cka(x, y), abs=1e-5)
    # invariant to rotation and isotropic scale
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    rotated = np.asarray(similarity.centred_gram(actlog_numpy(), 3.0 * x @ q))
    assert similarity.linear_cka(gx, rotated) == pytest.approx(1.0, abs=1e-5)


def test_undefined_cka_is_nan():
    rng = np.random.default_rng(0)
    xp = actlog_numpy()
    good = np.asarray(similarity.centred_gram(xp, rng.normal(size=(4, 10)).astype(np.float32)))
    dead = np.asarray(similarity.centred_gram(xp, np.zeros((4, 10), np.float32)))
    acts = rng.normal(size=(4, 10)).astype(np.float32)
    acts[1, 3] = np.inf
    with np.errstate(invalid="ignore"):
        broken = np.asarray(similarity.centred_gram(xp, acts))
    assert np.isnan(broken).all()
    matrix = similarity.cka_matrix([good, dead, broken, good])
    assert matrix[0, 3] == 1.0 and matrix[0, 0] == 1.0
    assert np.isnan(matrix[1:3]).all() and np.isnan(matrix[:, 1:3]).all()
    assert np.isnan(similarity.linear_cka(good, dead))
    with pytest.raises(ValueError, match=r"square and of the same shape; received \(4, 4\) and \(3, 3\)"):
        similarity.linear_cka(good, good[:3, :3])


def actlog_numpy():
    from actlog.arrays import NUMPY

    return NUMPY
