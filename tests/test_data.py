"""Tests of phasediff.data: seeded toys, sklearn digits and DataSource.

Statistical checks use n = 20 000 samples and a tolerance of 4 binomial standard errors
(two-sided false-alarm rate 6e-5 per check for a correct sampler and *any* seed), so they
are not tuned to the fixed seeds used here, while a wrong mode weight of ±0.02 (≥ 7 SE)
is caught.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

import phasediff.data as D
from phasediff.data import toys as T

N = 20_000
N_SE = 4.0  # tolerance in standard errors, see module docstring
# The probability that a 2-D isotropic Gaussian exceeds 6 stds in norm is exp(−18) ≈ 1.5e-8,
# i.e. 3e-4 for N points: a 6-std bound on noise residuals is safe for any seed.
NOISE_BOUND = 6.0
DIMS = {name: (1 if name == "gmm1d" else 2) for name in T.TOYS}


def _binomial_tol(p: float, n: int) -> float:
    return N_SE * math.sqrt(p * (1.0 - p) / n)


def _check_message(exc: pytest.ExceptionInfo[BaseException]) -> None:
    """One sentence: ends with a period, no newline."""
    msg = str(exc.value)
    assert msg.endswith("."), msg
    assert "\n" not in msg, msg


# ---------------------------------------------------------------------------- toys


def test_toy_names() -> None:
    assert set(D.TOYS) == {
        "multi_swiss_roll",
        "swiss_roll",
        "8gaussians",
        "checkerboard",
        "moons",
        "gmm1d",
        "thin_rolls",
    }


@pytest.mark.parametrize("name", sorted(T.TOYS))
def test_toy_shape_dtype_finite(name: str) -> None:
    x = D.sample_toy(name, 257, seed=3)
    assert x.shape == (257, DIMS[name])
    assert x.dtype == torch.float32
    assert x.device.type == "cpu"
    assert torch.isfinite(x).all()
    # roughly unit scale, as documented: per-coordinate std in [0.4, 1.4], |mean| < 0.4
    big = D.sample_toy(name, N, seed=3)
    assert ((big.std(0) > 0.4) & (big.std(0) < 1.4)).all(), big.std(0)
    assert (big.mean(0).abs() < 0.4).all(), big.mean(0)


@pytest.mark.parametrize("name", sorted(T.TOYS))
def test_toy_determinism(name: str) -> None:
    a = D.sample_toy(name, 500, seed=7)
    b = D.sample_toy(name, 500, seed=7)
    c = D.sample_toy(name, 500, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # default seed is 0
    assert torch.equal(D.sample_toy(name, 500), D.sample_toy(name, 500, seed=0))
    # an explicit generator gives the same stream as the same seed, and is advanced in place
    g = torch.Generator().manual_seed(7)
    first = D.sample_toy(name, 500, generator=g)
    second = D.sample_toy(name, 500, generator=g)
    assert torch.equal(first, a)
    assert not torch.equal(first, second)


def test_documented_constants() -> None:
    """The scales stated in the docstrings (the geometry tests read them from the module)."""
    assert T.MULTI_SWISS_ROLL_RADIUS == 0.4 and T.MULTI_SWISS_ROLL_NOISE == 0.01
    assert T.SWISS_ROLL_SCALE == 1 / 7 and T.SWISS_ROLL_NOISE == 0.05
    assert T.EIGHT_GAUSSIANS_RADIUS == math.sqrt(2) and T.EIGHT_GAUSSIANS_STD == 0.1
    assert T.MOONS_NOISE == 0.05
    assert (T.GMM1D_WEIGHTS, T.GMM1D_MEANS, T.GMM1D_STDS) == (
        (0.2, 0.5, 0.3),
        (-2.0, 0.0, 1.5),
        (0.3, 0.4, 0.2),
    )


def test_multi_swiss_roll_centers() -> None:
    expected = {(0.0, 0.0), (0.8, 0.8), (0.8, -0.8), (-0.8, 0.8), (-0.8, -0.8)}
    centers = D.MULTI_SWISS_ROLL_CENTERS
    assert centers.shape == (5, 2)
    assert {tuple(round(v, 6) for v in row) for row in centers.tolist()} == expected


def test_thin_rolls_modes() -> None:
    """Same centres and equal weights as multi_swiss_roll; rolls of radius 0.14 with noise
    0.002: every point within [0.14/3 − 6·0.002, 0.14 + 6·0.002] of its centre."""
    x = D.sample_toy("thin_rolls", N, seed=12)
    nearest, mode = torch.cdist(x, D.MULTI_SWISS_ROLL_CENTERS).min(dim=1)
    weights = torch.bincount(mode, minlength=5).double() / N
    assert (weights - 0.2).abs().max() <= _binomial_tol(0.2, N), weights
    r_out, margin = T.THIN_ROLLS_RADIUS, NOISE_BOUND * T.THIN_ROLLS_NOISE
    assert r_out - margin <= nearest.max() <= r_out + margin
    assert nearest.min() >= r_out / 3 - margin


def test_multi_swiss_roll_modes() -> None:
    x = D.sample_toy("multi_swiss_roll", N, seed=11)
    dist = torch.cdist(x, D.MULTI_SWISS_ROLL_CENTERS)
    nearest, mode = dist.min(dim=1)
    # Equal weights: each mode holds 1/5 of the points within 4 binomial SEs (0.011).
    weights = torch.bincount(mode, minlength=5).double() / N
    tol = _binomial_tol(0.2, N)
    assert (weights - 0.2).abs().max() <= tol, weights
    # Radii: the spiral spans [0.4/3, 0.4] around its centre; noise (std 0.01) moves a point
    # radially by less than 6 stds, so every point lies within [0.4/3 − 0.06, 0.4 + 0.06].
    r_out = T.MULTI_SWISS_ROLL_RADIUS
    margin = NOISE_BOUND * T.MULTI_SWISS_ROLL_NOISE
    assert nearest.max() <= r_out + margin
    assert nearest.min() >= r_out / 3 - margin
    # ...and the outer edge is actually reached (a roll of the wrong size fails here).
    assert nearest.max() >= r_out - margin
    # The discs of radius r_out + margin around the centres do not overlap, so the rolls are
    # separated and the nearest-centre assignment above recovers the true mode.
    gaps = torch.cdist(D.MULTI_SWISS_ROLL_CENTERS, D.MULTI_SWISS_ROLL_CENTERS)
    gaps = gaps + 10.0 * torch.eye(5)
    assert gaps.min() > 2 * (r_out + margin)


def _spiral_residual(p: torch.Tensor, scale: float) -> torch.Tensor:
    """Radial distance from points p (centred) to the spiral scale·(t cos t, t sin t).

    For the polar angle φ of a point the arms cross its ray at t = φ + 2πk; the residual is
    min_k |r − scale·t_k| over t_k within the parameter range [1.5π, 4.5π] (widened by 0.5
    for noise at the ends). The spiral's pitch satisfies tan ψ = 1/t ≤ 0.22, so this is at
    most 1.03× the Euclidean distance to the arm.
    """
    r = p.norm(dim=1, keepdim=True).double()
    phi = torch.atan2(p[:, 1], p[:, 0]).double().unsqueeze(1)
    t = phi + 2 * math.pi * torch.arange(-1, 4, dtype=torch.float64)
    t = torch.where((t >= 1.5 * math.pi - 0.5) & (t <= 4.5 * math.pi + 0.5), t, math.inf)
    return (r - scale * t).abs().min(dim=1).values


@pytest.mark.parametrize("name", ["swiss_roll", "multi_swiss_roll"])
def test_swiss_rolls_lie_on_their_spiral(name: str) -> None:
    x = D.sample_toy(name, N, seed=16)
    if name == "swiss_roll":
        scale, noise = T.SWISS_ROLL_SCALE, T.SWISS_ROLL_NOISE
        centred = x
    else:
        scale, noise = T.MULTI_SWISS_ROLL_RADIUS / (4.5 * math.pi), T.MULTI_SWISS_ROLL_NOISE
        mode = torch.cdist(x, D.MULTI_SWISS_ROLL_CENTERS).argmin(dim=1)
        centred = x - D.MULTI_SWISS_ROLL_CENTERS[mode]
    # Arms are 2π·scale = 18 noise stds apart, so a point off its spiral (wrong scale, wrong
    # parameter range, too much noise) lands up to 9 stds away; 6 stds × 1.03 (pitch) < 6.5.
    assert _spiral_residual(centred, scale).max() <= 6.5 * noise


def test_eight_gaussians_modes() -> None:
    x = D.sample_toy("8gaussians", N, seed=12)
    angles = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    means = math.sqrt(2.0) * torch.stack((angles.cos(), angles.sin()), dim=1)
    nearest, mode = torch.cdist(x, means).min(dim=1)
    weights = torch.bincount(mode, minlength=8).double() / N
    assert (weights - 1 / 8).abs().max() <= _binomial_tol(1 / 8, N), weights
    std = T.EIGHT_GAUSSIANS_STD
    assert nearest.max() <= NOISE_BOUND * std
    # Residual std: the std estimate from 2N coordinates has relative SE 1/sqrt(4N).
    resid = (x - means[mode]).std()
    assert abs(resid.item() / std - 1) <= N_SE / math.sqrt(4 * N), resid


def test_checkerboard_cells() -> None:
    x = D.sample_toy("checkerboard", N, seed=13)
    assert (x >= -2).all() and (x < 2).all()
    col = torch.floor(x[:, 0] + 2).long()
    row = torch.floor(x[:, 1] + 2).long()
    assert ((col + row) % 2 == 0).all()  # only the "black" cells
    counts = torch.bincount(4 * col + row, minlength=16).double() / N
    black = [4 * i + j for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    assert (counts[black] - 1 / 8).abs().max() <= _binomial_tol(1 / 8, N), counts


def _half_circle_distance(p: torch.Tensor, center: tuple[float, float], up: bool) -> torch.Tensor:
    """Distance from points p to the upper (or lower) unit half circle around ``center``."""
    v = p - torch.tensor(center)
    on_side = v[:, 1] >= 0 if up else v[:, 1] <= 0
    radial = (v.norm(dim=1) - 1).abs()
    ends = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    to_ends = torch.cdist(v, ends).min(dim=1).values
    return torch.where(on_side, radial, to_ends)


def test_moons_geometry() -> None:
    x = D.sample_toy("moons", N, seed=14)
    # Upper moon: (cos θ, sin θ) − (0.5, 0.25); lower: (1 − cos θ, 0.5 − sin θ) − (0.5, 0.25).
    d_up = _half_circle_distance(x, (-0.5, -0.25), up=True)
    d_low = _half_circle_distance(x, (0.5, 0.25), up=False)
    d = torch.minimum(d_up, d_low)
    # The two arcs are ≥ 0.5 = 10 noise stds apart, so the nearest arc is the true moon.
    assert d.max() <= NOISE_BOUND * T.MOONS_NOISE
    frac_up = (d_up < d_low).double().mean().item()
    assert abs(frac_up - 0.5) <= _binomial_tol(0.5, N), frac_up
    # The two moons' means, (−0.5, 2/π − 0.25) and (0.5, 0.25 − 2/π), average to the origin.
    se_mean = x.std(0) / math.sqrt(N)
    assert (x.mean(0).abs() <= N_SE * se_mean).all(), x.mean(0)
    # θ uniform on [0, π]: the upper moon's x-coordinate is cos θ − 0.5, with mean −0.5.
    up = x[d_up < d_low]
    se = math.sqrt(0.5 / up.shape[0])  # Var cos θ = 1/2
    assert abs(up[:, 0].mean().item() + 0.5) <= N_SE * se


def test_gmm1d_cdf() -> None:
    x = D.sample_toy("gmm1d", N, seed=15).squeeze(1).double()
    w, m, s = T.GMM1D_WEIGHTS, T.GMM1D_MEANS, T.GMM1D_STDS
    assert len(w) == len(m) == len(s) and abs(sum(w) - 1) < 1e-12
    # a grid through every component, including one std either side of each mean
    for q in (-2.5, -2.3, -2.0, -1.7, -1.0, -0.4, 0.0, 0.4, 1.0, 1.3, 1.5, 1.7, 2.0):
        cdf = sum(
            wi * 0.5 * (1 + math.erf((q - mi) / (si * math.sqrt(2))))
            for wi, mi, si in zip(w, m, s, strict=True)
        )
        # the empirical CDF at q is a binomial proportion with SE sqrt(F(1 − F)/N)
        emp = (x <= q).double().mean().item()
        assert abs(emp - cdf) <= _binomial_tol(cdf, N) + 1e-12, (q, emp, cdf)


def test_sample_toy_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown toy 'foo'; valid toys are: ")) as e:
        D.sample_toy("foo", 10)
    _check_message(e)
    assert str(e.value) == (
        "unknown toy 'foo'; valid toys are: "
        "8gaussians, checkerboard, gmm1d, moons, multi_swiss_roll, swiss_roll, thin_rolls."
    )
    for bad in (0, -3, 2.5, True, "4", None):
        with pytest.raises(ValueError, match=re.escape("n must be an integer ≥ 1, got ")) as e:
            D.sample_toy("moons", bad)  # type: ignore[arg-type]
        _check_message(e)
    with pytest.raises(ValueError, match="either generator or seed") as e:
        D.sample_toy("moons", 4, generator=torch.Generator(), seed=1)
    _check_message(e)
    for bad_seed in (-1, 2**32, 1.0):
        with pytest.raises(ValueError, match=re.escape("seed must be an integer in [0, ")) as e:
            D.sample_toy("moons", 4, seed=bad_seed)  # type: ignore[arg-type]
        _check_message(e)


# ---------------------------------------------------------------------------- digits


def _row_multiset(images: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(map(tuple, images.reshape(images.shape[0], -1).tolist()))


def test_digits_all() -> None:
    images, labels = D.load_digits("all")
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    # x/8 − 1 of integers 0…16: every pixel is an exact multiple of 1/8
    assert torch.equal(images * 8, torch.round(images * 8))
    assert labels.min().item() == 0 and labels.max().item() == 9
    assert torch.bincount(labels, minlength=10).min() > 150  # every class present (~180 each)


def test_digits_splits() -> None:
    all_images, all_labels = D.load_digits("all")
    train, train_labels = D.load_digits("train", seed=0)
    test, test_labels = D.load_digits("test", seed=0)
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8)
    assert train_labels.shape == (1500,) and test_labels.shape == (297,)
    for images in (train, test):
        assert images.min() >= -1 and images.max() <= 1
    # train ∪ test equals all as a multiset; with 1500 + 297 = 1797 the splits are disjoint
    assert _row_multiset(torch.cat((train, test))) == _row_multiset(all_images)
    # labels travel with their images (the 1797 images are pairwise distinct)
    label_of = {
        tuple(r): int(y)
        for r, y in zip(all_images.reshape(1797, -1).tolist(), all_labels, strict=True)
    }
    assert len(label_of) == 1797
    for images, labels in ((train, train_labels), (test, test_labels)):
        got = [label_of[tuple(r)] for r in images.reshape(images.shape[0], -1).tolist()]
        assert got == labels.tolist()
    # determinism: same seed → identical split, another seed → another split
    again, _ = D.load_digits("train", seed=0)
    other, _ = D.load_digits("train", seed=1)
    assert torch.equal(train, again)
    assert not torch.equal(train, other)
    # "train" is a shuffled subset, not sklearn's first 1500 images
    assert not torch.equal(train, all_images[:1500])


def test_digits_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown split 'val'; valid splits are: ")) as e:
        D.load_digits("val")
    _check_message(e)


# ---------------------------------------------------------------------------- DataSource


@pytest.mark.parametrize("name", sorted(D.DATASETS))
def test_data_source(name: str) -> None:
    src = D.get_data(name, n_train=1000, seed=2)
    assert isinstance(src, D.DataSource) and src.name == name
    if name == "digits":
        assert (src.kind, src.data_shape, src.n_train) == ("image", (1, 8, 8), 1500)
    else:
        assert (src.kind, src.data_shape, src.n_train) == ("vector", (DIMS[name],), 1000)
        assert torch.equal(src.data, D.sample_toy(name, 1000, seed=2))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b1, b2 = src.batch(64, g1), src.batch(64, g2)
    assert b1.shape == (64, *src.data_shape) and b1.dtype == torch.float32
    assert torch.equal(b1, b2)
    assert not torch.equal(b1, src.batch(64, g1))  # the generator advanced
    # held-out data: right shape, deterministic in its seed, and disjoint from training rows
    h = src.held_out(300, seed=1)
    assert h.shape == (300, *src.data_shape) and torch.isfinite(h).all()
    assert torch.equal(h, src.held_out(300, seed=1))
    assert not torch.equal(h, src.held_out(300, seed=2))
    train_rows = set(map(tuple, src.data.reshape(src.n_train, -1).tolist()))
    if name != "digits":  # continuous toys: no held-out point equals a training point
        held_rows = map(tuple, h.reshape(300, -1).tolist())
        assert not any(r in train_rows for r in held_rows)


def test_held_out_seed_does_not_replay_training() -> None:
    # training with seed s and held_out with the same s must still give different points
    src = D.get_data("8gaussians", n_train=100, seed=1)
    assert not torch.allclose(src.held_out(100, seed=1), src.data)


def test_batch_draws_with_replacement_from_training_set() -> None:
    src = D.get_data("moons", n_train=10, seed=0)
    b = src.batch(1000, torch.Generator().manual_seed(0))
    matches = (b[:, None, :] == src.data[None, :, :]).all(-1)  # (1000, 10)
    assert matches.any(1).all()  # every row is a training row
    assert matches.any(0).all()  # all 10 rows used (P(miss one) ≤ 10·0.9¹⁰⁰⁰ ≈ 2e-45)


def test_digits_held_out_is_test_split() -> None:
    src = D.get_data("digits", seed=3)
    test, _ = D.load_digits("test", seed=3)
    test_rows = set(map(tuple, test.reshape(297, -1).tolist()))
    train_rows = set(map(tuple, src.data.reshape(1500, -1).tolist()))
    small = src.held_out(297).reshape(297, -1).tolist()
    assert set(map(tuple, small)) == test_rows  # n ≤ 297: without replacement
    big = src.held_out(1000).reshape(1000, -1).tolist()
    assert all(tuple(r) in test_rows and tuple(r) not in train_rows for r in big)
    assert torch.equal(src.labels, D.load_digits("train", seed=3)[1])


def test_get_data_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown dataset 'foo'")) as e:
        D.get_data("foo")
    assert str(e.value) == (
        "unknown dataset 'foo'; valid datasets are: "
        "8gaussians, checkerboard, cifar10, digits, folder, gmm1d, mnist, moons, "
        "multi_swiss_roll, points, swiss_roll, thin_rolls."
    )
    for bad in (0, -1, 1.5, False):
        with pytest.raises(
            ValueError, match=re.escape("n_train must be an integer ≥ 1, got ")
        ) as e:
            D.get_data("moons", n_train=bad)  # type: ignore[arg-type]
        _check_message(e)
    src = D.get_data("moons", n_train=8)
    for bad in (0, -2, 3.0, "8"):
        with pytest.raises(
            ValueError, match=re.escape("batch_size must be an integer ≥ 1, got ")
        ) as e:
            src.batch(bad, torch.Generator())  # type: ignore[arg-type]
        _check_message(e)
        with pytest.raises(ValueError, match=re.escape("n must be an integer ≥ 1, got ")) as e:
            src.held_out(bad)  # type: ignore[arg-type]
        _check_message(e)
    for bad_seed in (-1, 2**31):
        with pytest.raises(
            ValueError, match=re.escape("seed must be an integer in [0, 2147483648)")
        ) as e:
            D.get_data("moons", seed=bad_seed)
        _check_message(e)
        with pytest.raises(
            ValueError, match=re.escape("seed must be an integer in [0, 2147483648)")
        ):
            src.held_out(4, seed=bad_seed)


# ---------------------------------------------------------------------------- isolation


def test_data_imports_no_other_phasediff_module() -> None:
    """Nothing of phasediff but data/ itself and the leaf helpers (docs/design.md §9)."""
    allowed = ("phasediff.data", "phasediff.files", "phasediff.validation")
    package = Path(D.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for mod in names:
                if mod.split(".")[0] == "phasediff":
                    assert mod.startswith(allowed), (path.name, mod)
