"""Bad configuration fails fast: one clear error, before the first training step.

Every row of the table is one wrong configuration of ``ActivationLogger``
with the exception it must raise and a pattern its message must match: what
was received and what is accepted. Each is tried the way a user meets it:
build the logger, then ``fit`` with a callback placed *before* actlog that
counts training batches; the count must still be 0 when the error arrives
(errors about the model can only come at ``on_train_begin``, which Keras calls
before the first batch).
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import keras  # noqa: E402
import numpy as np
import pytest

import actlog  # noqa: E402

pytestmark = pytest.mark.backend

# The tiny model's per-sample output shapes: conv_0 (10, 10, 4), pool_0 (5, 5, 4), conv_1 (3, 3, 6).


def _probes(shape: tuple = (2, 12, 12, 1), dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


def _nan_probes() -> np.ndarray:
    probes = _probes()
    probes[1, 3, 3, 0] = np.nan
    return probes


def _under_a_file(tmp_path: Any) -> str:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    return str(blocker / "logs")


# (id, keyword arguments given a tmp_path, exception, message pattern)
CASES: list[tuple[str, Callable[[Any], dict], type[Exception], str]] = [
    ("freq_negative", lambda t: {"freq": -1}, ValueError, r"freq must be an int >= 0; received -1"),
    ("freq_str", lambda t: {"freq": "1"}, TypeError, r"freq must be an int >= 0; received '1' \(str\)"),
    ("freq_bool", lambda t: {"freq": True}, TypeError, r"freq must be an int >= 0; received True \(bool\)"),
    ("freq_float", lambda t: {"freq": 1.5}, TypeError, r"freq must be an int >= 0; received 1.5 \(float\)"),
    ("batch_freq_negative", lambda t: {"batch_freq": -3}, ValueError,
     r"batch_freq must be an int >= 0; received -3"),
    ("batch_epochs_zero", lambda t: {"batch_freq": actlog.Batches(1, epochs=0)}, ValueError,
     r"Batches epochs must be an int >= 1; received 0"),
    ("max_channels_zero", lambda t: {"max_channels": 0}, ValueError,
     r"max_channels must be an int >= 1; received 0"),
    ("max_pixels_zero", lambda t: {"layout": actlog.Layout(max_pixels=0)}, ValueError,
     r"max_pixels must be an int >= 1; received 0"),
    ("pad_negative", lambda t: {"layout": actlog.Layout(pad=-1)}, ValueError,
     r"pad must be an int >= 0; received -1"),
    ("min_tile_str", lambda t: {"layout": actlog.Layout(min_tile="48")}, TypeError,
     r"min_tile must be an int >= 1; received '48'"),
    ("cmap_jet", lambda t: {"cmap": "jet"}, ValueError,
     r"Unknown cmap 'jet'\. Accepted: \['gray', 'viridis', 'diverging'\]"),
    ("norm_global", lambda t: {"norm": "global"}, ValueError,
     r"Unknown norm 'global'\. Accepted: .*'channel'"),
    ("norm_reversed", lambda t: {"norm": (1, 0)}, ValueError, r"norm \(1, 0\).*Accepted: .*low < high"),
    ("channels_random", lambda t: {"channels": "random"}, ValueError,
     r"Unknown channel selection 'random'\. Accepted: \['first', 'most_active'\]"),
    ("probes_empty_list", lambda t: {"probes": []}, ValueError,
     r"probes must be a non-empty batch \(k, \.\.\.\) with k >= 1; received shape \(0,\)"),
    ("probes_none", lambda t: {"probes": None}, TypeError,
     r"probes must be numeric .*; received dtype object \(None\)"),
    ("probes_strings", lambda t: {"probes": ["cat", "dog"]}, TypeError,
     r"probes must be numeric \(bool, int or float\); received dtype <U3 \(list\)"),
    ("probes_complex", lambda t: {"probes": _probes().astype(np.complex64)}, TypeError,
     r"probes must be numeric .*received dtype complex64 \(ndarray\)"),
    ("probes_nan", lambda t: {"probes": _nan_probes()}, ValueError, r"probes contains NaN or Inf"),
    ("probes_wrong_rank", lambda t: {"probes": _probes((2, 12, 12))}, ValueError,
     r"received probes of shape \(2, 12, 12\), the input accepts \(k, 12, 12, 1\)"),
    ("probes_wrong_size", lambda t: {"probes": _probes((2, 10, 10, 1))}, ValueError,
     r"received probes of shape \(2, 10, 10, 1\), the input accepts \(k, 12, 12, 1\)"),
    ("layers_int", lambda t: {"layers": 42}, TypeError,
     r"Cannot choose layers with 42 \(int\)\. Accepted: None, '\*', a layer name"),
    ("layers_unknown_name", lambda t: {"layers": ["nope"]}, ValueError,
     r"No such layer: 'nope'\. Existing layers are: \['conv_0', 'pool_0', 'conv_1', 'flatten', 'logits'\]"),
    ("layers_regex_no_match", lambda t: {"layers": re.compile("zzz")}, ValueError,
     r"No spatial layer path matches 'zzz'\. Existing layers are: \['conv_0'"),
    ("layers_reserved_name", lambda t: {"layers": {"actlog": "conv_0"}}, ValueError,
     r"Display name 'actlog' is reserved"),
    ("layers_outside_model", lambda t: {"layers": [keras.layers.Conv2D(2, 3, name="stranger")]}, ValueError,
     r"Layer object 'stranger' \(Conv2D\) is not part of this model\. Existing layers are: \['conv_0'"),
    ("layers_blank_display_name", lambda t: {"layers": {"": "conv_0"}}, ValueError,
     r"layers mapping keys are display names \(non-empty str\); received ''"),
    ("log_dir_under_a_file", lambda t: {"log_dir": _under_a_file(t)}, ValueError,
     r"log_dir '.*a_file/logs' cannot be created: .*Accepted: a local directory"),
    ("log_dir_int", lambda t: {"log_dir": 42}, TypeError,
     r"log_dir must be a non-empty path \(str or os\.PathLike\); received 42"),
    ("log_dir_empty", lambda t: {"log_dir": ""}, TypeError,
     r"log_dir must be a non-empty path .*received ''"),
    ("rows_cols_too_small", lambda t: {"layers": ["conv_1"], "layout": actlog.Layout(rows=1, cols=2)},
     ValueError,
     r"layer 'conv_1' .*6 channels shown.*rows=1 x cols=2 holds 2 tiles but 6 channels are shown"),
    ("max_pixels_tiny", lambda t: {"layers": ["conv_0"], "layout": actlog.Layout(max_pixels=4)}, ValueError,
     r"layer 'conv_0' .* need 25 pixels even at one pixel per tile, over max_pixels=4"),
    ("min_tile_zero", lambda t: {"layout": actlog.Layout(min_tile=0)}, ValueError,
     r"min_tile must be an int >= 1; received 0"),
    ("rows_zero", lambda t: {"layout": actlog.Layout(rows=0)}, ValueError,
     r"rows must be an int >= 1; received 0"),
    ("layout_a_dict", lambda t: {"layout": {"min_tile": 4}}, TypeError,
     r"layout must be None or actlog\.Layout\(min_tile=, max_pixels=, pad=, rows=, cols=\); "
     r"received \{'min_tile': 4\} \(dict\)"),
    ("max_pending_zero", lambda t: {"background": actlog.Background(max_pending=0)}, ValueError,
     r"max_pending must be an int >= 1; received 0"),
    ("on_full_drop", lambda t: {"background": actlog.Background(on_full="drop")}, ValueError,
     r"Unknown on_full 'drop'\. Accepted: \['wait', 'skip'\]"),
    ("background_a_str", lambda t: {"background": "skip"}, TypeError,
     r"background must be True, False or actlog\.Background\(max_pending=, on_full=\); "
     r"received 'skip' \(str\)"),
    ("probe_count_zero", lambda t: {"probes": actlog.Probes(_probes(), count=0)}, ValueError,
     r"Probes count must be an int >= 1; received 0"),
    ("layers_mapping_value_float", lambda t: {"layers": {"a": 3.5}}, TypeError,
     r"Cannot choose layers with 3\.5 \(float\)"),
    ("layers_unknown_name_close_to_two", lambda t: {"layers": ["conv_9"]}, ValueError,
     r"No such layer: 'conv_9'\. .* Did you mean 'conv_1' or 'conv_0'\?"),
    ("layers_class_absent", lambda t: {"layers": keras.layers.Conv1D}, ValueError,
     r"No spatial layer of class Conv1D in the model\. Layer classes present: "
     r"\['Conv2D', 'Dense', 'Flatten', 'MaxPooling2D'\]"),
    ("layers_empty_list", lambda t: {"layers": []}, ValueError, r"layers is an empty list"),
    ("layers_mapping_value_names_two_layers", lambda t: {"layers": {"convs": keras.layers.Conv2D}},
     ValueError,
     r"layers\['convs'\] must name exactly one layer; .*matches \['conv_0', 'conv_1'\]"),
    ("layers_reserved_prefix", lambda t: {"layers": {"actlog/conv": "conv_0"}}, ValueError,
     r"Display name 'actlog/conv' is reserved"),
    ("layers_blank_display_name", lambda t: {"layers": {" ": "conv_0"}}, ValueError,
     r"Display name ' ' must be non-blank"),
    ("probes_empty_batch", lambda t: {"probes": np.zeros((0, 12, 12, 1), np.float32)}, ValueError,
     r"probes must be a non-empty batch \(k, \.\.\.\) with k >= 1; received shape \(0, 12, 12, 1\)"),
    ("probes_scalar", lambda t: {"probes": 3.0}, ValueError,
     r"probes must be a non-empty batch .* received shape \(\)"),
    ("probes_objects", lambda t: {"probes": [{"x": 1}]}, TypeError,
     r"probes must be numeric .* received dtype object"),
    ("probes_ragged", lambda t: {"probes": [[1.0, 2.0], [3.0]]}, ValueError,
     r"probes must be a numeric array \(k, \.\.\.\); could not convert"),
    ("probes_empty_dict", lambda t: {"probes": {}}, ValueError, r"probes is an empty dict"),
    ("probes_unequal_counts",
     lambda t: {"probes": [np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32)]}, ValueError,
     r"Every input's probes must hold the same number of samples; received \[\(2, 3\), \(3, 3\)\]"),
    ("probes_one_sample_of_another_size", lambda t: {"probes": np.zeros((10, 10, 1), np.float32)},
     ValueError,
     r"received probes of shape \(10, 10, 1\), the input accepts \(k, 12, 12, 1\)"),
    ("probes_two_batches_for_one_input", lambda t: {"probes": [_probes(), _probes()]}, ValueError,
     r"The model has one input of shape \(None, 12, 12, 1\), but probes is a list of 2 arrays"),
    ("atlas_k_zero", lambda t: {"atlas": actlog.Atlas(_probes(), k=0)}, ValueError,
     r"Atlas k must be an int >= 1; received 0"),
    ("atlas_k_above_the_pool", lambda t: {"atlas": actlog.Atlas(_probes(), k=3)}, ValueError,
     r"Atlas k must be an int from 1 to the pool's size \(2 samples\); received 3"),
    ("atlas_every_negative", lambda t: {"atlas": actlog.Atlas(_probes(), every=-1)}, ValueError,
     r"Atlas every must be an int >= 0; received -1"),
    ("atlas_batch_float", lambda t: {"atlas": actlog.Atlas(_probes(), batch=2.5)}, TypeError,
     r"Atlas batch must be an int >= 1; received 2\.5 \(float\)"),
    ("atlas_without_a_pool", lambda t: {"atlas": actlog.Atlas(None)}, TypeError,
     r"Atlas needs a pool of inputs: an array \(N, \.\.\.\) or a finite dataset; received None"),
    ("atlas_object_a_path", lambda t: {"atlas": actlog.Atlas("images/", k=2)}, TypeError,
     r"atlas must be a pool of inputs: an array \(N, \.\.\.\), .*; received 'images/' \(str\)"),
    ("atlas_a_path", lambda t: {"atlas": "images/"}, TypeError,
     r"atlas must be a pool of inputs: an array \(N, \.\.\.\), .*; received 'images/' \(str\)"),
    ("atlas_nan", lambda t: {"atlas": _nan_probes()}, ValueError,
     r"atlas contains NaN or Inf; atlas must be finite"),
    ("atlas_empty", lambda t: {"atlas": []}, ValueError,
     r"atlas must be a non-empty batch \(k, \.\.\.\) with k >= 1; received shape \(0,\)"),
    ("actmax_a_name", lambda t: {"actmax": "conv_0"}, TypeError,
     r"actmax must be \{layer: channel or \[channels\]\} or a list of \(layer, channel\) pairs; "
     r"received 'conv_0' \(str\)"),
    ("actmax_negative_channel", lambda t: {"actmax": {"conv_0": [-1]}}, ValueError,
     r"actmax channel of 'conv_0' must be an int >= 0; received -1"),
    ("actmax_every_float", lambda t: {"actmax": actlog.Maximize({"conv_0": 1}, every=0.5)}, TypeError,
     r"Maximize every must be an int >= 0; received 0\.5 \(float\)"),
    ("actmax_object_a_name", lambda t: {"actmax": actlog.Maximize("conv_0")}, TypeError,
     r"actmax must be \{layer: channel or \[channels\]\} or a list of \(layer, channel\) pairs; "
     r"received 'conv_0' \(str\)"),
    ("actmax_unwatched_layer", lambda t: {"actmax": {"conv_1": 0}}, ValueError,
     r"actmax names layer 'conv_1', which is not watched; watched: \['conv_0'\]"),
    ("atlas_wrong_size", lambda t: {"atlas": actlog.Atlas(_probes((4, 10, 10, 1)), k=2)}, ValueError,
     r"atlas must fit the model's input '.*': received atlas of shape \(4, 10, 10, 1\), the input "
     r"accepts \(k, 12, 12, 1\)"),
]
# Keywords of actlog 0.2 that moved into an option object: each names its new form.
MOVED = [
    ("atlas_k", 3, r"atlas_k= moved: pass atlas=actlog\.Atlas\(pool, k=8\)"),
    ("atlas_freq", 1, r"atlas_freq= moved: pass atlas=actlog\.Atlas\(pool, every=5\)"),
    ("atlas_batch", 8, r"atlas_batch= moved: pass atlas=actlog\.Atlas\(pool, batch=64\)"),
    ("actmax_freq", 2, r"actmax_freq= moved: pass actmax=actlog\.Maximize\(channels, every=5\)"),
    ("min_tile", 4, r"min_tile= moved: pass layout=actlog\.Layout\(min_tile=48\)"),
    ("max_pixels", 2**20, r"max_pixels= moved: pass layout=actlog\.Layout\(max_pixels=2\*\*19\)"),
    ("pad", 0, r"pad= moved: pass layout=actlog\.Layout\(pad=1\)"),
    ("rows", 2, r"rows= moved: pass layout=actlog\.Layout\(rows=\.\.\.\)"),
    ("cols", 2, r"cols= moved: pass layout=actlog\.Layout\(cols=\.\.\.\)"),
    ("max_pending", 4, r"max_pending= moved: pass background=actlog\.Background\(max_pending=2\)"),
    ("on_full", "skip", r"on_full= moved: pass background=actlog\.Background\(on_full=\"wait\"\)"),
    ("batch_epochs", 2, r"batch_epochs= moved: pass batch_freq=actlog\.Batches\(every, epochs=1\)"),
    ("probe_count", 4, r"probe_count= moved: pass probes=actlog\.Probes\(data, count=8\)"),
    ("log_probes", False, r"log_probes= moved: pass probes=actlog\.Probes\(data, log=False\)"),
]
CASES += [
    (f"moved_{name}", lambda t, name=name, value=value: {"atlas": _probes(), name: value}, TypeError, match)
    for name, value, match in MOVED
]
assert len(CASES) >= 15


class CountBatches(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.batches += 1


@pytest.mark.parametrize(
    ("make", "error", "match"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_configuration_fails_before_the_first_step(
    tmp_path, tiny_model, tiny_data, make, error, match
):
    counter = CountBatches()
    x, y = tiny_data
    with warnings.catch_warnings(record=True) as caught, pytest.raises(Exception) as info:
        warnings.simplefilter("always")
        # an option object (actlog.Atlas(...)) checks its arguments when made, as a user writes it
        options = {"log_dir": tmp_path / "logs", "probes": _probes(), "layers": ["conv_0"], **make(tmp_path)}
        logger = actlog.ActivationLogger(**options)
        tiny_model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0, callbacks=[counter, logger])
    # exactly this error, not one wrapped in another or raised after training began
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert re.search(match, str(info.value)), str(info.value)
    assert counter.batches == 0
    assert not [w for w in caught if "actlog" in str(w.message)]


def test_probes_are_not_modified_and_later_edits_do_not_leak(tmp_path, tiny_model, tiny_data):
    probes = _probes()
    before = probes.copy()
    logger = actlog.ActivationLogger(tmp_path, probes, layers=["conv_0"])
    probes[:] = 0  # the caller reuses the array
    assert not np.shares_memory(logger.probes, probes)
    np.testing.assert_array_equal(logger.probes, before)


def test_a_moved_keyword_fails_when_the_logger_is_made(tmp_path):
    # before any model exists, and naming every moved keyword given, not only the first
    both = (r"^atlas_k= moved: pass atlas=actlog\.Atlas\(pool, k=8\)\. "
            r"actmax_freq= moved: pass actmax=actlog\.Maximize\(channels, every=5\)\.$")
    with pytest.raises(TypeError, match=both):
        actlog.ActivationLogger(tmp_path / "logs", _probes(), atlas_k=3, actmax_freq=2)
    assert not (tmp_path / "logs").exists()


def test_option_objects_and_their_shorthands_give_the_same_options(tmp_path):
    pool = _probes((8, 12, 12, 1))
    plain = actlog.ActivationLogger(tmp_path / "a", _probes(), atlas=pool, actmax={"conv_0": [1, 0]},
                                    background=True, batch_freq=3)
    grouped = actlog.ActivationLogger(
        tmp_path / "b", actlog.Probes(_probes()), atlas=actlog.Atlas(pool),
        actmax=actlog.Maximize({"conv_0": [1, 0]}), background=actlog.Background(),
        batch_freq=actlog.Batches(3), layout=actlog.Layout(),
    )
    for logger in (plain, grouped):
        options = logger.options
        assert (options.atlas.size, options.atlas.k, options.atlas.freq, options.atlas.batch) == (8, 8, 5, 64)
        assert (options.maximize.targets, options.maximize.freq) == ((("conv_0", 1), ("conv_0", 0)), 5)
        assert (options.min_tile, options.max_pixels, options.pad, options.rows, options.cols) == (
            48, 2**19, 1, None, None)
        assert (options.background, options.max_pending, options.on_full) == (True, 2, "wait")
        assert (logger.batch_freq, logger.batch_epochs, options.log_probes) == (3, 1, True)
    off = actlog.ActivationLogger(tmp_path / "c", actlog.Probes(_probes(), count=1, log=False),
                                  background=False, atlas=actlog.Atlas(pool, every=0),
                                  actmax=actlog.Maximize({"conv_0": 0}, every=0))
    assert (off.options.background, off.options.log_probes, off.options.rare()) == (False, False, {})
    assert off.probes.shape == (1, 12, 12, 1)
    assert inspect.signature(actlog.ActivationLogger).parameters.keys() == {
        "log_dir", "probes", "layers", "freq", "batch_freq", "max_channels", "channels", "norm", "cmap",
        "layout", "stats", "background", "strict", "atlas", "actmax", "cam", "epoch_logs"}
