"""Critical damping for a Langevin chain of any order (derivation: docs/processes.md).

In the normalised frame (S = I) a k-th order chain has drift

    Ã = [[0,  c₁,            ],
         [−c₁, 0,  c₂,       ],
         [     ⋱   ⋱   ⋱    ],
         [         −c_{k−1}, −ξ]],

whose characteristic polynomial obeys the three-term recursion P₀ = 1, P₁ = λ,
P_j = λP_{j−1} + c²_{j−1}P_{j−2} (j < k) and P_k = (λ + ξ)P_{k−1} + c²_{k−1}P_{k−2}.
The P_j with j < k have the parity of j, so splitting the target p(λ) = (λ + r)^k into its
parts of parity k−1 and k reads off ξ and P_{k−1}; every later step is a polynomial division
(a Routh / Stieltjes continued fraction). The c_j² come out as positive rationals for any
Hurwitz target, so the computation below is done exactly with `fractions.Fraction`.
"""

from __future__ import annotations

import math
from fractions import Fraction

Poly = list[Fraction]  # ascending coefficients


def _lead(p: Poly, degree: int) -> Fraction:
    return p[degree] if degree < len(p) else Fraction(0)


def _shift(p: Poly) -> Poly:  # λ·p
    return [Fraction(0), *p]


def _sub(p: Poly, q: Poly) -> Poly:
    n = max(len(p), len(q))
    return [_lead(p, i) - _lead(q, i) for i in range(n)]


def chain_from_polynomial(coeffs: list[Fraction]) -> tuple[list[Fraction], Fraction]:
    """Chain parameters (c₁², …, c²_{k−1}), ξ whose Ã has characteristic polynomial `coeffs`.

    `coeffs` are ascending and monic of degree k ≥ 1. Raises ValueError when the polynomial is
    not realisable with positive couplings (i.e. it is not Hurwitz).
    """
    k = len(coeffs) - 1
    if k < 1 or coeffs[-1] != 1:
        raise ValueError("the target polynomial must be monic of degree ≥ 1.")
    odd_part = [c if (i % 2) != (k % 2) else Fraction(0) for i, c in enumerate(coeffs)]
    even_part = [c if (i % 2) == (k % 2) else Fraction(0) for i, c in enumerate(coeffs)]
    xi = _lead(odd_part, k - 1)
    if xi <= 0:
        raise ValueError("the target polynomial is not Hurwitz: the friction would be ≤ 0.")
    p_hi = [c / xi for c in odd_part[:k]]  # P_{k−1}
    remainder = _sub(even_part, _shift(p_hi))  # c²_{k−1} P_{k−2}
    couplings_sq: list[Fraction] = []
    for j in range(k - 1, 0, -1):  # find c_j² and P_{j−1}
        c_sq = _lead(remainder, j - 1)
        if c_sq <= 0:
            raise ValueError("the target polynomial is not Hurwitz: a coupling² would be ≤ 0.")
        p_lo = [c / c_sq for c in remainder[:j]]
        couplings_sq.append(c_sq)
        remainder = _sub(p_hi, _shift(p_lo))  # next: c²_{j−1} P_{j−2}
        p_hi = p_lo
    if any(c != 0 for c in remainder) and k > 1:
        raise ValueError("the target polynomial is not realisable by a Langevin chain.")
    couplings_sq.reverse()
    return couplings_sq, xi


def critical_chain(k: int, rate: float) -> tuple[list[float], float]:
    """Normalised couplings c_j and friction ξ so that Ã has the single eigenvalue −rate.

    Exact rational arithmetic on (λ + rate)^k; k = 2 gives c = rate, ξ = 2·rate (CLD's
    Γ² = 4M after un-normalising).
    """
    r = Fraction(float(rate))
    coeffs = [Fraction(math.comb(k, i)) * r ** (k - i) for i in range(k + 1)]
    couplings_sq, xi = chain_from_polynomial(coeffs)
    return [math.sqrt(c) for c in couplings_sq], float(xi)
