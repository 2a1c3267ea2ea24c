"""The final step of a score sampler: integrate to t_min, or jump to the denoiser (Tweedie).

A grid sampler with `steps` steps ends with the step t_{N−1} → t_min. Near t_min the exact
score of data with thin structure is steep: for a k ≥ 2 process the auxiliary blocks of the
score carry (x − x̂₀)/Σ_xx-sized terms, so a network error δ in x̂₀ enters the last step with a
gain of order 1/t (docs/samplers.md, "The final step"). `final="denoise"` replaces that step
by the posterior mean of the data block, read from one network evaluation at t_{N−1}:

    x = x̂₀(z_{t_{N−1}}) = E[x₀ | z_{t_{N−1}}]      (Tweedie, `ModelDynamics.last_x0`),

the k×k generalisation of the last step of EDM's and DDIM's samplers (an Euler step to σ = 0
lands exactly on x̂₀). The NFE are those of N − 1 steps of the sampler plus one.

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
from phasediff.processes import LinearProcess
from phasediff.samplers.base import Samples, check_shape
from phasediff.samplers.dynamics import ModelDynamics, resolve_times, start_state
from phasediff.samplers.stability import StabilityWarning, warn_if_unstable

VELOCITY_FINAL = (
    "final='denoise' is for score models; a velocity model (HGF, flow matching) ends with its "
    "own sampler's last step: pass final='integrate' or leave final out."
)

FINAL_STEPS = ("integrate", "denoise")
"""`final` values: the sampler's own last step to t_min, or the denoiser jump from t_{N−1}."""


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


def final_step_options(final: str | None, model, x0_range, *, adaptive: bool = False) -> dict:
    """The ``final``/``x0_range`` keywords a trained run is sampled with: `final` None means
    "denoise" (with `x0_range`, the training data's recorded box) for fixed-step samplers of
    score models, and the sampler's own last step for velocity models and adaptive solvers
    (dopri5 integrates to t_min accurately; its `steps` only set the output grid, so a jump
    from t_{N−1} would skip a long stretch); "integrate" drops the box."""
    if final is None:
        final = "integrate" if adaptive or is_velocity_model(model) else "denoise"
    check_final(final)
    if final == "denoise" and is_velocity_model(model):
        raise ValueError(VELOCITY_FINAL)
    return {"final": final, "x0_range": x0_range if final == "denoise" else None}


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
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> Samples:
    """`sampler` over the first N − 1 steps of its N-step grid, then x = x̂₀(z_{t_{N−1}})
    (module docstring). `grid` None is the sampler's own default. The returned z is the state
    at t_{N−1} with its data block replaced by x̂₀; `times` is the full N-step grid; the
    callback gets the common keys once more for the final jump (i = N − 1, t = t_min)."""
    shape = check_shape(shape)
    if grid is None:
        grid = inspect.signature(sampler).parameters["grid"].default
    times = resolve_times(process, steps, grid)
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
    "VELOCITY_FINAL",
    "check_final",
    "check_x0_range",
    "denoised_final",
    "final_step_options",
    "project_x0",
]
