"""Samplers: plain functions `(model, process, shape, steps, *, grid, denoise, generator,
callback, return_trajectory)` returning `Samples(x, z, nfe, times, trajectory)` (SPEC §4).

ALD and MILD work on any noise-conditional score `score(x, sigma)` (see `langevin`); a VE
model trained by phasediff becomes one through `ve_score_adapter`.
"""

from functools import partial, update_wrapper

from phasediff.samplers.base import GRIDS, CountingModel, Samples, time_grid
from phasediff.samplers.exponential import exponential_integrator, optimal_grid
from phasediff.samplers.hamiltonian import hgf_dopri5, hgf_ei, hgf_euler, hgf_heun
from phasediff.samplers.langevin import annealed_langevin, mild, noise_levels, ve_score_adapter
from phasediff.samplers.ode import ode_dopri5, ode_euler, ode_heun
from phasediff.samplers.predictor_corrector import predictor_corrector
from phasediff.samplers.sde import euler_maruyama
from phasediff.samplers.splitting import lie_trotter, strang


def _with_order(order: int, corrector: bool = False):
    fn = update_wrapper(
        partial(exponential_integrator, order=order, corrector=corrector), exponential_integrator
    )
    what = f"order={order}" + (", corrector=True" if corrector else "")
    fn.__doc__ = f"The exponential integrator with {what} (see `exponential_integrator`)."
    return fn


SAMPLERS = {
    "em": euler_maruyama,
    "euler": ode_euler,
    "heun": ode_heun,
    "dopri5": ode_dopri5,
    "lie_trotter": lie_trotter,
    "strang": strang,
    "pc": predictor_corrector,
    "ei": exponential_integrator,
    "ei1": _with_order(1),
    "ei3": _with_order(3),
    "eic": _with_order(2, corrector=True),  # + implicit corrector, no extra NFE
    "ei1c": _with_order(1, corrector=True),
    "hgf_euler": hgf_euler,  # velocity models (HGF, flow matching): docs/hgf.md
    "hgf_heun": hgf_heun,
    "hgf_dopri5": hgf_dopri5,
    "hgf_ei": hgf_ei,
}


def get_sampler(name: str):
    """Sampler by name; unknown names list the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


__all__ = [
    "GRIDS",
    "SAMPLERS",
    "CountingModel",
    "Samples",
    "annealed_langevin",
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
    "strang",
    "time_grid",
    "ve_score_adapter",
]
