"""Only the chief writes, and the grids are one device's: on every backend.

A backend fixes its devices when it first initialises them, and a process can
be one worker of one cluster only, so every run here is a child process.

TensorFlow (``tf.distribute``), started once for the module and in parallel:

- ``local``: splits the CPU into two logical devices, then trains the tiny
  model three times with the same seed, data and batches: on one device
  (``single``), under ``MirroredStrategy`` over both devices (``mirrored``)
  and on one device with ``log_dir="ram://..."`` (copied out afterwards).
- ``worker 0`` and ``worker 1``: ``MultiWorkerMirroredStrategy`` over two
  processes on 127.0.0.1 (``TF_CONFIG``, free ports), each with its own
  ``log_dir``, as on two machines.

JAX: ``keras.distribution.DataParallel`` over two host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``) against one device. And two
``jax.distributed`` processes on 127.0.0.1 (two host devices each, gloo CPU collectives,
a free port), each fitting its half of the data, under ``DataParallel`` and under
``ModelParallel`` (conv kernels sharded on the model axis of a 2 x 2 mesh over both
processes), with an atlas and an activation maximisation: process 1 creates nothing,
process 0's log equals one device's (a third process, which also runs ``ModelParallel``
over a 2 x 2 mesh of its own four devices); then faults: one injected in the probe function
on every process, the chief's ``log_dir`` removed mid-run, each again with ``strict=True``.
A desynchronised collective hangs: every wait has a timeout.

PyTorch: two ``torch.distributed`` processes (gloo on 127.0.0.1): only rank 0
writes, and what it writes equals a single process's log.

The tests compare what each run wrote, read back with ``actlog.read``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BACKEND  # noqa: E402

import actlog  # noqa: E402
from actlog import metadata  # noqa: E402

pytestmark = [pytest.mark.backend, pytest.mark.slow]

EPOCHS = 2
LAYERS = ["conv_0", "conv_1"]

_COMMON = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests!r})
    import tensorflow as tf
    import keras
    from conftest import make_tiny_data, make_tiny_model
    import actlog

    x, y = make_tiny_data()
    probes = x[:2]

    def train(log_dir, strategy=None):
        if strategy is None:
            model = make_tiny_model(0)
        else:
            with strategy.scope():
                model = make_tiny_model(0)
        logger = actlog.ActivationLogger(log_dir, probes, layers={layers!r})
        # no shuffling: every run sees the same global batches in the same order
        model.fit(x, y, batch_size=8, epochs={epochs}, shuffle=False, verbose=0, callbacks=[logger])
        return logger
    """
)

_LOCAL = _COMMON + textwrap.dedent(
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    out = sys.argv[1]
    train(os.path.join(out, "single"))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    mirrored = train(os.path.join(out, "mirrored"), strategy)

    ram = "ram://actlog-test/logs"
    train(ram)
    # ram:// lives in this process only: copy what was written out for the test to read
    copied = []
    for directory, _, files in tf.io.gfile.walk(ram):
        target = os.path.join(out, "ram", directory[len(ram):].lstrip("/"))
        os.makedirs(target, exist_ok=True)
        for name in files:
            tf.io.gfile.copy(directory.rstrip("/") + "/" + name, os.path.join(target, name))
            copied.append(name)
    print(json.dumps({{"mirrored_misses": mirrored.misses, "ram_files": copied}}))
    """
)

_WORKER = _COMMON + textwrap.dedent(
    """
    # Keras 3 (3.15 at least) cannot fit() under MultiWorkerMirroredStrategy as it is
    # (keras-team/keras#20585): before the first step it averages a distributed batch
    # with strategy.reduce(), which the collective ops reject, and each step then
    # averages the scalar logs over an axis 0 they do not have. Building the model's
    # state from a local batch, and averaging the logs over this worker's replicas
    # (the gradients are still all-reduced), trains exactly the same weights.
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=(x[:8], y[:8]))

    TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    logger = train(sys.argv[1], strategy)
    print(json.dumps({{"task": strategy.cluster_resolver.task_id, "misses": logger.misses,
                       "replicas": strategy.num_replicas_in_sync}}))
    """
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _only(backend: str) -> Any:
    return pytest.mark.skipif(BACKEND != backend, reason=f"a {backend} test; KERAS_BACKEND={BACKEND}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """Start the three TensorFlow child processes at once; their outputs and log directories."""
    root = tmp_path_factory.mktemp("distributed")
    tests = str(Path(__file__).parent)
    local_py, worker_py = root / "local.py", root / "worker.py"
    local_py.write_text(_LOCAL.format(tests=tests, layers=LAYERS, epochs=EPOCHS))
    worker_py.write_text(_WORKER.format(tests=tests, layers=LAYERS, epochs=EPOCHS))

    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    children = {"local": subprocess.Popen(
        [sys.executable, str(local_py), str(root / "local")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )}
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        children[f"worker{index}"] = subprocess.Popen(
            [sys.executable, str(worker_py), str(root / f"worker{index}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env, "TF_CONFIG": json.dumps(tf_config)},
        )
    return _collect(children, root, timeout=240)


def _collect(children: dict[str, subprocess.Popen], root: Path, *, timeout: float) -> dict[str, Any]:
    """Each child's last line of output (JSON) by name, and ``root``; a child that fails, or
    runs past ``timeout`` (a desynchronised collective hangs), fails the test."""
    results: dict[str, Any] = {"root": root}
    try:
        for name, child in children.items():
            out, err = child.communicate(timeout=timeout)
            assert child.returncode == 0, f"{name} failed:\n{err[-4000:]}"
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.communicate()
    return results


def _grids(log_dir: Path, run_name: str = metadata.EPOCH_RUN) -> dict[tuple[str, int, int], np.ndarray]:
    run = actlog.read(log_dir).run(run_name)
    found = {}
    for layer in run.layers:
        for probe in range(run.probes):
            steps, grids = run.grids(layer, probe)
            for step, image in zip(steps, grids, strict=True):
                found[(layer, probe, int(step))] = image
    return found


def _assert_same_grids(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    assert sorted({step for _, _, step in got}) == list(range(EPOCHS + 1))
    for key, image in expected.items():
        # Same seed, same global batches, gradients all-reduced: the same uint8 pixels.
        np.testing.assert_array_equal(got[key], image, err_msg=str(key))


@_only("tensorflow")
def test_mirrored_strategy_gives_the_grids_of_one_device(runs):
    root = runs["root"] / "local"
    single, mirrored = _grids(root / "single"), _grids(root / "mirrored")
    assert runs["local"]["mirrored_misses"] == {}
    _assert_same_grids(mirrored, single)


@_only("tensorflow")
def test_multi_worker_only_the_chief_writes_and_matches_one_process(runs):
    assert {runs[f"worker{i}"]["task"] for i in range(2)} == {0, 1}
    assert all(runs[f"worker{i}"]["replicas"] == 2 for i in range(2))
    assert runs["worker0"]["misses"] == {} and runs["worker1"]["misses"] == {}
    chief, other = runs["root"] / "worker0", runs["root"] / "worker1"
    # the other worker trained to the end but wrote nothing of actlog's
    assert not [p for p in other.rglob("*") if p.is_file()]
    _assert_same_grids(_grids(chief), _grids(runs["root"] / "local" / "single"))


@_only("tensorflow")
def test_ram_filesystem_log_dir(runs, read_run):
    copied = runs["root"] / "local" / "ram"
    assert len(runs["local"]["ram_files"]) == 1
    tags = read_run(copied / metadata.EPOCH_RUN)
    assert metadata.MANIFEST_TAG in tags and [s for s, _ in tags["conv_1/probe_1"]] == [0, 1, 2]
    single = _grids(runs["root"] / "local" / "single")
    ram = _grids(copied)
    assert sorted(ram) == sorted(single)
    for key, image in single.items():
        np.testing.assert_array_equal(ram[key], image, err_msg=str(key))


_JAX = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    sys.path.insert(0, {tests!r})
    import jax
    import keras
    from conftest import make_tiny_data, make_tiny_model
    import actlog

    x, y = make_tiny_data()
    assert len(jax.devices()) == 2, jax.devices()

    def train(log_dir):
        model = make_tiny_model(0)
        logger = actlog.ActivationLogger(log_dir, x[:2], layers={layers!r})
        model.fit(x, y, batch_size=8, epochs={epochs}, shuffle=False, verbose=0, callbacks=[logger])
        return logger

    single = train(os.path.join(sys.argv[1], "single"))
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    parallel = train(os.path.join(sys.argv[1], "parallel"))
    print(json.dumps({{"misses": [single.misses, parallel.misses],
                       "traces": parallel.probe_function.traces}}))
    """
)


@_only("jax")
def test_jax_data_parallel_gives_the_grids_of_one_device(tmp_path):
    script = tmp_path / "jax_parallel.py"
    script.write_text(_JAX.format(tests=str(Path(__file__).parent), layers=LAYERS, epochs=EPOCHS))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"misses": [{}, {}], "traces": 1}
    _assert_same_grids(_grids(tmp_path / "parallel"), _grids(tmp_path / "single"))


_JAX_PROCESSES = textwrap.dedent(
    """
    import json, os, shutil, sys
    out, port, process = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # two host devices a process; one process alone has the four of a 2 x 2 mesh
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={{4 if port == 'single' else 2}}"
    sys.path.insert(0, {tests!r})
    import jax
    import numpy as np

    if port != "single":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{{port}}", num_processes=2, process_id=process)
    import keras
    from conftest import make_tiny_data, make_tiny_model
    import actlog

    x, y = make_tiny_data()
    options = dict(layers={layers!r}, channels="most_active", max_channels=4,
                   atlas=actlog.Atlas(x, k=3, every=1, batch=8),
                   actmax=actlog.Maximize({{"conv_1": [0, 2]}}, every=2), batch_freq=1)
    # Each process fits its own half, 4 samples a step: a global batch is 4 of each half,
    # which one process sees as these batches of 8.
    half = len(x) // 2
    order = np.concatenate([np.r_[s:s + 4, half + s:half + s + 4] for s in range(0, half, 4)])

    class Inject(keras.callbacks.Callback):
        # before the logger: a fault of the probe function at step 1, on every process alike
        def on_epoch_end(self, epoch, logs=None):
            function = logger.probe_function
            def failing(*args, **kwargs):
                del function.run_parts
                raise RuntimeError("the probe function failed")
            if epoch == 0:
                function.run_parts = failing

    class Remove(keras.callbacks.Callback):
        # after the logger: the chief's log_dir disappears after step 1
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0 and jax.process_index() == 0:
                logger.flush()
                shutil.rmtree(logger.log_dir)

    def model_parallel(devices, **more):
        # conv kernels, so their activations, sharded on the model axis
        mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
        layouts = keras.distribution.LayoutMap(mesh)
        layouts["conv_.*kernel"] = (None, None, None, "model")
        return keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch", **more)

    def train(name, distribution=None, before=(), after=(), probes=x[:2], **more):
        global logger
        keras.distribution.set_distribution(distribution)
        model = make_tiny_model(0)
        logger = actlog.ActivationLogger(os.path.join(out, name), probes, **options, **more)
        callbacks = [*before, logger, *after]
        if jax.process_count() == 1:
            model.fit(x[order], y[order], batch_size=8, epochs={epochs}, shuffle=False, verbose=0,
                      callbacks=callbacks)
        else:
            mine = slice(process * half, (process + 1) * half)
            model.fit(x[mine], y[mine], batch_size=4, epochs={epochs}, shuffle=False, verbose=0,
                      callbacks=callbacks)
        return logger.misses

    result = {{"process": jax.process_index(), "processes": jax.process_count()}}
    devices = jax.devices()
    assert len(devices) == 4, devices
    if port == "single":
        result["single"] = train("single")
        result["model_single"] = train("model_single", model_parallel(devices))
    else:
        result["data"] = train("data", keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=False))
        result["traces"] = logger.probe_function.traces
        result["model"] = train("model", model_parallel(devices, auto_shard_dataset=False))
        data = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        result["inject"] = train("inject", data, before=[Inject()])
        result["remove"] = train("remove", data, after=[Remove()])
        for name, faults in [("strict", dict(before=[Inject()])), ("strict_remove", dict(after=[Remove()]))]:
            try:
                train(name, data, strict=True, **faults)
            except actlog.LoggingError as err:
                result[name] = err.kind
        try:  # each process its own half's first images
            train("differ", data, probes=x[process * half:][:2])
        except ValueError as err:
            result["differ"] = str(err)
    print(json.dumps(result))
    """
)


def _start_jax(script: Path, out: Path, port: str, process: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out / f"p{process}"), port, str(process)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def jax_processes(tmp_path_factory) -> dict[str, Any]:
    """Two ``jax.distributed`` processes (2 host devices each, gloo on 127.0.0.1) and one
    single-device process, started at once; their outputs and log directories."""
    root = tmp_path_factory.mktemp("jax_processes")
    script = root / "train.py"
    script.write_text(_JAX_PROCESSES.format(tests=str(Path(__file__).parent), layers=LAYERS, epochs=EPOCHS))
    port = str(_free_ports(1)[0])
    children = {"single": _start_jax(script, root, "single", 2),
                **{f"p{i}": _start_jax(script, root, port, i) for i in range(2)}}
    return _collect(children, root, timeout=400)


def _statistics(log_dir: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    run = actlog.read(log_dir).run(metadata.EPOCH_RUN)
    found = {(layer, stat): series for layer in run.layers for stat, series in run.scalars(layer).items()}
    for layer in run.layers:
        for stat in metadata.CHANNEL_STATS:
            found[(layer, stat)] = run.channel_stats(layer, stat)
    return found


def _rare(log_dir: Path) -> dict[tuple[str, str, int], Any]:
    """The atlas (top-k images, their positions and values) and the maximised inputs, by step."""
    run = actlog.read(log_dir).run(metadata.EPOCH_RUN)
    found: dict[tuple[str, str, int], Any] = {}
    for layer in run.layers:
        for step in run.atlas_steps(layer):
            atlas = run.atlas(layer, step)
            found[(layer, "atlas", step)] = (atlas.channels, atlas.index, atlas.position, atlas.value,
                                             atlas.image)
        for step in run.actmax_steps(layer):
            found[(layer, "actmax", step)] = run.actmax(layer, step)
    return found


@_only("jax")
@pytest.mark.parametrize("distribution", ["data", "model", "model_single"])
def test_jax_processes_only_process_0_writes_and_matches_one_process(jax_processes, distribution):
    """DataParallel, and ModelParallel with conv kernels (and so activations) sharded on the
    model axis of a mesh over both processes' devices: process 0's log is one device's. So is
    one process's ModelParallel over the same 2 x 2 mesh of its own four devices."""
    p0, p1, single = jax_processes["p0"], jax_processes["p1"], jax_processes["single"]
    assert (p0["process"], p1["process"], p0["processes"], single["processes"]) == (0, 1, 2, 1)
    assert single["single"] == {}
    if distribution == "model_single":
        assert single[distribution] == {}
        got = jax_processes["root"] / "p2" / distribution
    else:
        assert p0[distribution] == {} and p1[distribution] == {}
        assert p0["traces"] == p1["traces"] == 1
        # process 1 computed every event and created nothing: no file, no directory
        assert not (jax_processes["root"] / "p1").exists()
        got = jax_processes["root"] / "p0" / distribution
    expected = jax_processes["root"] / "p2" / "single"
    _assert_same_grids(_grids(got), _grids(expected))
    # mid-epoch, at every training step of the first epoch, from the trainer's own state
    batches, single_batches = _grids(got, metadata.BATCH_RUN), _grids(expected, metadata.BATCH_RUN)
    assert sorted(batches) == sorted(single_batches)
    assert sorted({step for _, _, step in batches}) == [1, 2]
    for key, image in single_batches.items():
        np.testing.assert_array_equal(batches[key], image, err_msg=str(key))
    statistics, single = _statistics(got), _statistics(expected)
    assert sorted(statistics) == sorted(single)
    # At step 0 the weights are the same: with DataParallel so are the statistics, to the bit.
    # The gradients are averaged over several devices, summed in another order than on one:
    # after a training step the weights (so statistics and the atlas' peak values) may differ
    # in the last bits; the grids (uint8) do not.
    for key, (steps, values) in single.items():
        np.testing.assert_array_equal(statistics[key][0], steps, err_msg=str(key))
        if distribution == "data":  # the others sum a layer's channels held on two devices
            first = steps == 0
            np.testing.assert_array_equal(statistics[key][1][first], values[first], err_msg=str(key))
        np.testing.assert_allclose(statistics[key][1], values, rtol=1e-4, atol=1e-6, err_msg=str(key))
    rare, single_rare = _rare(got), _rare(expected)
    assert sorted(rare) == sorted(single_rare)
    assert {(layer, kind) for layer, kind, _ in rare} == {
        *((layer, "atlas") for layer in LAYERS), ("conv_1", "actmax")}
    for key, value in single_rare.items():
        for part, (mine, theirs) in enumerate(zip(rare[key], value, strict=True)):
            if np.asarray(theirs).dtype.kind == "f" and (key[2] > 0 or distribution != "data"):
                np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6, err_msg=f"{key} {part}")
            else:
                np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=f"{key} {part}")


@_only("jax")
def test_jax_processes_faults_stay_in_step(jax_processes):
    """A fault of the probe function happens on every process alike and is counted there;
    the chief's own write faults stay on the chief: neither desynchronises the collectives
    (both processes trained to the end). ``strict`` raises on every process, either way.
    Probes that differ between the processes fail on every process before training."""
    p0, p1 = jax_processes["p0"], jax_processes["p1"]
    assert p0["inject"] == p1["inject"] == {"internal": 1}
    assert p0["strict"] == p1["strict"] == "internal"
    # strict: process 0's own write fault stops every process, at the same event
    assert p0["strict_remove"] in ("removed", "write") and p1["strict_remove"] == "internal"
    assert p1["remove"] == {} and p0["remove"] and set(p0["remove"]) <= {"removed", "write"}
    for p in (p0, p1):  # before the first epoch, on every process alike
        assert "the probes differ between the JAX processes (process 0 and processes [1]" in p["differ"]
        assert "pass the same probes on every process" in p["differ"]
    root = jax_processes["root"]
    steps = {step for _, _, step in _grids(root / "p0" / "inject")}
    assert steps == {0, 2}  # the step that failed is missing, the next one is there
    assert not (root / "p1").exists()


_TORCH = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import torch.distributed as dist
    from conftest import make_tiny_data, make_tiny_model
    import actlog

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, y = make_tiny_data()
    model = make_tiny_model(0)
    logger = actlog.ActivationLogger(sys.argv[1], x[:2], layers={layers!r})
    model.fit(x, y, batch_size=8, epochs={epochs}, shuffle=False, verbose=0, callbacks=[logger])
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({{"rank": rank, "misses": logger.misses}}))
    """
)


@_only("torch")
def test_torch_distributed_only_rank_0_writes(tmp_path):
    script = tmp_path / "torch_ranks.py"
    script.write_text(_TORCH.format(tests=str(Path(__file__).parent), layers=LAYERS, epochs=EPOCHS))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_ports(1)[0]),
           "WORLD_SIZE": "2"}
    children = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / f"rank{rank}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**env, "RANK": str(rank)})
        for rank in range(2)
    ]
    outputs = []
    try:
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err[-4000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert outputs == [{"rank": 0, "misses": {}}, {"rank": 1, "misses": {}}]
    assert not [p for p in (tmp_path / "rank1").rglob("*") if p.is_file()]
    single = tmp_path / "single.py"
    single.write_text(_TORCH.replace("dist.", "# dist.").format(
        tests=str(Path(__file__).parent), layers=LAYERS, epochs=EPOCHS))
    done = subprocess.run([sys.executable, str(single), str(tmp_path / "single")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RANK": "0"})
    assert done.returncode == 0, done.stderr[-4000:]
    _assert_same_grids(_grids(tmp_path / "rank0"), _grids(tmp_path / "single"))
