"""Tests of phasediff.evaluation.metrics: sliced/exact W2, MMD, energy distance, modes, floors.

Statistical checks compare with closed forms for Gaussians. Unless stated otherwise a
tolerance is 4 standard errors (two-sided false-alarm rate 6e-5 for a Gaussian error), the
standard error being either derived in a comment or estimated from independent replicates
(the estimators under test are unbiased, so the replicate mean must sit within 4 SE of the
closed form). Exact identities (translations, couplings, brute force) are checked to 1e-9.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from phasediff.data import MULTI_SWISS_ROLL_CENTERS, sample_toy
from phasediff.evaluation import metrics as M

F64 = torch.float64
N_SE = 4.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gauss(n: int, d: int, mean: float | torch.Tensor, std: float, seed: int) -> torch.Tensor:
    return mean + std * torch.randn(n, d, generator=_gen(seed), dtype=F64)


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _mean_abs_normal(a: float, b: float) -> float:
    """E|N(a, b²)| = b √(2/π) e^{−a²/2b²} + a (1 − 2Φ(−a/b))."""
    return b * math.sqrt(2.0 / math.pi) * math.exp(-(a * a) / (2 * b * b)) + a * (
        1.0 - 2.0 * _phi(-a / b)
    )


def _rbf_mean(mu2: float, var: float, h: float, d: int) -> float:
    """E exp(−|Z|²/2h²) for Z ~ N(μ, var·I_d), |μ|² = mu2.

    Per coordinate, ∫ N(z; μ_i, var) e^{−z²/2h²} dz: completing the square in z gives
    √(h²/(h² + var)) · e^{−μ_i²/(2(h² + var))}; the d coordinates are independent, so
    E k = (h²/(h² + var))^{d/2} · exp(−|μ|²/(2(h² + var))).
    """
    return (h * h / (h * h + var)) ** (d / 2) * math.exp(-mu2 / (2 * (h * h + var)))


def _mmd2_gauss(mu2: float, s1: float, s2: float, h: float, d: int) -> float:
    """RBF MMD² between N(m1, s1²I) and N(m2, s2²I), |m1 − m2|² = mu2.

    MMD² = E k(X, X') + E k(Y, Y') − 2 E k(X, Y) with X − X' ~ N(0, 2s1²I),
    Y − Y' ~ N(0, 2s2²I) and X − Y ~ N(m1 − m2, (s1² + s2²)I), each term by ``_rbf_mean``.
    """
    return (
        _rbf_mean(0.0, 2 * s1 * s1, h, d)
        + _rbf_mean(0.0, 2 * s2 * s2, h, d)
        - 2.0 * _rbf_mean(mu2, s1 * s1 + s2 * s2, h, d)
    )


def _eight_centres() -> torch.Tensor:
    angle = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    return math.sqrt(2.0) * torch.stack((angle.cos(), angle.sin()), dim=1)


def _eight(n: int, seed: int) -> torch.Tensor:
    return sample_toy("8gaussians", n, seed=seed)


FIVE_CENTRES = 1.5 * torch.stack(
    (
        torch.cos(torch.arange(5, dtype=F64) * (2 * math.pi / 5)),
        torch.sin(torch.arange(5, dtype=F64) * (2 * math.pi / 5)),
    ),
    dim=1,
)
FIVE_STD = 0.15  # neighbouring centres are 1.76 = 11.8 stds apart: misassignment ~ 1e-9


def _five(n: int, seed: int, weights: list[float] | None = None, std: float = FIVE_STD):
    """Five-Gaussian mixture on a circle of radius 1.5 (equal weights by default)."""
    g = _gen(seed)
    w = torch.full((5,), 0.2, dtype=F64) if weights is None else torch.tensor(weights, dtype=F64)
    mode = torch.multinomial(w, n, replacement=True, generator=g)
    return FIVE_CENTRES[mode] + std * torch.randn(n, 2, generator=g, dtype=F64)


def _one_sentence(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg.endswith("."), msg
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------- sliced W2


@pytest.mark.parametrize("d", [1, 3])
def test_sliced_w2_gaussian_closed_form(d: int) -> None:
    # Projected on a unit θ, N(m, s²I) becomes N(m·θ, s²), and the 1-D W2² between Gaussians
    # is (Δm·θ)² + (s1 − s2)²; E_θ (Δm·θ)² = |Δm|²/d for θ uniform on the sphere, so
    # SW2² = |Δm|²/d + (s1 − s2)².
    n, s1, s2, L = 20_000, 1.0, 0.7, 2000
    dm = torch.zeros(d, dtype=F64)
    dm[0] = 1.0
    x, y = _gauss(n, d, 0.0, s1, 1), _gauss(n, d, dm, s2, 2)
    expected = 1.0 / d + (s1 - s2) ** 2
    got = M.sliced_w2(x, y, n_projections=L) ** 2
    # Error budget on SW2²: (i) direction MC: (Δm·θ)² = cos²φ-like with std ≤ |Δm|²·√(1/8)
    # (d = 2 value; smaller for d = 3, zero for d = 1), SE ≤ 0.354/√L = 0.008; (ii) the
    # empirical mean difference e ~ N(0, (s1² + s2²)/n · I) enters as 2 Δm·e/d,
    # SE ≤ 2 √(1.49/20000) = 0.017; (iii) the sample stds enter via 2|s1 − s2|·SE(s) ≈ 0.004,
    # plus a positive O(log n / n) bias < 1e-3. Total SE ≤ 0.02: 4 SE = 0.08.
    assert got == pytest.approx(expected, abs=0.08)
    # A missing 1/d (unnormalised directions) or a sum over directions would be far off.
    assert abs(got - expected) < 0.1 * expected + 0.05


def test_sliced_w2_one_dimension_equals_exact_w2() -> None:
    # In 1-D every direction is ±1, and W2 is invariant under x → −x: SW2 = W2 exactly.
    x, y = _gauss(500, 1, 0.0, 1.0, 3), _gauss(500, 1, 0.4, 2.0, 4)
    assert M.sliced_w2(x, y, n_projections=7) == pytest.approx(M.exact_w2(x, y), rel=1e-10)


def test_sliced_w2_unequal_sizes_is_exact() -> None:
    # Repeating every point of x m times and of y n times leaves both empirical measures
    # unchanged, so the quantile-grid value for (n, m) must equal the equal-size value.
    x, y = _gauss(6, 2, 0.0, 1.0, 5), _gauss(10, 2, 0.5, 0.5, 6)
    direct = M.sliced_w2(x, y, n_projections=64, seed=3)
    repeated = M.sliced_w2(
        x.repeat_interleave(10, dim=0), y.repeat_interleave(6, dim=0), n_projections=64, seed=3
    )
    assert direct == pytest.approx(repeated, rel=1e-12)
    # Different sizes drawn from one law: the value is small and symmetric in (x, y).
    a, b = _gauss(3000, 2, 0.0, 1.0, 7), _gauss(1700, 2, 0.0, 1.0, 8)
    assert M.sliced_w2(a, b) == pytest.approx(M.sliced_w2(b, a), rel=1e-12)
    assert M.sliced_w2(a, b) < 0.1


def test_sliced_w2_deterministic_and_seeded() -> None:
    x, y = _gauss(300, 3, 0.0, 1.0, 9), _gauss(300, 3, 1.0, 1.0, 10)
    assert M.sliced_w2(x, y, seed=4) == M.sliced_w2(x, y, seed=4)
    assert M.sliced_w2(x, y, seed=4) != M.sliced_w2(x, y, seed=5)
    # float32 inputs are promoted to float64: same value as float64 copies of them.
    x32, y32 = x.float(), y.float()
    assert M.sliced_w2(x32, y32) == M.sliced_w2(x32.double(), y32.double())
    assert M.sliced_w2(x, x) == 0.0


# ---------------------------------------------------------------------------- exact W2


def test_exact_w2_translation() -> None:
    # W2(x, x + c) = |c| exactly: for any permutation σ, Σ|x_i − x_σ(i) − c|² =
    # Σ|x_i − x_σ(i)|² + n|c|² (the cross term Σ(x_i − x_σ(i)) vanishes), minimal at σ = id.
    x = _gauss(400, 2, 0.0, 1.0, 11)
    c = torch.tensor([0.3, -1.2], dtype=F64)
    perm = torch.randperm(400, generator=_gen(0))
    assert M.exact_w2(x, (x + c)[perm]) == pytest.approx(float(c.norm()), rel=1e-9)


def test_exact_w2_gaussian_coupling_and_closed_form() -> None:
    # x = m1 + s1 z, y = m2 + s2 z (same z): the pairing x_i ↔ y_i is the gradient of a
    # convex function (the Gaussian OT map), hence cyclically monotone and optimal for the
    # empirical measures too, so W2² = (1/n) Σ |Δm − (s1 − s2) z_i|² exactly, whose mean is
    # the closed form |Δm|² + d (s1 − s2)² (E z = 0, E|z|² = d).
    n, d, s1, s2 = 800, 2, 1.0, 0.6
    dm = torch.tensor([1.0, -0.5], dtype=F64)
    z = torch.randn(n, d, generator=_gen(12), dtype=F64)
    x, y = s1 * z, dm + s2 * z
    y = y[torch.randperm(n, generator=_gen(1))]
    w2sq = M.exact_w2(x, y) ** 2
    per_point = (dm - (s1 - s2) * z).square().sum(dim=1)
    assert w2sq == pytest.approx(float(per_point.mean()), rel=1e-9)
    closed = float(dm.square().sum()) + d * (s1 - s2) ** 2
    se = float(per_point.std()) / math.sqrt(n)  # sample mean of iid |Δm − (s1 − s2)z|²
    assert abs(w2sq - closed) < N_SE * se


def test_exact_w2_brute_force() -> None:
    # n = 6: the minimum over all 720 permutations.
    x, y = _gauss(6, 3, 0.0, 1.0, 13), _gauss(6, 3, 0.5, 1.0, 14)
    cost = torch.cdist(x, y).square()
    best = min(float(cost[range(6), list(p)].mean()) for p in itertools.permutations(range(6)))
    assert M.exact_w2(x, y) == pytest.approx(math.sqrt(best), rel=1e-12)


def test_exact_w2_pot_matches_assignment_cross_check() -> None:
    # Equal sizes: the POT transport value must equal the optimal assignment of
    # scipy.optimize.linear_sum_assignment (Birkhoff: some optimal coupling is a permutation).
    from scipy.optimize import linear_sum_assignment

    for n, d, seed in ((300, 2, 31), (150, 5, 32)):
        x, y = _gauss(n, d, 0.0, 1.0, seed), _gauss(n, d, 0.3, 0.8, seed + 100)
        cost = torch.cdist(x, y).square().numpy()
        rows, cols = linear_sum_assignment(cost)
        assert M.exact_w2(x, y) == pytest.approx(math.sqrt(cost[rows, cols].mean()), rel=1e-10)


def test_exact_w2_unequal_sizes() -> None:
    # Repeating every point of x m times and of y n times leaves the empirical measures
    # unchanged, so W2 for (n, m) must equal the equal-size (nm, nm) value (an assignment).
    x, y = _gauss(6, 2, 0.0, 1.0, 33), _gauss(4, 2, 0.5, 0.5, 34)
    equal = M.exact_w2(x.repeat_interleave(4, dim=0), y.repeat_interleave(6, dim=0))
    assert M.exact_w2(x, y) == pytest.approx(equal, rel=1e-10)
    assert M.exact_w2(x, y) == pytest.approx(M.exact_w2(y, x), rel=1e-12)
    # A one-point y: every x_i moves to it, W2² = mean |x_i − y|² exactly.
    y1 = _gauss(1, 2, 0.0, 1.0, 35).expand(2, 2)  # two copies of one point
    assert M.exact_w2(x, y1) ** 2 == pytest.approx(float((x - y1[0]).square().sum(1).mean()))


def test_exact_w2_independent_gaussian_samples_1d() -> None:
    # Independent samples (not coupled): in 1-D the optimal coupling of equal-size samples
    # pairs the sorted points, so W2² = mean (x_(i) − y_(i))², whose expectation is the
    # closed form W2²(N(0,1), N(μ, s²)) = μ² + (1 − s)² plus a positive O(log n / n)
    # sampling bias. n = 1000, 8 replicates: tolerance 4 SE of the replicate mean (SE ≈ 0.015)
    # plus the bias, 3.6e-3 by 4000 replicates of the sorted-pairing formula (6e-3 used).
    # Dropping the (1 − s)² = 0.16 term would fail by > 2 tolerances.
    n, mu, s, reps = 1000, 0.5, 0.6, 8
    vals = np.array(
        [
            M.exact_w2(_gauss(n, 1, 0.0, 1.0, 40 + r), _gauss(n, 1, mu, s, 60 + r)) ** 2
            for r in range(reps)
        ]
    )
    se = vals.std(ddof=1) / math.sqrt(reps)
    expected = mu**2 + (1 - s) ** 2
    assert abs(vals.mean() - expected) < N_SE * se + 6e-3


# ---------------------------------------------------------------------------- MMD


def _brute_mmd2(x: torch.Tensor, y: torch.Tensor, h: float, unbiased: bool) -> float:
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2 * k(x, y).mean())


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_brute_force_across_blocks(unbiased: bool) -> None:
    # block_elems = 50 forces many row blocks (and the symmetric-block bookkeeping).
    x, y = _gauss(37, 2, 0.0, 1.0, 15), _gauss(23, 2, 0.3, 1.3, 16)
    expected = _brute_mmd2(x, y, 0.8, unbiased)
    for block in (50, 10**7):
        got = M.mmd_rbf(x, y, bandwidth=0.8, unbiased=unbiased, block_elems=block)
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_mmd_median_bandwidth() -> None:
    x, y = _gauss(30, 2, 0.0, 1.0, 17), _gauss(40, 2, 1.0, 1.0, 18)
    h = float(torch.median(torch.pdist(torch.cat((x, y)))))
    assert M.median_bandwidth(x, y) == h
    assert M.mmd_rbf(x, y) == pytest.approx(M.mmd_rbf(x, y, bandwidth=h), rel=1e-12)
    # Large samples: a deterministic subsample of ≤ 2000 points (SE of its median ≈ 0.01).
    a, b = _gauss(6000, 2, 0.0, 1.0, 19), _gauss(4000, 2, 0.0, 1.0, 20)
    assert M.median_bandwidth(a, b) == M.median_bandwidth(a, b)
    # Median of |N(0, 2 I₂)| (Rayleigh, scale √2): √2 · √(2 ln 2) = 2√(ln 2) = 1.665.
    assert M.median_bandwidth(a, b) == pytest.approx(2 * math.sqrt(math.log(2)), abs=0.05)


def test_mmd_null_is_zero_within_se_and_alternative_positive() -> None:
    # Same law: the unbiased MMD² has mean exactly 0; R replicates estimate its SE.
    h, n, reps = 1.0, 500, 24
    null = np.array(
        [
            M.mmd_rbf(_gauss(n, 2, 0.0, 1.0, 100 + r), _gauss(n, 2, 0.0, 1.0, 200 + r), bandwidth=h)
            for r in range(reps)
        ]
    )
    sd = null.std(ddof=1)
    assert abs(null.mean()) < N_SE * sd / math.sqrt(reps)
    assert null.min() < 0.0 < null.max()  # unbiased: not a squared norm, can be negative
    # Different laws (mean shift 0.5): closed form 0.0395 is ≈ 20 null SDs (SD ≈ 0.002).
    alt = M.mmd_rbf(_gauss(n, 2, 0.0, 1.0, 300), _gauss(n, 2, 0.5, 1.0, 301), bandwidth=h)
    assert alt > 10 * sd
    # The V-statistic is a squared RKHS norm: ≥ 0 and biased upwards under the null.
    x, y = _gauss(n, 2, 0.0, 1.0, 302), _gauss(n, 2, 0.0, 1.0, 303)
    assert M.mmd_rbf(x, y, bandwidth=h, unbiased=False) > max(M.mmd_rbf(x, y, bandwidth=h), 0.0)


def test_mmd_gaussian_closed_form() -> None:
    # N(0, I₂) vs N((0.5, 0), 0.7² I₂), fixed h = 1: closed form of ``_mmd2_gauss``.
    h, n, reps, s2 = 1.0, 1000, 12, 0.7
    m2 = torch.tensor([0.5, 0.0], dtype=F64)
    expected = _mmd2_gauss(0.25, 1.0, s2, h, 2)
    vals = np.array(
        [
            M.mmd_rbf(_gauss(n, 2, 0.0, 1.0, 400 + r), _gauss(n, 2, m2, s2, 500 + r), bandwidth=h)
            for r in range(reps)
        ]
    )
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - expected) < N_SE * se
    assert se < 0.1 * expected  # the check has power: expected ≈ 0.06, SE ≈ 0.001


# ---------------------------------------------------------------------------- energy distance


def _brute_energy(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> float:
    n, m = len(x), len(y)
    dxx, dyy = torch.cdist(x, x).sum(), torch.cdist(y, y).sum()
    if unbiased:
        return float(2 * torch.cdist(x, y).mean() - dxx / (n * (n - 1)) - dyy / (m * (m - 1)))
    return float(2 * torch.cdist(x, y).mean() - dxx / n**2 - dyy / m**2)


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_matches_brute_force_across_blocks(unbiased: bool) -> None:
    x, y = _gauss(41, 3, 0.0, 1.0, 21), _gauss(19, 3, 0.5, 0.8, 22)
    expected = _brute_energy(x, y, unbiased)
    for block in (64, 10**7):
        got = M.energy_distance(x, y, unbiased=unbiased, block_elems=block)
        assert got == pytest.approx(expected, rel=1e-9)


def test_energy_vstatistic_matches_scipy_in_one_dimension() -> None:
    # In 1-D the V-statistic equals 2∫(F_n − G_m)², the square of scipy's energy_distance.
    from scipy.stats import energy_distance as scipy_energy

    x, y = _gauss(300, 1, 0.0, 1.0, 23), _gauss(200, 1, 0.7, 1.5, 24)
    expected = scipy_energy(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    assert M.energy_distance(x, y, unbiased=False) == pytest.approx(expected, rel=1e-9)


def test_energy_gaussian_closed_form() -> None:
    # N(0, 1) vs N(μ, 1): X − Y ~ N(−μ, 2) and X − X' ~ N(0, 2), so with E|N(a, b²)| above
    # D² = 2 E|N(μ, 2)| − 2 E|N(0, 2)| = 2 E|N(μ, 2)| − 4/√π.
    mu, n, reps = 0.8, 1000, 12
    expected = 2 * _mean_abs_normal(mu, math.sqrt(2.0)) - 4 / math.sqrt(math.pi)
    vals = np.array(
        [
            M.energy_distance(_gauss(n, 1, 0.0, 1.0, 600 + r), _gauss(n, 1, mu, 1.0, 700 + r))
            for r in range(reps)
        ]
    )
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - expected) < N_SE * se
    assert se < 0.1 * expected  # expected ≈ 0.33, SE ≈ 0.006
    # Same law: the unbiased estimate is centred on 0 (SD ≈ 2/n · O(1) ≈ 0.002 here).
    assert abs(M.energy_distance(_gauss(n, 1, 0.0, 1.0, 800), _gauss(n, 1, 0.0, 1.0, 801))) < 0.01


# ---------------------------------------------------------------------------- modes


def test_mode_weights_eight_gaussians() -> None:
    # Means 10.8 stds apart: a point is misassigned only beyond 5.4 stds (p ≈ 3e-8), so the
    # weights are binomial proportions around 1/8: tolerance 4 SE = 4 √(7/64 / n).
    n, centres = 20_000, _eight_centres()
    w = M.mode_weights(_eight(n, 0), centres)
    assert w.dtype == F64 and w.shape == (8,)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(w, torch.full((8,), 1 / 8, dtype=F64), atol=N_SE * math.sqrt(7 / 64 / n))
    # Points exactly on centres are counted per centre.
    pts = centres[torch.tensor([0, 0, 3, 7])]
    expected = torch.tensor([0.5, 0, 0, 0.25, 0, 0, 0, 0.25], dtype=F64)
    assert torch.equal(M.mode_weights(pts, centres), expected)


def test_mode_resolved_tvd_and_missing_modes() -> None:
    centres = _eight_centres()
    ref = _eight(8000, 1)
    x = _eight(8000, 2)
    # Drop mode 0 (angle 0: the points with x > 1.0 and |y| < 0.5).
    keep = ~((x[:, 0] > 1.0) & (x[:, 1].abs() < 0.5))
    out = M.mode_resolved_sliced_w2(x[keep], ref, centres)
    json.dumps(out, allow_nan=False)
    assert out["per_mode_sliced_w2"][0] is None
    assert all(v is not None and v < 0.05 for v in out["per_mode_sliced_w2"][1:])
    # Removing one of 8 modes: x puts 1/7 on each of the others, TVD = 1/8 exactly in law;
    # binomial noise on 8000 points is ≈ 0.004 per weight, so ±0.02 is > 4 SE on the sum.
    assert out["tvd"] == pytest.approx(1 / 8, abs=0.02)
    assert out["covered_ref_mass"] == pytest.approx(1 - out["ref_weights"][0], abs=1e-12)
    w = torch.tensor(out["ref_weights"])
    per_mode = torch.tensor(out["per_mode_sliced_w2"][1:], dtype=F64)
    assert out["sliced_w2"] == pytest.approx(float((w[1:] * per_mode).sum() / w[1:].sum()))


def _log_ratios(results: list[float]) -> np.ndarray:
    return np.log(np.asarray(results, dtype=float))


def test_noise_floor_exact_vs_shrunk_sampler() -> None:
    # Exact sampler: value = metric(samples, held-out) and floor = metric(fresh, fresh) are
    # identically distributed (all sets iid of size n), so log ratio is symmetric about 0:
    # its mean over R seeds lies within 4 SE (from the replicate SD) of 0.
    n, reps, centres = 2000, 8, _eight_centres()
    exact, shrunk = {"sw2": [], "mode": []}, {"sw2": [], "mode": [], "tvd": []}
    for r in range(reps):
        good = _eight(n, 1000 + r)
        for samples, out in ((good, exact), (0.8 * good, shrunk)):
            a = M.with_noise_floor(M.sliced_w2, samples, _eight, n, seed=10 * r)
            b = M.with_noise_floor(
                M.mode_resolved_sliced_w2, samples, _eight, n, seed=10 * r, centers=centres
            )
            assert set(a) == {"value", "floor", "ratio"}
            assert a["ratio"] == pytest.approx(a["value"] / a["floor"])
            out["sw2"].append(a["ratio"])
            out["mode"].append(b["ratio"]["sliced_w2"])
            if "tvd" in out:
                out["tvd"].append(b["ratio"]["tvd"])
    for key in ("sw2", "mode"):
        logs = _log_ratios(exact[key])
        assert abs(logs.mean()) < N_SE * logs.std(ddof=1) / math.sqrt(reps), key
    # Shrinking by 0.8 moves every mode by 0.28 (and shrinks it): both metrics flag it
    # (observed medians ≈ 2.8 and ≈ 13); the mode-resolved one is far more decisive because
    # its floor is not inflated by the random mode counts. TVD is blind to it (same modes).
    assert min(shrunk["sw2"]) > 1.5
    assert min(shrunk["mode"]) > 8.0
    assert min(shrunk["mode"]) > 2.0 * max(shrunk["sw2"])
    assert max(exact["mode"]) < 1.5


def test_mode_resolved_separates_subtle_biases() -> None:
    # Five-mode mixture, n = 10 000, 5 seeds per sampler. Decisiveness of a metric =
    # (smallest ratio of the biased sampler) / (largest ratio of the exact one): > 1 means
    # every biased run is flagged above every exact run.
    n, reps = 10_000, 5
    heavy = [0.3, 0.175, 0.175, 0.175, 0.175]  # 30 % of the mass on mode 0 instead of 20 %
    samplers = {
        "exact": lambda s: _five(n, s),
        "heavy": lambda s: _five(n, s, weights=heavy),
        "narrow": lambda s: _five(n, s, std=0.8 * FIVE_STD),  # within-mode stds too small
    }
    ratios: dict[str, dict[str, list[float]]] = {}
    for name, sampler in samplers.items():
        got: dict[str, list[float]] = {"sw2": [], "tvd": [], "mode": []}
        for r in range(reps):
            samples = sampler(2000 + r)
            plain = M.with_noise_floor(M.sliced_w2, samples, _five, n, seed=10 * r)
            mode = M.with_noise_floor(
                M.mode_resolved_sliced_w2, samples, _five, n, seed=10 * r, centers=FIVE_CENTRES
            )
            got["sw2"].append(plain["ratio"])
            got["tvd"].append(mode["ratio"]["tvd"])
            got["mode"].append(mode["ratio"]["sliced_w2"])
        ratios[name] = got

    def decisiveness(bias: str, key: str) -> float:
        return min(ratios[bias][key]) / max(ratios["exact"][key])

    # Too narrow modes: per-mode SW2 between N(c, s²I) and N(c, (0.8s)²I) is 0.2s = 0.03
    # exactly (Gaussian closed form), while its floor is the within-mode sampling noise
    # only. Plain SW2 is dominated by random mode counts and cannot tell (observed
    # decisiveness ≈ 0.5 vs ≈ 3).
    assert decisiveness("narrow", "mode") > 2.0
    assert decisiveness("narrow", "sw2") < 1.0
    # Wrong mass balance: TVD flags it (value ≈ 0.1 vs floor ≈ 0.01), with larger ratios than
    # plain SW2 (which scales like √mass moved), and attributes it correctly: the
    # within-mode SW2 of the heavy sampler stays at its floor.
    assert min(ratios["heavy"]["tvd"]) > 4.0
    assert all(t > s for t, s in zip(ratios["heavy"]["tvd"], ratios["heavy"]["sw2"], strict=True))
    assert max(ratios["heavy"]["mode"]) < 1.5


def _msr(n: int, seed: int) -> torch.Tensor:
    return sample_toy("multi_swiss_roll", n, seed=seed).double()


def _msr_rotated(n: int, seed: int, degrees: float) -> torch.Tensor:
    """Multi-Swiss-roll with every roll rotated about its own centre (same mode weights)."""
    centres = MULTI_SWISS_ROLL_CENTERS.double()
    x = _msr(n, seed)
    centre = centres[torch.cdist(x, centres).argmin(dim=1)]
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rotation = torch.tensor([[c, -s], [s, c]], dtype=F64)
    return centre + (x - centre) @ rotation.T


def test_mode_resolved_separates_biased_sampler_on_multi_swiss_roll() -> None:
    # HOLD's Fig. 4 data, n = 20 000, 6 seeds per sampler. Two slightly biased samplers with
    # the exact mode weights: every roll rotated by 15° about its centre, or every point
    # shifted by 0.03 (3 noise stds, 1/6 of the arm spacing). Plain SW2's floor is dominated
    # by the random mode counts (mass ≈ √(0.16/n) per roll moved across ≈ 1.1), so its
    # ratios overlap the exact sampler's (observed decisiveness ≈ 0.4); the within-mode SW2
    # floor is only the within-roll sampling noise, so every biased run lands above every
    # exact one (observed decisiveness ≈ 1.6–1.8 for the rotation and ≈ 2.2–2.3 for the
    # shift over two seed blocks). 64 directions suffice: the direction noise is small.
    n, reps = 20_000, 6
    centres = MULTI_SWISS_ROLL_CENTERS.double()
    shift = torch.tensor([0.03, 0.0], dtype=F64)
    samplers = {
        "exact": lambda s: _msr(n, s),
        "rotated": lambda s: _msr_rotated(n, s, 15.0),
        "shifted": lambda s: _msr(n, s) + shift,
    }
    ratios: dict[str, dict[str, list[float]]] = {}
    for name, sampler in samplers.items():
        got: dict[str, list[float]] = {"sw2": [], "mode": []}
        for r in range(reps):
            samples = sampler(3000 + r)
            plain = M.with_noise_floor(M.sliced_w2, samples, _msr, n, seed=10 * r, n_projections=64)
            mode = M.with_noise_floor(
                M.mode_resolved_sliced_w2,
                samples,
                _msr,
                n,
                seed=10 * r,
                centers=centres,
                n_projections=64,
            )
            got["sw2"].append(plain["ratio"])
            got["mode"].append(mode["ratio"]["sliced_w2"])
        ratios[name] = got

    def decisiveness(bias: str, key: str) -> float:
        return min(ratios[bias][key]) / max(ratios["exact"][key])

    assert decisiveness("rotated", "mode") > 1.3
    assert decisiveness("shifted", "mode") > 1.8
    assert decisiveness("rotated", "sw2") < 1.0
    assert decisiveness("shifted", "sw2") < 1.0
    # The exact sampler sits at its floor: median ratio within [0.7, 1.4] for both metrics.
    for key in ("sw2", "mode"):
        assert 0.7 < float(np.median(ratios["exact"][key])) < 1.4


def test_noise_floor_seeds_and_dict_metrics() -> None:
    calls: list[tuple[int, int]] = []

    def data(n: int, seed: int) -> torch.Tensor:
        calls.append((n, seed))
        return _gauss(n, 2, 0.0, 1.0, seed)

    samples = _gauss(50, 2, 0.0, 1.0, 999)
    out = M.with_noise_floor(M.energy_distance, samples, data, 50, seed=7)
    assert calls == [(50, 7), (50, 8), (50, 9)]
    assert out["value"] == M.energy_distance(samples, data(50, 7))
    assert out["floor"] == M.energy_distance(data(50, 8), data(50, 9))
    # A zero floor (identical fresh sets) gives ratio None rather than inf.
    same = M.with_noise_floor(M.sliced_w2, samples, lambda n, s: samples, 50)
    assert same["floor"] == 0.0 and same["ratio"] is None


# ---------------------------------------------------------------------------- evaluate_toy


def test_evaluate_toy_json_and_floors() -> None:
    centres = _eight_centres()
    report = M.evaluate_toy(_eight(1500, 123), _eight, centers=centres, seed=3)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    keys = {"sliced_w2", "mmd2_rbf", "energy_distance", "exact_w2", "mode_tvd", "mode_sliced_w2"}
    assert keys <= set(report)
    assert report["n"] == report["n_samples"] == 1500
    for key in keys:
        entry = report[key]
        assert set(entry) == {"value", "floor", "ratio"}
        assert entry["floor"] > 0.0  # V-statistics and distances between finite samples
        assert entry["ratio"] == pytest.approx(entry["value"] / entry["floor"])
        # Exact sampler, one seed: the ratio of two iid draws. Over 20 seeds the W2-type and
        # mode ratios stayed in [0.6, 2.9]; the MMD²/energy V-statistics are weighted sums of
        # a few χ² terms under the null (wide median-heuristic kernel), so their ratio is
        # F-like and heavy-tailed ([0.17, 12] over the same seeds).
        low, high = (0.05, 20.0) if key in ("mmd2_rbf", "energy_distance") else (0.3, 4.0)
        assert low < entry["ratio"] < high, key
    assert len(report["mode_weights"]) == 8
    # Above exact_w2_max_n points the exact W2 is skipped; without centres the mode metrics too.
    big = M.evaluate_toy(0.8 * _eight(2500, 5), _eight, exact_w2_max_n=2000)
    assert "exact_w2" not in big and "mode_tvd" not in big
    assert big["sliced_w2"]["ratio"] > 1.5 and big["mmd2_rbf"]["ratio"] > 10.0
    json.dumps(big, allow_nan=False)


def test_evaluate_toy_repeats_average_independent_references() -> None:
    """repeats = R: value and floor are the means over R references drawn with seeds
    seed + 3r + k (checked against direct calls), repeat 0 is the single evaluation, and the
    averaged ratio of an exact sampler scatters less around 1 than a single one."""
    centres = _eight_centres()
    x = _eight(800, 77)
    single = M.evaluate_toy(x, _eight, centers=centres, seed=5, exact_w2_max_n=0)
    rep = M.evaluate_toy(x, _eight, centers=centres, seed=5, exact_w2_max_n=0, repeats=3)
    assert "repeats" not in single and rep["repeats"] == 3
    assert rep["mmd2_rbf"] == single["mmd2_rbf"]  # the expensive ones use repeat 0 only
    for key in ("sliced_w2", "mode_tvd", "mode_sliced_w2"):
        assert rep[key]["ratios"][0] == pytest.approx(single[key]["ratio"], rel=1e-12)
    values = [M.sliced_w2(x, _eight(800, 5 + 3 * r), seed=5 + 3 * r) for r in range(3)]
    floors = [
        M.sliced_w2(_eight(800, 6 + 3 * r), _eight(800, 7 + 3 * r), seed=5 + 3 * r)
        for r in range(3)
    ]
    assert rep["sliced_w2"]["value"] == pytest.approx(sum(values) / 3, rel=1e-12)
    assert rep["sliced_w2"]["floor"] == pytest.approx(sum(floors) / 3, rel=1e-12)
    assert rep["mode_sliced_w2"]["ratio"] == pytest.approx(
        rep["mode_sliced_w2"]["value"] / rep["mode_sliced_w2"]["floor"]
    )
    json.dumps(rep, allow_nan=False)

    # Exact samples: the true ratio is 1. Over these 8 draws the single mode-resolved ratio
    # has a spread (RMS of log ratio) of 0.073 at 800 points and the 8-reference one 0.043
    # (0.59×; 0.080 vs 0.044 over 12 draws): the reference's own noise is about half of it.
    # A sum that ignored the extra references would give 1.0×; the bound 0.85× leaves room
    # for other seeds' scatter.
    def spread(r: int) -> float:
        logs = [
            math.log(
                M.evaluate_toy(
                    _eight(800, 1000 + d),
                    _eight,
                    centers=centres,
                    seed=100 * d,
                    exact_w2_max_n=0,
                    repeats=r,
                )["mode_sliced_w2"]["ratio"]
            )
            for d in range(8)
        ]
        return math.sqrt(sum(v * v for v in logs) / len(logs))

    assert spread(8) < 0.85 * spread(1)
    with pytest.raises(ValueError, match=r"repeats must be an integer in \[1, 1001\), got 0"):
        M.evaluate_toy(x, _eight, repeats=0)
    with pytest.raises(ValueError, match="seed \\+ 3·repeats must be ≤ 2\\*\\*32"):
        M.evaluate_toy(x, _eight, seed=2**32 - 4, repeats=2)


# ---------------------------------------------------------------------------- validation

X = torch.zeros(5, 2)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: M.sliced_w2([[0.0, 1.0]] * 3, X), "x must be a torch.Tensor"),
        (lambda: M.sliced_w2(X, torch.zeros(5, 2, dtype=torch.int64)), "y must have a floating"),
        (lambda: M.mmd_rbf(torch.zeros(5), X), "x must be a 2-D tensor"),
        (lambda: M.energy_distance(X, torch.zeros(1, 2)), "y must have at least 2 points"),
        (lambda: M.energy_distance(X, torch.zeros(5, 3)), "y must have the same dimension d = 2"),
        (lambda: M.exact_w2(X, torch.full((5, 2), math.nan)), "y must be finite"),
        (lambda: M.sliced_w2(torch.zeros(5, 0), X), "x must have at least one coordinate"),
        (lambda: M.sliced_w2(X, X, n_projections=0), "n_projections must be an integer ≥ 1"),
        (lambda: M.sliced_w2(X, X, seed=-1), "seed must be an integer in [0, 4294967296)"),
        (lambda: M.sliced_w2(X, X, seed=1.5), "seed must be an integer"),
        (lambda: M.mmd_rbf(X, X, bandwidth=0.0), "bandwidth must be a finite number > 0"),
        (lambda: M.mmd_rbf(X, X, bandwidth=math.inf), "bandwidth must be a finite number > 0"),
        (lambda: M.exact_w2(torch.zeros(5001, 1), torch.zeros(5, 1)), "at most 5000"),
        (lambda: M.mode_weights(X, torch.zeros(3, 3)), "centers must have the same dimension"),
        (lambda: M.mode_weights(X, torch.zeros(0, 2)), "centers must have at least 1 point "),
        (
            lambda: M.mode_resolved_sliced_w2(X, torch.zeros(4, 1), torch.zeros(2, 2)),
            "ref must have the same dimension",
        ),
        (lambda: M.with_noise_floor(M.sliced_w2, X, 3, 5), "sample_data must be a callable"),
        (lambda: M.with_noise_floor(None, X, lambda n, s: X, 5), "metric must be a callable"),
        (lambda: M.with_noise_floor(M.sliced_w2, X, lambda n, s: X, 1), "n must be an integer ≥ 2"),
        (
            lambda: M.with_noise_floor(M.sliced_w2, X, lambda n, s: torch.zeros(n, 3), 5),
            "sample_data(5, 0) must have the same dimension d = 2",
        ),
        (lambda: M.evaluate_toy(X, lambda n, s: X, n=True), "n must be an integer ≥ 2"),
    ],
)
def test_validation_messages(call, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        call()
    assert fragment in _one_sentence(exc)
