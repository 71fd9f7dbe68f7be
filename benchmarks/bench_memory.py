"""Peak memory with and without actlog on real-size models (ResNet50 at 224, a U-Net at 256).

Each configuration runs in fresh child processes (``--repeat``, medians), each of which
builds the model, trains ``--steps`` steps and, with actlog, logs ``--events``
events of 8 probes between them (synchronously, so that every byte of an event
is inside the measured window). It prints the peak resident set size of each,
the extra peak actlog adds, how much of it setup keeps (the compiled probe
function: resident growth over ``on_train_begin``), an event's own peak (the
resident peak during the event above the resident size just before it, from
``/proc/self/status`` after resetting ``VmHWM``; Linux) for the first event (which
also runs each compiled function for the first time) and the later ones, and the
target: the raw
activations of the largest watched layer for all probes, plus a few MB. The
same is printed for ``layers="*"`` (every spatial layer: 174 layers of
ResNet50) for scale.

```
python benchmarks/bench_memory.py                      # resnet50 and unet, default layers and "*"
python benchmarks/bench_memory.py --models unet --layers none
```
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PROBES = 8


def _unet(side: int):
    import keras
    from keras import layers as L

    inputs = keras.Input((side, side, 3))
    skips, h = [], inputs
    for filters in (32, 64, 128, 256):
        h = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"down{filters}_a")(h)
        h = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"down{filters}_b")(h)
        skips.append(h)
        h = L.MaxPooling2D(name=f"pool{filters}")(h)
    h = L.Conv2D(512, 3, padding="same", activation="relu", name="bottom")(h)
    for filters, skip in zip((256, 128, 64, 32), reversed(skips), strict=True):
        h = L.Conv2DTranspose(filters, 2, strides=2, name=f"up{filters}")(h)
        h = L.Concatenate(name=f"cat{filters}")([h, skip])
        h = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"dec{filters}")(h)
    outputs = L.Conv2D(3, 1, name="mask")(h)
    return keras.Model(inputs, outputs, name="unet")


def _status(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status``, in MB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Start a new peak (``VmHWM``) from the current resident size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child(model_name: str, layers: str, steps: int, events: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="actlog-memory-") as log_dir:
        return _measure(log_dir, model_name, layers, steps, events, batch)


def _measure(log_dir: str, model_name: str, layers: str, steps: int, events: int, batch: int) -> dict:
    import keras
    import numpy as np

    import actlog

    keras.utils.set_random_seed(0)
    if model_name == "resnet50":
        model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=10)
        model.compile("sgd", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((batch, 224, 224, 3)).astype(np.float32)
        y = np.arange(batch) % 10
    else:
        model = _unet(256)
        model.compile("sgd", "mse")
        x = np.random.default_rng(0).random((batch, 256, 256, 3)).astype(np.float32)
        y = np.zeros_like(x)
    probes = x[:PROBES] if len(x) >= PROBES else np.concatenate([x] * PROBES)[:PROBES]
    logger = None
    out: dict = {"event_peaks_mb": []}
    if layers != "off":
        spec = None if layers == "none" else "*"
        logger = actlog.ActivationLogger(log_dir, probes, layers=spec, background=False)
        logger.set_model(model)
        before = _status("VmRSS")
        logger.on_train_begin()
        out["setup_mb"] = _status("VmRSS") - before
    start = time.perf_counter()
    for step in range(steps):
        model.train_on_batch(x, y)
        if logger is not None and step < events:
            # The event's own peak: above the resident memory just before it.
            fresh = _reset_peak()
            before = _status("VmRSS")
            logger.log_now(step)
            if fresh:
                out["event_peaks_mb"].append(_status("VmHWM") - before)
    seconds = time.perf_counter() - start
    out.update(peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds=seconds)
    if logger is not None:
        plans = logger._session.plans
        out["layers"] = len(plans)
        out["largest_mb"] = max(PROBES * int(np.prod(p.output_shape)) * 4 for p in plans) / 2**20
        out["raw_mb"] = sum(PROBES * int(np.prod(p.output_shape)) * 4 for p in plans) / 2**20
        logger.on_train_end()
        run = actlog.read(logger.log_dir).run()
        out["event_mb"] = run.bytes / max(len(run.steps), 1) / 2**20
        assert logger.misses == {}, logger.misses
    return out


def _median(runs: list[dict]) -> dict:
    """Each figure's median over repeated children (peak RSS moves by tens of MB run to run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, list):
            out[key] = [statistics.median(r[key][i] for r in runs) for i in range(len(value))]
        elif isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,unet")
    parser.add_argument("--layers", default="none,all", help="none (the default choice) and/or all ('*')")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="children per configuration (medians)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child, args.steps, args.events, args.batch)))
        return 0

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"backend {backend}; peak RSS of a process that builds the model and trains {args.steps} "
          f"steps (batch {args.batch}); with actlog, {args.events} events of {PROBES} probes in between; "
          f"medians of {args.repeat} processes each")
    print("| model | layers | watched | peak without | peak with | extra peak | setup | first event's "
          "peak | later events' peak | target: largest layer x probes + 8 MB | all watched raw | "
          "MB per event |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        runs = {}
        for layers in ["off", *args.layers.split(",")]:
            found = []
            for _ in range(args.repeat):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", model, layers, "--steps", str(args.steps),
                     "--events", str(args.events), "--batch", str(args.batch)],
                    capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                )
                if done.returncode != 0:
                    print(f"{model} {layers}: failed: {done.stderr.strip().splitlines()[-1:]}")
                    break
                found.append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:
                runs[layers] = _median(found)
        base = runs.get("off")
        for layers, r in runs.items():
            if layers == "off" or base is None:
                continue
            extra = r["peak_mb"] - base["peak_mb"]
            target = r["largest_mb"] + 8
            first, *later = r["event_peaks_mb"] or [float("nan")]
            event = max(later, default=float("nan"))
            print(
                f"| {model} | {'None' if layers == 'none' else repr('*')} | {r['layers']} | "
                f"{base['peak_mb']:.0f} MB | {r['peak_mb']:.0f} MB | {extra:+.0f} MB "
                f"({'met' if extra <= target else 'over'}) | {r['setup_mb']:.0f} MB | {first:.0f} MB | "
                f"{event:.0f} MB ({'met' if event <= target else 'over'}) | {target:.0f} MB | "
                f"{r['raw_mb']:.0f} MB | {r['event_mb']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
