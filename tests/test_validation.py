"""Bad input: one ValueError sentence that names the input and what would be valid."""

from __future__ import annotations

import math

import pytest
import torch

from phasediff import processes as P

I2 = torch.eye(2, dtype=torch.float64)
SKEW = torch.tensor([[0.0, -1.0], [1.0, 0.0]])

CASES = [
    (
        "non-psd D",
        lambda: P.recipe([[1.0, 0.0], [0.0, -0.5]], SKEW, I2),
        r"D must be positive semi-definite.*-0\.5",
    ),
    ("asymmetric D", lambda: P.recipe([[1.0, 0.3], [0.0, 1.0]], SKEW, I2), r"D must be symmetric"),
    (
        "non-skew Q",
        lambda: P.recipe(I2, [[0.0, 1.0], [1.0, 0.0]], I2),
        r"Q must be skew-symmetric.*2",
    ),
    (
        "non-spd S",
        lambda: P.recipe(I2, SKEW, [[1.0, 0.0], [0.0, 0.0]]),
        r"S must be symmetric positive definite",
    ),
    (
        "indefinite S",
        lambda: P.recipe(I2, SKEW, [[1.0, 2.0], [2.0, 1.0]]),
        r"smallest eigenvalue is -1",
    ),
    ("shape mismatch", lambda: P.recipe(I2, SKEW, torch.eye(3)), r"S must be 2×2"),
    ("non-square", lambda: P.recipe(torch.ones(2, 3), SKEW, I2), r"D must be a square"),
    ("NaN in D", lambda: P.recipe([[math.nan, 0.0], [0.0, 1.0]], SKEW, I2), r"D must be finite"),
    ("beta zero", lambda: P.cld(beta=0.0), r"beta must be a finite number > 0, got 0"),
    ("beta negative", lambda: P.vp(beta_min=-1.0), r"beta_min must be a finite number > 0"),
    ("beta inf", lambda: P.hold(beta=math.inf), r"beta must be a finite number > 0"),
    ("ve sigmas", lambda: P.ve(sigma_min=1.0, sigma_max=0.5), r"sigma_max must be larger"),
    ("t_min >= T", lambda: P.recipe(I2, SKEW, I2, t_min=1.0, T=1.0), r"0 ≤ t_min < T"),
    ("order zero", lambda: P.langevin_chain(0), r"order k must be an integer ≥ 1"),
    ("order float", lambda: P.critical(2.5), r"order k must be an integer ≥ 1"),
    ("rate negative", lambda: P.critical(3, rate=-1.0), r"rate must be a finite number > 0"),
    ("coupling count", lambda: P.langevin_chain(3, couplings=[1.0]), r"k − 1 = 2 entries"),
    (
        "coupling sign",
        lambda: P.langevin_chain(3, couplings=[1.0, -1.0]),
        r"couplings must be finite and > 0",
    ),
    ("friction", lambda: P.langevin_chain(2, friction=0.0), r"friction must be finite and > 0"),
    ("masses", lambda: P.langevin_chain(3, masses=[1.0, -2.0]), r"masses must be k − 1 = 2"),
    ("aux_init", lambda: P.hold(aux_init=-0.1), r"aux_init must be a finite number ≥ 0"),
    ("K negative", lambda: P.hamiltonian(K=-1.0), r"K must be a finite number ≥ 0"),
    ("sigma_v", lambda: P.hamiltonian(sigma_v=0.0), r"sigma_v must be a finite number > 0"),
    ("unknown preset", lambda: P.get_process("told"), r"valid presets are: .*hold.*vp"),
    (
        "t above T",
        lambda: P.cld().kernel(1.5),
        r"t must lie in \[t_min, T\] = \[1e-05, 1\], got values in \[1\.5, 1\.5\]",
    ),
    (
        "t below t_min",
        lambda: P.hold().kernel(torch.tensor([0.5, 1e-6])),
        r"t must lie in \[t_min, T\]",
    ),
    ("t NaN", lambda: P.vp().kernel(math.nan), r"t must be finite"),
    ("s after t", lambda: P.vp().kernel(0.2, s=0.5), r"0 ≤ s ≤ t"),
    (
        "x0 1-D",
        lambda: P.vp().sample_marginal(torch.zeros(5), 0.5),
        r"x0 must be shaped \(batch, \*data_shape\)",
    ),
    (
        "x0 NaN",
        lambda: P.vp().sample_marginal(torch.tensor([[math.nan]]), 0.5),
        r"x0 contains NaN or Inf",
    ),
    (
        "x0 integer",
        lambda: P.vp().sample_marginal(torch.zeros(2, 2, dtype=torch.long), 0.5),
        r"x0 must be a floating-point",
    ),
    ("x0 not tensor", lambda: P.vp().sample_marginal([[0.0]], 0.5), r"x0 must be a torch.Tensor"),
    (
        "t batch mismatch",
        lambda: P.vp().sample_marginal(torch.zeros(3, 2), torch.full((2,), 0.5)),
        r"t must be a scalar or have shape \(3,\)",
    ),
    ("prior shape", lambda: P.cld().prior_sample((0, 2)), r"shape must be \(batch, \*data_shape\)"),
    (
        "state shape",
        lambda: P.cld().prior_logp(torch.zeros(4, 3, 2)),
        r"z must be shaped \(batch, 2",
    ),
    (
        "noise damping",
        lambda: P.LinearProcess([[1.0]], P.ConstantBeta(1.0), A=[[-1.0]], noise_damping=-1),
        r"noise_damping must be",
    ),
    (
        "schedule type",
        lambda: P.LinearProcess([[1.0]], 3.0, A=[[-1.0]]),
        r"schedule must be a BetaSchedule",
    ),
    (
        "A and recipe",
        lambda: P.LinearProcess(I2, P.ConstantBeta(1.0), S=I2, A=I2),
        r"either A or the recipe",
    ),
    ("nothing", lambda: P.LinearProcess(I2, P.ConstantBeta(1.0)), r"needs either the recipe"),
    (
        "aux for k=1",
        lambda: P.LinearProcess([[1.0]], P.ConstantBeta(1.0), A=[[-1.0]], aux_init_cov=[[1.0]]),
        r"no auxiliaries",
    ),
]


@pytest.mark.parametrize("builder, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_one_clear_sentence(builder, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        builder()
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
