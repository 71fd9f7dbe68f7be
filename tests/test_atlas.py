"""actlog.atlas: streaming top-k, receptive-field arithmetic, crops, the picture; numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from actlog import atlas, metadata
from actlog.arrays import NUMPY
from actlog.atlas import OUTSIDE, AtlasLayout, Field, TopK, crop, plan_atlas, render_atlas

rng = np.random.default_rng(0)


def full_sort_topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every image at once, best first, ties to the lower index."""
    order = np.lexsort((np.broadcast_to(np.arange(len(values))[:, None], values.shape).T, -values.T))
    return order[:, :k], np.take_along_axis(values.T, order[:, :k], axis=1)


# --------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("batch", [1, 3, 7, 50])
def test_streaming_topk_equals_a_full_sort_whatever_the_batch(batch):
    values = rng.normal(size=(50, 6)).astype(np.float32)
    values[10, 2] = values[30, 2] = values[5, 2] = 9.0  # a three-way tie: lower index first
    where = rng.integers(0, 100, size=values.shape)
    top = TopK(channels=6, k=4)
    for start in range(0, 50, batch):
        top.add(values[start : start + batch], where[start : start + batch], start)
    index, flat, value = top.result()
    expected_index, expected_value = full_sort_topk(values, 4)
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_array_equal(value, expected_value)
    np.testing.assert_array_equal(flat, np.take_along_axis(where.T, expected_index, axis=1))
    assert index[2, :3].tolist() == [5, 10, 30]


def test_topk_keeps_empty_slots_and_ranks_nan_last():
    top = TopK(channels=2, k=3)
    top.add(np.array([[np.nan, 1.0], [2.0, -np.inf]], np.float32), np.array([[4, 5], [6, 7]]), 0)
    index, flat, value = top.result()
    assert index.tolist() == [[1, 0, -1], [0, 1, -1]]
    assert value[0, 0] == 2.0 and np.isneginf(value[0, 1]) and np.isneginf(value[0, 2])
    assert flat[0, 0] == 6 and flat[1, 0] == 5


def test_peaks_are_the_largest_value_and_its_first_flat_position():
    maps = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    maps[1, 2, 3, 4] = 50.0
    maps[0, :, :, 1] = 2.0  # a tie everywhere: the first position
    maps[2, 1, 1, 1] = np.nan
    value, where = atlas.peaks(NUMPY, maps, np.array([4, 1]))
    assert value.shape == where.shape == (3, 2) and where.dtype == np.int32
    assert value[1, 0] == 50.0 and where[1, 0] == 2 * 5 + 3
    assert value[0, 1] == 2.0 and where[0, 1] == 0
    assert np.isnan(value[2, 1]) and where[2, 1] == 4 * 5  # none: ranks last in TopK
    np.testing.assert_array_equal(value[:, 0], maps.reshape(3, -1, 6).max(axis=1)[:, 4])
    np.testing.assert_array_equal(where[:, 0], maps.reshape(3, -1, 6).argmax(axis=1)[:, 4])


def test_jaccard_distance_of_image_sets():
    now = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6], [-1, -1, -1]])
    before = np.array([[3, 2, 1], [1, 2, 9], [7, 8, 9], [-1, -1, -1]])
    np.testing.assert_allclose(atlas.jaccard_distance(now, before), [0.0, 0.5, 1.0, 0.0])


# --------------------------------------------------------------------------- receptive fields


def test_same_padding_is_keras_rule():
    assert atlas.same_padding(10, 3, 1) == 1
    assert atlas.same_padding(10, 4, 1) == 1  # total 3: one before, two after
    assert atlas.same_padding(10, 3, 2) == 0  # total 1: it goes after
    assert atlas.same_padding(9, 3, 2) == 1
    assert atlas.same_padding(7, 1, 1) == 0


def affine(field: Field) -> tuple:
    return field.jump, field.start, field.size


def chain(steps, size=28) -> Field:
    """The field after ``(kernel, stride, dilation, padding)`` windows on a ``size`` square image."""
    field = Field.identity(size, size)
    for kernel, stride, dilation, padding in steps:
        field = field.window(kernel, stride, dilation, padding)
    return field


@pytest.mark.parametrize(
    "steps, expected",
    [
        ([((3, 3), (1, 1), (1, 1), "valid")], ((1, 1), (0, 0), (3, 3))),
        ([((3, 3), (1, 1), (1, 1), "same")], ((1, 1), (-1, -1), (3, 3))),
        ([((3, 3), (2, 2), (1, 1), "valid"), ((3, 3), (1, 1), (1, 1), "valid")], ((2, 2), (0, 0), (7, 7))),
        ([((3, 3), (1, 1), (2, 2), "valid")], ((1, 1), (0, 0), (5, 5))),
        ([((3, 3), (1, 1), (1, 1), "valid"), ((2, 2), (2, 2), (1, 1), "valid"),
          ((3, 3), (1, 1), (1, 1), "valid")], ((2, 2), (0, 0), (8, 8))),
        ([((1, 1), (1, 1), (1, 1), ((2, 0), (2, 1))), ((3, 3), (1, 1), (1, 1), "valid")],
         ((1, 1), (-2, -2), (3, 3))),
    ],
    ids=["conv3", "conv3_same", "strided_then_conv", "dilated", "classic_mnist_conv_1", "padding"],
)
def test_window_arithmetic(steps, expected):
    assert affine(chain(steps)) == expected


def test_what_units_see_stops_at_the_image_and_at_padding():
    field = chain([((3, 3), (1, 1), (1, 1), "same")], size=5)
    assert field.rows == ((0, 1), (0, 2), (1, 3), (2, 4), (3, 4))  # the box is 3 rows everywhere
    assert field.box(0, 4) == (-1, 3, 3, 3) and field.seen(0, 4) == (0, 3, 1, 4)
    padded = chain([((1, 1), (1, 1), (1, 1), ((2, 0), (2, 0)))], size=3)  # two rows of zeros before
    assert padded.rows == (atlas.EMPTY, atlas.EMPTY, (0, 0), (1, 1), (2, 2))
    # a 2 x 2 pooling of 5 rows drops the last: what follows never sees row 4
    pooled = chain([((2, 2), (2, 2), (1, 1), "valid"), ((3, 3), (1, 1), (1, 1), "same")], size=5)
    assert pooled.rows == ((0, 3), (0, 3)) and pooled.box(1, 1)[2] == 6


def test_merges_hold_both_branches():
    a = chain([((3, 3), (1, 1), (1, 1), "same")], size=6)
    b = chain([((5, 5), (1, 1), (1, 1), "same")], size=6)
    merged = atlas.union([a, b])
    assert affine(merged) == affine(b) and merged.rows == b.rows
    assert atlas.union([a, chain([((2, 2), (2, 2), (1, 1), "valid")], size=6)]) is None
    assert Field.from_dict(merged.to_dict()) == merged


def test_fit_measured_recovers_a_field_from_clipped_intervals():
    true = chain([((3, 3), (1, 1), (1, 1), "same"), ((3, 3), (2, 2), (1, 1), "same"),
                  ((3, 3), (1, 1), (1, 1), "same")], size=20)
    assert affine(true) == ((2, 2), (-3, -3), (9, 9))
    fitted = atlas.fit_measured(np.asarray(true.rows), np.asarray(true.cols), (20, 20))
    assert affine(fitted) == affine(true) and fitted.rows == true.rows and fitted.measured


def test_fit_measured_when_every_unit_sees_the_whole_image():
    rows = np.array([[0, 7]] * 2)
    fitted = atlas.fit_measured(rows, rows, (8, 8))
    assert fitted.size == (8, 8) and fitted.jump == (4, 4) and fitted.measured
    assert fitted.start == (-2, -2)  # centred: units at 1.5 and 5.5, boxes 8 wide


# --------------------------------------------------------------------------- crops and pictures


def test_crop_inside_the_image_is_the_pixels_upscaled():
    image = rng.integers(0, 255, size=(10, 12, 1), dtype=np.uint8)
    before = image.copy()
    out = crop(image, (2, 3, 3, 4), scale=5)
    assert out.shape == (15, 20, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[::5, ::5], np.repeat(image[2:5, 3:7], 3, axis=2))
    np.testing.assert_array_equal(image, before)


def test_crop_fades_the_context_and_checks_what_lies_outside_the_image():
    image = np.full((6, 6, 1), 100, np.uint8)
    out = crop(image, (-2, 2, 6, 6), seen=(1, 3, 2, 4), scale=4)  # rows -2..3, cols 2..7
    pixels = out[::4, ::4]
    checker = {tuple(OUTSIDE[0]), tuple(OUTSIDE[1])}
    faded = round(100 + 28 * atlas.FADE)
    assert {tuple(p) for p in pixels[:2].reshape(-1, 3)} <= checker  # rows -2, -1
    assert {tuple(p) for p in pixels[:, 4:].reshape(-1, 3)} <= checker  # cols 6, 7
    assert (pixels[3:5, 1:3] == 100).all()  # rows 1..2, cols 3..4: what the unit sees
    assert (pixels[2, :4] == faded).all() and (pixels[5, :4] == faded).all()  # context rows 0 and 3
    assert tuple(out[0, 0]) != tuple(out[0, atlas.CHECK])  # the checks alternate


def test_crop_subsamples_a_large_box():
    image = np.arange(100 * 100, dtype=np.uint8).reshape(100, 100, 1)
    out = crop(image, (0, 0, 100, 100), stride=2)
    assert out.shape == (50, 50, 3)
    np.testing.assert_array_equal(out[:, :, 0], image[::2, ::2, 0])


def test_shown_box_adds_context_and_never_exceeds_the_image():
    assert atlas.shown_box((3, 4, 3, 5), (20, 20)) == (0, -1, 9, 15)  # one box width each side
    assert atlas.shown_box((3, 4, 8, 5), (20, 20)) == (-3, -1, 20, 15)  # 24 rows capped at 20
    assert atlas.shown_box((-10, 2, 40, 5), (20, 20)) == (0, -3, 20, 15)  # larger than the image
    assert atlas.shown_box((3, 4, 5, 6), (20, 20), context=0) == (3, 4, 5, 6)


@pytest.mark.parametrize("k, shape", [(1, (1, 1)), (4, (1, 4)), (8, (2, 4)), (9, (3, 3)), (12, (2, 6)),
                                      (16, (2, 8)), (7, (1, 7))])
def test_cells_fold_k_crops_about_twice_as_wide_as_tall(k, shape):
    assert atlas.cell_shape(k) == shape


def test_layout_places_cells_like_the_grid_tiles_and_crops_in_rank_order():
    layout = plan_atlas(channels=[5, 2, 7], rows=2, cols=2, k=4, crop_hw=(3, 3))
    assert (layout.cell_rows, layout.cell_cols) == (1, 4)
    assert layout.scale == 11 and layout.crop_height == 33
    boxes = [layout.crop_box(t, r) for t in range(3) for r in range(4)]
    taken = np.zeros((layout.height, layout.width), int)
    for y, x, h, w in boxes:
        taken[y : y + h, x : x + w] += 1
    assert taken.max() == 1  # no overlap, all inside
    assert layout.cell_box(2)[:2] == (layout.pad * 2 + layout.cell_height, layout.pad)  # row 1, col 0
    assert layout.crop_box(0, 1)[1] == layout.crop_box(0, 0)[1] + 33 + layout.gap
    assert AtlasLayout.from_dict(layout.to_dict(), [5, 2, 7]) == layout
    assert layout.boxes()[2][3] == list(layout.crop_box(2, 3)) and len(layout.boxes()) == 3
    with pytest.raises(IndexError):
        layout.cell_box(3)


def test_layout_fits_the_pixel_budget():
    layout = plan_atlas(channels=range(64), rows=8, cols=8, k=8, crop_hw=(96, 96), max_pixels=2**20)
    assert layout.height * layout.width <= 2**20
    assert layout.stride >= 2


def test_render_puts_each_crop_at_its_box():
    layout = plan_atlas(channels=[0, 1], rows=1, cols=2, k=2, crop_hw=(2, 2))
    crops = [[np.full((32, 32, 3), 10, np.uint8), None], [np.full((32, 32, 3), 20, np.uint8)] * 2]
    image = render_atlas(layout, crops)
    assert image.shape == (layout.height, layout.width, 3)
    y, x, h, w = layout.crop_box(0, 0)
    assert (image[y : y + h, x : x + w] == 10).all()
    y, x, h, w = layout.crop_box(0, 1)
    assert (image[y : y + h, x : x + w] == atlas.BACKGROUND).all()  # an empty slot
    y, x, h, w = layout.crop_box(1, 1)
    assert (image[y : y + h, x : x + w] == 20).all()


def test_atlas_tags():
    assert metadata.atlas_tag("conv_0") == "conv_0/atlas"
    assert metadata.atlas_tag("conv_0", "change") == "conv_0/atlas_change"
    assert metadata.atlas_tag("a/b", "channel_change") == "a/b/atlas_channel_change"
    with pytest.raises(ValueError, match=r"Unknown atlas field 'indices'\. Accepted: \['index'"):
        metadata.atlas_tag("conv_0", "indices")


# --------------------------------------------------------------------------- options


def test_options_copy_the_pool_once_and_read_only():
    pool = rng.random((10, 4, 4, 1)).astype(np.float32)
    options = atlas.check_options(pool, k=3, freq=2, batch=4)
    assert options.size == 10 and (options.k, options.freq, options.batch) == (3, 2, 4)
    assert not np.shares_memory(options.pool, pool) and not options.pool.flags.writeable
    pool[:] = 0
    assert options.pool.any()


def test_options_read_a_finite_dataset_to_its_end():
    x = rng.random((10, 4, 4, 1)).astype(np.float32)

    def batches():
        for start in range(0, 10, 3):
            yield x[start : start + 3], np.zeros(3)

    options = atlas.check_options(batches(), k=2, freq=1, batch=4)
    np.testing.assert_array_equal(options.pool, x)


def test_off_without_a_pool_or_with_freq_0():
    assert atlas.check_options(None, k=8, freq=5, batch=64) is None
    assert atlas.check_options(np.zeros((4, 2, 2, 1)), k=8, freq=0, batch=64) is None


def test_an_endless_pool_is_refused(monkeypatch):
    monkeypatch.setattr(atlas, "MAX_POOL", 20)

    def forever():
        while True:
            yield np.zeros((4, 2, 2, 1), np.float32)

    with pytest.raises(ValueError, match=r"atlas holds more than 20 samples; accepted: a finite pool"):
        atlas.check_options(forever(), k=1, freq=1, batch=4)


def test_batches_pad_the_last_one_with_zeros():
    pool = [np.ones((5, 2), np.float32), np.ones((5, 3), np.int32)]
    got = list(atlas.batches(pool, 2))
    assert [(start, count) for start, count, _ in got] == [(0, 2), (2, 2), (4, 1)]
    last = got[-1][2]
    assert last[0].shape == (2, 2) and last[1].shape == (2, 3) and last[1].dtype == np.int32
    assert last[0][0].all() and not last[0][1].any()
