"""Samplers: plain functions `(model, process, shape, steps, *, generator, callback)` (SPEC §4)."""

from phasediff.samplers.base import GRIDS, CountingModel, Samples, time_grid
from phasediff.samplers.sde import euler_maruyama

SAMPLERS = {"em": euler_maruyama}


def get_sampler(name: str):
    """Sampler by name; unknown names list the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


__all__ = [
    "GRIDS",
    "SAMPLERS",
    "CountingModel",
    "Samples",
    "euler_maruyama",
    "get_sampler",
    "time_grid",
]
