"""JAX: ``jax.jit`` over a stateless call, fed the current variable values.

During ``fit`` the JAX trainer keeps the model's state outside its variables
and writes it back only at the end of an epoch (or when a callback reads
``self.model``, which forces that sync). The probe function takes the values
as arguments instead: from the trainer's state mid-epoch, from the variables
otherwise, so batch-level logging costs no sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import keras
import numpy as np

from actlog.backends import Backend, Compiled, Counted


def _values(model: Any) -> list[Any]:
    if model is None:
        return []
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        return list(state["trainable_variables"]) + list(state["non_trainable_variables"])
    return [v.value for v in model.trainable_variables + model.non_trainable_variables]


def _placed(args: Any, like: Any) -> Any:
    """``args`` replicated over the devices of ``like`` (a variable value) when the model is
    distributed (``keras.distribution``): one placement for every call, so no recompiling."""
    sharding = getattr(like, "sharding", None)
    if sharding is None or len(sharding.device_set) < 2 or not hasattr(sharding, "mesh"):
        return args
    return jax.device_put(args, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))


def _stateless(fn: Callable[..., Any], model: Any) -> Callable[..., Any]:
    """``fn`` as a function of the model's variable values (first argument) and its own."""
    variables = [] if model is None else model.trainable_variables + model.non_trainable_variables

    def stateless(values: list[Any], *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(*args)

    return stateless


class _Function(Compiled):
    def __init__(self, fn: Callable[..., Any], model: Any, eager: bool) -> None:
        self._model = model
        self._counted = Counted(_stateless(fn, model))
        self._eager = eager
        self._call = self._counted if eager else jax.jit(self._counted)

    @property
    def traces(self) -> int:
        return 0 if self._eager else self._counted.count

    def __call__(self, *args: Any) -> Any:
        values = _values(self._model)
        out = self._call(values, *_placed(args, values[0] if values else None))
        # Wait for the forward pass: the next training step donates the buffers it reads
        # (a function of no model's variables reads none of them).
        return out if self._model is None else jax.block_until_ready(out)


class JaxBackend(Backend):
    name = "jax"

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool) -> Compiled:
        return _Function(fn, model, eager)

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        compiled = jax.jit(jax.value_and_grad(_stateless(fn, model), argnums=1))
        return lambda x, *args: compiled(_values(model), x, *args)

    def fetch(self, tree: Any) -> Callable[[], Any]:
        leaves = jax.tree_util.tree_leaves(tree)
        for leaf in leaves:
            if hasattr(leaf, "copy_to_host_async"):
                leaf.copy_to_host_async()
        return lambda: jax.tree_util.tree_map(np.asarray, tree)

    def accelerated(self) -> bool:
        return jax.devices()[0].platform != "cpu"

    def is_chief(self, model: Any) -> bool:
        return jax.process_index() == 0


BACKEND = JaxBackend()
