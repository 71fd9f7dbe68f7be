"""PyTorch: the probe function runs eagerly under ``torch.no_grad()``.

Keras' PyTorch trainer updates the variables in place, so the model always
holds the current weights. The function is not compiled: it runs a handful of
probes once every N epochs, where ``torch.compile``'s minutes of compilation
do not pay. On a GPU the results start their copy to pinned host memory on the
training thread, and the background waits for it. On the CPU, where nothing is
copied and no op fuses with another, the training thread runs only the forward
pass; the reductions run in the background (:meth:`TorchBackend.reduces_later`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from actlog.backends import Backend, Compiled


class _Function(Compiled):
    traces = 0

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        with torch.no_grad():
            return self._fn(*args)


class _TorchOps:
    """The ``xp`` functions of :mod:`actlog.grid` and :mod:`actlog.stats`, in plain torch.

    PyTorch runs the probe function eagerly, op by op, and ``keras.ops`` adds its
    conversions and checks to each of the few thousand small ops of an event: calling
    torch directly costs a fraction of that. Same IEEE float32 arithmetic, so the
    same bytes as numpy (the test suite compares them). On the host, where reading a
    number costs no device sync, :meth:`all_finite` lets the reductions of a layer
    without NaN or Inf skip their masks: each mask is passes of its own over the
    activations in eager mode, which a compiled backend fuses away."""

    _DTYPES = {"float32": torch.float32, "uint8": torch.uint8, "int32": torch.int32, "bool": torch.bool}

    @staticmethod
    def take(x: Any, index: Any, axis: int) -> Any:
        # Indexing gathers along the last axis about 4x faster than torch.index_select.
        return x[(slice(None),) * (axis % x.ndim) + (index.long(),)]

    logical_not = staticmethod(torch.logical_not)
    logical_and = staticmethod(torch.logical_and)
    abs = staticmethod(torch.abs)
    round = staticmethod(torch.round)
    reshape = staticmethod(torch.reshape)
    stack = staticmethod(torch.stack)
    equal = staticmethod(torch.eq)
    expand_dims = staticmethod(torch.unsqueeze)
    moveaxis = staticmethod(torch.movedim)

    @staticmethod
    def isfinite(x: Any) -> Any:
        # |x| < inf is False for NaN and +-inf: one pass fewer than torch.isfinite's x == x & |x| != inf.
        return torch.abs(x) < float("inf")

    @staticmethod
    def all_finite(x: Any) -> bool:
        """Whether no value of ``x`` is NaN or infinite, when that costs no device sync
        (on the host): their sum is finite only then. Else False (the masked path)."""
        return x.device.type == "cpu" and bool(torch.isfinite(torch.sum(x)))

    @classmethod
    def zeros_like(cls, x: Any, dtype: str | None = None) -> Any:
        return torch.zeros_like(x, dtype=None if dtype is None else cls._DTYPES[dtype])

    @staticmethod
    def where(condition: Any, x: Any, y: Any) -> Any:
        return torch.where(condition, x, y)

    @staticmethod
    def min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return torch.amin(x, dim=axis, keepdim=keepdims) if axis is not None else torch.amin(x)

    @staticmethod
    def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return torch.amax(x, dim=axis, keepdim=keepdims) if axis is not None else torch.amax(x)

    @staticmethod
    def sum(x: Any, axis: Any = None) -> Any:
        return torch.sum(x, dim=axis) if axis is not None else torch.sum(x)

    @staticmethod
    def maximum(x: Any, y: Any) -> Any:
        if not isinstance(y, torch.Tensor):
            return torch.clamp(x, min=y)
        return torch.maximum(x, y)

    @staticmethod
    def clip(x: Any, low: float, high: float) -> Any:
        return torch.clamp(x, low, high)

    @classmethod
    def cast(cls, x: Any, dtype: str) -> Any:
        return x.to(cls._DTYPES[dtype])

    @staticmethod
    def pad(x: Any, pad_width: Any) -> Any:
        flat = [side for before_after in reversed(pad_width) for side in before_after]
        return torch.nn.functional.pad(x, flat)

    @staticmethod
    def arange(count: int, dtype: str = "int32") -> Any:
        return torch.arange(count, dtype=_TorchOps._DTYPES[dtype])


def _map(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(fn, value) for value in tree)
    return fn(tree)


class TorchBackend(Backend):
    name = "torch"
    ops = _TorchOps()

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool) -> Compiled:
        return _Function(fn)

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        def step(x: Any, *args: Any) -> tuple[Any, Any]:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                value = fn(x, *args)
                (grad,) = torch.autograd.grad(value, x)
            return value.detach(), grad

        return step

    def fetch(self, tree: Any) -> Callable[[], Any]:
        cuda = any(t.is_cuda for t in _leaves(tree))
        if not cuda:
            return lambda: _map(lambda t: t.detach().numpy(), tree)
        copies = _map(lambda t: t.detach().to("cpu", non_blocking=True), tree)
        done = torch.cuda.Event()
        done.record()

        def result() -> Any:
            done.synchronize()
            return _map(lambda t: t.numpy(), copies)

        return result

    def accelerated(self) -> bool:
        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps is not None and mps.is_available())

    def reduces_later(self) -> bool:
        return not self.accelerated()

    def enter_background(self) -> None:
        # One thread here: a second thread with an OpenMP team of its own makes libgomp stop
        # spinning between parallel regions (more threads than cores), and every op of the
        # training thread then waits to wake its team: 1.8x slower on 2 cores, measured.
        torch.set_num_threads(1)  # this thread's OpenMP setting; training keeps its own

    def is_chief(self, model: Any) -> bool:
        distributed = torch.distributed
        return not (distributed.is_available() and distributed.is_initialized()) or (
            distributed.get_rank() == 0
        )


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (list, tuple)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


BACKEND = TorchBackend()
