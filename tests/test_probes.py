"""Probes as people pass them: copied once, then matched to the model's inputs."""

from __future__ import annotations

import numpy as np
import pytest

from actlog.probes import InputSpec, copy_probes, fit_to_model, probe_images

IMAGE = InputSpec("image", (12, 12, 1), "float32")
rng = np.random.default_rng(0)
X = rng.random((5, 12, 12, 1)).astype(np.float32)
Y = np.arange(5)


def fit(probes, *specs):
    return fit_to_model(copy_probes(probes), list(specs))


@pytest.mark.parametrize(
    "probes",
    [X, list(X), (X, Y), (X, Y, np.ones(5))],
    ids=["batch", "list_of_samples", "x_y_tuple", "x_y_weight_tuple"],
)
def test_accepted_forms_give_the_batch(probes):
    got = fit(probes, IMAGE)
    np.testing.assert_array_equal(got, X)
    assert not got.flags.writeable


def test_one_sample_without_its_batch_axis():
    assert fit(X[0], IMAGE).shape == (1, 12, 12, 1)


def test_datasets_and_iterables_give_their_first_samples():
    def batches():
        for start in range(0, 5, 2):
            yield X[start:start + 2], Y[start:start + 2]

    np.testing.assert_array_equal(copy_probes(batches(), count=3), X[:3])
    np.testing.assert_array_equal(copy_probes(iter([X[:2], X[2:]])), X)  # default 8: all 5 here
    np.testing.assert_array_equal(copy_probes(X, count=2), X[:2])
    with pytest.raises(ValueError, match="yielded no batch"):
        copy_probes(iter([]))


def test_tensorflow_datasets(tmp_path):
    tf = pytest.importorskip("tensorflow")
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(2)
    np.testing.assert_array_equal(copy_probes(dataset, count=4), X[:4])


def test_multi_input_lists_dicts_and_tuples():
    other = InputSpec("extra", (3,), "float32")
    extra = rng.random((5, 3)).astype(np.float32)
    for probes in ([X, extra], ((X, extra), Y)):
        got = fit(probes, IMAGE, other)
        assert isinstance(got, list) and got[0].shape == X.shape and got[1].shape == extra.shape
    got = fit({"extra": extra, "image": X}, IMAGE, other)
    assert list(got) == ["image", "extra"]
    # the probe image comes from the first image-like input in the model's order
    images = probe_images(got, [IMAGE, other])
    assert len(images) == 5 and images[0].shape == (12, 12, 1)


REFUSED = {
    "two_batches_for_one_input": (
        [X, X], r"The model has one input of shape \(None, 12, 12, 1\), but probes is a list of 2 arrays"),
    "missing_channel_axis": (
        X[..., 0],
        r"received probes of shape \(5, 12, 12\), the input accepts \(k, 12, 12, 1\) \(k probes\)\. "
                   r"Add the channel axis: probes\[\.\.\., None\]"),
    "channels_first": (
        np.moveaxis(X, -1, 1), r"The channels seem to come first: np\.moveaxis\(probes, 1, -1\)"),
    "dict_missing_an_input": (
        {"image": X}, r"probes is a dict with keys \['image'\], but the model's inputs are named "
                      r"\['image', 'extra'\]; missing \['extra'\]"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_fix(case):
    probes, match = REFUSED[case]
    specs = [IMAGE, InputSpec("extra", (3,))] if case == "dict_missing_an_input" else [IMAGE]
    with pytest.raises(ValueError, match=match):
        fit(probes, *specs)


def test_strings_are_refused_with_what_to_do():
    with pytest.raises(TypeError, match=r"received dtype <U5 \(list\)\. Models that take strings cannot be "
                                        r"probed: pass the ids after vectorisation"):
        copy_probes(["hello", "world"])
