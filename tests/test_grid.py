"""actlog.grid: exact pixels on tiny hand-made maps; no TensorFlow anywhere."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from actlog import grid
from actlog.grid import (
    COLORMAPS,
    GridLayout,
    as_maps,
    check_cmap,
    check_norm,
    check_selection,
    colorize,
    plan_layout,
    render,
    render_probes,
    select_channels,
    to_image,
)

WHITE = (255, 255, 255)
MAGENTA = (255, 0, 255)


def strip_layout(n: int, *, h: int = 2, w: int = 2, scale: int = 2, pad: int = 1,
                 stride: int = 1) -> GridLayout:
    """n tiles side by side in one row."""
    th, tw = -(-h // stride) * scale, -(-w // stride) * scale
    return GridLayout(channels=tuple(range(n)), rows=1, cols=n, tile_height=th, tile_width=tw,
                      pad=pad, scale=scale, stride=stride)


def tile(image: np.ndarray, layout: GridLayout, index: int) -> np.ndarray:
    y, x = layout.tile_origin(index)
    return image[y:y + layout.tile_height, x:x + layout.tile_width]


def upscale(a: np.ndarray, s: int) -> np.ndarray:
    return np.kron(a, np.ones((s, s), dtype=a.dtype))


# --------------------------------------------------------------------------- checks


def test_checks_accept_known_values():
    for cmap in COLORMAPS:
        assert check_cmap(cmap) == cmap
    assert check_norm("channel") == "channel"
    assert check_norm("layer") == "layer"
    assert check_norm((0, 1)) == (0.0, 1.0)
    assert check_norm([-2.5, 3]) == (-2.5, 3.0)
    assert check_selection("most_active") == "most_active"


def test_checks_reject_with_received_and_accepted():
    with pytest.raises(ValueError, match=r"Unknown cmap 'jet'\. Accepted: \['gray', 'viridis', "
                                         r"'diverging'\]\."):
        check_cmap("jet")
    with pytest.raises(ValueError,
                       match=r"Unknown norm 'global'\. Accepted: \['channel', 'layer'\]"):
        check_norm("global")
    for bad in [(1, 1), (2, 1), (0, float("inf")), (float("nan"), 1), (0, 1, 2), ("a", "b"),
                (False, True), 3, None]:
        with pytest.raises(ValueError, match=r"Invalid norm .*Accepted: \['channel', 'layer'\] or"):
            check_norm(bad)
    with pytest.raises(ValueError, match=r"Unknown channel selection 'random'\. Accepted: "
                                         r"\['first', 'most_active'\]"):
        check_selection("random")


# --------------------------------------------------------------------------- as_maps


def test_as_maps_ranks():
    dense = np.arange(5, dtype=np.float64)
    out = as_maps(dense)
    assert out.shape == (1, 1, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], dense)

    seq = np.arange(12).reshape(4, 3)  # (T, C)
    out = as_maps(seq)
    assert out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[0, :, 1], [1, 4, 7, 10])  # channel 1 over time

    img = np.random.default_rng(0).normal(size=(3, 4, 2))
    np.testing.assert_array_equal(as_maps(img), img.astype(np.float32))

    vol = np.zeros((3, 2, 2, 1))
    vol[0, 0, 0, 0], vol[2, 0, 0, 0], vol[1, 1, 1, 0] = 5, -1, 7
    vol[:, 0, 1, 0] = [-3, -2, -4]
    out = as_maps(vol)
    assert out.shape == (2, 2, 1)
    np.testing.assert_array_equal(out[..., 0], [[5, -2], [0, 7]])  # max over depth


def test_as_maps_channels_first():
    x = np.random.default_rng(1).normal(size=(3, 4, 5))  # (C, H, W)
    np.testing.assert_array_equal(as_maps(x, "channels_first"),
                                  np.moveaxis(x, 0, -1).astype(np.float32))
    seq = np.arange(6).reshape(2, 3)  # (C, T)
    out = as_maps(seq, "channels_first")
    assert out.shape == (1, 3, 2)
    np.testing.assert_array_equal(out[0, :, 1], [3, 4, 5])
    vol = np.random.default_rng(2).normal(size=(2, 3, 4, 5))  # (C, D, H, W)
    np.testing.assert_array_equal(as_maps(vol, "channels_first"),
                                  np.moveaxis(vol, 0, -1).max(axis=0).astype(np.float32))
    np.testing.assert_array_equal(as_maps(np.arange(3), "channels_first"), [[[0, 1, 2]]])


def test_as_maps_errors_and_no_mutation():
    with pytest.raises(ValueError, match=r"shape \(\) \(rank 0\).*Accepted ranks"):
        as_maps(np.float32(1))
    with pytest.raises(ValueError, match=r"rank 5"):
        as_maps(np.zeros((1, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"Unknown data_format 'NHWC'\. Accepted: "
                                         r"\['channels_last', 'channels_first'\]"):
        as_maps(np.zeros((2, 2, 1)), "NHWC")
    x = np.ones((2, 2, 3), dtype=np.float32)
    out = as_maps(x)
    out[...] = 9
    assert (x == 1).all()  # a copy even when no conversion was needed


# --------------------------------------------------------------------------- select_channels


def test_select_first():
    maps = np.zeros((2, 3, 3, 10))
    np.testing.assert_array_equal(select_channels(maps, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(select_channels(maps, 50), np.arange(10))
    np.testing.assert_array_equal(select_channels(maps, None), np.arange(10))
    assert select_channels(maps, 4).dtype == np.int64


def test_select_most_active_stable_and_sorted():
    # mean |x| per channel over probes and positions: [1, 5, 3, 5, 0, 3]
    levels = np.array([1, -5, 3, 5, 0, -3], dtype=np.float64)
    maps = np.broadcast_to(levels, (2, 2, 2, 6)).copy()
    maps[0, 0, 0, 2] = np.nan  # ignored: channel 2 still averages 3
    maps[1, 1, 1, 4] = np.inf  # ignored: channel 4 still averages 0
    np.testing.assert_array_equal(select_channels(maps, 2, "most_active"), [1, 3])
    # 3 -> the two fives, then the lower index of the tied threes
    np.testing.assert_array_equal(select_channels(maps, 3, "most_active"), [1, 2, 3])
    np.testing.assert_array_equal(select_channels(maps, 4, "most_active"), [1, 2, 3, 5])
    # The same input gives the same answer (decided once, must be reproducible).
    np.testing.assert_array_equal(select_channels(maps, 3, "most_active"),
                                  select_channels(maps.copy(), 3, "most_active"))
    np.testing.assert_array_equal(select_channels(maps, None, "most_active"), np.arange(6))


def test_select_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"max_channels must be an int >= 1; received 0"):
        select_channels(np.zeros((1, 2, 2, 3)), 0)
    with pytest.raises(ValueError, match=r"Unknown channel selection 'best'"):
        select_channels(np.zeros((1, 2, 2, 3)), 2, "best")


# --------------------------------------------------------------------------- layout


def test_layout_near_square_examples():
    layout = plan_layout((26, 26), range(32))
    assert (layout.rows, layout.cols) == (4, 8)
    assert layout.scale == 2 and (layout.tile_height, layout.tile_width) == (52, 52)
    assert layout.height == 4 * 52 + 5 and layout.width == 8 * 52 + 9
    layout = plan_layout((24, 24), range(64))
    assert (layout.rows, layout.cols) == (8, 8)
    assert layout.channels == tuple(range(64))
    assert (plan_layout((8, 8), range(16)).rows, plan_layout((8, 8), range(16)).cols) == (4, 4)


def test_layout_strip_tiles_stack_in_one_column():
    layout = plan_layout((1, 50), range(16))
    assert (layout.rows, layout.cols) == (16, 1)
    assert layout.tile_height == layout.scale and layout.tile_width == 50 * layout.scale


def test_layout_scale_reaches_min_tile_within_budget():
    layout = plan_layout((5, 7), range(4), min_tile=48, pad=1)
    assert layout.scale == 10  # smallest factor with 5 * s >= 48
    assert layout.stride == 1
    # The budget lowers the factor to the largest that fits.
    budget = 5_000  # 2 x 2 tiles: (10 s + 3) * (14 s + 3) pixels
    layout = plan_layout((5, 7), range(4), min_tile=48, max_pixels=budget)
    assert (layout.rows, layout.cols, layout.scale) == (2, 2, 5)
    assert layout.height * layout.width <= budget
    bigger = GridLayout(layout.channels, layout.rows, layout.cols, 5 * (layout.scale + 1),
                        7 * (layout.scale + 1), layout.pad, layout.scale + 1, 1)
    assert bigger.height * bigger.width > budget


def test_layout_budget_with_stride():
    budget = 2**19
    layout = plan_layout((112, 112), range(512), max_pixels=budget)
    assert layout.scale == 1 and layout.stride > 1
    assert layout.height * layout.width <= budget
    side = -(-112 // (layout.stride - 1))  # the next smaller stride would not fit
    smaller = GridLayout(layout.channels, layout.rows, layout.cols, side, side, layout.pad, 1, 1)
    assert smaller.height * smaller.width > budget
    assert layout.tile_height == -(-112 // layout.stride)


def test_layout_rows_cols_honoured_and_rejected():
    layout = plan_layout((4, 4), range(10), rows=2)
    assert (layout.rows, layout.cols) == (2, 5)
    layout = plan_layout((4, 4), range(10), cols=3)
    assert (layout.rows, layout.cols) == (4, 3)
    layout = plan_layout((4, 4), range(10), rows=5, cols=5)
    assert (layout.rows, layout.cols) == (5, 5)
    with pytest.raises(ValueError, match=r"rows=3 x cols=3 holds 9 tiles but 10 channels"):
        plan_layout((4, 4), range(10), rows=3, cols=3)
    with pytest.raises(ValueError, match=r"rows must be an int >= 1; received 0"):
        plan_layout((4, 4), range(10), rows=0)
    with pytest.raises(TypeError, match=r"cols must be an int >= 1; received 2\.5 \(float\)"):
        plan_layout((4, 4), range(10), cols=2.5)


def test_layout_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"map_hw must be a pair of positive integers.*"
                                         r"Received: \(0, 4\)"):
        plan_layout((0, 4), range(3))
    with pytest.raises(ValueError, match=r"channels is empty"):
        plan_layout((4, 4), [])
    with pytest.raises(ValueError, match=r"max_pixels must be an int >= 1; received 0"):
        plan_layout((4, 4), range(3), max_pixels=0)
    with pytest.raises(ValueError, match=r"pad must be an int >= 0; received -1"):
        plan_layout((4, 4), range(3), pad=-1)
    with pytest.raises(ValueError, match=r"need \d+ pixels even at one pixel per tile"):
        plan_layout((4, 4), range(100), max_pixels=50)


def test_layout_dict_and_origins():
    layout = GridLayout(channels=(3, 1, 4), rows=2, cols=2, tile_height=6, tile_width=4,
                        pad=2, scale=2, stride=1)
    assert layout.to_dict() == {"rows": 2, "cols": 2, "tile_height": 6, "tile_width": 4,
                                "pad": 2, "scale": 2, "stride": 1}
    assert [layout.tile_origin(i) for i in range(4)] == [(2, 2), (2, 8), (10, 2), (10, 8)]
    assert (layout.height, layout.width) == (2 * 6 + 3 * 2, 2 * 4 + 3 * 2)
    with pytest.raises(IndexError, match=r"Tile index 4 is outside the 2 x 2 grid"):
        layout.tile_origin(4)


# --------------------------------------------------------------------------- render


def test_render_positions_padding_and_upscaling():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 4, size=(2, 3, 5)).astype(np.float32)
    layout = GridLayout(channels=(4, 0, 2), rows=2, cols=2, tile_height=6, tile_width=9,
                        pad=2, scale=3, stride=1)
    image = render(maps, layout, norm=(0, 3), pad_value=17)
    assert image.shape == (layout.height, layout.width, 1) and image.dtype == np.uint8
    covered = np.zeros(image.shape[:2], dtype=bool)
    for index, channel in enumerate(layout.channels):
        expected = np.rint(upscale(maps[..., channel], 3) / 3 * 255).astype(np.uint8)
        np.testing.assert_array_equal(tile(image, layout, index)[..., 0], expected)
        y, x = layout.tile_origin(index)
        covered[y:y + 6, x:x + 9] = True
    # Padding and the empty fourth cell are pad_value, nothing else.
    assert (image[~covered] == 17).all()
    assert covered.sum() == 3 * 6 * 9


def test_render_channel_layer_and_fixed_norms():
    maps = np.zeros((2, 2, 2), dtype=np.float32)
    maps[..., 0] = [[0, 1], [2, 3]]
    maps[..., 1] = [[4, 5], [6, 6]]
    layout = strip_layout(2, scale=1, pad=0)

    per_channel = render(maps, layout, norm="channel")[..., 0]
    np.testing.assert_array_equal(per_channel[:, :2], [[0, 85], [170, 255]])
    np.testing.assert_array_equal(per_channel[:, 2:], [[0, 128], [255, 255]])  # 4..6

    per_layer = render(maps, layout, norm="layer")[..., 0]  # 0..6 over both tiles
    expected = np.rint(np.array([[0, 1, 4, 5], [2, 3, 6, 6]]) / 6 * 255)
    np.testing.assert_array_equal(per_layer, expected)

    fixed = render(maps, layout, norm=(1.0, 5.0))[..., 0]  # clipped to 1..5
    expected = np.rint((np.clip([[0, 1, 4, 5], [2, 3, 6, 6]], 1, 5) - 1) / 4 * 255)
    np.testing.assert_array_equal(fixed, expected)


def test_render_layer_scope_is_the_shown_tiles():
    maps = np.zeros((1, 2, 3), dtype=np.float32)
    maps[..., 0] = [0, 1]
    maps[..., 1] = [0, 100]  # not shown: must not squash the shown tile's range
    maps[..., 2] = [0, 2]
    layout = GridLayout(channels=(0, 2), rows=1, cols=2, tile_height=1, tile_width=2,
                        pad=0, scale=1, stride=1)
    np.testing.assert_array_equal(render(maps, layout, norm="layer")[0, :, 0], [0, 128, 0, 255])


def test_render_constant_and_dead_tiles_are_flat():
    maps = np.zeros((2, 2, 3), dtype=np.float32)
    maps[..., 1] = 5.0  # constant, non-zero
    maps[..., 2] = [[1, 2], [3, 4]]
    layout = strip_layout(3)
    for cmap in COLORMAPS:
        image = render(maps, layout, cmap=cmap)
        for index in (0, 1):
            t = tile(image, layout, index)
            assert (t == t[0, 0]).all(), (cmap, index)
    gray = render(maps, layout)
    assert (tile(gray, layout, 0) == 0).all() and (tile(gray, layout, 1) == 0).all()
    diverging = render(maps, layout, cmap="diverging")
    assert (tile(diverging, layout, 0) == WHITE).all()  # all zero: the centre
    # A whole layer of zeros: no division by zero, no warning, all flat.
    with np.errstate(all="raise"):
        zero = render(np.zeros((2, 2, 3), np.float32), layout, norm="layer", cmap="viridis")
    assert (zero[1:5, 1:5] == colorize(np.zeros(1), "viridis")[0]).all()


def test_render_diverging_zero_is_white_and_signs_are_coloured():
    maps = np.array([[[-2.0], [0.0], [1.0]]], dtype=np.float32)  # (1, 3, 1)
    layout = GridLayout(channels=(0,), rows=1, cols=1, tile_height=1, tile_width=3, pad=0,
                        scale=1, stride=1)
    row = render(maps, layout, cmap="diverging")[0]
    assert tuple(row[1]) == WHITE
    lut = grid._LUTS["diverging"]
    assert tuple(row[0]) == tuple(lut[0])  # -2 = -max|x|: the bluest entry
    assert tuple(row[2]) == tuple(lut[np.rint(0.75 * 255).astype(int)])  # +1 = half of max|x|
    assert row[0, 2] > row[0, 0] and row[2, 0] > row[2, 2]  # blue negative, red positive
    # With a fixed range the scale is symmetric too: 0 stays white.
    row = render(maps, layout, cmap="diverging", norm=(-1.0, 4.0))[0]
    assert tuple(row[1]) == WHITE


def test_render_nan_and_inf_are_marked_and_excluded():
    maps = np.array([[[0.0], [np.nan], [1.0], [np.inf], [2.0], [-np.inf]]], dtype=np.float32)
    layout = GridLayout(channels=(0,), rows=1, cols=1, tile_height=1, tile_width=6, pad=0,
                        scale=1, stride=1)
    with np.errstate(all="raise"):
        gray = render(maps, layout)[0, :, 0]
        colour = render(maps, layout, cmap="viridis")[0]
    np.testing.assert_array_equal(gray, [0, 0, 128, 0, 255, 0])  # range 0..2 from finite values
    for i in (1, 3, 5):
        assert tuple(colour[i]) == MAGENTA
    lut = grid._LUTS["viridis"]
    assert tuple(colour[4]) == tuple(lut[255]) and tuple(colour[0]) == tuple(lut[0])
    all_nan = render(np.full((1, 6, 1), np.nan, np.float32), layout, cmap="diverging")
    assert (all_nan == MAGENTA).all()


def test_render_one_pixel_maps_use_layer_norm():
    maps = as_maps(np.array([0.0, 1.0, 4.0]))  # Dense: (1, 1, 3)
    layout = strip_layout(3, h=1, w=1, scale=1, pad=0)
    np.testing.assert_array_equal(render(maps, layout)[0, :, 0], [0, 64, 255])


def test_render_stride_subsamples():
    maps = np.arange(25, dtype=np.float32).reshape(5, 5, 1)
    layout = plan_layout((5, 5), [0], max_pixels=16, pad=0, min_tile=1)
    assert layout.stride == 2 and (layout.tile_height, layout.tile_width) == (3, 3)
    image = render(maps, layout, norm=(0, 24))[..., 0]
    np.testing.assert_array_equal(image, np.rint(maps[::2, ::2, 0] / 24 * 255))


def test_render_colour_shapes_and_probes():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 6, 5)).astype(np.float32)
    layout = plan_layout((4, 6), range(5))
    for cmap, depth in (("gray", 1), ("viridis", 3), ("diverging", 3)):
        image = render(maps, layout, cmap=cmap)
        assert image.shape == (layout.height, layout.width, depth)
        assert image.dtype == np.uint8
    stack = render_probes(np.stack([maps, -maps]), layout, cmap="viridis")
    assert stack.shape == (2, layout.height, layout.width, 3)
    np.testing.assert_array_equal(stack[1], render(-maps, layout, cmap="viridis"))


def test_render_does_not_mutate_inputs():
    rng = np.random.default_rng(4)
    maps = rng.normal(size=(3, 3, 4)).astype(np.float32)
    maps[0, 0, 1] = np.nan
    maps[1, 1, 2] = np.inf
    before = maps.copy()
    layout = plan_layout((3, 3), [0, 1, 2, 3])
    for cmap in COLORMAPS:
        for norm in ("channel", "layer", (-1.0, 1.0)):
            render(maps, layout, norm=norm, cmap=cmap)
    np.testing.assert_array_equal(maps, before)  # NaN compare equal position-wise
    x = rng.normal(size=(3, 3)).astype(np.float32)
    x_before = x.copy()
    colorize(x, "viridis")
    to_image(x)
    np.testing.assert_array_equal(x, x_before)


def test_render_rejects_mismatched_maps():
    layout = plan_layout((4, 4), range(3))
    with pytest.raises(ValueError, match=r"do not match the layout's tiles"):
        render(np.zeros((5, 4, 3)), layout)
    with pytest.raises(ValueError, match=r"shows channel 2 but maps have 2 channels"):
        render(np.zeros((4, 4, 2)), layout)
    with pytest.raises(ValueError, match=r"expects \(H, W, C\) maps"):
        render(np.zeros((4, 4)), layout)
    with pytest.raises(ValueError, match=r"pad_value must be an integer in \[0, 255\]"):
        render(np.zeros((4, 4, 3)), layout, pad_value=256)
    with pytest.raises(ValueError, match=r"Unknown cmap 'hot'"):
        render(np.zeros((4, 4, 3)), layout, cmap="hot")


# --------------------------------------------------------------------------- colours


def test_colorize_luts():
    x = np.arange(256) / 255
    np.testing.assert_array_equal(colorize(x, "gray")[:, 0], np.arange(256))
    viridis = colorize(x, "viridis")
    assert viridis.shape == (256, 3)
    assert tuple(viridis[0]) == (68, 1, 84) and tuple(viridis[-1]) == (253, 231, 37)
    assert tuple(colorize(np.array([0.5]), "viridis")[0]) == (33, 144, 140)  # #21908C
    luminance = viridis.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert (np.diff(luminance) > -1).all()  # perceptually ordered, up to rounding
    assert luminance[-1] - luminance[0] > 150
    diverging = colorize(np.array([0.0, 0.5, 1.0]), "diverging")
    assert tuple(diverging[1]) == WHITE
    assert diverging[0, 2] > diverging[0, 0] and diverging[2, 0] > diverging[2, 2]
    # Out-of-range values clip; non-finite ones get the marker.
    np.testing.assert_array_equal(colorize(np.array([-1.0, 2.0, np.nan]), "gray")[:, 0],
                                  [0, 255, 0])
    assert colorize(np.zeros((2, 3)), "viridis").shape == (2, 3, 3)


def test_to_image():
    x = np.array([[0.0, 0.5], [1.0, 2.0]])
    img = to_image(x)
    assert img.shape == (2, 2, 1) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], [[0, 64], [128, 255]])
    rgb = to_image(np.stack([x, x, -x], axis=-1))
    assert rgb.shape == (2, 2, 3) and rgb.min() == 0 and rgb.max() == 255
    assert to_image(np.zeros((2, 2, 4))).shape == (2, 2, 4)
    u8 = np.array([[[3], [200]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_image(u8), u8)
    np.testing.assert_array_equal(to_image(np.full((2, 2), 7.0)), np.zeros((2, 2, 1)))
    np.testing.assert_array_equal(to_image(np.array([[np.nan, 1.0], [2.0, 3.0]]))[..., 0],
                                  [[0, 0], [128, 255]])
    assert to_image(np.zeros(10)) is None  # a feature vector
    assert to_image(np.zeros((4, 4, 2))) is None
    assert to_image(np.zeros((2, 4, 4, 3))) is None


# --------------------------------------------------------------------------- isolation


def test_numpy_modules_import_no_tensorflow():
    code = (
        "import actlog.grid, actlog.stats, actlog.atlas, sys; "
        "assert not any(m.split('.')[0] in ('tensorflow','keras','tensorboard') "
        "for m in sys.modules), sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow','keras','tensorboard'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
