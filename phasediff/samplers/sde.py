"""Reverse-SDE samplers (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import Recorder, Samples
from phasediff.samplers.dynamics import prepare
from phasediff.samplers.stability import warn_if_unstable


@torch.inference_mode()
def euler_maruyama(
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
    """Euler–Maruyama on the reverse SDE dz = β[Az − 2hD∇log p]dt + √(2βh)G dW̄ (forward-time
    form, integrated from T to t_min), one NFE per step. `denoise` drops the noise of the last
    step. `shape` is (batch, *data_shape); `grid` a grid name or a decreasing float64 tensor of
    steps + 1 times; `z` an optional starting state (batch, k, *data_shape) instead of a prior
    draw; `progress` shows a tqdm bar, `callback` gets the keys of docs/samplers.md after
    every step."""
    dyn, times, z = prepare(model, process, shape, steps, grid, z, generator, device, dtype)
    warn_if_unstable(process, times, "em", grid)
    # z ← Mz z + Mo·out + Gh ξ: every step's k×k (k×m) matrices built once per grid
    Mz, Mo, Gh = dyn.euler_maruyama(times)
    t = times.tolist()
    record = Recorder(
        z, times, dyn, name="em", callback=callback, trajectory=return_trajectory, progress=progress
    )
    for i in range(steps):
        z_next = apply_blocks(Mz[i], z)
        if dyn.noisy:
            z_next = z_next + apply_blocks(Mo[i], dyn(z, t[i]))
        if not (denoise and i == steps - 1):
            xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z_next = z_next + apply_blocks(Gh[i], xi)
        z = z_next
        record.step(i, z)
    return record.samples(z, times)
