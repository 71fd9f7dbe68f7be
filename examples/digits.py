"""Handwritten digits for the examples: real MNIST when it can be had, real digits offline.

``load_digits_28`` first tries ``keras.datasets.mnist.load_data()`` (a download on
first use, then cached in ``~/.keras/datasets``). When that fails for any reason
(no network, a proxy, a broken cache) it says so in one line and falls back to
scikit-learn's bundled 8 x 8 digits (1,797 real handwritten digits shipped inside
the scikit-learn wheel, nothing to download), upscaled to MNIST's layout: the
digit enlarged to 20 x 20 and centred in a 28 x 28 frame. Either way the arrays
have the same shape, dtype and range, so the examples run unchanged.

```python
from digits import load_digits_28

x_train, y_train, x_test, y_test, source = load_digits_28(limit=2000)
print(source, x_train.shape)   # e.g. "scikit-learn digits ..." (1438, 28, 28, 1)
```

Set ``ACTLOG_OFFLINE=1`` to skip the MNIST attempt entirely (what CI and the tests do).
"""

from __future__ import annotations

import os
import socket

import numpy as np

MNIST = "MNIST (keras.datasets.mnist)"
SKLEARN_DIGITS = "scikit-learn digits (real 8x8 scans, upscaled to 28x28)"

_OFFLINE_ENV = "ACTLOG_OFFLINE"
_DOWNLOAD_TIMEOUT_S = 10.0
# MNIST draws each digit in a 20 x 20 box centred in the 28 x 28 frame; do the same.
_DIGIT_BOX = 20
_FRAME = 28

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]


def load_digits_28(
    limit: int | None = None, *, seed: int = 0, test_fraction: float = 0.2
) -> Arrays:
    """Digits as float32 images in [0, 1], shape ``(n, 28, 28, 1)``, with int64 labels 0-9.

    Args:
        limit: at most this many training samples, and at most ``limit // 4``
            (at least 1) test samples, drawn at random with ``seed``. ``None``
            keeps everything (60,000 / 10,000 for MNIST, 1,438 / 359 offline).
        seed: seed of the subsampling and of the offline train/test split, so
            two calls return the same arrays.
        test_fraction: share of the offline set held out for testing (MNIST
            comes with its own split). Must be in (0, 1).

    Returns:
        ``(x_train, y_train, x_test, y_test, source)`` where ``source`` is
        :data:`MNIST` or :data:`SKLEARN_DIGITS`.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None. Received: {limit!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Received: {test_fraction!r}")

    rng = np.random.default_rng(seed)
    loaded = _try_mnist()
    if loaded is not None:
        (x_train, y_train), (x_test, y_test) = loaded
        source = MNIST
    else:
        x, y = _sklearn_digits_28()
        order = rng.permutation(len(x))
        n_test = max(1, round(len(x) * test_fraction))
        test, train = order[:n_test], order[n_test:]
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
        source = SKLEARN_DIGITS

    if limit is not None:
        x_train, y_train = _subsample(x_train, y_train, limit, rng)
        x_test, y_test = _subsample(x_test, y_test, max(1, limit // 4), rng)
    return x_train, y_train, x_test, y_test, source


def _try_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    if os.environ.get(_OFFLINE_ENV, "").strip() not in ("", "0"):
        print(f"{_OFFLINE_ENV} is set: not trying to download MNIST; using scikit-learn's digits.")
        return None
    # Without a timeout, a network that drops packets (rather than refusing) would
    # stall the example for minutes before the fallback. The default timeout is
    # process-wide, so put the previous one back afterwards.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as err:  # any failure at all means "use the offline digits"
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        print(f"MNIST could not be loaded ({reason}); using scikit-learn's bundled digits instead.")
        return None
    finally:
        socket.setdefaulttimeout(previous)
    train = (_to_unit(x_train), y_train.astype(np.int64))
    return train, (_to_unit(x_test), y_test.astype(np.int64))


def _to_unit(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]


def _sklearn_digits_28() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = bunch.images.astype(np.float32) / 16.0  # scikit-learn's scans count 0..16
    box = _resize_bilinear(small, _DIGIT_BOX)
    margin = (_FRAME - _DIGIT_BOX) // 2
    frame = np.zeros((len(box), _FRAME, _FRAME), np.float32)
    frame[:, margin : margin + _DIGIT_BOX, margin : margin + _DIGIT_BOX] = box
    return np.clip(frame, 0.0, 1.0)[..., None], bunch.target.astype(np.int64)


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``(n, h, w)`` stack to ``(n, size, size)``, sampling at pixel centres."""
    _, h, w = images.shape

    def axis(src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(size, dtype=np.float32) + 0.5) * (src / size) - 0.5
        pos = np.clip(pos, 0.0, src - 1.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(h)
    x0, x1, wx = axis(w)
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def _subsample(
    x: np.ndarray, y: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if count >= len(x):
        return x, y
    keep = np.sort(rng.choice(len(x), size=count, replace=False))
    return x[keep], y[keep]
