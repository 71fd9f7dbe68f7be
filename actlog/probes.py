"""Probe inputs as people pass them -> one private, read-only batch per model input.

Two steps, because only the second needs the model:

1. :func:`copy_probes` (in ``ActivationLogger.__init__``): a private,
   read-only numpy copy of what was passed, checked for what can be checked
   without a model (numeric, non-empty, finite). A ``tf.data.Dataset``, a
   PyTorch ``DataLoader`` or any other iterable of batches gives its first
   ``count`` samples (default :data:`DEFAULT_COUNT`), read once: a generator
   is consumed by that.
2. :func:`fit_to_model` (when training starts): the copy matched to the
   model's inputs. Accepted where the meaning is unambiguous:

   - a batch ``(k, ...)`` shaped like the input;
   - one sample without the batch axis (``x_val[0]``): a batch of one;
   - a Python list of same-shaped samples: stacked into a batch;
   - an ``(x, y)`` or ``(x, y, sample_weight)`` **tuple**, as a dataset yields
     them: ``x`` (a tuple, because Keras reads a *list* of arrays as one batch
     per input);
   - for a multi-input model, a list of batches in input order or a dict keyed
     by input name (the dict is matched by name, not order).

   Anything else is refused with the exact fix (``np.stack(...)``, ``x[None]``).

Models that take strings (a ``TextVectorization`` inside) cannot be probed:
probes must be numeric; pass the vectorised ids to a model that starts after
the vectorisation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_COUNT = 8
"""Samples taken from a dataset or iterable of batches when ``Probes(count=)`` is not given."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name and per-sample shape (``None`` for a free dimension)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str | None = None


# --------------------------------------------------------------------------- copying


def copy_probes(probes: Any, *, count: int | None = None, labels: bool = False) -> Any:
    """A private, read-only copy of ``probes`` (see module docstring); with ``labels``, a
    dataset of ``(x, y)`` batches gives ``(x, y)`` (the class maps' labels), else ``x``.

    Returns an array, or a list / tuple / dict of arrays (nested as passed).
    """
    if _is_batch_source(probes):
        probes = _take(probes, DEFAULT_COUNT if count is None else count, labels=labels)
    copied = _copy_tree("probes", probes)
    if count is not None:
        copied = map_tree(copied, lambda a: _frozen(a[:count]))
    _check_counts("probes", leaves(copied))
    return copied


def copy_pool(pool: Any, *, name: str, limit: int) -> Any:
    """A private, read-only copy of every sample of ``pool`` (at most ``limit``).

    ``pool`` takes the forms :func:`copy_probes` accepts; a dataset or iterable
    of batches is read to its end, once. One that yields more than ``limit``
    samples (an endless ``dataset.repeat()``) is refused, naming ``name``.
    """
    if _is_batch_source(pool):
        pool = _take(pool, limit + 1, name=name, batches=limit + 1)
    copied = _copy_tree(name, pool)
    _check_counts(name, leaves(copied))
    if count_of(copied) > limit:
        raise ValueError(
            f"{name} holds more than {limit} samples; accepted: a finite pool of at most {limit} "
            "(a dataset that repeats forever never ends: pass dataset.take(n))."
        )
    return copied


def _check_counts(name: str, arrays: Sequence[np.ndarray]) -> None:
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(
            f"Every input's {name} must hold the same number of samples; received "
            f"{[a.shape for a in arrays]}."
        )


def _is_batch_source(value: Any) -> bool:
    """A dataset, data loader or generator: iterable, but not an array or a container we copy."""
    if isinstance(value, (str, bytes, Mapping, list, tuple, np.ndarray)) or _is_array_like(value):
        return False
    return isinstance(value, Iterable)


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype"))


def _take(source: Iterable, count: int, *, name: str = "probes", batches: int = 10_000,
          labels: bool = False) -> Any:
    """The first ``count`` samples of an iterable of batches (of its first ``batches``
    batches), concatenated per input; with ``labels``, ``(x, y)`` where every batch was an
    ``(x, y[, sample_weight])`` tuple of numeric arrays (the class maps' labels)."""
    taken_batches, ys = [], []
    taken = 0
    for batch in itertools.islice(iter(source), batches):
        if isinstance(batch, tuple) and 2 <= len(batch) <= 3:
            ys.append(batch[1])
            batch = batch[0]  # (x, y[, sample_weight]), as Keras' fit reads it
        batch = _copy_tree(name, batch, frozen=False)
        taken_batches.append(batch)
        taken += len(leaves(batch)[0])
        if taken >= count:
            break
    if not taken_batches:
        raise ValueError(f"{name} is an empty dataset or iterable: it yielded no batch.")
    first = taken_batches[0]
    if isinstance(first, Mapping):
        return {key: np.concatenate([b[key] for b in taken_batches])[:count] for key in first}
    if isinstance(first, (list, tuple)):
        return [np.concatenate([b[i] for b in taken_batches])[:count] for i in range(len(first))]
    x = np.concatenate(taken_batches)[:count]
    if labels and len(ys) == len(taken_batches):
        try:
            y = np.concatenate([np.asarray(_to_numpy(b)) for b in ys])[:count]
        except (ValueError, TypeError):
            return x
        if y.dtype.kind in "biuf" and len(y) == len(x):
            return (x, y)
    return x


def labels_of(probes: Any, inputs: int) -> np.ndarray | None:
    """The ``y`` of probes copied as an ``(x, y[, sample_weight])`` tuple (as :func:`fit_to_model`
    reads them for a model of ``inputs`` inputs), or None when they carry none."""
    if not (isinstance(probes, tuple) and 2 <= len(probes) <= 3 and _is_array_like(probes[1])):
        return None
    x = probes[0]
    if inputs <= 1 and _is_array_like(x):
        return probes[1]
    if inputs > 1 and isinstance(x, (list, tuple, Mapping)) and len(x) == inputs:
        return probes[1]
    return None


def _copy_tree(name: str, value: Any, *, frozen: bool = True) -> Any:
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{name} is an empty dict; pass one batch (k, ...) per model input.")
        return {key: _copy_tree(f"{name}[{key!r}]", item, frozen=frozen) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and value and _holds_arrays(value):
        items = [_copy_tree(f"{name}[{i}]", item, frozen=frozen) for i, item in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    array = _copy_array(name, value)
    return _frozen(array) if frozen else array


def _holds_arrays(value: Any) -> bool:
    """A list/tuple whose every item is an array, or a list, tuple or dict of arrays."""
    def is_tree(item: Any) -> bool:
        if _is_array_like(item):
            return True
        if isinstance(item, Mapping):
            return bool(item) and all(is_tree(v) for v in item.values())
        return isinstance(item, (list, tuple)) and bool(item) and all(is_tree(v) for v in item)

    return all(is_tree(item) for item in value)


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, maybe on a GPU
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a TensorFlow tensor
        return value.numpy()
    return value


def _copy_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.array(_to_numpy(value), copy=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} must be a numeric array (k, ...); could not convert: {err}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric (bool, int or float); received dtype {array.dtype} "
            f"({type(value).__name__ if value is not None else 'None'}). Models that take "
            "strings cannot be probed: pass the ids after vectorisation."
        )
    if array.ndim < 1 or array.shape[0] == 0 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty batch (k, ...) with k >= 1; received shape {array.shape}."
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf; {name.split('[')[0]} must be finite.")
    return array


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def leaves(tree: Any) -> list[np.ndarray]:
    """The arrays of a tree of them (lists, tuples and dicts, nested), in order; a dict's in
    its own order (a fitted dict follows the model's inputs)."""
    if isinstance(tree, Mapping):
        return [leaf for item in tree.values() for leaf in leaves(item)]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in leaves(item)]
    return [tree]


def map_tree(tree: Any, fn: Any) -> Any:
    """``tree`` with ``fn`` applied to each of its arrays, nested as it was."""
    if isinstance(tree, Mapping):
        return {key: map_tree(item, fn) for key, item in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [map_tree(item, fn) for item in tree]
        return tuple(items) if isinstance(tree, tuple) else items
    return fn(tree)


def rebuild(tree: Any, new: Sequence[Any]) -> Any:
    """A flat ``tree`` (one array, or a list / tuple / dict of arrays) with its arrays,
    in :func:`leaves` order, replaced by ``new``."""
    if isinstance(tree, Mapping):
        return dict(zip(tree, new, strict=True))
    if isinstance(tree, (list, tuple)):
        return list(new)
    return new[0]


# --------------------------------------------------------------------------- matching


def fit_to_model(probes: Any, inputs: Sequence[InputSpec] | None, *, name: str = "probes") -> Any:
    """``probes`` (from :func:`copy_probes`) as the model's inputs want them.

    Args:
        probes: the copied probes.
        inputs: the model's inputs, or ``None`` when it has none to read
            (a subclassed model): the probes are then used as given.
        name: what the messages call ``probes`` (``"atlas"`` for an atlas pool).

    Returns:
        One array for a single-input model; a list in input order, or a dict
        keyed by input name when ``probes`` was a dict, for several inputs.

    Raises:
        ValueError: probes that do not fit, with what was received, what the
            model accepts and the fix.
    """
    if not inputs:
        return probes
    if len(inputs) == 1:
        return _fit_one(probes, inputs[0], name)
    return _fit_several(probes, list(inputs), name)


def _fit_one(probes: Any, spec: InputSpec, name: str) -> np.ndarray:
    rank = len(spec.shape)
    if isinstance(probes, Mapping):
        if len(probes) == 1 or spec.name in probes:
            return _fit_one(probes.get(spec.name, next(iter(probes.values()))), spec, name)
        raise ValueError(
            f"The model has one input {spec.name!r}, but {name} is a dict with keys {sorted(probes)}."
        )
    if isinstance(probes, tuple) and 2 <= len(probes) <= 3 and _is_array_like(probes[0]):
        x = probes[0]
        if x.ndim == rank + 1 and _fits(x.shape[1:], spec.shape):
            return x  # an (x, y[, sample_weight]) batch
    if isinstance(probes, (list, tuple)):
        arrays = [p for p in probes if _is_array_like(p)]
        if len(arrays) == len(probes):
            if len(probes) == 1:
                return _fit_one(probes[0], spec, name)
            if all(a.ndim == rank and _fits(a.shape, spec.shape) for a in arrays):
                if len({a.shape for a in arrays}) == 1:
                    return _frozen(np.stack(arrays))
        raise ValueError(
            f"The model has one input of shape {_batch_shape(spec)}, but {name} is a "
            f"{type(probes).__name__} of {len(probes)} arrays. Pass one batch (k, ...), a list of "
            "same-shaped samples (stacked for you), or an (x, y) tuple."
        )
    if probes.ndim == rank and _fits(probes.shape, spec.shape):
        return _frozen(probes[np.newaxis])  # one sample without its batch axis
    _check_shape(probes, spec, name)
    return probes


def _fit_several(probes: Any, specs: list[InputSpec], name: str) -> Any:
    names = [spec.name for spec in specs]
    if (
        isinstance(probes, tuple)
        and 2 <= len(probes) <= 3
        and isinstance(probes[0], (list, tuple, Mapping))
        and len(probes[0]) == len(specs)
    ):
        probes = probes[0]  # ((x1, x2), y)
    if isinstance(probes, Mapping):
        missing = [n for n in names if n not in probes]
        if missing:
            raise ValueError(
                f"{name} is a dict with keys {sorted(probes)}, but the model's inputs are "
                f"named {names}; missing {missing}."
            )
        ordered = [probes[n] for n in names]
    elif isinstance(probes, (list, tuple)):
        if len(probes) != len(specs):
            raise ValueError(
                f"The model has {len(specs)} inputs {names}, but {name} is a "
                f"{type(probes).__name__} of {len(probes)} arrays."
            )
        ordered = list(probes)
    else:
        raise ValueError(
            f"The model has {len(specs)} inputs {names}; pass {name} as a list of "
            f"{len(specs)} arrays or a dict keyed by input name, not a single array of "
            f"shape {np.shape(probes)}."
        )
    for array, spec in zip(ordered, specs, strict=True):
        _check_shape(array, spec, name)
    _check_counts(name, ordered)
    if isinstance(probes, Mapping):
        return dict(zip(names, ordered, strict=True))
    return ordered


def _fits(received: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(received) == len(expected) and all(
        e is None or e == r for e, r in zip(expected, received, strict=True)
    )


def _batch_shape(spec: InputSpec) -> tuple:
    return (None, *spec.shape)


def _check_shape(array: np.ndarray, spec: InputSpec, name: str) -> None:
    if not _is_array_like(array):
        raise ValueError(f"{name} for input {spec.name!r} must be one array (k, ...).")
    if array.ndim >= 1 and _fits(array.shape[1:], spec.shape):
        return
    shown = "(k, " + ", ".join("None" if e is None else str(e) for e in spec.shape) + ")"
    fix = ""
    if array.ndim == len(spec.shape) and _fits((*array.shape[1:], 1), spec.shape):
        fix = f" Add the channel axis: {name}[..., None]."
    elif array.ndim == len(spec.shape) + 1 and _fits((*array.shape[2:], array.shape[1]), spec.shape):
        fix = f" The channels seem to come first: np.moveaxis({name}, 1, -1)."
    count = "k probes" if name == "probes" else "k samples"
    raise ValueError(
        f"{name} must fit the model's input {spec.name!r}: received {name} of "
        f"shape {tuple(array.shape)}, the input accepts {shown} ({count}).{fix}"
    )


def count_of(probes: Any) -> int:
    """Number of probes (samples) in a fitted batch."""
    return len(leaves(probes)[0])


def image_input(probes: Any, specs: Sequence[InputSpec] | None = None) -> tuple[int, np.ndarray] | None:
    """``(position, batch)`` of the first image-like input of fitted ``probes`` (in the
    model's input order), or ``None`` when no input is image-like (see :func:`~actlog.grid.to_image`)."""
    from actlog.grid import to_image

    if isinstance(probes, Mapping):
        order = [s.name for s in specs or () if s.name in probes] or list(probes)
        candidates = [probes[name] for name in order]
    else:
        candidates = leaves(probes)
    for position, batch in enumerate(candidates):
        if to_image(batch[0]) is not None:
            return position, batch
    return None


def probe_images(probes: Any, specs: Sequence[InputSpec] | None = None) -> list[np.ndarray | None]:
    """Each probe as an image, from the first image-like input (in the model's input order)."""
    from actlog.grid import to_image

    found = image_input(probes, specs)
    if found is None:
        return [None] * count_of(probes)
    return [to_image(sample) for sample in found[1]]
