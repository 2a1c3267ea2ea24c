"""critical(k): A has the single eigenvalue −rate (multiplicity k), derived exactly."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import pytest
import torch

from phasediff import processes as P
from phasediff.processes.critical import chain_from_polynomial


def charpoly_of_chain(c_sq: list[Fraction], xi: Fraction) -> list[Fraction]:
    """Characteristic polynomial of the normalised chain, by its three-term recursion."""
    k = len(c_sq) + 1
    polys = [[Fraction(1)], [Fraction(0), Fraction(1)]]  # P0, P1 (ascending)
    if k == 1:
        return [xi, Fraction(1)]
    for j in range(2, k + 1):
        lam = [Fraction(0), *polys[j - 1]]
        if j == k:  # (λ + ξ) P_{k−1}
            lam = [a + xi * b for a, b in zip(lam, [*polys[j - 1], Fraction(0)], strict=True)]
        prev = polys[j - 2] + [Fraction(0)] * (len(lam) - len(polys[j - 2]))
        polys.append([a + c_sq[j - 2] * b for a, b in zip(lam, prev, strict=True)])
    return polys[k]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("rate", [1.0, 2.0, 0.75])
def test_characteristic_polynomial_is_exact(k, rate):
    r = Fraction(rate)
    target = [Fraction(math.comb(k, i)) * r ** (k - i) for i in range(k + 1)]
    c_sq, xi = chain_from_polynomial(target)
    assert all(c > 0 for c in c_sq) and xi > 0
    assert charpoly_of_chain(c_sq, xi) == target  # exact rational equality


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_eigenvalues_equal_minus_rate_in_high_precision(k):
    """Eigenvalues of the exact chain (couplings √(c²) with 60 digits) equal −rate to 1e-6.

    A k-fold defective eigenvalue moves by ~δ^(1/k) under a perturbation δ, so float64
    eigensolvers can only locate it to ~(1e-16)^(1/k) (2e-3 for k = 6); with 60 digits the
    spread is ~1e-10, far inside the 1e-6 asked for.
    """
    rate = 2.0
    r = Fraction(rate)
    target = [Fraction(math.comb(k, i)) * r ** (k - i) for i in range(k + 1)]
    c_sq, xi = chain_from_polynomial(target)
    with mpmath.workdps(60):
        A = mpmath.zeros(k, k)
        for j, c in enumerate(c_sq):
            cj = mpmath.sqrt(mpmath.mpf(c.numerator) / c.denominator)
            A[j, j + 1], A[j + 1, j] = cj, -cj
        A[k - 1, k - 1] = -mpmath.mpf(xi.numerator) / xi.denominator
        eigenvalues = mpmath.eig(A, left=False, right=False)
        assert max(abs(ev + rate) for ev in eigenvalues) < 1e-6


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("masses", [None, "random"])
def test_float_matrix_is_critical(k, masses):
    """The float64 drift: (A + rI)^k vanishes (all eigenvalues are −r), the trace is −k·r,
    and float eigenvalues sit within the ε^(1/k) perturbation radius of −r."""
    rate = 2.0
    m = None if masses is None else [0.25 + 0.5 * j for j in range(k - 1)]
    p = P.critical(k, rate, masses=m)
    p.stationary_check()
    Ar = p.A + rate * torch.eye(k, dtype=torch.float64)
    nil = torch.linalg.matrix_power(Ar, k)
    # entries of (A + rI)^k are sums of products of k entries of size ≲ k·rate
    assert float(nil.abs().max()) < 1e-12 * (k * rate) ** k
    assert math.isclose(float(torch.trace(p.A)), -k * rate, rel_tol=1e-12)
    ev = torch.linalg.eigvals(p.A)
    radius = 10 * rate * (1e-15) ** (1 / k)
    assert float((ev + rate).abs().max()) < radius


def test_critical_two_is_cld():
    """k = 2 reproduces CLD's critical damping Γ² = 4M: critical(2, 1/√M, masses=[M]) = cld(M)."""
    for M in (0.25, 1.0, 0.1):
        a = P.critical(2, rate=1 / math.sqrt(M), masses=[M])
        b = P.cld(M=M)
        for name in ("A", "D", "Q", "S"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-14), name
        assert math.isclose(float(b.D[1, 1]) ** 2, 4 * M, rel_tol=1e-12)


def test_critical_three_closed_form():
    """Hand derivation in docs/processes.md: c₁ = r/√3, c₂ = r√(8/3), ξ = 3r."""
    c, xi = P.critical_chain(3, 1.5)
    assert c == pytest.approx([1.5 / math.sqrt(3), 1.5 * math.sqrt(8 / 3)], rel=1e-14)
    assert xi == pytest.approx(4.5, rel=1e-14)


@pytest.mark.parametrize(
    "coeffs, match",
    [
        ([Fraction(1), Fraction(0), Fraction(1)], "friction"),  # λ² + 1: no damping
        ([Fraction(-1), Fraction(1), Fraction(1)], "coupling"),  # λ² + λ − 1: unstable
        ([Fraction(1), Fraction(2)], "monic"),
    ],
)
def test_non_hurwitz_targets_are_refused(coeffs, match):
    with pytest.raises(ValueError, match=match):
        chain_from_polynomial(coeffs)
