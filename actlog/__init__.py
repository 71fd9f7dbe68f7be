"""actlog: watch what the layers of a convolutional network look for while it trains.

``ActivationLogger`` is a Keras callback that logs activation-map grids of a few
fixed probe images to TensorBoard every N epochs, on every Keras 3 backend.
``feature_maps`` and ``plot_feature_maps`` give the same pictures once, in a
notebook. ``read`` loads a log back as numpy arrays without TensorFlow.

Importing ``actlog`` is cheap: Keras and a backend are loaded only when a name
that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actlog.version import __version__

__all__ = [
    "ActivationLogger",
    "Atlas",
    "Background",
    "Batches",
    "ClassMaps",
    "Layout",
    "LoggingError",
    "LogError",
    "Maximize",
    "Probes",
    "feature_maps",
    "plot_feature_maps",
    "read",
    "Tokens",
    "compare",
    "__version__",
]

_LAZY = {
    "ActivationLogger": "actlog.callback",
    "Atlas": "actlog.options",
    "Background": "actlog.options",
    "Batches": "actlog.options",
    "ClassMaps": "actlog.options",
    "Layout": "actlog.options",
    "Maximize": "actlog.options",
    "Probes": "actlog.options",
    "LoggingError": "actlog.faults",
    "LogError": "actlog.reader",
    "feature_maps": "actlog.oneshot",
    "plot_feature_maps": "actlog.oneshot",
    "read": "actlog.reader",
    "Tokens": "actlog.tokens",
    "compare": "actlog.comparison",
}

if TYPE_CHECKING:
    from actlog.callback import ActivationLogger
    from actlog.comparison import compare
    from actlog.faults import LoggingError
    from actlog.oneshot import feature_maps, plot_feature_maps
    from actlog.options import Atlas, Background, Batches, ClassMaps, Layout, Maximize, Probes
    from actlog.reader import LogError, read
    from actlog.tokens import Tokens


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actlog' has no attribute {name!r}")
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        from actlog.backends import missing_backend

        message = missing_backend(error)
        if message is None:
            raise
        raise ModuleNotFoundError(message, name=error.name) from error
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
