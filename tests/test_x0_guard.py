"""The x̂₀ guard (phasediff/samplers/guard.py): the denoiser of every call projected onto a
box that holds the data, checked against the Tweedie read-out and exact posterior means."""

from __future__ import annotations

import pytest
import torch

from phasediff import processes as P
from phasediff.samplers import SAMPLERS
from phasediff.samplers.base import StepUnderflow
from phasediff.samplers.dynamics import ModelDynamics
from phasediff.samplers.guard import MARGIN, X0Guard

from .gaussian import ExactMixtureScore

PROCESSES = {
    "vp": P.vp,
    "cld": P.cld,
    "psld": P.psld,  # two noisy blocks: the least-squares correction
    "hold": P.hold,
    "critical4": lambda: P.critical(k=4),
}
MEANS = [[-0.5, 0.0], [0.5, 0.0], [0.0, 0.5]]  # point masses: E[x₀ | z] lies in their hull


class Wild(torch.nn.Module):
    """A deterministic output far from any score: x̂₀ read from it leaves any box."""

    def __init__(self, process, parameterization):
        super().__init__()
        self.m, self.parameterization = len(process.noisy_blocks), parameterization

    def forward(self, z, t):
        return 4 * torch.sin(7 * z[:, : self.m] + 3 * t[:, None, None]) + z[:, -self.m :]


def _x0(model, process, z, t):
    dyn = ModelDynamics(model, process, dtype=z.dtype)
    dyn(z, t)
    return dyn.last_x0()


@pytest.mark.parametrize("parameterization", ["eps", "score"])
@pytest.mark.parametrize("name", list(PROCESSES))
def test_guarded_readout_is_the_projection_of_the_raw_one(name, parameterization):
    process = PROCESSES[name]()
    raw = Wild(process, parameterization)
    z = torch.randn(256, process.k, 2, generator=torch.Generator().manual_seed(0))
    z = z.to(torch.float64)
    for t in (process.T, 0.3, 0.02):
        x_raw = _x0(raw, process, z, t)
        # a box around the middle of the raw read-outs: rows on both sides of it
        lo, hi = x_raw.quantile(0.3, dim=0), x_raw.quantile(0.7, dim=0)
        guard = X0Guard(raw, process, lo, hi)
        x_guard = _x0(guard, process, z, t)
        lo, hi = lo - MARGIN * (hi - lo), hi + MARGIN * (hi - lo)  # the guard's widened box
        want = torch.maximum(torch.minimum(x_raw, hi), lo)
        # float64 read-out with a/c up to ~1e3: 1e-9 is far above its rounding
        torch.testing.assert_close(x_guard, want, rtol=0, atol=1e-9)
        inside = (x_raw == want).all(1)
        assert 0 < int(inside.sum()) < 256
        tt = torch.full((256,), t, dtype=torch.float64)
        # rows whose x̂₀ is inside the box keep the network's output bit for bit
        assert torch.equal(guard(z, tt)[inside], raw(z, tt)[inside])
        assert guard.guarded == int((~inside).sum())


@pytest.mark.parametrize("name", ["cld", "hold"])
def test_the_guard_leaves_an_exact_model_alone_and_moves_a_wrong_one_closer(name):
    process = PROCESSES[name]()
    exact = ExactMixtureScore(process, MEANS, 0.0)
    box = (torch.tensor([-0.5, 0.0]), torch.tensor([0.5, 0.5]))  # the hull's bounding box
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    plain = SAMPLERS["ei1c"](
        exact, process, (500, 2), 12, generator=gen(), final="denoise", x0_range=box
    )
    guarded = SAMPLERS["ei1c"](
        exact, process, (500, 2), 12, generator=gen(), final="denoise", x0_range=box,
        x0_guard=True,
    )  # fmt: skip
    assert (guarded.guarded, guarded.guarded_far) == (0, 0)  # exact x̂₀: in the hull
    assert torch.equal(plain.x, guarded.x)

    class Off(torch.nn.Module):  # the exact score plus an error of 2 score units
        parameterization = "score"

        def forward(self, z, t):
            return exact(z, t) + 2.0

    z = process.prior_sample((400, 2), torch.Generator().manual_seed(2)).to(torch.float32)
    for t in (0.9, 0.4, 0.1):
        true, wrong = _x0(exact, process, z, t), _x0(Off(), process, z, t)
        fixed = _x0(X0Guard(Off(), process, *box), process, z, t)
        # projection onto a convex set that holds the true posterior mean: never farther, per
        # coordinate (float32 read-out: 1e-5 of slack)
        assert bool(((fixed - true).abs() <= (wrong - true).abs() + 1e-5).all())
        assert float((fixed - true).abs().mean()) < float((wrong - true).abs().mean())


class Feedback(torch.nn.Module):
    """The exact score plus an error that grows with |z|: x̂₀ is fed back with a gain, the
    divergence a long-trained model shows off its training region (docs/samplers.md)."""

    parameterization = "score"

    def __init__(self, process):
        super().__init__()
        self.exact, self.n = ExactMixtureScore(process, MEANS, 0.0), process.noisy_blocks[0]

    def forward(self, z, t):
        return self.exact(z, t) + 5.0 * z[:, self.n : self.n + 1]


def test_the_guard_stops_a_feedback_divergence():
    process = P.hold()
    model = Feedback(process)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    box = (-0.7, 0.7)
    plain = SAMPLERS["ei1c"](model, process, (300, 2), 10, generator=gen(), final="denoise")
    assert int((~(plain.x.abs() < 1e3).all(1)).sum()) > 100  # 10⁹-sized or NaN (measured)
    res = SAMPLERS["ei1c"](
        model, process, (300, 2), 10, generator=gen(), final="denoise", x0_range=box,
        x0_guard=True,
    )  # fmt: skip
    assert bool(torch.isfinite(res.z).all()) and float(res.z.abs().max()) < 1e3
    assert res.guarded == 300  # every sample: the error is everywhere
    assert res.guarded_far > 100  # and for many it is more than the box's width
    assert bool(((res.x >= -0.7) & (res.x <= 0.7)).all())


def test_guard_validation():
    process = P.cld()
    exact = ExactMixtureScore(process, MEANS, 0.0)
    with pytest.raises(ValueError, match=r"x0_guard=True needs x0_range=\(lo, hi\)"):
        SAMPLERS["ei1c"](exact, process, (4, 2), 3, x0_guard=True)
    with pytest.raises(ValueError, match="x0_guard must be True or False, got 'yes'"):
        SAMPLERS["ei1c"](exact, process, (4, 2), 3, x0_range=(-1, 1), x0_guard="yes")
    with pytest.raises(ValueError, match="x0_range belongs to the denoising final step"):
        SAMPLERS["ei1c"](exact, process, (4, 2), 3, x0_range=(-1, 1))
    # with the guard, x0_range is also taken by the sampler's own last step
    res = SAMPLERS["ei1c"](exact, process, (4, 2), 3, x0_range=(-1, 1), x0_guard=True)
    assert res.guarded == 0

    class Velocity(torch.nn.Module):
        parameterization = "velocity"

        def forward(self, z, t):
            return z[:, :1]

    with pytest.raises(ValueError, match="x0_guard is for score and ε models"):
        SAMPLERS["ei"](Velocity(), P.hamiltonian(), (4, 2), 3, x0_range=(-1, 1), x0_guard=True)


def test_dopri5_reports_a_diverging_solve_in_one_sentence():
    """torchdiffeq's bare `AssertionError: underflow in dt` (seen unguarded on the 300k HOLD
    model) becomes a ValueError naming where the solve stopped and what to do."""

    class NanBelowHalf(torch.nn.Module):
        parameterization = "score"

        def forward(self, z, t):
            out = z[:, 1:2].clone()
            return torch.where(t[:, None, None] < 0.5, torch.full_like(out, float("nan")), out)

    with pytest.raises(StepUnderflow, match=r"step size fell to zero at t = 0\.4\d+ while"):
        SAMPLERS["dopri5"](NanBelowHalf(), P.cld(), (4, 2), 2)
    assert issubclass(StepUnderflow, ValueError)  # the CLI's one-sentence path
