"""Stability limits of the explicit samplers (phasediff/samplers/stability.py), checked against
Monte-Carlo runs with the exact score of a thin Gaussian mixture, and the warning."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from phasediff import processes as P
from phasediff.samplers import SAMPLERS
from phasediff.samplers.stability import (
    EM_PHASE_SPACE_STEPS,
    FACTOR,
    amplification,
    stability_limit,
)

from .gaussian import ExactGaussianScore, ExactMixtureScore

ANGLES = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
MEANS = torch.stack([torch.cos(ANGLES), torch.sin(ANGLES)], 1)  # 8 Gaussians on the unit circle


def blown(process, method: str, steps: int, n: int = 2000) -> int:
    """Samples of the exact-score run that are non-finite or beyond ±2 (data within ±1.2)."""
    score = ExactMixtureScore(process, MEANS, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = SAMPLERS[method](
            score, process, (n, 2), steps,
            generator=torch.Generator().manual_seed(0), dtype=torch.float64,
        ).x  # fmt: skip
    return int(((~torch.isfinite(x).all(1)) | (x.abs().amax(1) > 2)).sum())


def test_vp_explicit_steps_never_amplify_and_k2_k3_do_below_their_limits():
    # VP's point-mass flow has one real decaying rate ≈ β/(2σ²) and Euler steps of a uniform
    # grid never overshoot it by 2×; CLD's and HOLD's rates grow like 1/t and 1/t² near t_min
    assert amplification(P.vp(), 10, "euler") == 1.0
    assert stability_limit(P.vp(), "euler") == 1
    cld, hold = P.cld(), P.hold()
    assert stability_limit(cld, "euler") == 56 and stability_limit(hold, "euler") == 377
    assert stability_limit(cld, "heun") < stability_limit(cld, "euler")
    for process, method in [(cld, "euler"), (hold, "euler"), (cld, "heun"), (hold, "heun")]:
        limit = stability_limit(process, method)
        assert amplification(process, limit, method) <= FACTOR
        assert amplification(process, limit - 1, method) > FACTOR
    # Euler–Maruyama: the measured floor of phase-space processes, the criterion for VP
    assert stability_limit(cld, "em") == stability_limit(hold, "em") == EM_PHASE_SPACE_STEPS
    assert stability_limit(P.vp(), "em") == 4


def test_the_limit_separates_blow_up_from_none_with_the_exact_mixture_score():
    # independent check: the exact score of 8 Gaussians (std 0.05), 2000 samples. Below the
    # limit (18 of 56 CLD Euler steps: amplification 7) most samples blow up; at it none do
    cld, hold = P.cld(), P.hold()
    assert blown(cld, "euler", 18) > 500
    assert blown(cld, "euler", stability_limit(cld, "euler")) == 0
    assert blown(hold, "euler", 20) > 1000  # amplification 336
    assert blown(hold, "euler", stability_limit(hold, "euler")) == 0
    # em: 1.5 % of CLD's samples blow up at 20 steps (measured on 10⁴: 154), none at the floor
    assert blown(cld, "em", 20) > 5
    assert blown(cld, "em", EM_PHASE_SPACE_STEPS) == 0


def test_explicit_samplers_warn_below_their_limit_and_splitting_never_does():
    process = P.cld()
    score = ExactGaussianScore(process, 0.5)
    with pytest.warns(
        UserWarning, match="euler with 20 steps on the uniform grid .* use at least 56"
    ):
        SAMPLERS["euler"](score, process, (4, 2), 20)
    with pytest.warns(UserWarning, match="heun with 5 steps"):
        SAMPLERS["heun"](score, process, (4, 2), 5)
    with pytest.warns(UserWarning, match="em with 10 steps .* below 50 steps .* at least 50"):
        SAMPLERS["em"](score, process, (4, 2), 10)  # CLD: the criterion passes, the floor not
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails these calls
        SAMPLERS["euler"](score, process, (4, 2), 60)
        SAMPLERS["lie_trotter"](score, process, (4, 2), 5)
        SAMPLERS["ei1c"](score, process, (4, 2), 5)


def test_bad_method_is_one_sentence():
    with pytest.raises(ValueError, match="method must be one of euler, heun, em, got 'rk4'"):
        amplification(P.cld(), 10, "rk4")
