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
