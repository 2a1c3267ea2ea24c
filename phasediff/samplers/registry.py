"""The sampler registry: one `SamplerEntry` per sampler name, with what callers need to know
about it — the function, the model kinds it takes, NFE per step, its default time grid and
what it supports (docs/samplers.md, "The registry").

The CLI help and validation, the benchmark lists, the inpainting check and the steps ↔ NFE
conversion all read from here; adding a sampler is one `SamplerEntry` in `REGISTRY`.

Model kinds: "score" models return ε or the score on the noisy blocks (parameterization
"eps" or "score"); "velocity" models are position-only velocity fields (HGF, flow matching;
parameterization "velocity"). The `ei*` names hand velocity models to `hgf_ei`: that routing
lives here (`resolve`, and the functions in `SAMPLERS`), not inside the samplers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial, update_wrapper
from types import MappingProxyType

from phasediff.objectives.hamiltonian import is_velocity_model
from phasediff.samplers.base import Samples, check_shape
from phasediff.samplers.exponential import exponential_integrator
from phasediff.samplers.final import (
    VELOCITY_FINAL,
    check_final,
    check_x0_range,
    denoised_final,
)
from phasediff.samplers.grids import GRIDS
from phasediff.samplers.guard import X0Guard
from phasediff.samplers.hamiltonian import hgf_dopri5, hgf_ei, hgf_euler, hgf_heun
from phasediff.samplers.ode import ode_dopri5, ode_euler, ode_heun
from phasediff.samplers.predictor_corrector import predictor_corrector
from phasediff.samplers.sde import euler_maruyama
from phasediff.samplers.splitting import lie_trotter, strang

SCORE = "score"
"""Model kind: ε or score output on the noisy blocks (parameterization "eps" or "score")."""
VELOCITY = "velocity"
"""Model kind: a position-only velocity model (HGF, flow matching)."""
MODEL_KINDS = (SCORE, VELOCITY)


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler: `function` called with the fixed keyword `options` (e.g. ``order=1``).

    NFE with `steps` steps is ``nfe_per_step · (steps − 1) + nfe_last_step`` at the function's
    defaults (Heun ends with an Euler step, pc skips its last correction); adaptive samplers
    (``nfe_per_step is None``) choose their own steps. `inpaint`: continues from the state its
    callback edited (`phasediff.samplers.conditional.inpaint`); `corrector`: accepts (or has)
    the exponential integrator's implicit ``corrector=True``; `eta`: accepts ``eta`` (the
    stochasticity of the reverse-time family). `velocity_route`: the sampler this name hands
    velocity models to, if any."""

    name: str
    function: Callable[..., Samples]
    kinds: tuple[str, ...]
    nfe_per_step: int | None
    nfe_last_step: int | None
    description: str
    options: Mapping[str, object] = field(default_factory=dict)
    inpaint: bool = False
    corrector: bool = False
    eta: bool = False
    velocity_route: str | None = None

    @property
    def adaptive(self) -> bool:
        """True when the solver chooses its own steps (`steps` only sets the output grid)."""
        return self.nfe_per_step is None

    @property
    def default_grid(self) -> str:
        """The `grid` default of the function's own signature."""
        return inspect.signature(self.function).parameters["grid"].default

    @cached_property
    def fn(self) -> Callable[..., Samples]:
        """The function with this entry's fixed options bound (score models only)."""
        if not self.options:
            return self.function
        fn = update_wrapper(partial(self.function, **self.options), self.function)
        what = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        fn.__doc__ = f"`{self.function.__name__}` with {what}: {self.description}"
        return fn


def _entries(*entries: SamplerEntry) -> Mapping[str, SamplerEntry]:
    return MappingProxyType({e.name: e for e in entries})


_EI = {"kinds": (SCORE,), "nfe_per_step": 1, "nfe_last_step": 1, "eta": True}
_TO_HGF_EI = "velocity models go to hgf_ei"

REGISTRY: Mapping[str, SamplerEntry] = _entries(
    SamplerEntry(
        "em", euler_maruyama, (SCORE,), 1, 1, "Euler–Maruyama on the reverse SDE.", inpaint=True
    ),
    SamplerEntry("euler", ode_euler, (SCORE,), 1, 1, "Euler on the PF-ODE.", inpaint=True),
    SamplerEntry(
        "heun", ode_heun, (SCORE,), 2, 1, "Heun on the PF-ODE, Euler last step.", inpaint=True
    ),
    SamplerEntry("dopri5", ode_dopri5, (SCORE,), None, None, "Adaptive dopri5 on the PF-ODE."),
    SamplerEntry(
        "lie_trotter",
        lie_trotter,
        (SCORE,),
        1,
        1,
        "HOLD's splitting: score kick, exact linear flow.",
        inpaint=True,
    ),
    SamplerEntry(
        "strang",
        strang,
        (SCORE,),
        1,
        1,
        "Strang splitting (CLD's SSCS for any process).",
        inpaint=True,
    ),
    SamplerEntry(
        "pc",
        predictor_corrector,
        (SCORE,),
        2,
        1,
        "EM predictor + Langevin corrector; every block noisy.",
        inpaint=True,
    ),
    SamplerEntry(
        "ei",
        exponential_integrator,
        description=f"Exponential integrator, order 2; {_TO_HGF_EI}.",
        inpaint=True,
        corrector=True,
        velocity_route="hgf_ei",
        **_EI,
    ),
    SamplerEntry(
        "ei1",
        exponential_integrator,
        description=f"Exponential integrator, order 1 (DDIM-like); {_TO_HGF_EI}.",
        options={"order": 1},
        inpaint=True,
        corrector=True,
        velocity_route="hgf_ei",
        **_EI,
    ),
    SamplerEntry(
        "ei3",
        exponential_integrator,
        description=f"Exponential integrator, order 3; {_TO_HGF_EI}.",
        options={"order": 3},
        inpaint=True,
        corrector=True,
        velocity_route="hgf_ei",
        **_EI,
    ),
    SamplerEntry(
        "eic",
        exponential_integrator,
        description="Order-2 exponential integrator + implicit corrector, no extra NFE.",
        options={"order": 2, "corrector": True},
        corrector=True,
        **_EI,
    ),
    SamplerEntry(
        "ei1c",
        exponential_integrator,
        description="Order-1 exponential integrator + implicit corrector, no extra NFE.",
        options={"order": 1, "corrector": True},
        corrector=True,
        **_EI,
    ),
    SamplerEntry("hgf_euler", hgf_euler, (VELOCITY,), 1, 1, "Euler on the position ODE."),
    SamplerEntry("hgf_heun", hgf_heun, (VELOCITY,), 2, 1, "Heun on the position ODE."),
    SamplerEntry(
        "hgf_dopri5", hgf_dopri5, (VELOCITY,), None, None, "Adaptive dopri5 on the position ODE."
    ),
    SamplerEntry(
        "hgf_ei", hgf_ei, (VELOCITY,), 1, 1, "Exponential integrator (DPM-Solver++) for velocity."
    ),
)
"""Every sampler by name, in the order the CLI and the benchmarks list them."""


def get_entry(name: str) -> SamplerEntry:
    """The registry entry of `name`; unknown names list the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def model_kind(model) -> str:
    """ "velocity" for a position-only velocity model, else "score" (ε or score output)."""
    return VELOCITY if is_velocity_model(model) else SCORE


RECOMMENDED: Mapping[str, tuple[str, int]] = MappingProxyType(
    {SCORE: ("ei1c", 50), VELOCITY: ("hgf_heun", 20)}
)
"""Model kind → (sampler, steps) used when the caller names none: for ε/score models `ei1c`
(first-order exponential integrator with the corrector) at 50 NFE on its optimal grid, which
with the denoising last step and its noise floor beat Lie–Trotter@50 on all seven trained toy
models measured, by 14–35 % (docs/samplers.md, "The noise floor"); Heun at 20 steps (39 NFE)
for velocity models."""


def recommended_sampler(model) -> tuple[str, int]:
    """(sampler name, steps) to use for `model` when the caller names no sampler."""
    return RECOMMENDED[model_kind(model)]


def sampler_names(
    kind: str | None = None, *, adaptive: bool | None = None, inpaint: bool | None = None
) -> tuple[str, ...]:
    """Names in registry order, optionally only those that take models of `kind` directly
    (routes not counted), are (not) adaptive, or do (not) support inpainting."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds are: {', '.join(MODEL_KINDS)}.")
    return tuple(
        e.name
        for e in REGISTRY.values()
        if (kind is None or kind in e.kinds)
        and (adaptive is None or e.adaptive == adaptive)
        and (inpaint is None or e.inpaint == inpaint)
    )


def resolve(name: str, model) -> SamplerEntry:
    """The entry that samples `model` under `name`: itself, its `velocity_route` for a
    velocity model (`ei` → `hgf_ei`), or a one-sentence error naming the fitting samplers."""
    entry = get_entry(name)
    kind = model_kind(model)
    if kind in entry.kinds:
        return entry
    if kind == VELOCITY and entry.velocity_route is not None:
        return REGISTRY[entry.velocity_route]
    fitting = [e.name for e in REGISTRY.values() if kind in e.kinds or _routes(e, kind)]
    raise ValueError(
        f"sampler {name!r} does not sample {kind} models; for this model use one of: "
        f"{', '.join(fitting)}."
    )


def _routes(entry: SamplerEntry, kind: str) -> bool:
    return kind == VELOCITY and entry.velocity_route is not None


def nfe_for_steps(name: str, steps: int) -> int | None:
    """Network evaluations of `steps` steps at the sampler's defaults (None: adaptive)."""
    entry = get_entry(name)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}.")
    if entry.adaptive:
        return None
    return entry.nfe_per_step * (steps - 1) + entry.nfe_last_step


def steps_for_nfe(name: str, nfe: int) -> int:
    """The most steps whose NFE stays within the budget `nfe` (at least 1): `nfe` steps for
    one NFE per step, ⌊(nfe + 1)/2⌋ for heun, hgf_heun and pc (2·steps − 1 NFE). Adaptive
    samplers choose their own steps and are refused."""
    entry = get_entry(name)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an integer ≥ 1, got {nfe!r}.")
    if entry.adaptive:
        raise ValueError(
            f"sampler {name!r} is adaptive and chooses its own steps; fixed-step samplers are: "
            f"{', '.join(sampler_names(adaptive=False))}."
        )
    return max(1, 1 + (nfe - entry.nfe_last_step) // entry.nfe_per_step)


def _routed(entry: SamplerEntry) -> Callable[..., Samples]:
    """entry.fn for score models; velocity models go to `entry.velocity_route` with the same
    order, η = 0 required, no corrector, and the score-only `optimal` grid (the default)
    replaced by the route's default grid."""
    target = REGISTRY[entry.velocity_route]
    score_fn = entry.fn

    def sampler(model, process, shape, steps, **options) -> Samples:
        if not is_velocity_model(model):
            return score_fn(model, process, shape, steps, **options)
        options = {**entry.options, **options}
        if options.pop("corrector", False):
            raise ValueError(
                f"corrector=True is for score models; velocity models use {target.name} without it."
            )
        eta = options.pop("eta", 0.0)
        if eta:
            raise ValueError(
                f"a velocity model defines a deterministic flow; eta must be 0, got {eta!r}."
            )
        if options.get("grid", "auto") in ("auto", "optimal"):
            options["grid"] = target.default_grid
        if options.get("sigma_data", 0) is None:
            del options["sigma_data"]
        return target.fn(model, process, shape, steps, **options)

    update_wrapper(sampler, score_fn)
    sampler.__doc__ = (
        f"{score_fn.__doc__}\n\nVelocity models are handed to `{target.name}` by the sampler "
        "registry (phasediff.samplers.registry)."
    )
    return sampler


def _with_final(entry: SamplerEntry, fn: Callable[..., Samples]) -> Callable[..., Samples]:
    """`fn` with the keywords ``final`` ("integrate", the default: the sampler's own last step
    to t_min; "denoise": the denoiser jump from t_{N−1}, `phasediff.samplers.final`),
    ``x0_range`` (the box that jump's x̂₀ is projected onto) and ``noise_floor`` (the jump is
    not made from below the time where the reference posterior std of x₀ is that fraction of
    σ_data; None = `default_noise_floor(steps)`, 0 = off), and ``x0_guard`` (True: x̂₀ of
    every network call is projected onto ``x0_range``, `phasediff.samplers.guard`; the
    samples it moved are counted in `Samples.guarded`). Velocity models keep their own last
    step and take no guard."""

    def sampler(
        model, process, shape, steps, *, final="integrate", x0_range=None, noise_floor=None,
        x0_guard=False, **options,
    ):  # fmt: skip
        check_final(final)
        if not isinstance(x0_guard, bool):
            raise ValueError(f"x0_guard must be True or False, got {x0_guard!r}.")
        if final == "denoise" and is_velocity_model(model):
            raise ValueError(VELOCITY_FINAL)
        if x0_guard and x0_range is None:
            raise ValueError(
                "x0_guard=True needs x0_range=(lo, hi), the box that holds the data (e.g. a "
                "run's data_range.json)."
            )
        guard = None
        if x0_guard:
            shape = check_shape(shape)
            guard = X0Guard(model, process, *check_x0_range(x0_range, shape[1:]))
            model = guard
        if final == "integrate":
            # without the jump, x0_range serves only the guard and noise_floor nothing
            stray = "x0_range" if x0_range is not None and not x0_guard else None
            stray = "noise_floor" if noise_floor is not None else stray
            if stray:
                raise ValueError(
                    f"{stray} belongs to the denoising final step; pass final='denoise' with "
                    "it, or leave it out."
                )
            res = fn(model, process, shape, steps, **options)
        else:
            res = denoised_final(
                fn, model, process, shape, steps, x0_range=x0_range, noise_floor=noise_floor,
                **options,
            )  # fmt: skip
        if guard is not None:
            res.guarded, res.guarded_far = guard.guarded, guard.guarded_far
        return res

    update_wrapper(sampler, fn)
    params = list(inspect.signature(fn).parameters.values())
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("final", keyword, default="integrate", annotation="str"),
        inspect.Parameter("x0_range", keyword, default=None, annotation="tuple | None"),
        inspect.Parameter("noise_floor", keyword, default=None, annotation="float | None"),
        inspect.Parameter("x0_guard", keyword, default=False, annotation="bool"),
    ]
    sampler.__signature__ = inspect.signature(fn).replace(parameters=[*params, *extra])
    return sampler


SAMPLERS: dict[str, Callable[..., Samples]] = {
    e.name: _with_final(e, _routed(e) if e.velocity_route else e.fn) for e in REGISTRY.values()
}
"""Sampler functions by name (the `ei*` ones route velocity models, see `_routed`). Each also
takes ``final`` ("integrate" or "denoise"), ``x0_range``, ``noise_floor`` and ``x0_guard``
(`_with_final`)."""


def get_sampler(name: str, model=None) -> Callable[..., Samples]:
    """Sampler by name; unknown names list the valid ones. With `model`, a sampler that does
    not take its kind (directly or routed) is refused with the names that do."""
    get_entry(name)
    if model is not None:
        resolve(name, model)
    return SAMPLERS[name]


def sampler_help() -> str:
    """The CLI's --sampler help: every sampler with its default grid, by model kind."""
    score = ", ".join(f"{n} ({REGISTRY[n].default_grid})" for n in sampler_names(SCORE))
    velocity = ", ".join(f"{n} ({REGISTRY[n].default_grid})" for n in sampler_names(VELOCITY))
    routed = ", ".join(e.name for e in REGISTRY.values() if _routes(e, VELOCITY))
    return (
        f"Sampler (its default grid). Score/ε models: {score}. Velocity models (HGF, flow "
        f"matching): {velocity}; {routed} hand velocity models to hgf_ei."
    )


def grid_help() -> str:
    """The CLI's --grid help: every grid; the default is the sampler's own."""
    return f"Time grid: {', '.join(GRIDS)}. Default: the sampler's own (see --sampler)."


__all__ = [
    "MODEL_KINDS",
    "REGISTRY",
    "SAMPLERS",
    "SCORE",
    "VELOCITY",
    "SamplerEntry",
    "get_entry",
    "get_sampler",
    "grid_help",
    "model_kind",
    "nfe_for_steps",
    "RECOMMENDED",
    "recommended_sampler",
    "resolve",
    "sampler_help",
    "sampler_names",
    "steps_for_nfe",
]
