"""Exact transition kernels of linear SDEs on the integrated clock (docs/design.md §1).

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

    The Taylor coefficients A^m/m! and C_m/(m+1)! are computed once here. Given a `horizon`
    (the largest b a process uses, B(0, T)), the pairs (E, N) at the grid b_j = jΔ with
    ‖A‖Δ ≤ THETA are tabulated once too (by doubling), and a call for b = jΔ + r only needs
    the Taylor series at r and the semigroup step

        E(b) = E(r) E(b_j),      N(b) = E(r) N(b_j) E(r)ᵀ + N(r),

    which is exact (no interpolation). Beyond the horizon, scaling and squaring is used.
    """

    _MAX_TABLE = 4096

    def __init__(self, A: torch.Tensor, D: torch.Tensor, horizon: float | None = None) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        D = torch.as_tensor(D, dtype=torch.float64, device=A.device)
        self.k = k = A.shape[-1]
        self.norm = float(torch.linalg.matrix_norm(A, ord=1))
        eye = torch.eye(k, dtype=torch.float64, device=A.device)
        coeffs = []
        power, C, fact = eye, 2.0 * D, 1.0  # A^m, C_m, m!
        for m in range(_ORDER + 1):
            # E ∋ h^m A^m/m!,  N ∋ h^(m+1) C_m/(m+1)!  (C_0 = 2D, C_m = A C_{m−1} + C_{m−1} Aᵀ)
            coeffs.append(
                torch.cat([(power / fact).reshape(-1), (C / (fact * (m + 1))).reshape(-1)])
            )
            power = power @ A
            C = A @ C + C @ A.T
            fact *= m + 1
        self._coeffs = torch.stack(coeffs)  # (ORDER+1, 2k²): row m multiplies h^m
        self._table = None
        if horizon is not None and self.norm > 0 and math.isfinite(horizon) and horizon > 0:
            steps = math.ceil(horizon * self.norm / _THETA)
            if steps <= self._MAX_TABLE:
                self.delta = horizon / steps if steps else horizon
                grid = torch.arange(steps + 1, dtype=torch.float64, device=A.device) * self.delta
                self.horizon = float(grid[-1])
                self._table = self._doubling(grid)

    def _taylor(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        powers = torch.ones(h.numel(), _ORDER + 1, dtype=torch.float64, device=h.device)
        powers[:, 1:] = torch.cumprod(h[:, None].expand(-1, _ORDER), dim=1)  # h^m
        series = powers @ self._coeffs  # (batch, 2k²)
        E = series[:, : k * k].reshape(-1, k, k)
        N = (h[:, None] * series[:, k * k :]).reshape(-1, k, k)
        return E, N

    def _doubling(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bmax = float(b.max()) if b.numel() else 0.0
        x = self.norm * bmax / _THETA
        squarings = max(0, math.ceil(math.log2(x))) if x > 1 else 0
        E, N = self._taylor(b / 2.0**squarings)
        for _ in range(squarings):
            N = torch.baddbmm(N, torch.bmm(E, N), E.transpose(-1, -2))
            E = torch.bmm(E, E)
        return E, N

    def __call__(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = torch.as_tensor(b, dtype=torch.float64, device=self._coeffs.device)
        if bool((b < 0).any()):
            raise ValueError("the integrated time b must be ≥ 0 (forward transitions only).")
        shape, k = b.shape, self.k
        b = b.reshape(-1)
        if self._table is not None and b.numel() and float(b.max()) <= self.horizon:
            j = torch.clamp((b / self.delta).floor().long(), 0, self._table[0].shape[0] - 1)
            Er, Nr = self._taylor(b - j.to(torch.float64) * self.delta)
            Ej, Nj = self._table[0][j], self._table[1][j]
            E = torch.bmm(Er, Ej)
            N = torch.baddbmm(Nr, torch.bmm(Er, Nj), Er.transpose(-1, -2))
        else:
            E, N = self._doubling(b)
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
    """Reference implementation through Van Loan's block exponential (docs/design.md §1).

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
