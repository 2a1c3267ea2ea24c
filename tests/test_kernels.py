"""Transition kernels against independent references: the moment ODE, Van Loan's block
exponential, the Chapman–Kolmogorov identity and a 50-digit mpmath computation."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from phasediff import processes as P
from phasediff.processes.kernels import transition_kernel, van_loan
from tests.conftest import engine_processes


def moment_ode(process: P.LinearProcess, x0: float, times: np.ndarray):
    """Integrate dm/dt = βAm, dΣ/dt = β(AΣ + ΣAᵀ + 2D·h(t)) from t = 0 with scipy (DOP853).

    h(t) = 1 − exp(−c B(0, t)) is the noise damping (1 when c = 0). This shares nothing with
    the engine but the matrices and the schedule's β(t).
    """
    k = process.k
    A, D = process.A.numpy(), process.D.numpy()
    c = process.noise_damping

    def rhs(t, y):
        m, S = y[:k], y[k:].reshape(k, k)
        beta = float(process.beta(t))
        h = 1.0 if c == 0 else -math.expm1(-c * float(process.beta_integral(t)))
        dS = beta * (A @ S + S @ A.T + 2 * D * h)
        return np.concatenate([beta * A @ m, dS.ravel()])

    m0 = np.zeros(k)
    m0[0] = x0
    y0 = np.concatenate([m0, process.initial_cov.numpy().ravel()])
    sol = solve_ivp(
        rhs, (0.0, times[-1]), y0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14
    )
    assert sol.success
    return sol.y[:k].T, sol.y[k:].T.reshape(-1, k, k)


@pytest.mark.parametrize("name", list(engine_processes()))
def test_kernel_matches_moment_ode(name):
    process = engine_processes()[name]
    times = np.linspace(process.t_min, process.T, 7)[1:]
    x0 = 0.7
    m_ref, S_ref = moment_ode(process, x0, times)
    E, S = process.kernel(torch.tensor(times))
    m = (E[:, :, 0] * x0).numpy()
    # The ODE is solved to rtol 1e-12; agreement to 1e-8 relative (of the largest entry,
    # so that exact zeros compare sensibly) leaves four orders of magnitude of margin.
    scale = np.abs(S_ref).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(S.numpy() / scale, S_ref / scale, rtol=0, atol=1e-8)
    np.testing.assert_allclose(m, m_ref, rtol=1e-8, atol=1e-10)


def test_kernel_given_state_is_chapman_kolmogorov(process):
    """Σ(0→t) = E(s→t) Σ(0→s) E(s→t)ᵀ + Σ(s→t) and E(0→t) = E(s→t) E(0→s)."""
    s = torch.tensor(process.t_min + 0.3 * (process.T - process.t_min), dtype=torch.float64)
    t = torch.tensor(process.t_min + 0.8 * (process.T - process.t_min), dtype=torch.float64)
    E_s, S_s = process.kernel(s)
    E_t, S_t = process.kernel(t)
    E_st, S_st = process.kernel(t, s)
    assert torch.allclose(E_st @ E_s, E_t, rtol=1e-10, atol=1e-12)
    composed = E_st @ S_s @ E_st.T + S_st
    scale = float(S_t.abs().max())
    assert float((composed - S_t).abs().max()) <= 1e-10 * scale


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "hold", "critical5", "zero_force"])
def test_doubling_agrees_with_van_loan(name):
    process = engine_processes()[name]
    b = torch.tensor([1e-4, 0.05, 0.3, 1.0], dtype=torch.float64)
    E1, N1 = transition_kernel(process.A, process.D, b)
    E2, N2 = van_loan(process.A, process.D, b)
    # Both are float64 algorithms for the same integral; 1e-12 relative of the entries' scale.
    assert torch.allclose(E1, E2, rtol=1e-12, atol=1e-13)
    scale = N2.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1e-300)
    assert float(((N1 - N2) / scale).abs().max()) < 1e-11


def _mp_noise_cov(A: torch.Tensor, D: torch.Tensor, b: float, dps: int = 50):
    """N(b) through Van Loan's block exponential evaluated with 50 significant digits."""
    with mpmath.workdps(dps):
        k = A.shape[0]
        M = mpmath.zeros(2 * k, 2 * k)
        for i in range(k):
            for j in range(k):
                M[i, j] = mpmath.mpf(float(A[i, j])) * b
                M[i, k + j] = 2 * mpmath.mpf(float(D[i, j])) * b
                M[k + i, k + j] = -mpmath.mpf(float(A[j, i])) * b
        F = mpmath.expm(M)
        E = F[:k, :k]
        N = F[:k, k:] * E.T
        return np.array([[float(N[i, j]) for j in range(k)] for i in range(k)])


@pytest.mark.parametrize("name", ["cld", "hold", "langevin_chain4", "critical5"])
def test_small_time_covariance_keeps_relative_accuracy(name):
    """Near t_min the noise-free blocks have tiny variances (∝ b^(2k−1)); the doubling
    algorithm must get them right *relatively*, which S − E S Eᵀ cannot (cancellation)."""
    process = engine_processes()[name]
    b = float(process.beta_integral(torch.tensor(process.t_min, dtype=torch.float64)))
    _, N = transition_kernel(process.A, process.D, torch.tensor(b, dtype=torch.float64))
    ref = _mp_noise_cov(process.A, process.D, b)
    diag, diag_ref = np.diag(N.numpy()), np.diag(ref)
    # Each diagonal entry to 1e-9 relative even when it is 1e-30 of the largest.
    np.testing.assert_allclose(diag, diag_ref, rtol=1e-9, atol=0)
    # the naive recipe formula loses the smallest variance completely (documents the choice)
    E = torch.linalg.matrix_exp(b * process.A)
    naive = process.S - E @ process.S @ E.T
    assert abs(float(naive[0, 0]) - diag_ref[0]) > 1e3 * abs(diag[0] - diag_ref[0])


@st.composite
def random_recipe(draw):
    k = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    rank = draw(st.integers(1, k))
    G = rng.normal(size=(k, rank))
    D = G @ G.T / k
    Qh = rng.normal(size=(k, k))
    Q = Qh - Qh.T
    Sh = rng.normal(size=(k, k))
    S = Sh @ Sh.T + 0.5 * np.eye(k)
    beta = draw(st.floats(0.2, 3.0))
    return P.recipe(D, Q, S, beta=beta, t_min=1e-3, T=1.0)


@settings(max_examples=25, deadline=None)
@given(random_recipe())
def test_random_recipe_matches_moment_ode(process):
    process.stationary_check()
    times = np.array([0.01, 0.2, 0.6, 1.0])
    m_ref, S_ref = moment_ode(process, -1.3, times)
    E, S = process.kernel(torch.tensor(times))
    scale = np.abs(S_ref).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(S.numpy() / scale, S_ref / scale, rtol=0, atol=1e-8)
    np.testing.assert_allclose((E[:, :, 0] * -1.3).numpy(), m_ref, rtol=1e-8, atol=1e-10)
