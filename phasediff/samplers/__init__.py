"""Samplers: plain functions `(model, process, shape, steps, *, grid, denoise, generator,
callback, return_trajectory)` returning `Samples(x, z, nfe, times, trajectory)`
(docs/design.md §4). `REGISTRY` describes each (model kinds, NFE per step, default grid, what it
supports); `SAMPLERS` and `get_sampler` are derived from it.

ALD and MILD work on any noise-conditional score `score(x, sigma)` (see `langevin`); a VE
model trained by phasediff becomes one through `ve_score_adapter`, and `sample_ve_model` runs
either on a trained VE run (they are not registry entries: their signature differs).
"""

from phasediff.samplers.base import CountingModel, Samples, StepUnderflow, dopri5_solve
from phasediff.samplers.dynamics import ModelDynamics
from phasediff.samplers.exponential import exponential_integrator
from phasediff.samplers.grids import GRIDS, optimal_grid, time_grid
from phasediff.samplers.guard import X0Guard
from phasediff.samplers.hamiltonian import hgf_dopri5, hgf_ei, hgf_euler, hgf_heun
from phasediff.samplers.langevin import (
    LANGEVIN_SAMPLERS,
    annealed_langevin,
    mild,
    noise_levels,
    sample_ve_model,
    ve_score_adapter,
)
from phasediff.samplers.ode import ode_dopri5, ode_euler, ode_heun
from phasediff.samplers.predictor_corrector import predictor_corrector
from phasediff.samplers.registry import REGISTRY, SAMPLERS, SamplerEntry, get_sampler
from phasediff.samplers.sde import euler_maruyama
from phasediff.samplers.splitting import lie_trotter, strang

__all__ = [
    "GRIDS",
    "LANGEVIN_SAMPLERS",
    "REGISTRY",
    "SAMPLERS",
    "SamplerEntry",
    "CountingModel",
    "ModelDynamics",
    "Samples",
    "StepUnderflow",
    "X0Guard",
    "annealed_langevin",
    "dopri5_solve",
    "euler_maruyama",
    "exponential_integrator",
    "optimal_grid",
    "predictor_corrector",
    "get_sampler",
    "hgf_dopri5",
    "hgf_ei",
    "hgf_euler",
    "hgf_heun",
    "lie_trotter",
    "mild",
    "noise_levels",
    "ode_dopri5",
    "ode_euler",
    "ode_heun",
    "sample_ve_model",
    "strang",
    "time_grid",
    "ve_score_adapter",
]
