"""Presets: their matrices, stationarity and closed-form marginals from the papers."""

from __future__ import annotations

import math

import pytest
import torch

from phasediff import processes as P
from tests.conftest import engine_processes

RECIPES = [n for n, p in engine_processes().items() if p.S is not None]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_presets_are_stationary(name):
    p = engine_processes()[name]
    assert p.stationary_check() < 1e-12


def test_stationary_check_without_stationary_law_says_so():
    with pytest.raises(ValueError, match="no stationary law"):
        P.ve().stationary_check()


@pytest.mark.parametrize(
    "name, blocks",
    [("vp", (0,)), ("ve", (0,)), ("cld", (1,)), ("psld", (0, 1)), ("hold", (2,))],
)
def test_noisy_blocks(name, blocks):
    assert P.get_process(name).noisy_blocks == blocks
    assert P.hamiltonian().noisy_blocks == ()


def test_cld_defaults_are_the_papers():
    p = P.cld()
    # M = 0.25, Γ = 1 (critical: Γ² = 4M), β = 4, v₀ ~ N(0, γM) with γ = 0.04
    assert torch.allclose(p.A, torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=torch.float64))
    assert float(p.D[1, 1]) == 1.0 and float(p.beta(0.3)) == 4.0
    assert math.isclose(float(p.initial_cov[1, 1]), 0.04 * 0.25)


def test_psld_matches_the_paper_drift():
    """PSLD (Pandey & Mandt eq. for D, Q with β factored out): A = −½[[Γ, −1/M], [1, ν]]."""
    G, nu, M = 0.01, 4.01, 0.25
    p = P.psld()
    expected = -0.5 * torch.tensor([[G, -1 / M], [1.0, nu]], dtype=torch.float64)
    assert torch.allclose(p.A, expected, atol=1e-14)
    assert float(p.beta(0.0)) == 8.0
    assert math.isclose(float(p.initial_cov[1, 1]), 0.04 * M)
    # critically damped: ν − Γ = 2/√M makes the discriminant ¼(ν − Γ)² − 1/M vanish, a
    # double eigenvalue −(Γ + ν)/4 (docs/processes.md); 1e-6 is sqrt of the rounding of eig
    # at a double root (a 1e-12 perturbation of A moves such a root by ~1e-6)
    eig = torch.linalg.eigvals(p.A)
    assert torch.allclose(eig.real, torch.full((2,), -(G + nu) / 4, dtype=torch.float64))
    assert float(eig.imag.abs().max()) < 1e-6
    off = P.psld(Gamma=G, nu=nu + 0.1).A  # over-damped: two distinct real eigenvalues
    assert float(torch.linalg.eigvals(off).real.diff().abs()) > 0.1


def test_vp_marginal_closed_form():
    p = P.vp()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    B = 0.1 * t + 0.5 * (20 - 0.1) * t**2
    E, S = p.kernel(t)
    assert torch.allclose(E[:, 0, 0], torch.exp(-0.5 * B), rtol=1e-13)
    assert torch.allclose(S[:, 0, 0], 1 - torch.exp(-B), rtol=1e-12)


def test_subvp_marginal_closed_form():
    p = P.subvp()
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    B = 0.1 * t + 0.5 * (20 - 0.1) * t**2
    _, S = p.kernel(t)
    assert torch.allclose(S[:, 0, 0], (1 - torch.exp(-B)) ** 2, rtol=1e-9)


def test_ve_marginal_closed_form():
    p = P.ve(sigma_min=0.01, sigma_max=50.0)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    sigma = 0.01 * (50 / 0.01) ** t
    E, S = p.kernel(t)
    assert torch.allclose(E[:, 0, 0], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(S[:, 0, 0], sigma**2 - 0.01**2, rtol=1e-12)


def test_oscillation_hgf_quarter_period_forgets_x0():
    """x'' = −Kx: at T = π/(2√K), x_T = v₀/√K whatever x₀, so Var(x_T) = σ_v²/K."""
    K, sv = 2.0, 0.8
    p = P.hamiltonian(K=K, sigma_v=sv)
    assert math.isclose(p.T, math.pi / (2 * math.sqrt(K)))
    E, S = p.kernel(torch.tensor(p.T, dtype=torch.float64))
    assert abs(float(E[0, 0])) < 1e-14
    assert math.isclose(float(S[0, 0]), sv**2 / K, rel_tol=1e-12)


def test_zero_force_is_straight_line():
    """K = 0: x_t = x₀ + t v₀, v_t = v₀ (the flow-matching interpolant up to scale)."""
    p = P.hamiltonian(K=0.0, sigma_v=1.5)
    t = torch.tensor([0.2, 0.7, 1.0], dtype=torch.float64)
    E, S = p.kernel(t)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(E[i], torch.tensor([[1.0, ti], [0.0, 1.0]], dtype=torch.float64))
        expected = 2.25 * torch.tensor([[ti * ti, ti], [ti, 1.0]], dtype=torch.float64)
        assert torch.allclose(S[i], expected, rtol=1e-12)


def test_langevin_chain_structure():
    p = P.langevin_chain(4, couplings=[1.0, 2.0, 3.0], friction=0.5, masses=[2.0, 1.0, 4.0])
    s = torch.tensor([1.0, 2.0, 1.0, 4.0], dtype=torch.float64)
    Ahat = torch.diag(s.rsqrt()) @ p.A @ torch.diag(s.sqrt())  # normalised frame
    expected = torch.zeros(4, 4, dtype=torch.float64)
    for j, c in enumerate([1.0, 2.0, 3.0]):
        expected[j, j + 1], expected[j + 1, j] = c, -c
    expected[3, 3] = -0.5
    assert torch.allclose(Ahat, expected, atol=1e-14)
    assert p.noisy_blocks == (3,)


def test_get_process_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets are: cld, critical"):
        P.get_process("hold2")
    with pytest.raises(ValueError, match="bad arguments for preset 'cld'"):
        P.get_process("cld", mass=1.0)


def test_fingerprint_is_equal_for_equal_processes_and_tells_every_field_apart():
    """Per-grid caches share results between processes with equal fingerprints, so a field
    the fingerprint missed would hand one process another's sampler coefficients."""
    from phasediff.processes.schedules import ConstantBeta

    assert P.cld().fingerprint() == P.cld().fingerprint()
    assert P.vp().fingerprint() == P.get_process("vp").fingerprint()
    base = P.cld().fingerprint()
    variants = {
        "A (M)": P.cld(M=0.3),
        "D (Gamma)": P.cld(Gamma=1.5),
        "schedule (beta)": P.cld(beta=5.0),
        "initial covariance (gamma)": P.cld(gamma=0.05),
        "t_min": P.cld(t_min=2e-5),
    }
    for label, process in variants.items():
        assert process.fingerprint() != base, label
    assert P.vp(beta_max=19.0).fingerprint() != P.vp().fingerprint()  # schedule slope
    assert P.subvp().fingerprint() != P.vp().fingerprint()  # noise damping
    assert P.zero_force(T=2.0).fingerprint() != P.zero_force().fingerprint()  # T and prior

    class MyBeta(ConstantBeta):  # a user's subclass may change β(t) without new fields
        def beta(self, t):
            return 2 * super().beta(t)

    mine = P.LinearProcess(torch.eye(1), MyBeta(1.0), S=torch.eye(1))
    assert mine.fingerprint() is None
    assert P.rectified_flow().fingerprint() == P.rectified_flow().fingerprint()
