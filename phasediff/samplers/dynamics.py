"""A score or ε model bound to its process's reverse dynamics (docs/design.md §4).

`phasediff.processes.ReverseDynamics` gives the reverse-time family as k×k matrices of the
process alone; `ModelDynamics` adds the model: it counts network evaluations, turns the
model's output on the noisy blocks into the score (ŝ = S(t)·out with S = −U for ε-models and
the identity for score models: the one ε/score adapter), and casts the per-grid matrices once
to the sampling device and dtype. Samplers and the likelihood evaluation take the reverse
drift, the diffusion and the probability-flow field from here; none rebuilds them. Velocity
models (HGF, flow matching) integrate their own position ODE (`phasediff.samplers.hamiltonian`).

Also here: what every sampler does before and after its loop — the time grid (a grid name or
an explicit tensor) and the starting state (a prior draw or a given state); the per-step
reporting (trajectory, progress bar, callback) is `phasediff.samplers.base.Recorder`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.processes.reverse import ReverseDynamics
from phasediff.samplers.base import CountingModel, Recorder, check_shape
from phasediff.samplers.grids import GRIDS, time_grid


class ModelDynamics:
    """The reverse dynamics of `process` for a score or ε `model` (module docstring).

    Per-grid methods take float64 times and return matrices already in the sampling
    ``device``/``dtype``, with the ε → score map folded in wherever the score is multiplied."""

    def __init__(self, model, process: LinearProcess, *, device=None, dtype=torch.float32):
        self.model = CountingModel(model)
        self.parameterization = self.model.parameterization
        self.process = process
        self.reverse = ReverseDynamics(process)
        self.noisy = self.reverse.noisy
        self.device, self.dtype = device, dtype
        self.last: tuple[torch.Tensor, float, torch.Tensor] | None = None  # (z, t, output)

    @property
    def nfe(self) -> int:
        """Network evaluations so far (counted by a wrapper, never inferred)."""
        return self.model.nfe

    def cast(self, *matrices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The float64 matrices in the sampling device and dtype."""
        return tuple(m.to(device=self.device, dtype=self.dtype) for m in matrices)

    def score_map(self, t: torch.Tensor) -> torch.Tensor:
        """S(t) (…, m, m) float64 with ŝ = S·out (the ε/score adapter; `output_to_score`)."""
        return self.reverse.output_to_score(t, self.parameterization)

    def __call__(self, z: torch.Tensor, t: float) -> torch.Tensor:
        """The model's raw output at the scalar time t for the whole batch (one NFE)."""
        tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
        out = self.model(z, tt)
        self.last = (z, float(t), out)  # references only: `last_x0` reads them on demand
        return out

    def last_x0(self) -> torch.Tensor | None:
        """x̂₀ = E[x₀ | z_t] (B, *data_shape) from the last network evaluation, by Tweedie:
        x̂₀ = wᵀ(ŝ_n + (Σ⁻¹z)_n), w = (Σ⁻¹e)_n / ‖(Σ⁻¹e)_n‖² (exact for one noisy block, the
        least-squares read-out for several; docs/samplers.md). None before the first call."""
        if self.last is None:
            return None
        z, t, out = self.last
        a, c = self.reverse.denoiser_readout(t, self.parameterization)  # x̂₀ = aᵀz + cᵀ·out
        x0 = apply_blocks(a[None], z) + apply_blocks(c[None], out)
        return x0[:, 0]

    def score(self, z: torch.Tensor, t: float, S: torch.Tensor) -> torch.Tensor:
        """ŝ on the noisy blocks at time t, S = `score_map`(t) cast (one NFE)."""
        out = self(z, t)
        return out if self.parameterization == "score" else apply_blocks(S, out)

    def euler_maruyama(self, times: torch.Tensor, eta: float = 1.0):
        """(Mz, Mo, Gh) per step: z ← Mz z + Mo·out(z, t_i) + Gh ξ (the reverse SDE for
        η = 1; `ReverseDynamics.euler_maruyama` with the output map folded in)."""
        Mz, Ms, Gh = self.reverse.euler_maruyama(times, eta)
        if self.noisy:
            Ms = Ms @ self.score_map(times[:-1])
        return self.cast(Mz, Ms, Gh)

    def splitting(self, times: torch.Tensor, midpoint: bool = False):
        """(E, R, Mz, Mo, kick_times): `ReverseDynamics.splitting` with the output map folded
        into Mo (z ← Mz z + Mo·out(z, kick_times[i]) + R ξ); kick_times stay float64."""
        E, R, Mz, Ms, kick_times = self.reverse.splitting(times, midpoint)
        if self.noisy:
            Ms = Ms @ self.score_map(kick_times)
        return (*self.cast(E, R, Mz, Ms), kick_times)

    def probability_flow(self, times: torch.Tensor) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """The PF-ODE field f(i, z) = F z − K ŝ at the grid time times[i], with its matrices
        built once for the grid (fixed-step solvers)."""
        F, K = self.reverse.drift(times)
        t_all = times.tolist()
        F, KS = self.cast(F, K @ self.score_map(times) if self.noisy else K)

        def field(i: int, z: torch.Tensor) -> torch.Tensor:
            out = apply_blocks(F[i], z)
            return out - apply_blocks(KS[i], self(z, t_all[i])) if self.noisy else out

        return field

    def flow(self, t: float, z: torch.Tensor) -> torch.Tensor:
        """The PF-ODE field dz/dt = β[Az − hD ŝ] at any time t (adaptive solvers, likelihoods;
        t is clamped to [t_min, T], where adaptive solvers may probe past the ends)."""
        p = self.process
        t = min(max(float(t), p.t_min), p.T)
        return self.probability_flow(torch.tensor([t], dtype=torch.float64))(0, z)


def resolve_times(process: LinearProcess, steps: int, grid: str | torch.Tensor) -> torch.Tensor:
    """The float64 grid T ≥ t_0 > … > t_steps ≥ t_min: `time_grid` of a grid name, or an
    explicit decreasing tensor of steps + 1 times (checked, copied)."""
    if isinstance(grid, str):
        return time_grid(process, steps, grid)
    ok = isinstance(grid, torch.Tensor) and grid.dtype == torch.float64 and grid.ndim == 1
    if ok:
        t = grid.detach().cpu()
        ok = (
            isinstance(steps, int)
            and t.numel() == steps + 1
            and bool(torch.isfinite(t).all())
            and bool((t[1:] < t[:-1]).all())
            and float(t[-1]) >= process.t_min * (1 - 1e-6)  # as process.check_time
            and float(t[0]) <= process.T * (1 + 1e-6)
        )
    if not ok:
        raise ValueError(
            f"grid must be a grid name ({', '.join(GRIDS)}) or a strictly decreasing 1-D float64 "
            f"tensor of steps + 1 = {steps + 1 if isinstance(steps, int) else '?'} times in "
            f"[t_min, T] = [{process.t_min:g}, {process.T:g}], got {_describe(grid)}."
        )
    return t.clone()


def _describe(grid) -> str:
    if isinstance(grid, torch.Tensor):
        return f"a {grid.dtype} tensor of shape {tuple(grid.shape)}"
    return repr(grid)


def start_state(
    shape: tuple[int, ...],
    z: torch.Tensor | None,
    draw: Callable[[], torch.Tensor],
    device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """`draw()` (the prior) when z is None, else a copy of the given start state z, which
    must be a finite floating-point tensor of the given `shape`."""
    if z is None:
        return draw()
    if not (isinstance(z, torch.Tensor) and z.is_floating_point() and tuple(z.shape) == shape):
        raise ValueError(
            f"z (the starting state) must be a floating-point tensor of shape {shape}, got "
            f"{_describe(z) if isinstance(z, torch.Tensor) else type(z).__name__}."
        )
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z (the starting state) contains NaN or Inf; it must be finite.")
    return z.detach().to(device=device, dtype=dtype).clone()


def prepare(model, process, shape, steps, grid, z, generator, device, dtype):
    """(dynamics, times, z_start) of a score sampler: the model bound to the process, the grid
    and the starting state (a prior draw, or the given (batch, k, *data_shape) state z)."""
    shape = check_shape(shape)
    device = z.device if device is None and isinstance(z, torch.Tensor) else device
    dyn = ModelDynamics(model, process, device=device, dtype=dtype)
    times = resolve_times(process, steps, grid)
    full = (shape[0], process.k, *shape[1:])
    z = start_state(
        full, z, lambda: process.prior_sample(shape, generator, device, dtype), device, dtype
    )
    return dyn, times, z


__all__ = ["ModelDynamics", "Recorder", "prepare", "resolve_times", "start_state"]
