"""Step-count stability limits of the explicit samplers (Euler, Heun, Euler–Maruyama).

Explicit steps of the reverse dynamics are only stable while the step is short against the
stiffest rate of the drift. For a k ≥ 2 process that rate grows like 1/t near t_min, even with
the exact score (measured on 8 Gaussians with the exact mixture score: CLD and HOLD lose
6 333 and 19 082 of 20 000 samples under Euler at 20 steps; docs/samplers.md, "Stability
limits"). The splitting and exponential samplers solve the linear part exactly and have no
such limit.

The criterion, per grid and process, needs no network. For point-mass data (the stiffest law:
every mixture component looks like one as t → 0) the exact reverse drift is linear,
F z − K s with s = −[Σ⁻¹ z]_n, so one explicit step multiplies a mode of the drift's Jacobian
J_i = F + K [Σ⁻¹]_n,: at the step's start (eigenvalue λ) by

    Euler / Euler–Maruyama:  R(−Δ_i λ) = 1 − Δ_i λ,      Heun: 1 − Δ_i λ + ½(Δ_i λ)²

(Heun's last step is Euler). Modes with Re λ > 0 decay in the exact reverse flow; a step with
|R| > 1 on such a mode amplifies an error that should shrink (the classic absolute-stability
test). Modes that grow in the exact flow (Re λ ≤ 0) are left out: their growth is the
process's, not the integrator's. `amplification` is Π_i max(1, max |R| over the decaying
modes of step i), and a run is called unstable when it exceeds `FACTOR` = 2.
`stability_limit` is the fewest steps on a grid that stay within it, and for Euler–Maruyama on
a phase-space process at least `EM_PHASE_SPACE_STEPS`, a measured floor the linear criterion
does not see.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch

from phasediff.processes import LinearProcess
from phasediff.processes.reverse import ReverseDynamics
from phasediff.samplers.ei_coefficients import process_key
from phasediff.samplers.grids import time_grid


class StabilityWarning(UserWarning):
    """An explicit sampler asked for fewer steps than its stability limit; ``method`` names
    the sampler (euler, heun, em)."""

    def __init__(self, message: str, method: str = "") -> None:
        super().__init__(message)
        self.method = method


FACTOR = 2.0
"""A run whose linearised steps can amplify an error by more than this is called unstable."""

METHODS = ("euler", "heun", "em")
"""The explicit samplers the criterion covers (em: the reverse SDE, η = 1)."""

EM_PHASE_SPACE_STEPS = 50
"""Euler–Maruyama steps a phase-space process (k ≥ 2) needs whatever the criterion says: with
the exact score of 8 thin Gaussians (std 0.05), CLD, PSLD and HOLD lose 31–33 % of the
samples at 10 steps and 0.3–1.5 % at 20, and none at 50 (docs/samplers.md, "Stability
limits"), although the point-mass criterion passes CLD and PSLD at 10. The noise the SDE
injects into the auxiliary blocks is what the linear criterion misses."""


def _step_radii(process: LinearProcess, times: torch.Tensor, method: str) -> torch.Tensor:
    """The largest |R(−Δλ)| over the decaying modes (Re λ > 0) of every step of `times`
    (module docstring), float64 (steps,); 0 for a step without decaying modes."""
    rd = ReverseDynamics(process)
    starts = times[:-1]
    F, K = rd.drift(starts, 1.0 if method == "em" else 0.0)
    _, Sigma = process.kernel(starts)
    J = F + K @ torch.linalg.inv(Sigma)[..., rd.noisy, :]
    w = -(times[:-1] - times[1:])[:, None] * torch.linalg.eigvals(J)  # −Δλ, one row per step
    R = 1 + w
    if method == "heun":
        R[:-1] = R[:-1] + 0.5 * w[:-1] ** 2  # Heun's last step is Euler
    decaying = w.real < 0
    return torch.where(decaying, R.abs(), torch.zeros_like(R.real)).amax(-1)


def amplification(
    process: LinearProcess, times: torch.Tensor | int, method: str, grid: str = "uniform"
) -> float:
    """Π max(1, |R|) over the steps of `times` (a float64 grid, or a step count on `grid`)
    for `method` in `METHODS`; 1 means no step can amplify an error."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if isinstance(times, int):
        times = time_grid(process, times, grid)
    radii = _step_radii(process, times.to(torch.float64), method)
    return math.exp(float(torch.log(radii.clamp(min=1.0)).sum()))


def measured_floor(process: LinearProcess, method: str) -> int:
    """Steps below which `method` is unstable on `process` by measurement rather than by the
    criterion: `EM_PHASE_SPACE_STEPS` for em on k ≥ 2, else 1."""
    return EM_PHASE_SPACE_STEPS if method == "em" and process.k >= 2 else 1


_LIMITS: dict[tuple[tuple, str, str, int], tuple[LinearProcess, int | None]] = {}
"""stability_limit per (process, method, grid, max_steps): a bisection over grids of up to
max_steps steps is too slow to repeat on every warned call (the process is kept with its
entry, so a reused id() cannot alias another process)."""


def stability_limit(
    process: LinearProcess, method: str, grid: str = "uniform", *, max_steps: int = 8192
) -> int | None:
    """The fewest steps on `grid` whose `amplification` is at most `FACTOR` (bisection; the
    amplification falls as steps grow) and that reach `measured_floor`, or None when even
    `max_steps` is not enough."""
    ident = process_key(process)
    key = (ident, method, grid, max_steps)
    hit = _LIMITS.get(key)
    if hit is not None and (ident[0] == "value" or hit[0] is process):
        return hit[1]
    if amplification(process, max_steps, method, grid) > FACTOR:
        limit = None
    else:
        limit = max(
            _criterion_limit(process, method, grid, max_steps), measured_floor(process, method)
        )
    if len(_LIMITS) > 256:  # a handful of processes per session; never grows without bound
        _LIMITS.clear()
    _LIMITS[key] = (process, limit)
    return limit


def _criterion_limit(process: LinearProcess, method: str, grid: str, max_steps: int) -> int:
    lo, hi = 0, max_steps  # amplification(hi) ≤ FACTOR < amplification(lo) (lo = 0: none)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if amplification(process, mid, method, grid) <= FACTOR:
            hi = mid
        else:
            lo = mid
    return hi


def _outside_caller_level() -> int:
    """The `warnings.warn` stacklevel of the first frame outside phasediff and torch's
    decorators: the user's call to the sampler, however many wrappers sit between."""
    inside = (str(Path(__file__).resolve().parents[1]), "torch/utils/_contextlib.py")
    frame, level = sys._getframe(1), 1
    while frame is not None and any(part in frame.f_code.co_filename for part in inside):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_unstable(
    process: LinearProcess, times: torch.Tensor, method: str, grid: str | torch.Tensor
) -> float:
    """Warn (UserWarning, one sentence, attributed to the user's call) when the run on
    `times` is unstable by the module's criterion, naming the step count that would be
    stable; returns the amplification."""
    amp = amplification(process, times, method)
    steps = times.numel() - 1
    floor = measured_floor(process, method)
    if amp > FACTOR or steps < floor:
        where = f"the {grid} grid" if isinstance(grid, str) else "this grid"
        limit = stability_limit(process, method, grid) if isinstance(grid, str) else None
        need = f"use at least {limit} steps" if limit else "use more steps"
        why = (
            f"its explicit steps can amplify an error {amp:.3g}-fold near t_min, even with the "
            "exact score"
            if amp > FACTOR
            else f"Euler–Maruyama loses samples below {floor} steps on phase-space processes, "
            "measured with the exact score of thin mixtures"
        )
        message = (
            f"{method} with {steps} steps on {where} is beyond its stability limit for "
            f"this process ({why}); {need}, or a splitting or exponential sampler "
            "(lie_trotter, strang, ei1c), which have no such limit (docs/samplers.md, "
            '"Stability limits").'
        )
        warnings.warn(StabilityWarning(message, method), stacklevel=_outside_caller_level())
    return amp


__all__ = [
    "EM_PHASE_SPACE_STEPS",
    "StabilityWarning",
    "FACTOR",
    "METHODS",
    "amplification",
    "measured_floor",
    "stability_limit",
    "warn_if_unstable",
]
