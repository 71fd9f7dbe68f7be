"""The grouped options of ``ActivationLogger``: one object per feature, checked when made.

``ActivationLogger`` keeps the options people set every day as keywords
(``layers``, ``freq``, ``max_channels``, ``channels``, ``norm``, ``cmap``,
``strict``) and takes the rest as one object per feature, so that
its signature and the README's table stay one screen:

```python
actlog.ActivationLogger("runs/exp1", probes=x_val[:8],
                        atlas=actlog.Atlas(x_val[:1024], k=8, every=5),
                        actmax=actlog.Maximize({"conv_1": [3, 5]}),
                        layout=actlog.Layout(min_tile=32),
                        background=actlog.Background(max_pending=4, on_full="skip"))
```

Each object checks its own arguments when it is made, so a wrong value fails
on the line that wrote it. A keyword that moved into one of them fails with a
``TypeError`` naming the new form (:data:`MOVED`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from actlog import atlas as atlas_
from actlog import class_maps, maximize
from actlog.checks import check_choice, check_int, check_optional_int
from actlog.probes import copy_probes
from actlog.worker import ON_FULL

__all__ = ["Atlas", "Background", "Batches", "ClassMaps", "Layout", "Maximize", "Probes"]


class _RareEvent:
    """An option object of an event logged every few epochs; its plain value is a shorthand."""

    options: Any

    @classmethod
    def of(cls, value: Any) -> Any:
        """The checked options of ``value``: ``None`` (off), an instance, or what its first
        argument takes (``atlas=pool`` means ``Atlas(pool)``)."""
        if value is None:
            return None
        return (value if isinstance(value, cls) else cls(value)).options


class Atlas(_RareEvent):
    """The feature atlas: every ``every`` epochs, the ``k`` pool inputs that excite each shown
    channel most, cropped to its receptive field. See :mod:`actlog.atlas`.

    Args:
        pool: an array ``(N, ...)`` shaped like the model's input, a list / dict
            of arrays for a multi-input model, or a finite dataset / iterable of
            batches (``(x, y)`` batches give ``x``); read once here and copied,
            at most 65,536 samples.
        k: crops per channel, from 1 to the pool's size. Default 8.
        every: epochs between atlases (also one at step 0 and one at the end of
            training); 0 turns the atlas off. Default 5.
        batch: pool samples per compiled call (their activations must fit in
            memory). Default 64.
    """

    def __init__(
        self, pool: Any, k: int = atlas_.DEFAULT_K, every: int = atlas_.DEFAULT_FREQ,
        batch: int = atlas_.DEFAULT_BATCH,
    ) -> None:
        if pool is None:
            raise TypeError(
                "Atlas needs a pool of inputs: an array (N, ...) or a finite dataset; received None."
            )
        self.options = atlas_.check_options(pool, k=k, freq=every, batch=batch)
        self.k, self.every, self.batch = int(k), int(every), int(batch)

    def __repr__(self) -> str:
        size = "off" if self.options is None else f"{self.options.size} samples"
        return f"Atlas(<pool: {size}>, k={self.k}, every={self.every}, batch={self.batch})"


class Maximize(_RareEvent):
    """Activation maximisation of chosen channels, on the atlas' schedule. See :mod:`actlog.maximize`.

    Args:
        channels: ``{layer: channel or [channels]}`` or a list of ``(layer,
            channel)`` pairs; layers by display name, each one watched.
        every: epochs between events; 0 turns it off. Default 5.
    """

    def __init__(self, channels: Any, every: int = 5) -> None:
        self.options = maximize.check_options(channels, freq=every)
        self.channels, self.every = channels, int(every)

    def __repr__(self) -> str:
        return f"Maximize({self.channels!r}, every={self.every})"


class ClassMaps(_RareEvent):
    """Class activation maps (Grad-CAM) of one watched convolution for each probe, logged with
    every grids event: every ``freq`` epochs, and at the batch-level events (``batch_freq``) in
    the batch-level run. See :mod:`actlog.class_maps`.

    Args:
        layer: the display name of a watched layer with a spatial map, in the
            model's own functional graph; a plain name ``cam="conv_1"`` means
            ``ClassMaps("conv_1")``.
        classes: each probe's class: ``"label"`` (default: probes given as an
            ``(x, y)`` tuple or a dataset of such batches; indices or one-hot
            rows), ``"predicted"`` (the argmax of the model's output at each
            event), or a sequence of class indices, one per probe.
    """

    def __init__(self, layer: str, classes: Any = "label") -> None:
        self.options = class_maps.check_options(layer, classes)

    def __repr__(self) -> str:
        return f"ClassMaps({self.options.layer!r}, classes={self.options.classes!r})"


class Layout:
    """How tiles are laid out in a grid image.

    Args:
        min_tile: tiles are upscaled (nearest neighbour) until their short side
            reaches this many pixels, within ``max_pixels``. Default 48.
        max_pixels: pixel budget of one grid image; a layer too large for it is
            drawn subsampled (said once, recorded in the manifest). Default 2**19.
        pad: pixels between tiles. Default 1.
        rows, cols: force the grid layout; default (``None``) near square.
    """

    def __init__(
        self, min_tile: int = 48, max_pixels: int = 2**19, pad: int = 1,
        rows: int | None = None, cols: int | None = None,
    ) -> None:
        self.min_tile = check_int("min_tile", min_tile, minimum=1)
        self.max_pixels = check_int("max_pixels", max_pixels, minimum=1)
        self.pad = check_int("pad", pad, minimum=0)
        self.rows = check_optional_int("rows", rows, minimum=1)
        self.cols = check_optional_int("cols", cols, minimum=1)

    def __repr__(self) -> str:
        return (f"Layout(min_tile={self.min_tile}, max_pixels={self.max_pixels}, pad={self.pad}, "
                f"rows={self.rows}, cols={self.cols})")

    @classmethod
    def of(cls, value: Any) -> Layout:
        """``layout=``: ``None`` (the defaults) or a :class:`Layout`."""
        accepted = "None or actlog.Layout(min_tile=, max_pixels=, pad=, rows=, cols=)"
        return _instance("layout", value, cls, accepted)


class Background:
    """The background thread that does the host half of each event (grids, PNG, writing).

    Args:
        max_pending: events that may wait for the background thread. Default 2.
        on_full: when ``max_pending`` events wait: ``"wait"`` (block training
            until one is written; default) or ``"skip"`` (drop the new event,
            counted in ``misses["skipped"]``).
    """

    def __init__(self, max_pending: int = 2, on_full: str = "wait") -> None:
        self.max_pending = check_int("max_pending", max_pending, minimum=1)
        self.on_full = check_choice("on_full", on_full, ON_FULL)

    def __repr__(self) -> str:
        return f"Background(max_pending={self.max_pending}, on_full={self.on_full!r})"

    @classmethod
    def of(cls, value: Any) -> Background | None:
        """``background=``: ``True`` (the defaults), ``False`` (``None``: all on the training
        thread) or a :class:`Background`."""
        if isinstance(value, bool):
            return cls() if value else None
        return _instance("background", value, cls, "True, False or actlog.Background(max_pending=, on_full=)")


class Batches:
    """Batch-level logging: every ``every`` training batches during the first ``epochs`` epochs,
    when features move fastest.

    Args:
        every: batches between events; 0 turns batch-level logging off.
        epochs: how many epochs it lasts. Default 1.
    """

    def __init__(self, every: int, epochs: int = 1) -> None:
        self.every = check_int("batch_freq", every, minimum=0)
        self.epochs = check_int("Batches epochs", epochs, minimum=1)

    def __repr__(self) -> str:
        return f"Batches(every={self.every}, epochs={self.epochs})"

    @classmethod
    def of(cls, value: Any) -> Batches:
        """``batch_freq=``: an int (``Batches(value)``) or a :class:`Batches`."""
        return value if isinstance(value, Batches) else cls(value)


class Probes:
    """The probes with how to read them; a plain ``probes=`` value means ``Probes(value)``.

    Args:
        data: a batch ``(k, ...)``, one sample, a list of samples, an ``(x, y)``
            tuple, a dataset or iterable of batches, or a list / dict of batches
            for a multi-input model (see :mod:`actlog.probes`); read once here and copied.
        count: how many probes to take from a dataset or iterable (default 8),
            or the first this many of an array (default all).
        log: log the probe images themselves at the first event. Default True.
        stats: also log the statistics of the activations on the probes (mean,
            std, sparsity, dead channels, drift). Default True.
        labels: also keep the labels of a dataset's ``(x, y)`` batches, for
            ``cam=ClassMaps(classes="label")`` (an ``(x, y)`` tuple keeps them
            always). Default False (a plain ``probes=`` value: True with ``cam``).
    """

    def __init__(self, data: Any, count: int | None = None, log: bool = True, stats: bool = True,
                 labels: bool = False) -> None:
        self.count = check_optional_int("Probes count", count, minimum=1)
        self.data = copy_probes(data, count=self.count, labels=bool(labels))
        self.log = bool(log)
        self.stats = bool(stats)

    def __repr__(self) -> str:
        return f"Probes(<copied>, count={self.count}, log={self.log}, stats={self.stats})"

    @classmethod
    def of(cls, value: Any, labels: bool = False) -> Probes:
        return value if isinstance(value, Probes) else cls(value, labels=labels)


def _instance(name: str, value: Any, cls: type, accepted: str) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be {accepted}; received {value!r} ({type(value).__name__}).")
    return value


MOVED: Mapping[str, str] = {
    "atlas_k": "atlas=actlog.Atlas(pool, k=8)",
    "atlas_freq": "atlas=actlog.Atlas(pool, every=5)",
    "atlas_batch": "atlas=actlog.Atlas(pool, batch=64)",
    "actmax_freq": "actmax=actlog.Maximize(channels, every=5)",
    "min_tile": "layout=actlog.Layout(min_tile=48)",
    "max_pixels": "layout=actlog.Layout(max_pixels=2**19)",
    "pad": "layout=actlog.Layout(pad=1)",
    "rows": "layout=actlog.Layout(rows=...)",
    "cols": "layout=actlog.Layout(cols=...)",
    "max_pending": "background=actlog.Background(max_pending=2)",
    "on_full": 'background=actlog.Background(on_full="wait")',
    "batch_epochs": "batch_freq=actlog.Batches(every, epochs=1)",
    "probe_count": "probes=actlog.Probes(data, count=8)",
    "log_probes": "probes=actlog.Probes(data, log=False)",
    "stats": "probes=actlog.Probes(data, stats=False)",
}
"""Keywords of actlog 0.2 that moved into an option object -> the new form."""


def event_options(probes: Probes, *, layers: Any, max_channels: int | None, channels: str, norm: Any,
                  cmap: str, layout: Any, background: Any, atlas: Any, actmax: Any, cam: Any,
                  freq: int) -> Any:
    """The logger's keywords checked (each fails naming what it received and what it accepts),
    as the :class:`actlog.session.Options` of its events."""
    from actlog import grid
    from actlog.session import Options

    layout = Layout.of(layout)
    worker = Background.of(background)
    class_maps = ClassMaps.of(cam)
    if class_maps is not None and not freq:
        raise ValueError("cam is logged with the grids, every freq epochs; received freq=0. "
                         "Accepted: freq >= 1 with cam, or cam=None.")
    return Options(
        layers=layers,
        max_channels=check_optional_int("max_channels", max_channels, minimum=1),
        channels=grid.check_selection(channels),
        norm=grid.check_norm(norm),
        cmap=grid.check_cmap(cmap),
        min_tile=layout.min_tile,
        max_pixels=layout.max_pixels,
        pad=layout.pad,
        rows=layout.rows,
        cols=layout.cols,
        stats=probes.stats,
        log_probes=probes.log,
        background=worker is not None,
        max_pending=(worker or Background()).max_pending,
        on_full=(worker or Background()).on_full,
        atlas=Atlas.of(atlas),
        maximize=Maximize.of(actmax),
        class_maps=class_maps,
    )


def refuse_moved(moved: Mapping[str, str]) -> Callable:
    """Decorate a function (an ``__init__``) so that an old keyword fails with a ``TypeError`` naming its new
    form, instead of Python's bare "unexpected keyword argument"; the signature stays the new one."""

    def decorate(init: Callable) -> Callable:
        @functools.wraps(init)
        def checked(*args: Any, **kwargs: Any) -> Any:
            old = [name for name in kwargs if name in moved]
            if old:
                raise TypeError(" ".join(f"{name}= moved: pass {moved[name]}." for name in old))
            return init(*args, **kwargs)

        return checked

    return decorate
