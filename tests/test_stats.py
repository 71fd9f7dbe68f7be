"""actlog.stats against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actlog.arrays import NUMPY
from actlog.stats import LayerStats, cosine_drift, layer_stats


def acts_example() -> np.ndarray:
    """(k=2 probes, 2 positions, C=3): channel 0 varies, 1 is all zero, 2 is constant 2."""
    return np.array(
        [
            [[1, 0, 2], [3, 0, 2]],
            [[0, 0, 2], [4, 0, 2]],
        ],
        dtype=np.float32,
    )


def test_layer_stats_first_event():
    stats = layer_stats(acts_example())
    assert isinstance(stats, LayerStats)
    # 12 values summing to 16, squares summing to 42, five exact zeros.
    assert stats.mean == pytest.approx(16 / 12)
    assert stats.std == pytest.approx(math.sqrt(42 / 12 - (16 / 12) ** 2))
    assert stats.sparsity == pytest.approx(5 / 12)
    assert stats.dead_fraction == pytest.approx(2 / 3)  # channels 1 and 2 never change
    assert stats.drift is None and stats.channel_drift is None
    assert stats.finite is True
    np.testing.assert_array_equal(stats.channel_mean, [2, 0, 2])
    np.testing.assert_array_equal(stats.channel_max, [4, 0, 2])
    assert stats.channel_mean.dtype == np.float32 and stats.channel_max.dtype == np.float32
    assert set(stats.scalars()) == {"mean", "std", "sparsity", "dead_fraction"}
    assert set(stats.channels()) == {"channel_mean", "channel_max"}


def test_layer_stats_drift():
    acts = acts_example()
    same_direction = layer_stats(acts, previous=3 * acts)
    assert same_direction.drift == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(same_direction.channel_drift, [0, 0, 0], atol=1e-7)

    previous = acts.copy()
    previous[..., 0] = 0  # channel 0 was dead, now it is not: drift 1
    previous[..., 2] = -2  # channel 2 flipped sign: drift 2
    stats = layer_stats(acts, previous=previous)
    # a.b = 4 positions * 2 * -2 = -16, |a| = sqrt(42), |b| = sqrt(4 * 4) = 4
    assert stats.drift == pytest.approx(1 + 16 / (4 * math.sqrt(42)))
    np.testing.assert_allclose(stats.channel_drift, [1, 0, 2])
    assert stats.channel_drift.dtype == np.float32
    assert set(stats.scalars()) == {"mean", "std", "sparsity", "dead_fraction", "drift"}
    assert "channel_drift" in stats.channels()


def test_cosine_drift_cases():
    assert cosine_drift(np.zeros(4), np.zeros(4)) == 0.0
    assert cosine_drift(np.zeros(4), np.arange(4.0)) == 1.0
    assert cosine_drift(np.arange(4.0), np.zeros(4)) == 1.0
    assert cosine_drift(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert cosine_drift(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(
        1 - 1 / math.sqrt(2)
    )
    assert cosine_drift(np.array([2.0, -1.0]), np.array([-4.0, 2.0])) == pytest.approx(2.0)
    # Extreme magnitudes neither overflow nor underflow.
    assert cosine_drift(np.full(3, 1e300), np.full(3, 1e-300)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"equal shapes\. Received \(2,\) and \(3,\)"):
        cosine_drift(np.zeros(2), np.zeros(3))


def test_non_finite_values_are_excluded():
    acts = acts_example()
    acts[0, 0, 0] = np.nan  # channel 0 keeps 3, 0, 4
    acts[1, 1, 2] = np.inf  # channel 2 keeps three 2s
    with np.errstate(all="raise"):
        stats = layer_stats(acts, previous=acts_example())
    assert stats.finite is False
    # 10 finite values: 3, 0, 2, 0, 2, 0, 0, 2, 4, 0 -> sum 13, five zeros
    assert stats.mean == pytest.approx(13 / 10)
    assert stats.sparsity == pytest.approx(5 / 10)
    np.testing.assert_allclose(stats.channel_mean, [7 / 3, 0, 2])
    np.testing.assert_array_equal(stats.channel_max, [4, 0, 2])
    assert stats.dead_fraction == pytest.approx(2 / 3)
    # Drift counts a non-finite value as 0: channel 0 is [0, 3, 0, 4] against
    # [1, 3, 0, 4], channel 2 [2, 2, 2, 0] against [2, 2, 2, 2].
    assert stats.drift == pytest.approx(1 - math.sqrt(37 / 42))
    np.testing.assert_allclose(
        stats.channel_drift, [1 - 5 / math.sqrt(26), 0, 1 - math.sqrt(12) / 4], rtol=1e-6
    )


def test_all_non_finite_channel():
    acts = np.ones((1, 2, 2), dtype=np.float32)
    acts[..., 1] = np.nan
    stats = layer_stats(acts)
    assert np.isnan(stats.channel_mean[1]) and np.isnan(stats.channel_max[1])
    assert stats.channel_mean[0] == 1
    assert stats.dead_fraction == 1.0  # channel 0 is constant, channel 1 has no value
    everything = layer_stats(np.full((1, 3), np.nan))
    assert math.isnan(everything.mean) and everything.finite is False


def test_dead_atol():
    acts = np.zeros((2, 3, 2))
    acts[0, 0, 0] = 1e-7
    acts[:, :, 1] = np.arange(6).reshape(2, 3)
    assert layer_stats(acts).dead_fraction == 0.5
    assert layer_stats(acts, dead_atol=1e-8).dead_fraction == 0.0
    with pytest.raises(ValueError, match=r"dead_atol must be a number >= 0\. Received: -1"):
        layer_stats(acts, dead_atol=-1)


def test_drift_compares_block_sums_of_large_maps():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(2, 40, 33, 3)).astype(np.float32)
    previous = rng.normal(size=acts.shape).astype(np.float32)
    # 40 x 33 -> blocks of 3 x 3 -> a 14 x 11 sketch (zero-padded at the far edges)
    padded = np.zeros((2, 42, 33, 3)), np.zeros((2, 42, 33, 3))
    padded[0][:, :40], padded[1][:, :40] = acts, previous
    now, before = (p.reshape(2, 14, 3, 11, 3, 3).sum(axis=(2, 4)) for p in padded)
    stats = layer_stats(acts, previous=previous)
    assert stats.drift == pytest.approx(cosine_drift(now, before), rel=1e-5)
    for c in range(3):
        assert stats.channel_drift[c] == pytest.approx(cosine_drift(now[..., c], before[..., c]), rel=1e-5)


def test_sketch_of_a_layer_with_many_channels_stays_small():
    from actlog import stats

    rng = np.random.default_rng(1)
    wide = rng.normal(size=(8, 7, 7, 2048)).astype(np.float32)  # ResNet50's last stage, 8 probes
    sketch = stats.sketch(NUMPY, wide)
    assert stats.sketch_size(8, 2048) == 2 and sketch.shape == (8, 2, 2, 2048)
    assert sketch.size <= stats.SKETCH_VALUES
    np.testing.assert_allclose(sketch[:, 0, 0], wide[:, :4, :4].sum(axis=(1, 2)), rtol=1e-5)
    # ... while few channels keep every position up to 16 x 16, and one too many never goes below 1.
    assert stats.sketch(NUMPY, wide[..., :3]).shape == (8, 7, 7, 3)
    assert stats.sketch_size(64, 100_000) == 1
    previous = rng.normal(size=wide.shape).astype(np.float32)
    assert layer_stats(wide, previous=previous).drift == pytest.approx(
        cosine_drift(sketch, stats.sketch(NUMPY, previous)), rel=1e-5
    )


def test_many_watched_layers_share_one_sketch_budget():
    from actlog import stats

    assert stats.sketch_values(1) == stats.sketch_values(32) == stats.SKETCH_VALUES
    assert stats.sketch_values(174) == stats.SKETCH_BUDGET // 174  # ResNet50, every spatial layer
    # ResNet50's stages at 8 probes: 64 channels keep 4 x 4 positions of 56 x 56, 2048 keep one.
    shares = [stats.sketch_size(8, c, stats.sketch_values(174)) for c in (64, 256, 512, 1024, 2048)]
    assert shares == [4, 2, 1, 1, 1]
    total = sum(8 * c * s * s for c, s in zip((64, 256, 512, 1024, 2048), shares, strict=True))
    assert total * 174 / 5 < 1.5 * stats.SKETCH_BUDGET


def test_dense_layer_shape():
    acts = np.array([[1.0, -1.0, 0.0], [3.0, -1.0, 0.0]])  # (k, C)
    stats = layer_stats(acts)
    np.testing.assert_array_equal(stats.channel_mean, [2, -1, 0])
    np.testing.assert_array_equal(stats.channel_max, [3, -1, 0])
    assert stats.dead_fraction == pytest.approx(2 / 3)


def test_layer_stats_rejects_bad_input_and_does_not_mutate():
    acts = acts_example()
    with pytest.raises(ValueError, match=r"previous activations have shape \(2, 2\) but the "
                                         r"current ones have \(2, 2, 3\)"):
        layer_stats(acts, previous=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"acts must be \(k, \.\.\., C\).*Received shape \(3,\)"):
        layer_stats(np.zeros(3))
    with pytest.raises(ValueError, match=r"Received shape \(0, 3\)"):
        layer_stats(np.zeros((0, 3)))
    acts[0, 0, 0] = np.nan
    previous = -acts_example()
    before, previous_before = acts.copy(), previous.copy()
    layer_stats(acts, previous=previous)
    np.testing.assert_array_equal(acts, before)
    np.testing.assert_array_equal(previous, previous_before)


@pytest.mark.parametrize("norm, cmap", [("channel", "gray"), ("layer", "viridis"), ((-0.5, 0.5), "gray"),
                                        ("channel", "diverging"), ((-1.0, 2.0), "diverging")])
def test_unmasked_path_gives_the_masked_bytes_when_every_value_is_finite(norm, cmap):
    """``all_finite=True`` (an eager backend checked the layer) skips the NaN masks: same bytes."""
    from actlog import grid, stats
    from actlog.arrays import NUMPY

    rng = np.random.default_rng(3)
    acts = (rng.standard_normal((3, 13, 11, 6)) * 2).astype(np.float32)
    acts[0, :, :, 1] = 0.0  # a dead channel: its zeros and flat tiles
    acts[1, 0, 0, 2] = -0.0  # a zero too
    for fn in (stats.reduce_layer, stats.activity, stats.sketch):
        masked, unmasked = fn(NUMPY, acts), fn(NUMPY, acts, all_finite=True)
        pairs = (v.values() if isinstance(v, dict) else [v] for v in (masked, unmasked))
        for a, b in zip(*pairs, strict=True):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(a, b)
    layout = grid.plan_layout((13, 11), [4, 1, 0], rows=1, cols=3)
    masked = grid.levels(NUMPY, acts, np.array([4, 1, 0]), layout, norm=norm, cmap=cmap)
    unmasked = grid.levels(NUMPY, acts, np.array([4, 1, 0]), layout, norm=norm, cmap=cmap, all_finite=True)
    for a, b in zip(masked, unmasked, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_zeros_are_counted_exactly_past_float32_integers():
    """Over 2**24 values per channel a float32 count is rounded: the zeros are still exact."""
    from actlog import stats
    from actlog.arrays import NUMPY

    values = np.ones((2**24 + 3, 1), np.float32)
    values[[5, 7, 2**24 + 1]] = 0.0
    for finite in (False, True):
        assert stats.reduce_layer(NUMPY, values, all_finite=finite)["zeros"][0] == 3
