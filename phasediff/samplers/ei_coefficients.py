"""Per-grid step matrices of the exponential integrator (derivation: the docstring of
`phasediff.samplers.exponential` and docs/samplers.md). Shared by the sampler and by the
`optimal` time grid (`phasediff.samplers.grids`), so neither imports the other's module."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess
from phasediff.processes.linalg import psd_factor
from phasediff.processes.reverse import ReverseDynamics

RK4_PER_LOG_UNIT = 16  # RK4 steps per unit of log τ (tests/test_fast_sampling.py: converged)


_CACHE: dict[tuple, tuple[LinearProcess, object]] = {}
_CACHE_SIZE = 32


def process_key(process: LinearProcess) -> tuple:
    """A cache key for a process: its `fingerprint` (equal processes built twice, e.g. from
    one config by two CLI calls, share entries), else its identity. An identity entry keeps
    its process alive, so a reused id() cannot alias another process."""
    fingerprint = process.fingerprint()
    return ("id", id(process)) if fingerprint is None else ("value", fingerprint)


def cached_per_grid(key: tuple, process: LinearProcess, compute: Callable[[], object]):
    """Per-grid results are pure functions of (process, grid, options): keep the last few, so
    repeated sampling calls pay for the k×k precomputation once (keyed by `process_key`)."""
    ident = process_key(process)
    key = (ident, *key)
    hit = _CACHE.get(key)
    if hit is not None and (ident[0] == "value" or hit[0] is process):
        return hit[1]
    value = compute()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (process, value)
    return value


def check_order_eta(order: int, eta: float) -> None:
    """Refuse an Adams order outside 1–3 or an η outside [0, 1]."""
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
    eta: float,
    sigma_data: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ψ, y, N of the steps `rows` by classical RK4 with `substeps` equal steps in s."""
    k, S = process.k, len(rows)
    s = torch.linspace(0.0, 1.0, 2 * substeps + 1, dtype=torch.float64)
    log_tau = log_b[rows, None] + s * dlog[rows, None]  # (S, P): stage points of every step
    tau = log_tau.exp()
    t_of = process.schedule.inverse_integral(tau.reshape(-1)).clamp(process.t_min, process.T)
    e, Sigma, _ = process.marginal(t_of)
    # the reverse-time family on the clock: dz = [Az − K∇log p] db + noise of rate N
    K, noise = ReverseDynamics(process).clock(tau.reshape(-1), eta)
    f = (K @ torch.linalg.solve(Sigma, e[..., None]))[..., 0].reshape(S, -1, k)
    ref = Sigma + sigma_data**2 * e[..., :, None] * e[..., None, :]
    M = (process.A + torch.linalg.solve(ref, K, left=False)).reshape(S, -1, k, k)
    noise = noise.reshape(S, -1, k, k)
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
    check_order_eta(order, eta)
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
            process, log_b, dlog, nodes, p_eff, rows, int(count), width, eta, sigma_data
        )
    R = torch.zeros_like(N)
    if lam > 0:
        R = psd_factor(N, symmetrize=True)
    # x̂₀ read-out at the grid times t_0 … t_{S−1}: x̂₀ = wᵀ(s_n + (Σ⁻¹z)_n)
    e_g, Sigma_g, _ = process.marginal(times[:-1])
    Sinv_g = torch.linalg.inv(Sigma_g)
    g = (Sinv_g @ e_g[..., None])[:, n, 0]  # (S, m)
    w = g / (g * g).sum(-1, keepdim=True)
    a = (w[:, None, :] @ Sinv_g[:, n, :])[:, 0]  # (S, k)
    ref_g = torch.linalg.inv(Sigma_g + sigma_data**2 * e_g[:, :, None] * e_g[:, None, :])
    a = a - sigma_data**2 * (e_g[:, None, :] @ ref_g)[:, 0]  # δ = x̂₀ − E_ref[x₀ | z]
    return {"Psi": Psi, "Y": Y, "R": R, "a": a, "c": w}


__all__ = [
    "RK4_PER_LOG_UNIT",
    "cached_per_grid",
    "process_key",
    "check_order_eta",
    "exponential_coefficients",
]
