"""Sample-quality metrics for point clouds (2-D toys and small vectors), in float64.

Every metric takes two samples ``x`` (n, d) and ``y`` (m, d) as real floating-point torch
tensors, validates them (2-D, same d, finite, at least 2 points each) and returns a Python
float; the randomised ones (sliced W2) are deterministic given ``seed``. Pairwise sums
(MMD, energy distance) are computed in row blocks, so memory stays bounded (≈ 32 MB per
block) for n up to tens of thousands.

Metrics between two finite samples are never exactly zero even for a perfect sampler, so
``with_noise_floor`` reports each metric next to its value between two fresh data sets of
the same size (the "noise floor"); ``evaluate_toy`` collects everything for a demo's
``metrics.json``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from phasediff.validation import check_int, check_positive

__all__ = [
    "EXACT_W2_MAX_N",
    "MEDIAN_SUBSAMPLE",
    "energy_distance",
    "evaluate_toy",
    "exact_w2",
    "median_bandwidth",
    "mmd_rbf",
    "mode_resolved_sliced_w2",
    "mode_weights",
    "sliced_w2",
    "with_noise_floor",
]

_DTYPE = torch.float64

EXACT_W2_MAX_N = 5000
"""Largest sample size ``exact_w2`` accepts (it builds and solves an n×m transport problem)."""

MEDIAN_SUBSAMPLE = 2000
"""At most this many pooled points enter the median-heuristic bandwidth."""

# Elements of one block of a pairwise matrix: 2**22 float64 = 32 MB.
_BLOCK_ELEMS = 2**22

# torch's CPU generator keeps only the low 32 bits of a seed: larger seeds would alias.
_SEED_LIMIT = 2**32


# ---------------------------------------------------------------------------- validation


def _check_seed(value: object, name: str = "seed") -> int:
    return check_int(value, name, 0, _SEED_LIMIT)


def _as_points(x: object, name: str, d: int | None = None, min_n: int = 2) -> torch.Tensor:
    """A finite float64 CPU tensor of shape (n ≥ min_n, d), or a one-sentence ValueError."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (n, d) with a floating dtype, "
            f"got {type(x).__name__}."
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor of shape (n, d), got shape {tuple(x.shape)}."
        )
    n, dim = x.shape
    if dim < 1:
        raise ValueError(f"{name} must have at least one coordinate (d ≥ 1), got d = {dim}.")
    if n < min_n:
        points = "point" if min_n == 1 else "points"
        raise ValueError(f"{name} must have at least {min_n} {points} (n ≥ {min_n}), got n = {n}.")
    if d is not None and dim != d:
        raise ValueError(f"{name} must have the same dimension d = {d} as x, got d = {dim}.")
    out = x.detach().to(device="cpu", dtype=_DTYPE)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got a tensor containing NaN or Inf.")
    return out


def _pair(x: object, y: object, names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, ...]:
    a = _as_points(x, names[0])
    return a, _as_points(y, names[1], d=a.shape[1])


# ---------------------------------------------------------------------------- sliced W2


def _directions(d: int, n_projections: int, seed: int) -> torch.Tensor:
    """Unit directions θ_l = g_l/|g_l|, g_l ~ N(0, I_d) (uniform on the sphere), shape (L, d)."""
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(n_projections, d, generator=generator, dtype=_DTYPE)
    norms = g.norm(dim=1, keepdim=True)
    # A zero draw has probability 0; guard anyway so no direction is NaN.
    g = torch.where(norms > 0, g, torch.ones_like(g))
    return g / g.norm(dim=1, keepdim=True)


def _quantile_grid(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Common grid of the quantile functions of an n- and an m-point empirical measure.

    The breakpoints are {i/n} ∪ {j/m}; on each interval (u_{k-1}, u_k] both quantile
    functions are constant, equal to the sorted points of index ⌈u n⌉−1 and ⌈u m⌉−1.
    Returns (interval widths, x indices, y indices), so that the exact 1-D
    W2² = Σ_k w_k (x_(ix_k) − y_(iy_k))².
    """
    u = torch.cat(
        (torch.arange(1, n + 1, dtype=_DTYPE) / n, torch.arange(1, m + 1, dtype=_DTYPE) / m)
    )
    u = torch.sort(u).values
    widths = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - 0.5 * widths  # interior of each non-empty interval
    ix = torch.floor(mid * n).long().clamp_(0, n - 1)
    iy = torch.floor(mid * m).long().clamp_(0, m - 1)
    return widths, ix, iy


def _sorted_rows(a: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending (numpy's vectorised sort: ~1.7× torch.sort for float64)."""
    return torch.from_numpy(np.sort(a.numpy(), axis=1))


def _sliced_w2_squared_per_direction(
    x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """Exact 1-D W2² between the projected empirical measures, one value per direction."""
    n, m = x.shape[0], y.shape[0]
    if n != m:
        widths, ix, iy = _quantile_grid(n, m)
    per_direction = []
    chunk = max(1, _BLOCK_ELEMS // (n + m))
    for start in range(0, theta.shape[0], chunk):
        t = theta[start : start + chunk]
        px = _sorted_rows(t @ x.T)  # (L, n)
        py = _sorted_rows(t @ y.T)
        if n == m:
            per_direction.append((px - py).square_().mean(dim=1))
        else:
            diff = (px[:, ix] - py[:, iy]).square_()
            per_direction.append(diff @ widths)
    return torch.cat(per_direction)


def sliced_w2(
    x: torch.Tensor, y: torch.Tensor, *, n_projections: int = 256, seed: int = 0
) -> float:
    """Sliced 2-Wasserstein distance SW2(x, y) = sqrt(mean_l W2²(θ_l·x, θ_l·y)).

    θ_1…θ_L are L = ``n_projections`` unit directions drawn uniformly on the sphere from a
    generator seeded with ``seed``. Each 1-D W2² is exact for the empirical measures: the
    mean of squared differences of sorted projections when n = m, and otherwise
    ∫₀¹ (F⁻¹(u) − G⁻¹(u))² du evaluated on the common grid {i/n} ∪ {j/m} of both quantile
    functions. Cost O(L (n + m) log(n + m)).
    """
    x, y = _pair(x, y)
    n_projections = check_int(n_projections, "n_projections", 1)
    seed = _check_seed(seed)
    theta = _directions(x.shape[1], n_projections, seed)
    return math.sqrt(float(_sliced_w2_squared_per_direction(x, y, theta).mean()))


# ---------------------------------------------------------------------------- exact W2


def exact_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between two empirical measures with uniform weights 1/n and 1/m.

    W2² = min_π Σ_ij π_ij |x_i − y_j|² over couplings π with row sums 1/n and column sums
    1/m, solved exactly by the network simplex of POT (``ot.emd2``) on the n×m
    squared-distance matrix in float64; n, m ≤ ``EXACT_W2_MAX_N`` (5000 points: ≈ 4 s and
    200 MB). For n = m an optimal coupling is a permutation (Birkhoff), which the tests
    cross-check against ``scipy.optimize.linear_sum_assignment``.
    """
    import ot

    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    if max(n, m) > EXACT_W2_MAX_N:
        raise ValueError(
            f"exact_w2 accepts at most {EXACT_W2_MAX_N} points per sample, got n = {n} and "
            f"m = {m}; use sliced_w2 for larger samples."
        )
    cost = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square_().numpy()
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    value, log = ot.emd2(a, b, cost, numItermax=min(10**9, max(10**5, 10 * n * m)), log=True)
    if log.get("warning"):
        raise RuntimeError(f"the exact transport solver did not converge: {log['warning']}")
    return math.sqrt(max(float(value), 0.0))


# ---------------------------------------------------------------------------- pairwise sums


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """|a_i − b_j|² = |a_i|² + |b_j|² − 2 a_i·b_j (clamped at 0), shape (len a, len b)."""
    d2 = torch.addmm(b_sq.unsqueeze(0), a, b.T, beta=1.0, alpha=-2.0)
    return d2.add_(a.square().sum(dim=1, keepdim=True)).clamp_(min=0.0)


def _pair_sum(
    a: torch.Tensor,
    b: torch.Tensor | None,
    transform: Callable[[torch.Tensor], torch.Tensor],
    block_elems: int,
) -> float:
    """Σ_{i,j} f(|a_i − b_j|²), or Σ_{i≠j} f(|a_i − a_j|²) when b is None, in row blocks.

    ``transform`` maps a block of squared distances to f of it (in place allowed). The
    symmetric case visits only the blocks on or above the diagonal and counts the strictly
    upper ones twice; the diagonal terms f(|a_i − a_i|²) are removed exactly as computed.
    """
    symmetric = b is None
    other = a if b is None else b
    other_sq = other.square().sum(dim=1)
    n_rows, n_cols = a.shape[0], other.shape[0]
    rows = max(1, block_elems // n_cols)
    total = 0.0
    for i0 in range(0, n_rows, rows):
        i1 = min(i0 + rows, n_rows)
        if symmetric:
            k = transform(_sq_dists(a[i0:i1], other[i0:], other_sq[i0:]))
            square = k[:, : i1 - i0]
            total += 2.0 * float(k[:, i1 - i0 :].sum())
            total += float(square.sum()) - float(square.diagonal().sum())
        else:
            total += float(transform(_sq_dists(a[i0:i1], other, other_sq)).sum())
    return total


def _within_mean(s: float, n: int, unbiased: bool) -> float:
    """Mean of a pair sum s: s/(n(n−1)) (U-statistic, s over i ≠ j) or s/n² (V-statistic)."""
    return s / (n * (n - 1)) if unbiased else s / (n * n)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """Median heuristic: median of |z_i − z_j| (i < j) over the pooled sample z = x ∪ y.

    At most ``MEDIAN_SUBSAMPLE`` pooled points are used, evenly spaced in index within x
    and within y (in proportion to their sizes), so the result is deterministic. Falls back
    to the mean distance if the median is 0, and to 1 if all points coincide.
    """
    x, y = _pair(x, y)
    return _median_bandwidth(x, y)


def _median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    n, m = x.shape[0], y.shape[0]
    if n + m > MEDIAN_SUBSAMPLE:
        kx = max(1, round(MEDIAN_SUBSAMPLE * n / (n + m)))
        ky = max(1, MEDIAN_SUBSAMPLE - kx)
        x = x[torch.linspace(0, n - 1, kx, dtype=_DTYPE).round().long()]
        y = y[torch.linspace(0, m - 1, ky, dtype=_DTYPE).round().long()]
    dists = torch.pdist(torch.cat((x, y)))
    h = float(torch.median(dists))
    if h <= 0.0:
        h = float(dists.mean())
    return h if h > 0.0 else 1.0


# ---------------------------------------------------------------------------- MMD


def mmd_rbf(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bandwidth: float | None = None,
    unbiased: bool = True,
    block_elems: int = _BLOCK_ELEMS,
) -> float:
    """Squared MMD with the Gaussian kernel k(a, b) = exp(−|a − b|²/(2h²)).

    Unbiased U-statistic (default; can be slightly negative):
    MMD² = Σ_{i≠j} k(x_i, x_j)/(n(n−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2 Σ_{i,j} k(x_i, y_j)/(nm).
    With ``unbiased=False`` the V-statistic (diagonals included, all means over n², m²), which
    is the exact squared RKHS distance between the empirical measures and so is ≥ 0.
    h = ``bandwidth``, or the median heuristic (``median_bandwidth``) when None. Pairwise
    sums run in row blocks of about ``block_elems`` kernel entries.
    """
    x, y = _pair(x, y)
    h = _median_bandwidth(x, y) if bandwidth is None else check_positive(bandwidth, "bandwidth")
    block_elems = check_int(block_elems, "block_elems", 1)
    # Centre on the pooled mean: distances are unchanged, the |a|² + |b|² − 2a·b form loses less.
    centre = torch.cat((x, y)).mean(dim=0)
    x, y = x - centre, y - centre
    gamma = -0.5 / (h * h)

    def kernel(d2: torch.Tensor) -> torch.Tensor:
        return d2.mul_(gamma).exp_()

    n, m = x.shape[0], y.shape[0]
    xx = _pair_sum(x, None, kernel, block_elems) + (0.0 if unbiased else n)  # k(a, a) = 1
    yy = _pair_sum(y, None, kernel, block_elems) + (0.0 if unbiased else m)
    xy = _pair_sum(x, y, kernel, block_elems)
    return _within_mean(xx, n, unbiased) + _within_mean(yy, m, unbiased) - 2.0 * xy / (n * m)


# ---------------------------------------------------------------------------- energy distance


def energy_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    unbiased: bool = True,
    block_elems: int = _BLOCK_ELEMS,
) -> float:
    """Energy distance D² = 2 E|X − Y| − E|X − X'| − E|Y − Y'| (Székely–Rizzo), Euclidean |·|.

    Unbiased estimate (default): the within-sample means run over pairs i ≠ j, divided by
    n(n−1) and m(m−1), the cross mean over all n·m pairs. With ``unbiased=False`` the
    V-statistic (within means over n², m²), the energy distance between the empirical
    measures, which is ≥ 0; in 1-D it equals 2∫(F_n − G_m)², the square of
    ``scipy.stats.energy_distance``. Pairwise sums run in row blocks.
    """
    x, y = _pair(x, y)
    block_elems = check_int(block_elems, "block_elems", 1)
    centre = torch.cat((x, y)).mean(dim=0)
    x, y = x - centre, y - centre

    def dist(d2: torch.Tensor) -> torch.Tensor:
        return d2.sqrt_()

    n, m = x.shape[0], y.shape[0]
    xx = _within_mean(_pair_sum(x, None, dist, block_elems), n, unbiased)
    yy = _within_mean(_pair_sum(y, None, dist, block_elems), m, unbiased)
    xy = _pair_sum(x, y, dist, block_elems) / (n * m)
    return 2.0 * xy - xx - yy


# ---------------------------------------------------------------------------- modes


def _assign(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre of each point (ties: the lowest index), int64 (n,)."""
    labels = []
    c_sq = centers.square().sum(dim=1)
    rows = max(1, _BLOCK_ELEMS // centers.shape[0])
    for i0 in range(0, x.shape[0], rows):
        labels.append(_sq_dists(x[i0 : i0 + rows], centers, c_sq).argmin(dim=1))
    return torch.cat(labels)


def _as_centers(centers: object, d: int) -> torch.Tensor:
    return _as_points(centers, "centers", d=d, min_n=1)


def mode_weights(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """w_k = #{i : argmin_j |x_i − c_j| = k} / n: the fraction of points nearest to each centre.

    ``centers`` is a (k, d) tensor; ties go to the lowest index. Returns float64 (k,), sums to 1.
    """
    x = _as_points(x, "x")
    centers = _as_centers(centers, x.shape[1])
    return _weights(_assign(x, centers), centers.shape[0])


def _weights(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=k).to(_DTYPE) / labels.shape[0]


def mode_resolved_sliced_w2(
    x: torch.Tensor,
    ref: torch.Tensor,
    centers: torch.Tensor,
    *,
    n_projections: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Mode weights and within-mode shape, compared separately.

    Each point goes to its nearest centre. Returns a JSON-serialisable dict:
    ``tvd`` = ½ Σ_k |w_k(x) − w_k(ref)| (total variation between the mode weights);
    ``sliced_w2`` = Σ_k w_k(ref) SW2(x|k, ref|k) / Σ_k w_k(ref) over the modes where both
    x and ref have ≥ 2 points (``sliced_w2`` of the points assigned to mode k, same
    directions for every mode; None if no mode qualifies); ``per_mode_sliced_w2`` (None
    for a mode that does not qualify); ``covered_ref_mass`` (ref mass of the qualifying
    modes); ``weights`` and ``ref_weights``.

    On a multimodal law plain SW2 between two finite samples is dominated by the random
    mode counts; this separates a wrong mass balance (``tvd``) from wrong modes (``sliced_w2``).
    """
    x, ref = _pair(x, ref, ("x", "ref"))
    centers = _as_centers(centers, x.shape[1])
    n_projections = check_int(n_projections, "n_projections", 1)
    seed = _check_seed(seed)
    k = centers.shape[0]
    lx, lr = _assign(x, centers), _assign(ref, centers)
    wx, wr = _weights(lx, k), _weights(lr, k)
    theta = _directions(x.shape[1], n_projections, seed)
    per_mode: list[float | None] = []
    num = den = 0.0
    for j in range(k):
        xj, rj = x[lx == j], ref[lr == j]
        if xj.shape[0] < 2 or rj.shape[0] < 2:
            per_mode.append(None)
            continue
        value = math.sqrt(float(_sliced_w2_squared_per_direction(xj, rj, theta).mean()))
        per_mode.append(value)
        num += float(wr[j]) * value
        den += float(wr[j])
    return {
        "tvd": 0.5 * float((wx - wr).abs().sum()),
        "sliced_w2": num / den if den > 0 else None,
        "per_mode_sliced_w2": per_mode,
        "covered_ref_mass": den,
        "weights": wx.tolist(),
        "ref_weights": wr.tolist(),
    }


# ---------------------------------------------------------------------------- noise floor


def _ratio(value: object, floor: object) -> float | None:
    """value / floor for real numbers with floor > 0, else None (JSON null)."""
    real = (numbers.Real,)
    if not isinstance(value, real) or not isinstance(floor, real) or isinstance(value, bool):
        return None
    return float(value) / float(floor) if float(floor) > 0.0 else None


def _compare(value: Any, floor: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        ratio = {key: _ratio(value[key], floor.get(key)) for key in value}
        ratio = {key: r for key, r in ratio.items() if r is not None}
        return {"value": dict(value), "floor": dict(floor), "ratio": ratio}
    return {"value": float(value), "floor": float(floor), "ratio": _ratio(value, floor)}


def _draw(
    sample_data: Callable[[int, int], torch.Tensor], n: int, seed: int, d: int
) -> torch.Tensor:
    return _as_points(sample_data(n, seed), f"sample_data({n}, {seed})", d=d)


def _data_sets(
    samples: torch.Tensor, sample_data: Callable[[int, int], torch.Tensor], n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out set (seed), two fresh sets for the floor (seed + 1, seed + 2)."""
    if not callable(sample_data):
        raise ValueError(
            f"sample_data must be a callable (n, seed) -> tensor (n, d), "
            f"got {type(sample_data).__name__}."
        )
    d = samples.shape[1]
    return tuple(_draw(sample_data, n, seed + k, d) for k in range(3))  # type: ignore[return-value]


def with_noise_floor(
    metric: Callable[..., Any],
    samples: torch.Tensor,
    sample_data: Callable[[int, int], torch.Tensor],
    n: int,
    seed: int = 0,
    **kw: Any,
) -> dict[str, Any]:
    """A metric and its noise floor: value = metric(samples, D_s), floor = metric(D_s+1, D_s+2).

    D_k = ``sample_data(n, k)`` is a fresh data set of size n (s = ``seed``); ``kw`` goes to
    the metric. Returns {"value", "floor", "ratio" = value/floor}; ratio ≈ 1 for an exact
    sampler with len(samples) = n, ≫ 1 for a poor one. ratio is None when floor ≤ 0 (as
    for unbiased MMD²/energy estimates, centred on 0: use ``unbiased=False`` for ratios).
    For a metric returning a dict (``mode_resolved_sliced_w2``) value and floor are its
    dicts and ratio is a dict over its numeric entries.
    """
    if not callable(metric):
        raise ValueError(f"metric must be a callable (x, y) -> float, got {type(metric).__name__}.")
    samples = _as_points(samples, "samples")
    n = check_int(n, "n", 2)
    seed = _check_seed(seed)
    held, fresh1, fresh2 = _data_sets(samples, sample_data, n, seed)
    return _compare(metric(samples, held, **kw), metric(fresh1, fresh2, **kw))


def evaluate_toy(
    samples: torch.Tensor,
    sample_data: Callable[[int, int], torch.Tensor],
    *,
    n: int | None = None,
    centers: torch.Tensor | None = None,
    seed: int = 0,
    exact_w2_max_n: int = EXACT_W2_MAX_N,
    repeats: int = 1,
) -> dict[str, Any]:
    """Every metric of this module against held-out data, each with its noise floor.

    n defaults to len(samples); the data sets are ``sample_data(n, seed + k)``, k = 0
    (held out), 1 and 2 (floor), drawn once. Entries (each {"value", "floor", "ratio"}):
    ``sliced_w2`` (256 directions, seed ``seed``); ``mmd2_rbf`` and ``energy_distance`` as
    V-statistics (≥ 0, so ratio is meaningful), MMD with one bandwidth for value and floor
    (median heuristic on the two fresh data sets, also reported as ``mmd_bandwidth``);
    ``exact_w2`` (POT) when len(samples) and n are ≤ ``exact_w2_max_n`` (default 5000,
    ≈ 8 s for value and floor at 5000 points); with ``centers``: ``mode_tvd`` and
    ``mode_sliced_w2`` (``mode_resolved_sliced_w2``) plus the sample and held-out
    ``mode_weights``. The result holds only ints, floats, None and lists: JSON-serialisable.

    ``repeats`` = R > 1 averages the cheap distances (``sliced_w2``, ``mode_tvd``,
    ``mode_sliced_w2``) over R independent references: repeat r draws its held-out and floor
    sets with seeds ``seed + 3r + k`` and its directions with seed ``seed + 3r``; ``value`` and
    ``floor`` are the means over the repeats, ``ratio`` their quotient, and ``ratios`` lists
    the per-repeat ratios. One reference is a noisy yardstick: at n = 20 000 on the
    multi-Swiss-roll one draw's mode-resolved ratio varies by ±15 % with the seed
    (docs/evaluation.md, "How noisy is one ratio"). Repeat 0 is the single evaluation, so
    R = 1 gives exactly the unrepeated result. MMD, energy distance and exact W2 use repeat 0.
    """
    samples = _as_points(samples, "samples")
    n = samples.shape[0] if n is None else check_int(n, "n", 2)
    seed = _check_seed(seed)
    exact_w2_max_n = check_int(exact_w2_max_n, "exact_w2_max_n", 0, EXACT_W2_MAX_N + 1)
    repeats = check_int(repeats, "repeats", 1, 1001)
    # the last repeat's data seeds (seed + 3r + k) must stay valid seeds
    if repeats > 1 and seed + 3 * repeats > _SEED_LIMIT:
        raise ValueError(
            f"seed + 3·repeats must be ≤ 2**32 (repeat r uses seeds seed + 3r … seed + 3r + 2), "
            f"got seed {seed} with repeats {repeats}."
        )
    if centers is not None:
        centers = _as_centers(centers, samples.shape[1])
    held, fresh1, fresh2 = _data_sets(samples, sample_data, n, seed)

    def both(metric: Callable[..., Any], **kw: Any) -> dict[str, Any]:
        return _compare(metric(samples, held, **kw), metric(fresh1, fresh2, **kw))

    bandwidth = _median_bandwidth(fresh1, fresh2)
    out: dict[str, Any] = {"n": n, "n_samples": int(samples.shape[0]), "seed": seed}
    out["sliced_w2"] = both(sliced_w2, seed=seed)
    out["mmd2_rbf"] = both(mmd_rbf, bandwidth=bandwidth, unbiased=False)
    out["mmd_bandwidth"] = bandwidth
    out["energy_distance"] = both(energy_distance, unbiased=False)
    if max(samples.shape[0], n) <= exact_w2_max_n:
        out["exact_w2"] = both(exact_w2)
    if centers is not None:
        modes = both(mode_resolved_sliced_w2, centers=centers, seed=seed)
        for key, name in (("tvd", "mode_tvd"), ("sliced_w2", "mode_sliced_w2")):
            value, floor = modes["value"][key], modes["floor"][key]
            out[name] = {"value": value, "floor": floor, "ratio": _ratio(value, floor)}
        out["mode_weights"] = modes["value"]["weights"]
        out["ref_mode_weights"] = modes["value"]["ref_weights"]
    if repeats > 1:
        out["repeats"] = repeats
        _repeat_cheap_distances(out, samples, sample_data, n, centers, seed, repeats)
    return out


def _repeat_cheap_distances(
    out: dict[str, Any],
    samples: torch.Tensor,
    sample_data: Callable[[int, int], torch.Tensor],
    n: int,
    centers: torch.Tensor | None,
    seed: int,
    repeats: int,
) -> None:
    """Average `out`'s sliced_w2 (and mode_tvd, mode_sliced_w2) over `repeats` references;
    repeat 0 is the entry already in `out` (evaluate_toy's `repeats`)."""
    names = ["sliced_w2"] + (["mode_tvd", "mode_sliced_w2"] if centers is not None else [])
    pairs: dict[str, list[tuple[Any, Any]]] = {
        name: [(out[name]["value"], out[name]["floor"])] for name in names
    }
    for r in range(1, repeats):
        s = seed + 3 * r
        held, fresh1, fresh2 = _data_sets(samples, sample_data, n, s)
        pairs["sliced_w2"].append(
            (sliced_w2(samples, held, seed=s), sliced_w2(fresh1, fresh2, seed=s))
        )
        if centers is not None:
            value = mode_resolved_sliced_w2(samples, held, centers, seed=s)
            floor = mode_resolved_sliced_w2(fresh1, fresh2, centers, seed=s)
            for key, name in (("tvd", "mode_tvd"), ("sliced_w2", "mode_sliced_w2")):
                pairs[name].append((value[key], floor[key]))
    for name, got in pairs.items():
        if any(v is None or f is None for v, f in got):
            out[name] = {"value": None, "floor": None, "ratio": None, "ratios": None}
            continue
        value = sum(v for v, _ in got) / len(got)
        floor = sum(f for _, f in got) / len(got)
        out[name] = {
            "value": value,
            "floor": floor,
            "ratio": _ratio(value, floor),
            "ratios": [_ratio(v, f) for v, f in got],
        }
