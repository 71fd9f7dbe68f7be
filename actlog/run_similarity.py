"""Representation similarity of a run: linear CKA between steps, and between layers.

Every event stores each layer's centred Gram matrix on the probes
(``{layer}/gram``, see :mod:`actlog.similarity`); these methods compare them.
"""

from __future__ import annotations

import numpy as np

from actlog import metadata, similarity
from actlog.index import LogError, tensor_to_numpy
from actlog.run_view import RunView, describe_steps


class SimilarityReader(RunView):
    """Linear CKA of a run's layers over steps (part of :class:`~actlog.reader.Run`)."""

    def grams(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``layer``'s centred Gram matrices: int64 steps ``(S,)``, float32 ``(S, k, k)``.

        Raises:
            LogError: no such layer, or a log written before actlog stored Gram matrices.
        """
        self._layer(layer)
        series = self._series.get(metadata.gram_tag(layer))
        if series is None or not series.points:
            raise LogError(
                f"No Gram matrices logged for layer {layer!r} in run {self.name!r} "
                "(a log written by an actlog without representation similarity)."
            )
        steps = series.steps()
        grams = [tensor_to_numpy(series.points[s]).astype(np.float32) for s in steps]
        if len({g.shape for g in grams}) > 1:
            # another fit with other probes: only the steps with the last probe count compare
            kept = [i for i, g in enumerate(grams) if g.shape == grams[-1].shape]
            steps, grams = [steps[i] for i in kept], [grams[i] for i in kept]
        return np.asarray(steps, dtype=np.int64), np.stack(grams)

    def similarity(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Linear CKA of ``layer`` between every two logged steps.

        ```python
        steps, matrix = run.similarity("conv_1")
        matrix[:, -1]          # each step against the last: 1 once the layer has settled
        ```

        Returns:
            ``(steps, matrix)``: int64 ``(S,)`` and float64 ``(S, S)``, ``matrix[i, j]``
            the CKA between the layer at ``steps[i]`` and at ``steps[j]``: symmetric,
            1 on the diagonal, NaN where undefined (a layer whose activations are
            the same for every probe, or NaN/Inf activations at either step).
            Steps whose probe count differs from the last step's are left out.
        """
        steps, grams = self.grams(layer)
        return steps, similarity.cka_matrix(list(grams))

    def layer_similarity(self, step: int | None = None) -> tuple[list[str], np.ndarray]:
        """Linear CKA between every two layers at ``step`` (default: the last step with a Gram).

        Returns:
            ``(layers, matrix)``: the layers logged at that step, in the run's order,
            and float64 ``(L, L)``, symmetric, NaN where undefined.
        """
        found = {}
        for layer in self.layers:
            series = self._series.get(metadata.gram_tag(layer))
            if series is not None and series.points:
                found[layer] = series
        if not found:
            raise LogError(
                f"No Gram matrices logged in run {self.name!r} (a log written by an actlog "
                "without representation similarity)."
            )
        logged = sorted({s for series in found.values() for s in series.points})
        if step is None:
            step = logged[-1]
        elif isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise LogError(f"step must be an integer; received {step!r}.")
        elif int(step) not in logged:
            raise LogError(f"No Gram matrices at step {step} in run {self.name!r}; "
                           f"logged: {describe_steps(logged)}.")
        step = int(step)
        layers = [name for name, series in found.items() if step in series.points]
        grams = [tensor_to_numpy(found[name].points[step]) for name in layers]
        return layers, similarity.cka_matrix(grams)
