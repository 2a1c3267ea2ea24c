"""HGF samplers: integrate the learned position ODE dx/dt = V_θ(x, t) from T down to t_min
(Holderrieth et al. 2024; docs/design.md §3; docs/hgf.md).

A velocity model (parameterization "velocity", trained by the "velocity" objective) sees the
position block only, so the state here is x alone, shaped (B, 1, *data_shape); it starts from
the x-marginal of the process prior, N(0, P₀₀ I) with P = `process.prior_cov` (exact for the
Oscillation HGF, whose x_T = v₀/α forgets x₀). Euler and Heun run on the same time grids as
the probability-flow ODE samplers (`time_grid`); dopri5 goes through torchdiffeq. NFE is
counted by a wrapper. Which sampler fits is decided by the model's declared parameterization,
never by the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from phasediff.objectives.hamiltonian import (
    VELOCITY,
    check_velocity_process,
    denoiser_coefficients,
    is_velocity_model,
    predicts_x0,
)
from phasediff.processes import LinearProcess
from phasediff.samplers.base import (
    Recorder,
    Samples,
    check_shape,
    dopri5_solve,
    euler_heun_loop,
)
from phasediff.samplers.dynamics import resolve_times, start_state


class _CountingVelocity:
    """Counts the evaluations of a velocity model, broadcasts scalar times and keeps the last
    evaluation for `last_x0` (the samplers' progress and callback reporting)."""

    parameterization = VELOCITY

    def __init__(self, model, process: LinearProcess) -> None:
        if not is_velocity_model(model):
            raise ValueError(
                "the hgf samplers integrate a position-only velocity model (parameterization "
                f"'velocity'), got parameterization {getattr(model, 'parameterization', None)!r}; "
                "sample score models with em, euler, heun, dopri5, lie_trotter or strang."
            )
        self.model, self.process = model, process
        self.nfe = 0
        self.last: tuple[torch.Tensor, float, torch.Tensor | None, torch.Tensor | None] | None
        self.last = None  # (x, t, velocity or None, x̂₀ or None) of the last evaluation

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.nfe += 1
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        out = self.model(x, tt)
        self.last = (x, float(t), out, None)
        return out

    def last_x0(self) -> torch.Tensor | None:
        """x̂₀ (B, *data_shape) from the last evaluation: the network's own, or (V − c₁x)/c₂
        (`denoiser_coefficients`); None before the first."""
        if self.last is None:
            return None
        x, t, v, x0 = self.last
        if x0 is None:
            c1, c2 = denoiser_coefficients(self.process, torch.tensor([t], dtype=torch.float64))
            x0 = (v - float(c1) * x) / float(c2)
        return x0[:, 0]

    def denoised(self, x: torch.Tensor, t: float, c1: float, c2: float) -> torch.Tensor:
        """x̂₀(x, t): the network's own x̂₀ for an x0-predicting model, else (V − c₁x)/c₂."""
        if predicts_x0(self.model):
            self.nfe += 1
            tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
            x0 = self.model.denoise(x, tt)
        else:
            x0 = (self(x, t) - c1 * x) / c2
        self.last = (x, float(t), None, x0)
        return x0


def prior_positions(
    process: LinearProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x_T ~ N(0, P₀₀ I) shaped (B, 1, *data_shape): the x-marginal of the process prior."""
    std = float(process.prior_cov[0, 0]) ** 0.5
    noise = torch.randn((shape[0], 1, *shape[1:]), generator=generator, device=device, dtype=dtype)
    return std * noise


def _setup(model, process, shape, steps, grid, z, generator, device, dtype):
    """(counted model, times, x_start): x_start is a prior draw or the given positions z."""
    check_velocity_process(process)
    shape = check_shape(shape)
    device = z.device if device is None and isinstance(z, torch.Tensor) else device
    counted = _CountingVelocity(model, process)
    times = resolve_times(process, steps, grid)
    x = start_state(
        (shape[0], 1, *shape[1:]),
        z,
        lambda: prior_positions(process, shape, generator, device, dtype),
        device,
        dtype,
    )
    return counted, times, x


def _fixed_step(
    method: str,
    model,
    process: LinearProcess,
    shape,
    steps: int,
    grid: str | torch.Tensor,
    z: torch.Tensor | None,
    generator,
    callback,
    return_trajectory: bool,
    progress: bool,
    device,
    dtype,
) -> Samples:
    counted, times, x = _setup(model, process, shape, steps, grid, z, generator, device, dtype)
    t_all = times.tolist()
    record = Recorder(
        x,
        times,
        counted,
        name=f"hgf_{method}",
        callback=callback,
        trajectory=return_trajectory,
        progress=progress,
    )
    x = euler_heun_loop(lambda i, x: counted(x, t_all[i]), x, times, method, record)
    return record.samples(x, times)


@torch.inference_mode()
def hgf_euler(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "uniform",
    denoise: bool = True,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Euler on dx/dt = V_θ(x, t) from T to t_min, one NFE per step. `Samples.z` holds the
    position only ((B, 1, *data)); `denoise` is accepted for the common signature."""
    return _fixed_step(
        "euler",
        model,
        process,
        shape,
        steps,
        grid,
        z,
        generator,
        callback,
        return_trajectory,
        progress,
        device,
        dtype,
    )


@torch.inference_mode()
def hgf_heun(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "uniform",
    denoise: bool = True,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Heun (trapezoidal) on dx/dt = V_θ(x, t), 2 NFE per step except the last (Euler), as
    the PF-ODE `heun`; second order."""
    return _fixed_step(
        "heun",
        model,
        process,
        shape,
        steps,
        grid,
        z,
        generator,
        callback,
        return_trajectory,
        progress,
        device,
        dtype,
    )


@torch.inference_mode()
def hgf_dopri5(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int = 1,
    *,
    grid: str | torch.Tensor = "uniform",
    denoise: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Adaptive Dormand–Prince 5(4) on dx/dt = V_θ(x, t) through torchdiffeq; `steps` only
    sets the output grid of the trajectory."""
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}.")
    counted, times, x = _setup(model, process, shape, steps, grid, z, generator, device, dtype)
    lo, hi = process.t_min, process.T
    record = Recorder(
        x,
        times,
        counted,
        name="hgf_dopri5",
        callback=callback,
        progress=progress,
        total=100,
        unit="%",
    )  # as ode_dopri5

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return counted(x, min(max(float(t), lo), hi))  # the solver may probe past the ends

    out_times = times if return_trajectory else times[[0, -1]]  # as ode_dopri5
    out_times = out_times.to(dtype=dtype, device=x.device)
    out = dopri5_solve(
        record.follow(rhs), x, out_times, rtol=rtol, atol=atol, what="the position ODE",
        advice="try a fixed-step sampler such as hgf_ei",
    )  # fmt: skip
    record.report(steps - 1, float(times[-1]), out[-1])  # one callback, at the end
    return record.samples(out[-1], times, list(out) if return_trajectory else [])


# ------------------------------------------------------------- exponential integrator
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _weighted_lagrange_integrals(
    lo: float, hi: float, nodes: list[float], sigma_data: float, panels: int = 16
) -> list[float]:
    """∫_lo^hi w(λ) ℓ_j(λ) dλ for the Lagrange basis ℓ_j on `nodes`, w = e^λ/√(1 + σ_d²e^{2λ}),
    by composite 8-point Gauss–Legendre (`panels` equal panels). w ≤ e^λ, so the stretch below
    hi − 40 adds less than e^(−40) ≈ 4e-18 of the total and is dropped (λ_T may be −700 where
    e₀(T) = 0); panels of width ≤ 2.5 then make the rule accurate to ~1e-12 relative."""
    lo = max(lo, hi - 40.0)
    edges = np.linspace(lo, hi, panels + 1)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    lam = (mid[:, None] + half[:, None] * _GL_NODES[None]).ravel()
    quad = (half[:, None] * _GL_WEIGHTS[None]).ravel()
    w = np.exp(lam) / np.sqrt(1.0 + sigma_data**2 * np.exp(2.0 * lam))
    out = []
    for j, nj in enumerate(nodes):
        ell = np.ones_like(lam)
        for m, nm in enumerate(nodes):
            if m != j:
                ell *= (lam - nm) / (nj - nm)
        out.append(float((quad * w * ell).sum()))
    return out


def hgf_ei_coefficients(
    process: LinearProcess, times: torch.Tensor, order: int = 2, sigma_data: float = 1.0
) -> dict[str, torch.Tensor]:
    """Per-step scalars of `hgf_ei` on `times` (float64; docs/hgf.md §6).

    With e₀(t) = E_t[0, 0], σ² = (Σ_t)₀₀, ρ = e₀/σ, λ = log ρ, g² = e₀²σ_d² + σ² (the position
    variance for reference data N(0, σ_d² I)) and κ = e₀σ_d²/g² (its posterior-mean slope):
    x_{i+1} = (g_{i+1}/g_i) x_i + Σ_j Y[i, j] δ_{i−j} with δ = x̂₀ − κ x, and
    Y[i, j] = g_{i+1} ∫_{λ_i}^{λ_{i+1}} (e₀/g) ℓ_j dλ. Also returns c₁, c₂ (x̂₀ from a velocity
    output) and κ at the grid times.
    """
    E, Sigma = process.kernel(times)
    e0, var = E[:, 0, 0], Sigma[:, 0, 0]
    scale = float(e0.abs().max())
    if bool((e0 < -1e-9 * scale).any()) or bool((var <= 0).any()):
        raise ValueError(
            f"hgf_ei needs e₀(t) = E_t[0, 0] ≥ 0 and a positive position variance on the whole "
            f"grid; process '{process.name}' has e₀ from {float(e0.min()):.3g} to "
            f"{float(e0.max()):.3g} (use hgf_euler, hgf_heun or hgf_dopri5)."
        )
    e0 = e0.clamp_min(1e-300)
    lam = torch.log(e0) - 0.5 * torch.log(var)
    if not bool((lam[1:] > lam[:-1]).all()):
        raise ValueError(
            f"hgf_ei needs the signal-to-noise ratio e₀/σ of process '{process.name}' to grow "
            "from T to t_min along the grid; it does not (use hgf_euler, hgf_heun or hgf_dopri5)."
        )
    g = (e0**2 * sigma_data**2 + var).sqrt()
    steps = len(times) - 1
    Y = torch.zeros(steps, order, dtype=torch.float64)
    lam_l = lam.tolist()
    for i in range(steps):
        p = 1 if i == steps - 1 else min(order, i + 1)  # last step: first order
        nodes = [lam_l[i - j] for j in range(p)]
        ints = _weighted_lagrange_integrals(lam_l[i], lam_l[i + 1], nodes, sigma_data)
        Y[i, :p] = float(g[i + 1]) * torch.tensor(ints, dtype=torch.float64)
    c1, c2 = denoiser_coefficients(process, times)
    return {
        "ratio": g[1:] / g[:-1],
        "Y": Y,
        "kappa": e0 * sigma_data**2 / g**2,
        "c1": c1,
        "c2": c2,
        "lam": lam,
    }


@torch.inference_mode()
def hgf_ei(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "quadratic",
    denoise: bool = True,
    order: int = 2,
    sigma_data: float = 0.0,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Exponential integrator for dx/dt = V_θ(x, t) (DPM-Solver++ multistep for Hamiltonian
    flows and flow matching; docs/hgf.md §6), one NFE per step.

    The position marginal is x_t = e₀x₀ + σ n; the field is u = c₁x + c₂x̂₀. The linear part for
    reference data N(0, σ_data² I) is solved exactly (x ∝ g) and δ = x̂₀ − κx is replaced by
    its Lagrange polynomial of `order` 1–3 in λ = log(e₀/σ) through the last values; the last
    step is first order. σ_data = 0 (default) is DPM-Solver++(order M). x̂₀ is the network's
    own for an x0-predicting model, else read from V. Exact for Gaussian data N(0, σ_data² I)
    and for point-mass data when σ_data = 0, at any step count. With σ_data > 0 the weight
    e₀/g tends to 1/σ_data at the data end, so a long last step in λ (uniform grids) multiplies
    the error of δ; the quadratic grid (default) keeps it short (docs/hgf.md §6).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}.")
    if (
        isinstance(sigma_data, bool)
        or not isinstance(sigma_data, int | float)
        or not (math.isfinite(sigma_data) and sigma_data >= 0)
    ):
        raise ValueError(f"sigma_data must be a finite number ≥ 0, got {sigma_data!r}.")
    counted, times, x = _setup(model, process, shape, steps, grid, z, generator, device, dtype)
    coef = hgf_ei_coefficients(process, times, order, float(sigma_data))
    ratio, kappa, c1, c2 = (coef[n].tolist() for n in ("ratio", "kappa", "c1", "c2"))
    Y = coef["Y"].tolist()
    t_all = times.tolist()
    record = Recorder(
        x,
        times,
        counted,
        name="hgf_ei",
        callback=callback,
        trajectory=return_trajectory,
        progress=progress,
    )
    history: list[torch.Tensor] = []  # δ at steps i, i−1, … (newest first)
    for i in range(steps):
        x0 = counted.denoised(x, t_all[i], c1[i], c2[i])
        history.insert(0, x0 - kappa[i] * x if kappa[i] else x0)
        del history[order:]
        x_next = ratio[i] * x
        for j, delta in enumerate(history):
            if Y[i][j]:
                x_next = x_next + Y[i][j] * delta
        x = x_next
        record.step(i, x)
    return record.samples(x, times)
