"""The process owns its reverse dynamics (issue 16 item 2): `ReverseDynamics` (processes/)
and its model adapter `ModelDynamics` (samplers/) give the score, the reverse drift and
diffusion and the probability-flow field; samplers use them, take explicit time tensors and
starting states, and each fits on one screen."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from phasediff import processes as P
from phasediff.models import TimeMLP
from phasediff.objectives import Preconditioned, score_from_output
from phasediff.processes import ReverseDynamics, apply_blocks
from phasediff.samplers import REGISTRY, SAMPLERS, ModelDynamics, time_grid
from phasediff.samplers.hamiltonian import prior_positions
from tests.gaussian import ExactMixtureScore

SAMPLERS_DIR = Path(__file__).resolve().parents[1] / "phasediff" / "samplers"
MEANS = [[1.0, 0.0], [-1.0, 0.5]]


def _eps_mlp(process: P.LinearProcess) -> TimeMLP:
    torch.manual_seed(0)
    return TimeMLP(process.k, 2, len(process.noisy_blocks), hidden=16, depth=2, time_dim=8).eval()


# ---------------------------------------------------------------- the matrices
@pytest.mark.parametrize("name", ["vp", "subvp", "cld", "psld", "hold"])
def test_reverse_sde_drift_and_diffusion_match_the_process(name):
    """K(η = 1) = 2βhD[:, n] is (GGᵀ)[:, n] of the forward diffusion factor G = √(2βh)G₀, F = βA,
    and the PF-ODE (η = 0) takes half the score term; all are batches of k×k (k×m) matrices."""
    p = P.get_process(name)
    rev = ReverseDynamics(p)
    t = torch.linspace(p.t_min, p.T, 7, dtype=torch.float64)
    F, K = rev.drift(t, eta=1.0)
    G = p.diffusion(t)
    n = list(p.noisy_blocks)
    assert F.shape == (7, p.k, p.k) and K.shape == (7, p.k, len(n))
    torch.testing.assert_close(F, p.beta(t)[:, None, None] * p.A)
    torch.testing.assert_close(K, (G @ G.transpose(-1, -2))[..., n], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(rev.drift(t, eta=0.0)[1], K / 2)
    torch.testing.assert_close(rev.diffusion(t), G)
    torch.testing.assert_close(rev.diffusion(t, eta=0.5), 0.5 * G)


def test_one_adapter_turns_eps_and_score_outputs_into_the_score():
    p = P.psld()
    rev = ReverseDynamics(p)
    t = torch.tensor([0.01, 0.5], dtype=torch.float64)
    torch.testing.assert_close(rev.output_to_score(t, "eps"), -rev.score_factor(t))
    assert torch.equal(rev.output_to_score(t, "score"), torch.eye(2).expand(2, 2, 2).double())
    with pytest.raises(ValueError, match="ε or score outputs"):
        rev.output_to_score(t, "velocity")


@pytest.mark.parametrize("kind", ["eps", "precondition"])
def test_model_dynamics_score_and_flow_for_eps_models(kind):
    """For an ε-model (a plain one and a preconditioned one, unchanged) the adapter's score is
    the objectives' `score_from_output` and the PF field is β[Az − hD ŝ]."""
    p = P.cld()
    net = _eps_mlp(p).double()
    if kind == "precondition":
        torch.manual_seed(1)
        net = Preconditioned(TimeMLP(p.k, 2, 1, hidden=16, depth=2), p, 0.5).double()
    dyn = ModelDynamics(net, p, dtype=torch.float64)
    z = torch.randn(5, p.k, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = 0.3
    tt = torch.full((5,), t, dtype=torch.float64)
    S = dyn.score_map(torch.tensor(t, dtype=torch.float64))
    s = dyn.score(z, t, S)
    torch.testing.assert_close(s, score_from_output(p, net, z, tt[:1], net(z, tt)))
    beta = float(p.beta(torch.tensor(t)))
    want = beta * apply_blocks(p.A, z) - beta * apply_blocks(p.D[:, [1]], s)
    torch.testing.assert_close(dyn.flow(t, z), want)
    assert dyn.nfe == 2


# ---------------------------------------------------------------- explicit times, start state
SCORE_NAMES = [n for n, e in REGISTRY.items() if "score" in e.kinds]
VELOCITY_NAMES = [n for n, e in REGISTRY.items() if "velocity" in e.kinds]


def _setup(name):
    if name in VELOCITY_NAMES:
        p = P.ohgf()
        torch.manual_seed(1)
        net = TimeMLP(1, 2, 1, hidden=16, depth=2, time_dim=8)
        net.parameterization = "velocity"
        return p, net.eval(), lambda g: prior_positions(p, (16, 2), g)
    p = P.vp()
    return p, ExactMixtureScore(p, MEANS, 0.3), lambda g: p.prior_sample((16, 2), g)


@pytest.mark.parametrize("name", SCORE_NAMES + VELOCITY_NAMES)
def test_explicit_times_and_start_state_reproduce_the_default_run(name):
    """grid = the tensor of the named grid gives the identical output; so does z = the prior
    draw the sampler would make itself (the generator then continues as in the default run);
    the given z is not modified."""
    p, net, draw = _setup(name)
    fn = SAMPLERS[name]
    ref = fn(net, p, (16, 2), 4, generator=torch.Generator().manual_seed(3))
    explicit = fn(net, p, (16, 2), 4, grid=ref.times, generator=torch.Generator().manual_seed(3))
    assert torch.equal(explicit.z, ref.z) and torch.equal(explicit.times, ref.times)
    g = torch.Generator().manual_seed(3)
    z0 = draw(g)
    kept = z0.clone()
    started = fn(net, p, (16, 2), 4, z=z0, generator=g)
    assert torch.equal(started.z, ref.z) and started.nfe == ref.nfe
    assert torch.equal(z0, kept)


def test_explicit_times_are_the_named_grid_for_uniform_and_edm():
    p = P.cld()
    net = ExactMixtureScore(p, MEANS, 0.3)
    for grid in ("uniform", "edm"):
        a = SAMPLERS["em"](net, p, (8, 2), 5, grid=grid, generator=torch.Generator().manual_seed(0))
        times = time_grid(p, 5, grid)
        b = SAMPLERS["em"](
            net, p, (8, 2), 5, grid=times, generator=torch.Generator().manual_seed(0)
        )
        assert torch.equal(a.z, b.z)


def test_a_given_start_state_is_used():
    p = P.cld()
    net = ExactMixtureScore(p, MEANS, 0.3)
    z0 = torch.zeros(8, 2, 2)
    out = SAMPLERS["heun"](net, p, (8, 2), 3, z=z0, return_trajectory=True)
    assert torch.equal(out.trajectory[0], z0)
    assert torch.equal(out.z[0], out.z[1])  # a deterministic sampler from equal starts


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(grid=torch.linspace(1.0, 1e-3, 4)), "float64 tensor"),  # float32
        (dict(grid=torch.linspace(1.0, 1e-3, 5, dtype=torch.float64)), "steps \\+ 1 = 4"),
        (dict(grid=torch.linspace(1e-3, 1.0, 4, dtype=torch.float64)), "strictly decreasing"),
        (dict(grid=torch.linspace(2.0, 1e-3, 4, dtype=torch.float64)), "t_min, T"),
        (dict(grid=["uniform"]), "grid name"),
        (dict(z=torch.zeros(8, 2)), "shape \\(8, 1, 2\\)"),
        (dict(z=torch.full((8, 1, 2), float("nan"))), "NaN or Inf"),
    ],
)
def test_explicit_times_and_start_states_are_validated(bad, match):
    p = P.vp()
    net = ExactMixtureScore(p, MEANS, 0.3)
    for name in ("em", "ei", "lie_trotter"):
        with pytest.raises(ValueError, match=match):
            SAMPLERS[name](net, p, (8, 2), 3, **bad)


# ---------------------------------------------------------------- one screen per sampler
MAX_BODY = 60
SAMPLER_MODULES = (
    "sde",
    "ode",
    "predictor_corrector",
    "splitting",
    "exponential",
    "hamiltonian",
    "dynamics",
)


def _bodies() -> dict[str, int]:
    """Lines of every function body in the sampler modules, the docstring not counted."""
    out = {}
    for module in SAMPLER_MODULES:
        tree = ast.parse((SAMPLERS_DIR / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
                out[f"{module}.{node.name}"] = lines
    return out


def test_every_sampler_body_fits_on_one_screen():
    """Every registered sampler function, and every helper in the sampler modules, has a body
    of at most 60 lines (docstring excluded), like k-diffusion's samplers."""
    bodies = _bodies()
    for entry in REGISTRY.values():
        fn = inspect.unwrap(entry.function)
        key = f"{fn.__module__.rsplit('.', 1)[1]}.{fn.__name__}"
        assert key in bodies, key
    too_long = {k: v for k, v in bodies.items() if v > MAX_BODY}
    assert not too_long, too_long


def test_no_sampler_rebuilds_the_reverse_drift():
    """The reverse drift, the noise damping and the PF field come from ReverseDynamics /
    ModelDynamics: the sampler modules never read A, D, β or the damping themselves."""
    for module in ("sde", "ode", "predictor_corrector", "splitting", "exponential"):
        source = (SAMPLERS_DIR / f"{module}.py").read_text()
        for needle in ("process.A", "process.D", ".beta(", "noise_damping", "expm1"):
            assert needle not in source, (module, needle)
    for module in ("ei_coefficients", "hamiltonian", "base"):
        source = (SAMPLERS_DIR / f"{module}.py").read_text()
        assert "noise_damping" not in source and "expm1" not in source, module


def test_likelihood_uses_the_public_dynamics_not_a_sampler_module():
    path = Path(__file__).resolve().parents[1] / "phasediff" / "evaluation" / "likelihood.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "phasediff.samplers" in imported
    assert not any(m.startswith("phasediff.samplers.") for m in imported), imported
