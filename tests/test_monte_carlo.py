"""Kernels against an Euler–Maruyama simulation of the SDE itself, noise drawn through G.

The exact-to-1e-8 check of every kernel is the moment ODE in tests/test_kernels.py; this file
checks the *simulated* process end to end (G with GGᵀ = D, the noise damping, the auxiliary
start) with an independent random experiment. Each mean and covariance entry must agree within
4 standard errors (estimated from the paths). Power: at 2·10⁴ paths 4 SE is ≈ 4 % of a
variance (√2·σ²/√N per entry), so a 10 % error in any block's noise scale fails. The
discretisation bias of 400 midpoint-β Euler steps over an interval with ‖A‖·B ≈ 2 is
≈ (‖A‖B)²/(2·400) ≈ 0.5 % relative, eight times below that band.
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

PATHS = 20_000
STEPS = 400


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


def moment_errors(z: torch.Tensor, mean_exact: np.ndarray, S: torch.Tensor) -> list[str]:
    """Entries of the empirical mean/covariance of z farther than 4 SE from the given ones."""
    zc = (z - z.mean(0)).numpy()
    mean_emp = z.mean(0).numpy()
    se_mean = z.std(0).numpy() / math.sqrt(PATHS)
    tiny = 1e-12 * max(1.0, float(S.abs().max()))
    bad = [
        f"mean[{i}] {mean_emp[i]:.4g} vs {mean_exact[i]:.4g}"
        for i in range(z.shape[1])
        if abs(mean_emp[i] - mean_exact[i]) > 4 * se_mean[i] + tiny
    ]
    k = z.shape[1]
    for i in range(k):
        for j in range(i, k):
            prod = zc[:, i] * zc[:, j]
            se = prod.std() / math.sqrt(PATHS)
            if abs(prod.mean() - float(S[i, j])) > 4 * se + tiny:
                bad.append(f"cov[{i},{j}] {prod.mean():.4g} vs {float(S[i, j]):.4g} (SE {se:.2g})")
    return bad


def assert_moments_within_4se(process: P.LinearProcess, t_end: float, seed: int) -> None:
    x0 = 0.7
    z = euler_maruyama(process, x0, t_end, seed)
    E, S = process.kernel(torch.tensor(t_end, dtype=torch.float64))
    assert moment_errors(z, (E[:, 0] * x0).numpy(), S) == []


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


@pytest.mark.parametrize("name", list(engine_processes()))
def test_noise_factor_squares_to_the_diffusion_matrix(name):
    """The simulation above draws noise through G; the kernels use D. GGᵀ = D in float64."""
    process = engine_processes()[name]
    G, D = process.G.to(torch.float64), process.D.to(torch.float64)
    torch.testing.assert_close(G @ G.T, D, rtol=0, atol=1e-12 * max(1.0, float(D.abs().max())))


def test_simulation_detects_a_ten_percent_covariance_error():
    """The power claimed above: the same paths against a covariance 10 % too large fail."""
    process = engine_processes()["cld"]
    t_end = _t_end(process)
    z = euler_maruyama(process, 0.7, t_end, seed=1234)
    E, S = process.kernel(torch.tensor(t_end, dtype=torch.float64))
    mean = (E[:, 0] * 0.7).numpy()
    assert moment_errors(z, mean, S) == []
    assert len(moment_errors(z, mean, 1.1 * S)) >= 2  # both diagonal entries are caught
