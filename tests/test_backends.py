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
from conftest import BACKEND, EXPECTED_TRACES

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
    assert result == {"tensorflow": [], "misses": {}, "traces": EXPECTED_TRACES, "steps": [0, 1, 2],
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
    logger = actlog.ActivationLogger(url, tiny_probes, layers=["conv_0"], background=False)

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
