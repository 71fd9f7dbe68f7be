"""The probe stage on its own, without ``fit``: the compiled function and its reductions.

What the device computes (tile levels, per-channel sums, drift sums) must be
byte for byte what the numpy reference computes from the raw activations, on
every backend; the function compiles once and the bytes that leave the device
are a fraction of the activations.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from conftest import to_numpy

from actlog import backends, grid, metadata, probe, stats
from actlog.arrays import NUMPY
from actlog.event import EventAssembler, LayerPlan, LayerResult
from actlog.layers import resolve

pytestmark = pytest.mark.backend


def _function(model, layers, probes, activity=False, **plan_options):
    """A ProbeFunction over ``layers`` of ``model`` and the plans it was built with."""
    inputs = probe.to_tensors(model, probes)
    watched = resolve(model, layers, probe.tracer(model, inputs))
    plans = []
    for w in watched:
        shape = tuple(w.shape[1:])
        height, width, channels = grid.maps_shape(shape)
        shown = plan_options.get("shown", channels)
        layout = grid.plan_layout((height, width), range(shown), **plan_options.get("layout", {}))
        plans.append(LayerPlan(w.name, w.path, type(w.layer).__name__, shape, "channels_last", layout,
                               plan_options.get("norm", "channel"), plan_options.get("cmap", "gray")))
    fn = probe.ProbeFunction(model, model, watched, inputs, plans, backends.current(), activity=activity)
    return fn, plans


def _host(tree):
    return backends.current().fetch(tree)()


@pytest.mark.parametrize(
    "norm, cmap",
    [("channel", "gray"), ("layer", "viridis"), ((-0.5, 0.5), "gray"), ("channel", "diverging"),
     ((-1.0, 2.0), "diverging")],
)
def test_device_levels_and_sums_equal_the_numpy_reference(tiny_model, tiny_probes, norm, cmap):
    fn, plans = _function(tiny_model, ["conv_0", "conv_1", "logits"], tiny_probes, norm=norm, cmap=cmap)
    out = _host(fn(fn.first_channels(), fn.zero_sketches()))
    for plan, result in zip(plans, out, strict=True):
        sub = keras.Model(tiny_model.input, tiny_model.get_layer(plan.name).output)
        acts = to_numpy(sub(tiny_probes, training=False))
        maps = grid.batch_maps(NUMPY, acts)
        levels, nonfinite = grid.levels(NUMPY, maps, np.asarray(plan.layout.channels), plan.layout,
                                        norm=norm, cmap=cmap)
        np.testing.assert_array_equal(result["levels"], levels, err_msg=plan.name)
        assert not nonfinite.any()
        expected = stats.reduce_layer(NUMPY, acts)
        for key, values in expected.items():
            device = stats.unstack(result["sums"], stats.SUMS)[key]
            np.testing.assert_allclose(device, values, rtol=1e-5, atol=1e-5, err_msg=key)
        # ... and the images they make are what grid.render draws from the activations.
        for i in range(len(tiny_probes)):
            image = grid.render_levels(result["levels"][i], plan.layout, cmap=cmap)
            np.testing.assert_array_equal(image, grid.render(maps[i], plan.layout, norm=norm, cmap=cmap))


@pytest.mark.parametrize("activity", [True, False])
def test_channel_activity_is_reduced_only_when_asked(tiny_model, tiny_probes, activity):
    """The score of channels="most_active" (mean |activation| per channel) costs passes
    over every activation: only a function asked for it reduces it, the rest leave zeros."""
    fn, plans = _function(tiny_model, ["conv_0", "conv_1"], tiny_probes, activity=activity)
    out = _host(fn(fn.first_channels(), fn.zero_sketches()))
    for plan, result in zip(plans, out, strict=True):
        sub = keras.Model(tiny_model.input, tiny_model.get_layer(plan.name).output)
        maps = grid.batch_maps(NUMPY, to_numpy(sub(tiny_probes, training=False)))
        expected = stats.activity(NUMPY, maps)
        assert expected.min() > 0  # so that zeros below can only mean "not reduced"
        device = stats.unstack(result["sums"], stats.SUMS)["activity"]
        np.testing.assert_allclose(device, expected if activity else np.zeros_like(expected),
                                   rtol=1e-5, atol=0, err_msg=plan.name)


def test_nonfinite_values_are_masked_on_the_device(tiny_model, tiny_probes):
    """Also by a function compiled while every value was finite (a host that skips the
    masks for a finite layer decides at run time, not when tracing)."""
    fn, plans = _function(tiny_model, ["conv_1"], tiny_probes, cmap="viridis")
    finite = _host(fn(fn.first_channels(), fn.zero_sketches()))[0]
    assert not _host(fn(fn.first_channels(), fn.zero_sketches())[0]["nonfinite"]).any()
    layer = tiny_model.get_layer("conv_1")
    kernel, bias = layer.get_weights()
    bias[2] = np.nan
    layer.set_weights([kernel, bias])
    out = fn(fn.first_channels(), fn.zero_sketches())
    assert fn.traces == 1
    host = _host(out)[0]
    mask = _host(out[0]["nonfinite"])
    assert mask[..., 2].all() and not mask[..., [0, 1, 3, 4, 5]].any()
    assert (host["levels"][..., 2] == 0).all()
    summary = stats.summarize(host["sums"], None, size=mask.size)
    assert summary.finite is False and np.isnan(summary.channel_mean[2])
    np.testing.assert_array_equal(host["levels"][..., [0, 1]], finite["levels"][..., [0, 1]])


def test_compiled_once_and_chosen_channels_are_an_argument(tiny_model, tiny_probes):
    fn, plans = _function(tiny_model, ["conv_1"], tiny_probes, shown=3, layout={"rows": 1, "cols": 3})
    previous = fn.zero_sketches()
    for chosen in ([0, 1, 2], [3, 4, 5], [5, 0, 2]):
        out = fn(fn.channels([chosen]), previous)
        previous = [o["sketch"] for o in out]
        levels = _host(out)[0]["levels"]
        acts = to_numpy(keras.Model(tiny_model.input, tiny_model.get_layer("conv_1").output)(tiny_probes))
        layout = dataclasses.replace(plans[0].layout, channels=tuple(chosen))
        np.testing.assert_array_equal(
            levels, grid.levels(NUMPY, acts, np.asarray(chosen), layout)[0]
        )
    assert fn.traces == 1


def test_drift_sums_compare_with_the_previous_sketch(tiny_model, tiny_probes):
    fn, _ = _function(tiny_model, ["conv_0"], tiny_probes)
    first = fn(fn.first_channels(), fn.zero_sketches())
    same = _host(fn(fn.first_channels(), [o["sketch"] for o in first]))[0]
    drift = stats.summarize(same["sums"], same["drift"], size=2 * 10 * 10 * 4)
    assert drift.drift == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(drift.channel_drift[drift.channel_max > 0], 0.0, atol=1e-6)


def test_sketches_of_many_layers_share_the_budget_and_still_give_the_drift(monkeypatch, tiny_model,
                                                                           tiny_probes):
    monkeypatch.setattr(stats, "SKETCH_BUDGET", 2 * 2 * 2 * 4 * 3)  # conv_0: (k=2, 10, 10, 4)
    fn, _ = _function(tiny_model, ["conv_0", "conv_1", "conv_0"], tiny_probes)
    assert fn.sketch_sizes[0] == 2 and fn.sketch_shapes[0] == (2, 2, 2, 4)
    first = _host(fn(fn.first_channels(), fn.zero_sketches()))
    assert first[0]["sketch"].shape == (2, 2, 2, 4)
    changed = tiny_probes[::-1].copy()
    fn2, _ = _function(tiny_model, ["conv_0", "conv_1", "conv_0"], changed)
    later = _host(fn2(fn2.first_channels(), [keras.ops.convert_to_tensor(o["sketch"]) for o in first]))
    sub = keras.Model(tiny_model.input, tiny_model.get_layer("conv_0").output)
    before, now = (stats.sketch(NUMPY, to_numpy(sub(p, training=False)), 2) for p in (tiny_probes, changed))
    drift = stats.summarize(later[0]["sums"], later[0]["drift"], size=2 * 10 * 10 * 4)
    cosine = np.sum(now * before) / np.linalg.norm(now) / np.linalg.norm(before)
    assert drift.drift == pytest.approx(1 - cosine, rel=1e-4)


def test_bytes_that_leave_the_device_are_a_quarter_of_the_activations(classic_model_factory):
    model = classic_model_factory(0)
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    fn, plans = _function(model, ["conv_0", "conv_1"], x)
    out = _host(fn(fn.first_channels(), fn.zero_sketches()))
    copied = sum(np.asarray(leaf).nbytes for o in out for leaf in [o["levels"], o["sums"], o["drift"]])
    raw = sum(8 * int(np.prod(p.output_shape)) * 4 for p in plans)
    assert raw / copied > 3.9, (raw, copied)


def test_assembled_event_reads_back_through_tensorboard(tmp_path, tiny_model, tiny_probes, read_run):
    """The host half, fed by the device half: one Summary, written by actlog's writer."""
    from actlog import storage
    from actlog.writer import RunWriter

    fn, plans = _function(tiny_model, ["conv_0"], tiny_probes)
    out = fn(fn.first_channels(), fn.zero_sketches())
    host = _host([{"levels": o["levels"], "sums": o["sums"], "drift": o["drift"]} for o in out])
    assembler = EventAssembler(plans, probes=2, step_axis=metadata.STEP_AXIS_EPOCH)
    results = [LayerResult(h["levels"], h["sums"], None, lambda: None) for h in host]
    body, nonfinite = assembler.layers([0], results)
    header = assembler.header()
    assert nonfinite == []
    RunWriter(storage.LocalStorage(), str(tmp_path / "run")).write(0, [header, body], header=header)
    run = read_run(tmp_path / "run")
    assert set(run) == {metadata.MANIFEST_TAG, metadata.LAYERS_TEXT_TAG, "conv_0/probe_0", "conv_0/probe_1",
                        *(f"conv_0/{s}" for s in ("mean", "std", "sparsity", "dead_fraction")),
                        "conv_0/channel_mean", "conv_0/channel_max"}
    acts = to_numpy(keras.Model(tiny_model.input, tiny_model.get_layer("conv_0").output)(tiny_probes))
    np.testing.assert_array_equal(run["conv_0/probe_1"][0][1], grid.render(acts[1], plans[0].layout))
    assert run["conv_0/mean"][0][1] == pytest.approx(float(acts.mean()), rel=1e-5)
