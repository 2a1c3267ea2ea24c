"""The final step of a score sampler: integrate to t_min, or jump to the denoiser (Tweedie).

A grid sampler with `steps` steps ends with the step t_{N−1} → t_min. Near t_min the exact
score of data with thin structure is steep: for a k ≥ 2 process the auxiliary blocks of the
score carry (x − x̂₀)/Σ_xx-sized terms, so a network error δ in x̂₀ enters the last step with a
gain of order 1/t (docs/samplers.md, "The final step"). `final="denoise"` replaces that step
by the posterior mean of the data block, read from one network evaluation at t_{N−1}:

    x = x̂₀(z_{t_{N−1}}) = E[x₀ | z_{t_{N−1}}]      (Tweedie, `ModelDynamics.last_x0`),

the k×k generalisation of the last step of EDM's and DDIM's samplers (an Euler step to σ = 0
lands exactly on x̂₀). The NFE are those of N − 1 steps of the sampler plus one.

The jump is never made from below a *noise floor*: the time t_f where the posterior std of
x₀ under the Gaussian reference N(0, σ_data² I) falls to `noise_floor`·σ_data,

    c_out(t_f) / σ_data = noise_floor,   c_out² = σ²/(1 + σ² eᵀΣ(t)⁻¹e)   (docs/objectives.md).

The default is 0.01 from 23 steps on (2.5× EDM's σ_min/σ_data = 0.002/0.5; 0.004 did worse),
5/N² below, and 0.05 up to 10 steps (`default_noise_floor`), all measured. Below t_f the
data block is already resolved to that fraction of its scale, and all a sampler does there
is integrate the stiff auxiliary blocks with a network trained on a sliver of its time
density: on long-trained thin-data models most blow-ups happened there (docs/samplers.md,
"The noise floor"). When a named grid's t_{N−1} lies below t_f, the N − 1 steps are laid out
on the same grid shape over [t_f, T] instead (`time_grid(..., t_end=t_f)`) and the jump is
made from t_f. For k ≥ 3 this floor is far above t_min (HOLD: t_f ≈ 0.024 at σ_data = 0.5,
24× its t_min), so the steps go where the data block still changes. `noise_floor=0` restores
the plain jump from t_{N−1}; an explicit grid tensor is used as given. σ_data is the model's
own (preconditioned models) or 1.

`x0_range = (lo, hi)` (per-coordinate bounds of the data, e.g. a run's data_range.json)
projects that x̂₀ onto the box. This is sound, not a clamp that hides error: E[x₀ | z] lies in
the convex hull of the data's support, so when the box holds the support the projection can
only move x̂₀ closer to the true posterior mean, coordinate by coordinate. The number of
projected coordinates is returned as `Samples.projected`, and the x̂₀ before the projection
as `Samples.unprojected`: the sample sanity check (`phasediff.data.sanity`) counts that one,
so a diverged sample is still reported as non-finite or far although its projection is not.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence

import torch

from phasediff.objectives.hamiltonian import is_velocity_model
from phasediff.objectives.preconditioning import reference_coefficients, unwrap
from phasediff.processes import LinearProcess
from phasediff.samplers.base import Samples, check_shape
from phasediff.samplers.dynamics import ModelDynamics, resolve_times, start_state
from phasediff.samplers.ei_coefficients import cached_per_grid
from phasediff.samplers.grids import time_grid
from phasediff.samplers.stability import StabilityWarning, warn_if_unstable

VELOCITY_FINAL = (
    "final='denoise' is for score models; a velocity model (HGF, flow matching) ends with its "
    "own sampler's last step: pass final='integrate' or leave final out."
)

FINAL_STEPS = ("integrate", "denoise")
"""`final` values: the sampler's own last step to t_min, or the denoiser jump from t_{N−1}."""


NOISE_FLOOR = 0.01
"""The default `noise_floor` from 23 steps on, measured on trained toy models (module
docstring, `default_noise_floor`)."""

FEW_STEPS_FLOOR = 5.0
"""c of the few-step floor c/N² of `default_noise_floor`."""

MAX_NOISE_FLOOR = 0.05
"""The cap of `default_noise_floor`: the best floor measured at 10 steps (0.1 and 0.2 were
worse on every k ≥ 2 toy model)."""


def default_noise_floor(steps: int) -> float:
    """min(0.05, max(NOISE_FLOOR, 5/N²)): 0.05 up to 10 steps, 0.0125 at 20, 0.01 from 23 on
    (capped at 0.05, the largest floor measured).

    With few steps the discretisation error of the N − 1 steps, not the blur of the jump,
    dominates: on five 5-minute toy models ei1c@10 was best at floor 0.05 (of 0–0.05; CLD
    7.35 → 4.42, HOLD 6.96 → 4.31, critical(4) 8.01 → 3.86), while at 20 and 50 steps 0.05
    was worse than 0.01–0.02 (docs/samplers.md, "The noise floor"). An error ∝ h² of a
    second-order step balanced against a blur ∝ floor gives the 1/N²."""
    return min(MAX_NOISE_FLOOR, max(NOISE_FLOOR, FEW_STEPS_FLOOR / max(int(steps), 1) ** 2))


def check_noise_floor(noise_floor) -> float:
    """`noise_floor` as a float in [0, 1), or one sentence naming what is valid."""
    ok = isinstance(noise_floor, int | float) and not isinstance(noise_floor, bool)
    if not (ok and 0.0 <= noise_floor < 1.0):
        raise ValueError(
            "noise_floor must be a number in [0, 1) (the reference posterior std of x₀, in "
            f"units of σ_data, below which the denoising jump is not made; 0 = off), got "
            f"{noise_floor!r}."
        )
    return float(noise_floor)


def noise_floor_time(process: LinearProcess, sigma_data: float, noise_floor: float) -> float:
    """t_f with c_out(t_f)/σ_data = noise_floor (module docstring), t_min when the reference
    posterior std is already above the floor there. c_out(t) is monotone in t (a Markov chain
    only loses information about x₀), so t_f is read off a log-spaced table by interpolation
    in log t (512 times: relative error in t_f below 1 %)."""
    noise_floor = check_noise_floor(noise_floor)
    if noise_floor == 0.0:
        return process.t_min
    return cached_per_grid(
        ("noise_floor", float(sigma_data), noise_floor),
        process,
        lambda: _floor_time(process, float(sigma_data), noise_floor),
    )


def _floor_time(process: LinearProcess, sigma_data: float, noise_floor: float) -> float:
    lo = max(process.t_min, 1e-9 * process.T)
    t = lo * (process.T / lo) ** torch.linspace(0.0, 1.0, 512, dtype=torch.float64)
    t[-1] = process.T
    c_out = reference_coefficients(process, t.clamp(process.t_min, process.T), sigma_data)
    ratio = torch.cummax(c_out["c_out"] / sigma_data, 0)[0]  # monotone up to rounding
    if noise_floor <= float(ratio[0]):
        return process.t_min
    if noise_floor >= float(ratio[-1]):
        return float(t[-2])  # a floor above the prior's own level: the last grid cell
    i = int(torch.searchsorted(ratio, torch.tensor(noise_floor, dtype=torch.float64)))
    r0, r1 = float(ratio[i - 1]), float(ratio[i])
    w = (noise_floor - r0) / (r1 - r0) if r1 > r0 else 1.0
    return float((t[i - 1].log() + w * (t[i].log() - t[i - 1].log())).exp())


def model_sigma_data(model) -> float:
    """σ_data of a preconditioned model (its Gaussian reference), 1 for any other model."""
    value = getattr(unwrap(model), "sigma_data", None)
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


def floored_times(
    process: LinearProcess, steps: int, grid, sigma_data: float, noise_floor: float
) -> torch.Tensor:
    """The N-step grid of a denoising run: `resolve_times`, except that when a named grid's
    t_{N−1} lies below the noise floor t_f, its first N points are the same grid shape over
    [t_f, T] (N − 1 steps), followed by t_min (module docstring)."""
    times = resolve_times(process, steps, grid)
    t_f = noise_floor_time(process, sigma_data, noise_floor)
    if isinstance(grid, str) and steps > 1 and t_f > float(times[-2]):
        inner = time_grid(process, steps - 1, grid, t_end=t_f)
        times = torch.cat([inner, times[-1:]])
    return times


def check_final(final: str) -> str:
    """`final` itself, or one sentence naming the valid values."""
    if final not in FINAL_STEPS:
        raise ValueError(f"final must be one of {', '.join(FINAL_STEPS)}, got {final!r}.")
    return final


def check_x0_range(x0_range, data_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) float64 tensors broadcastable to `data_shape` with lo ≤ hi, from two numbers
    or two sequences/tensors, or one sentence naming what is valid."""
    try:
        lo, hi = x0_range
        lo = torch.as_tensor(lo, dtype=torch.float64)
        hi = torch.as_tensor(hi, dtype=torch.float64)
        for bound in (lo, hi):  # must broadcast *to* one sample's shape, not beyond it
            if torch.broadcast_shapes(bound.shape, tuple(data_shape)) != tuple(data_shape):
                raise ValueError
        ok = bool(torch.isfinite(lo).all() and torch.isfinite(hi).all() and (lo <= hi).all())
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ValueError(
            "x0_range must be (lo, hi): two finite numbers, or two per-coordinate arrays that "
            f"broadcast to the data shape {tuple(data_shape)}, with lo ≤ hi; got {x0_range!r}."
        )
    return lo, hi


def project_x0(x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x̂₀ projected onto the box [lo, hi] and the number of coordinates that moved."""
    lo, hi = lo.to(device=x0.device, dtype=x0.dtype), hi.to(device=x0.device, dtype=x0.dtype)
    out = torch.maximum(torch.minimum(x0, hi), lo)
    return out, int(((out != x0) & torch.isfinite(x0)).sum())  # NaN stays NaN, not "moved"


def final_step_options(
    final: str | None,
    model,
    x0_range,
    *,
    adaptive: bool = False,
    noise_floor=None,
    x0_guard: bool | None = None,
) -> dict:
    """The ``final``/``x0_range``/``x0_guard`` (and, when given, ``noise_floor``) keywords a
    trained run is sampled with: `final` None means "denoise" (with `x0_range`, the training
    data's recorded box) for fixed-step samplers of score models, and the sampler's own last
    step for velocity models and adaptive solvers (dopri5 integrates to t_min accurately; its
    `steps` only set the output grid, so a jump from t_{N−1} would skip a long stretch).
    `x0_guard` None means on for score models when `x0_range` is given (the x̂₀ of every call
    projected onto it, `phasediff.samplers.guard`), whatever the final step. `noise_floor`
    None is left out (the sampler's `default_noise_floor`)."""
    if final is None:
        final = "integrate" if adaptive or is_velocity_model(model) else "denoise"
    check_final(final)
    if final == "denoise" and is_velocity_model(model):
        raise ValueError(VELOCITY_FINAL)
    if x0_guard is None:
        x0_guard = x0_range is not None and not is_velocity_model(model)
    keep_box = final == "denoise" or x0_guard
    options = {"final": final, "x0_range": x0_range if keep_box else None}
    if x0_guard:  # checked by the sampler (it needs x0_range; velocity models are refused)
        options["x0_guard"] = x0_guard
    if noise_floor is not None:  # checked by the sampler (refused there without the jump)
        options["noise_floor"] = noise_floor
    return options


def _inner(sampler, model, process, shape, steps, times, z, generator, callback, trajectory,
           device, dtype, options) -> Samples:  # fmt: skip
    """The sampler's own first N − 1 steps on the first N points of its N-step grid, with the
    noise of its last step kept (it is not the final one)."""
    return sampler(
        model,
        process,
        shape,
        steps - 1,
        grid=times[:-1].clone(),
        denoise=False,
        z=z,
        generator=generator,
        callback=callback,
        return_trajectory=trajectory,
        device=device,
        dtype=dtype,
        **options,
    )


def denoised_final(
    sampler: Callable[..., Samples],
    model,
    process: LinearProcess,
    shape: tuple[int, ...],
    steps: int,
    *,
    grid: str | torch.Tensor | None = None,
    x0_range: Sequence | None = None,
    noise_floor: float | None = None,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> Samples:
    """`sampler` over the first N − 1 steps of its N-step grid, then x = x̂₀(z_{t_{N−1}})
    (module docstring), the grid ending at the noise floor when its t_{N−1} lies below it.
    `grid` None is the sampler's own default. The returned z is the state at t_{N−1} with its
    data block replaced by x̂₀; `times` is the N-step grid (`floored_times`, t_min last); the
    callback gets the common keys once more for the final jump (i = N − 1, t = t_min)."""
    shape = check_shape(shape)
    if grid is None:
        grid = inspect.signature(sampler).parameters["grid"].default
    if noise_floor is None:
        noise_floor = default_noise_floor(steps)
    times = floored_times(process, steps, grid, model_sigma_data(model), noise_floor)
    box = None if x0_range is None else check_x0_range(x0_range, shape[1:])
    options.pop("denoise", None)  # the truncated run's last step is not the final one
    if steps > 1:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StabilityWarning)  # judged below on the full grid
            res = _inner(sampler, model, process, shape, steps, times, z, generator, callback,
                         return_trajectory, device, dtype, options)  # fmt: skip
        for w in caught:
            if issubclass(w.category, StabilityWarning):  # the user's N steps, not N − 1
                warn_if_unstable(process, times, w.message.method, grid)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        state, nfe, trajectory = res.z, res.nfe, list(res.trajectory)
    else:  # one step: the denoiser at T straight from the start state
        try:  # the sampler is not called: its options are still checked
            inspect.signature(sampler).bind_partial(model, process, shape, 1, **options)
        except TypeError as exc:
            raise ValueError(f"bad sampler option for a one-step run: {exc}.") from None
        full = (shape[0], process.k, *shape[1:])
        draw = lambda: process.prior_sample(shape, generator, device, dtype)  # noqa: E731
        state = start_state(full, z, draw, device, dtype)
        nfe, trajectory = 0, [state.clone()] if return_trajectory else []
    dyn = ModelDynamics(model, process, device=state.device, dtype=state.dtype)
    with torch.inference_mode():
        dyn(state, float(times[-2]))
        x0 = dyn.last_x0()
        moved, raw = 0, None
        if box is not None:
            raw = x0
            x0, moved = project_x0(x0, *box)
        final = state.clone()
        final[:, 0] = x0
        nfe += dyn.nfe
        if callback is not None:  # in inference mode, as every sampler's own callbacks: it
            # may edit z in place (inpainting pins the known pixels of the returned sample)
            info = {"i": steps - 1, "t": float(times[-1]), "z": final, "denoised": x0}
            callback({**info, "nfe": nfe})
        if return_trajectory:
            trajectory.append(final.clone())
    return Samples(
        x=final[:, 0],
        z=final,
        nfe=nfe,
        times=times,
        trajectory=trajectory,
        projected=moved,
        unprojected=raw,
    )


__all__ = [
    "FINAL_STEPS",
    "FEW_STEPS_FLOOR",
    "MAX_NOISE_FLOOR",
    "NOISE_FLOOR",
    "VELOCITY_FINAL",
    "check_final",
    "check_noise_floor",
    "floored_times",
    "model_sigma_data",
    "noise_floor_time",
    "check_x0_range",
    "default_noise_floor",
    "denoised_final",
    "final_step_options",
    "project_x0",
]
