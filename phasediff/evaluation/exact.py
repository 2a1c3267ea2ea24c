"""Exact scores of Gaussian-mixture data, as a model on the contract ``model(z, t)``.

For data p₀ = Σ_i w_i N(μ_i, s_i² I_d), the forward kernel z_t | x₀ ~ N(e_t x₀, Σ_t ⊗ I)
(auxiliaries marginalised from their initial law) makes every marginal a mixture too:

    p_t(z) = Σ_i w_i N(z; e_t ⊗ μ_i, C_{i,t} ⊗ I),     C_{i,t} = Σ_t + s_i² e_t e_tᵀ,

so ∇log p_t(z) = −Σ_i r_i(z) (C_{i,t}⁻¹ ⊗ I)(z − e_t ⊗ μ_i) with responsibilities r_i ∝
w_i N(z; e_t ⊗ μ_i, C_{i,t} ⊗ I). ``MixtureScore`` returns that score on the process's noisy
blocks (``parameterization = "score"``), so every sampler and the likelihood code can run
without a trained network. With the points of a data set as μ_i and a small shared s it is
the exact score of the smoothed empirical distribution (what a network that memorised its
training set would learn): used for figures that need no training.
"""

from __future__ import annotations

import math

import torch

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.validation import check_int

__all__ = ["MixtureScore"]


class MixtureScore(torch.nn.Module):
    """Exact marginal score on the noisy blocks for Σ_i w_i N(μ_i, s_i² I) data (module doc).

    means: (K, d); stds: one number or K numbers > 0; weights: K numbers ≥ 0 (uniform by
    default, normalised). Works for vector data (B, k, d); computations run in float64 in
    chunks of ``chunk`` components (memory O(B · chunk · k · d)).
    """

    parameterization = "score"

    def __init__(
        self,
        process: LinearProcess,
        means: torch.Tensor,
        stds: float | torch.Tensor,
        weights: torch.Tensor | None = None,
        *,
        chunk: int = 512,
    ) -> None:
        super().__init__()
        if not isinstance(process, LinearProcess):
            raise ValueError(f"process must be a LinearProcess, got {type(process).__name__}.")
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2 or means.shape[0] < 1 or not torch.isfinite(means).all():
            raise ValueError(
                f"means must be a finite (K ≥ 1, d) tensor, got shape {tuple(means.shape)}."
            )
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)
        if stds.numel() == 1:
            stds = stds.expand(K)
        if stds.shape != (K,) or not (torch.isfinite(stds).all() and (stds > 0).all()):
            raise ValueError(f"stds must be one number or {K} numbers, all finite and > 0.")
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else weights
        w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
        if w.shape != (K,) or not (torch.isfinite(w).all() and (w >= 0).all()) or w.sum() <= 0:
            raise ValueError(f"weights must be {K} finite numbers ≥ 0 with a positive sum.")
        chunk = check_int(chunk, "chunk")
        keep = w > 0  # zero-weight components never contribute
        self.process = process
        self.means = means[keep]
        self.var = stds[keep].square()
        self.log_w = torch.log(w[keep] / w.sum())
        self.shared = bool((self.var == self.var[0]).all())
        self.chunk = chunk

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.process
        if z.ndim != 3 or z.shape[1] != p.k or z.shape[2] != self.means.shape[1]:
            raise ValueError(
                f"z must be shaped (batch, {p.k}, {self.means.shape[1]}), got {tuple(z.shape)}."
            )
        t64 = t.to(torch.float64).reshape(-1).expand(z.shape[0]).cpu()
        E, S = p.kernel(t64)
        e = E[:, :, 0]  # (B, k)
        eeT = e[:, :, None] * e[:, None, :]
        z64 = z.to(device="cpu", dtype=torch.float64)  # differentiable: likelihoods need ∂s/∂z
        if self.shared:
            score = self._shared_score(z64, e, S + self.var[0] * eeT)
        else:
            score = self._general_score(z64, e, S, eeT)
        out = score[:, list(p.noisy_blocks)]
        return out.to(device=z.device, dtype=z.dtype)

    def _shared_score(self, z: torch.Tensor, e: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """One covariance C for every component: with u = eᵀC⁻¹z (B, d) and c = eᵀC⁻¹e,
        log r_i = log w_i + u·μ_i − ½ c |μ_i|² + const, and the score is
        −C⁻¹z + (C⁻¹e) ⊗ Σ_i r_i μ_i: one (B, K) matrix product, no (B, K, k, d) tensor."""
        Cinv = torch.linalg.inv(C)  # (B, k, k)
        Cinv_e = torch.einsum("bij,bj->bi", Cinv, e)  # (B, k)
        u = torch.einsum("bi,bid->bd", Cinv_e, z)  # C symmetric: eᵀC⁻¹z = (C⁻¹e)ᵀz
        c = (Cinv_e * e).sum(dim=1)  # (B,)
        mean_bar = torch.zeros(z.shape[0], z.shape[2], dtype=torch.float64)
        m = torch.full((z.shape[0],), -math.inf, dtype=torch.float64)
        norm = torch.zeros(z.shape[0], dtype=torch.float64)
        chunk = max(self.chunk, 4096)
        for start in range(0, self.means.shape[0], chunk):
            mu = self.means[start : start + chunk]
            logit = (
                self.log_w[start : start + chunk]
                + u @ mu.T
                - 0.5 * c[:, None] * mu.square().sum(dim=1)[None]
            )
            m_new = torch.maximum(m, logit.max(dim=1).values)
            rescale = torch.exp(m - m_new)
            w = torch.exp(logit - m_new[:, None])
            norm = norm * rescale + w.sum(dim=1)
            mean_bar = mean_bar * rescale[:, None] + w @ mu
            m = m_new
        mean_bar = mean_bar / norm[:, None]
        return -apply_blocks(Cinv, z) + Cinv_e[:, :, None] * mean_bar[:, None, :]

    def _general_score(
        self, z64: torch.Tensor, e: torch.Tensor, S: torch.Tensor, eeT: torch.Tensor
    ) -> torch.Tensor:
        """Per-component covariances C_i = Σ_t + s_i² e eᵀ, streamed over chunks."""
        d = z64.shape[2]
        B = z64.shape[0]
        # Streaming softmax over chunks of components: running max m, normaliser s and
        # responsibility-weighted sum acc of C_i⁻¹(z − e μ_i), so memory stays O(B·chunk·k·d).
        m = torch.full((B,), -math.inf, dtype=torch.float64)
        norm = torch.zeros(B, dtype=torch.float64)
        acc = torch.zeros_like(z64)
        for start in range(0, self.means.shape[0], self.chunk):
            mu = self.means[start : start + self.chunk]  # (c, d)
            var = self.var[start : start + self.chunk]
            diff = z64[:, None] - e[:, None, :, None] * mu[None, :, None, :]  # (B, c, k, d)
            C = S[:, None] + var[None, :, None, None] * eeT[:, None]  # (B, c, k, k)
            sol = torch.einsum("bcij,bcjd->bcid", torch.linalg.inv(C), diff)
            logdet = torch.linalg.slogdet(C)[1]
            quad = (diff * sol).sum(dim=(2, 3))
            logit = self.log_w[start : start + self.chunk] - 0.5 * quad - 0.5 * d * logdet
            m_new = torch.maximum(m, logit.max(dim=1).values)
            rescale = torch.exp(m - m_new)
            w = torch.exp(logit - m_new[:, None])
            norm = norm * rescale + w.sum(dim=1)
            acc = acc * rescale[:, None, None] + torch.einsum("bc,bcid->bid", w, sol)
            m = m_new
        return -acc / norm[:, None, None]

    def log_density_x0(self, x: torch.Tensor) -> torch.Tensor:
        """log p₀(x) of the mixture itself, per row of x (n, d) (for checks)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        d = x.shape[1]
        sq = torch.cdist(x, self.means).square()  # (n, K)
        comp = -0.5 * sq / self.var - 0.5 * d * torch.log(2 * math.pi * self.var)
        return torch.logsumexp(self.log_w + comp, dim=1)
