"""The body of the dashboard's ``/compare`` route: two runs lined up on one layer and probe.

The page's compare mode (``static/view_compare.js``) shows two runs side by
side at the step of one slider. The slider runs over every step either run
logged; at each, a run shows its own grid of that step, else its nearest
earlier one (:func:`actlog.comparison.at_or_before`, the reader's rule too), labelled
with the step it really is. Everything the page needs for that comes in one
answer: each run's grid steps with their image keys, where each slider step
lands in each run, the layer's scalar statistics and its atlas pictures.
"""

from __future__ import annotations

import math
from typing import Any

from actlog.comparison import CompareError, at_or_before
from actlog.plugin import keys
from actlog.plugin.catalog import LayerIndex, RunIndex


def compare_body(a: RunIndex, b: RunIndex, layer: str, probe: int) -> dict[str, Any]:
    """Both runs' grids of ``layer`` for ``probe``, aligned step by step.

    Raises:
        CompareError: ``layer`` is not in both runs, the runs have different
            probe counts, or ``probe`` is not one of them.
    """
    missing = [index.name for index in (a, b) if layer not in index.layers]
    if missing:
        both = [name for name in a.layers if name in b.layers]
        raise CompareError(f"Layer {layer!r} is not in run(s) {missing}. Layers in both runs: {both}.")
    if a.probes != b.probes:
        raise CompareError(
            f"Runs {a.name!r} and {b.name!r} have different probes ({a.probes} and {b.probes}): "
            "a comparison shows the same probe image in both."
        )
    if not 0 <= probe < a.probes:
        raise CompareError(f"Probe {probe} does not exist; both runs have {a.probes} probes.")
    grids = [index.layers[layer].grids.get(probe, []) for index in (a, b)]
    steps = sorted({g.step for found in grids for g in found})
    common = sorted({g.step for g in grids[0]} & {g.step for g in grids[1]})
    return {
        "layer": layer, "probe": probe, "steps": steps, "common": common,
        "sides": [_side(index, index.layers[layer], probe, steps) for index in (a, b)],
    }  # fmt: skip


def _side(index: RunIndex, layer: LayerIndex, probe: int, steps: list[int]) -> dict[str, Any]:
    grids = layer.grids.get(probe, [])
    own = [g.step for g in grids]
    position = {step: i for i, step in enumerate(own)}

    def at(step: int) -> int | None:
        found = at_or_before(own, step)
        return None if found is None else position[found]

    return {
        "run": index.name,
        "version": index.version,
        "step_axis": index.step_axis,
        "probe_image": (
            keys.encode_probe(index.name, probe, index.probe_images[probe])
            if index.probe_images[probe] is not None else None
        ),
        "grids": [
            {"step": g.step, "key": keys.encode_grid(index.name, layer.name, probe, g.step, g.ref)}
            for g in grids
        ],
        "at": [at(step) for step in steps],
        "scalars": {
            stat: {str(s): v if math.isfinite(v) else None for s, v in zip(found_steps, values, strict=True)}
            for stat, (found_steps, values) in layer.scalars.items()
        },
        "atlas": [
            {"step": entry.step, "key": keys.encode_atlas(index.name, layer.name, entry.step, entry.ref),
             "k": entry.k, "pool": entry.pool}
            for entry in layer.atlas
        ],
    }  # fmt: skip
