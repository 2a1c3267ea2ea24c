"""Shared pieces of every sampler: the result type, NFE counting and the Euler/Heun loop
(docs/design.md §4); time grids live in `phasediff.samplers.grids`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from phasediff.objectives import parameterization_of
from phasediff.processes import LinearProcess
from phasediff.processes.reverse import ReverseDynamics
from phasediff.samplers.grids import GRIDS as GRIDS  # re-exported for the samplers
from phasediff.samplers.grids import time_grid as time_grid


@dataclass
class Samples:
    """x: data block (B, *data_shape); z: full final state; nfe: counted network calls;
    trajectory: states at every grid time when requested (list of (B, k, *data))."""

    x: torch.Tensor
    z: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)


class CountingModel:
    """Wraps a model and counts its evaluations (NFE is measured, never inferred)."""

    def __init__(self, model) -> None:
        self.model = model
        self.parameterization = parameterization_of(model)
        self.nfe = 0

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.model(z, t)


def score_factors(process: LinearProcess, times: torch.Tensor) -> torch.Tensor:
    """U(t) = (L_t⁻ᵀ)_nn at each grid time: ε-models give the score ŝ = −U ε̂
    (`phasediff.processes.ReverseDynamics.score_factor`)."""
    return ReverseDynamics(process).score_factor(times)


def check_shape(shape) -> tuple[int, ...]:
    """(batch, *data_shape) of positive ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple (batch, *data_shape), got {shape!r}.") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be (batch, *data_shape) with positive sizes and at least one data axis, "
            f"got {shape}."
        )
    return shape


def euler_heun_loop(
    velocity: Callable[[int, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    times: torch.Tensor,
    method: str,
    callback: Callable[[dict], None] | None,
    return_trajectory: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Fixed-step Euler or Heun (EDM's Algorithm 1: Euler on the last step) for
    dz/dt = velocity(i, z), evaluated at grid time times[i]; integrates from times[0]
    to times[-1]. Shared by the PF-ODE and the HGF samplers. Returns (z_end, trajectory)."""
    t_all = times.tolist()
    steps = len(t_all) - 1
    trajectory = [z.clone()] if return_trajectory else []
    for i in range(steps):
        h = t_all[i + 1] - t_all[i]  # negative: integrating backwards
        d = velocity(i, z)
        if method == "heun" and i < steps - 1:
            d2 = velocity(i + 1, z + h * d)
            z = z + 0.5 * h * (d + d2)
        else:
            z = z + h * d
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": t_all[i + 1], "z": z})
    return z, trajectory
