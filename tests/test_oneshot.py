"""The one-shot API: ``actlog.feature_maps`` and ``actlog.plot_feature_maps``.

Values are compared with what a hand-built intermediate ``keras.Model`` (the
classic recipe) returns, and figures with the grid toolkit's own rendering.
"""

from __future__ import annotations

import re
import sys

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import to_numpy  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import actlog  # noqa: E402
from actlog import grid  # noqa: E402

pytestmark = pytest.mark.backend

CLASSIC_SHAPES = {
    "conv_0": (26, 26, 32), "pool_0": (13, 13, 32), "conv_1": (11, 11, 64), "pool_1": (5, 5, 64),
}


@pytest.fixture(scope="module")
def classic(classic_model_factory):
    """The article's ConvNet (untrained weights are as good as any here) and 3 seeded images."""
    model = classic_model_factory(0)
    images = np.random.default_rng(11).random((3, 28, 28, 1), dtype=np.float32)
    images.setflags(write=False)
    return model, images


def recipe(model, layer: str, images: np.ndarray) -> np.ndarray:
    """The classic recipe: an intermediate model from the input to one layer."""
    sub = keras.Model(model.inputs[0], model.get_layer(layer).output)
    return to_numpy(sub(images, training=False))


@pytest.fixture
def figures():
    """Figures a test makes are closed afterwards."""
    made: list[Figure] = []
    yield made
    for fig in made:
        plt.close(fig)


# --------------------------------------------------------------------------- feature_maps


def test_feature_maps_equal_the_classic_recipe(classic):
    model, images = classic
    maps = actlog.feature_maps(model, images[:1], layers=["conv_0", "conv_1"])
    assert list(maps) == ["conv_0", "conv_1"]
    assert maps["conv_0"].shape == (1, 26, 26, 32)
    assert maps["conv_1"].shape == (1, 11, 11, 64)
    for name, values in maps.items():
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, recipe(model, name, images[:1]))


def test_feature_maps_of_several_images(classic):
    model, images = classic
    maps = actlog.feature_maps(model, images, layers="pool_1")
    assert list(maps) == ["pool_1"]
    assert maps["pool_1"].shape == (3, 5, 5, 64)
    np.testing.assert_array_equal(maps["pool_1"], recipe(model, "pool_1", images))


def test_feature_maps_default_is_every_spatial_layer(classic):
    model, images = classic
    maps = actlog.feature_maps(model, images[:2])
    assert {name: values.shape[1:] for name, values in maps.items()} == CLASSIC_SHAPES
    assert list(maps) == list(CLASSIC_SHAPES)


def test_feature_maps_display_names(classic):
    model, images = classic
    maps = actlog.feature_maps(
        model, images[:1], layers={"edges": "conv_0", "parts": model.get_layer("conv_1")}
    )
    assert list(maps) == ["edges", "parts"]
    np.testing.assert_array_equal(maps["edges"], recipe(model, "conv_0", images[:1]))
    np.testing.assert_array_equal(maps["parts"], recipe(model, "conv_1", images[:1]))


def test_feature_maps_of_a_functional_model(tiny_model, tiny_probes):
    maps = actlog.feature_maps(tiny_model, tiny_probes, layers=keras.layers.Conv2D)
    assert {name: values.shape for name, values in maps.items()} == {
        "conv_0": (2, 10, 10, 4), "conv_1": (2, 3, 3, 6),
    }
    for name, values in maps.items():
        sub = keras.Model(tiny_model.input, tiny_model.get_layer(name).output)
        np.testing.assert_array_equal(values, to_numpy(sub(tiny_probes, training=False)))


def test_feature_maps_of_a_subclassed_model_with_default_layers(tiny_probes):
    """No symbolic graph: the spatial layers are found by running the model on the images."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(3, 3, name="conv")
            self.head = keras.layers.Dense(2, name="head")

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    net = Net()
    net(tiny_probes)
    maps = actlog.feature_maps(net, tiny_probes)
    assert list(maps) == ["conv"]
    np.testing.assert_allclose(maps["conv"], to_numpy(net.conv(tiny_probes)), rtol=1e-5, atol=1e-6)


def test_feature_maps_leave_the_images_alone(tiny_model, tiny_probes):
    before = tiny_probes.copy()
    maps = actlog.feature_maps(tiny_model, tiny_probes, layers=["conv_0"])
    np.testing.assert_array_equal(tiny_probes, before)
    assert tiny_probes.flags.writeable
    assert not np.shares_memory(maps["conv_0"], tiny_probes)


def test_feature_maps_unknown_layer_lists_existing(classic):
    model, images = classic
    expected = re.escape(
        "No such layer: 'conv_2'. Existing layers are: ['conv_0', 'pool_0', 'conv_1', 'pool_1', "
        "'flatten', 'dropout', 'digits']"
    )
    with pytest.raises(ValueError, match=expected):
        actlog.feature_maps(model, images[:1], layers=["conv_2"])


def test_feature_maps_images_that_do_not_fit(classic):
    model, _ = classic
    with pytest.raises(
        ValueError, match=r"received probes of shape \(1, 32, 32, 1\), the input accepts \(k, 28, 28, 1\)"
    ):
        actlog.feature_maps(model, np.zeros((1, 32, 32, 1), np.float32), layers=["conv_0"])


def test_feature_maps_rejects_non_numeric_images(classic):
    model, _ = classic
    with pytest.raises(TypeError, match=r"must be numeric \(bool, int or float\); received dtype <U"):
        actlog.feature_maps(model, np.array([["cat"]]), layers=["conv_0"])


# --------------------------------------------------------------------------- plot_feature_maps


def panel(fig: Figure, index: int) -> np.ndarray:
    """The picture drawn in one axes of a figure."""
    return np.asarray(fig.axes[index].images[0].get_array())


def test_plot_is_a_figure_with_one_axes_per_layer(classic, figures):
    model, images = classic
    fig = actlog.plot_feature_maps(model, images[:1], layers=["conv_0", "conv_1"])
    figures.append(fig)
    assert isinstance(fig, Figure)
    assert matplotlib.get_backend().lower() == "agg"
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == [
        "conv_0  (26, 26, 32)  (32 channels)", "conv_1  (11, 11, 64)  (32 of 64 channels)"
    ]
    maps = actlog.feature_maps(model, images[:1], layers=["conv_0", "conv_1"])
    # the classic 4 x 8 grid of the first 32 channels, as the callback would render it
    for index, name in enumerate(["conv_0", "conv_1"]):
        layout = grid.plan_layout(maps[name].shape[1:3], range(32), rows=4, cols=8, pad=1)
        expected = grid.render(grid.as_maps(maps[name][0]), layout)
        np.testing.assert_array_equal(panel(fig, index), expected[..., 0])
    assert panel(fig, 0).shape == (4 * 52 + 5, 8 * 52 + 9)
    assert panel(fig, 1).shape == (4 * 55 + 5, 8 * 55 + 9)


def test_plot_has_one_row_per_image(classic, figures):
    model, images = classic
    fig = actlog.plot_feature_maps(model, images[:3], layers=["conv_1"], max_channels=None)
    figures.append(fig)
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"conv_1  (11, 11, 64)  (64 channels)  image {i}" for i in range(3)]
    maps = actlog.feature_maps(model, images[:3], layers=["conv_1"])["conv_1"]
    layout = grid.plan_layout((11, 11), range(64), rows=8, cols=8, pad=1)
    for i in range(3):
        np.testing.assert_array_equal(panel(fig, i), grid.render(grid.as_maps(maps[i]), layout)[..., 0])


def test_plot_default_layers_and_all_channels(classic, figures):
    model, images = classic
    fig = actlog.plot_feature_maps(model, images[:1], max_channels=None)
    figures.append(fig)
    assert [ax.get_title().split()[0] for ax in fig.axes] == list(CLASSIC_SHAPES)
    # 64 channels at 8 per row: 8 x 8 tiles of conv_1's 11 x 11 maps, upscaled x5
    assert panel(fig, 2).shape == (8 * 55 + 9, 8 * 55 + 9)  # conv_0, pool_0, conv_1, pool_1


def test_plot_accepts_a_bare_sample(classic, figures):
    model, images = classic
    batched = actlog.plot_feature_maps(model, images[1:2], layers="conv_0")
    bare = actlog.plot_feature_maps(model, images[1], layers="conv_0")
    figures.extend([batched, bare])
    np.testing.assert_array_equal(panel(bare, 0), panel(batched, 0))


def test_plot_colour_map(classic, figures):
    model, images = classic
    fig = actlog.plot_feature_maps(
        model, images[:1], layers="conv_1", cmap="viridis", max_channels=6, layout=actlog.Layout(cols=3)
    )
    figures.append(fig)
    maps = actlog.feature_maps(model, images[:1], layers="conv_1")
    layout = grid.plan_layout((11, 11), range(6), rows=2, cols=3, pad=1)
    expected = grid.render(grid.as_maps(maps["conv_1"][0]), layout, cmap="viridis")
    assert expected.shape[-1] == 3
    np.testing.assert_array_equal(panel(fig, 0), expected)


def test_plot_unknown_cmap(classic):
    model, images = classic
    accepted = re.escape("Unknown cmap 'jet'. Accepted: ['gray', 'viridis', 'diverging']")
    with pytest.raises(ValueError, match=accepted):
        actlog.plot_feature_maps(model, images[:1], layers="conv_0", cmap="jet")


def test_plot_without_matplotlib(classic, monkeypatch):
    model, images = classic
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    hint = re.escape("plot_feature_maps needs matplotlib: pip install 'keras-actlog[plot]'")
    with pytest.raises(ImportError, match=hint):
        actlog.plot_feature_maps(model, images[:1], layers="conv_0")


def test_plot_takes_the_layout_the_logger_takes(classic):
    model, images = classic
    with pytest.raises(TypeError, match=r"^cols= moved: pass layout=actlog\.Layout\(cols=8\)\.$"):
        actlog.plot_feature_maps(model, images[:1], layers="conv_1", cols=3)
    with pytest.raises(TypeError, match=r"layout must be None or actlog\.Layout\(.*\); received 3 \(int\)"):
        actlog.plot_feature_maps(model, images[:1], layers="conv_1", layout=3)
