"""Exact scores of Gaussian data through the kernel: an independent reference 'network'."""

from __future__ import annotations

import torch

from phasediff import processes as P
from phasediff.processes import apply_blocks


class ExactGaussianScore(torch.nn.Module):
    """The exact marginal score on the noisy blocks for data N(0, σ²I):
    p_t = N(0, Σ_t + σ² e eᵀ) with e = E[:, 0] (independent of the objective code)."""

    parameterization = "score"

    def __init__(self, process: P.LinearProcess, sigma2: float):
        super().__init__()
        self.process, self.sigma2 = process, sigma2

    def forward(self, z, t):
        E, S = self.process.kernel(t.to(torch.float64))
        e = E[:, :, 0]
        cov = S + self.sigma2 * e[:, :, None] * e[:, None, :]
        score = -apply_blocks(torch.linalg.inv(cov).to(z.dtype), z)
        return score[:, list(self.process.noisy_blocks)]


class ExactMixtureScore(torch.nn.Module):
    """Exact marginal score on the noisy blocks for an isotropic Gaussian mixture
    Σ_i w_i N(μ_i, s² I) in d dimensions, through the kernel: component i is
    N(e ⊗ μ_i, (Σ_t + s² e eᵀ) ⊗ I) with e = E[:, 0]."""

    parameterization = "score"

    def __init__(self, process: P.LinearProcess, means, std: float, weights=None):
        super().__init__()
        self.process = process
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, d)
        K = self.means.shape[0]
        w = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights)
        self.log_w = torch.log(w.to(torch.float64))
        self.var = std**2

    def forward(self, z, t):
        p = self.process
        E, S = p.kernel(t.to(torch.float64))
        e = E[:, :, 0]  # (B, k)
        C = S + self.var * e[:, :, None] * e[:, None, :]
        Cinv = torch.linalg.inv(C)  # (B, k, k)
        z64 = z.to(torch.float64)  # (B, k, d)
        diff = z64[:, None] - e[:, None, :, None] * self.means[None, :, None, :]  # (B, K, k, d)
        sol = torch.einsum("bij,bKjd->bKid", Cinv, diff)
        logp = self.log_w - 0.5 * (diff * sol).sum((2, 3))
        r = torch.softmax(logp, dim=1)  # responsibilities (B, K)
        score = -(r[:, :, None, None] * sol).sum(1)  # (B, k, d)
        return score[:, list(p.noisy_blocks)].to(z.dtype)
