"""sample_marginal, the prior and the SDE view: shapes, exactness and conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from phasediff import processes as P
from phasediff.processes import apply_blocks
from tests.conftest import engine_processes


def test_sample_is_mean_plus_cholesky_noise(process):
    x0 = torch.randn(6, 2, 3, dtype=torch.float64)
    t = torch.linspace(process.t_min, process.T, 6, dtype=torch.float64)
    z, eps = process.sample_marginal(x0, t, generator=torch.Generator().manual_seed(0))
    assert z.shape == (6, process.k, 2, 3) and eps.shape == z.shape
    coef, sigma, L = process.marginal(t)
    expected = coef[:, :, None, None] * x0[:, None] + apply_blocks(L, eps)
    assert torch.allclose(z, expected, atol=1e-12)
    # L is a lower-triangular factor of Σ
    assert torch.allclose(L, torch.tril(L))
    scale = sigma.abs().amax(dim=(-1, -2), keepdim=True)
    assert float(((L @ L.transpose(-1, -2) - sigma) / scale).abs().max()) < 1e-12


def test_sample_statistics_over_data_coordinates():
    """One z_t per batch element but d = 2·10⁵ coordinates: the empirical block covariance
    matches Σ within 4 standard errors (checks the axis plumbing with a non-trivial shape)."""
    p = P.hold()
    x0 = torch.full((2, 400, 500), 0.5, dtype=torch.float64)
    t = torch.tensor([0.05, 0.6], dtype=torch.float64)
    z, _ = p.sample_marginal(x0, t, generator=torch.Generator().manual_seed(1))
    coef, sigma, _ = p.marginal(t)
    n = 400 * 500
    for b in range(2):
        flat = z[b].reshape(p.k, -1)
        mean = flat.mean(1)
        assert torch.all((mean - 0.5 * coef[b]).abs() <= 4 * flat.std(1) / math.sqrt(n) + 1e-12)
        centred = flat - (0.5 * coef[b])[:, None]
        for i in range(p.k):
            for j in range(p.k):
                prod = centred[i] * centred[j]
                se = float(prod.std()) / math.sqrt(n)
                assert abs(float(prod.mean()) - float(sigma[b, i, j])) <= 4 * se + 1e-15


def test_generator_makes_sampling_reproducible():
    p = P.cld()
    x0 = torch.randn(8, 2)
    a, _ = p.sample_marginal(x0, 0.3, generator=torch.Generator().manual_seed(7))
    b, _ = p.sample_marginal(x0, 0.3, generator=torch.Generator().manual_seed(7))
    c, _ = p.sample_marginal(x0, 0.3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dtype_follows_data():
    p = P.psld()
    z32, _ = p.sample_marginal(torch.randn(4, 3), 0.5)
    z64, _ = p.sample_marginal(torch.randn(4, 3, dtype=torch.float64), 0.5)
    assert z32.dtype == torch.float32 and z64.dtype == torch.float64


@pytest.mark.parametrize("name", ["cld", "hold", "critical5", "langevin_chain4"])
def test_conditioning_at_t_min(name):
    """Σ(t_min) is nearly singular in the noise-free blocks; its Cholesky factor must still
    reproduce it to 1e-10 relative, entry by entry on the diagonal."""
    p = engine_processes()[name]
    _, sigma, L = p.marginal(torch.tensor([p.t_min], dtype=torch.float64))
    recon = L @ L.transpose(-1, -2)
    diag, diag_rec = torch.diagonal(sigma[0]), torch.diagonal(recon[0])
    assert torch.allclose(diag_rec, diag, rtol=1e-10, atol=0)
    assert bool(torch.isfinite(torch.linalg.inv(L)).all())


def test_prior_sample_and_logp():
    p = P.hold()
    z = p.prior_sample((50_000, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert z.shape == (50_000, 3, 2)
    cov = torch.einsum("bid,bjd->ij", z, z) / (2 * 50_000)
    # 10⁵ coordinates, unit variances: SE of a covariance entry ≈ 1/√10⁵ ≈ 3e-3
    assert torch.allclose(cov, p.prior_cov, atol=4 * 3.2e-3)
    ref = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), p.prior_cov)
    expected = ref.log_prob(z[:5].transpose(1, 2)).sum(-1)
    assert torch.allclose(p.prior_logp(z[:5]), expected, rtol=1e-12)


def test_prior_logp_refuses_singular_prior():
    with pytest.raises(ValueError, match="singular covariance"):
        P.hamiltonian(K=0.0).prior_logp(torch.zeros(2, 2, 1))


def test_diffusion_and_drift():
    p = P.subvp()
    t = torch.tensor([0.1, 0.9], dtype=torch.float64)
    g = p.diffusion(t)
    B = p.beta_integral(t)
    expected = p.beta(t) * (1 - torch.exp(-2 * B))  # σ² of the sub-VP SDE
    assert torch.allclose((g @ g.transpose(-1, -2))[:, 0, 0], expected, rtol=1e-12)
    z = torch.randn(2, 1, 5, dtype=torch.float64)
    assert torch.allclose(p.drift(z, t), -0.5 * p.beta(t)[:, None, None] * z)
