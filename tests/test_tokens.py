"""Vision transformers (issue 25): token layers drawn over their patch grid, attention per head.

Planted models (weights set by hand, trained with a learning rate of 0 so they stay
planted) are logged through ``ActivationLogger`` and read back with ``actlog.read``:
a patch-brightness channel must light its tile at the planted patch, with and
without a class token; a head planted to attend to one patch must light that patch.
keras-hub's ``ViTBackbone`` (built from a small config, no weights) trains a step
with ``layers=None``; a text model's sequences stay strips. A browser test opens the
ViT example's log in a real TensorBoard (the README's pictures).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_dashboard_browser import (  # noqa: F401 (driver, screenshot_dir: fixtures)
    CHROMEDRIVER,
    CHROMIUM,
    ROOT,
    driver,
    open_dashboard,
    open_layer,
    running_tensorboard,
    screen_pixels,
    screenshot,
    screenshot_dir,
    serves_steps,
)

import actlog
from actlog import grid, metadata
from actlog.arrays import NUMPY
from actlog.tokens import TokenGrid, Tokens

L = keras.layers
PATCH = 8  # pixels per patch side
SIDE = 8  # patches per image side: 64 x 64 images, 64 tokens
PLANTED = (2, 5)


# --------------------------------------------------------------------------- numpy


def test_token_grid_folds_patches_and_keeps_extras_beside():
    geometry = TokenGrid(2, 3, extra=3)
    acts = np.arange(2 * 9 * 1, dtype=np.float32).reshape(2, 9, 1)
    maps = geometry.arrange(NUMPY, acts)
    assert maps.shape == (2, 2, 3 + 1 + 2, 1)
    # patches row-major after the 3 extras; a gap column; extras top down in 2 columns
    # (the unused cell repeats the last patch token of its row)
    assert maps[0, :, :, 0].tolist() == [[3, 4, 5, 5, 0, 2], [6, 7, 8, 8, 1, 8]]
    assert geometry.blank().tolist() == [[False] * 3 + [True, False, False],
                                          [False] * 3 + [True, False, True]]
    assert [geometry.token_at(0, x) for x in range(6)] == [3, 4, 5, None, 0, 2]
    assert TokenGrid(2, 2).map_hw == (2, 2) and TokenGrid(2, 2).extra_cols == 0


def test_layout_records_the_token_grid_and_paints_blank_cells():
    geometry = TokenGrid(2, 2, extra=1)
    layout = grid.plan_layout(geometry.map_hw, range(2), min_tile=4, tokens=geometry)
    restored = grid.GridLayout.from_dict(json.loads(json.dumps(layout.to_dict())), layout.channels)
    assert restored == layout and layout.to_dict()["tokens"] == {"h": 2, "w": 2, "extra": 1}
    levels = np.full((2, 4, 2), 200, np.uint8)
    image = grid.render_levels(levels, layout, pad_value=7)
    y, x, _, _ = layout.tile_box(0)
    tile = image[y:y + layout.tile_height, x:x + layout.tile_width, 0]
    s = layout.scale
    assert (tile[:, : 2 * s] == 200).all() and (tile[:, 2 * s: 3 * s] == 7).all()
    assert (tile[:s, 3 * s:] == 200).all() and (tile[s:, 3 * s:] == 7).all()
    assert layout.token_at(0, 3 * s) == 0 and layout.token_at(s, 3 * s) is None


def test_tokens_request_is_checked():
    with pytest.raises(ValueError, match=r"grid must be None or \(h, w\) positive integers. Received: \(0,"):
        Tokens("x", grid=(0, 8))
    with pytest.raises(ValueError, match="extra must be None or an integer >= 0. Received: -1"):
        Tokens("x", extra=-1)
    with pytest.raises(ValueError, match=r"has 65 tokens, but 8 x 7 patches leave 9 for extra tokens"):
        Tokens("x", grid=(8, 7), extra=1).fit(65, "x")
    with pytest.raises(ValueError, match=r"has 65 tokens, but 4 x 4 patches leave 49"):
        Tokens("x", grid=(4, 4)).fit(65, "x")
    assert Tokens("x", grid=(4, 4), extra=49).fit(65, "x") == TokenGrid(4, 4, 49)
    assert Tokens("x", grid=(8, 8)).fit(65, "x") == TokenGrid(8, 8, 1)


# --------------------------------------------------------------------------- models


class ClassToken(L.Layer):
    """Prepends one learned token (a ViT's class token), initialised to ``value``."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = list(value)

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), name="token",
                                     initializer=keras.initializers.Constant(np.array(self.value)))

    def call(self, x):
        batch = keras.ops.shape(x)[0]
        return keras.ops.concatenate([keras.ops.tile(self.token, (batch, 1, 1)), x], axis=1)


def patch_model(class_token: bool):
    """64 x 64 images -> 8 x 8 patch tokens whose channel 0 is the patch's mean brightness."""
    images = keras.Input((SIDE * PATCH, SIDE * PATCH, 1))
    conv = L.Conv2D(4, PATCH, strides=PATCH, name="patch")
    x = L.Reshape((SIDE * SIDE, 4), name="tokens")(conv(images))
    if class_token:
        x = ClassToken([1.0, 0.0, 0.0, 0.0], name="cls")(x)
    x = L.LayerNormalization(center=False, scale=False, name="norm")(x)
    x = L.Dense(4, name="mix")(x)
    out = L.Dense(2)(L.GlobalAveragePooling1D()(x))
    model = keras.Model(images, out)
    kernel = np.zeros((PATCH, PATCH, 1, 4), np.float32)
    kernel[..., 0, 0] = 1.0 / PATCH**2
    conv.set_weights([kernel, np.zeros(4, np.float32)])
    model.get_layer("mix").set_weights([np.eye(4, dtype=np.float32), np.zeros(4, np.float32)])
    return model


def planted_images(n: int = 2, patch: tuple[int, int] = PLANTED, side: int = SIDE,
                   size: int = PATCH) -> np.ndarray:
    """Black images with one white patch (``size`` pixels) at ``patch`` of ``side x side``."""
    images = np.zeros((n, side * size, side * size, 1), np.float32)
    y, x = patch
    images[:, y * size:(y + 1) * size, x * size:(x + 1) * size] = 1.0
    return images


def fit(model, probes, log_dir, **kwargs):
    """One step at learning rate 0 (the planted weights stay), with the logger."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    logger = actlog.ActivationLogger(str(log_dir), probes, **kwargs)
    y = np.zeros((len(probes), *model.output.shape[1:]), np.float32)
    model.fit(probes, y, epochs=1, batch_size=len(probes), verbose=0, callbacks=[logger])
    assert logger.misses == {}
    return actlog.read(str(log_dir)).run(metadata.EPOCH_RUN)


def cells(run, layer: str, channel: int, step: int = 1) -> np.ndarray:
    """One channel's tile at one level per token cell: ``(h, map width)``."""
    layout = run.layout(layer)
    tile = run.tile(layer, 0, channel, step)[:, :, 0]
    return tile[:: layout.scale, :: layout.scale]


@pytest.mark.backend
@pytest.mark.parametrize("class_token", [False, True], ids=["no_class_token", "class_token"])
def test_planted_patch_lights_its_tile_at_the_patch(tmp_path, class_token):
    run = fit(patch_model(class_token), planted_images(), tmp_path,
              layers={"tokens": "tokens", "mixed": Tokens("mix", grid=(SIDE, SIDE))}, max_channels=2)
    extra = 1 if class_token else 0
    assert run.layer_info("mixed")["grid"]["tokens"] == {"h": SIDE, "w": SIDE, "extra": extra}
    assert run.layer_info("tokens")["grid"]["tokens"] == {"h": SIDE, "w": SIDE, "extra": 0}
    expected = np.zeros((SIDE, SIDE), np.uint8)
    expected[PLANTED] = 255
    assert (cells(run, "tokens", 0) == expected).all()
    mixed = cells(run, "mixed", 0)
    assert mixed.shape == (SIDE, SIDE + 2 * extra)
    assert (mixed[:, :SIDE] == expected).all()
    if class_token:
        # the class token (the lit patch's values) stands beside the map, after a
        # blank column; the rest of its column is blank (padding)
        assert mixed[:, SIDE].tolist() == [0] * SIDE
        assert mixed[:, SIDE + 1].tolist() == [255] + [0] * (SIDE - 1)


def attention_model(class_token: bool):
    """16 x 16 images -> 4 x 4 tokens; head 0 attends to the brightest patch, head 1 everywhere."""
    images = keras.Input((4 * PATCH // 2, 4 * PATCH // 2, 1))
    conv = L.Conv2D(2, PATCH // 2, strides=PATCH // 2, name="patch")
    x = L.Reshape((16, 2), name="tokens")(conv(images))
    if class_token:
        x = ClassToken([0.0, 1.0], name="cls")(x)
    mha = L.MultiHeadAttention(num_heads=2, key_dim=1, name="mha")
    x = mha(x, x)
    model = keras.Model(images, L.Dense(1)(L.GlobalAveragePooling1D()(x)))
    kernel = np.zeros((PATCH // 2, PATCH // 2, 1, 2), np.float32)
    kernel[..., 0, 0] = 1.0  # feature 0: the patch's brightness (16 for a lit patch)
    conv.set_weights([kernel, np.array([0.0, 1.0], np.float32)])  # feature 1: constant 1
    query = np.zeros((2, 2, 1), np.float32)
    query[1, :, 0] = 1.0  # every head's query: the constant feature
    key = np.zeros((2, 2, 1), np.float32)
    key[0, 0, 0] = 10.0  # head 0's key: brightness; head 1's: nothing (uniform attention)
    zeros = [np.zeros(w.shape, np.float32) for w in mha.weights]
    mha.set_weights([query, zeros[1], key, *zeros[3:]])
    return model


@pytest.mark.backend
@pytest.mark.parametrize("class_token", [False, True], ids=["mean_query", "class_token"])
def test_attention_of_a_planted_head_lights_its_patch(tmp_path, class_token):
    probes = planted_images(patch=(1, 2), side=4, size=PATCH // 2)
    run = fit(attention_model(class_token), probes, tmp_path, layers=["mha"])
    info = run.layer_info("mha")
    assert info["view"] == "attention"
    assert info["output_shape"] == [16 + class_token, 2]
    assert info["grid"]["tokens"] == {"h": 4, "w": 4, "extra": int(class_token)}
    expected = np.zeros((4, 4), np.uint8)
    expected[1, 2] = 255
    head0, head1 = cells(run, "mha", 0), cells(run, "mha", 1)
    assert (head0[:, :4] == expected).all()
    assert (head1[:, :4] == head1[0, 0]).all()  # uniform: one flat level


def tiny_vit(depth: int, class_token: bool = True):
    images = keras.Input((32, 32, 3))
    x = L.Reshape((16, 8), name="tokens")(L.Conv2D(8, 8, strides=8, name="patch")(images))
    if class_token:
        x = ClassToken([0.0] * 8, name="cls")(x)
    x = L.Add(name="positions")([x, L.Dense(8, name="position_embedding")(x)])  # not a block
    for i in range(depth):
        y = L.LayerNormalization(name=f"b{i}_ln1")(x)
        x = L.Add(name=f"b{i}_add")([x, L.MultiHeadAttention(2, 4, name=f"b{i}_mha")(y, y)])
        y = L.LayerNormalization(name=f"b{i}_ln2")(x)
        y = L.Dense(8, name=f"b{i}_fc2")(L.Dense(16, name=f"b{i}_fc1")(y))
        x = L.Add(name=f"b{i}_out")([x, y])
    return keras.Model(images, L.Dense(2)(L.GlobalAveragePooling1D()(x)))


@pytest.mark.backend
def test_layers_none_on_a_vit_watches_patch_embedding_blocks_and_attention(tmp_path):
    probes = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    run = fit(tiny_vit(2), probes, tmp_path, max_channels=4)
    assert run.layers == ["patch", "b0_mha", "b0_out", "b1_mha", "b1_out"]
    assert run.layer_info("b1_out")["grid"]["tokens"] == {"h": 4, "w": 4, "extra": 1}
    assert run.layer_info("b0_mha")["view"] == "attention"


def test_layers_none_spreads_at_most_twelve_over_a_deep_vit():
    from actlog.layers import resolve

    chosen = [w.path for w in resolve(tiny_vit(14), None)]
    blocks = [p for p in chosen if p.endswith("_out")]
    assert chosen[0] == "patch" and len(chosen) == 12
    assert blocks[0] == "b0_out" and blocks[-1] == "b13_out" and len(blocks) == 9
    assert [p for p in chosen if p.endswith("_mha")] == ["b0_mha", "b13_mha"]


@pytest.mark.backend
def test_keras_hub_vit_backbone_trains_a_step_with_the_logger(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
    )
    images = keras.Input((32, 32, 3))
    model = keras.Model(images, L.Dense(2)(L.GlobalAveragePooling1D()(backbone(images))))
    probes = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    run = fit(model, probes, tmp_path, max_channels=4)
    encoder = f"{backbone.name}/vit_encoder"
    assert run.layers == [
        f"{backbone.name}/vit_patching_and_embedding",
        f"{encoder}/transformer_block_1", f"{encoder}/transformer_block_1/mha",
        f"{encoder}/transformer_block_2", f"{encoder}/transformer_block_2/mha",
    ]
    for layer in run.layers:
        assert run.layer_info(layer)["grid"]["tokens"] == {"h": 4, "w": 4, "extra": 1}
        assert run.grid(layer, 0).shape == (run.layout(layer).height, run.layout(layer).width, 1)
    assert run.layer_info(f"{encoder}/transformer_block_2/mha")["output_shape"] == [17, 2]


@pytest.mark.backend
def test_text_sequences_stay_strips(tmp_path):
    tokens = keras.Input((12,), dtype="int32")
    x = L.Embedding(50, 8, name="embed")(tokens)
    x = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = L.Conv1D(4, 3, name="conv")(x)
    model = keras.Model(tokens, L.Dense(1)(L.GlobalMaxPooling1D()(x)))
    probes = np.random.default_rng(0).integers(0, 50, (2, 12)).astype(np.int32)
    run = fit(model, probes, tmp_path, layers=["embed", "conv", "mha"])
    for layer in ("embed", "conv"):
        info = run.layer_info(layer)
        assert "tokens" not in info["grid"] and "view" not in info
        assert (info["grid"]["rows"], info["grid"]["cols"]) == ({"embed": 8, "conv": 4}[layer], 1)
    # attention without a patch grid: where the mean query attends, one strip per head
    info = run.layer_info("mha")
    assert info["view"] == "attention" and info["output_shape"] == [12, 2] and "tokens" not in info["grid"]


@pytest.mark.backend
def test_tokens_request_that_does_not_fit_fails_before_training(tmp_path):
    model = patch_model(False)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"layer 'tokens' has 64 tokens, but 5 x 5 patches leave 39"):
        model.fit(planted_images(), np.zeros((2, 2)), epochs=1, verbose=0, callbacks=[
            actlog.ActivationLogger(str(tmp_path), planted_images(), layers=[Tokens("tokens", grid=(5, 5))])])
    with pytest.raises(ValueError, match=r"layer 'patch', whose output \(None, 8, 8, 4\) is not a token"):
        model.fit(planted_images(), np.zeros((2, 2)), epochs=1, verbose=0, callbacks=[
            actlog.ActivationLogger(str(tmp_path), planted_images(), layers={"p": Tokens("patch")})])


@pytest.mark.backend
def test_atlas_crops_a_token_layer_to_its_best_patch(tmp_path):
    rng = np.random.default_rng(0)
    where = [tuple(int(v) for v in rng.integers(0, SIDE, 2)) for _ in range(6)]
    pool = np.concatenate([planted_images(1, patch) * (i + 1) / 6 for i, patch in enumerate(where)])
    run = fit(patch_model(True), pool[:2], tmp_path, layers=["mix"], max_channels=1,
              atlas=actlog.Atlas(pool, k=2))
    atlas = run.atlas("mix")
    # the brightest patches rank first: the last two pool images, at their planted patches
    assert atlas.index[0].tolist() == [5, 4]
    assert atlas.position[0].tolist() == [list(where[5]), list(where[4])]
    y, x = where[5]
    assert atlas.box[0, 0].tolist() == [y * PATCH, x * PATCH, PATCH, PATCH]
    crop = atlas.crops(0)[0]
    # unfaded (the token sees the whole image), the patch outlined
    from actlog.tokens import OUTLINE

    assert (crop == np.asarray(OUTLINE, np.uint8)).all(axis=-1).any()
    assert set(np.unique(crop[~(crop == np.asarray(OUTLINE, np.uint8)).all(axis=-1)])) <= {0, 255} | set(
        atlas_outside_levels())


def atlas_outside_levels():
    from actlog.atlas import OUTSIDE

    return {int(v) for colour in np.asarray(OUTSIDE).reshape(-1, 3) for v in colour}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason=f"needs Debian's chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER}")
def test_dashboard_of_the_vit_example(driver, screenshot_dir, tmp_path_factory):  # noqa: F811
    """The README's pictures of a ViT in the Activations tab: the overview, a block's token
    maps and the last block's attention, each at the first and the last epoch."""
    import sys

    from selenium.webdriver.common.by import By

    log_dir = tmp_path_factory.mktemp("vit_example")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import vit_patches

        assert vit_patches.main(["--logdir", str(log_dir)]) == 0
    finally:
        sys.path.remove(str(ROOT / "examples"))
    run = actlog.read(log_dir).run(metadata.EPOCH_RUN)
    last = run.steps[-1]
    assert run.layers == ["patch_embed", "block_0_attention", "block_0_out", "block_1_out",
                          "block_2_attention", "block_2_out"]
    workdir = tmp_path_factory.mktemp("tensorboard_vit")
    with running_tensorboard(log_dir, workdir, serves_steps(run.steps, "block_2_out")) as url:
        page = open_dashboard(driver, url, len(run.layers))
        screenshot(page, screenshot_dir, "dashboard_vit.png")
        for layer, name in (("block_2_out", "dashboard_vit_tokens.png"),
                            ("block_2_attention", "dashboard_vit_attention.png")):
            page = open_dashboard(driver, url, len(run.layers))
            open_layer(page, layer, last, 0)
            for image_id, step in (("actlog-grid-a", 0), ("actlog-grid-b", last)):
                shown = screen_pixels(page, page.find_element(By.ID, image_id))
                np.testing.assert_array_equal(shown, run.grid(layer, 0, step).repeat(3, axis=-1))
            unit = "4 of 4 heads" if layer.endswith("attention") else "16 of 32 channels"
            assert unit in page.execute_script("return document.body.innerText")
            screenshot(page, screenshot_dir, name)
