"""Seeded low-dimensional toy distributions (2-D point clouds and a 1-D mixture).

Every sampler draws all of its randomness from one CPU ``torch.Generator``, so a given
generator state (or seed) gives bit-identical float32 tensors on every call. The samplers
compute in float32 on the CPU.

Scales (stated per toy below) are chosen so that each toy lives at roughly unit scale:
per-coordinate standard deviations between 0.5 and 1.3, means near the origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from phasediff.validation import check_int

__all__ = [
    "GMM1D_MEANS",
    "GMM1D_STDS",
    "GMM1D_WEIGHTS",
    "MULTI_SWISS_ROLL_CENTERS",
    "MULTI_SWISS_ROLL_NOISE",
    "MULTI_SWISS_ROLL_RADIUS",
    "THIN_ROLLS_NOISE",
    "THIN_ROLLS_RADIUS",
    "TOYS",
    "sample_toy",
]

_DTYPE = torch.float32

# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed, so larger seeds would
# silently alias smaller ones; seeds are therefore restricted to [0, 2**32).
SEED_LIMIT = 2**32

# Spiral parameter range shared by both Swiss rolls: t ∈ [1.5π, 4.5π] (1.5 turns).
_T_MIN = 1.5 * math.pi
_T_MAX = 4.5 * math.pi

MULTI_SWISS_ROLL_CENTERS = torch.tensor(
    [[0.0, 0.0], [0.8, 0.8], [0.8, -0.8], [-0.8, 0.8], [-0.8, -0.8]], dtype=_DTYPE
)
"""Centres of the five rolls of ``multi_swiss_roll``: the origin and (±0.8, ±0.8)."""

MULTI_SWISS_ROLL_RADIUS = 0.4
"""Outer radius of each small roll before noise (the inner radius is a third of it)."""

MULTI_SWISS_ROLL_NOISE = 0.01
"""Per-coordinate standard deviation of the Gaussian noise added to ``multi_swiss_roll``."""

SWISS_ROLL_SCALE = 1.0 / 7.0
SWISS_ROLL_NOISE = 0.05

EIGHT_GAUSSIANS_RADIUS = math.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.1

MOONS_NOISE = 0.05

GMM1D_WEIGHTS = (0.2, 0.5, 0.3)
GMM1D_MEANS = (-2.0, 0.0, 1.5)
GMM1D_STDS = (0.3, 0.4, 0.2)


# ---------------------------------------------------------------------------- validation


def check_count(value: object, name: str) -> int:
    """Return ``value`` as an int if it is an integer ≥ 1, else raise a one-sentence ValueError."""
    return check_int(value, name, 1)


def check_seed(value: object, name: str = "seed", limit: int = SEED_LIMIT) -> int:
    """Return ``value`` as an int if it is an integer in [0, limit), else raise ValueError."""
    return check_int(value, name, 0, limit)


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU, got device {generator.device}.")
    return generator


# ---------------------------------------------------------------------------- samplers


def _spiral(n: int, generator: torch.Generator, scale: float, noise: float) -> torch.Tensor:
    """Swiss-roll spiral: t ~ U[1.5π, 4.5π], point scale·(t cos t, t sin t) + noise·N(0, I)."""
    t = _T_MIN + (_T_MAX - _T_MIN) * torch.rand(n, generator=generator, dtype=_DTYPE)
    points = scale * torch.stack((t * torch.cos(t), t * torch.sin(t)), dim=1)
    return points + noise * torch.randn(n, 2, generator=generator, dtype=_DTYPE)


def multi_swiss_roll(n: int, generator: torch.Generator) -> torch.Tensor:
    """Five small Swiss rolls (HOLD paper, Fig. 4), shape (n, 2).

    Construction, per point: a mode k ~ Uniform{0, …, 4} (equal weights 1/5); a spiral
    parameter t ~ U[1.5π, 4.5π]; the point ``c_k + s·(t cos t, t sin t) + 0.01·ε`` with
    ``c_k`` a row of ``MULTI_SWISS_ROLL_CENTERS`` (origin and (±0.8, ±0.8)),
    ``s = 0.4 / (4.5π)`` and ε ~ N(0, I₂). Each roll so spans radii [0.133, 0.4] around its
    centre (arms 0.178 apart). Neighbouring centres are ≥ 0.8·√2 ≈ 1.131 apart, so the
    rolls are separated by a gap of at least 1.131 − 2·0.4 ≈ 0.33 = 33 noise stds.
    Overall extent: [−1.2, 1.2]².
    """
    mode = torch.randint(0, 5, (n,), generator=generator)
    scale = MULTI_SWISS_ROLL_RADIUS / _T_MAX
    points = _spiral(n, generator, scale, MULTI_SWISS_ROLL_NOISE)
    return points + MULTI_SWISS_ROLL_CENTERS[mode]


THIN_ROLLS_RADIUS = 0.14
"""Outer radius of each roll of ``thin_rolls`` (a third of ``multi_swiss_roll``'s)."""

THIN_ROLLS_NOISE = 0.002
"""Per-coordinate noise std of ``thin_rolls`` (a fifth of ``multi_swiss_roll``'s)."""


def thin_rolls(n: int, generator: torch.Generator) -> torch.Tensor:
    """Thin structure at a small scale, shape (n, 2): the five centres of ``multi_swiss_roll``
    with rolls of outer radius 0.14 (arms 0.062 apart) and noise 0.002 (31 noise stds between
    arms). The score is steep near the data for longer than on ``multi_swiss_roll``, which is
    where long-trained phase-space models used to blow up under few-step samplers
    (docs/objectives.md, "Preconditioning"). Same construction otherwise; extent ±0.94."""
    mode = torch.randint(0, 5, (n,), generator=generator)
    points = _spiral(n, generator, THIN_ROLLS_RADIUS / _T_MAX, THIN_ROLLS_NOISE)
    return points + MULTI_SWISS_ROLL_CENTERS[mode]


def swiss_roll(n: int, generator: torch.Generator) -> torch.Tensor:
    """One Swiss roll, shape (n, 2).

    t ~ U[1.5π, 4.5π], point ``(t cos t, t sin t)/7 + 0.05·ε``, ε ~ N(0, I₂): radii in
    [0.67, 2.02], arms 2π/7 ≈ 0.9 apart, per-coordinate std ≈ 1.
    """
    return _spiral(n, generator, SWISS_ROLL_SCALE, SWISS_ROLL_NOISE)


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """Eight equal-weight Gaussians, shape (n, 2).

    Means at √2·(cos 2πk/8, sin 2πk/8), k = 0…7 (mode chosen uniformly), isotropic std 0.1:
    per-coordinate variance 1 + 0.01; neighbouring means are 1.08 = 10.8 stds apart.
    """
    mode = torch.randint(0, 8, (n,), generator=generator)
    angle = mode.to(_DTYPE) * (2.0 * math.pi / 8.0)
    means = EIGHT_GAUSSIANS_RADIUS * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    return means + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=generator, dtype=_DTYPE)


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform density on the 8 "black" cells of a 4×4 board on [−2, 2)², shape (n, 2).

    A cell (column i, row j), i, j ∈ {0, …, 3} counted from −2, is black when i + j is even;
    per-coordinate std 2/√3 ≈ 1.15, no noise.
    """
    x = 4.0 * torch.rand(n, generator=generator, dtype=_DTYPE) - 2.0
    column = torch.floor(x + 2.0).clamp(0, 3)
    row = torch.remainder(column, 2) + 2 * torch.randint(0, 2, (n,), generator=generator)
    y = row + torch.rand(n, generator=generator, dtype=_DTYPE) - 2.0
    return torch.stack((x, y), dim=1)


def moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles of radius 1, equal weights, shape (n, 2).

    With θ ~ U[0, π] and a fair coin: upper moon (cos θ, sin θ), lower moon
    (1 − cos θ, 0.5 − sin θ); then shifted by −(0.5, 0.25) to centre the support on the
    origin and perturbed by 0.05·ε, ε ~ N(0, I₂). Support before noise: x ∈ [−1.5, 1.5],
    y ∈ [−0.75, 0.75] (per-coordinate stds ≈ 0.87 and 0.5).
    """
    lower = torch.randint(0, 2, (n,), generator=generator).to(torch.bool)
    theta = math.pi * torch.rand(n, generator=generator, dtype=_DTYPE)
    c, s = torch.cos(theta), torch.sin(theta)
    x = torch.where(lower, 1.0 - c, c) - 0.5
    y = torch.where(lower, 0.5 - s, s) - 0.25
    points = torch.stack((x, y), dim=1)
    return points + MOONS_NOISE * torch.randn(n, 2, generator=generator, dtype=_DTYPE)


def gmm1d(n: int, generator: torch.Generator) -> torch.Tensor:
    """1-D Gaussian mixture, shape (n, 1).

    Weights ``GMM1D_WEIGHTS`` = (0.2, 0.5, 0.3), means ``GMM1D_MEANS`` = (−2, 0, 1.5), stds
    ``GMM1D_STDS`` = (0.3, 0.4, 0.2): mean 0.05, std ≈ 1.26.
    """
    weights = torch.tensor(GMM1D_WEIGHTS, dtype=_DTYPE)
    mode = torch.multinomial(weights, n, replacement=True, generator=generator)
    means = torch.tensor(GMM1D_MEANS, dtype=_DTYPE)[mode]
    stds = torch.tensor(GMM1D_STDS, dtype=_DTYPE)[mode]
    return (means + stds * torch.randn(n, generator=generator, dtype=_DTYPE)).unsqueeze(1)


TOYS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "multi_swiss_roll": multi_swiss_roll,
    "thin_rolls": thin_rolls,
    "swiss_roll": swiss_roll,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "moons": moons,
    "gmm1d": gmm1d,
}
"""Toy name → sampler ``f(n, generator) -> float32 tensor of shape (n, d)``."""

TOY_DIMS: dict[str, int] = {name: 1 if name == "gmm1d" else 2 for name in TOYS}
"""Toy name → dimension d of one sample."""


def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Draw ``n`` points of toy ``name``: float32, shape (n, 2), or (n, 1) for ``gmm1d``.

    Randomness comes from ``generator`` (advanced in place) or, if it is None, from a fresh
    CPU generator seeded with ``seed`` (0 when both are None); passing both is an error.
    """
    if name not in TOYS:
        valid = ", ".join(sorted(TOYS))
        raise ValueError(f"unknown toy {name!r}; valid toys are: {valid}.")
    n = check_count(n, "n")
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed to sample_toy, not both.")
    if generator is None:
        generator = torch.Generator().manual_seed(check_seed(0 if seed is None else seed))
    else:
        _check_generator(generator)
    return TOYS[name](n, generator)
