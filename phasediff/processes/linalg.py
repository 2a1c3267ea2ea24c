"""Eigen-based roots of positive semi-definite matrices: the one copy the package uses.

Noise covariances of the augmented processes are often singular (noise-free blocks, D of
rank one), so Cholesky does not apply; these helpers go through ``torch.linalg.eigh`` and
clamp the tiny negative eigenvalues of round-off to 0. Each takes one matrix or a batch
(…, k, k) and keeps its dtype. They import nothing of phasediff, so every layer may use them.
"""

from __future__ import annotations

import torch


def symmetric_part(m: torch.Tensor) -> torch.Tensor:
    """½(M + Mᵀ) over the last two axes: drops the round-off asymmetry before ``eigh``."""
    return 0.5 * (m + m.transpose(-1, -2))


def _eigen_root(m: torch.Tensor, symmetrize: bool) -> tuple[torch.Tensor, ...]:
    """(V·diag(√max(λ, 0)), λ, V) from M = V diag(λ) Vᵀ."""
    evals, evecs = torch.linalg.eigh(symmetric_part(m) if symmetrize else m)
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2), evals, evecs


def psd_factor(
    m: torch.Tensor, *, symmetrize: bool = False, return_eigenvalues: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """R = V·diag(√max(λ, 0)) with R Rᵀ = M, for psd M = V diag(λ) Vᵀ (M may be singular).

    ``symmetrize=True`` takes ``symmetric_part(M)`` first (M assembled from products);
    ``return_eigenvalues=True`` returns (R, λ) with λ unclamped."""
    root, evals, _ = _eigen_root(m, symmetrize)
    return (root, evals) if return_eigenvalues else root


def psd_sqrt(m: torch.Tensor, *, symmetrize: bool = True) -> torch.Tensor:
    """The symmetric square root M^{1/2} = V·diag(√max(λ, 0))·Vᵀ of psd M (may be singular);
    M is replaced by ``symmetric_part(M)`` first unless ``symmetrize=False``."""
    root, _, evecs = _eigen_root(m, symmetrize)
    return root @ evecs.transpose(-1, -2)


__all__ = ["psd_factor", "psd_sqrt", "symmetric_part"]
