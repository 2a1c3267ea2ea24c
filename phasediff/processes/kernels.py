"""Exact transition kernels of linear SDEs on the integrated clock (SPEC §1).

For dz = A z db + G dW_b with G Gᵀ = 2D (b the integrated time B(s, t)), the transition from
z_s is Gaussian with mean map E(b) = exp(bA) and added covariance

    N(b) = ∫_0^b exp(τA) 2D exp(τAᵀ) dτ.

`transition_kernel` computes both for a batch of b by scaling and squaring, applied to the
*pair* (E, N) — the covariance analogue of the matrix-exponential algorithm:

    E(2h) = E(h)²,      N(2h) = N(h) + E(h) N(h) E(h)ᵀ,

starting from Taylor series at h = b/2ⁿ with ‖hA‖ ≤ ½. This is algebraically the same as
Van Loan's block exponential of [[A, 2D], [0, −Aᵀ]] but (i) only ever adds positive
semi-definite terms, so the tiny covariance of noise-free blocks near t = 0 (∝ b^(2k−1) for a
k-th order chain) keeps its relative accuracy instead of drowning in cancellation, and (ii)
never forms exp(+bAᵀ), so it cannot overflow for long horizons. Everything is k×k float64.
"""

from __future__ import annotations

import math

import torch

# Taylor order and the norm bound ‖hA‖₁ ≤ THETA used before squaring:
# THETA^(ORDER+1)/(ORDER+1)! ≈ 3e-21, far below float64 epsilon, and the largest term
# THETA^m/m! stays ≤ 2, so the series loses at most a few ulps to cancellation.
_THETA = 2.0
_ORDER = 26


class LinearFlow:
    """Exact transition (E, N) of dz = A z db + G dW_b, GGᵀ = 2D, for batches of b ≥ 0.

    The Taylor coefficients A^m/m! and C_m/(m+1)! are computed once here, so a call costs one
    (batch × ORDER) @ (ORDER × 2k²) product plus log₂(‖A‖·max b) squarings of k×k batches.
    """

    def __init__(self, A: torch.Tensor, D: torch.Tensor) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        D = torch.as_tensor(D, dtype=torch.float64, device=A.device)
        self.k = k = A.shape[-1]
        self.norm = float(torch.linalg.matrix_norm(A, ord=1))
        eye = torch.eye(k, dtype=torch.float64, device=A.device)
        coeffs = []
        power, C, fact = eye, 2.0 * D, 1.0  # A^m, C_m, m!
        for m in range(_ORDER + 1):
            # E ∋ h^m A^m/m!,  N ∋ h^(m+1) C_m/(m+1)!  (C_0 = 2D, C_m = A C_{m−1} + C_{m−1} Aᵀ)
            coeffs.append(torch.cat([(power / fact).reshape(-1), (C / (fact * (m + 1))).reshape(-1)]))
            power = power @ A
            C = A @ C + C @ A.T
            fact *= m + 1
        self._coeffs = torch.stack(coeffs)  # (ORDER+1, 2k²): row m multiplies h^m

    def __call__(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = torch.as_tensor(b, dtype=torch.float64, device=self._coeffs.device)
        if bool((b < 0).any()):
            raise ValueError("the integrated time b must be ≥ 0 (forward transitions only).")
        shape, k = b.shape, self.k
        b = b.reshape(-1)
        bmax = float(b.max()) if b.numel() else 0.0
        x = self.norm * bmax / _THETA
        squarings = max(0, math.ceil(math.log2(x))) if x > 1 else 0
        h = b / 2.0**squarings
        powers = torch.ones(h.numel(), _ORDER + 1, dtype=torch.float64, device=h.device)
        powers[:, 1:] = torch.cumprod(h[:, None].expand(-1, _ORDER), dim=1)  # h^m
        series = powers @ self._coeffs  # (batch, 2k²)
        E = series[:, : k * k].reshape(-1, k, k)
        N = (h[:, None] * series[:, k * k :]).reshape(-1, k, k)
        for _ in range(squarings):
            N = torch.baddbmm(N, torch.bmm(E, N), E.transpose(-1, -2))
            E = torch.bmm(E, E)
        N = 0.5 * (N + N.transpose(-1, -2))
        return E.reshape(*shape, k, k), N.reshape(*shape, k, k)


def transition_kernel(
    A: torch.Tensor, D: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (E, N), each shaped (*b.shape, k, k): exp(bA) and ∫_0^b e^{τA} 2D e^{τAᵀ} dτ.

    `A`, `D` are k×k, `b` ≥ 0 a tensor of integrated times; computed in float64. For repeated
    calls with the same matrices keep a `LinearFlow(A, D)` instead.
    """
    return LinearFlow(A, D)(b)


def van_loan(
    A: torch.Tensor, D: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation through Van Loan's block exponential (SPEC §1).

    exp(b [[A, 2D], [0, −Aᵀ]]) = [[E, X], [0, E⁻ᵀ]] and N = X Eᵀ. Used in tests to cross-check
    `transition_kernel`; unsuitable for large b (E⁻ᵀ grows like exp(b·|λ|)).
    """
    A = A.to(torch.float64)
    k = A.shape[-1]
    b = torch.as_tensor(b, dtype=torch.float64, device=A.device)
    block = torch.zeros(2 * k, 2 * k, dtype=torch.float64, device=A.device)
    block[:k, :k] = A
    block[:k, k:] = 2.0 * D.to(A)
    block[k:, k:] = -A.T
    F = torch.linalg.matrix_exp(b[..., None, None] * block)
    E = F[..., :k, :k]
    N = F[..., :k, k:] @ E.transpose(-1, -2)
    return E, 0.5 * (N + N.transpose(-1, -2))
