"""Keras' epoch logs as loss curves on every backend (``ActivationLogger(epoch_logs=...)``).

Read back through TensorBoard's own ``EventAccumulator``; on TensorFlow, compared with
what Keras' ``TensorBoard`` callback writes for the same fit.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from conftest import BACKEND, keras_tensorboard, tensorflow_only

import actlog
from actlog import epoch_logs, metadata

pytestmark = pytest.mark.backend

TRAIN_TAGS = {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
VALIDATION_TAGS = {"epoch_loss", "epoch_accuracy"}


def fit(model, data, log_dir, *, epochs=2, initial_epoch=0, extra=(), **options):
    x, y = data
    model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = actlog.ActivationLogger(log_dir, x[:2], layers=["conv_0"], **options)
    history = model.fit(x, y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
                        validation_data=(x[:4], y[:4]), callbacks=[logger, *extra])
    assert logger.misses == {}
    return history.history


def test_the_loss_curves_of_every_epoch_on_every_backend(tmp_path, tiny_model, tiny_data, read_run):
    history = fit(tiny_model, tiny_data, tmp_path, epochs=3, epoch_logs=True)
    assert sorted(os.listdir(tmp_path)) == [metadata.EPOCH_RUN, "train", "validation"]
    train, validation = read_run(tmp_path / "train"), read_run(tmp_path / "validation")
    assert set(train) == TRAIN_TAGS and set(validation) == VALIDATION_TAGS
    for tag in ("loss", "accuracy"):
        assert train[f"epoch_{tag}"] == [(s, float(np.float32(v))) for s, v in enumerate(history[tag])]
        assert validation[f"epoch_{tag}"] == [
            (s, float(np.float32(v))) for s, v in enumerate(history[f"val_{tag}"])
        ]
    assert train["epoch_learning_rate"] == [(s, float(np.float32(0.05))) for s in range(3)]


def test_steps_are_keras_epoch_indices_with_initial_epoch(tmp_path, tiny_model, tiny_data, read_run):
    fit(tiny_model, tiny_data, tmp_path, epochs=4, initial_epoch=2, epoch_logs=True)
    assert [s for s, _ in read_run(tmp_path / "train")["epoch_loss"]] == [2, 3]


def test_by_default_on_where_keras_tensorboard_cannot_run(tmp_path, tiny_model, tiny_data):
    fit(tiny_model, tiny_data, tmp_path)
    runs = [] if BACKEND == "tensorflow" else ["train", "validation"]
    assert sorted(os.listdir(tmp_path)) == [metadata.EPOCH_RUN, *runs]
    assert epoch_logs.enabled(None, BACKEND) is (BACKEND != "tensorflow")


def test_off_writes_no_curves_and_freq_0_still_writes_them(tmp_path, tiny_model, tiny_data,
                                                           tiny_model_factory):
    fit(tiny_model, tiny_data, tmp_path / "off", epoch_logs=False)
    assert os.listdir(tmp_path / "off") == [metadata.EPOCH_RUN]
    fit(tiny_model_factory(1), tiny_data, tmp_path / "curves_only", freq=0, epoch_logs=True)
    assert sorted(os.listdir(tmp_path / "curves_only")) == ["train", "validation"]


@pytest.mark.parametrize("value", ["auto", 1, "yes"])
def test_epoch_logs_must_be_none_or_a_bool(tmp_path, tiny_probes, value):
    with pytest.raises(TypeError, match=(
        r"epoch_logs must be None \(write Keras' epoch logs where the backend is not TensorFlow, "
        rf"whose own TensorBoard callback writes them\), True or False; received {value!r} "
    )):
        actlog.ActivationLogger(tmp_path, tiny_probes, epoch_logs=value)


@tensorflow_only
def test_the_same_runs_tags_steps_and_values_as_keras_tensorboard(tmp_path, tiny_model_factory, tiny_data,
                                                                 read_run):
    fit(tiny_model_factory(0), tiny_data, tmp_path / "keras", extra=keras_tensorboard(tmp_path / "keras"),
        epoch_logs=False)
    fit(tiny_model_factory(0), tiny_data, tmp_path / "actlog", epoch_logs=True)
    for run, tags in (("train", TRAIN_TAGS), ("validation", VALIDATION_TAGS)):
        ours, keras_own = read_run(tmp_path / "actlog" / run), read_run(tmp_path / "keras" / run)
        # (Keras' train run also holds the model's config, as the text tag "keras".)
        assert set(ours) == {tag for tag in keras_own if tag.startswith("epoch_")} == tags
        for tag, values in ours.items():
            assert [s for s, _ in values] == [s for s, _ in keras_own[tag]]
            np.testing.assert_allclose([v for _, v in values], [v for _, v in keras_own[tag]], rtol=1e-5)


def test_a_failing_store_is_a_counted_fault(tmp_path, tiny_model, tiny_data):
    (tmp_path / "train").write_text("a file where the run directory goes")
    x, y = tiny_data
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["conv_0"], epoch_logs=True)
    with pytest.warns(RuntimeWarning, match=r"actlog \(write\): could not write the epoch logs of epoch 0 "
                                            r"\(train\)"):
        tiny_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    assert logger.misses == {"write": 2}
