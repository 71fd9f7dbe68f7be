"""Logging faults: counted, warned about once per kind, never fatal unless ``strict``.

A fault can happen on the training thread or in the background worker; either
way it is *reported* here and *delivered* on the training thread, at the next
callback: counted in ``misses``, warned about the first time its kind is met,
or raised as :class:`LoggingError` when the logger is ``strict``. So a
background fault reaches the user exactly as one on the training thread.
"""

from __future__ import annotations

import collections
import threading
import warnings
from collections.abc import Callable

KINDS = {
    "write": "the store failed (full disk, permissions, a failing remote)",
    "removed": "the event file or log directory disappeared; logging goes on in a new file",
    "nonfinite": "a layer's activations held NaN or Inf at an event",
    "skipped": "an event was dropped because the background queue was full (on_full='skip')",
    "internal": "anything else",
}


class LoggingError(RuntimeError):
    """A logging fault, raised by ``ActivationLogger(strict=True)`` instead of a warning.

    ``kind`` is the key it is counted under in ``ActivationLogger.misses``;
    ``error`` the original exception, if any (also its ``__cause__``, unless
    Keras' traceback filtering dropped it).
    """

    def __init__(self, kind: str, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.error = error


class Faults:
    """Faults reported from any thread, delivered on the training thread."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.misses: dict[str, int] = {}
        self._warned: set[str] = set()
        self._pending: collections.deque[tuple[str, str, BaseException | None]] = collections.deque()
        self._lock = threading.Lock()
        self.together: Callable[[bool], bool] | None = None
        """Set where every process must stop together (multi-process JAX, ``strict``):
        ``together(mine)`` tells every process whether any of them holds a fault (a collective,
        called by each process at the same events); a strict fault is raised only there,
        on every process at once, so that none is left waiting in a collective."""

    def report(self, kind: str, message: str, error: BaseException | None = None) -> None:
        """Note a fault; thread-safe. It counts once :meth:`deliver` runs."""
        with self._lock:
            self._pending.append((kind, message, error))

    def deliver(self, *, event: bool = False) -> None:
        """Count, warn about or raise every fault reported so far (training thread only).

        ``event``: called by every process at the same event (see :attr:`together`)."""
        if self.strict and self.together is not None:
            if not event:
                return
            with self._lock:
                mine = bool(self._pending)
            if not self.together(mine):
                return
            if not mine:
                raise LoggingError("internal", "actlog (internal): another process met a logging "
                                   "fault (see its own error); every process stops with it.")
        while True:
            with self._lock:
                if not self._pending:
                    return
                kind, message, error = self._pending.popleft()
            self.misses[kind] = self.misses.get(kind, 0) + 1
            if self.strict:
                with self._lock:
                    self._pending.clear()
                raise LoggingError(kind, f"actlog ({kind}): {message}.", error) from error
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(
                    f"actlog ({kind}): {message}. Training continues; further faults of this kind "
                    "are counted in ActivationLogger.misses without another warning.",
                    RuntimeWarning,
                    stacklevel=4,
                )


def classify(error: BaseException, what: str) -> tuple[str, str]:
    """``(kind, message)`` for an exception raised while logging ``what``."""
    from actlog.writer import EventFileLost

    detail = getattr(error, "message", None) or str(error)
    if isinstance(error, EventFileLost):
        return "removed", f"{detail}; {what} is lost"
    if isinstance(error, OSError) or type(error).__name__.endswith("OpError"):
        return "write", f"could not write {what}: {type(error).__name__}: {detail}"
    return "internal", f"could not log {what}: {type(error).__name__}: {error}"
