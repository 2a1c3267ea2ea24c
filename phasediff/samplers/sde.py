"""Reverse-SDE samplers (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import (
    CountingModel,
    Samples,
    check_shape,
    noisy_score,
    score_factors,
    time_grid,
)


@torch.inference_mode()
def euler_maruyama(
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
    """Euler–Maruyama on the reverse SDE dz = β[Az − 2D∇log p]dt + √(2β)G dW̄ (forward-time
    form, integrated from T to t_min), one NFE per step. `denoise` drops the noise of the last
    step. `shape` is (batch, *data_shape)."""
    shape = check_shape(shape)
    counted = CountingModel(model)
    times = time_grid(process, steps, grid)
    n = list(process.noisy_blocks)
    cast = {"device": device, "dtype": dtype}
    # Every k×k matrix of every step, once per grid (float64, then cast).
    starts = times[:-1]
    h = (times[:-1] - times[1:]).tolist()
    G = process.diffusion(starts)  # √(2β h_damp) G per step
    GGn = (G @ G.transpose(-1, -2))[..., n].to(**cast)
    BA = (process.beta(starts)[:, None, None] * process.A).to(**cast)
    U = score_factors(process, starts).to(**cast) if n else None
    G = G.to(**cast)
    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    trajectory = [z.clone()] if return_trajectory else []
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        drift = apply_blocks(BA[i], z)
        if n:
            drift = drift - apply_blocks(GGn[i], noisy_score(counted, z, t, U[i]))
        z = z - h[i] * drift
        if not (denoise and i == steps - 1):
            noise = torch.randn(z.shape, generator=generator, device=device, dtype=dtype)
            z = z + h[i] ** 0.5 * apply_blocks(G[i], noise)
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": t_next, "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)
