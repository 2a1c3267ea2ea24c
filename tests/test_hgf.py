"""Hamiltonian generative flows: presets, the velocity objective, exact optimal fields, the
zero-force equivalences (flow matching, VP, Oscillation HGF) and the HGF samplers."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from phasediff import processes as P
from phasediff.cli import app
from phasediff.evaluation import sliced_w2
from phasediff.models import TimeMLP
from phasediff.objectives import (
    OBJECTIVES,
    hgf_velocity,
    optimal_velocity_gaussian,
    optimal_velocity_mixture,
    sample_times,
)
from phasediff.objectives.hamiltonian import velocity_moments, velocity_pair
from phasediff.samplers import SAMPLERS
from phasediff.training import load_config, load_trained
from phasediff.training.trainer import Trainer, build_model
from tests.gaussian import ExactMixtureScore


@pytest.fixture
def one_thread():
    """Small-network training is fastest (and least disturbed by a busy machine) on one
    thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GMM_MEANS = torch.tensor([[1.2, 0.0], [-0.6, 0.9], [-0.6, -0.9]], dtype=torch.float64)
GMM_STD = 0.3


def gmm_sample(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 3, (n,), generator=g)
    return GMM_MEANS[idx] + GMM_STD * torch.randn(n, 2, generator=g, dtype=torch.float64)


class ExactVelocity(torch.nn.Module):
    """The exact optimal velocity u_t(x) of a Gaussian mixture as a velocity model."""

    parameterization = "velocity"

    def __init__(self, process, means, std, weights=None):
        super().__init__()
        self.process, self.means, self.std, self.weights = process, means, std, weights

    def forward(self, x, t):
        u = optimal_velocity_mixture(
            self.process, x[:, 0].double(), t.double(), self.means, self.std, self.weights
        )
        return u[:, None].to(x.dtype)


# ------------------------------------------------------------------------------ presets
def test_ohgf_preset_is_a_quarter_period_oscillator():
    alpha, s = 1.7, 0.6
    p = P.ohgf(alpha=alpha, data_std=s)
    assert p.name == "ohgf" and p.noisy_blocks == ()
    assert torch.allclose(p.A, torch.tensor([[0.0, 1.0], [-(alpha**2), 0.0]], dtype=torch.float64))
    # the initial law of v is part of the process: v₀ ~ N(0, α² s²)
    assert math.isclose(float(p.initial_cov[1, 1]), (alpha * s) ** 2, rel_tol=1e-14)
    assert math.isclose(p.T, math.pi / (2 * alpha), rel_tol=1e-14)
    E, _ = p.kernel(torch.tensor(p.T, dtype=torch.float64))
    assert abs(float(E[0, 0])) < 1e-14  # x_T forgets x₀
    assert math.isclose(float(p.prior_cov[0, 0]), s * s, rel_tol=1e-12)  # x_T = v₀/α


def test_sample_marginal_of_hamiltonian_flows_matches_closed_form():
    """sample_marginal (Cholesky path with jitter on the rank-1 Σ_t) has the moments of
    x_t = cos(αt)x₀ + sin(αt)v₀/α, v_t = −α sin(αt)x₀ + cos(αt)v₀ for x₀ = 0.3 fixed."""
    alpha, s, t = 1.3, 0.8, 0.7
    p = P.ohgf(alpha=alpha, data_std=s)
    x0 = torch.full((200_000, 1), 0.3, dtype=torch.float64)
    z, _ = p.sample_marginal(x0, t, generator=torch.Generator().manual_seed(0))
    c, sn, sv = math.cos(alpha * t), math.sin(alpha * t), alpha * s
    mean = torch.tensor([c * 0.3, -alpha * sn * 0.3], dtype=torch.float64)
    cov = sv**2 * torch.tensor([[sn**2 / alpha**2, sn * c / alpha], [sn * c / alpha, c**2]])
    flat = z[:, :, 0]
    # 2·10⁵ draws: SE of the means ≤ 0.8/450 ≈ 2e-3, of the covariances ≈ 1.5·0.7/450 ≈ 2.5e-3
    assert torch.allclose(flat.mean(0), mean, atol=8e-3)
    assert torch.allclose(torch.cov(flat.T), cov.double(), atol=1e-2)


def test_rectified_flow_preset_is_the_straight_interpolant():
    p = P.rectified_flow()
    t = torch.tensor([1e-3, 0.25, 0.5, 0.9, 0.999], dtype=torch.float64)
    E, S = p.kernel(t)
    assert torch.allclose(E[:, 0, 0], 1 - t, atol=1e-13)
    assert torch.allclose(E[:, 0, 1], t, atol=1e-13)
    assert torch.allclose(S[:, 0, 0], t * t, atol=1e-13)  # from v₀ ~ N(0, 1) only
    with pytest.raises(ValueError, match="T must lie in"):
        P.rectified_flow(T=1.0)


@pytest.mark.parametrize(
    "process, direct",
    [
        # zero force: ẋ = v₀ and x_t − x₀ = t v₀
        (P.zero_force(sigma_v=1.3), lambda x0, xt, u, t: (xt - x0) - t * u),
        # straight interpolant: ẋ = v₀ − x₀ = (x_t − x₀)/t
        (P.rectified_flow(), lambda x0, xt, u, t: (xt - x0) - t * u),
        # Oscillation HGF (α = 1.5): v₀ = α(x_t − c x₀)/s, ẋ = −α s x₀ + c v₀
        (
            P.ohgf(alpha=1.5, data_std=0.7),
            lambda x0, xt, u, t: (
                u
                - (
                    -1.5 * torch.sin(1.5 * t) * x0
                    + torch.cos(1.5 * t) * 1.5 * (xt - torch.cos(1.5 * t) * x0) / torch.sin(1.5 * t)
                )
            ),
        ),
    ],
    ids=["zero_force", "rectified_flow", "ohgf"],
)
def test_velocity_pairs_follow_the_exact_dynamics(process, direct):
    """Every (x_t, ẋ_t) the objective draws lies exactly on a trajectory of the flow."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(512, 3, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * process.T * torch.rand(512, generator=g, dtype=torch.float64)
    xt, u = velocity_pair(process, x0, t, g)
    residual = direct(x0, xt[:, 0], u[:, 0], t[:, None])
    assert float(residual.abs().max()) < 1e-9


# ------------------------------------------------------------------ scale invariance (OHGF)
def test_ohgf_input_and_target_scales_are_constant_in_time():
    """Var x_t = s² and Var v_t = α²s² for every t (docs/hgf.md), in closed form through the
    kernel and by Monte Carlo on non-Gaussian data of the same variance (8 Gaussians).
    Zero force and the straight interpolant, for contrast, change scale with t."""
    alpha, s = 2.0, 1.0
    p = P.ohgf(alpha=alpha, data_std=s)
    t = torch.linspace(p.t_min, p.T, 41, dtype=torch.float64)
    var_x, var_u, _ = velocity_moments(p, t, s * s)
    assert torch.allclose(var_x, torch.full_like(t, s * s), rtol=1e-12)
    assert torch.allclose(var_u, torch.full_like(t, (alpha * s) ** 2), rtol=1e-12)
    zf_x, zf_u, _ = velocity_moments(P.zero_force(), t[1:] / p.T, 1.0)
    assert torch.allclose(zf_x, 1 + (t[1:] / p.T) ** 2) and torch.allclose(
        zf_u, torch.ones(40, dtype=torch.float64)
    )
    rf_x, rf_u, _ = velocity_moments(P.rectified_flow(), 0.999 * t / p.T, 1.0)
    u = 0.999 * t / p.T
    assert torch.allclose(rf_x, (1 - u) ** 2 + u**2) and torch.allclose(
        rf_u, 2 * torch.ones(41, dtype=torch.float64)
    )

    from phasediff.data import get_data

    x0 = get_data("8gaussians", n_train=100_000, seed=0).data.double()
    x0 = x0 / x0.std(0)  # exactly unit variance per coordinate (the data is not Gaussian)
    g = torch.Generator().manual_seed(0)
    for tk in (0.02, 0.3, 0.6, p.T):
        xt, ut = velocity_pair(p, x0, torch.tensor(tk, dtype=torch.float64), g)
        # 2·10⁵ coordinates: SE of a variance ≈ √2·Var/450 ≈ 0.3 % (α²: 1.2 %)
        assert abs(float(xt.var()) - 1.0) < 0.015, tk
        assert abs(float(ut.var()) - alpha**2) < 0.06, tk


# ---------------------------------------------------------------- exact optimal velocity
def _quadrature_velocity(x, x0_of_v, udot_of_v, jac, data_pdf, v_std):
    """E[ẋ_t | x_t = x] by trapezoid quadrature over v₀ (independent of the kernel code)."""
    v = torch.linspace(-12 * v_std, 12 * v_std, 40_001, dtype=torch.float64)[None]
    x = x[:, None]
    x0 = x0_of_v(x, v)
    dens = data_pdf(x0) * torch.exp(-0.5 * (v / v_std) ** 2) / jac
    num = torch.trapezoid(udot_of_v(x0, v) * dens, v, dim=1)
    return num / torch.trapezoid(dens, v, dim=1)


def _gmm1d_pdf(x):
    from phasediff.data.toys import GMM1D_MEANS, GMM1D_STDS, GMM1D_WEIGHTS

    out = torch.zeros_like(x)
    for w, m, sd in zip(GMM1D_WEIGHTS, GMM1D_MEANS, GMM1D_STDS, strict=True):
        out = out + w * torch.exp(-0.5 * ((x - m) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return out


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_optimal_velocity_of_a_1d_mixture_matches_quadrature(t):
    """optimal_velocity_mixture (kernel + Gaussian conditioning) against direct numerical
    integration over v₀ of the gmm1d data (three components of different widths)."""
    from phasediff.data.toys import GMM1D_MEANS, GMM1D_STDS, GMM1D_WEIGHTS

    x = torch.linspace(-3.0, 2.5, 23, dtype=torch.float64)
    mix = dict(means=torch.tensor(GMM1D_MEANS)[:, None], std=torch.tensor(GMM1D_STDS))
    w = torch.tensor(GMM1D_WEIGHTS, dtype=torch.float64)
    # zero force, σ_v = 1.3: x₀ = x − t v, ẋ = v
    zf = P.zero_force(sigma_v=1.3)
    exact = optimal_velocity_mixture(zf, x[:, None], t, weights=w, **mix)[:, 0]
    quad = _quadrature_velocity(
        x, lambda x, v: x - t * v, lambda x0, v: v + 0 * x0, 1.0, _gmm1d_pdf, 1.3
    )
    assert torch.allclose(exact, quad, atol=1e-7, rtol=1e-6)
    # Oscillation HGF α = 1.4, s = 0.8: x₀ = (x − sin·v/α)/cos, ẋ = −α sin x₀ + cos v
    a, sv = 1.4, 1.4 * 0.8
    c, sn = math.cos(a * t), math.sin(a * t)
    exact = optimal_velocity_mixture(P.ohgf(alpha=a, data_std=0.8), x[:, None], t, weights=w, **mix)
    quad = _quadrature_velocity(
        x,
        lambda x, v: (x - sn * v / a) / c,
        lambda x0, v: -a * sn * x0 + c * v,
        c,
        _gmm1d_pdf,
        sv,
    )
    assert torch.allclose(exact[:, 0], quad, atol=1e-7, rtol=1e-6)


def test_ohgf_field_vanishes_for_its_own_gaussian():
    """For data N(0, s²) the Oscillation HGF with data_std = s starts in its Boltzmann law
    N(0, s²) ⊗ N(0, α²s²), which the flow preserves: v_t ⫫ x_t and u ≡ 0."""
    p = P.ohgf(alpha=1.3, data_std=0.5)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    for t in (0.01, 0.5, 1.0):
        assert float(optimal_velocity_gaussian(p, x, t, 0.25).abs().max()) < 1e-12


# ------------------------------------------------ zero force ↔ flow matching, VP and OHGF
def _zero_force_field(x, tau, data):
    zf = P.zero_force(sigma_v=1.0, T=1e4)
    return optimal_velocity_mixture(zf, x, tau, **data)


@pytest.mark.parametrize(
    "data",
    [
        dict(means=torch.zeros(1, 2, dtype=torch.float64), std=0.7),  # Gaussian N(0, 0.49 I)
        dict(means=GMM_MEANS, std=GMM_STD),
    ],
    ids=["gaussian", "mixture"],
)
def test_zero_force_after_time_and_scale_change_is_flow_matching(data):
    """y_s = (1 − s) x_τ with τ = s/(1 − s) is the straight interpolant (1 − s)x₀ + s v₀, so
    u_FM(y, s) = −y/(1 − s) + V₀(y/(1 − s), τ)/(1 − s) (docs/hgf.md, eq. ZF→FM). Checked on a
    grid of s and y against the rectified_flow process (another kernel, clock and drift) and,
    for Gaussian data, against the hand closed form of E[x₁ − x₀ | y_s]."""
    g = torch.Generator().manual_seed(0)
    y = 2.0 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    rf = P.rectified_flow()
    for s in (0.02, 0.2, 0.5, 0.8, 0.95):
        fm = optimal_velocity_mixture(rf, y, s, **data)
        tau = s / (1 - s)
        via_zero_force = (-y + _zero_force_field(y / (1 - s), tau, data)) / (1 - s)
        assert torch.allclose(fm, via_zero_force, atol=1e-9, rtol=1e-9), s
        if data["means"].abs().max() == 0:
            v = data["std"] ** 2
            closed = (s - (1 - s) * v) / ((1 - s) ** 2 * v + s**2) * y
            assert torch.allclose(fm, closed, atol=1e-12, rtol=1e-10), s


def test_vp_probability_flow_is_the_zero_force_hgf():
    """VP diffusion's PF-ODE drift −½β(y + ∇log p_t(y)) with the exact mixture score (computed
    through the VP kernel by tests.gaussian) equals the zero-force velocity after
    y = α_t x_τ, τ = σ_t/α_t: E[ẏ|y] = (α̇/α) y + α τ̇ V₀(y/α, τ)."""
    vp = P.vp()
    data = dict(means=GMM_MEANS, std=GMM_STD)
    score = ExactMixtureScore(vp, GMM_MEANS, GMM_STD)
    g = torch.Generator().manual_seed(1)
    y = 1.5 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    for t in (0.02, 0.1, 0.3, 0.6, 1.0):
        tt = torch.full((64,), t, dtype=torch.float64)
        beta = float(vp.beta(t))
        s = score(y[:, None], tt)[:, 0]
        pf_drift = -0.5 * beta * (y + s)
        B = float(vp.beta_integral(t))
        alpha = math.exp(-0.5 * B)
        tau = math.sqrt(math.expm1(B))
        tau_dot = beta * math.exp(B) / (2 * tau)
        hgf = -0.5 * beta * y + alpha * tau_dot * _zero_force_field(y / alpha, tau, data)
        assert torch.allclose(pf_drift, hgf, atol=1e-8, rtol=1e-8), t


def test_oscillation_hgf_is_the_zero_force_hgf_with_a_cosine_clock():
    """ohgf(α = 1, s = 1): x_t = cos t (x₀ + tan t · v₀), so u(x, t) = −tan t · x +
    V₀(x/cos t, tan t)/cos t."""
    p = P.ohgf(alpha=1.0, data_std=1.0)
    data = dict(means=GMM_MEANS, std=GMM_STD)
    y = 1.2 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in (0.05, 0.5, 1.0, 1.4):
        c = math.cos(t)
        direct = optimal_velocity_mixture(p, y, t, **data)
        via = -math.tan(t) * y + _zero_force_field(y / c, math.tan(t), data) / c
        assert torch.allclose(direct, via, atol=1e-9, rtol=1e-9), t


# ----------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("process", [P.ohgf(alpha=1.0, data_std=1.0), P.rectified_flow()])
def test_hgf_samplers_with_the_exact_field_reproduce_the_data(process):
    """Integrating the exact optimal field backwards from the prior reproduces the mixture:
    SW2 to fresh data stays within 2× the data-vs-data noise floor + 0.01 (floor 0.034;
    measured 0.029 for Heun and 0.035–0.045 for dopri5; a wrong prior scale or time direction
    gives ≥ 0.3). Heun uses 2·steps − 1 NFE, Euler `steps`; dopri5 is adaptive."""
    model = ExactVelocity(process, GMM_MEANS, GMM_STD)
    ref = gmm_sample(4000, 11).float()
    floor = sliced_w2(gmm_sample(4000, 12).float(), ref)
    out = SAMPLERS["hgf_heun"](
        model, process, (4000, 2), 40, generator=torch.Generator().manual_seed(0)
    )
    assert out.nfe == 79 and out.x.shape == (4000, 2) and out.z.shape == (4000, 1, 2)
    assert sliced_w2(out.x, ref) < 2 * floor + 0.01, (sliced_w2(out.x, ref), floor)
    out = SAMPLERS["hgf_dopri5"](model, process, (4000, 2), 2)
    assert sliced_w2(out.x, ref) < 2 * floor + 0.01
    euler = SAMPLERS["hgf_euler"](
        model, process, (500, 2), 7, generator=torch.Generator().manual_seed(0)
    )
    assert euler.nfe == 7


def test_hgf_samplers_refuse_score_models():
    from tests.gaussian import ExactGaussianScore

    with pytest.raises(ValueError, match="position-only velocity model"):
        SAMPLERS["hgf_euler"](ExactGaussianScore(P.vp(), 1.0), P.ohgf(), (4, 2), 3)


# ------------------------------------------------------------ the objective and training
def test_learned_velocity_matches_the_analytic_field_for_gaussian_data(one_thread):
    """1000 Adam steps of a 3×64 TimeMLP on x₀ ~ N(0, 0.5²) with ohgf(α = 1, s = 1) (so the
    field is not zero): E[(V_θ − u*)²] over (x_t, t) from the process is below 5 % of E[u*²]
    (measured 1.3 %: 0.0016 against 0.125), while the irreducible part of the loss,
    E[(ẋ_t − u*)²] ≈ 0.51, is 300× larger — the network fitted the conditional mean, not the
    noise."""
    torch.manual_seed(0)
    p = P.ohgf(alpha=1.0, data_std=1.0)
    net = TimeMLP(1, 1, 1, hidden=64, depth=3, time_dim=16, t_scale=p.T)
    net.parameterization = "velocity"
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1000):
        loss = OBJECTIVES["velocity"](net, p, 0.5 * torch.randn(512, 1, generator=g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ge = torch.Generator().manual_seed(9)
    x0 = 0.5 * torch.randn(20_000, 1, generator=ge)
    t = sample_times(p, 20_000, ge)
    xt, _ = velocity_pair(p, x0, t, ge)
    with torch.no_grad():
        pred = net(xt, t.float())[:, 0].double()
    exact = optimal_velocity_gaussian(p, xt[:, 0].double(), t, 0.25)
    mse, power = float((pred - exact).pow(2).mean()), float(exact.pow(2).mean())
    assert power > 0.1  # a real field (≈ 0.125)
    assert mse < 0.05 * power, (mse, power)


def test_velocity_objective_checks_its_inputs():
    net = TimeMLP(1, 2, 1)
    x0 = torch.randn(8, 2)
    with pytest.raises(ValueError, match="position-only velocity model"):
        hgf_velocity(net, P.ohgf(), x0)
    net.parameterization = "velocity"
    with pytest.raises(ValueError, match="plain unweighted MSE"):
        hgf_velocity(net, P.ohgf(), x0, weighting="likelihood")
    with pytest.raises(ValueError, match="noise-free x block"):
        hgf_velocity(net, P.vp(), x0)
    loss = hgf_velocity(net, P.cld(), x0)  # CLD's x block is noise-free too: ẋ = βM⁻¹v
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))


def test_build_model_makes_a_position_only_network_and_phasediff_sample_works(tmp_path, one_thread):
    cfg = load_config(
        "configs/toy_ohgf.toml",
        [
            "train.steps=30",
            "train.batch_size=64",
            "train.log_every=10",
            "train.ckpt_every=30",
            "train.tensorboard=false",
            "data.n_train=2000",
            "train.threads=1",
        ],
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.model.parameterization == "velocity" and trainer.model.k == 1
    out = trainer.model(torch.zeros(5, 1, 2), torch.full((5,), 0.3))
    assert out.shape == (5, 1, 2)
    trainer.fit()
    trainer.config.train.sample_num, trainer.config.train.sample_steps = 64, 4
    assert trainer.sample_image(tmp_path / "step.png").is_file()  # hgf_euler for velocity nets
    model, process, _, _ = load_trained(tmp_path / "run")
    assert model.parameterization == "velocity" and process.name == "ohgf"
    result = CliRunner().invoke(
        app,
        [
            "sample",
            str(tmp_path / "run"),
            "--sampler",
            "hgf_heun",
            "--steps",
            "5",
            "--num",
            "64",
            "--out",
            str(tmp_path / "s.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"nfe": 9' in result.output
    bad = load_config("configs/toy_ohgf.toml", ["process.preset='vp'", "process.params={}"])
    with pytest.raises(ValueError, match="noise-free x block"):
        build_model(bad, P.vp(), trainer.data)
