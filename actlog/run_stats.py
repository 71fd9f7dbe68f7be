"""Statistics of a run: scalar and per-channel statistics of each layer, by step."""

from __future__ import annotations

import numpy as np

from actlog import metadata
from actlog.index import LogError, tensor_to_numpy
from actlog.run_view import RunView


class StatReader(RunView):
    """The scalar and per-channel statistics of a run's layers (part of :class:`~actlog.reader.Run`)."""

    # -- statistics --------------------------------------------------------

    def scalars(self, layer: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every scalar statistic logged for ``layer``.

        Returns:
            ``{stat: (steps int64 (S,), values float64 (S,))}`` for the stats in
            :data:`actlog.metadata.SCALAR_STATS` that were logged (none when
            statistics were turned off).
        """
        self._layer(layer)
        result = {}
        for stat in metadata.SCALAR_STATS:
            series = self._series.get(metadata.stat_tag(layer, stat))
            if series is not None and series.kind == "scalar":
                steps = series.steps()
                result[stat] = (
                    np.asarray(steps, dtype=np.int64),
                    np.asarray([series.points[s] for s in steps], dtype=np.float64),
                )
        return result

    def scalar(self, layer: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """One scalar statistic of ``layer`` over steps: ``(steps, float64 values)``.

        Args:
            layer: a layer display name.
            stat: one of ``mean``, ``std``, ``sparsity``, ``dead_fraction``, ``drift``.
        """
        if stat not in metadata.SCALAR_STATS:
            raise LogError(
                f"Unknown statistic {stat!r}. Scalar statistics: {list(metadata.SCALAR_STATS)}"
                f" (per-channel ones, {list(metadata.CHANNEL_STATS)}, via channel_stats())."
            )
        found = self.scalars(layer)
        if stat not in found:
            raise LogError(
                f"No {stat!r} statistic logged for layer {layer!r} in run {self.name!r}; "
                f"logged: {sorted(found) or 'none (statistics were off)'}."
            )
        return found[stat]

    def channel_stats(self, layer: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """A per-channel statistic of ``layer`` over steps.

        Args:
            layer: a layer display name.
            stat: ``channel_mean``, ``channel_max`` or ``channel_drift`` (the
                short forms ``mean``, ``max``, ``drift`` are accepted too).

        Returns:
            ``(steps, values)``: int64 ``(S,)`` and float32 ``(S, channels)``,
            one column per channel of the layer (every channel, not only those
            shown in the grid).
        """
        full, steps, rows = self._channel_rows(layer, stat)
        if len({row.shape for row in rows}) > 1:
            raise LogError(
                f"{full!r} of layer {layer!r} changes length between steps "
                f"({sorted({row.size for row in rows})} channels); read one channel with "
                "Run.channel_stat()."
            )
        return np.asarray(steps, dtype=np.int64), np.stack(rows)

    def channel_stat(self, layer: str, stat: str, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """One channel of a per-channel statistic over steps: ``(steps, float32 values)``.

        Unlike :meth:`channel_stats`, a layer whose channel count changed between
        ``fit`` calls is fine: steps at which it had no channel ``channel`` are
        left out.
        """
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or channel < 0:
            raise LogError(f"channel must be a non-negative integer; received {channel!r}.")
        _, steps, rows = self._channel_rows(layer, stat)
        kept = [(s, row[channel]) for s, row in zip(steps, rows, strict=True) if channel < row.size]
        return (
            np.asarray([s for s, _ in kept], dtype=np.int64),
            np.asarray([v for _, v in kept], dtype=np.float32),
        )

    def _channel_rows(self, layer: str, stat: str) -> tuple[str, list[int], list[np.ndarray]]:
        full = stat if stat.startswith("channel_") else f"channel_{stat}"
        if full not in metadata.CHANNEL_STATS:
            raise LogError(
                f"Unknown per-channel statistic {stat!r}. Accepted: {list(metadata.CHANNEL_STATS)}."
            )
        self._layer(layer)
        series = self._series.get(metadata.stat_tag(layer, full))
        if series is None or not series.points:
            logged = [
                s for s in metadata.CHANNEL_STATS if metadata.stat_tag(layer, s) in self._series
            ]
            raise LogError(
                f"No {full!r} statistic logged for layer {layer!r} in run {self.name!r}; "
                f"logged: {logged or 'none (statistics were off)'}."
            )
        steps = series.steps()
        rows = [tensor_to_numpy(series.points[s]).astype(np.float32).reshape(-1) for s in steps]
        return full, steps, rows
