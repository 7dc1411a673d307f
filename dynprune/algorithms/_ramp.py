"""How the scheduled algorithms reach ``hyperparams["target"]``: at once, or along a ramp."""

from __future__ import annotations

from collections.abc import Callable

from dynprune import schedules
from dynprune.pruner import Hyperparams


def target_ramp(
    begin: int, end: int | None, every: int
) -> tuple[Callable[[Hyperparams], schedules.Schedule], schedules.Cadence]:
    """(schedule factory, cadence): one update at ``begin`` if ``end`` is None, else the
    Zhu & Gupta cubic ramp from ``hyperparams["initial"]`` to ``hyperparams["target"]``,
    updating every ``every`` steps from ``begin``, and at ``end`` itself, so the target is
    reached even when ``end - begin`` is not a multiple of ``every``."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every!r}")
    if end is None:
        return (
            lambda hp: schedules.constant(hp["target"]),
            schedules.every(1, begin=begin, end=begin),
        )
    if end <= begin:
        raise ValueError(f"need end > begin for a gradual ramp, got begin={begin}, end={end}")
    periodic = schedules.every(every, begin=begin, end=end)
    return (
        lambda hp: schedules.polynomial(hp["target"], begin, end, initial=hp["initial"]),
        lambda step: periodic(step) | (step == end),
    )
