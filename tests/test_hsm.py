"""Hamiltonian score matching: leapfrog, the Hamiltonian score discrepancy (HSD) against exact
values, HSM training on a 2-D mixture, and the resumable `phasediff train` loop."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from phasediff import processes as P
from phasediff.cli import app
from phasediff.objectives.hamiltonian import (
    leapfrog,
    mixture_score,
    optimal_velocity_mixture,
    velocity_moments,
)
from phasediff.training import load_config, load_trained
from phasediff.training.config import config_from_dict
from phasediff.training.hamiltonian_sm import (
    ForceField,
    HamiltonianSMTrainer,
    discrepancy_loss,
    estimate_discrepancy,
    fit_velocity,
    load_force,
    relative_score_distance,
    velocity_predictor,
)

MEANS = torch.tensor([[1.0, 0.0], [-0.5, 0.85], [-0.5, -0.85]])
STD = 0.4
T, STEPS = 1.0, 8


@pytest.fixture(autouse=True)
def one_thread():
    """Small networks train fastest (and least disturbed by a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mixture_data(n: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, 3, (n,), generator=g)
    return MEANS[idx] + STD * torch.randn(n, 2, generator=g)


def true_score(x: torch.Tensor) -> torch.Tensor:
    return mixture_score(x, MEANS, STD)


def test_leapfrog_is_second_order_and_conserves_energy():
    """Harmonic force −ω²x: the error at T against the exact rotation falls 4× per halving of
    h, and the energy error stays O(h²) (symplectic: no drift)."""
    w = 2.0
    x0, v0 = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
    exact = x0 * math.cos(w * 3.0) + v0 / w * math.sin(w * 3.0)
    errs = []
    for steps in (50, 100, 200):
        xs, vs, times = leapfrog(lambda x: -(w**2) * x, x0, v0, 3.0, steps)
        errs.append(float((xs[-1] - exact).abs()))
        energy = 0.5 * vs.pow(2) + 0.5 * w**2 * xs.pow(2)
        assert float((energy - (0.5 * 0.25 + 0.5 * 4.0)).abs().max()) < 4 * (w * 3 / steps) ** 2
        assert torch.allclose(times[-1], torch.tensor(3.0, dtype=torch.float64))
    assert 3.6 < errs[0] / errs[1] < 4.4 and 3.6 < errs[1] / errs[2] < 4.4, errs


def test_discrepancy_estimate_matches_exact_values():
    """Two forces whose HSD is known exactly (right Riemann sum on the leapfrog grid):
    (a) F = 0 on the mixture is the zero-force HGF, whose optimal velocity is computed exactly
        by optimal_velocity_mixture (measured: exact 0.763, estimate 0.718 ± 0.014);
    (b) F = −kx on N(0, s²I) is the linear HGF hamiltonian(K=k), whose HSD is
        Σ_j d·Cov(v, x)²/Var(x) from the kernel (closed form; exact 0.348, estimate
        0.357 ± 0.009).
    The estimate is a lower bound (φ is fitted for finitely many steps) plus Monte-Carlo
    noise, so it must lie in [0.85·exact, exact + 4·stderr]."""
    g = torch.Generator().manual_seed(0)
    zf = P.zero_force(sigma_v=1.0, T=T)
    total = 0.0
    for j in range(1, STEPS + 1):
        t = j * T / STEPS
        xt = mixture_data(40_000, g) + t * torch.randn(40_000, 2, generator=g)
        total += float(
            optimal_velocity_mixture(zf, xt.double(), t, MEANS, STD).pow(2).sum(1).mean()
        )
    exact = T * total / STEPS  # Monte-Carlo SE ≈ 0.3 %
    est = estimate_discrepancy(
        lambda x: torch.zeros_like(x), mixture_data, horizon=T, steps=STEPS, fit_iters=600
    )
    assert 0.85 * exact < est["hsd"] < exact + 4 * est["stderr"], (est, exact)

    s2, k = 0.25, 1.0  # the true score would be k = 1/s² = 4
    lin = P.hamiltonian(K=k, sigma_v=1.0, T=T)
    times = torch.arange(1, STEPS + 1, dtype=torch.float64) * T / STEPS
    var_x, _, cov = velocity_moments(lin, times, s2)
    exact = float(T * (2 * cov.pow(2) / var_x).mean())

    def gaussian(n, gen):
        return math.sqrt(s2) * torch.randn(n, 2, generator=gen)

    est = estimate_discrepancy(lambda x: -k * x, gaussian, horizon=T, steps=STEPS, fit_iters=300)
    assert exact > 0.05
    assert 0.85 * exact < est["hsd"] < exact + 4 * est["stderr"], (est, exact)


def test_true_score_has_zero_discrepancy_and_a_perturbed_one_does_not():
    """The exact mixture score: HSD ≈ 0 (measured 1e-5 ± 1e-4); half the score: clearly
    positive (measured 0.043 ± 0.003), so HSD separates them by > 10 standard errors."""
    true = estimate_discrepancy(true_score, mixture_data, horizon=T, steps=STEPS, fit_iters=300)
    assert abs(true["hsd"]) < 4 * true["stderr"] + 2e-3, true
    half = estimate_discrepancy(
        lambda x: 0.5 * true_score(x), mixture_data, horizon=T, steps=STEPS, fit_iters=300
    )
    assert half["hsd"] > 0.02 and half["hsd"] > 10 * half["stderr"], half
    assert half["hsd"] > true["hsd"] + 8 * math.hypot(half["stderr"], true["stderr"])


def grid_and_weights():
    """A 41×41 grid on [−2, 2]² weighted by the mixture density (the score is only defined
    by the data where the data lives)."""
    lin = torch.linspace(-2, 2, 41)
    gx, gy = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    logp = torch.logsumexp(-0.5 * ((grid[:, None] - MEANS[None]) ** 2).sum(-1) / STD**2, 1)
    return grid, torch.softmax(logp, 0)


def test_hsm_training_moves_the_force_towards_the_true_score():
    """100 HSM iterations (5 φ steps + 1 θ step each, batch 256) cut the density-weighted
    relative distance ‖F_θ − ∇log p‖² / ‖∇log p‖² on the grid from ≈ 1 (F ≈ 0 at init) to
    below 0.8 (measured ≈ 0.63; 300 iterations reach ≈ 0.48)."""
    torch.manual_seed(0)
    force = ForceField(2, hidden=64, depth=3)
    phi = velocity_predictor(2, T, hidden=64, depth=3)
    opt_f = torch.optim.Adam(force.parameters(), lr=1e-3)
    opt_v = torch.optim.Adam(phi.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    grid, w = grid_and_weights()
    start = relative_score_distance(force, true_score, grid, w)
    for _ in range(100):
        for _ in range(5):
            fit_velocity(force, phi, opt_v, mixture_data(256, g), g, T, STEPS)
        loss = discrepancy_loss(force, phi, mixture_data(256, g), g, T, STEPS)
        opt_f.zero_grad()
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in phi.parameters())  # the θ step leaves φ alone
        opt_f.step()
    end = relative_score_distance(force, true_score, grid, w)
    assert start > 0.95 and end < 0.8, (start, end)


def _small(*extra: str):
    return load_config(
        "configs/toy_hamiltonian_sm.toml",
        [
            "train.steps=6",
            "train.batch_size=32",
            "train.log_every=2",
            "train.ckpt_every=3",
            "train.threads=1",
            "data.n_train=500",
            "hamiltonian_sm.velocity_steps=2",
            "hamiltonian_sm.leapfrog_steps=4",
            "model.hidden=16",
            *extra,
        ],
    )


def test_phasediff_train_runs_hsm_and_resumes_bit_for_bit(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "train",
            "configs/toy_hamiltonian_sm.toml",
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
            "--set",
            "train.steps=3",
            "--set",
            "train.batch_size=32",
            "--set",
            "data.n_train=500",
            "--set",
            "train.threads=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "checkpoints" / "step_00000003.safetensors").is_file()

    straight = HamiltonianSMTrainer(_small(), tmp_path / "a", progress=False)
    straight.fit()
    HamiltonianSMTrainer(_small(), tmp_path / "b", progress=False).fit(3)
    resumed = HamiltonianSMTrainer(_small(), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit()
    for p, q in zip(straight.force.parameters(), resumed.force.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(straight.velocity.parameters(), resumed.velocity.parameters(), strict=True):
        assert torch.equal(p, q)
    assert straight.history[3:] == resumed.history  # the same losses, bit for bit

    force, cfg, data = load_force(tmp_path / "a")
    assert isinstance(force, ForceField) and cfg.objective.name == "hamiltonian_score_matching"
    assert force(torch.zeros(4, 2)).shape == (4, 2)
    with pytest.raises(ValueError, match="load it with phasediff.training.hamiltonian_sm"):
        load_trained(tmp_path / "a")


def test_hsm_config_errors_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="config field 'hamiltonian_sm.horizon' is invalid"):
        _small("hamiltonian_sm.horizon=0")
    with pytest.raises(ValueError, match="valid objectives are: .*hamiltonian_score_matching"):
        _small("objective.name='hsm2'")
    with pytest.raises(ValueError, match="needs vector data"):
        HamiltonianSMTrainer(_small("data.name='digits'"), tmp_path / "digits", progress=False)
    assert not (tmp_path / "digits").exists()


def test_an_old_hsm_section_is_one_sentence_naming_the_new_key(tmp_path):
    """ "hsm" names the hybrid score matching objective only: a config file with the old
    [hsm] section (or --set hsm.…) is refused with one sentence naming [hamiltonian_sm], while a
    config stored by an older checkpoint (every dump carried an "hsm" table) still loads."""
    old = tmp_path / "old.toml"
    text = open("configs/toy_hamiltonian_sm.toml").read()
    old.write_text(text.replace("[hamiltonian_sm]", "[hsm]"))
    message = (
        "config section 'hsm' is now 'hamiltonian_sm' (the Hamiltonian score matching settings; "
        "'hsm' names only the hybrid score matching objective): rename [hsm] in "
        f"{str(old)!r} to hamiltonian_sm."
    )
    with pytest.raises(ValueError) as info:
        load_config(old)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"rename --set hsm\.… to hamiltonian_sm\.$"):
        load_config("configs/toy_hamiltonian_sm.toml", ["hsm.horizon=0.3"])
    result = CliRunner().invoke(app, ["train", str(old), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "is now 'hamiltonian_sm'" in result.output
    stored = load_config("configs/toy_hamiltonian_sm.toml").model_dump()
    stored["hsm"] = stored.pop("hamiltonian_sm") | {"horizon": 0.25}
    assert config_from_dict(stored).hamiltonian_sm.horizon == 0.25
