"""Mixing analysis: Gaussian KL/W2 against closed forms, time-to-ε against VP's formula, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.optimize import brentq
from typer.testing import CliRunner

from phasediff import processes as P
from phasediff.analysis import mixing as M
from phasediff.cli import app


def _random_gaussians(k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        X = torch.randn(k, k, generator=g, dtype=torch.float64)
        out += [torch.randn(k, generator=g, dtype=torch.float64), X @ X.T + 0.3 * torch.eye(k)]
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_gaussian_kl_matches_torch_distributions(k):
    m1, S1, m2, S2 = _random_gaussians(k, k)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m1, S1),
        torch.distributions.MultivariateNormal(m2, S2),
    )
    assert float(M.gaussian_kl(m1, S1, m2, S2)) == pytest.approx(float(ref), rel=1e-10)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_gaussian_w2_matches_scipy_sqrtm_formula(k):
    m1, S1, m2, S2 = _random_gaussians(k, 10 + k)
    a, b = S1.numpy(), S2.numpy()
    rb = np.real(sqrtm(b))
    ref = np.sum((m1 - m2).numpy() ** 2) + np.trace(a + b - 2 * np.real(sqrtm(rb @ a @ rb)))
    assert float(M.gaussian_w2(m1, S1, m2, S2)) ** 2 == pytest.approx(ref, rel=1e-9)
    # 1-D closed form: W2² = (m1 − m2)² + (s1 − s2)²
    one = M.gaussian_w2(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([0.0]), torch.tensor([[1.0]])
    )
    assert float(one) == pytest.approx(math.sqrt(1 + 1), rel=1e-14)


def test_vp_budget_to_eps_matches_closed_form():
    """VP with data N(0, v): Var = 1 + (v − 1)e^{−b}, KL = ½(σ² − 1 − ln σ²); τ = b/2."""
    v, eps = 0.25, 1e-3

    def kl(b):
        s2 = 1 + (v - 1) * math.exp(-b)
        return 0.5 * (s2 - 1 - math.log(s2)) - eps

    b_star = brentq(kl, 1e-6, 50, xtol=1e-14)
    got = M.budget_to_eps(P.vp(), eps, 0.0, v)
    assert got == pytest.approx(0.5 * b_star, rel=1e-9)


def test_point_mass_kl_formula_for_vp():
    """Point mass at x₀: mean x₀e^{−b/2}, var 1 − e^{−b}."""
    b = torch.tensor([0.5, 2.0], dtype=torch.float64)
    got = M.kl_to_prior(P.vp(), b, 1.0, 0.0)
    s2 = 1 - torch.exp(-b)
    m2 = torch.exp(-b)
    ref = 0.5 * (s2 - 1 - torch.log(s2) + m2)
    assert torch.allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("name", ["cld", "psld", "hold"])
def test_kl_decreases_along_the_budget(name):
    p = P.get_process(name)
    taus = torch.linspace(0.01, 30, 300, dtype=torch.float64)
    kl = M.kl_to_prior(p, taus / M.budget_rate(p), 0.0, 0.25)
    assert bool((kl[1:] <= kl[:-1] * (1 + 1e-9)).all())


def test_mixing_table_structure_and_honest_numbers():
    rows = {r.name: r for r in M.mixing_table(data_var=0.25, eps=1e-3)}
    assert {"vp", "cld", "psld", "hold", "critical(4)", "ve", "hamiltonian"} <= set(rows)
    # budget rate = −tr A; the gap per unit budget of a critical chain of order k is 1/k
    assert rows["cld"].gap_per_budget == pytest.approx(0.5, rel=1e-6)
    assert rows["hold"].gap_per_budget == pytest.approx(1 / 3, rel=1e-4)
    assert rows["vp"].gap_per_budget == pytest.approx(1.0)
    assert math.isnan(rows["ve"].budget_to_eps_gauss)
    for name in ("vp", "cld", "psld", "hold"):
        assert rows[name].kl_at_T < 1e-5


def test_cli_mixing_prints_table_and_writes_plot(tmp_path):
    runner = CliRunner()
    out, js = tmp_path / "m.png", tmp_path / "m.json"
    res = runner.invoke(app, ["analyze", "mixing", "--out", str(out), "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "| process | k | gap/β" in res.output and "| hold | 3 |" in res.output
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    rows = json.loads(js.read_text())
    assert {r["name"] for r in rows} >= {"vp", "hold"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "-1"], "eps must be a finite number > 0"),
        (["--data-var", "0"], "data_var must be a finite number > 0"),
        (["--eps", "abc"], "Invalid value for '--eps'"),
        (["--out", "/proc/nope/m.png"], "cannot write output"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(args, message):
    res = CliRunner().invoke(app, ["analyze", "mixing", *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
