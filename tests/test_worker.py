"""The background worker on its own: order, bounds, flush, drain, errors."""

from __future__ import annotations

import threading
import time

import pytest

from actlog.worker import Worker


def test_jobs_run_in_order_off_the_calling_thread():
    done, threads = [], set()
    worker = Worker(max_pending=3)
    for i in range(20):
        worker.submit(lambda i=i: (done.append(i), threads.add(threading.current_thread().name)))
    assert worker.flush(timeout=10)
    assert done == list(range(20)) and threads == {"actlog-writer"}
    assert worker.close()


def test_inline_when_not_in_the_background():
    done = []
    worker = Worker(background=False)
    worker.submit(lambda: done.append(threading.current_thread().name))
    assert done == [threading.current_thread().name] and worker.pending == 0


def test_a_full_queue_waits_or_skips():
    gate, taken = threading.Event(), threading.Event()
    waiting = Worker(max_pending=1)
    waiting.submit(lambda: (taken.set(), gate.wait()))
    assert taken.wait(5)  # taken by the thread: the queue is empty again
    waiting.submit(lambda: None)  # fills the queue
    blocked = threading.Thread(target=waiting.submit, args=(lambda: None,))
    blocked.start()
    time.sleep(0.1)
    assert blocked.is_alive()  # "wait": the third submit blocks until there is room
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive() and waiting.flush(5)

    gate.clear()
    taken.clear()
    skipping = Worker(max_pending=1, on_full="skip")
    assert skipping.submit(lambda: (taken.set(), gate.wait()))
    assert taken.wait(5)
    assert skipping.submit(lambda: None)
    assert skipping.submit(lambda: None) is False  # dropped, and said so
    gate.set()
    assert skipping.flush(5) and skipping.close()


def test_close_drains_the_queue_or_gives_up_when_its_timeout_passes():
    """``Worker.close(timeout)`` as an API: True once every job ran, False (jobs left) while
    jobs held at a gate outlast the timeout. No speed is measured."""
    done = []
    worker = Worker(max_pending=8)
    for i in range(3):
        worker.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    assert worker.close(timeout=10) and done == [0, 1, 2]
    gate = threading.Event()
    stuck = Worker(max_pending=8)
    for _ in range(5):
        stuck.submit(gate.wait)
    # The jobs cannot end before the gate opens: close returns at its timeout, jobs left behind.
    assert stuck.close(timeout=0.3) is False
    assert stuck.pending >= 4
    gate.set()


def test_an_escaping_error_is_handed_over_and_the_thread_goes_on():
    errors, done = [], []
    worker = Worker(on_error=errors.append)
    worker.submit(lambda: 1 / 0)
    worker.submit(lambda: done.append("after"))
    assert worker.flush(5)
    assert [type(e) for e in errors] == [ZeroDivisionError] and done == ["after"]


def test_on_full_is_checked():
    with pytest.raises(ValueError, match=r"Unknown on_full 'drop'\. Accepted: \['wait', 'skip'\]"):
        Worker(on_full="drop")
