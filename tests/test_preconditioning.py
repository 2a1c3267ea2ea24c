"""Preconditioned score models (objectives/preconditioning.py) against independent references:
the exact score of Gaussian and Gaussian-mixture data (tests/gaussian.py) and Monte Carlo."""

from __future__ import annotations

import pytest
import torch

from phasediff import processes as P
from phasediff.objectives import Preconditioned, hybrid_score_matching, reference_coefficients
from phasediff.processes import apply_blocks
from tests.gaussian import ExactGaussianScore, ExactMixtureScore

SCORE_PRESETS = {
    "vp": lambda: P.vp(),
    "subvp": lambda: P.subvp(),
    "ve": lambda: P.ve(),
    "cld": lambda: P.cld(),
    "psld": lambda: P.psld(),
    "hold": lambda: P.hold(),
    "critical4": lambda: P.critical(4),
    "chain3": lambda: P.langevin_chain(3),
}


class ZeroNet(torch.nn.Module):
    def forward(self, z, t):
        return torch.zeros_like(z[:, :1])


def _times(process: P.LinearProcess) -> torch.Tensor:
    lo, hi = process.t_min, process.T
    return torch.tensor([lo, 2 * lo, 1e-3 * hi, 0.01 * hi, 0.1 * hi, 0.5 * hi, hi])


def _score(process, eps_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    _, _, L = process.marginal(t)
    return -apply_blocks(process.noisy_score_factor(L), eps_hat)


@pytest.mark.parametrize("name", sorted(SCORE_PRESETS))
def test_zero_network_is_the_exact_gaussian_reference_score(name):
    """F = 0 must give the exact score of N(0, σ²I) data at every t, t_min included; 1e-6
    relative: float64 throughout, the only error is the solve of k×k systems whose condition
    number reaches ~1e9 at t_min (≈ 1e-7 relative)."""
    process = SCORE_PRESETS[name]()
    sigma = 0.7
    model = Preconditioned(ZeroNet(), process, sigma)
    gen = torch.Generator().manual_seed(0)
    for t in _times(process).tolist():
        z = torch.randn((64, process.k, 3), generator=gen, dtype=torch.float64)
        tt = torch.full((64,), t, dtype=torch.float64)
        got = _score(process, model(z, tt), tt)
        want = ExactGaussianScore(process, sigma**2)(z, tt)
        err = (got - want).abs().max() / want.abs().max()
        assert err < 1e-6, (name, t, float(err))


@pytest.mark.parametrize("name", ["cld", "psld", "hold", "critical4"])
def test_oracle_residual_gives_the_exact_mixture_score(name):
    """With F = E[F* | z] computed from the mixture's exact posterior mean, P z − g F is the
    exact ε-prediction of a Gaussian mixture — including PSLD, whose two noisy blocks are
    predicted from ONE network block (the Tweedie form of the score)."""
    process = SCORE_PRESETS[name]()
    sigma = 0.9
    means = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], dtype=torch.float64)
    s2 = 0.05**2

    class Oracle(torch.nn.Module):
        def forward(self, z, t):
            E, S = process.kernel(t.to(torch.float64))
            e = E[:, :, 0]
            C = S + s2 * e[:, :, None] * e[:, None, :]
            Cinv = torch.linalg.inv(C)
            diff = z[:, None] - e[:, None, :, None] * means[None, :, None, :]
            sol = torch.einsum("bij,bKjd->bKid", Cinv, diff)
            resp = torch.softmax(-0.5 * (diff * sol).sum((2, 3)), dim=1)
            post = means[None] + s2 * torch.einsum("bj,bKjd->bKd", e, sol)  # E[x₀ | z, i]
            x0_hat = (resp[:, :, None] * post).sum(1)
            c = reference_coefficients(process, t, sigma)
            ref = apply_blocks(c["r"][:, None, :], z)[:, 0]
            return ((x0_hat - ref) / c["c_out"][:, None])[:, None]

    model = Preconditioned(Oracle(), process, sigma, input_scaling=False)
    exact = ExactMixtureScore(process, means, 0.05)
    gen = torch.Generator().manual_seed(1)
    for t in _times(process).tolist()[1:]:
        x0 = means[torch.randint(0, 3, (256,), generator=gen)]
        tt = torch.full((256,), t, dtype=torch.float64)
        z, _ = process.sample_marginal(x0, tt, generator=gen)
        got = _score(process, model(z, tt), tt)
        want = exact(z, tt)
        # relative 1e-6: float64 arithmetic; the score itself reaches 1e6 at small t
        err = (got - want).abs().max() / want.abs().max().clamp_min(1.0)
        assert err < 1e-6, (name, t, float(err))


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "hold"])
def test_target_and_input_are_unit_variance_for_reference_data(name):
    """Under the reference data N(0, σ²I) the regression target F* has unit variance and
    c_in ⊙ z has unit variance per block at every t: with F = 0 the 'denoiser' loss is
    E‖F*‖² = 1. Monte Carlo with 2·10⁴ samples × 2 coordinates: the mean of a χ²₁ has
    sd √(2/4·10⁴) = 0.007, and the bound 0.035 is 5 sd."""
    process = SCORE_PRESETS[name]()
    sigma = 0.6
    model = Preconditioned(ZeroNet(), process, sigma)
    gen = torch.Generator().manual_seed(2)
    n = 20_000
    for t in _times(process).tolist():
        x0 = sigma * torch.randn((n, 2), generator=gen, dtype=torch.float64)
        tt = torch.full((n,), t, dtype=torch.float64)
        loss = hybrid_score_matching(model, process, x0, gen, weighting="denoiser", t=tt)
        assert abs(float(loss) - 1.0) < 0.035, (name, t, float(loss))
        z, _ = process.sample_marginal(x0, tt, generator=gen)
        c_in = model.coefficients(tt)["c_in"][0]
        var = (z * c_in[None, :, None]).pow(2).mean((0, 2))
        assert torch.allclose(var, torch.ones_like(var), atol=0.035), (name, t, var)


def test_denoise_is_the_reference_posterior_mean_for_a_zero_network():
    process = P.cld()
    sigma = 0.5
    model = Preconditioned(ZeroNet(), process, sigma)
    t = torch.full((8,), 0.05, dtype=torch.float64)
    z = torch.randn((8, 2, 3), dtype=torch.float64)
    E, S = process.kernel(t)
    e = E[:, :, 0]
    C = S + sigma**2 * e[:, :, None] * e[:, None, :]
    want = sigma**2 * torch.einsum("bj,bjd->bd", torch.linalg.solve(C, e), z)
    torch.testing.assert_close(model.denoise(z, t), want, rtol=1e-9, atol=1e-12)


def test_bad_arguments_are_one_sentence():
    with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
        Preconditioned(ZeroNet(), P.cld(), 0.0)
    with pytest.raises(ValueError, match="time_feature must be one of"):
        Preconditioned(ZeroNet(), P.cld(), 1.0, time_feature="sigma")
    with pytest.raises(ValueError, match="no noisy blocks"):
        Preconditioned(ZeroNet(), P.ohgf(), 1.0)


def test_denoiser_weighting_refuses_plain_models():
    process = P.cld()

    class Eps(torch.nn.Module):
        def forward(self, z, t):
            return torch.zeros_like(z[:, 1:])

    with pytest.raises(ValueError, match="needs a preconditioned model"):
        hybrid_score_matching(Eps(), process, torch.zeros(4, 2), weighting="denoiser")


def _config(extra: list[str]):
    from phasediff.training import load_config

    base = [
        "train.steps=40",
        "train.batch_size=64",
        "train.tensorboard=false",
        "train.ckpt_every=20",
        "train.log_every=10",
        "train.threads=1",
        "data.n_train=2000",
        "model.hidden=32",
        "model.depth=2",
        "model.time_dim=16",
    ]
    return load_config("configs/toy_psld.toml", [*base, *extra])


def test_preconditioned_run_trains_reloads_and_samples(tmp_path):
    """From a config: the network outputs one block (the x₀ residual) even for PSLD's two
    noisy blocks, σ_data is the training RMS, the run reloads with the same outputs, and
    the samplers draw finite points from it."""
    from phasediff.samplers import SAMPLERS
    from phasediff.training import Trainer, load_trained

    cfg = _config(["model.precondition=true", "objective.weighting=denoiser"])
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.fit()
    model, process, _, data = load_trained(tmp_path)
    assert isinstance(model, Preconditioned)
    assert model.net.n_out == 1 and len(process.noisy_blocks) == 2
    rms = float(data.data.double().pow(2).mean().sqrt())
    assert model.sigma_data == pytest.approx(rms, rel=1e-12)
    z = torch.randn(5, process.k, 2)
    t = torch.full((5,), 0.3)
    with torch.no_grad():
        assert torch.equal(model(z, t), trainer.ema_model()(z, t))
    for name in ("em", "lie_trotter", "ei"):
        out = SAMPLERS[name](model, process, (64, 2), 10, generator=torch.Generator())
        assert torch.isfinite(out.x).all() and out.nfe == 10, name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["model.precondition=true", "model.parameterization=score"], "needs model.param"),
        (["model.sigma_data=0"], "sigma_data"),
        (["model.time_feature=sigma"], "time_feature"),
    ],
)
def test_preconditioning_config_errors_name_the_field(tmp_path, extra, message):
    from phasediff.training import Trainer

    with pytest.raises(ValueError, match=message):
        Trainer(_config(extra), tmp_path, progress=False)


def test_cosine_lr_decay_reaches_its_floor(tmp_path):
    from phasediff.training import Trainer

    cfg = _config(["train.lr_decay=cosine", "train.lr_min_ratio=0.1", "train.warmup=10"])
    tr = Trainer(cfg, tmp_path, progress=False)
    lr = cfg.train.lr
    assert tr.lr_at(5) == pytest.approx(0.5 * lr)  # warm-up unchanged
    assert tr.lr_at(10) == pytest.approx(lr)
    assert tr.lr_at(25) == pytest.approx(lr * (0.1 + 0.9 * 0.5))  # half way: cos = 0
    assert tr.lr_at(40) == pytest.approx(0.1 * lr)


def test_noise_level_density_is_edm_lognormal_on_ve():
    """On VE (k = 1, z = x₀ + σ(t)ε) c_out/σ_data = s/√(1 + s²) with s = σ(t)/σ_data, so the
    sampled σ(t) = √Σ_t must be log-normal: log(σ/σ_data) ~ N(p_mean, p_std²) wherever the
    level lies inside [σ(t_min), σ(T)]. With 2·10⁵ draws the median and quartiles of the
    unclamped part have standard errors < 0.01; the bound 0.03 is > 3 of them plus the
    table's interpolation error (4096 nodes)."""
    from phasediff.objectives.preconditioning import NoiseLevelDensity

    process = P.ve()
    sigma_data, p_mean, p_std = 0.5, -0.5, 0.6
    density = NoiseLevelDensity(process, sigma_data, p_mean, p_std)
    t = density(200_000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float64 and float(t.min()) >= process.t_min and float(t.max()) <= 1
    _, Sigma, _ = process.marginal(t)
    log_s = (Sigma[:, 0, 0].sqrt() / sigma_data).log()
    q = torch.quantile(log_s, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    z = torch.tensor([-0.6745, 0.0, 0.6745], dtype=torch.float64)  # normal quartiles
    assert torch.allclose(q, p_mean + p_std * z, atol=0.03), q


def test_edm_time_density_needs_a_preconditioned_model(tmp_path):
    from phasediff.training import Trainer

    with pytest.raises(ValueError, match="needs a preconditioned model"):
        plain = ["model.precondition=false", "objective.weighting=eps"]
        Trainer(_config([*plain, "objective.time_density=edm"]), tmp_path, progress=False)
    cfg = _config(["model.precondition=true", "objective.time_density=edm", "train.steps=5"])
    Trainer(cfg, tmp_path / "ok", progress=False).fit()


def test_edm_density_keeps_a_uniform_share_where_the_log_normal_has_none():
    """For CLD the log-normal alone never draws t > 0.7 (c_out saturates long before T), so a
    network would never be trained where samplers start; p_uniform = 0.1 draws 10 % of the
    times from U[t_min, T]: P(t > 0.7) = 0.1·0.3 = 0.03. With 2·10⁵ draws the standard error
    of that share is 3.8·10⁻⁴; the tolerance 0.002 is > 5 of them."""
    from phasediff.objectives.preconditioning import NoiseLevelDensity

    process = P.cld()
    bare = NoiseLevelDensity(process, 0.5, -1.2, 1.2)(200_000, torch.Generator().manual_seed(0))
    assert float((bare > 0.7).double().mean()) == 0.0
    mixed = NoiseLevelDensity(process, 0.5, -1.2, 1.2, p_uniform=0.1)
    t = mixed(200_000, torch.Generator().manual_seed(0))
    assert float((t > 0.7).double().mean()) == pytest.approx(0.03, abs=0.002)
    assert float(t.min()) >= process.t_min and float(t.max()) <= process.T
    with pytest.raises(ValueError, match=r"p_uniform must be in \[0, 1\], got 1.5"):
        NoiseLevelDensity(process, 0.5, p_uniform=1.5)
    cfg = _config(["model.precondition=true", "objective.time_density=edm"])
    assert cfg.objective.p_uniform == 0.1  # on by default
