"""The one backend-specific piece: compiling the probe function and copying its results.

Everything before the probe function (choosing layers) is Keras; everything
after it (grids, statistics, writing) is numpy. What differs per Keras backend
lives in one small module each, behind :class:`Backend`:

- :mod:`~actlog.backends.tensorflow`: ``tf.function`` with a fixed input signature
  (on the host, the large parts of :meth:`Backend.compile` run their forward passes eagerly).
- :mod:`~actlog.backends.jax`: ``jax.jit`` over a stateless call with the
  current variable values (mid-epoch, written back by the model's public
  ``jax_state_sync()`` first).
- :mod:`~actlog.backends.torch`: under ``torch.no_grad()``, captured once in a CUDA
  graph on a GPU, traced once into a graph of PyTorch ops on the CPU.

Every backend places the probe function's two halves alike (:meth:`Backend.split`): on
an accelerator the reductions run on the device, after the forward pass and before the
copy of their few bytes; on the host the training thread runs only the forward pass,
and the background reduces the raw outputs.

The optional activation maximisation (:mod:`actlog.maximize`) also asks each
backend for a gradient with respect to the input (:meth:`Backend.gradient`):
``tf.GradientTape``, ``jax.value_and_grad``, torch autograd.

A backend module is imported only when it is the one Keras runs on, so a JAX
or PyTorch user never loads TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

SUPPORTED = ("tensorflow", "jax", "torch")


class Compiled:
    """A compiled probe function.

    Attributes:
        traces: how many times the Python function was traced (compiled);
            0 where it runs eagerly.
    """

    traces: int = 0

    def __call__(self, *args: Any) -> Any:
        raise NotImplementedError


class Backend:
    """How one Keras backend compiles, runs and copies the probe function."""

    name: str = ""

    def compile(self, fn: Callable[..., Any], model: Any, args: tuple, *, eager: bool,
                replay: bool = True, large: bool = False) -> Compiled:
        """Compile ``fn(*args)`` once for ``model`` (the model being trained; None for a
        function that reads no variable of it).

        ``args`` give the shapes and dtypes of every call (tensors, or ``keras.KerasTensor``
        specs that allocate nothing); they are never run.
        ``eager`` runs ``fn`` as it is (a model with ``run_eagerly=True``).
        ``replay``: ``fn`` runs at every event on a few probes, where launching its ops costs
        more than running them: PyTorch captures it once, in a CUDA graph on a GPU (which keeps
        its memory between calls), as a traced graph of ops on the CPU. False for a function
        streamed over large batches (the atlas), whose memory would stay reserved for little
        gain, and for each of several parts.
        ``large``: ``fn`` is one of several parts over large activations, whose ops gain
        little from compiling (TensorFlow on the host runs it op by op: a traced function
        keeps megabytes of graph and runtime per part).
        """
        raise NotImplementedError

    def gradient(self, fn: Callable[..., Any], model: Any) -> Callable[..., tuple[Any, Any]]:
        """``step(x, *args) -> (fn(x, *args), d fn / d x)`` for a scalar ``fn``, through the
        backend's own differentiation, with ``model``'s current weights held fixed; compiled
        where the backend compiles (once: every call has the shapes of the first)."""
        raise NotImplementedError

    def fetch(self, tree: Any) -> Callable[[], Any]:
        """Start copying ``tree`` (device arrays) to the host; the result gives numpy arrays.

        Called on the training thread right after the probe function; the
        result is called in the background.
        """
        raise NotImplementedError

    def is_chief(self, model: Any) -> bool:
        """Whether this process writes (only one does under multi-worker training); ``model``
        None before the model is known (the logger's constructor creates ``log_dir`` only on
        the process that writes)."""
        raise NotImplementedError

    def lockstep(self, model: Any) -> bool:
        """Whether every process runs each compiled function at the same events, the chief and
        the others alike: where ``model`` spans the devices of several processes (multi-process
        JAX), a compiled function is one computation over all of them, and a process that
        skipped one would leave the others waiting in its collectives. Elsewhere only the
        chief computes."""
        return False

    def check_same(self, what: str, arrays: list[Any]) -> None:
        """Raise ``ValueError`` unless every process holds the same numpy ``arrays`` (the
        probes, the atlas pool); called by every process of a :meth:`lockstep` model, once
        per training run."""

    def spread(self, batch: Any, model: Any) -> Any:
        """``batch`` (backend tensors: independent samples) split over the devices that hold
        ``model``'s batches, where the model spans several (``keras.distribution``): each
        device computes its share, each process reads its own rows. As it is elsewhere."""
        return batch

    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process of a :meth:`lockstep` model (a collective:
        every process calls it at the same point)."""
        return flag

    def split(self, model: Any, compile: Callable[[Callable[..., Any]], Compiled],
              forward: Callable[..., Any], fused: Callable[..., Any] | None,
              reduce: Callable[..., Any], room: threading.Semaphore,
              ) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """Where one part of the probe function runs: ``(device, host)``.

        ``forward(inputs, channels, previous) -> (outputs, carry)`` is the part's forward
        pass; ``fused`` the same with the reductions inside, ``-> (results, carry)`` (None
        where they compile apart: several parts); ``reduce(outputs, channels, previous)``
        the reductions compiled apart; ``compile(fn)`` compiles either for this part;
        ``room``, shared by the parts of one probe function, bounds what waits for ``host``.

        ``device(inputs, channels, previous) -> (handoff, carry)`` runs on the training
        thread; ``host(handoff, channels, previous) -> results`` (one dict per layer, see
        :class:`actlog.probe.ProbeFunction`) anywhere after it, in the background, with the
        ``previous`` sketches known then. A handoff is a list of one dict per layer: the
        results, or ``{"output": raw output}`` whose reductions wait for ``host``.
        """
        if self._accelerated() or self.lockstep(model):
            # Only the results' few bytes are copied; in lockstep every process runs each
            # compiled function (a collective) on its training thread, in the same order.
            return _on_device(compile, forward, fused, reduce)
        return _on_host(compile, forward, reduce, room)

    def _accelerated(self) -> bool:
        """Whether the model runs on an accelerator (GPU, TPU) rather than the host's memory:
        asked by the backends alone."""
        raise NotImplementedError

    def part_bytes(self, *, segments: bool) -> int:
        """How many bytes of raw activations (all probes) one part of the probe function
        reaches at most, unless a single layer is larger; ``segments``: the parts are
        segments of one graph, each starting where the previous stopped (smaller parts then
        cost no extra forward pass). See :data:`actlog.probe.PART_BYTES`."""
        from actlog import probe

        if self._accelerated():
            # Device memory is plentiful and the host never sees the raw activations,
            # while each extra part is another forward pass.
            return probe.ACCELERATOR_PART_BYTES
        return probe.SEGMENT_BYTES if segments else probe.PART_BYTES

    @property
    def ops(self) -> Any:
        """The ``xp`` namespace the probe function's reductions use: ``keras.ops``, or the
        backend's own functions where an eager backend pays for every op's dispatch."""
        import keras

        return keras.ops


def _given(handoff: Any, channels: Any, previous: Any) -> Any:
    return handoff


def _on_device(compile: Callable[..., Any], forward: Callable[..., Any], fused: Callable[..., Any] | None,
               reduce: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """:meth:`Backend.split` on the device: forward pass and reductions on the training thread."""
    if fused is not None:
        return compile(fused), _given
    compiled = compile(forward)

    def device(inputs: Any, channels: Any, previous: Any) -> tuple[Any, Any]:
        outputs, carry = compiled(inputs, channels, previous)
        return reduce(outputs, channels, previous), carry

    return device, _given


def _on_host(compile: Callable[..., Any], forward: Callable[..., Any], reduce: Callable[..., Any],
             room: threading.Semaphore) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """:meth:`Backend.split` on the host: the training thread runs the forward pass and hands
    the raw outputs on; the background reduces them. As many outputs wait there as ``room``
    holds (one part's): the next part's hand-over waits for it."""
    compiled = compile(forward)

    def device(inputs: Any, channels: Any, previous: Any) -> tuple[Any, Any]:
        outputs, carry = compiled(inputs, channels, previous)
        room.acquire()
        return [{"output": o} for o in outputs], carry

    def host(handoff: Any, channels: Any, previous: Any) -> Any:
        try:
            return reduce([h["output"] for h in handoff], channels, previous)
        finally:
            room.release()

    return device, host


class Counted:
    """Wraps a Python function to count how often a compiler traces it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.count = 0

    def __call__(self, *args: Any) -> Any:
        self.count += 1
        return self.fn(*args)


def iterations(model: Any, default: int) -> int:
    """The optimizer's step count, read without a JAX state sync; ``default`` if there is none."""
    import keras

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return default
    try:
        return int(keras.ops.convert_to_numpy(optimizer.iterations))
    except Exception:  # noqa: BLE001 - a model with its own optimizers (GAN) or none built yet
        return default


def missing_backend(error: ImportError) -> str | None:
    """What to do when Keras could not import its backend (``error``), or None for another error.

    Keras runs on TensorFlow when ``KERAS_BACKEND`` is unset (unless ``~/.keras/keras.json``
    says otherwise), and then fails on a JAX or PyTorch machine with only "No module named
    'tensorflow'": say which variable to set, and to what.
    """
    backend = (getattr(error, "name", None) or "").split(".")[0]
    if backend not in SUPPORTED:
        return None
    chosen = os.environ.get("KERAS_BACKEND")
    why = f"KERAS_BACKEND={chosen}" if chosen else "KERAS_BACKEND is unset, and Keras' configured backend"
    installed = [name for name in SUPPORTED if name != backend and importlib.util.find_spec(name)]
    other = (f"set KERAS_BACKEND to a backend installed here ({' or '.join(installed)}) before Python "
             f"starts: export KERAS_BACKEND={installed[0]}" if installed else
             "install a backend: pip install 'keras-actlog[jax]' (or [torch], [tensorflow])")
    return (
        f"Keras could not import its backend: {why} is {backend!r}, which is not installed here "
        f"({type(error).__name__}: {error}). To run on another backend, {other}. To run on {backend}: "
        f"pip install 'keras-actlog[{backend}]'."
    )


def current() -> Backend:
    """The :class:`Backend` of the Keras backend in use."""
    import keras

    name = keras.backend.backend()
    if name not in SUPPORTED:
        raise ValueError(
            f"actlog runs on the Keras backends {list(SUPPORTED)}; Keras runs on {name!r}. "
            "Set KERAS_BACKEND to one of them before importing keras."
        )
    return importlib.import_module(f"actlog.backends.{name}").BACKEND
