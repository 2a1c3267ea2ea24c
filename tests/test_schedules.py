"""β schedules: closed-form integrals against quadrature, exact inverses."""

from __future__ import annotations

import pytest
import torch
from scipy.integrate import quad

from phasediff.processes import ConstantBeta, GeometricVarianceBeta, LinearBeta

SCHEDULES = [
    ConstantBeta(4.0),
    LinearBeta(0.1, 20.0),
    LinearBeta(5.0, 1.0),
    GeometricVarianceBeta(0.01, 50.0),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe()["kind"])
def test_integral_matches_quadrature(schedule):
    for s, t in [(0.0, 0.3), (0.2, 0.9), (0.5, 1.0)]:
        ref, _ = quad(lambda u: float(schedule.beta(u)), s, t, epsabs=0, epsrel=1e-13)
        got = float(schedule.integral(s, t))
        assert got == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe()["kind"])
def test_inverse_integral_is_exact(schedule):
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    back = schedule.inverse_integral(schedule.integral(t))
    assert torch.allclose(back, t, atol=1e-12)
    assert bool((schedule.beta(t) > 0).all())
