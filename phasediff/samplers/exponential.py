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
from phasediff.samplers.base import CountingModel, Samples, check_shape, score_factors, time_grid
from phasediff.samplers.hamiltonian import hgf_ei

RK4_PER_LOG_UNIT = 16  # RK4 steps per unit of log τ (tests/test_fast_sampling.py: converged)


_CACHE: dict[tuple, tuple[LinearProcess, object]] = {}
_CACHE_SIZE = 32


def _cached(key: tuple, process: LinearProcess, compute: Callable[[], object]):
    """Per-grid results are pure functions of (process, grid, options): keep the last few, so
    repeated sampling calls pay for the k×k precomputation once (keyed on the process object)."""
    key = (id(process), *key)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is process:
        return hit[1]
    value = compute()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (process, value)
    return value


def _check(order: int, eta: float) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}.")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: ODE, 1: reverse SDE), got {eta!r}.")


def _lagrange(x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Lagrange basis on `nodes` (S, p) evaluated at x (S, ...): shape (S, p, ...)."""
    p = nodes.shape[1]
    out = []
    extra = (None,) * (x.ndim - 1)
    for j in range(p):
        ell = torch.ones_like(x)
        for l in range(p):
            if l != j:
                xj = nodes[:, j][(..., *extra)]
                xl = nodes[:, l][(..., *extra)]
                ell = ell * (x - xl) / (xj - xl)
        out.append(ell)
    return torch.stack(out, dim=1)


def _rk4(
    process: LinearProcess,
    log_b: torch.Tensor,
    dlog: torch.Tensor,
    nodes: torch.Tensor,
    p_eff: torch.Tensor,
    rows: torch.Tensor,
    substeps: int,
    order: int,
    lam: float,
    sigma_data: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ψ, y, N of the steps `rows` by classical RK4 with `substeps` equal steps in s."""
    k, S = process.k, len(rows)
    s = torch.linspace(0.0, 1.0, 2 * substeps + 1, dtype=torch.float64)
    log_tau = log_b[rows, None] + s * dlog[rows, None]  # (S, P): stage points of every step
    tau = log_tau.exp()
    t_of = process.schedule.inverse_integral(tau.reshape(-1)).clamp(process.t_min, process.T)
    e, Sigma, _ = process.marginal(t_of)
    h = torch.ones_like(tau).reshape(-1)
    if process.noise_damping > 0:
        h = -torch.expm1(-process.noise_damping * tau.reshape(-1))
    scale = (1.0 + lam) * h[:, None, None]
    f = (scale * process.D @ torch.linalg.solve(Sigma, e[..., None]))[..., 0].reshape(S, -1, k)
    ref = Sigma + sigma_data**2 * e[..., :, None] * e[..., None, :]
    M = (process.A + scale * torch.linalg.solve(ref, process.D, left=False)).reshape(S, -1, k, k)
    noise = (2.0 * lam * h[:, None, None] * process.D).reshape(S, -1, k, k)
    rate = (tau * dlog[rows, None])[..., None, None]  # dτ/ds, (S, P, 1, 1)
    ell = torch.zeros(S, order, s.numel(), dtype=torch.float64)
    for p in range(1, order + 1):
        sel = p_eff[rows] == p
        if sel.any():
            ell[sel, :p] = _lagrange(log_tau[sel], nodes[rows][sel, :p])

    def rhs(idx: int, Psi: torch.Tensor, Y: torch.Tensor, N: torch.Tensor):
        Mi, ri = M[:, idx], rate[:, idx]
        dPsi = ri * (Mi @ Psi)
        dY = ri * ((Mi[:, None] @ Y[..., None])[..., 0] - f[:, None, idx] * ell[:, :, idx, None])
        dN = ri * (Mi @ N + N @ Mi.transpose(-1, -2) - noise[:, idx])
        return dPsi, dY, dN

    Psi = torch.eye(k, dtype=torch.float64).repeat(S, 1, 1)
    Y = torch.zeros(S, order, k, dtype=torch.float64)
    N = torch.zeros(S, k, k, dtype=torch.float64)
    hs = 1.0 / substeps
    for q in range(substeps):
        i0, i1, i2 = 2 * q, 2 * q + 1, 2 * q + 2
        k1 = rhs(i0, Psi, Y, N)
        k2 = rhs(i1, *(x + 0.5 * hs * d for x, d in zip((Psi, Y, N), k1, strict=True)))
        k3 = rhs(i1, *(x + 0.5 * hs * d for x, d in zip((Psi, Y, N), k2, strict=True)))
        k4 = rhs(i2, *(x + hs * d for x, d in zip((Psi, Y, N), k3, strict=True)))
        Psi, Y, N = (
            x + hs / 6.0 * (a + 2 * b_ + 2 * c + d)
            for x, a, b_, c, d in zip((Psi, Y, N), k1, k2, k3, k4, strict=True)
        )
    return Psi, Y, N


def exponential_coefficients(
    process: LinearProcess,
    times: torch.Tensor,
    order: int = 2,
    eta: float = 0.0,
    substeps: int | None = None,
    sigma_data: float = 0.0,
    corrector: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-grid step matrices in float64 (see the module docstring):

    Psi (S, k, k); Y (S, order, k) — Y[i, j] multiplies x̂₀ from step i−j (zero where the
    warm-up uses a lower order); R (S, k, k) with RRᵀ = N_i (zero for η = 0); and for the x̂₀
    read-out at each grid time t_i: a (S, k) and c (S, m) with x̂₀ = aᵀz + cᵀs_n.

    corrector=True gives the implicit (Adams–Moulton) step instead: Y (S, order + 1, k) with
    Y[i, 0] multiplying δ at the step's *end* t_{i+1} and Y[i, j] δ from step i + 1 − j.
    """
    _check(order, eta)
    lam = float(eta) ** 2
    k, n = process.k, list(process.noisy_blocks)
    if not n:
        raise ValueError(
            f"process '{process.name}' has no noisy blocks, so there is no score to integrate; "
            f"use a Hamiltonian-flow sampler."
        )
    steps = len(times) - 1
    b = process.beta_integral(times)  # decreasing, > 0
    log_b = b.log()
    dlog = log_b[1:] - log_b[:-1]  # d log τ / ds per step (negative)
    # Lagrange basis ℓ_j(log τ) on the previous `order` grid points (warm-up: fewer).
    shift = 1 if corrector else 0  # the corrector's newest node is the step's end
    width = order + shift
    nodes = torch.stack(
        [log_b[torch.clamp(torch.arange(steps) + shift - j, min=0)] for j in range(width)], dim=1
    )
    p_eff = torch.clamp(torch.arange(steps) + 1 + shift, max=width)
    p_eff[-1] = 1  # last step: x̂₀ is nearly constant there, and extrapolating over its long
    # log-stretch from the short previous step is unstable (cf. DPM-Solver++'s final step)
    if substeps is None:  # RK4 steps per unit of log τ, bucketed to powers of two per step
        # in log τ the A-part of M scales like τ‖A‖, so long early steps need more
        stiff = 1.0 + b[:-1] * float(torch.linalg.matrix_norm(process.A, ord=1))
        need = (RK4_PER_LOG_UNIT * dlog.abs() * stiff).ceil().clamp_min(8)
        counts = (2.0 ** need.log2().ceil()).long()
    else:
        counts = torch.full((steps,), int(substeps), dtype=torch.long)
    Psi = torch.empty(steps, k, k, dtype=torch.float64)
    Y = torch.zeros(steps, width, k, dtype=torch.float64)
    N = torch.empty(steps, k, k, dtype=torch.float64)
    for count in counts.unique().tolist():
        rows = (counts == count).nonzero()[:, 0]
        Psi[rows], Y[rows], N[rows] = _rk4(
            process, log_b, dlog, nodes, p_eff, rows, int(count), width, lam, sigma_data
        )
    R = torch.zeros_like(N)
    if lam > 0:
        evals, evecs = torch.linalg.eigh(0.5 * (N + N.transpose(-1, -2)))
        R = evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)
    # x̂₀ read-out at the grid times t_0 … t_{S−1}: x̂₀ = wᵀ(s_n + (Σ⁻¹z)_n)
    e_g, Sigma_g, _ = process.marginal(times[:-1])
    Sinv_g = torch.linalg.inv(Sigma_g)
    g = (Sinv_g @ e_g[..., None])[:, n, 0]  # (S, m)
    w = g / (g * g).sum(-1, keepdim=True)
    a = (w[:, None, :] @ Sinv_g[:, n, :])[:, 0]  # (S, k)
    ref_g = torch.linalg.inv(Sigma_g + sigma_data**2 * e_g[:, :, None] * e_g[:, None, :])
    a = a - sigma_data**2 * (e_g[:, None, :] @ ref_g)[:, 0]  # δ = x̂₀ − E_ref[x₀ | z]
    return {"Psi": Psi, "Y": Y, "R": R, "a": a, "c": w}


@torch.inference_mode()
def exponential_integrator(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str = "optimal",
    denoise: bool = True,
    order: int = 2,
    eta: float = 0.0,
    sigma_data: float | None = None,
    corrector: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Exponential integrator with an Adams–Bashforth polynomial of `order` 1–3 (order 1 is a
    DDIM-like exponential Euler) in δ = x̂₀ − E_ref[x₀ | z], one NFE per step.

    The linear part is the exact flow for reference data N(0, σ_data² I) (σ_data = 0: a point
    mass), so with the exact score of such data the sampler is exact for any step count.
    `eta` = 0 integrates the PF-ODE; η > 0 follows the reverse-time family with λ = η²
    (η = 1: the reverse SDE) with exact Gaussian noise per step; `denoise` drops the last
    step's noise. The default grid "optimal" equidistributes the local error for the
    reference data (`optimal_grid`).

    ``corrector=True`` adds an implicit (Adams–Moulton-type) correction without extra network
    calls, as UniPC's corrector: the call at t_{i+1}, made for the next step anyway, yields
    δ_{i+1}, and z_{i+1} is recomputed from z_i with the polynomial through δ_{i+1}, δ_i, …
    (order + 1 nodes, interpolation instead of extrapolation) before the next step starts. The
    network output is the one at the predicted z_{i+1}. The last step is not corrected (no
    call at t_min). Samplers `eic` (order 2) and `ei1c` (order 1) (docs/samplers.md).

    A position-only velocity model (HGF, flow matching) is handed to `hgf_ei`, the same
    integrator for the position ODE (docs/hgf.md §6); its flow is deterministic, so η must
    be 0, the grid "optimal" (which needs noisy blocks) becomes "quadratic" and σ_data defaults
    to 0 (DPM-Solver++) there; score models default to σ_data = 1."""
    _check(order, eta)
    if not isinstance(corrector, bool):
        raise ValueError(f"corrector must be True or False, got {corrector!r}.")
    if is_velocity_model(model):
        if corrector:
            raise ValueError(
                "corrector=True is for score models; velocity models use hgf_ei without it."
            )
        if eta:
            raise ValueError(
                f"a velocity model defines a deterministic flow; eta must be 0, got {eta!r}."
            )
        return hgf_ei(
            model,
            process,
            shape,
            steps,
            grid="quadratic" if grid == "optimal" else grid,
            order=order,
            sigma_data=0.0 if sigma_data is None else sigma_data,
            generator=generator,
            callback=callback,
            return_trajectory=return_trajectory,
            device=device,
            dtype=dtype,
        )
    shape = check_shape(shape)
    counted = CountingModel(model)
    sigma_data = 1.0 if sigma_data is None else sigma_data
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, int | float):
        raise ValueError(f"sigma_data must be a number ≥ 0, got {sigma_data!r}.")
    if not (math.isfinite(sigma_data) and sigma_data >= 0):
        raise ValueError(f"sigma_data must be a finite number ≥ 0, got {sigma_data!r}.")
    if grid == "optimal":
        times = optimal_grid(process, steps, order=order, sigma_data=sigma_data or 1.0)
    else:
        times = time_grid(process, steps, grid)
    coef = _cached(
        ("coef", times.numpy().tobytes(), order, float(eta), float(sigma_data)),
        process,
        lambda: exponential_coefficients(process, times, order, eta, sigma_data=sigma_data),
    )
    cast = {"device": device, "dtype": dtype}
    Psi, Y, R = (coef[name].to(**cast) for name in ("Psi", "Y", "R"))
    Yc = None
    if corrector:
        Yc = _cached(
            ("corr", times.numpy().tobytes(), order, float(eta), float(sigma_data)),
            process,
            lambda: exponential_coefficients(
                process, times, order, eta, sigma_data=sigma_data, corrector=True
            )["Y"],
        ).to(**cast)
    a, c = coef["a"][:, None, :].to(**cast), coef["c"][:, None, :].to(**cast)
    if counted.parameterization == "eps":  # s_n = −U ε, so cᵀs_n = −(Uᵀc)ᵀ ε
        U = score_factors(process, times[:-1])
        c = -(coef["c"][:, None, :] @ U).to(**cast)
    stochastic = float(eta) > 0
    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    trajectory = [z.clone()] if return_trajectory else []
    history: list[torch.Tensor] = []  # x̂₀ at steps i, i−1, … (newest first)
    t_all = times.tolist()
    base = z  # Ψ z + noise of the step that produced z (for the corrector)
    for i in range(steps):
        tt = torch.full((z.shape[0],), t_all[i], dtype=z.dtype, device=z.device)
        out = counted(z, tt)
        history.insert(0, apply_blocks(a[i], z) + apply_blocks(c[i], out))
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
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": t_all[i + 1], "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)


__all__ = ["exponential_coefficients", "exponential_integrator"]


def optimal_grid(
    process: LinearProcess,
    steps: int,
    *,
    order: int = 2,
    sigma_data: float = 1.0,
    n_fine: int = 512,
) -> torch.Tensor:
    """Times T = t_0 > … > t_steps = t_min that equidistribute the local error of the
    order-p exponential integrator on Gaussian data N(0, σ_data² I) (docs/samplers.md).

    Along an exact probability-flow trajectory of such data, x̂₀(λ) = κ(λ)ᵀ z_T is linear in
    the start z_T (λ = log B(0, t)); an Adams step of order p on [λ, λ + h] makes a local
    error ∝ h^(p+1) ‖κ^(p)(λ)‖_P (P the prior covariance). Steps with
    h(λ) ∝ ‖κ^(p)(λ)‖_P^(−1/(p+1)) make these errors equal; a floor of 5 % of the mean density
    keeps the grid from starving smooth stretches.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}.")
    _check(order, 0.0)
    if not (isinstance(sigma_data, int | float) and sigma_data > 0 and math.isfinite(sigma_data)):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}.")
    key = ("grid", steps, order, float(sigma_data), n_fine)
    return _cached(
        key, process, lambda: _optimal_grid(process, steps, order, float(sigma_data), n_fine)
    ).clone()


def _optimal_grid(
    process: LinearProcess, steps: int, order: int, sigma_data: float, n_fine: int
) -> torch.Tensor:
    fine = time_grid(process, n_fine, "logb")
    coef = exponential_coefficients(process, fine, 1, 0.0, substeps=4, sigma_data=sigma_data)
    e, Sigma, _ = process.marginal(fine)
    ref = torch.linalg.inv(Sigma + sigma_data**2 * e[:, :, None] * e[:, None, :])
    readout = sigma_data**2 * (e[:, None, :] @ ref)[:, 0]  # x̂₀ = readoutᵀ z for this data
    flow = torch.eye(process.k, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(process.prior_cov)
    root = evecs * evals.clamp_min(0).sqrt()
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
    times[0], times[-1] = process.T, process.t_min
    return times
