"""HGF samplers: integrate the learned position ODE dx/dt = V_θ(x, t) from T down to t_min
(Holderrieth et al. 2024; SPEC §3; docs/hgf.md).

A velocity model (parameterization "velocity", trained by the "velocity" objective) sees the
position block only, so the state here is x alone, shaped (B, 1, *data_shape); it starts from
the x-marginal of the process prior, N(0, P₀₀ I) with P = `process.prior_cov` (exact for the
Oscillation HGF, whose x_T = v₀/α forgets x₀). Euler and Heun run on the same time grids as
the probability-flow ODE samplers (`time_grid`); dopri5 goes through torchdiffeq. NFE is
counted by a wrapper. Which sampler fits is decided by the model's declared parameterization,
never by the process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.objectives.hamiltonian import VELOCITY, check_velocity_process, is_velocity_model
from phasediff.processes import LinearProcess
from phasediff.samplers.base import Samples, check_shape, time_grid


class _CountingVelocity:
    """Counts the evaluations of a velocity model and broadcasts scalar times."""

    parameterization = VELOCITY

    def __init__(self, model) -> None:
        if not is_velocity_model(model):
            raise ValueError(
                "the hgf samplers integrate a position-only velocity model (parameterization "
                f"'velocity'), got parameterization {getattr(model, 'parameterization', None)!r}; "
                "sample score models with em, euler, heun, dopri5, lie_trotter or strang."
            )
        self.model = model
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.nfe += 1
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        return self.model(x, tt)


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


def _setup(model, process, shape, steps, grid, generator, device, dtype):
    check_velocity_process(process)
    shape = check_shape(shape)
    counted = _CountingVelocity(model)
    times = time_grid(process, steps, grid)
    x = prior_positions(process, shape, generator, device, dtype)
    return counted, times, x


def _fixed_step(
    method: str,
    model,
    process: LinearProcess,
    shape,
    steps: int,
    grid: str,
    generator,
    callback,
    return_trajectory: bool,
    device,
    dtype,
) -> Samples:
    counted, times, x = _setup(model, process, shape, steps, grid, generator, device, dtype)
    trajectory = [x.clone()] if return_trajectory else []
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        h = t_next - t  # negative: backwards in time
        d = counted(x, t)
        if method == "heun" and i < steps - 1:  # Euler on the last step, as EDM
            d2 = counted(x + h * d, t_next)
            x = x + 0.5 * h * (d + d2)
        else:
            x = x + h * d
        if return_trajectory:
            trajectory.append(x.clone())
        if callback is not None:
            callback({"i": i, "t": t_next, "z": x})
    return Samples(x=x[:, 0], z=x, nfe=counted.nfe, times=times, trajectory=trajectory)


@torch.inference_mode()
def hgf_euler(
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
    """Euler on dx/dt = V_θ(x, t) from T to t_min, one NFE per step. `Samples.z` holds the
    position only ((B, 1, *data)); `denoise` is accepted for the common signature."""
    return _fixed_step(
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
def hgf_heun(
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
    """Heun (trapezoidal) on dx/dt = V_θ(x, t), 2 NFE per step except the last (Euler), as
    the PF-ODE `heun`; second order."""
    return _fixed_step(
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
def hgf_dopri5(
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
    """Adaptive Dormand–Prince 5(4) on dx/dt = V_θ(x, t) through torchdiffeq; `steps` only
    sets the output grid of the trajectory."""
    from torchdiffeq import odeint

    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}.")
    counted, times, x = _setup(model, process, shape, steps, grid, generator, device, dtype)
    lo, hi = process.t_min, process.T

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return counted(x, min(max(float(t), lo), hi))  # the solver may probe past the ends

    out = odeint(
        rhs, x, times.to(dtype=dtype, device=x.device), rtol=rtol, atol=atol, method="dopri5"
    )
    x = out[-1]
    if callback is not None:
        callback({"i": steps - 1, "t": float(times[-1]), "z": x})
    trajectory = list(out) if return_trajectory else []
    return Samples(x=x[:, 0], z=x, nfe=counted.nfe, times=times, trajectory=trajectory)
