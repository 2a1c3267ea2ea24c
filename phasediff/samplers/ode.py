"""Probability-flow ODE samplers: dz/dt = β(t)[A z − h(t) D ∇log p_t(z)] (SPEC §2, §4),
integrated from T down to t_min (h is the noise damping, 1 for most processes)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import (
    CountingModel,
    Samples,
    check_shape,
    euler_heun_loop,
    noisy_score,
    score_factors,
    score_to_drift_matrix,
    time_grid,
)


class ProbabilityFlowField:
    """The PF-ODE right-hand side β[Az − hD∇log p] for a counted model (public: the
    likelihood evaluation integrates the same field); U(t) is computed per call unless given."""

    def __init__(self, model: CountingModel, process: LinearProcess, device, dtype) -> None:
        self.model, self.p = model, process
        self.A = process.A.to(device=device, dtype=dtype)
        self.Dn = score_to_drift_matrix(process).to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype

    def __call__(self, t: float, z: torch.Tensor, U: torch.Tensor | None = None) -> torch.Tensor:
        p = self.p
        t = min(max(float(t), p.t_min), p.T)  # adaptive solvers may probe past the ends
        t64 = torch.tensor(t, dtype=torch.float64)
        scale = float(p.beta(t64))
        out = scale * apply_blocks(self.A, z)
        if p.noisy_blocks:
            if U is None:
                U = score_factors(p, t64.reshape(1))[0]
            s = noisy_score(self.model, z, float(t), U.to(device=self.device, dtype=self.dtype))
            damp = 1.0
            if p.noise_damping > 0:
                damp = float(-torch.expm1(-p.noise_damping * p.beta_integral(t64)))
            out = out - scale * damp * apply_blocks(self.Dn, s)
        return out


def _run(
    method,
    model,
    process,
    shape,
    steps,
    grid,
    generator,
    callback,
    return_trajectory,
    device,
    dtype,
) -> Samples:
    shape = check_shape(shape)
    counted = CountingModel(model)
    times = time_grid(process, steps, grid)
    U = score_factors(process, times) if process.noisy_blocks else None
    f = ProbabilityFlowField(counted, process, device, dtype)
    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    t_all = times.tolist()

    def field(i: int, z: torch.Tensor) -> torch.Tensor:
        return f(t_all[i], z, None if U is None else U[i])

    z, trajectory = euler_heun_loop(field, z, times, method, callback, return_trajectory)
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)


@torch.inference_mode()
def ode_euler(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str = "uniform",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Euler on the probability-flow ODE, one NFE per step (first order). `denoise` is
    accepted for a uniform signature; a deterministic sampler has no noise to drop."""
    return _run(
        "euler",
        model,
        process,
        shape,
        steps,
        grid,
        generator,
        callback,
        return_trajectory,
        device,
        dtype,
    )


@torch.inference_mode()
def ode_heun(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str = "uniform",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Heun (trapezoidal predictor–corrector) on the PF-ODE, 2 NFE per step except the last
    (EDM's Algorithm 1); second order."""
    return _run(
        "heun",
        model,
        process,
        shape,
        steps,
        grid,
        generator,
        callback,
        return_trajectory,
        device,
        dtype,
    )


@torch.inference_mode()
def ode_dopri5(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int = 1,
    *,
    grid: str = "uniform",
    denoise: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Adaptive Dormand–Prince 5(4) on the PF-ODE through torchdiffeq (rtol/atol); `steps`
    only sets the output grid of the trajectory, the solver picks its own steps."""
    from torchdiffeq import odeint

    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}.")
    shape = check_shape(shape)
    counted = CountingModel(model)
    times = time_grid(process, steps, grid)
    f = ProbabilityFlowField(counted, process, device, dtype)
    z0 = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    # output times only matter for the trajectory: the solver's steps do not depend on them,
    # but every output time costs a dense-output interpolation (≈ 0.5 ms per call measured)
    out_times = times if return_trajectory else times[[0, -1]]
    out = odeint(
        lambda t, z: f(float(t), z),
        z0,
        out_times.to(dtype=dtype, device=z0.device),
        rtol=rtol,
        atol=atol,
        method="dopri5",
    )
    z = out[-1]
    trajectory = list(out) if return_trajectory else []
    if callback is not None:
        callback({"i": steps - 1, "t": float(times[-1]), "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)
