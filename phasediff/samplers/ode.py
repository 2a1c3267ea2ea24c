"""Probability-flow ODE samplers: dz/dt = β(t)[A z − h(t) D ∇log p_t(z)] (docs/design.md §2,
§4), integrated from T down to t_min (h is the noise damping, 1 for most processes). The field
is `ModelDynamics`'s (phasediff.samplers.dynamics), the one the likelihood integrates too."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess
from phasediff.samplers.base import Recorder, Samples, dopri5_solve, euler_heun_loop
from phasediff.samplers.dynamics import prepare
from phasediff.samplers.stability import warn_if_unstable


def _fixed_step(method: str, model, process, shape, steps, options) -> Samples:
    o = options
    dyn, times, z = prepare(
        model, process, shape, steps, o["grid"], o["z"], o["generator"], o["device"], o["dtype"]
    )
    warn_if_unstable(process, times, method, o["grid"])
    f = dyn.probability_flow(times)  # f(i, z) at times[i], matrices built once per grid
    record = Recorder(
        z,
        times,
        dyn,
        name=method,
        callback=o["callback"],
        trajectory=o["trajectory"],
        progress=o["progress"],
    )
    return record.samples(euler_heun_loop(f, z, times, method, record), times)


@torch.inference_mode()
def ode_euler(
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
    """Euler on the probability-flow ODE, one NFE per step (first order). `denoise` is
    accepted for a uniform signature; a deterministic sampler has no noise to drop. `grid`: a
    grid name or a decreasing float64 tensor of steps + 1 times; `z`: an optional start state."""
    options = dict(grid=grid, z=z, generator=generator, callback=callback, device=device)
    options.update(trajectory=return_trajectory, progress=progress, dtype=dtype)
    return _fixed_step("euler", model, process, shape, steps, options)


@torch.inference_mode()
def ode_heun(
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
    """Heun (trapezoidal predictor–corrector) on the PF-ODE, 2 NFE per step except the last
    (EDM's Algorithm 1); second order. `grid` and `z` as for `ode_euler`."""
    options = dict(grid=grid, z=z, generator=generator, callback=callback, device=device)
    options.update(trajectory=return_trajectory, progress=progress, dtype=dtype)
    return _fixed_step("heun", model, process, shape, steps, options)


@torch.inference_mode()
def ode_dopri5(
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
    """Adaptive Dormand–Prince 5(4) on the PF-ODE through torchdiffeq (rtol/atol); `steps`
    only sets the output grid of the trajectory, the solver picks its own steps. `grid` and
    `z` as for `ode_euler`."""
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}.")
    dyn, times, z0 = prepare(model, process, shape, steps, grid, z, generator, device, dtype)
    # output times only matter for the trajectory: the solver's steps do not depend on them,
    # but every output time costs a dense-output interpolation (≈ 0.5 ms per call measured)
    out_times = (times if return_trajectory else times[[0, -1]]).to(dtype=dtype, device=z0.device)
    record = Recorder(
        z0, times, dyn, name="dopri5", callback=callback, progress=progress, total=100, unit="%"
    )  # the bar: share of [t_min, T] integrated
    f = record.follow(lambda t, z: dyn.flow(float(t), z))  # the PF-ODE field at any t
    out = dopri5_solve(
        f, z0, out_times, rtol=rtol, atol=atol, what="the probability-flow ODE",
        advice="sample with x0_guard=True and x0_range (the default for trained runs), or "
        "with a fixed-step sampler such as ei1c",
    )  # fmt: skip
    record.report(steps - 1, float(times[-1]), out[-1])  # one callback, at the end
    return record.samples(out[-1], times, list(out) if return_trajectory else [])
