"""Exponential-integrator sampler for any linear process (the DEIS / gDDIM / DPM-Solver++ idea
for phase-space processes of any order k; derivation in docs/samplers.md).

For a linear Gaussian kernel z_t | x₀ ~ N(e x₀, Σ_t) the exact score of *any* data law is
∇log p_t(z) = −Σ⁻¹(z − e x̂₀(z)), x̂₀ = E[x₀ | z_t] (Tweedie). Only the noisy blocks of the
score enter the dynamics (D is zero elsewhere), so the model's noisy-block score s_n gives

    x̂₀ = wᵀ (s_n + (Σ⁻¹ z)_n),      w = (Σ⁻¹e)_n / ‖(Σ⁻¹e)_n‖²

(exact for m = 1 noisy block; for m > 1 a model component not of Tweedie form is projected
out). Split x̂₀ = E_ref[x₀ | z] + δ with the posterior mean κᵀz of reference data
N(0, σ_data² I) (σ_data = 0: a point mass, κ = 0). On the integrated clock b = B(0, t), the
reverse-time family with λ = η² (λ = 0: probability-flow ODE, λ = 1: reverse SDE) becomes

    dz = [M(b) z − f(b) δ] db + √(2λh) G dW̄,   M = A + (1+λ) h D Σ_ref⁻¹,   f = (1+λ) h D Σ⁻¹ e,

with Σ_ref = Σ + σ_data² e eᵀ (Woodbury: Σ⁻¹(z − eκᵀz) = Σ_ref⁻¹ z). M carries all the
stiffness near the data end and is solved exactly; δ vanishes for the reference data and is
smooth along trajectories. From b_i down to b_{i+1}, with δ(τ) replaced by the Lagrange
polynomial ℓ_j (in log τ) through the last `order` values,

    z_{i+1} = Ψ_i z_i + Σ_j y_ij δ_{i−j} + R_i ξ,

where Ψ_i (k×k) solves Ψ' = MΨ, y_ij (k) solves y' = My − fℓ_j (y(b_i) = 0) and
N_i = R_i R_iᵀ solves N' = MN + NMᵀ − 2λhD (N(b_i) = 0). These small matrix ODEs are solved
once per grid, all steps at once, by classical RK4 in s ∈ [0, 1] with τ = b_i^(1−s) b_{i+1}^s
(log-spaced, which removes the 1/τ scale of M). A step then costs one network call and a few
k×k block products.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from phasediff.objectives.hamiltonian import is_velocity_model
from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import Recorder, Samples
from phasediff.samplers.dynamics import ModelDynamics, prepare
from phasediff.samplers.ei_coefficients import (
    cached_per_grid,
    check_order_eta,
    exponential_coefficients,
)
from phasediff.samplers.grids import optimal_grid, resolve_auto


def _check_options(model, order, eta, sigma_data, corrector) -> float:
    """Refuse bad options and velocity models; returns σ_data (default 1)."""
    check_order_eta(order, eta)
    if not isinstance(corrector, bool):
        raise ValueError(f"corrector must be True or False, got {corrector!r}.")
    if is_velocity_model(model):  # routed by the registry (SAMPLERS["ei"]), not here
        if corrector:
            raise ValueError(
                "corrector=True is for score models; velocity models use hgf_ei without it."
            )
        raise ValueError(
            "exponential_integrator samples score and ε models; sample a velocity model with "
            "hgf_ei (the samplers ei, ei1 and ei3 of phasediff.samplers route it there)."
        )
    sigma_data = 1.0 if sigma_data is None else sigma_data
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, int | float):
        raise ValueError(f"sigma_data must be a number ≥ 0, got {sigma_data!r}.")
    if not (math.isfinite(sigma_data) and sigma_data >= 0):
        raise ValueError(f"sigma_data must be a finite number ≥ 0, got {sigma_data!r}.")
    return sigma_data


def _step_matrices(dyn: ModelDynamics, times, order, eta, sigma_data, corrector):
    """(Ψ, Y, R, Y_corrector or None, a, c) cast for sampling, cached per grid: x̂₀ = aᵀz +
    cᵀout (the ε/score map folded into c), z_{i+1} = Ψ_i z_i + Σ_j Y_ij δ_{i−j} + R_i ξ."""
    p = dyn.process
    key = (times.numpy().tobytes(), order, float(eta), float(sigma_data))
    coef = cached_per_grid(
        ("coef", *key),
        p,
        lambda: exponential_coefficients(p, times, order, eta, sigma_data=sigma_data),
    )
    Yc = None
    if corrector:
        Yc = cached_per_grid(
            ("corr", *key),
            p,
            lambda: exponential_coefficients(
                p, times, order, eta, sigma_data=sigma_data, corrector=True
            )["Y"],
        )
        (Yc,) = dyn.cast(Yc)
    c = coef["c"][:, None, :] @ dyn.score_map(times[:-1])  # cᵀŝ = cᵀS·out
    a = coef["a"][:, None, :]
    return (*dyn.cast(coef["Psi"], coef["Y"], coef["R"]), Yc, *dyn.cast(a, c))


@torch.inference_mode()
def exponential_integrator(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "auto",
    denoise: bool = True,
    order: int = 2,
    eta: float = 0.0,
    sigma_data: float | None = None,
    corrector: bool = False,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Exponential integrator with an Adams–Bashforth polynomial of `order` 1–3 (order 1 is a
    DDIM-like exponential Euler) in δ = x̂₀ − E_ref[x₀ | z], one NFE per step.

    The linear part is the exact flow for reference data N(0, σ_data² I) (σ_data = 0: a point
    mass), so with the exact score of such data the sampler is exact for any step count.
    `eta` = 0 integrates the PF-ODE; η > 0 follows the reverse-time family with λ = η²
    (η = 1: the reverse SDE) with exact Gaussian noise per step; `denoise` drops the last
    step's noise. The default grid "auto" is "logb" (equal steps in log B(0, t)) up to 15
    steps and "optimal" above, which equidistributes the local error for the reference data
    (`optimal_grid`); measured on trained models (docs/samplers.md, "Few steps").

    ``corrector=True`` adds an implicit (Adams–Moulton-type) correction without extra network
    calls, as UniPC's corrector: the call at t_{i+1}, made for the next step anyway, yields
    δ_{i+1}, and z_{i+1} is recomputed from z_i with the polynomial through δ_{i+1}, δ_i, …
    (order + 1 nodes, interpolation instead of extrapolation) before the next step starts. The
    network output is the one at the predicted z_{i+1}. The last step is not corrected (no
    call at t_min). Samplers `eic` (order 2) and `ei1c` (order 1) (docs/samplers.md).

    Score and ε models only (σ_data defaults to 1). The samplers `ei`, `ei1` and `ei3` of
    `phasediff.samplers.SAMPLERS` hand a position-only velocity model (HGF, flow matching) to
    `hgf_ei`, the same integrator for the position ODE (docs/hgf.md §6): the sampler
    registry does the routing, with η = 0, the grid "auto" or "optimal" replaced by "quadratic" and
    σ_data defaulting to 0 (DPM-Solver++).

    `grid`: a grid name or a decreasing float64 tensor of steps + 1 times; `z`: an optional
    starting state (batch, k, *data_shape) instead of a prior draw; `progress` and `callback`
    as for every sampler (docs/samplers.md, "Progress and callbacks")."""
    sigma_data = _check_options(model, order, eta, sigma_data, corrector)
    grid = resolve_auto(grid, steps) if isinstance(steps, int) else grid
    if isinstance(grid, str) and grid == "optimal":
        grid = optimal_grid(process, steps, order=order, sigma_data=sigma_data or 1.0)
    dyn, times, z = prepare(model, process, shape, steps, grid, z, generator, device, dtype)
    Psi, Y, R, Yc, a, c = _step_matrices(dyn, times, order, eta, sigma_data, corrector)
    stochastic = float(eta) > 0
    t = times.tolist()
    name = f"ei{'' if order == 2 else order}{'c' if corrector else ''}"
    record = Recorder(
        z, times, dyn, name=name, callback=callback, trajectory=return_trajectory, progress=progress
    )
    history: list[torch.Tensor] = []  # x̂₀ at steps i, i−1, … (newest first)
    base = z  # Ψ z + noise of the step that produced z (for the corrector)
    for i in range(steps):
        history.insert(0, apply_blocks(a[i], z) + apply_blocks(c[i], dyn(z, t[i])))
        if Yc is not None and i > 0:  # implicit step i−1 → i with δ at t_i from this call
            z = base
            for j, x0 in enumerate(history[: order + 1]):
                z = z + apply_blocks(Yc[i - 1, j, :, None], x0)
        del history[order:]
        z_next = apply_blocks(Psi[i], z)
        if stochastic and not (denoise and i == steps - 1):
            xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z_next = z_next + apply_blocks(R[i], xi)
        base = z_next
        for j, x0 in enumerate(history):
            z_next = z_next + apply_blocks(Y[i, j, :, None], x0)
        z = z_next
        record.step(i, z)
    return record.samples(z, times)


__all__ = ["exponential_coefficients", "exponential_integrator", "optimal_grid"]
