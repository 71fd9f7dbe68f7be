"""Parts of the probe function that share one forward pass (actlog.segments), on every backend.

Forced with tiny part budgets: a residual graph, a second input merged late, the
probe function's results against the same function in one part, and the cases
that must fall back to parts that each start from the probes.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import ACCELERATED, BACKEND, to_numpy
from test_probe import _function, _host

from actlog import probe, segments

pytestmark = pytest.mark.backend


SEVERAL_PARTS_TRACES = 0 if BACKEND == "torch" else 1
"""Traces of each of several parts and their reductions: PyTorch runs them eagerly, on a GPU too
(one CUDA graph per part would keep each part's memory)."""

def _residual_model():
    """Two residual blocks: the cut inside a block must carry the shortcut as well."""
    inputs = keras.Input((8, 8, 2), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    for b in range(2):
        shortcut = h
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"b{b}_a")(h)
        h = keras.layers.BatchNormalization(name=f"b{b}_bn")(h)
        h = keras.layers.Conv2D(4, 3, padding="same", name=f"b{b}_b")(h)
        h = keras.layers.Add(name=f"b{b}_add")([h, shortcut])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    return model


def _late_input_model():
    """The second input joins after the first part: it is passed through to a later one."""
    image = keras.Input((6, 6, 1), name="image")
    mask = keras.Input((6, 6, 1), name="mask")
    h = keras.layers.Conv2D(3, 3, padding="same", name="c0")(image)
    h = keras.layers.Conv2D(3, 3, padding="same", name="c1")(h)
    h = keras.layers.Concatenate(name="join")([h, mask])
    h = keras.layers.Conv2D(2, 3, padding="same", name="c2")(h)
    return keras.Model([image, mask], keras.layers.Flatten()(h))


def _split(monkeypatch, model, layers, probes):
    """The probe function with one part per layer, and the same in one part (on the host or
    on an accelerator)."""
    for budget in ("PART_BYTES", "ACCELERATOR_PART_BYTES"):
        monkeypatch.setattr(probe, budget, 2**40)
    whole, _ = _function(model, layers, probes)
    for budget in ("PART_BYTES", "ACCELERATOR_PART_BYTES", "SEGMENT_BYTES"):
        monkeypatch.setattr(probe, budget, 1)
    split, plans = _function(model, layers, probes)
    return whole, split, plans


def _same(a, b):
    """The same levels and masks; statistics to float32's last bits (TensorFlow's graph may
    order a masked sum differently from an unmasked one)."""
    for i, (x, y) in enumerate(zip(_host(a), _host(b), strict=True)):
        for key in x:
            if np.asarray(x[key]).dtype.kind == "f":
                np.testing.assert_allclose(x[key], y[key], rtol=1e-6, atol=1e-7, err_msg=f"layer {i}, {key}")
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"layer {i}, {key}")


@pytest.mark.parametrize("make, layers, probes", [
    (_residual_model, ["stem", "b0_a", "b0_bn", "b0_add", "b1_a", "b1_add"],
     lambda: np.random.default_rng(0).random((3, 8, 8, 2), dtype=np.float32)),
    (_late_input_model, ["c0", "c1", "c2"],
     lambda: [np.random.default_rng(1).random((2, 6, 6, 1), dtype=np.float32)] * 2),
])
def test_segments_give_the_results_of_one_part(monkeypatch, make, layers, probes):
    model = make()
    nodes = [len(layer._inbound_nodes) for layer in model.layers]
    whole, split, _ = _split(monkeypatch, model, layers, probes())
    assert (whole.parts, whole.strategy) == (1, "symbolic")
    assert (split.parts, split.strategy) == (len(layers), "segments")
    _same(whole(whole.first_channels(), whole.zero_sketches()),
          split(split.first_channels(), split.zero_sketches()))
    # Several parts compile the reductions once per kind of layer: here all are alike but c2.
    assert split.functions == len(layers) + (1 if make is _residual_model else 2)
    split(split.first_channels(), split.zero_sketches())
    assert split.traces == SEVERAL_PARTS_TRACES
    # Cutting the graph leaves the user's model as it was (no extra nodes on its layers).
    assert [len(layer._inbound_nodes) for layer in model.layers] == nodes


def test_a_segment_carries_what_later_layers_need():
    model = _residual_model()
    cut = segments.cut(model, [[model.get_layer("b0_a").output], [model.get_layer("b0_add").output]])
    # After b0_a, the rest of the block needs b0_a's output and the shortcut (the stem's output).
    carried = {id(t) for t in cut[1].model.inputs}
    assert carried == {id(model.get_layer("b0_a").output), id(model.get_layer("stem").output)}
    x = np.random.default_rng(2).random((2, 8, 8, 2), dtype=np.float32)
    watched, carry = cut[0](keras.ops.convert_to_tensor(x))
    (add,), rest = cut[1](carry)
    expected = keras.Model(model.input, model.get_layer("b0_add").output)(x, training=False)
    np.testing.assert_allclose(to_numpy(add), to_numpy(expected), rtol=1e-6, atol=1e-6)
    assert rest == []


def test_watched_layers_out_of_graph_order_run_each_part_from_the_probes(monkeypatch):
    model = _residual_model()
    probes = np.random.default_rng(3).random((2, 8, 8, 2), dtype=np.float32)
    assert segments.cut(model, [[model.get_layer("b1_a").output], [model.get_layer("stem").output]]) is None
    whole, split, _ = _split(monkeypatch, model, {"late": "b1_a", "early": "stem"}, probes)
    assert (split.parts, split.strategy) == (2, "symbolic")
    _same(whole(whole.first_channels(), whole.zero_sketches()),
          split(split.first_channels(), split.zero_sketches()))


def test_several_parts_run_their_forward_passes_eagerly_on_tensorflows_host(monkeypatch):
    """Each traced function keeps its graph and runtime: TensorFlow compiles several parts'
    forward passes only on an accelerator (the reductions, once per kind, are compiled)."""
    probes = np.random.default_rng(0).random((3, 8, 8, 2), dtype=np.float32)
    _, split, _ = _split(monkeypatch, _residual_model(), ["stem", "b0_a", "b1_a"], probes)
    split(split.first_channels(), split.zero_sketches())
    compiles = BACKEND != "tensorflow" or ACCELERATED
    assert split.part_traces == [SEVERAL_PARTS_TRACES if compiles else 0] * 3
    assert split.traces == SEVERAL_PARTS_TRACES  # the reductions


def test_reductions_compiled_alone_mask_nan_like_those_in_one_part(monkeypatch):
    """Reductions compiled on their own may skip the NaN masks for a finite layer, decided at
    run time: the same bytes as one part's, before and after a weight turns NaN."""
    model = _residual_model()
    probes = np.random.default_rng(2).random((3, 8, 8, 2), dtype=np.float32)
    layers = ["stem", "b0_b", "b0_add"]
    whole, split, _ = _split(monkeypatch, model, layers, probes)
    for _ in range(2):
        _same(whole(whole.first_channels(), whole.zero_sketches()),
              split(split.first_channels(), split.zero_sketches()))
        # (b0_b has no ReLU: TensorFlow's graph fuses convolution, bias and ReLU into one
        # oneDNN kernel whose ReLU turns NaN into 0, while eager ops keep it.)
        kernel, bias = model.get_layer("b0_b").get_weights()
        bias[1] = np.nan
        model.get_layer("b0_b").set_weights([kernel, bias])
    out = split(split.first_channels(), split.zero_sketches())
    assert _host(out[1]["nonfinite"])[..., 1].all() and not _host(out[0]["nonfinite"]).any()
    assert split.traces == SEVERAL_PARTS_TRACES
