"""The x̂₀ guard: a score or ε model whose denoiser is projected onto the data's box at every
evaluation (docs/samplers.md, "The x̂₀ guard").

Any score model defines a denoiser by Tweedie, x̂₀(z, t) = aᵀz + cᵀ·out with
w = (Σ⁻¹e)_n / ‖(Σ⁻¹e)_n‖², a = w Σ⁻¹_{n,:}, c = S(t)ᵀw (S the ε/score map; the read-out of
`ModelDynamics.last_x0`). The exact posterior mean E[x₀ | z_t] lies in the convex hull of the
data's support; when the box [lo, hi] holds that support, projecting x̂₀ onto it is a
projection onto a closed convex set that contains the true value, so coordinate by coordinate
it can only move x̂₀ closer to E[x₀ | z_t], never farther. `X0Guard` returns the output whose
read-out is that projection,

    out' = out + c (P(x̂₀) − x̂₀) / ‖c‖²,     so that aᵀz + cᵀout' = P(x̂₀),

the smallest change of the output that does it (for one noisy block c is a number). Every
sampler sees an ordinary model and needs no special case.

The box is the given one widened by `MARGIN` (10 %) of its width on each side. A run's
recorded range is the min/max of its training set, an estimate of the support that held-out
data already cross; projecting onto it exactly clipped the outermost samples of a thin
roll at every late step and cost HOLD 6–12 % at 50–100 NFE (docs/samplers.md). The guard is
there for x̂₀ that are wrong by the box's width or more, as a diverging sample's are.

Why it is needed: on a long-trained thin-data model a few samples per ten thousand leave the
region the network was trained on in the middle of a few-step run; there the network's x̂₀
grows with |z|, the sampler feeds it back, and the sample diverges geometrically (10⁴× per
step, to 10²⁶; docs/samplers.md). The guard bounds the feedback. It hides nothing: the number
of samples whose x̂₀ it moved is returned as `Samples.guarded`, and of those it moved by more
than the box's width (what the sample sanity check would call far) as `Samples.guarded_far`.
"""

from __future__ import annotations

import torch

from phasediff.objectives import parameterization_of
from phasediff.objectives.hamiltonian import is_velocity_model
from phasediff.processes import LinearProcess, apply_blocks
from phasediff.processes.reverse import ReverseDynamics

MARGIN = 0.1
"""The guard's box: the given box widened by this fraction of its width on each side."""


class X0Guard:
    """`model` with x̂₀ projected onto [lo, hi], widened by `MARGIN`, at every call (module
    docstring). `lo`, `hi` broadcast to the data shape (`check_x0_range`). ``excess`` is, per
    sample, the largest distance any call's x̂₀ lay beyond the widened box, in units of the
    given box's width (0: never moved; NaN: a non-finite x̂₀)."""

    def __init__(self, model, process: LinearProcess, lo: torch.Tensor, hi: torch.Tensor):
        if is_velocity_model(model):
            raise ValueError(
                "x0_guard is for score and ε models; a velocity model (HGF, flow matching) "
                "has no denoiser to project: leave x0_guard out."
            )
        self.network = model  # `network`: seen through by `unwrap` (σ_data, …)
        self.parameterization = parameterization_of(model)
        self.width = hi - lo
        self.lo, self.hi = lo - MARGIN * self.width, hi + MARGIN * self.width
        self.reverse = ReverseDynamics(process)
        self.excess: torch.Tensor | None = None
        self._coef: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def readout(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, c) with x̂₀ = aᵀz + cᵀ·out at time t (`ReverseDynamics.denoiser_readout`),
        cached per time."""
        if t not in self._coef:
            if len(self._coef) > 4096:  # adaptive solvers ask for many times
                self._coef.clear()
            self._coef[t] = self.reverse.denoiser_readout(t, self.parameterization)
        return self._coef[t]

    @property
    def guarded(self) -> int:
        """Samples whose x̂₀ the guard moved at least once."""
        return 0 if self.excess is None else int((self.excess != 0).sum())

    @property
    def guarded_far(self) -> int:
        """Samples whose x̂₀ lay more than one box width beyond the box at some call (the
        "far" of the sample sanity check, `phasediff.data.sanity`), or was not finite."""
        return 0 if self.excess is None else int((~(self.excess <= 1)).sum())

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.network(z, t)
        t0 = float(t.reshape(-1)[0])
        if not bool((t == t0).all()):  # every sampler calls with one time for the batch
            raise ValueError("x0_guard needs one time for the whole batch per model call.")
        a, c = (v.to(device=z.device, dtype=z.dtype) for v in self.readout(t0))
        az = apply_blocks(a[None], z)
        x0 = az + apply_blocks(c[None], out)  # (B, 1, *data)
        # the read-out's own rounding: near t_min a score output carries x̂₀ only to
        # ~eps·(|a|·|z| + |c|·|out|); a coordinate is moved only when it lies beyond the box
        # by more than that, so a correct model is left alone
        tol = apply_blocks(a.abs()[None], z.abs()) + apply_blocks(c.abs()[None], out.abs())
        tol = 16 * torch.finfo(z.dtype).eps * tol
        lo = self.lo.to(device=z.device, dtype=z.dtype)
        hi = self.hi.to(device=z.device, dtype=z.dtype)
        boxed = torch.maximum(torch.minimum(x0, hi), lo)  # NaN stays NaN
        boxed = torch.where((boxed - x0).abs() > tol, boxed, x0)
        width = self.width.to(device=z.device, dtype=z.dtype).clamp_min(torch.finfo(z.dtype).tiny)
        excess = ((boxed - x0).abs() / width).flatten(1).amax(1)  # NaN for a NaN x̂₀
        if self.excess is None or self.excess.shape != excess.shape:
            self.excess = torch.zeros_like(excess)
        self.excess = torch.maximum(self.excess, excess)  # NaN propagates: counted as far
        if c.numel() == 1:  # one noisy block: out' = (P(x̂₀) − aᵀz)/c, free of cancellation
            return torch.where(boxed == x0, out, (boxed - az) / c)
        return out + apply_blocks((c / (c @ c))[:, None], boxed - x0)


__all__ = ["MARGIN", "X0Guard"]
