"""actlog's event files without TensorFlow or Keras: records, the writer, the stores.

Everything written here is read back through TensorBoard's own
``EventAccumulator`` (conftest ``read_run``) and through :func:`actlog.read`.
"""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from google_crc32c import value as crc32c
from tensorboard.compat.proto import summary_pb2

from actlog import codec, metadata, storage
from actlog.event import EventAssembler, LayerPlan, LayerResult
from actlog.grid import plan_layout
from actlog.writer import EventFileLost, RunWriter, Spool


def test_crc32c_known_values():
    # The CRC-32C check value (RFC 3720) and the TFRecord mask of an empty length.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert codec.masked_crc32c(b"") == ((0 >> 15 | 0 << 17) + 0xA282EAD8) & 0xFFFFFFFF


def test_frame_and_scan_round_trip_and_stop_at_damage():
    data = b"".join(codec.frame(payload) for payload in (b"a", b"", b"xyz" * 1000))
    found = codec.scan(data)
    assert [data[o : o + n] for o, n in found.records] == [b"a", b"", b"xyz" * 1000]
    assert found.end == len(data) and found.problem is None
    cut = codec.scan(data[:-3])
    assert len(cut.records) == 2 and cut.incomplete and "needs" in cut.problem
    damaged = bytearray(data)
    damaged[(codec.OVERHEAD + 1) + codec.OVERHEAD + 12 + 5] ^= 0xFF  # inside the third record's data
    bad = codec.scan(bytes(damaged))
    assert len(bad.records) == 2 and not bad.incomplete and "fails its CRC" in bad.problem
    assert len(codec.scan(bytes(damaged), verify=False).records) == 3


def test_encoded_event_is_a_tensorboard_event():
    from tensorboard.compat.proto import event_pb2

    summary = summary_pb2.Summary()
    summary.value.add(tag="t", simple_value=2.5)
    event = event_pb2.Event()
    event.ParseFromString(codec.encode_event(7, summary.SerializeToString(), wall_time=1.5))
    assert (event.step, event.wall_time, event.summary.value[0].simple_value) == (7, 1.5, 2.5)


def _scalar(tag: str, value: float) -> bytes:
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, simple_value=value)
    return summary.SerializeToString()


def test_an_event_larger_than_the_spool_streams_through_a_temporary_file(tmp_path, read_run):
    """An event made part after part moves to a temporary file past the spool's limit and is
    streamed into one record, CRC computed on the way: readable by TensorBoard like any other."""
    values = [(f"layer_{i}/mean", float(i)) for i in range(3000)]
    body = Spool(limit=4096)
    for start in range(0, len(values), 100):  # parts of 100 layers, as the background makes them
        body.append(b"".join(_scalar(tag, value) for tag, value in values[start : start + 100]))
    assert body._file._rolled and len(body) > 4096 * 10  # on disk, not in memory
    writer = RunWriter(storage.LocalStorage(), str(tmp_path / "run"))
    writer.write(3, [_scalar("first", 0.5), body])
    writer.write(4, [body])  # a spool can be read again: the same bytes
    body.close()
    writer.close()
    run = read_run(tmp_path / "run")
    assert run["first"] == [(3, 0.5)]
    assert run["layer_2999/mean"] == [(3, 2999.0), (4, 2999.0)] and len(run) == 3001
    with pytest.raises(ValueError, match="announced 5 bytes of data and got 4"):
        list(codec.frame_stream([b"ab", b"cd"], 5))


def _header() -> bytes:
    plan = LayerPlan("a", "a", "Conv2D", (2, 2, 1), "channels_last", plan_layout((2, 2), [0]),
                     "channel", "gray")
    return EventAssembler([plan], probes=1, step_axis=metadata.STEP_AXIS_EPOCH).header()


def test_writer_reopens_a_vanished_file_with_its_header(tmp_path, read_run):
    notes: list[str] = []
    writer = RunWriter(storage.LocalStorage(), str(tmp_path / "run"), on_reopen=notes.append)
    header = _header()
    writer.write(0, header + _scalar("a/mean", 1.0), header=header)
    first = writer.file
    writer.write(1, _scalar("a/mean", 2.0))
    os.remove(first)
    writer.write(2, _scalar("a/mean", 3.0))
    writer.close()
    assert len(notes) == 1 and first in notes[0] and "Step 2" in notes[0]
    assert writer.files[0] == first and len(writer.files) == 2 and os.path.exists(writer.files[1])
    run = read_run(tmp_path / "run")
    assert run["a/mean"] == [(2, 3.0)]
    assert [s for s, _ in run[metadata.MANIFEST_TAG]] == [2]
    assert [s for s, _ in run[metadata.LAYERS_TEXT_TAG]] == [2]


class _RemovedAfterAppend(storage.Appender):
    """An event file that something else deletes right after each append, once ``armed``."""

    def __init__(self, store: _RemovingStorage, inner: storage.Appender) -> None:
        self.store, self.inner, self.path = store, inner, inner.path

    def append(self, data):
        self.inner.append(data)
        if self.store.armed:
            os.remove(self.path)

    def lost(self) -> bool:
        return self.inner.lost()

    def close(self) -> None:
        self.inner.close()


class _RemovingStorage(storage.LocalStorage):
    armed = False

    def appender(self, path: str) -> storage.Appender:
        return _RemovedAfterAppend(self, super().appender(path))


def test_writer_reports_a_file_removed_during_a_write(tmp_path):
    store = _RemovingStorage()
    writer = RunWriter(store, str(tmp_path / "run"))
    writer.write(0, _scalar("a/mean", 1.0))
    store.armed = True
    with pytest.raises(EventFileLost, match="disappeared while step 1 was written"):
        writer.write(1, _scalar("a/mean", 2.0))
    assert writer.file is None


def test_event_files_are_named_so_tensorboard_finds_and_orders_them(tmp_path):
    writer = RunWriter(storage.LocalStorage(), str(tmp_path))
    writer.write(0, _scalar("x", 1.0))
    name = os.path.basename(writer.file)
    assert name.startswith("events.out.tfevents.") and name.endswith(".v2")
    stamp = int(name.split(".")[3])
    assert abs(stamp - int(os.path.getmtime(writer.file))) <= 2


def test_memory_store_appends_and_reads_back(read_run, tmp_path):
    url = "memory://actlog-writer/run"
    fs = fsspec.filesystem("memory")
    writer = RunWriter(storage.for_path(url), url)
    header = _header()
    for step in range(3):
        writer.write(step, (header if step == 0 else b"") + _scalar("a/mean", float(step)),
                     header=header if step == 0 else None)
    (path,) = fs.ls(url, detail=False)
    local = tmp_path / "copy"
    local.mkdir()
    (local / os.path.basename(path)).write_bytes(fs.cat_file(path))
    assert read_run(local)["a/mean"] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    fs.rm("memory://actlog-writer", recursive=True)


class _NoAppend(MemoryFileSystem):
    """An object store: no append mode; every object it was asked to write, in order."""

    protocol = "noappend"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.puts: list[str] = []

    def open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("append")
        return super().open(path, mode, **kwargs)

    def pipe_file(self, path, value, **kwargs):
        self.puts.append(path)
        return super().pipe_file(path, value, **kwargs)


def test_a_store_that_cannot_append_gets_each_event_as_an_object_written_once(read_run, tmp_path):
    fs = _NoAppend()
    store = storage.FsspecStorage(fs)
    assert store.appends is False
    writer = RunWriter(store, "/noappend/run")
    header = _header()
    for step in range(12):
        writer.write(step, (header if step == 0 else b"") + _scalar("a/mean", float(step)),
                     header=header if step == 0 else None)
    # One object per event, none written twice, named in the order written.
    assert len(fs.puts) == 12 and len(set(fs.puts)) == 12 and sorted(fs.puts) == fs.puts
    assert writer.files == fs.puts
    sizes = [fs.size(path) for path in fs.puts]
    assert len(set(sizes[1:])) == 1  # the last event costs what the second did
    local = tmp_path / "copy"
    local.mkdir()
    for path in fs.ls("/noappend/run", detail=False):
        (local / os.path.basename(path)).write_bytes(fs.cat_file(path))
    run = read_run(local)  # TensorBoard's loader, file after file in name order
    assert run["a/mean"] == [(s, float(s)) for s in range(12)]
    assert len(run[metadata.MANIFEST_TAG]) == 1  # the header only in the first object
    fs.rm("/noappend", recursive=True)


def test_assembler_layers_table_and_nonfinite_marker():
    plan = LayerPlan("x<y>|z", "m/x", "Conv2D", (2, 2, 3), "channels_last", plan_layout((2, 2), [0, 2]),
                     "channel", "viridis")
    assembler = EventAssembler([plan], probes=1, step_axis=metadata.STEP_AXIS_EPOCH)
    assert assembler.layers_table().splitlines()[-1] == (
        "| x&lt;y&gt;\\|z | m/x | Conv2D | (2, 2, 3) | 2 of 3 |"
    )
    levels = np.full((1, 2, 2, 2), 255, np.uint8)
    mask = np.zeros((1, 2, 2, 2), bool)
    mask[0, 1, 0, 0] = True
    sums = {"count": np.array([4, 4, 3.0]), "total": np.zeros(3), "m2": np.zeros(3),
            "zeros": np.zeros(3), "high": np.ones(3), "low": np.zeros(3)}
    body, nonfinite = assembler.layers([0], [LayerResult(levels, sums, None, lambda: mask)])
    assert nonfinite == ["x<y>|z"]
    summary = summary_pb2.Summary()
    summary.ParseFromString(body)
    assert [v.tag for v in summary.value][:1] == ["x<y>|z/probe_0"]
