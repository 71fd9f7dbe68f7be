"""Logs on an object store, against a real S3-protocol server on 127.0.0.1 (conftest ``s3_endpoint``).

One ``fit`` logs the same layers twice, to a local directory and to a fresh ``s3://``
prefix; everything read from the bucket (by :func:`actlog.read`, the CLI, the
dashboard's routes and TensorBoard's own loader in a process without TensorFlow,
through ``S3_ENDPOINT``) must equal what was read from the disk.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from conftest import BACKEND, make_tiny_data, make_tiny_model

import actlog
from actlog import metadata, storage
from actlog.cli import main
from actlog.codec import event_object_names

EPOCHS = 3
STEPS = list(range(EPOCHS + 1))
LAYERS = ["conv_0", "conv_1"]


@pytest.fixture(scope="module")
def twin_logs(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``(local_dir, s3_url, loggers)``: one fit logged to the disk and to a fresh prefix."""
    import uuid

    import keras

    bucket = f"actlog-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(bucket)
    local = tmp_path_factory.mktemp("twin")
    url = f"s3://{bucket}/exp1"
    keras.utils.set_random_seed(0)
    x, y = make_tiny_data()
    loggers = [actlog.ActivationLogger(path, x[:2], layers=LAYERS) for path in (str(local), url)]
    make_tiny_model(0).fit(x, y, batch_size=8, epochs=EPOCHS, verbose=0, callbacks=loggers)
    yield local, url, loggers
    fs.rm(bucket, recursive=True)


def _tensorboard(script: str, *args: str) -> Any:
    """Run ``script`` in a Python where TensorBoard has no TensorFlow (its own S3 reader,
    boto3, ``S3_ENDPOINT``); its last line of output, parsed as JSON."""
    prelude = "import sys\nsys.modules['tensorflow'] = None  # TensorBoard's stub, as without TensorFlow\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the log directory --------------------------------------------------------------------


def test_a_fresh_prefix_is_a_log_dir_and_an_object_is_not(s3_bucket):
    path, store = storage.check_log_dir(f"{s3_bucket}/runs/exp1")
    assert path == f"{s3_bucket}/runs/exp1" and store.appends is False
    assert store.entries(s3_bucket) == []  # nothing made: a prefix needs no creating
    store.put(f"{s3_bucket}/runs/taken", b"x")
    with pytest.raises(ValueError, match=r"log_dir 's3://.*/runs/taken' exists but is not a directory"):
        actlog.ActivationLogger(f"{s3_bucket}/runs/taken", np.zeros((1, 12, 12, 1), "float32"))


def test_an_endpoint_that_does_not_answer_is_refused_before_training(s3_endpoint, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": dead}})
    with pytest.raises(ValueError, match=r"log_dir 's3://nowhere/exp' cannot be created: .*Accepted: "):
        actlog.ActivationLogger("s3://nowhere/exp", np.zeros((1, 12, 12, 1), "float32"))


# -- written during fit, read back by everything -------------------------------------------


@pytest.mark.backend
def test_fit_writes_each_event_as_one_object_read_back_as_the_local_log(twin_logs):
    local, url, loggers = twin_logs
    assert [logger.misses for logger in loggers] == [{}, {}]
    fs = fsspec.filesystem("s3")
    names = [os.path.basename(p) for p in fs.ls(f"{url}/{metadata.EPOCH_RUN}", detail=False)]
    assert len(names) == len(STEPS)  # one object per event, none rewritten into a bigger one
    assert all(n.startswith("events.out.tfevents.") and n.endswith(".v2") for n in names)
    remote, disk = actlog.read(url), actlog.read(local)
    assert remote.runs == disk.runs == [metadata.EPOCH_RUN]
    for layer in LAYERS:
        for probe in (0, 1):
            steps, grids = remote.run().grids(layer, probe)
            local_steps, local_grids = disk.run().grids(layer, probe)
            assert steps.tolist() == local_steps.tolist() == STEPS
            np.testing.assert_array_equal(grids, local_grids)
        remote_stats, local_stats = remote.run().scalars(layer), disk.run().scalars(layer)
        assert sorted(remote_stats) == sorted(local_stats)
        for name, (steps, values) in remote_stats.items():
            local_steps, local_values = local_stats[name]
            assert steps.tolist() == local_steps.tolist(), name
            np.testing.assert_array_equal(values, local_values)


@pytest.mark.backend
def test_tensorboard_reads_the_s3_log_through_s3_endpoint(twin_logs):
    local, url, _ = twin_logs
    script = """
        import hashlib, json
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

        def load(path):
            acc = EventAccumulator(path, size_guidance={"tensors": 0})
            acc.Reload()
            return {tag: [(e.step, hashlib.sha256(e.tensor_proto.SerializeToString()).hexdigest())
                          for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}

        remote, disk = load(sys.argv[1]), load(sys.argv[2])
        print(json.dumps({"equal": remote == disk, "tags": sorted(remote),
                          "steps": sorted({step for values in remote.values() for step, _ in values})}))
    """
    found = _tensorboard(script, f"{url}/{metadata.EPOCH_RUN}", str(local / metadata.EPOCH_RUN))
    assert found["equal"] is True
    if (local / "train").is_dir():  # Keras' loss curves, written by actlog on JAX and PyTorch
        train = _tensorboard(script, f"{url}/train", str(local / "train"))
        assert train["equal"] is True and "epoch_loss" in train["tags"]
    assert {metadata.grid_tag(layer, probe, 2) for layer in LAYERS for probe in (0, 1)} <= set(found["tags"])
    assert found["steps"] == STEPS


@pytest.mark.backend
def test_the_cli_lists_and_exports_an_s3_log_as_a_local_one(twin_logs, tmp_path, capsys):
    local, url, _ = twin_logs
    assert main(["ls", url]) == 0
    remote = capsys.readouterr().out
    assert main(["ls", str(local)]) == 0
    assert remote.replace(url, "LOG") == capsys.readouterr().out.replace(str(local), "LOG")
    for source, out in ((url, tmp_path / "remote.png"), (str(local), tmp_path / "local.png")):
        assert main(["export", source, "--layer", "conv_1", "--probe", "0", "-o", str(out)]) == 0
    assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()


@pytest.mark.backend
def test_the_dashboard_routes_serve_an_s3_log(twin_logs):
    from PIL import Image
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test
    from werkzeug import wrappers

    from actlog.plugin.plugin import ActivationsLoader

    local, url, _ = twin_logs
    # The plugin reads the log itself (actlog's reader); TensorBoard's multiplexer is not needed.
    provider = data_provider.MultiplexerDataProvider(plugin_event_multiplexer.EventMultiplexer(), url)
    plugin = ActivationsLoader().load(base_plugin.TBContext(data_provider=provider, logdir=url))
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider),
                                  wrappers.Response)
    runs = json.loads(client.get("/data/plugin/actlog/runs").data)
    assert runs["logdirs"] == [url] and runs["problem"] is None
    (run,) = runs["runs"]
    assert [layer["name"] for layer in run["layers"]] == LAYERS and run["last_step"] == STEPS[-1]
    disk = actlog.read(local).run()
    for layer in LAYERS:
        query = {"run": metadata.EPOCH_RUN, "layer": layer, "probe": 1}
        body = json.loads(client.get("/data/plugin/actlog/steps", query_string=query).data)
        assert [entry["step"] for entry in body["steps"]] == STEPS
        _, grids = disk.grids(layer, 1)
        for entry, expected in zip(body["steps"], grids, strict=True):
            response = client.get("/data/plugin/actlog/image", query_string={"key": entry["key"]})
            assert response.status_code == 200
            image = np.asarray(Image.open(io.BytesIO(response.data)))
            np.testing.assert_array_equal(image.reshape(expected.shape), expected)


def test_tensorboard_and_actlog_see_each_event_while_the_run_is_written(s3_bucket):
    """Each event is its own object, named after the ones before: TensorBoard's
    DirectoryWatcher (which reads a run's files in name order and never goes back)
    and actlog's index both pick up every new event at their next look."""
    seen = _tensorboard("""
        import json
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
        from tensorboard.compat.proto import summary_pb2
        from actlog import index, storage
        from actlog.writer import RunWriter

        run = sys.argv[1]
        store = storage.for_path(run)
        writer = RunWriter(store, run)
        acc = EventAccumulator(run, size_guidance={"tensors": 0})
        ours = index.EventIndex(store, run, verify=True)
        seen = []
        for step in range(25):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=step / 2)
            summary = summary_pb2.Summary(value=[value])
            writer.write(step, summary.SerializeToString())
            acc.Reload()
            ours.refresh()
            seen.append([[e.step for e in acc.Tensors("loss")], ours.series["loss"].steps()])
        print(json.dumps({"seen": seen, "objects": len(writer.files)}))
    """, f"{s3_bucket}/exp/run")
    assert seen["objects"] == 25
    assert seen["seen"] == [[list(range(n + 1)), list(range(n + 1))] for n in range(25)]


def test_object_names_sort_in_the_order_written():
    first, second = event_object_names(), event_object_names()
    names = [next(first) for _ in range(1001)]
    assert sorted(names) == names and len(set(names)) == 1001
    assert next(second) > names[-1]  # a later file of this process sorts after


# -- faults ------------------------------------------------------------------------------


@pytest.mark.backend
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_bucket_removed_mid_run_is_counted_and_training_finishes(scheme, request, tiny_model, tiny_data,
                                                                    tiny_probes):
    import uuid

    import keras

    request.getfixturevalue({"s3": "s3_endpoint", "gs": "gcs_endpoint"}[scheme])
    fs = fsspec.filesystem(scheme)
    bucket = f"actlog-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    url = f"{scheme}://{bucket}/exp"
    # epoch_logs=False: on JAX and PyTorch actlog would write Keras' loss curves too, lost alike
    logger = actlog.ActivationLogger(url, tiny_probes, layers=["conv_0"], background=False, epoch_logs=False)

    class RemoveBucket(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # after the logger wrote step 1
                fs.rm(bucket, recursive=True)

    lost = (rf"actlog \(removed\): {scheme}://.*/activations is gone \(was its bucket removed\?\).*; "
            r"step 2 of run 'activations'.* is lost")
    with pytest.warns(RuntimeWarning, match=lost):
        history = tiny_model.fit(*tiny_data, batch_size=8, epochs=3, verbose=0,
                                 callbacks=[logger, RemoveBucket()])
    assert len(history.history["loss"]) == 3
    assert logger.misses == {"removed": 2}  # steps 2 and 3
    fs.invalidate_cache()
    assert not fs.exists(bucket)  # and no bucket made again behind the user's back


@pytest.fixture(scope="module")
def iam_endpoint() -> Any:
    """An S3 server of its own that checks credentials (moto's IAM: after the first 3 requests,
    every request must be signed with a live access key); yields ``(endpoint, key, secret)`` of
    a user allowed everything."""
    import socket
    import time

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="trainer")
        iam.put_user_policy(UserName="trainer", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ))
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.terminate()
        server.wait(10)


def test_refused_credentials_fail_before_training(iam_endpoint, monkeypatch):
    endpoint, _, _ = iam_endpoint
    monkeypatch.setitem(fsspec.config.conf, "s3", {
        "key": "AKIANOSUCHKEY0000000", "secret": "wrong", "client_kwargs": {"endpoint_url": endpoint},
    })
    with pytest.raises(ValueError, match=r"log_dir 's3://locked/exp' cannot be created: .*Accepted: "):
        actlog.ActivationLogger("s3://locked/exp", np.zeros((1, 12, 12, 1), "float32"))


@pytest.mark.backend
def test_credentials_revoked_mid_run_are_counted_and_training_finishes(iam_endpoint, monkeypatch, tiny_model,
                                                                       tiny_data, tiny_probes):
    import boto3
    import keras

    endpoint, key, secret = iam_endpoint
    options = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": key,
               "aws_secret_access_key": secret}
    bucket = f"revoked-{BACKEND.lower()}"
    boto3.client("s3", **options).create_bucket(Bucket=bucket)
    monkeypatch.setitem(fsspec.config.conf, "s3", {
        "key": key, "secret": secret, "client_kwargs": {"endpoint_url": endpoint},
    })
    logger = actlog.ActivationLogger(f"s3://{bucket}/exp", tiny_probes, layers=["conv_0"], background=False,
                                     epoch_logs=False)  # (as in the test above)

    class Revoke(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # after the logger wrote step 1
                boto3.client("iam", **options).delete_access_key(UserName="trainer", AccessKeyId=key)

    with pytest.warns(RuntimeWarning, match=r"actlog \(write\): could not write step 2 .*PermissionError"):
        history = tiny_model.fit(*tiny_data, batch_size=8, epochs=3, verbose=0, callbacks=[logger, Revoke()])
    assert len(history.history["loss"]) == 3
    assert logger.misses == {"write": 2}  # steps 2 and 3


# -- gs:// ----------------------------------------------------------------------------------


@pytest.mark.backend
def test_fit_writes_a_fresh_gs_prefix_read_back_as_the_local_log(gcs_endpoint, tmp_path, tiny_model,
                                                                 tiny_data, tiny_probes):
    import uuid

    bucket = f"actlog-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("gs")
    fs.mkdir(bucket)
    url = f"gs://{bucket}/runs/exp1"
    loggers = [actlog.ActivationLogger(path, tiny_probes, layers=["conv_0"], epoch_logs=False)
               for path in (str(tmp_path), url)]
    tiny_model.fit(*tiny_data, batch_size=8, epochs=2, verbose=0, callbacks=loggers)
    assert [logger.misses for logger in loggers] == [{}, {}]
    assert len(fs.ls(f"{url}/{metadata.EPOCH_RUN}")) == 3  # one object per event
    remote, disk = actlog.read(url).run(), actlog.read(tmp_path).run()
    for probe in (0, 1):
        steps, grids = remote.grids("conv_0", probe)
        local_steps, local_grids = disk.grids("conv_0", probe)
        assert steps.tolist() == local_steps.tolist() == [0, 1, 2]
        np.testing.assert_array_equal(grids, local_grids)
    fs.rm(bucket, recursive=True)


# -- throttling -----------------------------------------------------------------------------


class _Throttle:
    """An HTTP proxy on 127.0.0.1 in front of the S3 server: it passes every request on until
    ``throttled`` is set, then answers each one as S3 answers a client over its request rate
    (503 SlowDown), the way a real store throttles."""

    SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message></Error>")

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        proxy = self
        self.throttled = False
        self.refused = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.throttled:
                    proxy.refused += 1
                    status, headers, data = 503, [("Content-Type", "application/xml")], proxy.SLOW_DOWN
                else:
                    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                    connection.request(self.command, self.path, body=body, headers=dict(self.headers))
                    reply = connection.getresponse()
                    data = reply.read()
                    status = reply.status
                    headers = [(k, v) for k, v in reply.getheaders()
                               if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                    connection.close()
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.backend
def test_throttling_mid_run_is_counted_and_training_finishes(s3_endpoint, s3_bucket, monkeypatch, tiny_model,
                                                             tiny_data, tiny_probes):
    import keras

    throttle = _Throttle(s3_endpoint)
    try:
        # actlog's client goes through the proxy; the test's own reads go to the server itself.
        monkeypatch.setitem(fsspec.config.conf, "s3", {"client_kwargs": {"endpoint_url": throttle.url}})
        url = f"{s3_bucket}/throttled"
        logger = actlog.ActivationLogger(url, tiny_probes, layers=["conv_0"], background=False,
                                         epoch_logs=False)  # the activation run's writes only

        class SlowDown(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:  # after the logger wrote step 1
                    throttle.throttled = True

        with pytest.warns(RuntimeWarning, match=r"actlog \(write\): could not write step 2 "):
            history = tiny_model.fit(*tiny_data, batch_size=8, epochs=3, verbose=0,
                                     callbacks=[logger, SlowDown()])
        assert len(history.history["loss"]) == 3
        assert logger.misses == {"write": 2}  # steps 2 and 3, each after the client's bounded retries
        assert throttle.refused >= 2
    finally:
        throttle.close()
    monkeypatch.delitem(fsspec.config.conf, "s3")
    assert actlog.read(url).run().grid_steps("conv_0", 0) == [0, 1]  # what was written stays readable
