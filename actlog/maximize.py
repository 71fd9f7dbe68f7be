"""Activation maximisation (optional): the input a chosen channel would most like to see.

The atlas shows which pool examples excite a channel most; this asks the
network itself. For each chosen ``(layer, channel)`` an input the size of the
model's image input starts from the same seeded noise at every event and
climbs the gradient of the channel's mean activation for :data:`STEPS`
steps, with

- **jitter**: the image is shifted by up to :data:`JITTER` pixels (a seeded
  random roll) before each step and back after, so that it cannot exploit one
  pixel grid;
- **L2** and **total-variation** penalties (:data:`L2`, :data:`TV`) on the
  image in units of the input's range, so that it stays moderate and smooth;
- **normalised steps**: each image's gradient is scaled to unit mean
  magnitude, so that the schedule does not depend on the layer's scale.

Seed and schedule are the same at every event: what changes between frames
is the network. Gradients come from each backend's own differentiation
(:meth:`actlog.backends.Backend.gradient`: ``tf.GradientTape``,
``jax.value_and_grad``, torch autograd), compiled once per training run; every
chosen channel is one image of a single batch, so an event costs
:data:`STEPS` forward and backward passes of a batch of that many images.
The update itself (jitter, penalties, clipping) is numpy on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from actlog import grid, metadata, probe, probes
from actlog.backends import Backend
from actlog.checks import check_int
from actlog.event import LayerPlan

STEPS = 64
"""Gradient steps per event."""

STEP_SIZE = 0.02
"""Each step moves the image by this fraction of the input's range, on average per pixel."""

JITTER = 2
"""Largest random shift, in pixels, before each step."""

L2 = 0.05
"""Weight of the L2 penalty (on the image centred and scaled to [-1, 1])."""

TV = 0.25
"""Weight of the total-variation penalty (squared differences of neighbours, same units)."""

SEED = 0
"""Seed of the starting noise and of the jitter: the same at every event."""

MIN_SIDE = 64
"""Each image is upscaled (nearest neighbour) until its short side reaches this."""


@dataclass(frozen=True)
class MaximizeOptions:
    """The validated ``actmax`` options: ``targets`` as ``(layer display name, channel)`` pairs."""

    targets: tuple[tuple[str, int], ...]
    freq: int


def check_options(actmax: Any, *, freq: Any) -> MaximizeOptions | None:
    """The arguments of :class:`actlog.Maximize`, checked; ``None`` when off.

    Args:
        actmax: ``None`` (off), ``{layer: channel or [channels]}``, or a list of
            ``(layer, channel)`` pairs; layers by display name, each one watched.
        freq: epochs between events, an int >= 0; 0 turns it off.
    """
    freq = check_int("Maximize every", freq, minimum=0)
    if actmax is None or freq == 0:
        return None
    accepted = "{layer: channel or [channels]} or a list of (layer, channel) pairs"
    if isinstance(actmax, Mapping):
        pairs = [(layer, c) for layer, cs in actmax.items()
                 for c in (cs if isinstance(cs, (list, tuple, range)) else [cs])]
    elif isinstance(actmax, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in actmax
    ):
        pairs = [tuple(p) for p in actmax]
    else:
        raise TypeError(f"actmax must be {accepted}; received {actmax!r} ({type(actmax).__name__}).")
    if not pairs:
        raise ValueError(f"actmax names no channel; accepted: {accepted}.")
    for layer, channel in pairs:
        if not isinstance(layer, str):
            raise TypeError(f"actmax layers are display names (str); received {layer!r}.")
        check_int(f"actmax channel of {layer!r}", channel, minimum=0)
    return MaximizeOptions(tuple((layer, int(c)) for layer, c in pairs), freq)


def penalty_gradient(z: np.ndarray) -> np.ndarray:
    """Gradient of ``L2 * mean(z**2) + TV * mean(squared neighbour differences)`` per image,
    up to the constant the mean divides by: ``(n, H, W, c)``."""
    laplacian = np.zeros_like(z)
    for axis in (1, 2):
        forward = np.diff(z, axis=axis)  # z[i + 1] - z[i]
        pad_after = [(0, 0)] * 4
        pad_after[axis] = (0, 1)
        pad_before = [(0, 0)] * 4
        pad_before[axis] = (1, 0)
        laplacian += np.pad(forward, pad_after) - np.pad(forward, pad_before)
    return 2.0 * L2 * z - 2.0 * TV * laplacian


def shifts(steps: int = STEPS, jitter: int = JITTER, seed: int = SEED) -> np.ndarray:
    """The seeded ``(steps, 2)`` jitter shifts, the same at every event."""
    return np.random.default_rng(seed + 1).integers(-jitter, jitter + 1, size=(steps, 2))


class MaximizePass:
    """Activation maximisation for one training run (see the module docstring).

    Args:
        model, runner, forward, plans, backend: as the probe function's.
        options: the logger's :class:`MaximizeOptions`.
        probe_batch: the fitted probes: their first sample fills the inputs
            that are not the image, their range bounds the image.

    Raises:
        ValueError: a target layer that is not watched, a channel it does not
            have, or no image input.
    """

    def __init__(self, model: Any, runner: Any, forward: probe.Forward, plans: Sequence[LayerPlan],
                 options: MaximizeOptions, backend: Backend, probe_batch: Any) -> None:
        specs = probe.input_specs(runner)
        found = probes.image_input(probe_batch, specs)
        if found is None:
            raise ValueError("actmax needs a model input that is an image (H, W, c) with c in 1, 3, 4.")
        self.image_input, images = found
        self.low, self.high = float(np.min(images)), float(np.max(images))
        if not self.high > self.low:
            self.low, self.high = self.low - 0.5, self.high + 0.5
        self.shape = tuple(images.shape[1:])
        self.plans = list(plans)
        by_name = {p.name: i for i, p in enumerate(self.plans)}
        masks = [np.zeros((len(options.targets), p.map_shape[2]), np.float32) for p in self.plans]
        for i, (layer, channel) in enumerate(options.targets):
            if layer not in by_name:
                raise ValueError(
                    f"actmax names layer {layer!r}, which is not watched; watched: {list(by_name)}."
                )
            count = self.plans[by_name[layer]].map_shape[2]
            if channel >= count:
                raise ValueError(
                    f"actmax names channel {channel} of {layer!r}, which has {count} channels "
                    f"(0..{count - 1})."
                )
            masks[by_name[layer]][i, channel] = 1.0
        self.targets = options.targets
        self._masks = [keras.ops.convert_to_tensor(m) for m in masks]
        # The inputs that are not the image: the first probe's, fixed.
        first = probes.rebuild(probe_batch, [np.repeat(a[:1], len(self.targets), axis=0)
                                             for a in probes.leaves(probe_batch)])
        self._others = probes.leaves(probe.to_tensors(runner, first))
        self._template = probe_batch
        self._forward = forward
        self._step = backend.gradient(self._objective, model)

    def manifest_entry(self, layer: str) -> dict[str, Any]:
        """``{"actmax": ...}`` for the manifest entry of ``layer`` (nothing if none of its channels)."""
        channels = [c for name, c in self.targets if name == layer]
        if not channels:
            return {}
        return {"actmax": {"channels": channels, "steps": STEPS, "step_size": STEP_SIZE, "jitter": JITTER,
                           "l2": L2, "tv": TV, "seed": SEED}}

    def _objective(self, image: Any, masks: list[Any]) -> Any:
        ops = keras.ops
        inputs = probes.rebuild(self._template, [
            image if i == self.image_input else other for i, other in enumerate(self._others)
        ])
        total = 0.0
        for output, mask, plan in zip(self._forward(inputs), masks, self.plans, strict=True):
            acts = probe.channels_last(ops.cast(output, "float32"), plan.data_format)
            total = total + ops.sum(ops.mean(grid.batch_maps(ops, acts), axis=(1, 2)) * mask)
        return total

    def run(self) -> np.ndarray:
        """The training thread's half: the ascent; returns float32 ``(n, *image shape)``."""
        half, middle = (self.high - self.low) / 2, (self.high + self.low) / 2
        rng = np.random.default_rng(SEED)
        z = rng.normal(0.0, 0.1, size=(len(self.targets), *self.shape)).astype(np.float32)
        for dy, dx in shifts():
            shifted = np.roll(z, (dy, dx), axis=(1, 2))
            image = keras.ops.convert_to_tensor(middle + half * shifted, dtype="float32")
            _, grad = self._step(image, self._masks)
            grad = np.roll(np.asarray(keras.ops.convert_to_numpy(grad), np.float32), (-dy, -dx), axis=(1, 2))
            grad = grad / (np.abs(grad).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
            z = np.clip(z + STEP_SIZE * 2 * (grad - penalty_gradient(z)), -1.0, 1.0)
        return (middle + half * z).astype(np.float32)

    def pictures(self, images: np.ndarray) -> dict[str, tuple[list[int], np.ndarray]]:
        """The background half: per layer, its channels and one picture of their images
        side by side, in the order asked, each min-max scaled and upscaled."""
        out: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for (layer, channel), image in zip(self.targets, images, strict=True):
            picture = grid.to_image(image)
            scale = max(1, -(-MIN_SIDE // min(picture.shape[:2])))
            channels, panels = out.setdefault(layer, ([], []))
            channels.append(channel)
            panels.append(picture.repeat(scale, axis=0).repeat(scale, axis=1))
        return {layer: (channels, side_by_side(panels)) for layer, (channels, panels) in out.items()}


def side_by_side(panels: Sequence[np.ndarray], gap: int = metadata.ACTMAX_GAP) -> np.ndarray:
    """Same-sized uint8 ``(h, w, c)`` panels in a row, ``gap`` white pixels apart."""
    height, width, depth = panels[0].shape
    out = np.full((height, len(panels) * (width + gap) - gap, depth), 255, np.uint8)
    for i, panel in enumerate(panels):
        out[:, i * (width + gap) : i * (width + gap) + width] = panel
    return out
