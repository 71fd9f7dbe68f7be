"""JAX: ``jax.jit`` over a stateless call, fed the current variable values.

During ``fit`` the JAX trainer keeps the model's state outside its variables
and writes it back only at the end of an epoch (or when a callback reads
``self.model``, which forces that sync). The probe function takes the values
as arguments instead: from the trainer's state mid-epoch, from the variables
otherwise, so batch-level logging costs no sync.

Under ``keras.distribution`` the probes go to every device of the model's mesh and the
results come back replicated; over several processes (``jax.distributed``) every process
runs each compiled function at the same events, on the same probes (checked once per
training run), and reads whole results from its own devices (see :class:`_Jitted`).

On the CPU, depthwise convolutions (MobileNet's, ``SeparableConv``'s) compile as
shifted products (:func:`depthwise_conv`) instead of XLA's grouped convolution.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.experimental import multihost_utils

from actlog.backends import Backend, Compiled, Counted, Substitute


def _values(model: Any) -> list[Any]:
    if model is None:
        return []
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        return list(state["trainable_variables"]) + list(state["non_trainable_variables"])
    return [v.value for v in model.trainable_variables + model.non_trainable_variables]


def _replicated(values: list[Any]) -> Any:
    """The sharding that copies an array to every device of the mesh the model's variables
    live on, when they span several devices (``keras.distribution``); else None."""
    sharding = getattr(values[0], "sharding", None) if values else None
    if sharding is None or len(sharding.device_set) < 2 or not hasattr(sharding, "mesh"):
        return None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())


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
        replicated = _replicated(values)
        compiled = self._compiled.get(replicated)
        if compiled is None:
            where = {} if replicated is None else {"out_shardings": replicated}
            compiled = self._compiled[replicated] = jax.jit(self._fn, **where)
        return compiled(values, *_placed(args, replicated))


def _stateless(fn: Callable[..., Any], model: Any, *, compiled: bool = True) -> Callable[..., Any]:
    """``fn`` as a function of the model's variable values (first argument) and its own;
    ``compiled``: traced by ``jax.jit``, with the host's depthwise convolutions."""
    variables = [] if model is None else model.trainable_variables + model.non_trainable_variables
    host = compiled and not BACKEND.accelerated()

    def stateless(values: list[Any], *args: Any) -> Any:
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            with host_depthwise_convolutions if host else contextlib.nullcontext():
                return fn(*args)

    return stateless


def depthwise_conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
                   data_format: str | None = None, dilation_rate: Any = 1) -> Any:
    """Keras' ``depthwise_conv`` (any number of spatial axes, strides, dilation, depth
    multiplier, either data format) as a sum of shifted products, one per kernel position.

    XLA's CPU backend runs a grouped convolution (one group per channel) several times
    slower than the same products, which it fuses into one loop: MobileNetV2's forward
    pass at 128 px x 4 probes took 85 ms, 13 ms this way (2 cores). The same products,
    summed in another order and in float32 at least: equal to rounding.
    """
    data_format = data_format or keras.config.image_data_format()
    result = jnp.result_type(inputs.dtype, kernel.dtype)
    n = inputs.ndim - 2
    if data_format == "channels_first":
        inputs = jnp.moveaxis(inputs, 1, -1)
    strides, dilation = _per_axis(strides, n), _per_axis(dilation_rate, n)
    *window, channels, multiplier = kernel.shape
    spatial = inputs.shape[1:-1]
    reach = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
    if padding.lower() == "same":
        out = [-(-size // s) for size, s in zip(spatial, strides, strict=True)]
        axes = zip(out, strides, reach, spatial, strict=True)
        pads = [max((o - 1) * s + r - size, 0) for o, s, r, size in axes]
        inputs = jnp.pad(inputs, [(0, 0), *[(p // 2, p - p // 2) for p in pads], (0, 0)])
    else:
        out = [max(0, (size - r) // s + 1) for size, r, s in zip(spatial, reach, strides, strict=True)]
    if 0 in out:  # a window larger than the input: nothing to slide over, as XLA's empty result
        empty = jnp.zeros((inputs.shape[0], *out, channels * multiplier), result)
        return jnp.moveaxis(empty, -1, 1) if data_format == "channels_first" else empty
    dtype = jnp.promote_types(inputs.dtype, jnp.float32)
    if multiplier > 1:  # output channel c * multiplier + j reads input channel c
        inputs = jnp.repeat(inputs, multiplier, axis=-1)
    kernel = jnp.reshape(kernel, (*window, channels * multiplier)).astype(dtype)
    total = None
    for offset in itertools.product(*(range(k) for k in window)):
        start = (0, *(o * d for o, d in zip(offset, dilation, strict=True)), 0)
        ends = (b + (o - 1) * s + 1 for b, o, s in zip(start[1:-1], out, strides, strict=True))
        limit = (inputs.shape[0], *ends, inputs.shape[-1])
        term = jax.lax.slice(inputs, start, limit, (1, *strides, 1)).astype(dtype) * kernel[offset]
        total = term if total is None else total + term
    total = total.astype(result)
    return jnp.moveaxis(total, -1, 1) if data_format == "channels_first" else total


def _per_axis(value: Any, n: int) -> tuple[int, ...]:
    return (int(value),) * n if np.ndim(value) == 0 else tuple(int(v) for v in value)


def _host_depthwise(original: Callable[..., Any], inputs: Any, kernel: Any, strides: Any = 1,
                    padding: str = "valid", data_format: str | None = None, dilation_rate: Any = 1,
                    **more: Any) -> Any:
    if more or str(padding).lower() not in ("same", "valid"):  # what Keras alone knows
        return original(inputs, kernel, strides, padding, data_format, dilation_rate, **more)
    return depthwise_conv(inputs, kernel, strides, padding, data_format, dilation_rate)


host_depthwise_convolutions = Substitute("keras.src.backend.jax.nn", "depthwise_conv", _host_depthwise)
"""While tracing on the CPU: Keras' JAX ``depthwise_conv`` (which ``SeparableConv`` calls
too) is :func:`depthwise_conv`, on the thread that traces actlog's own functions only."""


class _Function(Compiled):
    def __init__(self, fn: Callable[..., Any], model: Any, eager: bool) -> None:
        self._model = model
        self._counted = Counted(_stateless(fn, model, compiled=not eager))
        self._eager = eager
        self._jitted = _Jitted(self._counted, model)

    @property
    def traces(self) -> int:
        return 0 if self._eager else self._counted.count

    def __call__(self, *args: Any) -> Any:
        if self._eager:
            values = _values(self._model)
            out = self._counted(values, *_placed(args, _replicated(values)))
        else:
            out = self._jitted(*args)
        # Wait for the forward pass: the next training step donates the buffers it reads
        # (a function of no model's variables reads none of them).
        return out if self._model is None else jax.block_until_ready(out)


class JaxBackend(Backend):
    name = "jax"

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True) -> Compiled:
        return _Function(fn, model, eager)

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        return _Jitted(jax.value_and_grad(_stateless(fn, model), argnums=1), model)

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
