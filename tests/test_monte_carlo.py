"""Kernels against a fine-step Euler–Maruyama simulation of the SDE itself (≥ 10⁵ paths).

Each mean and covariance entry must agree within 4 standard errors (estimated from the
paths). The discretisation bias of 2000 midpoint-β Euler steps over an interval with
‖A‖·B ≲ 3 is ≈ 1e-3 relative, well below 4 SE ≈ 2e-2 relative at 10⁵ paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediff import processes as P
from tests.conftest import engine_processes

PATHS = 100_000
STEPS = 2000


def euler_maruyama(process: P.LinearProcess, x0: float, t_end: float, seed: int) -> torch.Tensor:
    """Simulate z_t from z_0 = (x0, aux ~ N(0, Σ_aux)); independent of the kernel code."""
    gen = torch.Generator().manual_seed(seed)
    k = process.k
    A = process.A.to(torch.float64)
    G = process.G.to(torch.float64)  # GGᵀ = D
    z = torch.zeros(PATHS, k, dtype=torch.float64)
    z[:, 0] = x0
    if k > 1:
        aux = process.initial_cov[1:, 1:]
        evals, evecs = torch.linalg.eigh(aux)
        factor = evecs * evals.clamp_min(0).sqrt()
        z[:, 1:] = torch.randn(PATHS, k - 1, generator=gen, dtype=torch.float64) @ factor.T
    h = t_end / STEPS
    c = process.noise_damping
    for n in range(STEPS):
        t_mid = (n + 0.5) * h
        beta = float(process.beta(t_mid))
        damp = 1.0 if c == 0 else -math.expm1(-c * float(process.beta_integral(t_mid)))
        noise = torch.randn(PATHS, k, generator=gen, dtype=torch.float64) @ G.T
        z = z + beta * h * (z @ A.T) + math.sqrt(2 * beta * h * damp) * noise
    return z


def assert_moments_within_4se(process: P.LinearProcess, t_end: float, seed: int) -> None:
    x0 = 0.7
    z = euler_maruyama(process, x0, t_end, seed)
    E, S = process.kernel(torch.tensor(t_end, dtype=torch.float64))
    mean_exact = (E[:, 0] * x0).numpy()
    zc = (z - z.mean(0)).numpy()
    mean_emp = z.mean(0).numpy()
    se_mean = z.std(0).numpy() / math.sqrt(PATHS)
    tiny = 1e-12 * max(1.0, float(S.abs().max()))
    assert np.all(np.abs(mean_emp - mean_exact) <= 4 * se_mean + tiny), (mean_emp, mean_exact)
    k = process.k
    for i in range(k):
        for j in range(i, k):
            prod = zc[:, i] * zc[:, j]
            se = prod.std() / math.sqrt(PATHS)
            err = abs(prod.mean() - float(S[i, j]))
            assert err <= 4 * se + tiny, (i, j, prod.mean(), float(S[i, j]), se)


def _t_end(process: P.LinearProcess) -> float:
    """A time inside [t_min, T] where the process is far from both ends (‖A‖·B ≈ 2)."""
    norm = float(torch.linalg.matrix_norm(process.A, ord=1)) or 1.0
    b_target = 2.0 / norm
    if process.S is None and norm == 1.0:
        b_target = float(process.beta_integral(torch.tensor(process.T))) * 0.5
    t = float(process.schedule.inverse_integral(torch.tensor(b_target, dtype=torch.float64)))
    return min(max(t, process.t_min), process.T)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(engine_processes()))
def test_kernel_matches_euler_maruyama(name):
    process = engine_processes()[name]
    assert_moments_within_4se(process, _t_end(process), seed=1234)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True)
@given(st.integers(2, 3), st.integers(0, 10_000))
def test_random_recipe_matches_euler_maruyama(k, seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(k, 1))
    Qh = rng.normal(size=(k, k))
    S = np.diag(rng.uniform(0.3, 2.0, size=k))
    process = P.recipe(G @ G.T, Qh - Qh.T, S, beta=1.0)
    assert_moments_within_4se(process, _t_end(process), seed=seed)
