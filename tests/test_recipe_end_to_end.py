"""Any valid recipe runs end to end with no code path per preset (docs/design.md §9,
docs/design-your-own-process.md): random D ⪰ 0 (often singular), Q = −Qᵀ, S ≻ 0 for k = 2…4
are written into a TOML config, trained a few steps on a toy with a tiny MLP (the shipped toy
recipe: preconditioned ε-model, denoiser weighting, EDM time density), reloaded, sampled by
every score sampler of the registry, evaluated, and drawn as paths and phases. Each step
works, or is refused with the reason the docs give for it.

Sized for `make test`: one drawn recipe (derandomized, so the suite's time is fixed) and two
explicit ones (k = 2 with D invertible, so `pc` applies; k = 4 with a rank-1 D), 40 training
steps, three sampler steps, 32 samples."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phasediff.evaluation import evaluate_samples
from phasediff.evaluation.figures import plot_paths, plot_phases
from phasediff.samplers.registry import REGISTRY, SCORE, get_sampler, nfe_for_steps, sampler_names
from phasediff.training import load_config, load_trained, train

# Sampler → (when it refuses, the reason its docs give): docs/samplers.md, "Predictor–corrector".
DOCUMENTED_REFUSALS = {
    "pc": (lambda p: len(p.noisy_blocks) < p.k, r"needs the score of every block"),
}
# Cheap solver options for the test's budget (the adaptive solver would refine its steps).
OPTIONS = {"dopri5": {"rtol": 1e-2, "atol": 1e-2}}


@st.composite
def recipes(draw) -> dict:
    """A valid recipe as lists of rows: D = GGᵀ with G zero outside a random non-empty set of
    noisy blocks and of random rank (D singular unless every block is noisy at full rank),
    a dense skew Q with x↔v coupled, S = XXᵀ/k + ½I, β ∈ [1, 4]."""
    k = draw(st.integers(2, 4))
    noisy = draw(st.lists(st.booleans(), min_size=k, max_size=k).filter(any))
    rank = draw(st.integers(1, sum(noisy)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    G = torch.randn(k, rank, generator=g, dtype=torch.float64)
    G[[i for i in range(k) if not noisy[i]]] = 0.0
    Qh = torch.randn(k, k, generator=g, dtype=torch.float64)
    Q = Qh - Qh.T
    Q[0, 1] = -(0.5 + Q[0, 1].abs())
    Q[1, 0] = -Q[0, 1]
    X = torch.randn(k, k, generator=g, dtype=torch.float64)
    S = X @ X.T / k + 0.5 * torch.eye(k, dtype=torch.float64)
    beta = draw(st.floats(1.0, 4.0))
    return {"D": (G @ G.T).tolist(), "Q": Q.tolist(), "S": S.tolist(), "beta": beta}


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(float(value))


def write_config(path: Path, params: dict) -> Path:
    body = "\n".join(f"{key} = {_toml(value)}" for key, value in params.items())
    path.write_text(
        f"""seed = 0
[process]
preset = "recipe"
[process.params]
{body}
[data]
name = "8gaussians"
n_train = 512
[model]
kind = "mlp"
hidden = 16
depth = 2
time_dim = 8
precondition = true
[objective]
name = "hsm"
weighting = "denoiser"
time_density = "edm"
[train]
steps = 40
batch_size = 32
warmup = 5
log_every = 20
ckpt_every = 40
tensorboard = false
threads = 1
""",
        encoding="utf-8",
    )
    return path


FULL_RANK_K2 = {  # PSLD-like: both blocks noisy, D invertible, so pc applies too
    "D": [[0.3, 0.1], [0.1, 0.6]],
    "Q": [[0.0, -1.0], [1.0, 0.0]],
    "S": [[1.0, 0.0], [0.0, 0.5]],
    "beta": 3.0,
}


SINGULAR_K4 = {  # x and v noise-free, D of rank 1 on (a, j), a dense skew Q
    "D": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.5, 0.25]],
    "Q": [
        [0.0, -1.0, -0.5, 0.3],
        [1.0, 0.0, -1.2, -0.4],
        [0.5, 1.2, 0.0, -0.8],
        [-0.3, 0.4, 0.8, 0.0],
    ],
    "S": [[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.1, 0.0], [0.0, 0.1, 0.8, 0.0], [0.0, 0.0, 0.0, 1.5]],
    "beta": 2.0,
}


@settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(params=recipes())
@example(params=FULL_RANK_K2)
@example(params=SINGULAR_K4)
def test_a_random_recipe_trains_samples_evaluates_and_plots(tmp_path_factory, params):
    tmp = tmp_path_factory.mktemp("recipe")
    config = load_config(write_config(tmp / "recipe.toml", params))
    train(config, tmp / "run", progress=False)
    model, process, _, data = load_trained(tmp / "run")
    assert process.k == len(params["D"])
    gen = torch.Generator().manual_seed(0)

    samples = None
    for name in sampler_names(SCORE):
        refuses, reason = DOCUMENTED_REFUSALS.get(name, (lambda p: False, ""))
        fn = get_sampler(name, model)
        try:
            res = fn(model, process, (32, 2), 3, generator=gen, **OPTIONS.get(name, {}))
        except ValueError as exc:
            assert refuses(process) and re.search(reason, str(exc)), (name, str(exc))
            continue
        assert not refuses(process), f"{name} should have refused {params}"
        assert res.x.shape == (32, 2) and bool(torch.isfinite(res.x).all()), name
        expected = nfe_for_steps(name, 3)
        assert REGISTRY[name].adaptive or res.nfe == expected, (name, res.nfe, expected)
        samples = res.x if name == "lie_trotter" else samples

    report = evaluate_samples(samples, data)
    assert report["toy"]["sliced_w2"]["value"] >= 0
    assert plot_paths(tmp / "paths.png", [process], n_paths=3, steps=12).stat().st_size > 0
    phases = plot_phases(tmp / "phases.png", process, n_paths=3, steps=12, sampler_steps=3)
    assert phases.stat().st_size > 0
