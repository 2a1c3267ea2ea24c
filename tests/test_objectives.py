"""Objectives: unbiasedness against the analytic irreducible loss of the exact Gaussian score,
parameterisation consistency, and validation."""

from __future__ import annotations

import math

import pytest
import torch

from phasediff import objectives as O
from phasediff import processes as P
from tests.gaussian import ExactGaussianScore


def analytic_irreducible(process, t, sigma2, weighting, hybrid=True):
    """E(ŝ − s*)ᵀW(ŝ − s*) for ŝ the exact score = tr(W (C⁻¹ − Σ_d⁻¹)_nn)/m per coordinate,
    C the conditional covariance (HSM: Σ_t, DSM: N), Σ_d the data marginal covariance."""
    t = torch.tensor([t], dtype=torch.float64)
    n = list(process.noisy_blocks)
    m = len(n)
    E, S = process.kernel(t)
    e = E[:, :, 0]
    cov_data = S + sigma2 * e[:, :, None] * e[:, None, :]
    cond = S if hybrid else process.kernel(t, s=torch.zeros_like(t))[1]
    L = process.factor(cond)
    U = process.noisy_score_factor(L)[0]
    gap = (torch.linalg.inv(cond) - torch.linalg.inv(cov_data))[0][n][:, n]
    if weighting == "eps":
        W = torch.linalg.inv(U @ U.T)
    elif weighting == "score":
        W = torch.eye(m, dtype=torch.float64)
    elif weighting == "cld":
        W = torch.eye(m, dtype=torch.float64) / (U.pow(2).sum() / m)
    else:
        W = process.beta(t)[0] * process.D[n][:, n]
    return float(torch.trace(W @ gap)) / m


CASES = [
    ("vp", "eps", 0.3),
    ("cld", "eps", 0.2),
    ("cld", "likelihood", 0.05),
    ("psld", "score", 0.4),
    ("psld", "cld", 0.4),
    ("hold", "eps", 0.3),
    ("hold", "likelihood", 0.6),
    ("critical4", "eps", 0.5),
]


def _process(name):
    return P.critical(4) if name == "critical4" else P.get_process(name)


@pytest.mark.parametrize("hybrid", [True, False], ids=["hsm", "dsm"])
@pytest.mark.parametrize("name, weighting, t", CASES)
def test_exact_score_reaches_the_irreducible_loss(name, weighting, t, hybrid):
    process = _process(name)
    sigma2 = 0.5
    model = ExactGaussianScore(process, sigma2)
    gen = torch.Generator().manual_seed(0)
    x0 = math.sqrt(sigma2) * torch.randn(256, 400, generator=gen, dtype=torch.float64)
    loss_fn = O.hybrid_score_matching if hybrid else O.denoising_score_matching
    per = loss_fn(model, process, x0, gen, weighting=weighting, t=t, reduce=False)
    expected = analytic_irreducible(process, t, sigma2, weighting, hybrid)
    se = float(per.std()) / math.sqrt(per.numel())
    # Monte-Carlo agreement within 4 standard errors: the objective is unbiased.
    assert abs(float(per.mean()) - expected) <= 4 * se + 1e-12 * abs(expected), (
        float(per.mean()),
        expected,
        se,
    )


def test_a_wrong_score_costs_more():
    """The loss is not flat: a 10 % mis-scaled score pays a clearly larger loss."""
    process = P.hold()
    exact = ExactGaussianScore(process, 0.5)

    class Scaled(torch.nn.Module):
        parameterization = "score"

        def forward(self, z, t):
            return 1.1 * exact(z, t)

    gen = torch.Generator().manual_seed(3)
    x0 = math.sqrt(0.5) * torch.randn(256, 400, generator=gen, dtype=torch.float64)
    a = O.hybrid_score_matching(exact, process, x0, torch.Generator().manual_seed(1), t=0.3)
    b = O.hybrid_score_matching(Scaled(), process, x0, torch.Generator().manual_seed(1), t=0.3)
    assert float(b) > float(a) * 1.01


class EpsNet(torch.nn.Module):
    parameterization = "eps"

    def __init__(self, k, m, d):
        super().__init__()
        self.m, self.d = m, d
        self.net = torch.nn.Sequential(
            torch.nn.Linear(k * d + 1, 32), torch.nn.SiLU(), torch.nn.Linear(32, m * d)
        )

    def forward(self, z, t):
        h = torch.cat([z.reshape(z.shape[0], -1), t[:, None].to(z.dtype)], 1)
        return self.net(h).reshape(z.shape[0], self.m, self.d)


class AsScore(torch.nn.Module):
    """The same function as an ε-model, expressed as a score model: ŝ = −U(t) ε̂."""

    parameterization = "score"

    def __init__(self, inner, process):
        super().__init__()
        self.inner, self.process = inner, process

    def forward(self, z, t):
        return O.score_from_output(self.process, self.inner, z, t, self.inner(z, t))


@pytest.mark.parametrize("name", ["cld", "psld", "hold"])
@pytest.mark.parametrize("weighting", ["eps", "likelihood", "score"])
def test_eps_and_score_parameterisations_give_the_same_gradient(name, weighting):
    process = P.get_process(name)
    m = len(process.noisy_blocks)
    torch.manual_seed(0)
    net = EpsNet(process.k, m, 2).double()
    x0 = torch.randn(64, 2, dtype=torch.float64)
    losses, grads = [], []
    for model in (net, AsScore(net, process)):
        net.zero_grad()
        loss = O.hybrid_score_matching(
            model, process, x0, torch.Generator().manual_seed(5), weighting=weighting
        )
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert float(cos) > 1 - 1e-9
    assert torch.allclose(grads[0], grads[1], rtol=1e-7, atol=1e-12)


def test_objective_validation():
    process = P.cld()
    net = EpsNet(2, 1, 2)
    x0 = torch.randn(8, 2)
    with pytest.raises(ValueError, match="valid weightings are: eps, score, likelihood, cld"):
        O.hybrid_score_matching(net, process, x0, weighting="elbo")
    with pytest.raises(ValueError, match="valid objectives are: dsm, hsm"):
        O.get_objective("bcsm2")
    with pytest.raises(ValueError, match="no noisy blocks"):
        O.hybrid_score_matching(net, P.hamiltonian(), x0)
    bad = EpsNet(2, 2, 2)  # predicts two blocks for a process with one noisy block
    with pytest.raises(ValueError, match=r"model output must have shape \(8, 1, 2\)"):
        O.hybrid_score_matching(bad, process, x0)
    net.parameterization = "velocity"
    with pytest.raises(ValueError, match="model.parameterization must be one of eps, score"):
        O.hybrid_score_matching(net, process, x0)


def test_marginal_memo_returns_the_fresh_answer_and_never_a_stale_one():
    """A batched marginal is remembered (a training step asks for it twice), but only for the
    same times: a second process built alike, without a memo, is the independent answer."""
    process, fresh = P.get_process("hold"), P.get_process("hold")
    t = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = process.t_min + t * (process.T - process.t_min)
    first = process.marginal(t)
    again = process.marginal(t.clone())
    assert all(a is b for a, b in zip(first, again, strict=True))  # the memo answered
    other = t.flip(0)  # same shape, other values: must be recomputed
    for got, want in zip(process.marginal(other), fresh.marginal(other), strict=True):
        assert torch.equal(got, want)


def test_the_batch_is_noised_at_the_times_the_model_is_told():
    """The objective rounds its float64 training times to the data's dtype once, so the
    perturbation's kernel and the model's t are the same numbers (and the model's own marginal
    of t is the memo's). Without the rounding the model would see float32(t) ≠ t."""
    process = P.get_process("cld")
    seen: dict[str, torch.Tensor] = {}
    sample_marginal = process.sample_marginal

    def spy_sample(x0, t, **kw):
        seen["noised"] = torch.as_tensor(t, dtype=torch.float64).clone()
        return sample_marginal(x0, t, **kw)

    process.sample_marginal = spy_sample

    class Spy(torch.nn.Module):
        parameterization = "eps"

        def forward(self, z, t):
            seen["dtype"] = t.dtype
            seen["told"] = t.to(torch.float64).clone()
            return torch.zeros(z.shape[0], 1, *z.shape[2:], dtype=z.dtype)

    x0 = torch.randn(128, 2, generator=torch.Generator().manual_seed(1))
    O.hybrid_score_matching(Spy(), process, x0, torch.Generator().manual_seed(2))
    assert seen["dtype"] == x0.dtype  # the model is told t in the data's dtype, as before
    assert torch.equal(seen["noised"], seen["told"])
