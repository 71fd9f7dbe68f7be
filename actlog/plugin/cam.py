"""The dashboard's class activation maps (``ActivationLogger(cam=...)``): indexed with the run,
served by ``/class_maps?run&probe`` (every step's picture key and class) and ``/image``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actlog.index import LogError
from actlog.plugin import keys
from actlog.reader import ImageRef, Run


@dataclass(frozen=True)
class ClassMapIndex:
    """A run's class maps at one version of its index.

    Attributes:
        layer: the layer they were computed for.
        info: its manifest entry's ``cam`` (``classes``, ``score``, ``scale``, ``tags``).
        steps: the steps with class maps, in order.
        classes: per step, the class of each probe's map.
        refs: per probe, per step (as :attr:`steps`), where the picture is (None if missing).
    """

    layer: str
    info: dict[str, Any]
    steps: list[int]
    classes: list[list[int]]
    refs: list[list[ImageRef | bytes | None]]


def index_class_maps(run: Run) -> ClassMapIndex | None:
    """What the dashboard shows of ``run``'s class maps (None when it has none, or they cannot
    be read yet)."""
    layer = run.class_map_layer
    if layer is None:
        return None
    try:
        steps, _, classes = run.class_map_values()
        refs = []
        for probe in range(run.probes):
            try:
                known = dict(zip(*run.class_map_refs(probe), strict=True))
            except LogError:
                known = {}
            refs.append([known.get(int(s)) for s in steps])
        return ClassMapIndex(layer, run.class_map_info(), [int(s) for s in steps], classes.tolist(), refs)
    except (LogError, KeyError, ValueError):
        return None


def class_maps_body(run: str, found: ClassMapIndex | None, probe: int) -> dict[str, Any]:
    """``/class_maps``: every step's picture of ``probe`` (a key for ``/image``) and its class."""
    if found is None:
        return {"run": run, "probe": probe, "layer": None, "steps": [],
                "note": "no class maps in this run (ActivationLogger(cam=...))"}
    steps = [
        {"step": step, "class": found.classes[i][probe],
         "key": keys.encode_class_map(run, found.layer, probe, step, ref)}
        for i, (step, ref) in enumerate(zip(found.steps, found.refs[probe], strict=True)) if ref is not None
    ]
    info = found.info
    return {"run": run, "probe": probe, "layer": found.layer, "classes": info.get("classes"),
            "score": info.get("score"), "steps": steps}


def class_map_ref(found: ClassMapIndex | None, layer: str | None, probe: int | None,
                  step: int | None) -> ImageRef | bytes | None:
    """The picture a class-map key names, or None."""
    if found is None or found.layer != layer or step not in found.steps or probe >= len(found.refs):
        return None
    return found.refs[probe][found.steps.index(step)]
