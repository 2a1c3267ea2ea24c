"""Likelihoods through the probability-flow ODE (phasediff.evaluation.likelihood).

Reference: Gaussian data N(0, σ²I) and the exact score of its marginals (tests/gaussian.py).
Then the PF-ODE is linear, dz/dt = β(t)(A + D C_t⁻¹) z with C_t = Σ_t + σ² e_t e_tᵀ, and
the model density at t_min is Gaussian: with the k×k flow map Φ from t_min to T (integrated
here by scipy's DOP853 at rtol 1e-11, independently of torchdiffeq and autograd),

    log p_θ(z) = log N(Φ z; 0, P) + d log|det Φ|,  i.e.  p_θ = N(0, Γ ⊗ I), Γ = Φ⁻¹ P Φ⁻ᵀ.

The acceptance tolerance is 1e-2 nats per data dimension; the ODE is solved at
rtol = atol = 1e-6, so the observed errors are ≲ 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from phasediff import processes as P
from phasediff.evaluation import likelihood as L
from tests.gaussian import ExactGaussianScore

F64 = torch.float64
SIGMA2 = 0.5
TOL = 1e-2  # nats per data dimension (acceptance)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian_nll(x: torch.Tensor, var: float) -> torch.Tensor:
    """−log N(x; 0, var I) per sample, x (B, *data)."""
    flat = x.reshape(x.shape[0], -1).to(F64)
    return (0.5 * math.log(2 * math.pi * var) + flat.square() / (2 * var)).sum(dim=1)


def _model_covariance(process: P.LinearProcess, sigma2: float) -> np.ndarray:
    """Γ = Φ⁻¹ P Φ⁻ᵀ: the exact model's density at t_min is N(0, Γ ⊗ I) (module doc)."""
    k = process.k
    A, D = process.A.numpy(), process.D.numpy()

    def cov(t: float) -> np.ndarray:
        E, S = process.kernel(torch.tensor([t], dtype=F64))
        e = E[0, :, 0].numpy()
        return S[0].numpy() + sigma2 * np.outer(e, e)

    def rhs(t: float, phi: np.ndarray) -> np.ndarray:
        t = min(max(t, process.t_min), process.T)
        beta = float(process.beta(torch.tensor(t, dtype=F64)))
        M = beta * (A + D @ np.linalg.inv(cov(t)))
        return (M @ phi.reshape(k, k)).ravel()

    sol = solve_ivp(
        rhs, (process.t_min, process.T), np.eye(k).ravel(), method="DOP853", rtol=1e-11, atol=1e-12
    )
    phi = sol.y[:, -1].reshape(k, k)
    phi_inv = np.linalg.inv(phi)
    return phi_inv @ process.prior_cov.numpy() @ phi_inv.T


def _gaussian_logpdf(z: torch.Tensor, cov: np.ndarray) -> torch.Tensor:
    """log N(z; 0, cov ⊗ I) per sample, z (B, k, d)."""
    k = cov.shape[0]
    flat = z.reshape(z.shape[0], k, -1).to(F64)
    d = flat.shape[-1]
    inv = torch.tensor(np.linalg.inv(cov), dtype=F64)
    quad = torch.einsum("bid,ij,bjd->b", flat, inv, flat)
    return -0.5 * quad - 0.5 * d * (k * math.log(2 * math.pi) + float(np.linalg.slogdet(cov)[1]))


# ---------------------------------------------------------------------------- k = 1


def test_vp_nll_equals_gaussian_data_nll() -> None:
    # VP, exact score of N(0, σ²I): the model's x-density at t_min is the data density up to
    # (i) the prior mismatch e_T²σ² ≈ 2e-5 and (ii) the t_min noise Σ ≈ 1e-6 — both < 1e-4
    # nats/dim — so the reported NLL must equal −log N(x; 0, σ²) per point.
    process = P.vp()
    x = math.sqrt(SIGMA2) * torch.randn(64, 2, generator=_gen(0), dtype=F64)
    res = L.negative_log_likelihood(
        ExactGaussianScore(process, SIGMA2), process, x, rtol=1e-6, atol=1e-6
    )
    assert res.exact_marginal and res.divergence == "exact" and res.d == 2
    err = (res.nll_per_dim - _gaussian_nll(x, SIGMA2) / 2).abs()
    assert float(err.max()) < TOL
    assert float(err.max()) < 1e-3  # observed ≈ 5e-5
    assert res.nfe > 10  # adaptive dopri5: counted network calls
    # The NLL discriminates: under a model of the wrong variance it is far off.
    wrong = L.negative_log_likelihood(ExactGaussianScore(process, 2.0), process, x[:8])
    assert float((wrong.nll_per_dim - _gaussian_nll(x[:8], SIGMA2) / 2).abs().mean()) > 0.1
    json_ready = res.summary()
    assert json_ready["nll_nats_per_dim"]["mean"] == pytest.approx(float(res.nll_per_dim.mean()))


def test_hutchinson_is_unbiased_for_exact_divergence() -> None:
    # CLD with d = 9: 18 state coordinates > 16, so "auto" picks Hutchinson. The Jacobian
    # (A + D C_t⁻¹) ⊗ I has off-diagonal entries, so a Rademacher probe has real variance
    # (for a diagonal Jacobian it would be exact). The estimate is unbiased: (Hutchinson −
    # exact) averaged over 48 states is 0 within 4 SE (the SE from the same differences).
    process = P.cld()
    model = ExactGaussianScore(process, SIGMA2)
    z = torch.randn(48, 2, 9, generator=_gen(1), dtype=F64)
    z[:, 1] *= 0.1
    hutch, _, m1 = L.ode_log_density(model, process, z, generator=_gen(2))
    exact, _, m2 = L.ode_log_density(model, process, z, divergence="exact")
    assert (m1, m2) == ("hutchinson", "exact")
    diff = (hutch - exact).numpy()
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se
    assert diff.std() > 0.01  # the probe noise is real (not silently exact)
    truth = _gaussian_logpdf(z, _model_covariance(process, SIGMA2))
    assert float((exact - truth).abs().max()) / 9 < TOL


def test_vp_nll_of_a_gaussian_mixture_equals_its_log_density() -> None:
    # Non-Gaussian data: the 1-D three-component mixture gmm1d with the exact mixture score
    # (MixtureScore). The PF-ODE is now non-linear; the NLL must still equal −log p₀(x)
    # (closed-form mixture density) up to the t_min noise and prior mismatch (< 1e-4).
    from phasediff.evaluation.exact import MixtureScore
    from phasediff.evaluation.figures import gmm1d_mixture

    process = P.vp()
    w, mu, sd = gmm1d_mixture()
    model = MixtureScore(process, mu[:, None], sd, w)
    assert not model.shared  # per-component variances: the general code path
    x = torch.linspace(-2.5, 2.0, 24, dtype=F64)[:, None]
    res = L.negative_log_likelihood(model, process, x, rtol=1e-6, atol=1e-6)
    truth = -model.log_density_x0(x)
    assert float((res.nll - truth).abs().max()) < TOL
    assert float((res.nll - truth).abs().max()) < 5e-3  # observed ≈ 1e-3


def test_mixture_score_matches_autograd_of_log_density() -> None:
    # MixtureScore vs ∇ log p_t(z) by autograd of the closed-form mixture density
    # Σ w_i N(z; e ⊗ μ_i, C_i ⊗ I), for HOLD (noisy block a) and shared / per-component stds.
    from phasediff.evaluation.exact import MixtureScore

    process = P.hold()
    means = torch.tensor([[0.5, -1.0], [-1.0, 0.3], [1.2, 1.1]], dtype=F64)
    for stds in (0.3, torch.tensor([0.2, 0.5, 0.3], dtype=F64)):
        model = MixtureScore(process, means, stds, torch.tensor([0.2, 0.5, 0.3]), chunk=2)
        z = torch.randn(6, 3, 2, generator=_gen(9), dtype=F64)
        t = torch.linspace(0.01, 0.9, 6, dtype=F64)
        E, S = process.kernel(t)
        e = E[:, :, 0]
        var = torch.as_tensor(stds, dtype=F64).expand(3)
        zz = z.clone().requires_grad_(True)
        logp = []
        for b in range(6):
            terms = []
            for i in range(3):
                C = S[b] + var[i] ** 2 * torch.outer(e[b], e[b])
                diff = zz[b] - e[b][:, None] * means[i][None, :]
                quad = (diff * torch.linalg.solve(C, diff)).sum()
                terms.append(math.log([0.2, 0.5, 0.3][i]) - 0.5 * quad - torch.logdet(C))
            logp.append(torch.logsumexp(torch.stack(terms), 0))
        (grad,) = torch.autograd.grad(torch.stack(logp).sum(), zz)
        assert torch.allclose(model(z, t), grad[:, 2:], atol=1e-10)


# ---------------------------------------------------------------------------- k ≥ 2


@pytest.mark.parametrize("name", ["cld", "hold"])
def test_augmented_density_matches_closed_form(name: str) -> None:
    # The model density p_θ(x, a) at t_min of arbitrary states vs N(0, Γ ⊗ I) (module doc).
    process = P.get_process(name)
    model = ExactGaussianScore(process, SIGMA2)
    gamma = _model_covariance(process, SIGMA2)
    z = torch.randn(16, process.k, 2, generator=_gen(3), dtype=F64)
    z[:, 0] *= math.sqrt(SIGMA2)
    z[:, 1:] *= 0.2
    logp, nfe, method = L.ode_log_density(model, process, z, rtol=1e-6, atol=1e-6)
    assert method == "exact" and nfe > 10
    err = (logp - _gaussian_logpdf(z, gamma)).abs() / 2
    assert float(err.max()) < TOL
    assert float(err.max()) < 2e-3  # observed ≈ 3e-5


@pytest.mark.parametrize("name", ["cld", "hold"])
def test_augmented_bound_matches_closed_form(name: str) -> None:
    # Reported quantity for k ≥ 2: E_{a~q}[−log p_θ(x, a)] − H(q) with
    # q = N(e_a x, Σ_q ⊗ I) (auxiliary_law). For p_θ = N(0, Γ ⊗ I) per coordinate,
    # E_q[zᵀΓ⁻¹z] = z̄ᵀΓ⁻¹z̄ + tr(Γ⁻¹_aa Σ_q) with z̄ = (x, e_a x), and
    # H(q) = ½((k−1) log 2πe + log det Σ_q) per coordinate: a closed form per point.
    process = P.get_process(name)
    k, d, n = process.k, 2, 64
    model = ExactGaussianScore(process, SIGMA2)
    gamma = _model_covariance(process, SIGMA2)
    e_a, cov_q = (v.numpy() for v in L.auxiliary_law(process))
    x = math.sqrt(SIGMA2) * torch.randn(n, d, generator=_gen(4), dtype=F64)
    res = L.negative_log_likelihood(model, process, x, generator=_gen(5))
    assert not res.exact_marginal

    g_inv = np.linalg.inv(gamma)
    xs = x.numpy()  # (n, d)
    zbar = np.concatenate([xs[:, None, :], e_a[None, :, None] * xs[:, None, :]], axis=1)
    quad = np.einsum("bid,ij,bjd->b", zbar, g_inv, zbar) + d * np.trace(g_inv[1:, 1:] @ cov_q)
    nll_aug = 0.5 * quad + 0.5 * d * (k * math.log(2 * math.pi) + np.linalg.slogdet(gamma)[1])
    entropy = 0.5 * d * ((k - 1) * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov_q)[1])
    closed = (nll_aug - entropy) / d
    # One auxiliary draw per point: the reported values scatter around the closed form;
    # 4 SE of the mean of the differences, and every point within the 1e-2 acceptance band
    # plus its own draw's spread (observed max |diff| ≈ 1e-4 for CLD, ≈ 9e-3 for HOLD).
    diff = res.nll_per_dim.numpy() - closed
    se = diff.std(ddof=1) / math.sqrt(n)
    assert abs(diff.mean()) < 4 * se + 1e-3
    assert abs(diff.mean()) < TOL
    # The bound sits above the model's own x-marginal −log N(x; 0, Γ_xx) and, with the exact
    # score and a small t_min, is tight: within 1e-2 nats/dim of the true data NLL.
    marginal = _gaussian_nll(x, float(gamma[0, 0])).numpy() / d
    assert (closed >= marginal - 1e-12).all()
    data_nll = float(_gaussian_nll(x, SIGMA2).mean()) / d
    assert abs(float(res.nll_per_dim.mean()) - data_nll) < TOL


def test_auxiliary_law_is_initial_law_at_small_t_min() -> None:
    # CLD: v₀ ~ N(0, γM) = N(0, 0.01); to first order in t_min = 1e-5 the variance grows by
    # (2βΓ + 2β·A_vv·γM) t_min = (8 − 0.32) · 1e-5 (A_vv = −Γ/M = −4), and e_v = β A_vx t_min.
    e_a, cov = L.auxiliary_law(P.cld())
    assert float(cov[0, 0]) == pytest.approx(0.01 + 7.68e-5, rel=1e-5)
    assert float(e_a[0]) == pytest.approx(-4e-5, rel=1e-3)
    with pytest.raises(ValueError, match="singular law at t_min"):
        L.auxiliary_law(P.langevin_chain(3, aux_init=0.0, t_min=1e-9))


# ---------------------------------------------------------------------------- images


def test_bits_per_dim_of_dequantised_gaussian_images() -> None:
    # "Images" (1, 4, 4) on the digits grid (17 levels in [−1, 1], Δ = 1/8), model: exact VP
    # score of N(0, σ²I). E_u[−log N(x + Δ(u − ½); 0, σ²)] = ½ log 2πσ² + (x² + Δ²/12)/2σ²
    # per pixel, so the expected bits/dim is (that − ln Δ)/ln 2 averaged over pixels.
    process = P.vp()
    model = ExactGaussianScore(process, SIGMA2)
    levels, delta, n = 17, 1 / 8, 64
    j = torch.randint(4, 13, (n, 1, 4, 4), generator=_gen(6))
    x = (j.to(F64) / 8 - 1).to(F64)
    res = L.image_bits_per_dim(model, process, x, levels=levels, generator=_gen(7))
    assert res.divergence == "exact"  # 16 coordinates
    per_pixel = 0.5 * math.log(2 * math.pi * SIGMA2) + (x.square() + delta**2 / 12) / (2 * SIGMA2)
    expected = (per_pixel.reshape(n, -1).mean(1) - math.log(delta)) / math.log(2)
    diff = (res.bits_per_dim - expected).numpy()
    # Dequantisation noise per image: SD of Σ_pixels of a quadratic in u, ≈ 0.02 bits/dim.
    se = diff.std(ddof=1) / math.sqrt(n)
    assert abs(diff.mean()) < 4 * se + TOL / math.log(2) * 0.1
    assert res.summary()["bits_per_dim"]["mean"] == pytest.approx(float(res.bits_per_dim.mean()))
    # Offsets of the bits/dim convention: 256 levels in [−1, 1] → log2(127.5) bits.
    assert L.bits_per_dim(0.0, levels=256) == pytest.approx(math.log2(127.5))
    assert L.bits_per_dim(0.0, levels=256, data_range=(0.0, 1.0)) == pytest.approx(math.log2(255))


def test_dequantize_cells() -> None:
    x = torch.linspace(-1, 1, 17).repeat(200, 1)
    y = L.dequantize(x, levels=17, generator=_gen(8))
    assert float((y - x).abs().max()) <= 1 / 16 + 1e-7
    assert float((y - x).mean()) == pytest.approx(0.0, abs=4 * (1 / 8) / math.sqrt(12 * 3400))


# ---------------------------------------------------------------------------- validation


def _one_sentence(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg.endswith(".") and "\n" not in msg, msg
    return msg


VP = P.vp()
MODEL = ExactGaussianScore(VP, SIGMA2)
X = torch.zeros(4, 2, dtype=F64)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: L.negative_log_likelihood(MODEL, VP, X, divergence="x"), "valid choices are"),
        (lambda: L.negative_log_likelihood(MODEL, VP, X, rtol=0.0), "rtol must be a finite"),
        (lambda: L.negative_log_likelihood(MODEL, VP, X, n_aux=0), "n_aux must be an integer"),
        (lambda: L.negative_log_likelihood(MODEL, VP, torch.zeros(4)), "at least 2 axes"),
        (lambda: L.negative_log_likelihood(MODEL, VP, X + math.nan), "x must be finite"),
        (lambda: L.negative_log_likelihood(MODEL, "vp", X), "process must be a LinearProcess"),
        (lambda: L.negative_log_likelihood(MODEL, P.hamiltonian(), X), "has no noisy blocks"),
        (lambda: L.ode_log_density(MODEL, VP, torch.zeros(4, 2, 2)), "z must be shaped"),
        (lambda: L.dequantize(X + 0.01, levels=17), "x is not quantised to 17 levels"),
        (lambda: L.dequantize(X, levels=1), "levels must be an integer ≥ 2"),
        (lambda: L.bits_per_dim(1.0, data_range=(1.0, -1.0)), "low < high"),
        (lambda: L.auxiliary_law(VP), "has no auxiliary variables"),
    ],
)
def test_validation_messages(call, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        call()
    assert fragment in _one_sentence(exc)
