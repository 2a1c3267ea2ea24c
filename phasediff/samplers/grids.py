"""Time grids T = t_0 > … > t_steps = t_min of every sampler (docs/samplers.md): `uniform`,
`quadratic`, `edm`, `logb`, `optimal` (the exponential integrator's error-equidistributing
grid) and `auto` (`logb` up to `FEW_STEPS` steps, `optimal` above: the exponential samplers'
default, measured on trained models, docs/samplers.md "Few steps")."""

from __future__ import annotations

import torch

from phasediff.processes import LinearProcess
from phasediff.processes.linalg import psd_factor
from phasediff.samplers.ei_coefficients import (
    cached_per_grid,
    check_order_eta,
    exponential_coefficients,
)
from phasediff.validation import check_int, check_positive

GRIDS = ("uniform", "quadratic", "edm", "logb", "optimal", "auto")
FEW_STEPS = 15
"""Up to this many steps `auto` is `logb`; from 20 NFE on `optimal` did as well or better on
every trained model measured, at 10–15 `logb` did better (up to 2.5×; docs/samplers.md)."""


def resolve_auto(grid, steps: int):
    """`grid` itself, except "auto": "logb" for steps ≤ `FEW_STEPS`, else "optimal"."""
    if isinstance(grid, str) and grid == "auto":
        return "logb" if steps <= FEW_STEPS else "optimal"
    return grid


def time_grid(
    process: LinearProcess,
    steps: int,
    grid: str = "uniform",
    rho: float = 7.0,
    *,
    t_end: float | None = None,
) -> torch.Tensor:
    """Decreasing float64 times T = t_0 > … > t_steps = t_end (default t_min).

    uniform: equal steps in t; quadratic: u ↦ 1 − (1 − u)², denser near t_end (PSLD's
    quadratic striding); edm: EDM's ρ-spacing applied to the noise level σ(t) = √B(0, t)
    (for VE this is EDM's σ; t = B⁻¹(σ²) exactly); logb: equal steps in log B(0, t);
    optimal: `optimal_grid`; auto: `resolve_auto`. `t_end` in [t_min, T) ends the grid early
    with the same shape (the denoising final step's noise floor, phasediff/samplers/final.py).
    """
    steps = check_int(steps, "steps")
    if grid not in GRIDS:
        raise ValueError(f"unknown time grid {grid!r}; valid grids are: {', '.join(GRIDS)}.")
    grid = resolve_auto(grid, steps)
    end = _check_end(process, t_end)
    if grid == "optimal":
        return optimal_grid(process, steps, t_end=t_end)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if grid == "edm":
        if not rho > 0:
            raise ValueError(f"rho must be > 0, got {rho}.")
        ends = torch.tensor([process.T, end], dtype=torch.float64)
        s_max, s_min = process.beta_integral(ends).sqrt().tolist()
        sigma = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        times = process.schedule.inverse_integral(sigma**2)
        times[0], times[-1] = process.T, end
        return times
    if grid == "logb":
        ends = torch.tensor([process.T, end], dtype=torch.float64)
        lo, hi = process.beta_integral(ends).log().tolist()
        times = process.schedule.inverse_integral((lo + u * (hi - lo)).exp())
        times[0], times[-1] = process.T, end
        return times
    if grid == "quadratic":
        u = 1 - (1 - u) ** 2
    return process.T + (end - process.T) * u


def _check_end(process: LinearProcess, t_end: float | None) -> float:
    """t_end itself (t_min when None), or one sentence naming the valid range."""
    if t_end is None:
        return process.t_min
    ok = isinstance(t_end, int | float) and not isinstance(t_end, bool)
    if not (ok and process.t_min <= t_end < process.T):
        raise ValueError(
            f"t_end must be a time in [t_min, T) = [{process.t_min:g}, {process.T:g}), "
            f"got {t_end!r}."
        )
    return float(t_end)


def optimal_grid(
    process: LinearProcess,
    steps: int,
    *,
    order: int = 2,
    sigma_data: float = 1.0,
    n_fine: int = 512,
    t_end: float | None = None,
) -> torch.Tensor:
    """Times T = t_0 > … > t_steps = t_end (default t_min) that equidistribute the local error
    of the order-p exponential integrator on Gaussian data N(0, σ_data² I) (docs/samplers.md).

    Along an exact probability-flow trajectory of such data, x̂₀(λ) = κ(λ)ᵀ z_T is linear in
    the start z_T (λ = log B(0, t)); an Adams step of order p on [λ, λ + h] makes a local
    error ∝ h^(p+1) ‖κ^(p)(λ)‖_P (P the prior covariance). Steps with
    h(λ) ∝ ‖κ^(p)(λ)‖_P^(−1/(p+1)) make these errors equal; a floor of 5 % of the mean density
    keeps the grid from starving smooth stretches.
    """
    steps = check_int(steps, "steps")
    check_order_eta(order, 0.0)
    sigma_data = check_positive(sigma_data, "sigma_data")
    end = _check_end(process, t_end)
    key = ("grid", steps, order, sigma_data, n_fine, end)
    return cached_per_grid(
        key, process, lambda: _optimal_grid(process, steps, order, sigma_data, n_fine, end)
    ).clone()


def _optimal_grid(
    process: LinearProcess, steps: int, order: int, sigma_data: float, n_fine: int, end: float
) -> torch.Tensor:
    fine = time_grid(process, n_fine, "logb", t_end=end)
    coef = exponential_coefficients(process, fine, 1, 0.0, substeps=4, sigma_data=sigma_data)
    e, Sigma, _ = process.marginal(fine)
    ref = torch.linalg.inv(Sigma + sigma_data**2 * e[:, :, None] * e[:, None, :])
    readout = sigma_data**2 * (e[:, None, :] @ ref)[:, 0]  # x̂₀ = readoutᵀ z for this data
    flow = torch.eye(process.k, dtype=torch.float64)
    root = psd_factor(process.prior_cov)
    kappa = []
    for i in range(n_fine + 1):
        kappa.append(readout[i] @ flow @ root)
        if i < n_fine:
            flow = coef["Psi"][i] @ flow
    kappa = torch.stack(kappa)  # (n_fine + 1, k)
    lam = process.beta_integral(fine).log()
    deriv = kappa
    for _ in range(order):
        deriv = torch.gradient(deriv, spacing=(lam,), dim=0)[0]
    density = deriv.norm(dim=-1) ** (1.0 / (order + 1))
    density = density + 0.05 * density.mean()
    # cumulative density along λ (trapezoid), inverted at equal quantiles
    seg = 0.5 * (density[1:] + density[:-1]) * (lam[:-1] - lam[1:])
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    targets = torch.linspace(0.0, float(cum[-1]), steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(cum, targets).clamp(1, n_fine)
    frac = (targets - cum[idx - 1]) / (cum[idx] - cum[idx - 1])
    lam_grid = lam[idx - 1] + frac * (lam[idx] - lam[idx - 1])
    times = process.schedule.inverse_integral(lam_grid.exp())
    times[0], times[-1] = process.T, end
    return times


__all__ = ["FEW_STEPS", "GRIDS", "optimal_grid", "resolve_auto", "time_grid"]
