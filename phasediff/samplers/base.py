"""Shared pieces of every sampler: the result type, NFE counting, the per-step reporting
(trajectory, progress bar, callback) and the Euler/Heun loop (docs/design.md §4); time
grids live in `phasediff.samplers.grids`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from phasediff.objectives import parameterization_of
from phasediff.processes import LinearProcess
from phasediff.processes.reverse import ReverseDynamics
from phasediff.samplers.grids import GRIDS as GRIDS  # re-exported for the samplers
from phasediff.samplers.grids import time_grid as time_grid


@dataclass
class Samples:
    """x: data block (B, *data_shape); z: full final state; nfe: counted network calls;
    trajectory: states at every grid time when requested (list of (B, k, *data)); sanity:
    the counts of non-finite and far-out samples (`phasediff.data.sanity.SampleCheck`) when
    a trained run was sampled (`TrainedRun.sample`), None from a bare sampler; projected: the
    coordinates of x̂₀ moved onto `x0_range` by a denoising final step (`samplers.final`);
    guarded: the samples whose x̂₀ the x̂₀ guard moved at some network call
    (`samplers.guard`), None when the sampler ran without it; guarded_far: those it moved by
    more than the box's width (or whose x̂₀ was not finite)."""

    x: torch.Tensor
    z: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)
    sanity: Any = None
    projected: int = 0
    unprojected: torch.Tensor | None = None
    guarded: int | None = None
    guarded_far: int | None = None


class CountingModel:
    """Wraps a model and counts its evaluations (NFE is measured, never inferred)."""

    def __init__(self, model) -> None:
        self.model = model
        self.parameterization = parameterization_of(model)
        self.nfe = 0

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.model(z, t)


def score_factors(process: LinearProcess, times: torch.Tensor) -> torch.Tensor:
    """U(t) = (L_t⁻ᵀ)_nn at each grid time: ε-models give the score ŝ = −U ε̂
    (`phasediff.processes.ReverseDynamics.score_factor`)."""
    return ReverseDynamics(process).score_factor(times)


class StepUnderflow(ValueError):
    """An adaptive solve whose step size fell to zero (a ValueError, so the CLI reports it in
    one sentence): the state or the field is not finite, or too stiff, where it stopped."""


def dopri5_solve(field, start, times, *, rtol: float, atol: float, what: str, advice: str):
    """torchdiffeq's dopri5 from times[0] to times[-1], with its "underflow in dt" assertion
    turned into `StepUnderflow` naming the time it stopped at, `what` was solved and `advice`."""
    from torchdiffeq import odeint

    last = [float(times[0])]

    def tracked(t, state):
        last[0] = float(t)
        return field(t, state)

    try:
        return odeint(tracked, start, times, rtol=rtol, atol=atol, method="dopri5")
    except AssertionError as exc:
        if "underflow in dt" not in str(exc):
            raise
        raise StepUnderflow(
            f"dopri5's step size fell to zero at t = {last[0]:.4g} while solving {what}: the "
            f"state or the field is not finite or too stiff there (a diverging sample); "
            f"{advice}."
        ) from None


def check_shape(shape) -> tuple[int, ...]:
    """(batch, *data_shape) of positive ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple (batch, *data_shape), got {shape!r}.") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be (batch, *data_shape) with positive sizes and at least one data axis, "
            f"got {shape}."
        )
    return shape


class Recorder:
    """What every sampler loop reports (docs/samplers.md, "Progress and callbacks"): the
    trajectory, a tqdm bar over the steps (shown only with ``progress=True``) and the callback.

    ``step(i, z)`` after step i. The callback gets one dict with the same keys from every
    sampler: ``i`` (the step), ``t`` (the time of z), ``z`` (the live state: an in-place edit is
    what the sampler continues from), ``denoised`` (x̂₀ = E[x₀ | z], shaped like the data, from
    the network evaluation made last, or None before the first) and ``nfe`` (network
    evaluations so far). `source` is the sampler's counting model wrapper: it has ``nfe`` and
    ``last_x0()``."""

    def __init__(
        self,
        z: torch.Tensor,
        times: torch.Tensor,
        source,
        *,
        name: str,
        callback: Callable[[dict], None] | None = None,
        trajectory: bool = False,
        progress: bool = False,
        total: int | None = None,
        unit: str = "step",
    ) -> None:
        self.t = times.tolist()
        self.callback, self.source = callback, source
        self.trajectory = [z.clone()] if trajectory else None
        total = len(self.t) - 1 if total is None else total
        self.bar = tqdm(total=total, desc=name, unit=unit, disable=not progress, dynamic_ncols=True)

    def report(self, i: int, t: float, z: torch.Tensor, **extra) -> None:
        """Advance the bar by one step and call the callback (no trajectory entry)."""
        if self.bar.n < self.bar.total:  # adaptive solvers: `follow` has moved it already
            self.bar.update(1)
        if self.callback is not None:
            info = {"i": i, "t": t, "z": z, "denoised": self.source.last_x0()}
            self.callback({**info, "nfe": self.source.nfe, **extra})

    def step(self, i: int, z: torch.Tensor) -> None:
        """After step i of a grid sampler: z is the state at times[i + 1]."""
        if self.trajectory is not None:
            self.trajectory.append(z.clone())
        self.report(i, self.t[i + 1], z)

    def follow(self, field: Callable) -> Callable:
        """field(t, z) of an adaptive solver, moving the bar (total: 100 %) to the share of
        [times[-1], times[0]] integrated so far; the callback is not called per evaluation."""
        if self.bar.disable:
            return field
        start, end, total = self.t[0], self.t[-1], self.bar.total

        def tracked(t, z):
            done = min(total, round(total * (start - float(t)) / (start - end)))
            if done > self.bar.n:
                self.bar.set_postfix(nfe=self.source.nfe, refresh=False)
                self.bar.update(done - self.bar.n)
            return field(t, z)

        return tracked

    def samples(self, z: torch.Tensor, times: torch.Tensor, trajectory=None) -> Samples:
        """Close the bar; the result with x = z[:, 0] and the recorded (or given) trajectory."""
        self.bar.close()
        if trajectory is None:
            trajectory = self.trajectory or []
        return Samples(x=z[:, 0], z=z, nfe=self.source.nfe, times=times, trajectory=trajectory)


def euler_heun_loop(
    velocity: Callable[[int, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    times: torch.Tensor,
    method: str,
    record: Recorder,
) -> torch.Tensor:
    """Fixed-step Euler or Heun (EDM's Algorithm 1: Euler on the last step) for
    dz/dt = velocity(i, z), evaluated at grid time times[i]; integrates from times[0]
    to times[-1], reporting every step to `record`. Shared by the PF-ODE and the HGF samplers.
    Returns z_end."""
    t_all = times.tolist()
    steps = len(t_all) - 1
    for i in range(steps):
        h = t_all[i + 1] - t_all[i]  # negative: integrating backwards
        d = velocity(i, z)
        if method == "heun" and i < steps - 1:
            d2 = velocity(i + 1, z + h * d)
            z = z + 0.5 * h * (d + d2)
        else:
            z = z + h * d
        record.step(i, z)
    return z
