"""Hamiltonian velocity objectives: HGF velocity regression and Hamiltonian score matching
(Holderrieth, Xu & Jaakkola 2024; docs/design.md §3; derivations in docs/hgf.md).

**HGF velocity.** For a process whose data block x is noise-free (row D[0, :] = 0: every
Hamiltonian flow, flow matching, but also CLD/HOLD), x is differentiable in time with
ẋ_t = β(t) (A z_t)₀ = a(t)·z_t. Its marginal p_t(x) then solves the continuity equation with
the velocity field

    u_t(x) = E[ẋ_t | x_t = x] = E[a(t)·z_t | x_t = x]                         (1)

(for x' = v, v' = −Kx this is the Hamiltonian velocity predictor E[v_t | x_t]). A network
V_θ(x, t) on the position only regresses the conditional target a(t)·z_t, z_t ~ p(z_t | x₀)
drawn exactly through the kernel, by plain MSE; the minimiser
is (1). Sampling integrates dx/dt = V_θ(x, t) from T down to t_min
(`phasediff.samplers.hamiltonian`).

**Hamiltonian score matching.** For a force field F_θ (the candidate score) simulate
x' = v, v' = F_θ(x) from x₀ ~ data, v₀ ~ N(0, I). The Hamiltonian score discrepancy

    HSD(θ) = ∫_0^T E‖φ*_t(x_t)‖² dt,     φ*_t(x) = E[v_t | x_t = x],          (2)

vanishes iff F_θ = ∇log p_data (the Boltzmann–Gibbs law p_data ⊗ N(0, I) is then invariant,
so v_t ⫫ x_t). Since E‖φ*‖² = max_φ E[2 φ·v_t − ‖φ‖²], HSD is a max over velocity
predictors φ, and by the envelope theorem ∇_θ HSD = ∂_θ E[2 φ*·v_t − ‖φ*‖²] with φ* held
fixed and the gradient taken through the simulated trajectory (x_t, v_t).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from phasediff.objectives.score_matching import initial_state, sample_times
from phasediff.processes import LinearProcess, apply_blocks
from phasediff.processes.linalg import psd_factor
from phasediff.validation import check_int

VELOCITY = "velocity"
"""The `parameterization` label of a position-only velocity model V(x, t) (k = 1 input block,
one output block)."""

X0_PREDICTION = "x0"
"""`model.parameterization` of a velocity model whose network predicts x̂₀ = E[x₀ | x_t]
(`VelocityFromDenoiser`); the model itself still declares parameterization "velocity"."""

VELOCITY_OBJECTIVES = ("velocity",)
"""Objectives that train a position-only velocity model instead of a score model."""

HAMILTONIAN_SCORE_MATCHING = "hamiltonian_score_matching"
"""Objective name of Hamiltonian score matching; it has its own training loop
(`phasediff.training.hamiltonian_sm`), not the (model, process, x0) signature."""


# --------------------------------------------------------------------------- HGF velocity
def check_velocity_process(process: LinearProcess) -> None:
    """The x block must be noise-free (D[0, :] = 0) for ẋ, hence (1), to exist."""
    row = process.D[0].abs().max()
    if float(row) > 1e-12 * max(1.0, float(process.D.abs().max())):
        raise ValueError(
            f"process '{process.name}' puts noise on the data block x (D[0, :] ≠ 0), so x has no "
            f"velocity to regress; the velocity objective needs a process with a "
            f"noise-free x block such as ohgf, hamiltonian, zero_force or rectified_flow."
        )


def velocity_coefficients(process: LinearProcess, t: torch.Tensor) -> torch.Tensor:
    """a(t) = β(t) A[0, :] (batch, k), float64: ẋ_t = a(t)·z_t."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return process.beta(t)[..., None] * process.A[0].to(t.device)


def denoiser_coefficients(
    process: LinearProcess, t: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c₁, c₂), float64 of t's shape, with u_t(x) = c₁ x + c₂ x̂₀(x) for x̂₀ = E[x₀ | x_t = x].

    Given x₀, (x_t, ẋ_t) is Gaussian with E[ẋ_t | x₀] = (a·e) x₀ and regression slope
    c₁ = (Σ_t a)₀ / (Σ_t)₀₀ = σ̇/σ (σ² = (Σ_t)₀₀), so by the tower property
    u_t(x) = (a·e) x̂₀ + c₁ (x − e₀ x̂₀): c₂ = a·e − c₁e₀ = σ dρ/dt with ρ = e₀/σ (docs/hgf.md §2).
    """
    t = process.check_time(t)
    E, sigma = process.kernel(t)
    e = E[..., :, 0]
    a = velocity_coefficients(process, t)
    c1 = (sigma @ a[..., :, None])[..., 0, 0] / sigma[..., 0, 0]
    c2 = (a * e).sum(-1) - c1 * e[..., 0]
    return c1, c2


class VelocityFromDenoiser(torch.nn.Module):
    """A velocity model whose network predicts x̂₀ = E[x₀ | x_t] (model.parameterization "x0").

    ``forward(x, t)`` returns V = c₁(t) x + c₂(t) x̂₀ (`denoiser_coefficients`), the same field
    as a network regressing the velocity directly, so every hgf sampler works unchanged;
    ``denoise(x, t)`` returns x̂₀ itself (used by the loss and by `hgf_ei`). The optimal field
    of an isotropic toy under the Oscillation HGF with data_std = RMS has no linear part, and a
    velocity-output MLP stalls at V ≡ 0 there; x̂₀ ≈ cos(αt)·x has a large linear part and
    trains (docs/hgf.md §2).
    """

    parameterization = VELOCITY
    prediction = X0_PREDICTION

    def __init__(self, net: torch.nn.Module, process: LinearProcess) -> None:
        super().__init__()
        check_velocity_process(process)
        self.net = net
        self.process = process

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂₀(x, t), shaped like x: (B, 1, *data_shape)."""
        return self.net(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.detach().to("cpu", torch.float64)
        if tt.ndim == 1 and tt.numel() > 1 and bool((tt == tt[0]).all()):
            tt = tt[:1]  # samplers call with one time per batch: one k×k kernel, not B
        c1, c2 = denoiser_coefficients(self.process, tt)
        view = (-1,) + (1,) * (x.ndim - 1)
        c1 = c1.to(device=x.device, dtype=x.dtype).reshape(view)
        c2 = c2.to(device=x.device, dtype=x.dtype).reshape(view)
        return c1 * x + c2 * self.net(x, t)


X0_MIN_SNR = 5.0
"""γ of the min-SNR weighting min(e₀²/σ², γ) of the x̂₀ regression (Hang et al. 2023)."""


def _x0_regression(
    model, process: LinearProcess, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(√w x̂₀, √w x₀) for the x̂₀ loss with weight w = min(SNR, γ), SNR = e₀²/σ².

    x̂₀ is recovered from the model's velocity output as (V − c₁x)/c₂ — exact, and it keeps the
    loss on the plain model call (the trainer wraps models for DDP and autocast)."""
    tt = t.detach().to("cpu", torch.float64)
    c1, c2 = denoiser_coefficients(process, tt)
    E, Sigma = process.kernel(tt)
    weight = (E[:, 0, 0] ** 2 / Sigma[:, 0, 0]).clamp(max=X0_MIN_SNR).sqrt()
    view = (-1,) + (1,) * (x_t.ndim - 1)
    c1, c2, weight = (c.to(x0).reshape(view) for c in (c1, c2, weight))
    v = model(x_t, t.to(x0.dtype))
    return weight * (v - c1 * x_t) / c2, weight * x0.reshape(x_t.shape)


def predicts_x0(model) -> bool:
    """True for a velocity model built on an x̂₀ network (`VelocityFromDenoiser`)."""
    return is_velocity_model(model) and getattr(model, "prediction", None) == X0_PREDICTION


def velocity_pair(
    process: LinearProcess,
    x0: torch.Tensor,
    t: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, ẋ_t) for data x₀ (B, *data) at times t (B,), both (B, 1, *data).

    z_t = E_t z₀ + (R_N ⊗ I) ε' with z₀ = (x₀, aux₀), aux₀ drawn from the process's initial
    covariance and R_N R_Nᵀ = N_t the noise added on [0, t] (skipped when D = 0): exactly
    z_t | x₀ ~ N(e_t x₀, Σ_t), and for Hamiltonian flows (x_t, ẋ_t) lies on the trajectory
    through (x₀, v₀) to rounding. ẋ_t = a(t)·z_t."""
    check_velocity_process(process)
    t = process.batch_times(t, x0.shape[0]).to(x0.device)
    E, N = process.kernel(t, s=torch.zeros_like(t))
    z0 = initial_state(process, x0, generator)
    z = apply_blocks(E, z0)
    if bool(process.D.any()):
        noise = torch.randn(z0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        z = z + apply_blocks(psd_factor(N), noise)
    a = velocity_coefficients(process, t)  # (B, k)
    target = apply_blocks(a[:, None, :], z)
    return z[:, :1], target


def is_velocity_model(model) -> bool:
    """True when the model declares `parameterization = "velocity"`."""
    return getattr(model, "parameterization", None) == VELOCITY


def hgf_velocity(
    model,
    process: LinearProcess,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    weighting: str = "eps",
    t: torch.Tensor | None = None,
    reduce: bool = True,
) -> torch.Tensor:
    """HGF velocity regression: E_t E‖V_θ(x_t, t) − ẋ_t‖² per data coordinate, eq. (1).

    `model(x_t, t)` sees the position block only ((B, 1, *data) in, (B, 1, *data) out) and
    must declare parameterization "velocity". The loss is a plain MSE: `weighting` exists for
    the common objective signature and must stay at its default "eps". For an x̂₀-predicting
    model (`VelocityFromDenoiser`) the regression is E[min(SNR_t, 5)·‖x̂₀(x_t, t) − x₀‖²]
    (SNR = e₀²/σ², min-SNR weighting), whose minimiser E[x₀ | x_t] gives the same optimal field
    (1) through `denoiser_coefficients` (docs/hgf.md §2).
    """
    if weighting != "eps":
        raise ValueError(
            f"the velocity objective is a plain unweighted MSE; leave objective.weighting "
            f"at its default 'eps', got {weighting!r}."
        )
    if not is_velocity_model(model):
        raise ValueError(
            "the velocity objective trains a position-only velocity model: build it with "
            "one input block and parameterization 'velocity' (trainer.build_model does this), "
            f"got parameterization {getattr(model, 'parameterization', None)!r}."
        )
    B = x0.shape[0]
    if t is None:
        t = sample_times(process, B, generator, device=x0.device)
    x_t, target = velocity_pair(process, x0, t, generator)
    t = process.batch_times(t, B).to(x0.device)
    if predicts_x0(model):
        out, target = _x0_regression(model, process, x_t, x0, t)
    else:
        out = model(x_t, t.to(x0.dtype))
    if tuple(out.shape) != tuple(x_t.shape):
        raise ValueError(
            f"velocity model output must have shape {tuple(x_t.shape)} (batch, 1, *data_shape), "
            f"got {tuple(out.shape)}."
        )
    per_sample = (out - target).pow(2).reshape(B, -1).mean(1)
    return per_sample.mean() if reduce else per_sample


# ------------------------------------------------------------- exact references (Gaussians)
def velocity_moments(
    process: LinearProcess, t: torch.Tensor | float, data_var: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Var x_t, Var ẋ_t, Cov(ẋ_t, x_t)) per coordinate for zero-mean data of variance
    data_var, from the kernel: C = data_var·e eᵀ + Σ_t, Var x = C₀₀, Var ẋ = aᵀCa, Cov = (Ca)₀."""
    t = process.check_time(t)
    E, sigma = process.kernel(t)
    e = E[..., :, 0]
    C = sigma + data_var * e[..., :, None] * e[..., None, :]
    a = velocity_coefficients(process, t)
    Ca = (C @ a[..., :, None])[..., 0]
    return C[..., 0, 0], (a * Ca).sum(-1), Ca[..., 0]


def optimal_velocity_mixture(
    process: LinearProcess,
    x: torch.Tensor,
    t: torch.Tensor | float,
    means,
    std,
    weights=None,
) -> torch.Tensor:
    """Exact u_t(x) = E[ẋ_t | x_t = x], eq. (1), for Gaussian-mixture data
    Σ_i w_i N(μ_i, s_i² I) (float64; x is (B, d), t scalar or (B,), std a number or one s_i
    per component).

    Component i makes (x_t, ẋ_t) jointly Gaussian per coordinate with means (e₀μ_i, (a·e)μ_i),
    Var x_t = C₀₀ and Cov(ẋ_t, x_t) = (Ca)₀ (C = s_i²·e eᵀ + Σ_t), so
    u_t(x) = Σ_i r_i(x)[(a·e)μ_i + (Ca)₀/C₀₀ (x − e₀μ_i)] with posterior weights r_i(x).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    d = x.shape[-1]
    mu = torch.as_tensor(means, dtype=torch.float64).reshape(-1, d)
    n = mu.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else weights
    log_w = torch.log(torch.as_tensor(w, dtype=torch.float64))
    var0 = torch.as_tensor(std, dtype=torch.float64).reshape(-1).expand(n) ** 2
    t = process.check_time(t)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    E, sigma = process.kernel(t)
    e = E[:, :, 0]  # (B, k)
    eeT = e[:, :, None] * e[:, None, :]
    C = sigma[:, None] + var0[None, :, None, None] * eeT[:, None]  # (B, n, k, k)
    a = velocity_coefficients(process, t)
    var_x = C[..., 0, 0]  # (B, n)
    cov = (C @ a[:, None, :, None])[..., 0, 0]  # (B, n)
    ae = (a * e).sum(-1)
    diff = x[:, None, :] - e[:, 0, None, None] * mu[None]  # (B, n, d)
    logp = log_w - 0.5 * diff.pow(2).sum(-1) / var_x - 0.5 * d * torch.log(var_x)
    r = torch.softmax(logp, dim=1)
    cond = ae[:, None, None] * mu[None] + (cov / var_x)[..., None] * diff
    return (r[:, :, None] * cond).sum(1)


def optimal_velocity_gaussian(
    process: LinearProcess, x: torch.Tensor, t: torch.Tensor | float, data_var: float
) -> torch.Tensor:
    """Exact u_t(x) for data N(0, data_var·I): linear, u = Cov(ẋ_t, x_t)/Var(x_t) · x."""
    d = torch.as_tensor(x).shape[-1]
    return optimal_velocity_mixture(
        process, x, t, torch.zeros(1, d, dtype=torch.float64), math.sqrt(data_var)
    )


def mixture_score(x: torch.Tensor, means, std: float, weights=None) -> torch.Tensor:
    """∇log p(x) of the isotropic Gaussian mixture Σ_i w_i N(μ_i, std² I) (x: (B, d))."""
    x = torch.as_tensor(x)
    mu = torch.as_tensor(means, dtype=x.dtype, device=x.device).reshape(-1, x.shape[-1])
    n = mu.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=x.dtype) if weights is None else weights
    log_w = torch.log(torch.as_tensor(w, dtype=x.dtype, device=x.device))
    diff = x[:, None, :] - mu[None]
    r = torch.softmax(log_w - 0.5 * diff.pow(2).sum(-1) / std**2, dim=1)
    return -(r[:, :, None] * diff).sum(1) / std**2


# --------------------------------------------------------------- Hamiltonian score matching
def leapfrog(
    force: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    v0: torch.Tensor,
    horizon: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Velocity-Verlet (leapfrog) for x' = v, v' = F(x) on [0, horizon] in `steps` steps:

        v ← v + h/2 F(x);  x ← x + h v;  v ← v + h/2 F(x)     (h = horizon/steps),

    symplectic and second order, steps + 1 force evaluations. Returns (xs, vs, times): the
    states at t_j = j·h, j = 1…steps, stacked as (steps, B, *data), differentiable in F's
    parameters (no in-place updates)."""
    steps = check_int(steps, "leapfrog steps")
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"the horizon T must be a finite number > 0, got {horizon}.")
    h = horizon / steps
    x, v = x0, v0
    f = force(x)
    xs, vs = [], []
    for _ in range(steps):
        v = v + 0.5 * h * f
        x = x + h * v
        f = force(x)
        v = v + 0.5 * h * f
        xs.append(x)
        vs.append(v)
    times = h * torch.arange(1, steps + 1, dtype=torch.float64)
    return torch.stack(xs), torch.stack(vs), times


def simulate_phase_space(
    force: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    horizon: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened leapfrog states of x' = v, v' = F(x) from (x₀, v₀ ~ N(0, I)):
    (x_t, v_t, t) with x_t, v_t (steps·B, 1, *data) and t (steps·B,) — the pairs on which the
    velocity predictor φ(x_t, t) ≈ E[v_t | x_t] is fitted."""
    v0 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    xs, vs, times = leapfrog(force, x0, v0, horizon, steps)
    n, B = xs.shape[0], xs.shape[1]
    t = times.to(x0.device).repeat_interleave(B)
    return xs.reshape(n * B, 1, *x0.shape[1:]), vs.reshape(n * B, 1, *x0.shape[1:]), t


def velocity_predictor_loss(
    velocity_model, x_t: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """φ step: E‖φ(x_t, t) − v_t‖² (sum over data coordinates), trajectory detached."""
    out = velocity_model(x_t.detach(), t.to(x_t.dtype))
    return (out - v_t.detach()).pow(2).reshape(x_t.shape[0], -1).sum(1).mean()


def discrepancy_bound(
    velocity_model, x_t: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor, horizon: float
) -> torch.Tensor:
    """T · E_t E[2 φ(x_t, t)·v_t − ‖φ(x_t, t)‖²], eq. (2)'s variational form: a lower bound on
    HSD for any φ, equal to it at φ = φ* (right Riemann sum over the leapfrog grid). As the θ
    loss it is differentiated through (x_t, v_t) with φ held fixed (envelope theorem)."""
    phi = velocity_model(x_t, t.to(x_t.dtype))
    per = (2.0 * phi * v_t - phi.pow(2)).reshape(x_t.shape[0], -1).sum(1)
    return horizon * per.mean()
