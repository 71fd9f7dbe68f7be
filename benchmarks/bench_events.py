"""What one actlog event costs, on every Keras backend, against that backend's floor.

For each backend (one child process each, ``KERAS_BACKEND`` set) and each
model, this prints per event (median over ``--events`` events after warm-up):

- **step**: one training step of the model (``train_on_batch``, batch ``--batch``),
  for scale: an event costs this many steps of training.
- **forward**: the backend's own compiled forward pass of the watched layers and
  the copy of their raw outputs to the host (the floor's first stage): what the
  model itself costs on this backend, whoever logs it.
- **floor**: the least a careful hand-written logger does: one compiled forward
  pass of the watched layers (``tf.function`` / ``jax.jit`` / PyTorch's CUDA graph or,
  on the CPU, traced graph of ops, as actlog compiles it),
  every activation copied to the host, numpy grids (``actlog.grid.render``),
  PNG encoding and one write of one record.
- **sync**: ``ActivationLogger(background=False)``: the whole event on the
  training thread (actlog's path before this release).
- **fwd+copy**: the compiled probe function (forward pass and the reductions
  on the device) plus the copy of its results (selected channels as uint8,
  per-channel sums) to the host: the part that must see the weights. Timed
  twice: **(loop)** back to back, and after ``BETWEEN_STEPS`` training steps (of
  the first ``BETWEEN`` examples of the batch), as an event runs in training.
- **fwd+raw**: the compiled forward pass of the watched layers and the copy of
  their raw outputs to the host (as **forward**), timed after training steps like
  fwd+copy: the least the training thread can wait for.
- **blocked**: ``ActivationLogger()`` (background): what the training thread
  waits for per event, timed like fwd+copy after training steps, the three
  alternating. What ran just before matters on the CPU: a probe function that
  follows a training step or the background's numpy and deflate work finds cold
  caches and idle thread pools, and takes up to 1.5x its time in a loop.
- **cpu**: process CPU time per event of the background path, every thread.
- **compiles**: how many times the probe function was traced after all events
  (1 on every backend: on PyTorch one CUDA graph on a GPU, one traced graph of ops
  on the CPU; 0 on PyTorch in several parts, which run eagerly), and in how many
  parts it runs (more than one when the watched layers' activations exceed 128 MB
  together on the CPU: see ``actlog.probe.PART_BYTES`` and ``SEGMENT_BYTES``).
- **copied**: MB per event leaving the device, against the raw activations.

Targets: sync <= 1.5x floor; blocked <= 1.5x fwd+raw (the MNIST model, CPU);
JAX and PyTorch no slower than TensorFlow on the same model. Below each table,
each backend against TensorFlow: whole times, the forward alone, and the times
beyond the forward (what actlog adds on each backend).

```
python benchmarks/bench_events.py                              # every backend found, mnist + mobilenetv2
python benchmarks/bench_events.py --rounds 3                   # the same three times, interleaved (README)
python benchmarks/bench_events.py --backends jax --models resnet50 --events 10
python benchmarks/bench_events.py --models mnist,vit --events 10   # the ViT example's model
KERAS_BACKEND=jax python benchmarks/bench_events.py            # the same on a GPU machine
```

``--rounds R`` runs every backend's child R times, interleaved (each round starts
with the next backend): a machine's load drifts over minutes, and a comparison between
two backends then pairs children that ran side by side. The tables show each figure's
median over the rounds; the ratios below them are taken within each round, then given
as their median and range.

Each backend runs in the Python given by ``--python BACKEND=PATH``, else in
``.venv`` (TensorFlow), ``.venv-jax`` or ``.venv-torch`` when the checkout has
them (``bash .ci/run`` makes them), else in this Python.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
MODELS = {
    # name: (input side, probes, layers description)
    "mnist": (28, 8, "conv_0 + conv_1"),
    "mobilenetv2": (None, 4, "every Conv2D and DepthwiseConv2D"),
    "resnet50": (224, 4, "every Conv2D"),
    "vit": (32, 6, "layers=None: patch embedding, 3 block outputs, 2 attentions"),
}
BETWEEN = 8  # examples in each training step before a blocked or a fwd+copy event ...
BETWEEN_STEPS = 3  # ... and how many such steps


# --------------------------------------------------------------------------- child


def _build(name: str, side: int):
    import keras

    keras.utils.set_random_seed(0)
    if name == "mnist":
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_classic_model

        return make_classic_model(0), ["conv_0", "conv_1"], (28, 28, 1)
    if name == "vit":  # examples/vit_patches.py's model, with what layers=None watches in it
        sys.path.insert(0, str(ROOT / "examples"))
        from vit_patches import build_vit

        from actlog.layers import resolve

        model = build_vit(10)
        model.compile(optimizer="sgd",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, [w.name for w in resolve(model, None)], (side, side, 1)
    app = {"mobilenetv2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}[name]
    model = app(weights=None, input_shape=(side, side, 3), classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return model, [layer.name for layer in model.layers if isinstance(layer, kinds)], (side, side, 3)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def _rounds(events: int, before: Callable[[], Any], *measures: Callable[[], dict[str, float]]) -> dict:
    """Median ms of what each measure times (it returns ``{key: seconds}``), over ``events``
    rounds after one round of warm-up; every measure of a round runs after ``before()``."""
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for i in range(events + 1):
        for measure in measures:
            before()
            for key, seconds in measure().items():
                if i:
                    samples[key].append(seconds)
    return {key: _median_ms(values) for key, values in samples.items()}


def device_half(session: Any) -> Callable[[Any], tuple[list, list]]:
    """fwd+copy, what must see the weights: ``previous -> (results, host copies)`` runs the
    session's probe function on its shown channels and copies what leaves the device
    (levels, sums, drift)."""
    from actlog import backends

    backend, fn = backends.current(), session.probe_fn
    channels = fn.channels([p.layout.channels for p in session.plans])

    def run(previous: Any) -> tuple[list, list]:
        res = fn(channels, previous)
        return res, backend.fetch([{key: o[key] for key in ("levels", "sums", "drift")} for o in res])()

    return run


def _raw_copy(backend: Any, compiled: Any, inputs: Any) -> Any:
    """fwd+raw: the compiled forward pass of the watched layers, its raw outputs copied."""
    return backend.fetch(compiled(inputs))()


def _train(model: Any, x: Any, y: Any, steps: int) -> None:
    for _ in range(steps):
        model.train_on_batch(x, y)


def _actlog_events(logger: Any, events: int, train: Callable[[], Any], raw: Callable[[], Any]) -> dict:
    """One logger's events in the background and synchronously, its probe function
    with the copy of its results alone (fwd+copy), and ``raw()`` (fwd+raw)."""
    import numpy as np

    sess = logger._session
    fn = sess.probe_fn
    run = device_half(sess)
    steps = iter(range(10**9))
    previous = fn.zero_sketches()
    copied = 0

    def background() -> dict[str, float]:
        c = time.process_time()
        t = time.perf_counter()
        logger.log_now(next(steps))
        blocked = time.perf_counter() - t
        logger.flush()
        return {"background_ms": blocked, "cpu_ms": time.process_time() - c}

    def sync() -> dict[str, float]:
        sess.worker.background = False
        t = time.perf_counter()
        logger.log_now(next(steps))
        sess.worker.background = True
        return {"sync_ms": time.perf_counter() - t}

    def fwd_copy(key: str = "fwd_copy_ms") -> dict[str, float]:
        nonlocal previous, copied
        t = time.perf_counter()
        res, host = run(previous)
        elapsed = time.perf_counter() - t
        previous = [o["sketch"] for o in res]
        copied = sum(np.asarray(v).nbytes for h in host for v in [h["levels"], h["sums"], h["drift"]])
        return {key: elapsed}

    # Blocked against fwd+copy: each after training steps, as in training (what ran just
    # before sets how warm the caches and thread pools are), alternating, so that the
    # machine's drift meets both alike.
    def fwd_raw() -> dict[str, float]:
        t = time.perf_counter()
        raw()
        return {"fwd_raw_ms": time.perf_counter() - t}

    result = _rounds(events, train, background, fwd_copy, fwd_raw)
    result.update(_rounds(events, lambda: None, sync))
    result.update(_rounds(events, lambda: None, lambda: fwd_copy("fwd_copy_loop_ms")))
    return {**result, "copied_mb": round(copied / 1e6, 3), "compiles": fn.traces, "parts": fn.parts}


def _child(models: list[str], events: int, batch: int, side: int) -> dict:
    import keras
    import numpy as np

    import actlog
    from actlog import backends, codec, grid, probe, probes
    from actlog.arrays import NUMPY
    from actlog.png import encode_png

    backend = backends.current()
    device = "cpu"
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0].platform
    elif keras.backend.backend() == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"backend": keras.backend.backend(), "device": device, "models": {}}
    rng = np.random.default_rng(0)
    for name in models:
        default_side, k, _ = MODELS[name]
        model, layers, shape = _build(name, default_side or side)
        x = rng.random((k, *shape)).astype(np.float32)
        xb = rng.random((batch, *shape)).astype(np.float32)
        yb = rng.integers(0, 10, batch)
        for _ in range(3):
            model.train_on_batch(xb, yb)
        step = []
        for _ in range(10):
            t = time.perf_counter()
            model.train_on_batch(xb, yb)
            step.append(time.perf_counter() - t)
        result = {"layers": len(layers), "probes": k, "side": shape[0], "step_ms": _median_ms(step)}

        with tempfile.TemporaryDirectory() as tmp:
            logger = actlog.ActivationLogger(os.path.join(tmp, "actlog"), x, layers=layers)
            logger.set_model(model)
            logger.on_train_begin()
            sess = logger._session
            inputs = probe.to_tensors(model, probes.fit_to_model(probes.copy_probes(x),
                                                                  probe.input_specs(model)))
            forward = probe.Forward(model, sess.watched)
            compiled = backend.compile(forward, model, (inputs,), eager=False)
            train = functools.partial(_train, model, xb[:BETWEEN], yb[:BETWEEN], BETWEEN_STEPS)
            raw_copy = functools.partial(_raw_copy, backend, compiled, inputs)
            result.update(_actlog_events(logger, events, train, raw_copy))
            logger.on_train_end()
            assert logger.misses == {}, logger.misses

            # -- the floor: compiled forward of raw outputs, copy, numpy grids, PNG, one write
            path = os.path.join(tmp, "floor.tfevents")
            floor, forward_alone = [], []
            with open(path, "ab") as handle:
                for i in range(events + 1):
                    t = time.perf_counter()
                    raw = backend.fetch(compiled(inputs))()
                    if i:
                        forward_alone.append(time.perf_counter() - t)
                    summary = []
                    for plan, acts in zip(sess.plans, raw, strict=True):
                        maps = grid.batch_maps(NUMPY, np.asarray(acts, np.float32), plan.layout.tokens)
                        for sample in maps:
                            summary.append(encode_png(grid.render(sample, plan.layout)))
                    handle.write(codec.frame(codec.encode_event(i, b"".join(summary))))
                    handle.flush()
                    if i:
                        floor.append(time.perf_counter() - t)
                    raw_bytes = sum(np.asarray(a).nbytes for a in raw)
            result["floor_ms"] = _median_ms(floor)
            result["forward_ms"] = _median_ms(forward_alone)
            result["raw_mb"] = round(raw_bytes / 1e6, 3)
        out["models"][name] = result
        print(f"# {out['backend']} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------- parent


def _python_for(backend: str, given: dict[str, str]) -> str:
    if backend in given:
        return given[backend]
    venv = ROOT / (".venv" if backend == "tensorflow" else f".venv-{backend}") / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _beyond(ours: dict, theirs: dict, key: str) -> tuple[float, float]:
    """``key``'s time minus the backend's own forward pass, for two backends: what actlog adds
    (0 where the time is within the forward pass's own, which is timed apart)."""
    return max(0.0, ours[key] - ours["forward_ms"]), max(0.0, theirs[key] - theirs["forward_ms"])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--models", default="mnist,mobilenetv2")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="training batch for the step time")
    parser.add_argument("--side", type=int, default=128, help="MobileNetV2 input side (default 128)")
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help="children per backend, interleaved")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    if args.child:
        print(json.dumps(_child(models, args.events, args.batch, args.side)))
        return 0

    given = dict(item.split("=", 1) for item in args.python)
    if os.environ.get("KERAS_BACKEND") and args.backends == ",".join(BACKENDS):
        wanted = [os.environ["KERAS_BACKEND"]]
    else:
        wanted = args.backends.split(",")
    rounds: list[dict[str, dict]] = []
    for r in range(args.rounds):
        rounds.append({})
        for backend in wanted[r % len(wanted):] + wanted[:r % len(wanted)]:
            python = _python_for(backend, given)
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            command = [python, __file__, "--child", backend, "--models", args.models, "--events",
                       str(args.events), "--batch", str(args.batch), "--side", str(args.side)]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{backend}: not measured ({python}): {last}")
                continue
            rounds[-1][backend] = json.loads(done.stdout.strip().splitlines()[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1))
    results = [_over_rounds([one[b] for one in rounds if b in one]) for b in wanted
               if any(b in one for one in rounds)]

    for name in models:
        side, k, what = MODELS[name]
        rows = [(r["backend"], r["device"], r["models"][name]) for r in results if name in r["models"]]
        if not rows:
            continue
        first = rows[0][2]
        over = f", then of {args.rounds} rounds" if args.rounds > 1 else ""
        print(f"\n{name}: {first['layers']} layers ({what}) x {k} probes at "
              f"{first['side']} px; ms per event, median of {args.events}{over}")
        print("| backend | device | step | forward | floor | sync | sync/floor | fwd+copy (loop) | "
              "fwd+copy | fwd+raw | blocked | blocked/(fwd+raw) | cpu | compiles | copied MB (raw) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for backend, device, r in rows:
            print(
                f"| {backend} | {device} | {r['step_ms']} | {r['forward_ms']} | {r['floor_ms']} | "
                f"{r['sync_ms']} | "
                f"{_ratio(r['sync_ms'], r['floor_ms'])} | {r['fwd_copy_loop_ms']} | {r['fwd_copy_ms']} | "
                f"{r['fwd_raw_ms']} | {r['background_ms']} | "
                f"{_ratio(r['background_ms'], r['fwd_raw_ms'])} | {r['cpu_ms']} | "
                f"{r['compiles']} x {r['parts']} | "
                f"{r['copied_mb']} ({r['raw_mb']}) |"
            )
        for backend in ("jax", "torch"):
            pairs = [(one[backend]["models"][name], one["tensorflow"]["models"][name]) for one in rounds
                     if backend in one and "tensorflow" in one and name in one[backend]["models"]]
            if not pairs:
                continue
            ratio = functools.partial(_ratios, pairs)
            print(f"{backend} vs tensorflow: sync {ratio(lambda a, b: (a['sync_ms'], b['sync_ms']))}, "
                  f"blocked {ratio(lambda a, b: (a['background_ms'], b['background_ms']))}, "
                  f"forward {ratio(lambda a, b: (a['forward_ms'], b['forward_ms']))}; beyond the "
                  f"forward: sync {ratio(lambda a, b: _beyond(a, b, 'sync_ms'))}, "
                  f"blocked {ratio(lambda a, b: _beyond(a, b, 'background_ms'))}")
    return 0


def _over_rounds(children: list[dict]) -> dict:
    """One backend's children (one per round) as one result: each number the median over the rounds."""
    if len(children) == 1:
        return children[0]
    models = {}
    for name, first in children[0]["models"].items():
        runs = [child["models"][name] for child in children if name in child["models"]]
        models[name] = {key: (round(statistics.median(run[key] for run in runs), 3)
                              if isinstance(value, float) else value) for key, value in first.items()}
    return {**children[0], "models": models}


def _ratios(pairs: list[tuple[dict, dict]], pick: Callable[[dict, dict], tuple[float, float]]) -> str:
    """``pick``'s ratio for each pair of results (ours, TensorFlow's) of a round: one, or the
    median and range of several."""
    if len(pairs) == 1:
        return _ratio(*pick(*pairs[0]))
    values = sorted(a / b for a, b in (pick(ours, theirs) for ours, theirs in pairs) if b)
    if not values:
        return "-"
    return f"{statistics.median(values):.2f}x ({values[0]:.2f}-{values[-1]:.2f})"


if __name__ == "__main__":
    sys.exit(main())
