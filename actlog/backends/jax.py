"""JAX: ``jax.jit`` over a stateless call, fed the current variable values.

During ``fit`` the JAX trainer keeps the model's state outside its variables
and writes it back only at the end of an epoch, or when asked through the
model's public ``jax_state_sync()`` (what a callback's ``self.model`` calls).
The probe function asks for that sync before it reads the variables, so a
batch-level event sees the weights of the step that just ran.

Under ``keras.distribution`` the probes go to every device of the model's mesh and the
results come back replicated; over several processes (``jax.distributed``) every process
runs each compiled function at the same events, on the same probes (checked once per
training run), and reads whole results from its own devices (see :class:`_Jitted`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import jax
import keras
import numpy as np
from jax.experimental import multihost_utils

from actlog.backends import Backend, Compiled, Counted


def _values(model: Any) -> list[Any]:
    """The current values of ``model``'s variables: mid-epoch the trainer holds them, and
    its public ``jax_state_sync()`` writes them back to the variables first."""
    if model is None:
        return []
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
    return [v.value for v in model.trainable_variables + model.non_trainable_variables]


def _replicated(values: list[Any]) -> Any:
    """The sharding that copies an array to every device of the mesh the first of ``values``
    lives on, when it spans several devices (the model's variables under
    ``keras.distribution``); else None."""
    sharding = getattr(values[0], "sharding", None) if values else None
    if sharding is None or len(sharding.device_set) < 2 or not hasattr(sharding, "mesh"):
        return None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


def _placement(values: list[Any], args: Any) -> Any:
    """:func:`_replicated` of the model's variable ``values``, or of ``args`` where there are
    none (the reductions, whose first argument is a raw output the model's mesh holds):
    every call then takes its arguments in one placement, whether they come from the host
    or from the last event."""
    return _replicated(values or jax.tree_util.tree_leaves(args))


def _placed(args: Any, replicated: Any) -> Any:
    """``args`` replicated over the model's devices (see :func:`_replicated`): one placement
    for every call, so no recompiling. Arrays already spread over several devices stay as
    they are (a batch :meth:`JaxBackend.spread` split, the last event's results).

    Over several processes, ``jax.device_put`` of a host value first checks with every other
    process that it holds the same value (a collective per array); the values are known to
    agree (:meth:`JaxBackend.check_same`, once per training run), so each process places its
    own copy instead.
    """
    if replicated is None:
        return args

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1:
            return leaf
        if replicated.is_fully_addressable:
            return jax.device_put(leaf, replicated)
        return _from_host(leaf, replicated)

    return jax.tree_util.tree_map(place, args)


def _from_host(leaf: Any, sharding: Any) -> Any:
    """``leaf`` (the same on every process) placed by ``sharding``: each process copies only
    what its own devices hold."""
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


class _Jitted:
    """``jax.jit(fn)`` called with the model's variable values first, its other arguments
    placed by :func:`_placed`; on a model spread over several devices every result is
    replicated (gathered inside the compiled function), so that each process reads whole
    results from its own devices: no array a process cannot fetch, no collective after it."""

    def __init__(self, fn: Callable[..., Any], model: Any) -> None:
        self._fn = fn
        self._model = model
        self._compiled: dict[Any, Callable[..., Any]] = {}

    def __call__(self, *args: Any) -> Any:
        values = _values(self._model)
        replicated = _placement(values, args)
        compiled = self._compiled.get(replicated)
        if compiled is None:
            where = {} if replicated is None else {"out_shardings": replicated}
            compiled = self._compiled[replicated] = jax.jit(self._fn, **where)
        return compiled(values, *_placed(args, replicated))


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
        self._jitted = _Jitted(self._counted, model)

    @property
    def traces(self) -> int:
        return 0 if self._eager else self._counted.count

    def __call__(self, *args: Any) -> Any:
        if self._eager:
            values = _values(self._model)
            out = self._counted(values, *_placed(args, _placement(values, args)))
        else:
            out = self._jitted(*args)
        # Wait for the forward pass: the next training step donates the buffers it reads
        # (a function of no model's variables reads none of them).
        return out if self._model is None else jax.block_until_ready(out)


class JaxBackend(Backend):
    name = "jax"

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True, large: bool = False) -> Compiled:
        return _Function(fn, model, eager)

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        return _Jitted(jax.value_and_grad(_stateless(fn, model), argnums=1), model)

    def fetch(self, tree: Any) -> Callable[[], Any]:
        leaves = jax.tree_util.tree_leaves(tree)
        for leaf in leaves:
            if hasattr(leaf, "copy_to_host_async"):
                leaf.copy_to_host_async()
        return lambda: jax.tree_util.tree_map(np.asarray, tree)

    def _accelerated(self) -> bool:
        return jax.devices()[0].platform != "cpu"

    def is_chief(self, model: Any) -> bool:
        return jax.process_index() == 0

    def lockstep(self, model: Any) -> bool:
        values = _values(model)
        if not values:
            return jax.process_count() > 1
        return any(not getattr(v, "is_fully_addressable", True) for v in values)

    def spread(self, batch: Any, model: Any) -> Any:
        replicated = _replicated(_values(model))
        if replicated is None:
            return batch
        mesh = replicated.mesh
        axis = getattr(keras.distribution.distribution(), "batch_dim_name", None)
        if axis not in mesh.axis_names or any(np.shape(leaf)[0] % mesh.shape[axis]
                                               for leaf in jax.tree_util.tree_leaves(batch)):
            return batch
        split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
        return jax.tree_util.tree_map(lambda leaf: _from_host(leaf, split), batch)

    def any_process(self, flag: bool) -> bool:
        return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())

    def check_same(self, what: str, arrays: list[np.ndarray]) -> None:
        # One fixed-size fingerprint per process, gathered: a collective every process runs.
        shapes = repr([(a.shape, str(a.dtype)) for a in arrays]).encode()
        content = 0
        for a in arrays:
            content = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), content)
        mine = np.asarray([zlib.crc32(shapes), content], np.uint32)
        every = np.asarray(multihost_utils.process_allgather(mine))
        differ = [p for p, theirs in enumerate(every) if not np.array_equal(theirs, every[0])]
        if differ:
            raise ValueError(
                f"actlog: the {what} differ between the JAX processes (process 0 and processes "
                f"{differ} hold other values or shapes; this is process {jax.process_index()}). "
                f"Every process runs the same computation on them: pass the same {what} on every "
                "process (e.g. taken from data every process loads alike)."
            )


BACKEND = JaxBackend()
