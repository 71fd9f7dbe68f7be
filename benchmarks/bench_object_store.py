"""What an event costs on an object store as a run grows, next to the local disk.

An object store cannot append: a writer that rewrote its event file at each
event would pay for the whole run at every event. actlog puts each event as an
object of its own, so the 200th event should cost what the 20th did. This
benchmark starts moto's S3 server (``moto[server]``) as a separate process on
127.0.0.1, points s3fs at it (``AWS_ENDPOINT_URL``), and logs ``--events``
epoch events of the MNIST example's ConvNet (``examples/mnist_convnet.py``,
layers ``conv_0`` and ``conv_1``, 4 probes) to a fresh ``s3://`` prefix and to a
local directory, driving ``ActivationLogger`` through the Keras hooks as
``fit`` does, with ``background=False`` so that each event's time is all of
its work (probe pass, grids, PNGs, the write). It prints, per store, the
median time of a whole event and of its write alone (``RunWriter.write``:
framing and the put or append), and the mean bytes written per event, over
the first 20 and the last 20 events, with their ratios (last / first; flat is
1.0). Medians, because a shared machine's pauses land in a mean.

```
python benchmarks/bench_object_store.py               # 200 events per store
```
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

LAYERS = ("conv_0", "conv_1")
WINDOW = 20


def _start_s3() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto's server did not start within 60 s")


def _timed_writes() -> list[float]:
    """Seconds of every ``RunWriter.write`` from now on, appended as they happen."""
    from actlog.writer import RunWriter

    spent: list[float] = []
    write = RunWriter.write

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return write(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    RunWriter.write = timed
    return spent


def _log(log_dir: str, events: int, probes: np.ndarray, sizes: Any, seed: int
         ) -> tuple[list[float], list[int], dict]:
    """Per event: seconds and bytes added to the run (``sizes()`` reads the run's total)."""
    import keras
    from mnist_convnet import build_classic_model

    import actlog

    keras.utils.set_random_seed(seed)  # the same weights, so the same grids, on each store
    model = build_classic_model()
    logger = actlog.ActivationLogger(log_dir, probes, layers=list(LAYERS), background=False)
    logger.set_model(model)
    logger.on_train_begin()
    logger.on_epoch_begin(0, {})  # step 0: the header (manifest, layer table, probe images)
    times, added, before = [], [], sizes()
    for epoch in range(events):
        start = time.perf_counter()
        logger.on_epoch_end(epoch, {})
        times.append(time.perf_counter() - start)
        after = sizes()
        added.append(after - before)
        before = after
        logger.on_epoch_begin(epoch + 1, {})
    misses = dict(logger.misses)
    logger.on_train_end()
    return times, added, misses


def _report(name: str, times: list[float], writes: list[float], added: list[int], misses: dict,
            objects: int) -> None:
    first, last = slice(0, WINDOW), slice(-WINDOW, None)
    writes = writes[-len(times):]  # the events timed (not step 0's)
    t0, t1 = 1000 * np.median(times[first]), 1000 * np.median(times[last])
    w0, w1 = 1000 * np.median(writes[first]), 1000 * np.median(writes[last])
    b0, b1 = np.mean(added[first]), np.mean(added[last])
    print(f"{name:>5}: {len(times)} events, {objects} object(s)/file(s); per event, first {WINDOW} -> "
          f"last {WINDOW}: event {t0:5.1f} -> {t1:5.1f} ms ({t1 / t0:.2f}x), write {w0:5.1f} -> "
          f"{w1:5.1f} ms ({w1 / w0:.2f}x), bytes {b0:.0f} -> {b1:.0f} ({b1 / b0:.3f}x); "
          f"misses: {misses or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.events < 2 * WINDOW:
        parser.error(f"need --events >= {2 * WINDOW}; got {args.events}")

    server, endpoint = _start_s3()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        import fsspec

        from actlog import metadata

        probes = np.random.default_rng(args.seed).random((4, 28, 28, 1), dtype=np.float32)
        fs = fsspec.filesystem("s3")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        url = f"s3://{bucket}/exp"
        run = f"{url}/{metadata.EPOCH_RUN}"

        def s3_sizes() -> int:
            fs.invalidate_cache(run)
            return sum(info["size"] for info in fs.ls(run, detail=True)) if fs.exists(run) else 0

        print(f"actlog on an object store: MNIST ConvNet, layers {', '.join(LAYERS)}, 4 probes, "
              f"{args.events} epoch events per store; S3 = moto's server on 127.0.0.1 (a separate process)")
        writes = _timed_writes()
        times, added, misses = _log(url, args.events, probes, s3_sizes, args.seed)
        _report("s3", times, writes, added, misses, len(fs.ls(run)))
        with tempfile.TemporaryDirectory(prefix="actlog-store-") as tmp:
            local = os.path.join(tmp, metadata.EPOCH_RUN)

            def local_sizes() -> int:
                if not os.path.isdir(local):
                    return 0
                return sum(os.path.getsize(os.path.join(local, n)) for n in os.listdir(local))

            times, added, misses = _log(tmp, args.events, probes, local_sizes, args.seed)
            _report("local", times, writes, added, misses, len(os.listdir(local)))
        fs.rm(bucket, recursive=True)
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
