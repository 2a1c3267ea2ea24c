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
    U = score_factors(process, times[:-1])
    n = list(process.noisy_blocks)
    A = process.A.to(device=device, dtype=dtype)
    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    trajectory = [z.clone()] if return_trajectory else []
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        h = t - t_next
        G = process.diffusion(torch.tensor(t, dtype=torch.float64))  # √(2β h_damp) G
        GG = (G @ G.T).to(device=device, dtype=dtype)
        beta = float(process.beta(t))
        drift = beta * apply_blocks(A, z)
        if n:
            s = noisy_score(counted, z, t, U[i].to(device=device, dtype=dtype))
            drift = drift - apply_blocks(GG[:, n], s)
        z = z - h * drift
        if not (denoise and i == steps - 1):
            noise = torch.randn(z.shape, generator=generator, device=device, dtype=dtype)
            z = z + h**0.5 * apply_blocks(G.to(device=device, dtype=dtype), noise)
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": t_next, "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)
