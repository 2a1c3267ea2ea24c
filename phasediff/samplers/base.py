"""Shared pieces of every sampler: the result type, NFE counting and time grids (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from phasediff.objectives import parameterization_of
from phasediff.processes import LinearProcess, apply_blocks

GRIDS = ("uniform", "quadratic")


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


def time_grid(process: LinearProcess, steps: int, grid: str = "uniform") -> torch.Tensor:
    """Decreasing float64 times T = t_0 > … > t_steps = t_min."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}.")
    if grid not in GRIDS:
        raise ValueError(f"unknown time grid {grid!r}; valid grids are: {', '.join(GRIDS)}.")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if grid == "quadratic":  # denser near t_min (PSLD's quadratic striding)
        u = 1 - (1 - u) ** 2
    return process.T + (process.t_min - process.T) * u


def score_factors(process: LinearProcess, times: torch.Tensor) -> torch.Tensor:
    """U(t) = (L_t⁻ᵀ)_nn at each grid time: ε-models give the score ŝ = −U ε̂."""
    _, _, L = process.marginal(times)
    return process.noisy_score_factor(L)


def noisy_score(model: CountingModel, z: torch.Tensor, t: float, U: torch.Tensor) -> torch.Tensor:
    """The model's score on the noisy blocks at a scalar time t (U: m×m for that t)."""
    tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
    out = model(z, tt)
    if model.parameterization == "score":
        return out
    return -apply_blocks(U, out)
