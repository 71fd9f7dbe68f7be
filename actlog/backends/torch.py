"""PyTorch: the probe function runs under ``torch.no_grad()``, captured once and replayed:
a CUDA graph on a GPU, a graph of PyTorch ops on the CPU.

Keras' PyTorch trainer updates the variables in place, so a capture reads the
current weights (:class:`_Captured`). The function is never ``torch.compile``d: it
runs a handful of probes once every N epochs, where minutes of compilation do not pay.

On a GPU it is captured in a CUDA graph (:class:`_Graph`): run eagerly, Python
launches each of an event's few thousand kernels one by one (ResNet50's 53 layers:
about 140 ms of the training thread for a few ms of GPU work), where a replay
launches them all at once. The results then start their copy to pinned host
memory, and the background waits for it.

On the CPU, where nothing is copied and no op fuses with another, the training
thread runs only the forward pass, traced once into a graph of the PyTorch ops it
ran (:class:`_Traced`): a replay runs them without Keras' Python. The reductions run
eagerly in the background (:meth:`TorchBackend.reduces_later`), calling torch
directly (:class:`_TorchOps`): bound by their passes over memory, they gain nothing
from a trace.
Convolutions and max pooling run on channels-last views (:func:`_conv`), and a
functional model calls Keras' built-in layers without ``Layer.__call__`` where that
changes nothing (:func:`_layer_call`): fewer ops in the trace, and less Python
where the function runs eagerly (several parts, ``run_eagerly=True``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import keras
import torch
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode

from actlog.backends import Backend, Compiled, Substitute


class _Function(Compiled):
    """``fn`` run eagerly without gradients; ``host``: on the CPU (:data:`host_convolutions`,
    :data:`host_pooling`, :data:`direct_layer_calls`)."""

    traces = 0

    def __init__(self, fn: Callable[..., Any], *, host: bool = False) -> None:
        self._fn = fn
        self._host = host

    def __call__(self, *args: Any) -> Any:
        if not self._host:
            with torch.no_grad():
                return self._fn(*args)
        with torch.no_grad(), host_convolutions, host_pooling, direct_layer_calls:
            return self._fn(*args)


def _channels_first_view(inputs: Any, data_format: str | None) -> Any:
    """A channels-last 2-D or 3-D ``inputs`` viewed as channels-first, which is PyTorch's
    ``channels_last`` memory format already; None for anything else."""
    data_format = data_format or keras.config.image_data_format()
    if not isinstance(inputs, torch.Tensor) or data_format != "channels_last" or inputs.ndim not in (4, 5):
        return None
    view = torch.movedim(inputs, -1, 1)
    layout = torch.channels_last if inputs.ndim == 4 else torch.channels_last_3d
    return view if view.is_contiguous(memory_format=layout) else None


def _conv(original: Callable[..., Any], inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
          data_format: str | None = None, dilation_rate: Any = 1, **more: Any) -> Any:
    """Keras' PyTorch ``conv`` without its two copies of a channels-last input.

    Keras copies such an input to channels-first order, then again to PyTorch's
    ``channels_last`` memory format for the convolution. Channels-last data viewed as
    channels-first is in that format already: the same convolution runs on the view,
    with the same bytes out (tested). MobileNetV2's forward pass at 128 px x 4 probes:
    69 -> 56 ms on 2 cores.
    """
    view = None if more else _channels_first_view(inputs, data_format)
    if view is not None:
        return torch.movedim(original(view, kernel, strides, padding, "channels_first", dilation_rate), 1, -1)
    return original(inputs, kernel, strides, padding, data_format, dilation_rate, **more)


host_convolutions = Substitute("keras.src.backend.torch.nn", "conv", _conv)
"""While actlog's own functions run on the CPU: Keras' PyTorch ``conv`` (which its depthwise
and separable convolutions call too) is :func:`_conv`, on that thread only."""


def _max_pool(original: Callable[..., Any], inputs: Any, pool_size: Any, strides: Any = None,
              padding: str = "valid", data_format: str | None = None) -> Any:
    """Keras' PyTorch ``max_pool`` without its copy of a channels-last input to channels-first
    order: PyTorch pools its ``channels_last`` format as it is, and a maximum is the same
    value whichever order it is taken in (tested). The smaller output is copied back to
    Keras' own layout. The classic MNIST model's probe forward pass: about 2.0 -> 1.7 ms."""
    view = _channels_first_view(inputs, data_format) if padding == "valid" else None
    if view is not None:
        pool = torch.nn.functional.max_pool2d if view.ndim == 4 else torch.nn.functional.max_pool3d
        # Returned in Keras' own layout (a channels-last view of channels-first memory): a
        # reduction after it (global average pooling) then adds in the same order.
        return torch.movedim(pool(view, kernel_size=pool_size, stride=strides).contiguous(), 1, -1)
    return original(inputs, pool_size, strides, padding, data_format)


host_pooling = Substitute("keras.src.backend.torch.nn", "max_pool", _max_pool)
""":data:`host_convolutions` for Keras' PyTorch ``max_pool`` (:func:`_max_pool`)."""


@functools.cache
def _plain_layers() -> frozenset[type]:
    """Keras' built-in layers whose ``__call__`` adds nothing to ``call`` where :func:`_direct` holds."""
    names = (
        "Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose DepthwiseConv1D "
        "DepthwiseConv2D SeparableConv1D SeparableConv2D Dense BatchNormalization LayerNormalization "
        "GroupNormalization Activation ReLU LeakyReLU ELU Softmax Add Subtract Multiply Average Maximum "
        "Minimum Concatenate ZeroPadding1D ZeroPadding2D ZeroPadding3D Cropping1D Cropping2D Cropping3D "
        "UpSampling1D UpSampling2D UpSampling3D MaxPooling1D MaxPooling2D MaxPooling3D AveragePooling1D "
        "AveragePooling2D AveragePooling3D GlobalAveragePooling1D GlobalAveragePooling2D "
        "GlobalAveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D Flatten Reshape "
        "Permute Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D Identity"
    )
    return frozenset(getattr(keras.layers, name) for name in names.split() if hasattr(keras.layers, name))


def _layer_call(original: Callable[..., Any], operation: Any, **context: Any) -> Callable[..., Any]:
    """Keras' ``operation_fn`` of a functional model (how it calls each node), with Keras'
    own built-in layers called through ``layer.call`` rather than ``Layer.__call__``.

    In eager PyTorch, ``Layer.__call__`` (input conversion, masks, autocast, name scopes,
    ``torch.nn.Module`` hooks) costs more Python than a small layer's arithmetic:
    MobileNetV2's forward pass at 128 px x 4 probes, 58 -> 37 ms on 2 cores. It is
    skipped only where it would do nothing, checked at each call (:func:`_direct`);
    anything else takes Keras' path. Same bytes (tested).
    """
    keras_call = original(operation, **context)
    try:
        if type(operation) not in _plain_layers() or not _direct(operation):
            return keras_call
        call = operation.call
        params = set(operation.call_signature_parameters)
        contexts = set(operation._call_context_args)
        takes = params & contexts
    except AttributeError:  # another Keras: its own path
        return keras_call
    extra = {name: context[name] for name in takes if context.get(name) is not None}
    if len(extra) < len(takes):  # Keras would resolve the rest (from an outer call, a default)
        return keras_call

    def direct(*args: Any, **kwargs: Any) -> Any:
        # As Keras does, a context argument call() does not take is dropped; the other keyword
        # arguments the graph recorded must be None (``mask=None``) or given by the context.
        own = {name: value for name, value in kwargs.items() if name in params}
        recorded = all(name in contexts for name in kwargs.keys() - own.keys()) and all(
            value is None or name in extra for name, value in own.items())
        if recorded and all(_plain_tensor(a) for a in _flat(args)):
            return call(*args, **{**own, **extra})
        return keras_call(*args, **kwargs)

    return direct


def _direct(layer: Any) -> bool:
    """Whether ``Layer.__call__`` would only call ``layer.call`` (on float32 tensors without
    masks, checked by the caller): built, float32 throughout, no quantization,
    rematerialization, activity regularizer, module hooks, distribution or autocast."""
    modules = torch.nn.modules.module
    return (
        layer.built
        and layer.dtype_policy.name == "float32"
        and getattr(layer, "quantization_mode", None) is None
        and not getattr(layer, "_remat_mode", None)
        and layer.activity_regularizer is None
        and not (layer._forward_hooks or layer._forward_pre_hooks
                 or modules._global_forward_hooks or modules._global_forward_pre_hooks)
        and keras.distribution.distribution() is None
        and keras.src.backend.get_autocast_scope() is None
    )


def _plain_tensor(value: Any) -> bool:
    """A float32 tensor without a Keras mask: what ``Layer.__call__`` would pass on as it is."""
    return (isinstance(value, torch.Tensor) and value.dtype == torch.float32
            and getattr(value, "_keras_mask", None) is None)


def _flat(args: tuple) -> list[Any]:
    return [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]


direct_layer_calls = Substitute("keras.src.models.functional", "operation_fn", _layer_call)
"""While actlog's own functions run on the CPU: a functional model calls Keras' built-in
layers through ``layer.call`` (:func:`_layer_call`), on that thread only."""


class _Captured(Compiled):
    """``fn`` captured at its first call with each argument shapes, then replayed: a CUDA
    graph (:class:`_Graph`) or a graph of PyTorch's own ops on the CPU (:class:`_Traced`).

    A capture reads the model's weights where they are: Keras' PyTorch optimizers and
    ``assign`` update them in place, so it stays valid until a weight's storage moves,
    and is captured again then. A function that cannot be captured runs eagerly from then
    on, with a warning; so does a call on arguments the capture is not for. Where the eager
    run fails too, its error is raised as it is, without the warning, and the next call
    tries to capture again.

    Attributes:
        traces: how many times ``fn`` was captured (once per argument shapes, and again
            when a weight moved); 0 while it runs eagerly.
        eager_reason: why it runs eagerly after a failed capture, else None.
    """

    _capturing = ""
    _eagerly = ""
    """For the warning: what a capture is, and what running eagerly does instead."""

    def __init__(self, fn: Callable[..., Any], model: Any, *, host: bool = False) -> None:
        self._fn = fn
        self._eager = _Function(fn, host=host)
        self._variables = [] if model is None else list(model.variables)
        self._captures: dict[tuple, Any] = {}
        self._weights: tuple[int, ...] | None = None
        self.traces = 0
        self.eager_reason: str | None = None

    def __call__(self, *args: Any) -> Any:
        leaves, structure = pytree.tree_flatten(args)
        if self.eager_reason is not None or not self._captures_for(leaves):
            return self._eager(*args)
        weights = tuple(v.value.data_ptr() for v in self._variables)
        if weights != self._weights:
            self._captures.clear()
            self._weights = weights
        # The structure too: the same tensors in other lists are arguments a graph cannot take.
        signature = (structure, *(
            (tuple(t.shape), t.dtype, t.device) if isinstance(t, torch.Tensor) else repr(t) for t in leaves))
        if signature not in self._captures:
            try:
                self._captures[signature] = self._capture(args, leaves)
            except Exception as err:  # noqa: BLE001 - an op the capture refuses: run eagerly
                self._captures.clear()
                result = self._eager(*args)  # the function's own error, if it has one, is raised here
                self.eager_reason = f"{type(err).__name__}: {err}"
                warnings.warn(f"actlog: the probe function could not be {self._capturing}, so it "
                              f"runs eagerly, {self._eagerly} (slower per event). PyTorch said: "
                              f"{self.eager_reason}", stacklevel=2)
                return result
            self.traces += 1
        return self._replay(self._captures[signature], args, leaves)

    def _captures_for(self, leaves: list[Any]) -> bool:
        """Whether the capture is for these arguments (else they run eagerly)."""
        raise NotImplementedError

    def _capture(self, args: Any, leaves: list[Any]) -> Any:
        raise NotImplementedError

    def _replay(self, capture: Any, args: Any, leaves: list[Any]) -> Any:
        raise NotImplementedError


class _Traced(_Captured):
    """``fn`` traced on the CPU into a graph of the PyTorch ops it ran (``make_fx``), which
    replays them without the Python that chose them: Keras' layers, ``keras.ops`` and
    actlog's own. MobileNetV2's forward pass at 128 px x 4 probes: 39 -> 30 ms on 2 cores,
    with the same kernels on the same tensors, so the same bytes (tested).

    The trace runs ``fn`` once for real and records its ops: Python values are fixed in the
    graph, as tracing fixes them in a ``tf.function`` or ``jax.jit``, and reading a value that
    can change in Python (a branch on an activation or a weight, ``.numpy()``) fails the
    trace (:class:`_ValueReads`): the graph would keep the value read. While it traces, PyTorch's
    FX marks the whole process as tracing, which a ``torch.compile``d function called
    from another thread then refuses.
    """

    _capturing = "traced into one graph of PyTorch ops"
    _eagerly = "calling every op from Python"

    def __init__(self, fn: Callable[..., Any], model: Any) -> None:
        super().__init__(fn, model, host=True)

    def _captures_for(self, leaves: list[Any]) -> bool:
        # Tensors on the CPU, and Python values a trace may fix (the signature holds them).
        return all(t.device.type == "cpu" if isinstance(t, torch.Tensor) else isinstance(t, _FIXED)
                   for t in leaves)

    def _capture(self, args: Any, leaves: list[Any]) -> Any:
        # Imported here: a PyTorch without it (the module is "experimental") runs eagerly, warned.
        from torch.fx.experimental.proxy_tensor import make_fx

        with torch.no_grad(), host_convolutions, host_pooling, direct_layer_calls, _ValueReads():
            return make_fx(self._fn)(*args)

    def _replay(self, capture: Any, args: Any, leaves: list[Any]) -> Any:
        with torch.no_grad():
            return capture(*args)


_FIXED = (bool, int, float, str, type(None))
"""Python values a traced graph may hold as constants."""


class _ValueReads(TorchFunctionMode):
    """While tracing: a read of a tensor's values in Python that the graph would keep as it
    was then fails the trace. ``make_fx`` refuses a number read from a value the arguments or
    the weights computed, and keeps one read from constants (the step counter of Keras' RNN
    loop), rightly; it does not see a copy out (``.numpy()``, ``.tolist()``), nor a number
    read from a weight itself."""

    _COPIES = frozenset((torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.__array__))
    _NUMBERS = frozenset((torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__,
                          torch.Tensor.__int__, torch.Tensor.__index__))

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        if func in self._COPIES or (func in self._NUMBERS and isinstance(args[0], torch.nn.Parameter)):
            raise RuntimeError(f"the function reads a tensor's value in Python (Tensor.{func.__name__}), "
                               "which a traced graph would keep as it is now")
        return func(*args, **(kwargs or {}))


class _Graph(_Captured):
    """``fn`` captured in a CUDA graph at its first call on GPU tensors, replayed after.

    Arguments are copied into the graph's own tensors, and its results out of them: every
    call returns tensors of its own, as an eager call does (the caller keeps one event's
    drift sketches while the next runs). The graph keeps its memory between calls: about
    the function's peak, the probes' activations. A function that waits for the host
    cannot be captured; a call on the CPU runs eagerly.
    """

    _capturing = "captured in a CUDA graph"
    _eagerly = "launching every kernel from the training thread"

    def _captures_for(self, leaves: list[Any]) -> bool:
        on_gpu = [isinstance(t, torch.Tensor) and t.is_cuda for t in leaves]
        return any(on_gpu) and all(on_gpu)

    def _replay(self, capture: Any, args: Any, leaves: list[Any]) -> Any:
        graph, inputs, outputs, structure, _ = capture
        changed = [(mine, given) for mine, given in zip(inputs, leaves, strict=True)
                   if mine.data_ptr() != given.data_ptr()]
        if changed:
            torch._foreach_copy_([mine for mine, _ in changed], [given for _, given in changed])
        graph.replay()
        results = [torch.empty_like(t) for t in outputs]
        if results:
            torch._foreach_copy_(results, outputs)
        return pytree.tree_unflatten(results, structure)

    def _capture(self, args: Any, leaves: list[Any]) -> tuple[Any, list[Any], list[Any], Any, list[Any]]:
        inputs = [t.clone() for t in leaves]
        static = pytree.tree_unflatten(inputs, pytree.tree_structure(args))
        # One eager run first, on a side stream as PyTorch asks: cuDNN and cuBLAS set up their
        # handles and workspaces outside the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            self._fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        host = _HostValues()
        stream = torch.cuda.current_stream()
        try:
            # thread_local: the background thread's copies and waits may go on during the capture.
            with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"), host:
                out = self._fn(*static)
        finally:
            # A failed capture raises again as it ends, before torch.cuda.graph gives the thread
            # its stream back: training would go on on the capture's side stream.
            torch.cuda.set_stream(stream)
        outputs, structure = pytree.tree_flatten(out)
        if not all(isinstance(t, torch.Tensor) for t in outputs):
            raise TypeError(f"results must all be tensors, got {sorted({type(t).__name__ for t in outputs})}")
        return graph, inputs, outputs, structure, host.kept  # the graph reads host.kept at every replay


class _HostValues(TorchFunctionMode):
    """While capturing: a GPU tensor made from Python or numpy values becomes a fill, or a
    copy from pinned memory, both of which a graph holds. Keras' ops make one of every
    Python number they are given (``keras.ops.where(c, x, 0)``), and a copy from pageable
    memory cannot be captured. The values are fixed in the graph, as tracing fixes the
    Python values of a ``tf.function`` or ``jax.jit``."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if (func in (torch.as_tensor, torch.tensor) and args and not isinstance(args[0], torch.Tensor)
                and device is not None and torch.device(device).type == "cuda"):
            values = torch.as_tensor(args[0], dtype=kwargs.get("dtype"))
            if values.dim() == 0:
                return torch.full((), values.item(), dtype=values.dtype, device=device)
            pinned = values.pin_memory()
            self.kept.append(pinned)
            return pinned.to(device, non_blocking=True)
        return func(*args, **kwargs)


class _TorchOps:
    """The ``xp`` functions of :mod:`actlog.grid` and :mod:`actlog.stats`, in plain torch.

    Where PyTorch runs op by op (the reductions on the CPU, and anything not captured),
    ``keras.ops`` adds its conversions and checks to each of the few thousand small ops
    of an event: calling torch directly costs a fraction of that. Same IEEE float32 arithmetic: the grids'
    bytes equal numpy's, the sums agree to rounding (the test suite compares both). On
    the host, where reading a number costs no device sync, :meth:`all_finite` lets the
    reductions of a layer without NaN or Inf skip their masks: each mask is passes of its
    own over the activations in eager mode, which a compiled backend fuses away."""

    _DTYPES = {"float32": torch.float32, "uint8": torch.uint8, "int32": torch.int32, "bool": torch.bool}

    @staticmethod
    def take(x: Any, index: Any, axis: int) -> Any:
        before = (slice(None),) * (axis % x.ndim)
        n = index.numel()
        if index.device.type == "cpu" and index.ndim == 1 and n:
            # The first n channels (the default): a view, no copy. Reading a host index costs no sync.
            first = int(index[0])
            inside = 0 <= first and first + n <= x.shape[axis]
            if inside and torch.equal(index, torch.arange(first, first + n, dtype=index.dtype)):
                return x[(*before, slice(first, first + n))]
        # Indexing gathers along the last axis about 4x faster than torch.index_select.
        return x[(*before, index.long())]

    logical_not = staticmethod(torch.logical_not)
    logical_and = staticmethod(torch.logical_and)
    abs = staticmethod(torch.abs)
    sign = staticmethod(torch.sign)
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
        if axis is None:
            return torch.sum(x)
        axes = sorted({a % x.ndim for a in axis}) if isinstance(axis, (tuple, list)) else []
        if len(axes) < 2 or len(axes) != len(axis):  # one axis, none, or torch's own error
            return torch.sum(x, dim=axis)
        # One axis at a time: on the host, several times faster than one sum over
        # axes that are not adjacent (a sketch's blocks).
        for done, a in enumerate(axes):
            x = torch.sum(x, dim=a - done)
        return x

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

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True) -> Compiled:
        if eager or not replay:
            return _Function(fn, host=not self.accelerated())
        if torch.cuda.is_available():
            return _Graph(fn, model)
        if not self.accelerated():
            return _Traced(fn, model)
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
