"""Reverse-SDE samplers (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import (
    CountingModel,
    Samples,
    check_shape,
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
    # Every step is z ← M_z z + M_o out + √h G ξ with out the network output: all k×k (and
    # k×m) matrices of every step are formed once per grid, in float64, then cast.
    starts = times[:-1]
    h = (times[:-1] - times[1:])[:, None, None]
    G = process.diffusion(starts)  # √(2β h_damp) G per step
    eye = torch.eye(process.k, dtype=torch.float64)
    Mz = (eye - h * process.beta(starts)[:, None, None] * process.A).to(**cast)
    Mo = h * (G @ G.transpose(-1, -2))[..., n]  # multiplies the score (D∇log p = ½GGᵀ∇…)
    if n and counted.parameterization == "eps":
        Mo = -Mo @ score_factors(process, starts)  # score = −U ε
    Mo = Mo.to(**cast)
    Gh = (h.sqrt() * G).to(**cast)
    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    tt = [torch.full((shape[0],), t, device=z.device, dtype=dtype) for t in times.tolist()]
    trajectory = [z.clone()] if return_trajectory else []
    for i in range(steps):
        z_next = apply_blocks(Mz[i], z)
        if n:
            z_next = z_next + apply_blocks(Mo[i], counted(z, tt[i]))
        if not (denoise and i == steps - 1):
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=dtype)
            z_next = z_next + apply_blocks(Gh[i], noise)
        z = z_next
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": float(times[i + 1]), "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)
