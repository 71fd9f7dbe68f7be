"""Shared fixtures: a tiny seeded model, seeded data, and a reader of TensorBoard runs.

TensorFlow and Keras are imported inside the fixtures, never at module level,
so test modules that must run without TensorFlow (the grid toolkit, the
reader) do not pay for it or see it in ``sys.modules``.

Fixtures:

- ``tiny_model_factory`` (session): ``factory(seed=0)`` -> a fresh compiled
  functional model ``Input((12, 12, 1)) -> Conv2D(4, 3, relu, "conv_0") ->
  MaxPooling2D(2, "pool_0") -> Conv2D(6, 3, "conv_1") -> Flatten("flatten") ->
  Dense(3, "logits")``, weights seeded; sparse categorical cross-entropy, SGD.
  Per-sample output shapes: conv_0 (10, 10, 4), pool_0 (5, 5, 4), conv_1 (3, 3, 6).
- ``tiny_model``: one such model (seed 0), fresh for each test.
- ``tiny_data`` (session): ``(x, y)``: 16 float32 samples ``(12, 12, 1)`` and int
  labels in {0, 1, 2}; both read-only (copy before changing them).
- ``tiny_probes``: a fresh writable float32 copy of ``x[:2]``, for each test.
- ``classic_model_factory`` (session): ``factory(seed=0)`` -> the article's MNIST
  ConvNet as a compiled ``Sequential``: ``Input((28, 28, 1)) -> Conv2D(32, 3, relu,
  "conv_0") -> MaxPooling2D("pool_0") -> Conv2D(64, 3, relu, "conv_1") ->
  MaxPooling2D("pool_1") -> Flatten -> Dropout(0.5) -> Dense(10, softmax)``.
  Per-sample shapes: conv_0 (26, 26, 32), pool_0 (13, 13, 32), conv_1 (11, 11, 64),
  pool_1 (5, 5, 64).
- ``read_run`` (session): ``read_run(path)`` -> ``{tag: [(step, value), ...]}``
  read through TensorBoard's ``EventAccumulator`` (see :func:`read_run`).

Helpers shared by test modules: :func:`steps` (a tag's steps in such a run),
:func:`layout_of` (a manifest entry's grid layout), :func:`fails_before_training`
(a bad configuration stops ``fit`` before its first batch), :func:`fit_log` (a log whose
``conv_0`` is shown under the hostile name :data:`XSS`, for the dashboard's tests),
:func:`faulty_log_dir` (a ``faulty://`` log directory whose writes fail or are slow).

Backends: tests marked ``backend`` run a Keras model and run once per Keras
backend (CI sets ``KERAS_BACKEND``). Helpers for them: :data:`BACKEND`,
:func:`to_numpy` (a backend tensor as numpy), :func:`keras_tensorboard`
(Keras' own TensorBoard callback, which exists on TensorFlow only) and the
``tensorflow_only`` mark. :func:`load_example` imports a script of ``examples/``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import Any

import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

# Before TensorFlow is first imported anywhere: keep its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
"""The Keras backend this test process runs on."""

def _cuda() -> bool:
    if BACKEND != "torch":
        return False
    import torch

    return torch.cuda.is_available()


CUDA = _cuda()
"""Whether this test process runs PyTorch on a GPU (never in CI: a developer's GPU machine)."""


def _accelerated() -> bool:
    if BACKEND == "tensorflow":
        import tensorflow as tf

        # Physical devices: listing logical ones would initialise TensorFlow's runtime, after which a
        # test's subprocess importing this module could no longer split the CPU into logical devices.
        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if BACKEND == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    return CUDA


ACCELERATED = _accelerated()
"""Whether the model runs on an accelerator: the reductions then stay on the device."""

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason=f"uses TensorFlow itself; KERAS_BACKEND={BACKEND}"
)


def load_example(name: str) -> Any:
    """``examples/<name>.py`` as a module, imported once (it puts ``examples/`` on ``sys.path``
    for its own imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    module_name = f"actlog_example_{name}"
    if module_name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]


def to_numpy(tensor: Any) -> np.ndarray:
    """A backend tensor (or anything array-like) as a float32 numpy array."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float32)


def keras_tensorboard(log_dir: Any, **kwargs: Any) -> list:
    """``[keras.callbacks.TensorBoard(log_dir, **kwargs)]`` on TensorFlow, ``[]`` elsewhere:
    Keras' own TensorBoard callback needs TensorFlow."""
    if BACKEND != "tensorflow":
        return []
    import keras

    return [keras.callbacks.TensorBoard(str(log_dir), **kwargs)]


def steps(run: dict, tag: str) -> list[int]:
    """The steps of ``tag`` in a run from :func:`read_run`, in the order logged."""
    return [step for step, _ in run[tag]]


def layout_of(entry: dict) -> Any:
    """The :class:`actlog.grid.GridLayout` a manifest's layer entry describes."""
    from actlog import grid

    return grid.GridLayout(channels=tuple(entry["channels"]), **entry["grid"])


def fails_before_training(
    model: Any, x: Any, y: Any, logger: Any, match: str, exc: type[BaseException] = ValueError,
    *, batch_size: int = 2,
) -> None:
    """``fit`` raises ``exc`` (message matching ``match``) before any training batch began
    and before any optimizer step; an uncompiled model is compiled with SGD and MSE first."""
    import keras

    class BatchCounter(keras.callbacks.Callback):
        """Counts training batches that began; placed before the logger in ``callbacks``."""

        def __init__(self) -> None:
            super().__init__()
            self.batches = 0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.batches += 1

    if not model.compiled:
        model.compile(optimizer="sgd", loss="mse")
    counter = BatchCounter()
    iterations = int(model.optimizer.iterations.numpy())
    with pytest.raises(exc, match=match):
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0, callbacks=[counter, logger])
    assert counter.batches == 0
    assert int(model.optimizer.iterations.numpy()) == iterations


XSS = "<img src=x onerror=alert(1)>"
"""A layer display name that is an HTML tag: the dashboard must show it as text, run no script."""


def fit_log(
    log_dir: Any, make_model: Callable[[], Any], x: Any, y: Any, probes: Any, epochs: int,
    **options: Any,
) -> None:
    """Train ``make_model()`` (built after seeding 0) on ``x, y`` in batches of 2 with an
    ``ActivationLogger`` that shows ``conv_0`` under the name :data:`XSS` and ``conv_1`` as itself."""
    import keras

    import actlog

    keras.utils.set_random_seed(0)
    logger = actlog.ActivationLogger(
        str(log_dir), probes, layers={XSS: "conv_0", "conv_1": "conv_1"}, **options
    )
    make_model().fit(x, y, epochs=epochs, batch_size=2, verbose=0, callbacks=[logger])


class FaultyFiles(LocalFileSystem):
    """Local files served through fsspec as ``faulty://`` (registered below), whose appends can
    fail or take time: a store that misbehaves, reached the way a user's log directory URL
    reaches any store (fsspec's public registry), instead of a patch of actlog's own files.

    Appends are counted from 1 over the whole test: a new file's version record, then one
    record per event. The class attributes are set per test with ``monkeypatch``.
    """

    protocol = ("faulty", "file")  # "file": appended to in place, as local files are
    fail_at: frozenset[int] = frozenset()
    error: BaseException | None = None
    delay = 0.0
    appends = 0

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "a" in mode:
            cls = type(self)
            cls.appends += 1
            if cls.appends in cls.fail_at:
                raise cls.error
            time.sleep(cls.delay)
        return super().open(path, mode, **kwargs)


fsspec.register_implementation("faulty", FaultyFiles, clobber=True)


def faulty_log_dir(
    monkeypatch: Any, path: str | os.PathLike, *, error: BaseException | None = None,
    fail_at: set[int] = frozenset(), delay: float = 0.0,
) -> str:
    """``path`` as a ``faulty://`` log directory whose ``n``-th append (``n`` in ``fail_at``)
    raises ``error`` and every append first waits ``delay`` seconds."""
    monkeypatch.setattr(FaultyFiles, "appends", 0)
    monkeypatch.setattr(FaultyFiles, "fail_at", frozenset(fail_at))
    monkeypatch.setattr(FaultyFiles, "error", error)
    monkeypatch.setattr(FaultyFiles, "delay", delay)
    return "faulty://" + str(path)


TINY_INPUT_SHAPE = (12, 12, 1)
TINY_CLASSES = 3
TINY_SAMPLES = 16


def make_tiny_model(seed: int = 0) -> Any:
    """The tiny functional model described in the module docstring, compiled."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(TINY_INPUT_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_0")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_0")(x)
    x = keras.layers.Conv2D(6, 3, name="conv_1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(TINY_CLASSES, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def make_classic_model(seed: int = 0) -> Any:
    """The article's MNIST ConvNet (see module docstring), compiled, weights seeded."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv_0"),
            keras.layers.MaxPooling2D(2, name="pool_0"),
            keras.layers.Conv2D(64, 3, activation="relu", name="conv_1"),
            keras.layers.MaxPooling2D(2, name="pool_1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dropout(0.5, name="dropout"),
            keras.layers.Dense(10, activation="softmax", name="digits"),
        ],
        name="classic_mnist",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def make_tiny_data(n: int = TINY_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded samples: a bright square at a class-dependent place, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, TINY_CLASSES, size=n).astype(np.int32)
    x = rng.normal(0.0, 0.1, size=(n, *TINY_INPUT_SHAPE)).astype(np.float32)
    for i, label in enumerate(y):
        top = 1 + 3 * int(label)
        x[i, top:top + 4, top:top + 4, 0] += 1.0
    return x, y


def _decode_png(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        array = np.asarray(image, dtype=np.uint8)
    return array[:, :, np.newaxis] if array.ndim == 2 else array


def read_run(path: str | os.PathLike) -> dict[str, list[tuple[int, Any]]]:
    """Everything TensorBoard sees in one run directory, by tag, in step order.

    Loaded with TensorBoard's own ``EventAccumulator`` keeping every event
    (``size_guidance={"tensors": 0}``). Values by plugin:

    - ``images``: uint8 ``(h, w, c)`` (gray PNGs as ``c = 1``); a summary with
      several images gives a list of them.
    - ``scalars``: ``float``.
    - ``text`` and string tensors (actlog's manifest): ``str``.
    - anything else (actlog's channel statistics): the numpy array.

    Raises ``AssertionError`` when ``path`` is not a directory, so a missing run
    can never pass as an empty one.
    """
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    path = os.fspath(path)
    assert os.path.isdir(path), f"no run directory at {path}"
    accumulator = EventAccumulator(path, size_guidance={"tensors": 0})
    accumulator.Reload()
    out: dict[str, list[tuple[int, Any]]] = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        values = []
        for event in accumulator.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if plugin == "images":
                # [width, height, png, png, ...]
                images = [_decode_png(png) for png in array[2:]]
                value: Any = images[0] if len(images) == 1 else images
            elif plugin == "scalars":
                value = float(array)
            elif array.dtype.kind in "OSU" and array.ndim == 0:
                value = array.item()
                value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
            else:
                value = array
            values.append((int(event.step), value))
        out[tag] = sorted(values, key=lambda pair: pair[0])
    return out


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable[..., Any]:
    """``factory(seed=0)`` -> a fresh compiled tiny model (see module docstring)."""
    return make_tiny_model


@pytest.fixture
def tiny_model() -> Any:
    """A fresh compiled tiny model, seed 0."""
    return make_tiny_model(0)


@pytest.fixture(scope="session")
def classic_model_factory() -> Callable[..., Any]:
    """``factory(seed=0)`` -> a fresh compiled classic MNIST ConvNet (see module docstring)."""
    return make_classic_model


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(x, y)``: 16 samples ``(12, 12, 1)`` float32 and int32 labels in {0, 1, 2}."""
    x, y = make_tiny_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@pytest.fixture
def tiny_probes(tiny_data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A writable float32 copy of the first two samples, fresh for each test."""
    return tiny_data[0][:2].copy()


@pytest.fixture(scope="session", name="read_run")
def read_run_fixture() -> Callable[[str | os.PathLike], dict[str, list[tuple[int, Any]]]]:
    """The :func:`read_run` helper, as a fixture."""
    return read_run


@pytest.fixture(scope="session")
def s3_endpoint() -> Any:
    """An S3-protocol server on 127.0.0.1 (moto's standalone server, as s3fs's own tests
    use), for the whole session; yields its URL.

    The process is pointed at it the way a user points theirs at any S3-compatible store:
    ``AWS_ENDPOINT_URL`` (s3fs, boto3) and ``S3_ENDPOINT`` (TensorBoard), with dummy
    credentials; subprocesses inherit them.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint, "S3_ENDPOINT": endpoint,
        }.items():
            patch.setenv(name, value)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Any:
    """A new, empty bucket on the :func:`s3_endpoint` server; yields ``s3://<name>``."""
    import uuid

    import fsspec

    name = f"actlog-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(name)
    yield f"s3://{name}"
    if fs.exists(name):
        fs.rm(name, recursive=True)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Any:
    """A GCS-protocol server on 127.0.0.1 (``gcp-storage-emulator``, in memory) for the whole
    session, gcsfs pointed at it through ``STORAGE_EMULATOR_HOST``; yields its URL."""
    import logging
    import socket

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    with socket.socket() as sock:  # the emulator needs a port number before it starts
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        patch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # else gcsfs waits on gRPC
        try:
            yield endpoint
        finally:
            server.stop()
