"""Splitting samplers for any linear process (docs/design.md §4; HOLD's Lie–Trotter, CLD's SSCS).

On the integrated clock b (db = β dt, running backwards from T) the reverse SDE is

    dz = [A_r z + 2D(s + P⁻¹z)] db + √2 G dW,      A_r = −A − 2D P⁻¹,

with P the prior covariance (S for complete-recipe processes, where A_r = (Q − D)S⁻¹, the
recipe with Q ↦ −Q). The first part with noise 2D is again an exactly solvable linear SDE
(`LinearFlow(A_r, D)`); the second is a "score kick" that only moves the noisy blocks and
vanishes when the data is Gaussian with covariance P. Derivation: docs/samplers.md.
All k×k step matrices are computed once per grid, by
`phasediff.processes.ReverseDynamics.splitting`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import Recorder, Samples
from phasediff.samplers.dynamics import prepare


def _split(midpoint: bool, model, process, shape, steps, denoise, options) -> Samples:
    """Lie–Trotter (kick, flow) or, with ``midpoint``, Strang (half flow, kick, half flow)."""
    o, generator = options, options["generator"]
    dyn, times, z = prepare(
        model, process, shape, steps, o["grid"], o["z"], generator, o["device"], o["dtype"]
    )
    # kick folded with the flow after it: z ← Mz z + Mo·out + R ξ, k×k matrices once per grid
    E, R, Mz, Mo, kick_times = dyn.splitting(times, midpoint)
    t_kick = kick_times.tolist()

    def noise(z: torch.Tensor, i: int) -> torch.Tensor:
        xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return apply_blocks(R[i], xi)

    name, callback, trajectory = (
        "strang" if midpoint else "lie_trotter",
        o["callback"],
        o["trajectory"],
    )
    record = Recorder(
        z, times, dyn, name=name, callback=callback, trajectory=trajectory, progress=o["progress"]
    )
    for i in range(steps):
        if midpoint:  # first half flow
            z = apply_blocks(E[i], z) + noise(z, i)
        z_next = apply_blocks(Mz[i], z)
        if dyn.noisy:
            z_next = z_next + apply_blocks(Mo[i], dyn(z, t_kick[i]))
        if not (denoise and i == steps - 1):
            z_next = z_next + noise(z, i)
        z = z_next
        record.step(i, z)
    return record.samples(z, times)


@torch.inference_mode()
def lie_trotter(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "quadratic",
    denoise: bool = True,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """HOLD's Lie–Trotter splitting: score kick z += b·2D(ŝ + P⁻¹z), then the exact linear
    flow of A_r with noise 2D over the step; one NFE per step, first order. `denoise` drops
    the noise of the last flow. `grid`: a grid name or a decreasing float64 tensor of
    steps + 1 times; the default "quadratic" takes small steps near t_min, where the score of
    thin data is steep and a uniform grid's last kick blows samples up (docs/samplers.md,
    "Default grids"); `z`: an optional starting state (batch, k, *data_shape); `progress` and
    `callback` as for every sampler (docs/samplers.md, "Progress and callbacks")."""
    options = dict(grid=grid, z=z, generator=generator, callback=callback, device=device)
    options.update(trajectory=return_trajectory, progress=progress, dtype=dtype)
    return _split(False, model, process, shape, steps, denoise, options)


@torch.inference_mode()
def strang(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "quadratic",
    denoise: bool = True,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Strang splitting (CLD's SSCS for any process and order k): half linear flow, score
    kick at the midpoint of the integrated clock, half linear flow; one NFE per step. `grid`
    and `z` as for `lie_trotter`."""
    options = dict(grid=grid, z=z, generator=generator, callback=callback, device=device)
    options.update(trajectory=return_trajectory, progress=progress, dtype=dtype)
    return _split(True, model, process, shape, steps, denoise, options)
