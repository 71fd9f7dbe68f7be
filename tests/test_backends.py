"""What each Keras backend promises: no TensorFlow unless it is the backend, remote stores.

Run once per backend (``KERAS_BACKEND``); the suite's other backend tests check
the grids themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ACCELERATED, BACKEND, CUDA

import actlog
from actlog import metadata

pytestmark = pytest.mark.backend

_WHOLE_RUN = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_classic_model
    import numpy as np
    import actlog
    from actlog import export

    x = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    y = np.arange(32) % 10
    model = make_classic_model(0)
    logger = actlog.ActivationLogger(sys.argv[1], x[:4], layers=["conv_0", "conv_1"], batch_freq=2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[logger])
    maps = actlog.feature_maps(model, x[:1], layers=["conv_1"])
    run = actlog.read(sys.argv[1]).run()
    export.export(run, "conv_0", 0, sys.argv[1] + "/conv_0.gif")
    print(json.dumps({{
        "tensorflow": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
        "misses": logger.misses, "traces": logger.probe_function.traces, "steps": run.steps,
        "maps": list(maps["conv_1"].shape),
    }}))
    """
)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the backend here")
def test_a_whole_run_never_imports_tensorflow(tmp_path):
    """fit with epoch and batch logging, the one-shot API, the reader and the exporter."""
    script = tmp_path / "run.py"
    script.write_text(_WHOLE_RUN.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"tensorflow": [], "misses": {}, "traces": 1, "steps": [0, 1, 2],
                      "maps": [1, 11, 11, 64]}


def test_log_dir_on_an_fsspec_store(tiny_model, tiny_data, tiny_probes):
    """``memory://`` stands for gs://, s3://, ...: written by fsspec, read back by actlog.read."""
    import fsspec

    url = f"memory://actlog-test-{BACKEND}/exp"
    logger = actlog.ActivationLogger(url, tiny_probes, layers=["conv_0"], batch_freq=2)
    tiny_model.fit(*tiny_data, batch_size=8, epochs=2, verbose=0, callbacks=[logger])
    assert logger.misses == {}
    fs = fsspec.filesystem("memory")
    files = fs.ls(f"{url}/{metadata.EPOCH_RUN}", detail=False)
    assert len(files) == 1 and "tfevents" in files[0]
    log = actlog.read(url)
    assert log.runs == [metadata.EPOCH_RUN, metadata.BATCH_RUN]
    steps, grids = log.run().grids("conv_0", 1)
    assert steps.tolist() == [0, 1, 2] and grids.shape[0] == 3
    fs.rm(url, recursive=True)


def test_an_fsspec_store_that_disappears_is_reported(tiny_model, tiny_data, tiny_probes):
    import fsspec

    url = f"memory://actlog-gone-{BACKEND}/exp"
    # No epoch logs: the count asserted is the activation run's (its own file disappears once).
    logger = actlog.ActivationLogger(url, tiny_probes, layers=["conv_0"], background=False, epoch_logs=False)

    import keras

    class Remove(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                fsspec.filesystem("memory").rm(url, recursive=True)

    with pytest.warns(RuntimeWarning, match=r"actlog \(removed\): the event file .* disappeared"):
        tiny_model.fit(*tiny_data, batch_size=8, epochs=3, verbose=0, callbacks=[logger, Remove()])
    assert logger.misses == {"removed": 1}
    assert actlog.read(url).run().grid_steps("conv_0", 0) == [2, 3]


def test_an_unknown_store_is_refused_in_init(tiny_probes):
    # (On TensorFlow, tf.io.gfile is asked too before the store is refused.)
    with pytest.raises(ValueError, match=r"log_dir 'nosuchproto://x'.*Accepted: a local directory, or a URL"):
        actlog.ActivationLogger("nosuchproto://x", tiny_probes)


def test_the_backend_in_use_is_the_one_asked_for():
    import keras

    from actlog import backends

    assert keras.backend.backend() == BACKEND
    assert backends.current().name == BACKEND
    assert np.isfinite(0.0)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend's own check")
def test_torch_knows_a_layer_is_finite_on_the_host_only_when_it_is():
    import torch

    from actlog import arrays
    from actlog.backends.torch import TorchBackend

    ops = TorchBackend.ops
    x = torch.ones(2, 5, 5, 3)
    assert arrays.all_finite(ops, x) is True
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[1, 4, 4, 2] = bad
        assert arrays.all_finite(ops, y) is False, bad
        assert not ops.isfinite(y)[1, 4, 4, 2] and ops.isfinite(y).sum() == y.numel() - 1
    # Finite values whose sum overflows take the masked path: slower, never wrong.
    assert arrays.all_finite(ops, torch.full((4,), 3e38)) is False
    assert arrays.all_finite(arrays.NUMPY, np.ones(3)) is False  # numpy never skips its masks


# -- where the reductions run ------------------------------------------------------------

torch_on_the_host = pytest.mark.skipif(BACKEND != "torch" or CUDA,
                                       reason="PyTorch's own threads on the CPU")


def test_the_training_thread_runs_the_reductions_only_on_an_accelerator(tiny_model, tiny_probes):
    """On the host, every backend hands the raw outputs on: the sketches are known only once
    the part is finished (in the background); on an accelerator at once. Same results."""
    from test_probe import _function, _host

    fn, _ = _function(tiny_model, ["conv_0", "conv_1"], tiny_probes)
    zeros = fn.zero_sketches()
    (part,) = fn.run_parts(fn.first_channels(), zeros)
    assert part.indices == [0, 1]
    assert [s is not None for s in part.sketches] == [ACCELERATED] * 2
    later = _host(part.finish())
    now = _host(fn(fn.first_channels(), zeros))
    for a, b in zip(later, now, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.skipif(ACCELERATED, reason="on an accelerator nothing waits for the background")
def test_at_most_one_part_waits_for_its_reductions():
    """Raw outputs in the background are bounded: the next part's device half hands its
    outputs on only once the last part is reduced (through the backend's public seam,
    decided by order: the other thread's forward pass has run before the reductions do)."""
    import threading

    from actlog import backends

    log: list[str] = []
    changed = threading.Condition()

    def note(what):
        with changed:
            log.append(what)
            changed.notify_all()

    def forward(inputs, channels, previous):
        note(f"forward {inputs}")
        return [inputs], []

    def reduce(outputs, channels, previous):
        note(f"reduced {outputs[0]}")
        return [{"levels": outputs[0]}]

    room = threading.Semaphore(1)
    device, host = backends.current().split(None, lambda fn: fn, forward, None, reduce, room)
    first, _ = device(1, [], [])

    def second():
        handoff, _ = device(2, [], [])
        note("handed 2")
        host(handoff, [], [])

    thread = threading.Thread(target=second)
    thread.start()
    with changed:
        changed.wait_for(lambda: "forward 2" in log)
    assert host(first, [], []) == [{"levels": 1}]
    thread.join()
    assert log == ["forward 1", "forward 2", "reduced 1", "handed 2", "reduced 2"]


def _classic_fit(log_dir, epochs=3, before=(), **options):
    import keras
    from conftest import make_classic_model

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    y = np.arange(32) % 10
    logger = actlog.ActivationLogger(log_dir, x[:2], layers=["conv_0", "conv_1"], **options)
    make_classic_model(0).fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=False,
                              callbacks=[*(make(logger) for make in before), logger])
    return logger


def _finishing(finish):
    """A callback, before the logger, that has each part of the logger's events finish through
    ``finish(part, epoch)`` (the probe function's public ``run_parts``)."""
    import dataclasses

    import keras

    def make(logger):
        class Finishing(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                function = logger.probe_function
                run_parts = type(function).run_parts.__get__(function)

                def wrapped(channels, previous):
                    for part in run_parts(channels, previous):
                        yield dataclasses.replace(part, finish=lambda part=part: finish(part, epoch))

                function.run_parts = wrapped

        return Finishing()

    return make


def test_a_fault_in_background_reductions_loses_that_event_only(tmp_path, read_run):
    """The next event's drift compares with the last event that was reduced: the same value as
    a run that logged only those two events."""

    def failing(part, epoch):
        out = part.finish()
        if epoch == 0:  # step 1
            raise RuntimeError("reductions failed")
        return out

    with pytest.warns(RuntimeWarning, match="step 1 .*reductions failed"):
        logger = _classic_fit(tmp_path / "fault", before=[_finishing(failing)])
    assert sum(logger.misses.values()) == 1
    faulty = read_run(tmp_path / "fault" / "activations")
    _classic_fit(tmp_path / "every_other", freq=2)
    clean = read_run(tmp_path / "every_other" / "activations")
    for layer in ("conv_0", "conv_1"):
        assert [s for s, _ in faulty[f"{layer}/mean"]] == [0, 2, 3]
        assert [s for s, _ in clean[f"{layer}/drift"]] == [2]
        (_, expected), = clean[f"{layer}/drift"]
        assert faulty[f"{layer}/drift"][0][0] == 2
        np.testing.assert_allclose(faulty[f"{layer}/drift"][0][1], expected, rtol=1e-6)


@torch_on_the_host
def test_background_reductions_leave_the_training_thread_its_torch_threads(tmp_path):
    """The worker runs its ops on one thread (a second OpenMP team slows every op of the
    training thread); the training thread keeps its own setting, also when jobs run inline."""
    import threading

    import torch

    threads = {}

    def counting(part, epoch):
        out = part.finish()
        threads[threading.current_thread() is threading.main_thread()] = torch.get_num_threads()
        return out

    before = torch.get_num_threads()
    _classic_fit(tmp_path / "background", epochs=2, before=[_finishing(counting)])
    assert threads == {False: 1} and torch.get_num_threads() == before
    threads.clear()
    _classic_fit(tmp_path / "inline", epochs=2, background=False, before=[_finishing(counting)])
    assert threads == {True: before} and torch.get_num_threads() == before


# -- PyTorch on a GPU: one CUDA graph ------------------------------------------------------

cuda_graphs = pytest.mark.skipif(not CUDA, reason="PyTorch on a GPU captures the probe function in a "
                                 "CUDA graph (run on a GPU machine: no CI runner has one)")


def _numpy(tree):
    return [t.detach().cpu().numpy() for t in tree]


@cuda_graphs
def test_a_function_cuda_graphs_refuse_runs_eagerly_with_a_warning():
    import warnings

    import torch

    from actlog.backends import current

    def waits_for_the_host(inputs):
        return [inputs * float(inputs.sum().item())]

    x = torch.ones(3, device="cuda")
    fn = current().compile(waits_for_the_host, None, (x,), eager=False)
    with pytest.warns(UserWarning, match=r"actlog: the probe function could not be captured in a CUDA graph"):
        out = fn(x)
    assert _numpy(out)[0].tolist() == [3.0, 3.0, 3.0]
    assert fn.traces == 0 and fn.eager_reason
    # The training thread is back on its own stream (a failed capture leaves the capture's).
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _numpy(fn(x * 2.0))[0].tolist() == [12.0, 12.0, 12.0]  # CUDA still works, no new warning


@cuda_graphs
def test_python_and_numpy_values_given_to_keras_ops_are_captured_in_the_graph():
    """Keras' PyTorch ops make a GPU tensor of each Python number they are given: a copy from
    the host that a graph cannot hold, unless captured as a fill (or from pinned memory)."""
    import warnings

    import keras
    import torch

    from actlog.backends import current

    def with_constants(inputs):
        clipped = keras.ops.where(inputs > 0.5, inputs, 0.25)
        return [keras.ops.add(keras.ops.multiply(clipped, 3.0), np.array([1.0, 2.0, 3.0], np.float32))]

    x = torch.as_tensor(np.random.default_rng(2).random((4, 3), np.float32), device="cuda")
    fn = current().compile(with_constants, None, (x,), eager=False)
    expected = np.where(x.cpu().numpy() > 0.5, x.cpu().numpy(), 0.25) * 3.0 + np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            np.testing.assert_allclose(_numpy(fn(x))[0], expected, rtol=1e-6)
    assert fn.traces == 1 and fn.eager_reason is None


@cuda_graphs
def test_runs_that_share_the_graph_keep_their_own_drift_sketches(monkeypatch, tmp_path, read_run):
    """The epoch run's drift compares with its own last event, though the batch run replays the
    same graph in between: the same drift as a run that logs epochs only."""
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    both = _classic_fit(tmp_path / "both", batch_freq=1)
    alone = _classic_fit(tmp_path / "alone")
    assert both.misses == alone.misses == {}
    assert both.probe_function.traces == 1
    with_batches, epochs_only = (read_run(tmp_path / run / "activations") for run in ("both", "alone"))
    for layer in ("conv_0", "conv_1"):
        drift = with_batches[f"{layer}/drift"]
        assert [s for s, _ in drift] == [s for s, _ in epochs_only[f"{layer}/drift"]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in drift], [v for _, v in epochs_only[f"{layer}/drift"]],
                                   rtol=1e-3, atol=1e-6)


# -- Depthwise and separable convolutions: Keras' own, in the probe function as in training ---

def test_depthwise_and_separable_layers_log_the_statistics_of_keras_own_feature_maps(tmp_path, read_run):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(inputs)
    h = keras.layers.SeparableConv2D(4, 3, strides=2, name="separable")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).random((8, 12, 12, 3)).astype(np.float32)
    logger = actlog.ActivationLogger(tmp_path, x[:2], layers=["depthwise", "separable"], background=False)
    model.fit(x, np.zeros((8, 2)), epochs=2, batch_size=4, verbose=0, callbacks=[logger])
    assert logger.misses == {} and logger.probe_function.traces == 1
    # The last event's statistics equal those of Keras' own feature maps, same weights.
    maps = actlog.feature_maps(model, x[:2], layers=["depthwise", "separable"])
    logged = read_run(tmp_path / metadata.EPOCH_RUN)
    for layer in ("depthwise", "separable"):
        steps = [step for step, _ in logged[f"{layer}/mean"]]
        assert steps == [0, 1, 2]
        np.testing.assert_allclose(logged[f"{layer}/mean"][-1][1], maps[layer].mean(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(logged[f"{layer}/std"][-1][1], maps[layer].std(), rtol=1e-4)
        channel_max = maps[layer].reshape(-1, maps[layer].shape[-1]).max(axis=0)
        np.testing.assert_allclose(logged[f"{layer}/channel_max"][-1][1], channel_max, rtol=1e-6)


# -- PyTorch on the CPU: the probe function traced once and replayed ---------------------------

torch_only = pytest.mark.skipif(BACKEND != "torch" or CUDA, reason="Keras' PyTorch backend on the CPU")


def _count_layer_calls(monkeypatch):
    import keras

    calls = []
    original = keras.layers.Layer.__call__

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", spy)
    return calls


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=torch_only),
                                    pytest.param("cuda", marks=cuda_graphs)])
def test_a_captured_probe_function_replays_with_the_current_weights(monkeypatch, device):
    """PyTorch captures the probe function once: a CUDA graph on a GPU, a traced graph of its
    ops on the CPU (the same bytes as Keras' eager call there). A replay runs no Keras code,
    reads the weights as they are now, and returns tensors of its own."""
    import keras
    import torch
    from conftest import make_classic_model

    from actlog.backends import current

    model = make_classic_model(0)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((4, 28, 28, 1), np.float32), device=device)
    conv = keras.Model(model.inputs, model.get_layer("conv_1").output)

    def probe(inputs):
        return [model(inputs, training=False), conv(inputs, training=False)]

    captured = current().compile(probe, model, (x,), eager=False)
    eager = current().compile(probe, model, (x,), eager=True)

    def check(out, inputs):
        for mine, theirs in zip(_numpy(out), _numpy(eager(inputs)), strict=True):
            if device == "cpu":
                np.testing.assert_array_equal(mine, theirs)
            else:  # cuDNN may choose other algorithms inside a graph
                np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)

    first = captured(x)
    check(first, x)
    kept = [a.copy() for a in _numpy(first)]
    calls = _count_layer_calls(monkeypatch)
    replayed = captured(x + 1.0)
    assert calls == []  # no Keras model or layer ran
    check(replayed, x + 1.0)  # new arguments
    # A training step updates the weights in place: the same capture sees the new ones.
    model.train_on_batch(rng.random((8, 28, 28, 1), np.float32), np.arange(8))
    second = captured(x)
    check(second, x)
    assert not np.allclose(_numpy(second)[1], kept[1])  # conv_1 moved with the weights
    # Every call returns tensors of its own: the first call's results are untouched.
    for before, now in zip(kept, _numpy(first), strict=True):
        np.testing.assert_array_equal(before, now)
    assert captured.traces == 1 and captured.eager_reason is None
    # A weight whose storage moves (a new tensor, not an update in place): captured again.
    kernel = model.get_layer("digits").kernel
    kernel._value = torch.nn.Parameter(kernel._value.detach() * 2.0)
    check(captured(x), x)
    assert captured.traces == 2


@torch_only
@pytest.mark.parametrize("read", ["a branch", "a weight's item", "numpy", "tolist"])
def test_a_function_that_reads_a_tensor_in_python_runs_eagerly_with_a_warning(read):
    """Each read would fix its value in a traced graph (make_fx itself refuses only some):
    the function runs eagerly, and the value is read again at each call."""
    import warnings

    import torch

    from actlog.backends import current

    weight = torch.nn.Parameter(torch.ones(()), requires_grad=False)
    reads = {
        "a branch": lambda x: x * 2.0 if float(x.sum()) > 0 else x,
        "a weight's item": lambda x: x * weight.item(),
        "numpy": lambda x: x * float(x.numpy().sum()),
        "tolist": lambda x: x * x.tolist()[0],
    }

    def probe(inputs):
        return [reads[read](inputs)]

    fn = current().compile(probe, None, (torch.ones(3),), eager=False)
    with pytest.warns(UserWarning, match=r"actlog: the probe function could not be traced into one graph "
                                         r"of PyTorch ops, so it runs eagerly"):
        out = fn(torch.ones(3))
    np.testing.assert_array_equal(_numpy(out)[0], _numpy(probe(torch.ones(3)))[0])
    said = "data-dependent" if read == "a branch" else "reads a tensor's value in Python"  # make_fx's, ours
    assert fn.traces == 0 and said in fn.eager_reason
    with torch.no_grad():
        weight.fill_(5.0)
    other = torch.full((3,), -2.0)
    expected = {"a branch": -2.0, "a weight's item": -10.0, "numpy": 12.0, "tolist": 4.0}[read]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _numpy(fn(other))[0].tolist() == [expected] * 3


@torch_only
def test_numbers_read_from_constants_are_traced():
    """Keras' PyTorch RNN loops while a step counter is below the number of steps: numbers
    from constants, the same at every call, which the trace keeps."""
    import warnings

    import torch

    from actlog.backends import current

    def probe(inputs):
        step, steps = torch.tensor(0), torch.tensor(3)
        while step < steps:
            inputs = inputs * 2.0
            step = step + 1
        return [inputs]

    fn = current().compile(probe, None, (), eager=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _numpy(fn(torch.ones(2)))[0].tolist() == [8.0, 8.0]
        assert _numpy(fn(torch.full((2,), 3.0)))[0].tolist() == [24.0, 24.0]
    assert fn.traces == 1 and fn.eager_reason is None


@torch_only
def test_the_same_tensors_in_another_structure_are_traced_apart():
    """The same tensors in other lists are another call: the first call's graph cannot take
    them (it would fail to unpack them)."""
    import torch

    from actlog.backends import current

    def probe(first, second):
        return [torch.stack(first).sum(0) - torch.stack(second).sum(0)]

    fn = current().compile(probe, None, (), eager=False)
    a, b, c = torch.ones(2), torch.full((2,), 3.0), torch.full((2,), 10.0)
    assert _numpy(fn([a], [b, c]))[0].tolist() == [-12.0, -12.0]
    assert _numpy(fn([a, b], [c]))[0].tolist() == [-6.0, -6.0]
    assert fn.traces == 2


@torch_only
def test_a_function_that_fails_raises_its_own_error_without_a_warning():
    import warnings

    import torch

    from actlog.backends import current

    fn = current().compile(lambda inputs: [inputs.reshape(7)], None, (torch.ones(3),), eager=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=r"shape '\[7\]' is invalid for input of size 3"):
            fn(torch.ones(3))
    assert fn.traces == 0 and fn.eager_reason is None
