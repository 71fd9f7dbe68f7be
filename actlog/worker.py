"""The background half of an event: a bounded queue and one worker thread.

The training thread hands each event over with :meth:`Worker.submit` and goes
back to training; the worker turns it into grids, statistics, PNGs and one
record, in the order submitted (so steps are written in order, each once).
``zlib`` and the large numpy operations release the GIL, so this overlaps
training.

- **Bounded**: at most ``max_pending`` events wait. When the queue is full,
  ``on_full="wait"`` blocks the training thread until one is done (nothing is
  lost); ``"skip"`` drops the new event and says so (the callback counts it in
  ``misses["skipped"]``).
- **Drained**: :meth:`flush` waits until every accepted event is done;
  :meth:`close` flushes (up to a timeout) and stops the thread. An interpreter
  that exits, also after Ctrl-C, drains every open worker first (``atexit``),
  each within its timeout. A SIGKILL loses what was still queued; everything
  written before is complete on disk.
- **Faults** inside the job are the job's business (the callback turns them
  into warnings and ``misses`` on the training thread); the worker itself
  never dies of one.

``Worker(background=False)`` runs every job inline, on the caller's thread.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from actlog.checks import check_choice

ON_FULL = ("wait", "skip")

_OPEN: weakref.WeakSet[Worker] = weakref.WeakSet()


class Worker:
    """Runs ``job()`` callables in submission order, in the background.

    Args:
        background: False runs each job inline in :meth:`submit`.
        max_pending: events that may wait in the queue.
        on_full: ``"wait"`` or ``"skip"`` (see module docstring).
        drain_timeout: seconds :meth:`close` (and interpreter exit) wait at most.
        on_error: called (in the worker) with an exception a job let escape.
    """

    def __init__(
        self,
        *,
        background: bool = True,
        max_pending: int = 2,
        on_full: str = "wait",
        drain_timeout: float = 60.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.background = background
        self.on_full = check_choice("on_full", on_full, ON_FULL)
        self.drain_timeout = drain_timeout
        self.on_error = on_error
        self._queue: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any], *, wait: bool = False) -> bool:
        """Queue ``job``; False when it was skipped because the queue was full.

        ``wait=True`` waits for room whatever ``on_full`` says (the later parts of
        an event already accepted).
        """
        if not self.background:
            self._run(job)
            return True
        self._start()
        if self.on_full == "skip" and not wait:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return False
            return True
        self._queue.put(job)
        return True

    def room(self) -> int:
        """Jobs that can be queued now without waiting."""
        if not self.background:
            return 2**31
        return self._queue.maxsize - self._queue.qsize()

    @property
    def pending(self) -> int:
        """Jobs accepted and not finished yet."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted job is done; False if ``timeout`` ran out first."""
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Drain (within ``timeout``, default ``drain_timeout``) and stop the thread.

        Returns False when jobs were still pending at the timeout (they are
        abandoned with the daemon thread).
        """
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        drained = self._drain(thread, self.drain_timeout if timeout is None else timeout)
        _OPEN.discard(self)
        return drained

    def _drain(self, thread: threading.Thread, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                return False
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="actlog-writer", daemon=True)
            self._thread.start()
            _OPEN.add(self)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._run(job)
            finally:
                self._queue.task_done()

    def _run(self, job: Callable[[], Any]) -> None:
        try:
            job()
        except BaseException as err:  # noqa: BLE001 - reported, never fatal to the thread
            if self.on_error is None:
                raise
            self.on_error(err)


@atexit.register
def _drain_at_exit() -> None:
    for worker in list(_OPEN):
        worker.close()
