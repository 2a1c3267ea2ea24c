"""The denoising final step (phasediff/samplers/final.py): x = x̂₀(z_{t_{N−1}}) against the
closed form for Gaussian data, its NFE and callback, the x̂₀ box, and bad input."""

from __future__ import annotations

import pytest
import torch

from phasediff import processes as P
from phasediff.samplers import SAMPLERS
from phasediff.samplers.final import (
    check_x0_range,
    default_noise_floor,
    denoised_final,
    noise_floor_time,
    project_x0,
)
from phasediff.samplers.grids import time_grid

from .gaussian import ExactGaussianScore

SIGMA2 = 0.5


def posterior_mean_variance(process, t: float, sigma2: float) -> float:
    """Var[E[x₀ | z_t]] = σ⁴ eᵀC⁻¹e, C = Σ_t + σ² e eᵀ, for data N(0, σ²) (joint Gaussian of
    (x₀, z_t) through the kernel; written out here, not taken from the preconditioner)."""
    E, S = process.kernel(torch.tensor([t], dtype=torch.float64))
    e = E[0, :, 0]
    C = S[0] + sigma2 * torch.outer(e, e)
    return float(sigma2**2 * e @ torch.linalg.solve(C, e))


@pytest.mark.parametrize(("name", "steps"), [("vp", 3), ("cld", 5), ("hold", 5)])
def test_denoised_final_is_the_posterior_mean_of_exact_gaussian_states(name, steps):
    process = getattr(P, name)()
    score = ExactGaussianScore(process, SIGMA2)
    # ei1 with σ_data = σ is exact for Gaussian data at any step count, so z_{t_{N−1}} has the
    # exact marginal and the denoiser's output has variance σ⁴eᵀC⁻¹e (< σ²: the posterior
    # variance is taken out)
    n = 20000
    res = SAMPLERS["ei1"](
        score, process, (n, 2), steps, grid="optimal", final="denoise", sigma_data=SIGMA2**0.5,
        generator=torch.Generator().manual_seed(0), dtype=torch.float64,
    )  # fmt: skip
    # the jump is made from t_{N−1} of the optimal grid, or from the noise floor when that
    # lies below it (5 steps: floor 0.05; hold: t_f ≈ 0.06 at σ_data = 1)
    t_grid = float(time_grid(process, steps, "optimal")[-2])
    t_last = max(t_grid, noise_floor_time(process, 1.0, default_noise_floor(steps)))
    assert float(res.times[-2]) == pytest.approx(t_last, rel=1e-9)
    want = posterior_mean_variance(process, t_last, SIGMA2)
    got = float(res.x.var())
    # 2n = 40 000 scalar draws: the variance's relative standard error is √(2/40 000) = 0.7 %;
    # 4 % is ~6 standard errors
    assert got == pytest.approx(want, rel=0.04)
    if name == "vp":  # power: the posterior variance is 17 % of σ² here, 4× the tolerance
        assert want < 0.85 * SIGMA2
    assert res.nfe == steps  # N − 1 steps of one call each, plus the denoiser's call
    assert float(res.times[-1]) == pytest.approx(process.t_min)
    torch.testing.assert_close(res.z[:, 0], res.x)


def test_integrate_is_the_sampler_itself_and_denoise_reports_the_jump():
    process = P.cld()
    score = ExactGaussianScore(process, SIGMA2)
    kw = {"generator": torch.Generator().manual_seed(1)}
    a = SAMPLERS["lie_trotter"](score, process, (64, 2), 6, **kw)
    kw = {"generator": torch.Generator().manual_seed(1)}
    b = SAMPLERS["lie_trotter"](score, process, (64, 2), 6, final="integrate", **kw)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    seen = []
    res = SAMPLERS["lie_trotter"](
        score, process, (64, 2), 6, final="denoise", callback=seen.append, noise_floor=0,
        return_trajectory=True, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert [info["i"] for info in seen] == list(range(6))
    assert seen[-1]["t"] == pytest.approx(process.t_min)
    torch.testing.assert_close(seen[-1]["denoised"], res.x)
    assert seen[-1]["nfe"] == res.nfe == 6
    assert len(res.trajectory) == 7 and res.times.numel() == 7
    # the first N − 1 steps are the sampler's own on the first N points of its grid
    plain = SAMPLERS["lie_trotter"](
        score, process, (64, 2), 5, grid=time_grid(process, 6, "quadratic")[:-1].clone(),
        denoise=False, generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    torch.testing.assert_close(res.trajectory[5], plain.z, rtol=0, atol=0)
    torch.testing.assert_close(res.z[:, 1:], plain.z[:, 1:], rtol=0, atol=0)


def test_one_step_denoises_the_prior_draw():
    process = P.vp()
    score = ExactGaussianScore(process, SIGMA2)
    res = SAMPLERS["em"](
        score, process, (20000, 1), 1, final="denoise", generator=torch.Generator().manual_seed(0)
    )
    want = posterior_mean_variance(process, process.T, SIGMA2)  # x̂₀ of the prior: ≈ 0
    assert res.nfe == 1
    assert float(res.x.var()) == pytest.approx(want, rel=0.1, abs=1e-4)


def test_x0_range_projects_onto_the_box_and_counts_the_moves():
    x = torch.tensor([[-3.0, 0.5], [0.2, 4.0]])
    out, moved = project_x0(x, *check_x0_range((-1.0, 1.0), (2,)))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.5], [0.2, 1.0]]))
    assert moved == 2
    lo, hi = check_x0_range(([-1.0, -2.0], [1.0, 0.0]), (2,))
    out, moved = project_x0(x, lo, hi)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0], [0.2, 0.0]]))
    assert moved == 3
    process = P.cld()
    score = ExactGaussianScore(process, 4.0)  # wide data: x̂₀ leaves a narrow box often
    res = SAMPLERS["ei1c"](
        score, process, (500, 2), 8, final="denoise", x0_range=(-0.5, 0.5),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert float(res.x.abs().max()) <= 0.5 and res.projected > 100


@pytest.mark.parametrize(
    ("x0_range", "match"),
    [
        ((1.0, -1.0), "lo ≤ hi"),
        ((float("nan"), 1.0), "two finite numbers"),
        (([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), r"data shape \(2,\)"),
        ((torch.zeros(3, 2), torch.ones(3, 2)), r"data shape \(2,\)"),  # broadcasts beyond
        (3.0, "x0_range must be"),
    ],
)
def test_bad_x0_range_is_one_sentence(x0_range, match):
    process = P.vp()
    score = ExactGaussianScore(process, SIGMA2)
    with pytest.raises(ValueError, match=match):
        SAMPLERS["em"](score, process, (4, 2), 3, final="denoise", x0_range=x0_range)


def test_bad_final_and_a_box_without_the_jump_are_refused():
    process = P.vp()
    score = ExactGaussianScore(process, SIGMA2)
    with pytest.raises(ValueError, match="final must be one of integrate, denoise, got 'x0'"):
        SAMPLERS["em"](score, process, (4, 2), 3, final="x0")
    with pytest.raises(ValueError, match="x0_range belongs to the denoising final step"):
        SAMPLERS["em"](score, process, (4, 2), 3, x0_range=(-1, 1))


def test_denoised_final_takes_the_samplers_default_grid():
    process = P.hold()
    score = ExactGaussianScore(process, SIGMA2)
    res = denoised_final(SAMPLERS["strang"], score, process, (8, 2), 4, noise_floor=0)
    torch.testing.assert_close(res.times, time_grid(process, 4, "quadratic"))


def test_denoise_judges_stability_on_the_users_steps_and_checks_one_step_options():
    import warnings

    process = P.cld()
    score = ExactGaussianScore(process, SIGMA2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 50 em steps are at the limit: the inner 49 are fine
        SAMPLERS["em"](score, process, (4, 2), 50, final="denoise")
    with pytest.warns(UserWarning, match="em with 20 steps on the uniform grid"):
        SAMPLERS["em"](score, process, (4, 2), 20, final="denoise")
    with pytest.raises(ValueError, match="bad sampler option for a one-step run"):
        SAMPLERS["em"](score, process, (4, 2), 1, final="denoise", nope=3)


def test_velocity_models_refuse_the_denoising_jump_in_one_sentence():
    from phasediff.samplers.final import final_step_options

    class Velocity(torch.nn.Module):
        parameterization = "velocity"

        def forward(self, x, t):
            return torch.zeros_like(x)

    with pytest.raises(ValueError, match="final='denoise' is for score models"):
        final_step_options("denoise", Velocity(), (-1, 1))
    assert final_step_options(None, Velocity(), (-1, 1)) == {"final": "integrate", "x0_range": None}


def reference_posterior_std_ratio(process, t: float, sigma2: float) -> float:
    """√Var[x₀ | z_t] / σ for data N(0, σ²): Var[x₀ | z_t] = σ² − Var[E[x₀ | z_t]]."""
    return ((sigma2 - posterior_mean_variance(process, t, sigma2)) / sigma2) ** 0.5


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "hold"])
@pytest.mark.parametrize("floor", [0.004, 0.02])
def test_noise_floor_time_is_where_the_reference_posterior_std_reaches_the_floor(name, floor):
    process = getattr(P, name)()
    t_f = noise_floor_time(process, 0.5**0.5, floor)
    if t_f == process.t_min:  # VP and PSLD at 0.004: the floor lies below t_min already
        assert reference_posterior_std_ratio(process, t_f, 0.5) >= floor
        return
    # the table is interpolated in log t on 512 log-spaced times: a 1 % error in the ratio
    # (≈ 0.3–1 % in t, the ratio grows like t^(1/2)…t^(5/2)) is far above float64 noise
    assert reference_posterior_std_ratio(process, t_f, 0.5) == pytest.approx(floor, rel=0.01)


def test_the_jump_is_made_from_the_noise_floor_on_the_grids_own_shape():
    process = P.hold()
    score = ExactGaussianScore(process, SIGMA2)
    assert default_noise_floor(20) == pytest.approx(5 / 400)  # max(0.01, 5/N²) ≤ 0.05
    t_f = noise_floor_time(process, 1.0, default_noise_floor(20))
    assert t_f > 10 * process.t_min  # k = 3: x is resolved to 1 % long before t_min
    res = SAMPLERS["lie_trotter"](score, process, (8, 2), 20, final="denoise")
    want = torch.cat([time_grid(process, 19, "quadratic", t_end=t_f), torch.tensor([1e-3])])
    torch.testing.assert_close(res.times, want.to(torch.float64))
    assert res.nfe == 20
    # 0 = off: the plain N-step grid; an explicit grid tensor is used as given
    off = SAMPLERS["lie_trotter"](score, process, (8, 2), 20, final="denoise", noise_floor=0)
    torch.testing.assert_close(off.times, time_grid(process, 20, "quadratic"))
    grid = time_grid(process, 20, "uniform")
    given = SAMPLERS["lie_trotter"](score, process, (8, 2), 20, final="denoise", grid=grid)
    torch.testing.assert_close(given.times, grid)
    # a grid whose t_{N−1} is above the floor already is not changed (VP: t_f ≈ 1e-3 here,
    # the uniform grid's t_{N−1} = 0.033)
    vp = P.vp()
    score = ExactGaussianScore(vp, SIGMA2)
    res = SAMPLERS["ei1c"](score, vp, (8, 2), 30, final="denoise", grid="uniform")
    torch.testing.assert_close(res.times, time_grid(vp, 30, "uniform"))


@pytest.mark.parametrize("grid", ["uniform", "quadratic", "edm", "logb", "optimal", "auto"])
def test_time_grid_ends_at_t_end_and_refuses_one_outside_the_interval(grid):
    process = P.cld()
    times = time_grid(process, 12, grid, t_end=0.01)
    assert float(times[0]) == process.T and float(times[-1]) == pytest.approx(0.01, rel=1e-12)
    assert bool((times[1:] < times[:-1]).all())
    with pytest.raises(ValueError, match=r"t_end must be a time in \[t_min, T\)"):
        time_grid(process, 12, grid, t_end=process.T)


@pytest.mark.parametrize("floor", [-0.1, 1.0, float("nan"), "0.004", True])
def test_bad_noise_floor_is_one_sentence(floor):
    process = P.cld()
    score = ExactGaussianScore(process, SIGMA2)
    with pytest.raises(ValueError, match="noise_floor must be a number in"):
        SAMPLERS["em"](score, process, (4, 2), 3, final="denoise", noise_floor=floor)


def test_default_noise_floor_by_steps():
    # the measured choices (docs/samplers.md, "The noise floor"): 0.05 at ≤ 10 steps, 0.01
    # from 23 on, 5/N² between
    assert [default_noise_floor(n) for n in (1, 10, 20, 23, 50, 1000)] == pytest.approx(
        [0.05, 0.05, 0.0125, 0.01, 0.01, 0.01], rel=1e-3
    )


def test_a_noise_floor_without_the_jump_is_refused():
    process = P.cld()
    score = ExactGaussianScore(process, SIGMA2)
    with pytest.raises(ValueError, match="noise_floor belongs to the denoising final step"):
        SAMPLERS["em"](score, process, (4, 2), 3, noise_floor=0.01)
