"""PyTorch: the probe function runs under ``torch.no_grad()``, captured once and replayed:
a CUDA graph on a GPU, a graph of PyTorch ops on the CPU.

Keras' PyTorch trainer updates the variables in place, so a capture reads the
current weights (:class:`_Captured`). The function is never ``torch.compile``d: it
runs a handful of probes once every N epochs, where minutes of compilation do not pay.

On a GPU it is captured in a CUDA graph (:class:`_Graph`): run eagerly, Python
launches each of an event's few thousand kernels one by one (for a deep model,
most of an event's time on the training thread), where a replay
launches them all at once. The results then start their copy to pinned host
memory, and the background waits for it.

On the CPU, where nothing is copied and no op fuses with another, the training
thread runs only the forward pass, traced once into a graph of the PyTorch ops it
ran (:class:`_Traced`): a replay runs them without Keras' Python. The reductions run
eagerly in the background (:meth:`actlog.backends.Backend.split`), calling torch
directly (:class:`_TorchOps`): bound by their passes over memory, they gain nothing
from a trace.
The model runs as Keras runs it: actlog calls only public APIs of Keras and PyTorch,
so the code that is probed is the code that trains.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from actlog.backends import Backend, Compiled


class _Function(Compiled):
    """``fn`` run eagerly without gradients."""

    traces = 0

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        with torch.no_grad():
            return self._fn(*args)


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

    def __init__(self, fn: Callable[..., Any], model: Any) -> None:
        self._fn = fn
        self._eager = _Function(fn)
        self._variables = [] if model is None else list(model.variables)
        self._captures: dict[tuple, Any] = {}
        self._weights: tuple[int, ...] | None = None
        self.traces = 0
        self.eager_reason: str | None = None

    def __call__(self, *args: Any) -> Any:
        leaves, structure = _flatten(args)
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
    actlog's own, with the same kernels on the same tensors, so the same bytes (tested).

    The trace runs ``fn`` once for real and records its ops: Python values are fixed in the
    graph, as tracing fixes them in a ``tf.function`` or ``jax.jit``, and reading a value that
    can change in Python (a branch on an activation or a weight, ``.numpy()``) fails the
    trace (:class:`_ValueReads`): the graph would keep the value read. While it traces, PyTorch's
    FX marks the whole process as tracing, which a ``torch.compile``d function called
    from another thread then refuses.
    """

    _capturing = "traced into one graph of PyTorch ops"
    _eagerly = "calling every op from Python"

    def _captures_for(self, leaves: list[Any]) -> bool:
        # Tensors on the CPU, and Python values a trace may fix (the signature holds them).
        return all(t.device.type == "cpu" if isinstance(t, torch.Tensor) else isinstance(t, _FIXED)
                   for t in leaves)

    def _capture(self, args: Any, leaves: list[Any]) -> Any:
        # Imported here: a PyTorch without it (the module is "experimental") runs eagerly, warned.
        from torch.fx.experimental.proxy_tensor import make_fx

        with torch.no_grad(), _ValueReads():
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
        for mine, given in changed:
            mine.copy_(given)
        graph.replay()
        return _unflatten([t.clone() for t in outputs], structure)

    def _capture(self, args: Any, leaves: list[Any]) -> tuple[Any, list[Any], list[Any], Any, list[Any]]:
        inputs = [t.clone() for t in leaves]
        static = _unflatten(inputs, _flatten(args)[1])
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
        outputs, structure = _flatten(out)
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
        # Indexing gathers along the last axis faster than torch.index_select.
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
    einsum = staticmethod(torch.einsum)  # a layer's Gram matrix (actlog.similarity)

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


def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """The leaves of nested lists, tuples and dicts, and a hashable description of their
    nesting that :func:`_unflatten` rebuilds it from (dict keys in their order)."""
    leaves: list[Any] = []

    def spec(node: Any) -> Any:
        if isinstance(node, dict):
            return (dict, tuple(node), tuple(spec(value) for value in node.values()))
        if isinstance(node, (list, tuple)):
            return (type(node), len(node), tuple(spec(value) for value in node))
        leaves.append(node)
        return None

    structure = spec(tree)
    return leaves, structure


def _unflatten(leaves: list[Any], structure: Any) -> Any:
    items = iter(leaves)

    def build(spec: Any) -> Any:
        if spec is None:
            return next(items)
        kind, keys, children = spec
        if kind is dict:
            return {key: build(child) for key, child in zip(keys, children, strict=True)}
        return kind(build(child) for child in children)

    return build(structure)


def _map(fn: Callable[[Any], Any], tree: Any) -> Any:
    leaves, structure = _flatten(tree)
    return _unflatten([fn(leaf) for leaf in leaves], structure)


class TorchBackend(Backend):
    name = "torch"
    ops = _TorchOps()

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True, large: bool = False) -> Compiled:
        if eager or not replay or large:
            return _Function(fn)
        if torch.cuda.is_available():
            return _Graph(fn, model)
        if not self._accelerated():
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
        cuda = any(t.is_cuda for t in _flatten(tree)[0])
        if not cuda:
            return lambda: _map(lambda t: t.detach().numpy(), tree)
        copies = _map(lambda t: t.detach().to("cpu", non_blocking=True), tree)
        done = torch.cuda.Event()
        done.record()

        def result() -> Any:
            done.synchronize()
            return _map(lambda t: t.numpy(), copies)

        return result

    def _accelerated(self) -> bool:
        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps is not None and mps.is_available())

    def split(self, model: Any, compile: Callable[..., Any], forward: Callable[..., Any],
              fused: Callable[..., Any] | None, reduce: Callable[..., Any],
              room: threading.Semaphore) -> tuple[Any, Any]:
        device, host = super().split(model, compile, forward, fused, reduce, room)
        owner = threading.get_ident()

        def own_threads(handoff: Any, channels: Any, previous: Any) -> Any:
            if threading.get_ident() != owner:
                # One thread in the background: a second thread with an OpenMP team of its
                # own makes libgomp stop spinning between parallel regions (more threads than
                # cores), and every op of the training thread then waits to wake its team.
                torch.set_num_threads(1)  # this thread's OpenMP setting; training keeps its own
            return host(handoff, channels, previous)

        return device, own_threads

    def is_chief(self, model: Any) -> bool:
        distributed = torch.distributed
        return not (distributed.is_available() and distributed.is_initialized()) or (
            distributed.get_rank() == 0
        )


BACKEND = TorchBackend()
