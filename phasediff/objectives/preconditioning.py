"""Preconditioning of score networks for any linear process: EDM's c_in / c_skip / c_out /
c_noise design (Karras et al. 2022) generalised to k×k phase-space kernels.

Derivation (docs/objectives.md, "Preconditioning"): with z_t | x₀ ~ N(e x₀, Σ ⊗ I) and the
Gaussian reference x₀ ~ N(0, σ² I) (σ = σ_data), the reference posterior of x₀ is

    E_ref[x₀ | z] = rᵀz,  rᵀ = σ² eᵀΣ⁻¹ / (1 + σ²κ),   Var_ref[x₀ | z] = c_out² = σ² / (1 + σ²κ),

with κ = eᵀΣ⁻¹e = ‖L⁻¹e‖². The exact score of *any* data law is −Σ⁻¹(z − e x̂₀(z)) (Tweedie),
so the ε target on the noisy blocks n is, for every sample,

    ε_n = [L⁻¹(z − e x₀)]_n = P z − g F*,   P = [L⁻¹(I − e rᵀ)]_n,  g = [L⁻¹e]_n · c_out,
    F* = (x₀ − rᵀz) / c_out.

The network F(c_in ⊙ z, c_noise(t)) therefore regresses F*, a unit-variance quantity under
the reference at every t, on ONE block whatever the number m of noisy blocks, and the model
returns ε̂ = P z − g F: the reference part P z (the Gaussian-data ε) is exact and a network
output F = 0 gives the exact score of the reference. P, g are O(1) even where L⁻¹ has entries
of 10⁶ (t → t_min): they are formed in float64, never as the difference of float32 terms.
The model keeps the ε contract (`parameterization = "eps"`), so every sampler and objective
works unchanged; the plain ε loss on it is ‖g‖²·‖F − F*‖² and the "denoiser" weighting
(EDM's unit-variance loss) divides that by ‖g‖².
"""

from __future__ import annotations

import math

import torch
from torch import nn

from phasediff.processes import LinearProcess, apply_blocks
from phasediff.validation import check_positive

TIME_FEATURES = ("t", "log_cout")


def reference_coefficients(
    process: LinearProcess, t: torch.Tensor, sigma_data: float
) -> dict[str, torch.Tensor]:
    """Float64 preconditioning coefficients at times t (shape (S,)):

    c_in (S, k): 1/√C_jj, C = Σ + σ² eeᵀ the reference marginal covariance (per-block input
    scale); r (S, k): the reference posterior mean rᵀz; c_out (S,); P (S, m, k); g (S, m);
    log_cout2 (S,) = log Var_ref[x₀ | z_t]."""
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}.")
    t = process.check_time(t)
    e, Sigma, L = process.marginal(t)
    n = list(process.noisy_blocks)
    w = torch.linalg.solve(L, e)  # L⁻¹e
    kappa = w.pow(2).sum(-1)
    s2 = float(sigma_data) ** 2
    denom = 1.0 + s2 * kappa
    c_out2 = s2 / denom
    C = Sigma + s2 * e[..., :, None] * e[..., None, :]
    Cinv = torch.linalg.inv(C)  # well conditioned: the reference marginal covariance
    r = s2 * (Cinv @ e[..., None])[..., 0]  # σ²C⁻¹e = σ²Σ⁻¹e/(1+σ²κ)
    # L⁻¹(I − e rᵀ) = L⁻¹ΣC⁻¹ = LᵀC⁻¹ (Woodbury): no cancellation of 1/L-sized terms
    P = (L.transpose(-1, -2) @ Cinv)[..., n, :]
    g = w[..., n] * c_out2.sqrt()[..., None]
    C_diag = torch.diagonal(C, dim1=-2, dim2=-1)
    return {
        "c_in": C_diag.rsqrt(),
        "r": r,
        "c_out": c_out2.sqrt(),
        "P": P,
        "g": g,
        "log_cout2": c_out2.log(),
    }


class Preconditioned(nn.Module):
    """An ε-model for any linear process built from a network F that regresses the standardised
    x₀ residual F* = (x₀ − rᵀz)/c_out (module docstring):

        model(z, t) = P z − g · F(c_in ⊙ z, c_noise(t))         (B, m, *data_shape), ε units.

    ``net`` takes the k blocks and returns ONE block (n_out = 1). ``time_feature`` "t" feeds
    the raw time; "log_cout" feeds c_noise = T·(ℓ(t) − ℓ(t_min))/(ℓ(T) − ℓ(t_min)) with
    ℓ = log c_out², which spreads the network's time resolution evenly over the reference
    posterior's log-variance (most of it lies near t_min for k ≥ 2). ``input_scaling`` False
    skips c_in. ``denoise(z, t)`` returns x̂₀ = rᵀz + c_out F."""

    parameterization = "eps"

    def __init__(
        self,
        net: nn.Module,
        process: LinearProcess,
        sigma_data: float,
        *,
        time_feature: str = "t",
        input_scaling: bool = True,
    ) -> None:
        super().__init__()
        if time_feature not in TIME_FEATURES:
            raise ValueError(
                f"time_feature must be one of {', '.join(TIME_FEATURES)}, got {time_feature!r}."
            )
        check_positive(sigma_data, "sigma_data")
        if not process.noisy_blocks:
            raise ValueError(
                f"process '{process.name}' has no noisy blocks (D = 0): there is no score to "
                f"precondition."
            )
        self.net = net
        self.process = process
        self.sigma_data = float(sigma_data)
        self.time_feature = time_feature
        self.input_scaling = bool(input_scaling)
        ends = reference_coefficients(
            process, torch.tensor([process.t_min, process.T], dtype=torch.float64), sigma_data
        )["log_cout2"]
        self._ell_range = (float(ends[0]), float(ends[1]))
        self._last: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def coefficients(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float64 coefficients for the (B,) times t, computed once when they are all equal.
        The last result is kept, so the 'denoiser' weighting of the same batch reuses it."""
        tt = _shared_time(t.detach().to("cpu", torch.float64).reshape(-1))
        tt = tt.clamp(self.process.t_min, self.process.T)
        coef = reference_coefficients(self.process, tt, self.sigma_data)
        self._last = (tt, coef)
        return coef

    def noise_feature(self, t: torch.Tensor, coef: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.time_feature == "t":
            return t
        lo, hi = self._ell_range
        c = self.process.T * (coef["log_cout2"] - lo) / (hi - lo)
        return c.to(device=t.device, dtype=t.dtype).expand(t.shape[0])

    def _network(self, z: torch.Tensor, t: torch.Tensor, coef: dict) -> torch.Tensor:
        t = (
            t
            if isinstance(t, torch.Tensor) and t.ndim == 1
            else torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
        )
        z_in = z
        if self.input_scaling:
            c_in = coef["c_in"].to(device=z.device, dtype=z.dtype)
            z_in = z * c_in.reshape(c_in.shape[0], self.process.k, *([1] * (z.ndim - 2)))
        return self.net(z_in, self.noise_feature(t, coef))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ on the noisy blocks, (B, m, *data_shape)."""
        if not isinstance(t, torch.Tensor):
            t = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
        coef = self.coefficients(t)
        F = self._network(z, t, coef)
        P = coef["P"].to(device=z.device, dtype=z.dtype)
        g = coef["g"].to(device=z.device, dtype=z.dtype)
        g = g.reshape(g.shape[0], g.shape[1], *([1] * (z.ndim - 2)))
        return apply_blocks(P, z) - g * F

    def denoise(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂₀(z, t) = rᵀz + c_out F, shaped (B, *data_shape)."""
        if not isinstance(t, torch.Tensor):
            t = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
        coef = self.coefficients(t)
        F = self._network(z, t, coef)[:, 0]
        r = coef["r"].to(device=z.device, dtype=z.dtype)
        c_out = coef["c_out"].to(device=z.device, dtype=z.dtype)
        view = (-1,) + (1,) * (F.ndim - 1)
        return apply_blocks(r[:, None, :], z)[:, 0] + c_out.reshape(view) * F

    def extra_repr(self) -> str:
        return (
            f"sigma_data={self.sigma_data:g}, time_feature={self.time_feature!r}, "
            f"input_scaling={self.input_scaling}"
        )


def unwrap(model) -> object:
    """The innermost model behind trainer wrappers (ShardedModel.network, DDP.module,
    torch.compile's _orig_mod)."""
    seen = 0
    while seen < 8:
        for attr in ("network", "module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model
        seen += 1
    return model


def denoiser_gain(model, process: LinearProcess, t: torch.Tensor) -> torch.Tensor:
    """‖g(t)‖² per sample for a preconditioned model (the factor between its ε loss and the
    unit-variance denoiser loss); a clear error for any other model."""
    inner = unwrap(model)
    if not isinstance(inner, Preconditioned):
        raise ValueError(
            "weighting 'denoiser' needs a preconditioned model (model.precondition = true); "
            "use weighting 'eps' for plain networks."
        )
    n = t.numel()
    tt = _shared_time(t.detach().to("cpu", torch.float64).reshape(-1))
    last = getattr(inner, "_last", None)  # the model's own call on this batch (float32 times)
    if last is not None and last[0].shape == tt.shape and torch.allclose(last[0], tt, rtol=1e-6):
        g = last[1]["g"]
    else:
        g = reference_coefficients(process, tt, inner.sigma_data)["g"]
    return g.pow(2).sum(-1).expand(n) if tt.numel() == 1 else g.pow(2).sum(-1)


def _shared_time(tt: torch.Tensor) -> torch.Tensor:
    """One time instead of B equal ones (samplers call with one time per batch)."""
    return tt[:1] if tt.numel() > 1 and bool((tt == tt[0]).all()) else tt


class NoiseLevelDensity:
    """EDM's training density over noise levels for any linear process: the VE-equivalent
    noise ratio s = σ/σ_data is log-normal, log s ~ N(p_mean, p_std²) (EDM: P_mean = −1.2,
    P_std = 1.2 at σ_data = 0.5, i.e. p_mean ≈ −0.5 here), and t is the time whose reference
    posterior std matches, c_out(t)/σ_data = s/√(1 + s²) (k = 1 VE: exactly EDM's σ).
    c_out(t) is monotone (a Markov chain only loses information about x₀), so t is found by
    interpolating a table of ℓ(t) = log(c_out/σ_data) on 4096 times, log-spaced near t_min;
    levels outside [ℓ(t_min), ℓ(T)] are clamped to the ends.

    `p_uniform` of the times are drawn uniformly on [t_min, T] instead. For k ≥ 2 the
    log-normal alone puts no mass above t ≈ 0.5 (c_out saturates at σ_data long before T:
    CLD 4·10⁻⁴ of the draws above 0.5, none above 0.7), so the network is never trained where
    every sampler starts, and over a long run its output there drifts: on thin data the
    preconditioned CLD network's |F| at t = T on prior draws grew from 3 (25k steps) to
    5·10⁴ (300k steps), and every fast sampler then blew up in its first steps
    (docs/objectives.md, "Long training")."""

    def __init__(
        self,
        process: LinearProcess,
        sigma_data: float,
        p_mean: float = -0.5,
        p_std: float = 1.2,
        p_uniform: float = 0.0,
    ) -> None:
        if not p_std > 0:
            raise ValueError(f"p_std must be > 0, got {p_std!r}.")
        if not 0.0 <= p_uniform <= 1.0:
            raise ValueError(f"p_uniform must be in [0, 1], got {p_uniform!r}.")
        self.p_uniform = float(p_uniform)
        self.t_min, self.T = process.t_min, process.T
        lo, hi = process.t_min, process.T
        u = torch.linspace(0.0, 1.0, 2048, dtype=torch.float64)
        t = torch.cat((lo * (hi / lo) ** u, lo + (hi - lo) * u)).sort().values
        t = t.clamp(lo, hi).unique()
        ell = 0.5 * reference_coefficients(process, t, sigma_data)["log_cout2"] - math.log(
            sigma_data
        )
        ell = torch.cummax(ell, 0)[0]  # guard against rounding non-monotonicity
        self.t, self.ell = t, ell
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def __call__(
        self, batch: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """(batch,) float64 times."""
        log_s = self.p_mean + self.p_std * torch.randn(
            batch, generator=generator, dtype=torch.float64
        )
        target = log_s - 0.5 * torch.log1p(torch.exp(2 * log_s))
        idx = torch.searchsorted(self.ell, target.clamp(self.ell[0], self.ell[-1]))
        idx = idx.clamp(1, len(self.t) - 1)
        e0, e1 = self.ell[idx - 1], self.ell[idx]
        w = ((target - e0) / (e1 - e0).clamp_min(1e-300)).clamp(0, 1)
        t = self.t[idx - 1] + w * (self.t[idx] - self.t[idx - 1])
        if self.p_uniform > 0:  # both draws always made: the random stream does not branch
            u = torch.rand(batch, generator=generator, dtype=torch.float64)
            flat = self.t_min + (self.T - self.t_min) * torch.rand(
                batch, generator=generator, dtype=torch.float64
            )
            t = torch.where(u < self.p_uniform, flat, t)
        return t.to(device) if device is not None else t
