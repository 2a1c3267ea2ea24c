"""Progress bars and callbacks (issue 17 item 3; docs/samplers.md, "Progress and callbacks"):
every sampler takes `progress` (a tqdm bar, off by default) and calls `callback` with the same
keys — i, t, z, denoised (x̂₀ from the last network evaluation) and nfe."""

from __future__ import annotations

import pytest
import torch

from phasediff import processes as P
from phasediff.models import TimeMLP
from phasediff.objectives import VelocityFromDenoiser
from phasediff.samplers import REGISTRY, SAMPLERS, annealed_langevin, mild, noise_levels
from phasediff.samplers.registry import VELOCITY
from tests.gaussian import ExactGaussianScore, ExactMixtureScore

KEYS = {"i", "t", "z", "denoised", "nfe"}
MEANS = [[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]]
STEPS = 4
VP, OHGF = P.vp(), P.ohgf()  # one object each: the per-grid coefficient caches are shared


def _velocity_model(process: P.LinearProcess) -> torch.nn.Module:
    torch.manual_seed(1)
    net = TimeMLP(1, 2, 1, hidden=16, depth=2, time_dim=8, t_scale=process.T)
    return VelocityFromDenoiser(net.eval(), process)


def _case(name: str):
    """(model, process) a registry sampler takes: an exact mixture score on VP (every block
    noisy, so `pc` applies) or an x̂₀-predicting velocity MLP on the Oscillation HGF."""
    if VELOCITY in REGISTRY[name].kinds:
        return _velocity_model(OHGF), OHGF
    return ExactMixtureScore(VP, MEANS, 0.3), VP


def _run(name: str, **options):
    model, p = _case(name)
    if REGISTRY[name].adaptive:
        options.update(rtol=1e-3, atol=1e-3)
    gen = torch.Generator().manual_seed(0)
    return SAMPLERS[name](model, p, (8, 2), STEPS, generator=gen, **options)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_sampler_calls_back_with_the_same_keys(name):
    seen: list[dict] = []
    res = _run(name, callback=seen.append)
    assert seen, name
    for info in seen:
        assert set(info) == KEYS, (name, set(info))
        assert info["z"].shape[0] == 8 and info["denoised"].shape == (8, 2)
        assert isinstance(info["t"], float) and isinstance(info["nfe"], int)
    assert seen[-1]["nfe"] == res.nfe and seen[-1]["t"] == pytest.approx(float(res.times[-1]))
    if not REGISTRY[name].adaptive:  # adaptive solvers call back once, at the end
        assert [info["i"] for info in seen] == list(range(STEPS))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_library_draws_no_bar_by_default_and_one_when_asked(name, capfd):
    capfd.readouterr()
    _run(name)
    assert capfd.readouterr().err == ""
    _run(name, progress=True)
    err = capfd.readouterr().err
    assert "%|" in err, (name, err)  # tqdm's "name:  25%|██▌  | 1/4 [...]"


@pytest.mark.parametrize("sampler", [annealed_langevin, mild])
def test_langevin_samplers_share_the_keys_and_the_bar(sampler, capfd):
    sigmas = noise_levels(5.0, 0.1, 3)
    seen: list[dict] = []

    def score(x, sigma):
        return -x / (0.25 + sigma**2)

    capfd.readouterr()
    res = sampler(score, (6, 2), sigmas, T=2, callback=seen.append, progress=True)
    assert "%|" in capfd.readouterr().err
    assert len(seen) == 6 and all(KEYS <= set(info) for info in seen)
    last = seen[-1]
    assert last["t"] == pytest.approx(0.1) and last["nfe"] == res.nfe - 1  # + final denoising
    assert last["z"].shape == (6, 1, 2) and last["denoised"].shape == (6, 2)


@pytest.mark.parametrize("name", ["cld", "vp", "psld"])
def test_denoised_is_the_posterior_mean_of_the_last_evaluation(name):
    """Exact score of Gaussian data N(0, s² I): E[x₀ | z_t] = s² eᵀ(Σ_t + s² e eᵀ)⁻¹ z in
    closed form; Euler–Maruyama's step i evaluates the model at (trajectory[i], times[i])."""
    p, s2 = getattr(P, name)(), 0.5
    seen: list[dict] = []
    res = SAMPLERS["em"](
        ExactGaussianScore(p, s2), p, (64, 2), 5, callback=seen.append, return_trajectory=True,
        dtype=torch.float64, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for i, info in enumerate(seen):
        E, S = p.kernel(res.times[i : i + 1])
        e = E[0, :, 0]
        gain = s2 * torch.linalg.solve(S[0] + s2 * torch.outer(e, e), e)
        want = torch.einsum("k,bkd->bd", gain, res.trajectory[i])
        torch.testing.assert_close(info["denoised"], want, rtol=1e-6, atol=1e-8)


def test_denoised_of_a_velocity_model_is_its_own_x0():
    """An x̂₀-predicting velocity model: the read-out (V − c₁x)/c₂ of the Euler sampler's call
    returns the network's x̂₀."""
    p = P.ohgf()
    model = _velocity_model(p).double()
    seen: list[dict] = []
    res = SAMPLERS["hgf_euler"](
        model, p, (8, 2), 3, callback=seen.append, return_trajectory=True, dtype=torch.float64
    )
    for i, info in enumerate(seen):
        t = res.times[i].expand(8)
        want = model.denoise(res.trajectory[i], t)[:, 0]
        torch.testing.assert_close(info["denoised"], want, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- the CLI: a bar for every sampler
TINY = ["train.steps=5", "train.tensorboard=false", "data.n_train=256", "train.batch_size=32"]
TINY += ["model.hidden=16", "model.depth=2", "train.sample_every=0", "train.log_every=5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VP run (every block noisy: every score sampler applies, `pc` included) and an
    Oscillation-HGF velocity run, each trained for 5 steps."""
    from phasediff.training import Trainer, load_config

    out = {}
    for kind, config in ((VELOCITY, "configs/toy_ohgf.toml"), ("score", "configs/toy_vp.toml")):
        path = tmp_path_factory.mktemp(kind)
        Trainer(load_config(config, TINY), path, progress=False).fit()
        out[kind] = path
    return out


def _invoke(*args: str):
    from typer.testing import CliRunner

    from phasediff.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_cli_draws_a_bar_for_every_sampler(name, runs, tmp_path, monkeypatch):
    from functools import partial, update_wrapper

    from phasediff.samplers import registry
    from phasediff.training import plots

    monkeypatch.setattr(plots, "save_samples", lambda *args, **kwargs: None)  # not tested here
    if REGISTRY[name].adaptive:  # a 5-step network makes a stiff ODE: a loose tolerance
        fn = registry.SAMPLERS[name]
        monkeypatch.setitem(
            registry.SAMPLERS, name, update_wrapper(partial(fn, rtol=1e-2, atol=1e-2), fn)
        )
    run = runs[VELOCITY if VELOCITY in REGISTRY[name].kinds else "score"]
    out = str(tmp_path / "s.npz")
    shown = _invoke(
        "sample", str(run), "--sampler", name, "--steps", "3", "--num", "16", "--out", out
    )
    assert shown.exit_code == 0, shown.output
    assert f"{name}: 100%|" in shown.output, shown.output


def test_no_progress_silences_the_cli_and_eval_draws_the_bar(runs, tmp_path):
    args = ["--sampler", "em", "--steps", "3", "--num", "16", "--no-progress"]
    quiet = _invoke("sample", str(runs["score"]), *args, "--out", str(tmp_path / "s.npz"))
    assert quiet.exit_code == 0 and "%|" not in quiet.output, quiet.output
    args = ["--sampler", "em", "--steps", "3", "--num", "16"]
    evaluated = _invoke("eval", str(runs["score"]), *args, "--out", str(tmp_path / "eval"))
    assert evaluated.exit_code == 0 and "em: 100%|" in evaluated.output, evaluated.output
