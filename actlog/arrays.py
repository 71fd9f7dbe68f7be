"""One array vocabulary for numpy and ``keras.ops``.

The arithmetic of a grid (:func:`actlog.grid.levels`) and of the statistics
(:func:`actlog.stats.reduce_layer`) is written once against a namespace ``xp``
that is either :data:`NUMPY` (on the host, for the grid toolkit and the
reference path) or ``keras.ops`` (inside the compiled probe function, on the
device). ``keras.ops`` already has the numpy names it needs; :data:`NUMPY`
adds the one numpy lacks, ``cast``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _Numpy:
    """numpy, with ``keras.ops.cast``'s signature."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def cast(x: Any, dtype: str) -> np.ndarray:
        return np.asarray(x).astype(dtype)


NUMPY: Any = _Numpy()
"""numpy as an ``xp`` namespace."""


def all_finite(xp: Any, x: Any) -> Any:
    """True when ``xp`` can tell cheaply, without a device sync, that no value of ``x`` is
    NaN or infinite (the PyTorch backend on the host); False when it cannot or some is; a
    scalar boolean tensor where the answer comes at run time, inside a compiled function
    (TensorFlow on the host: the caller branches on it with ``keras.ops.cond``).

    The grid and statistics functions then skip their masks (``all_finite=True``): on
    the host each mask is passes of its own over the activations and, unless a
    compiler fuses them (XLA), full-size temporaries; on an accelerator nothing asks.
    """
    check = getattr(xp, "all_finite", None)
    return check(x) if check is not None else False
