"""Splitting samplers for any linear process (SPEC §4; HOLD's Lie–Trotter, CLD's SSCS).

On the integrated clock b (db = β dt, running backwards from T) the reverse SDE is

    dz = [A_r z + 2D(s + P⁻¹z)] db + √2 G dW,      A_r = −A − 2D P⁻¹,

with P the prior covariance (S for complete-recipe processes, where A_r = (Q − D)S⁻¹, the
recipe with Q ↦ −Q). The first part with noise 2D is again an exactly solvable linear SDE
(`LinearFlow(A_r, D)`); the second is a "score kick" that only moves the noisy blocks and
vanishes when the data is Gaussian with covariance P. Derivation: docs/samplers.md.
All k×k step matrices are computed once per grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.processes.kernels import LinearFlow
from phasediff.samplers.base import (
    CountingModel,
    Samples,
    check_shape,
    score_factors,
    time_grid,
)


def _reverse_flow(process: LinearProcess) -> tuple[LinearFlow, torch.Tensor]:
    if process.noise_damping > 0:
        raise ValueError(
            f"splitting samplers need a constant diffusion; process '{process.name}' has noise "
            f"damping (sub-VP), so use the 'em', 'euler' or 'heun' samplers."
        )
    Pinv = torch.linalg.pinv(process.prior_cov)
    A_r = -process.A - 2.0 * process.D @ Pinv
    return LinearFlow(A_r, process.D), Pinv


def _factor(N: torch.Tensor) -> torch.Tensor:
    """A square root of each psd N (eigen-based: N may be singular in noise-free blocks)."""
    evals, evecs = torch.linalg.eigh(N)
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)


def _split(
    order: int,
    model,
    process: LinearProcess,
    shape,
    steps: int,
    grid: str,
    denoise: bool,
    generator,
    callback,
    return_trajectory: bool,
    device,
    dtype,
) -> Samples:
    shape = check_shape(shape)
    counted = CountingModel(model)
    times = time_grid(process, steps, grid)
    flow, Pinv = _reverse_flow(process)
    B = process.beta_integral(times)  # B(0, t_i), decreasing
    b = B[:-1] - B[1:]  # integrated length of each step
    n = list(process.noisy_blocks)
    if order == 1:  # Lie–Trotter: kick at t_i, then the exact flow over b
        E, N = flow(b)
        kick_times = times[:-1]
    else:  # Strang: half flow, kick at the midpoint of the integrated clock, half flow
        E, N = flow(b / 2)
        kick_times = process.schedule.inverse_integral(B[:-1] - b / 2)
        kick_times = kick_times.clamp(process.t_min, process.T)
    R = _factor(N)
    # kick z ← z + b·K(s + P⁻¹_n z) (K = 2D[:, n]) folded with the flow that follows it:
    # z ← E(I + bK P⁻¹_n) z + E bK s + R ξ — one k×k and one k×m product per NFE.
    eye = torch.eye(process.k, dtype=torch.float64)
    bK = b[:, None, None] * (2.0 * process.D[:, n])
    Mz = E @ (eye + bK @ Pinv[n]) if n else E
    Mo = E @ bK
    if n and counted.parameterization == "eps":
        Mo = -Mo @ score_factors(process, kick_times)  # score = −U ε
    cast = {"device": device, "dtype": dtype}
    E, R, Mz, Mo = (m.to(**cast) for m in (E, R, Mz, Mo))

    def noise(z: torch.Tensor, i: int) -> torch.Tensor:
        xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return apply_blocks(R[i], xi)

    z = process.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    tt = [torch.full((shape[0],), t, device=z.device, dtype=dtype) for t in kick_times.tolist()]
    trajectory = [z.clone()] if return_trajectory else []
    for i in range(steps):
        last = denoise and i == steps - 1
        if order == 2:  # first half flow
            z = apply_blocks(E[i], z) + noise(z, i)
        z_next = apply_blocks(Mz[i], z)
        if n:
            z_next = z_next + apply_blocks(Mo[i], counted(z, tt[i]))
        if not last:
            z_next = z_next + noise(z, i)
        z = z_next
        if return_trajectory:
            trajectory.append(z.clone())
        if callback is not None:
            callback({"i": i, "t": float(times[i + 1]), "z": z})
    return Samples(x=z[:, 0], z=z, nfe=counted.nfe, times=times, trajectory=trajectory)


@torch.inference_mode()
def lie_trotter(
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
    """HOLD's Lie–Trotter splitting: score kick z += b·2D(ŝ + P⁻¹z), then the exact linear
    flow of A_r with noise 2D over the step; one NFE per step, first order. `denoise` drops
    the noise of the last flow."""
    return _split(
        1,
        model,
        process,
        shape,
        steps,
        grid,
        denoise,
        generator,
        callback,
        return_trajectory,
        device,
        dtype,
    )


@torch.inference_mode()
def strang(
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
    """Strang splitting (CLD's SSCS for any process and order k): half linear flow, score
    kick at the midpoint of the integrated clock, half linear flow; one NFE per step."""
    return _split(
        2,
        model,
        process,
        shape,
        steps,
        grid,
        denoise,
        generator,
        callback,
        return_trajectory,
        device,
        dtype,
    )
