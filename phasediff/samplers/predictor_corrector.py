"""Predictor–corrector sampling (Song et al. 2021, docs/design.md §4): a reverse-SDE
Euler–Maruyama predictor followed by Langevin-MCMC corrector steps at the new time.

The corrector targets p_t itself, z ← z + δ ŝ(z, t) + √(2δ) ξ, with one δ per batch from a
signal-to-noise ratio r as in score_sde: δ = 2 (r ‖ξ‖ / ‖ŝ‖)², norms averaged over the batch.
It needs the score of *every* block, so it applies to processes whose blocks are all noisy
(VP, sub-VP, VE, PSLD); for processes with noise-free blocks (CLD, HOLD, …) use `em`,
`lie_trotter`, `strang` or `ei`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import Recorder, Samples
from phasediff.samplers.dynamics import prepare


@torch.inference_mode()
def predictor_corrector(
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor = "uniform",
    denoise: bool = True,
    snr: float = 0.16,
    n_corrector: int = 1,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Euler–Maruyama predictor + `n_corrector` Langevin corrector steps with signal-to-noise
    ratio `snr` per grid step ((1 + n_corrector) NFE per step). `denoise` drops the noise of
    the last predictor step and skips the last correction, as score_sde does. `grid` and `z`
    (and `progress`, `callback`) as for `euler_maruyama`."""
    if len(process.noisy_blocks) != process.k:
        raise ValueError(
            f"the predictor–corrector sampler needs the score of every block, but process "
            f"'{process.name}' has noise-free blocks; use 'em', 'lie_trotter', 'strang' or 'ei'."
        )
    if not (isinstance(snr, int | float) and not isinstance(snr, bool) and snr > 0):
        raise ValueError(f"snr must be a number > 0, got {snr!r}.")
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an integer ≥ 0, got {n_corrector!r}.")
    dyn, times, z = prepare(model, process, shape, steps, grid, z, generator, device, dtype)
    Mz, Mo, Gh = dyn.euler_maruyama(times)  # the predictor: one reverse-SDE step
    (S,) = dyn.cast(dyn.score_map(times))  # ŝ = S·out at every grid time
    t = times.tolist()
    record = Recorder(
        z, times, dyn, name="pc", callback=callback, trajectory=return_trajectory, progress=progress
    )
    for i in range(steps):
        z = apply_blocks(Mz[i], z) + apply_blocks(Mo[i], dyn(z, t[i]))
        if not (denoise and i == steps - 1):
            xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + apply_blocks(Gh[i], xi)
            for _ in range(n_corrector):
                s = dyn.score(z, t[i + 1], S[i + 1])
                xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                # one step size per batch from batch-mean norms (as score_sde): a per-sample
                # δ(z) would break the corrector's invariance of p_t
                ratio = xi.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()
                delta = 2.0 * (snr * float(ratio)) ** 2
                z = z + delta * s + (2.0 * delta) ** 0.5 * xi
        record.step(i, z)
    return record.samples(z, times)
