"""PyTorch: the probe function runs eagerly under ``torch.no_grad()``.

Keras' PyTorch trainer updates the variables in place, so the model always
holds the current weights. The function is not compiled: it runs a handful of
probes once every N epochs, where ``torch.compile``'s minutes of compilation
do not pay. On a GPU the results start their copy to pinned host memory on the
training thread, and the background waits for it.
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


def _map(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _map(fn, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(fn, value) for value in tree)
    return fn(tree)


class TorchBackend(Backend):
    name = "torch"

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
