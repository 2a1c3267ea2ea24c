"""Likelihoods through the probability-flow ODE, for any linear process (docs/design.md §6).

The PF-ODE dz/dt = f(z, t) = β(t)[A z − h(t) D ∇log p_t(z)] (``ModelDynamics.flow`` of
``phasediff.samplers``: the field the PF-ODE samplers integrate, with the model's score on
the noisy blocks) carries the model's density along its paths: d/dt log p_t(z_t) =
−∇·f(z_t, t) (instantaneous change of variables). Integrating from t_min to T gives the
model's density at t_min:

    log p_θ(z) = log π(z_T) + ∫_{t_min}^T ∇·f(z_t, t) dt,      z_{t_min} = z,

with π = N(0, P ⊗ I) the process prior. For k = 1 this is the (exact up to the ODE solver)
model log-likelihood of x = z. For k ≥ 2 the model is a density over (x, aux); the x-marginal
is not tractable, and what is reported is the variational bound of CLD/PSLD

    −log p_θ(x) ≤ E_{a~q(·|x)}[−log p_θ(x, a) + log q(a | x)]
               = E_q[−log p_θ(x, a)] − H(q(· | x)),

with q(a | x) = N(e_a(t_min) x, Σ_aa(t_min) ⊗ I), the forward law of the auxiliaries at t_min
given x₀ = x (≈ the initial auxiliary law N(0, Σ₀,aa) of the process). The derivation, and
why this q is valid also when the auxiliaries start at 0, is in docs/evaluation.md.

The divergence is exact (one backward pass per state coordinate) when the state has at most
``EXACT_DIVERGENCE_MAX_DIM`` = 16 coordinates per sample, and otherwise Hutchinson's
estimator εᵀ(∂f/∂z)ε with one Rademacher ε per sample held fixed along the path (unbiased).
Images: ``dequantize`` / ``bits_per_dim`` implement uniform dequantisation on the data grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from phasediff.processes import LinearProcess
from phasediff.samplers import ModelDynamics, dopri5_solve
from phasediff.validation import check_int, check_positive

__all__ = [
    "DIVERGENCES",
    "EXACT_DIVERGENCE_MAX_DIM",
    "LikelihoodResult",
    "auxiliary_law",
    "bits_per_dim",
    "dequantize",
    "image_bits_per_dim",
    "negative_log_likelihood",
    "ode_log_density",
]

EXACT_DIVERGENCE_MAX_DIM = 16
"""Largest state size k·d per sample for which ``divergence="auto"`` uses the exact trace."""

DIVERGENCES = ("auto", "exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """Per-sample negative log-likelihoods (nats) of data x of d coordinates each.

    nll: (B,) float64, −log p_θ(x) (``exact_marginal``) or its upper bound (k ≥ 2);
    nll_per_dim = nll / d; bits_per_dim (only for dequantised images); nfe: network
    evaluations of all ODE solves; divergence: "exact" or "hutchinson"; d: data coordinates;
    exact_marginal: True for k = 1, False when the augmented bound is reported.
    """

    nll: torch.Tensor
    nll_per_dim: torch.Tensor
    nfe: int
    divergence: str
    d: int
    exact_marginal: bool
    bits_per_dim: torch.Tensor | None = None

    def summary(self) -> dict:
        """JSON-friendly means and standard errors."""
        n = self.nll.shape[0]

        def stats(v: torch.Tensor) -> dict:
            se = float(v.std(unbiased=True)) / math.sqrt(n) if n > 1 else None
            return {"mean": float(v.mean()), "se": se}

        out = {
            "n": n,
            "d": self.d,
            "nll_nats": stats(self.nll),
            "nll_nats_per_dim": stats(self.nll_per_dim),
            "nfe": self.nfe,
            "divergence": self.divergence,
            "quantity": "-log p(x)" if self.exact_marginal else "augmented bound ≥ -log p(x)",
        }
        if self.bits_per_dim is not None:
            out["bits_per_dim"] = stats(self.bits_per_dim)
        return out


# ---------------------------------------------------------------------------- validation


def _check_process(process: object) -> LinearProcess:
    if not isinstance(process, LinearProcess):
        raise ValueError(f"process must be a LinearProcess, got {type(process).__name__}.")
    if not process.noisy_blocks:
        raise ValueError(
            f"process '{process.name}' has no noisy blocks (D = 0), so it has no score-based "
            "probability-flow ODE; likelihoods need a process with noise."
        )
    return process


def _check_batch(x: object, name: str, min_ndim: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}.")
    if x.ndim < min_ndim or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (batch, ...) with at least {min_ndim} axes, "
            f"got {tuple(x.shape)}."
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got a tensor containing NaN or Inf.")
    return x


def _model_dtype(model: object, fallback: torch.dtype) -> torch.dtype:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return fallback


def _model_device(model: object, fallback: torch.device) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return fallback


# ---------------------------------------------------------------------------- divergences


def _exact_divergence(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """tr(∂f/∂z) per sample, one backward pass per coordinate (samples must not interact)."""
    flat = out.reshape(out.shape[0], -1)
    div = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), z, retain_graph=True)
        div = div + grad.reshape(out.shape[0], -1)[:, i]
    return div


def _hutchinson_divergence(out: torch.Tensor, z: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """εᵀ(∂f/∂z)ε per sample (Hutchinson), E_ε = tr(∂f/∂z) for Rademacher ε."""
    (vjp,) = torch.autograd.grad(out, z, grad_outputs=probe)
    return (vjp * probe).reshape(out.shape[0], -1).sum(dim=1)


def _resolve_divergence(divergence: str, state_dim: int) -> str:
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"unknown divergence {divergence!r}; valid choices are: {', '.join(DIVERGENCES)}."
        )
    if divergence == "auto":
        return "exact" if state_dim <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson"
    return divergence


# ---------------------------------------------------------------------------- ODE density


def ode_log_density(
    model,
    process: LinearProcess,
    z: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    divergence: str = "auto",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int, str]:
    """log p_θ(z) of full states z (B, k, *data_shape) at t_min, by the PF-ODE (module doc).

    Integrates (z_t, ∫∇·f) from t_min to T with torchdiffeq's dopri5 (``rtol``, ``atol``) and
    adds the prior log-density. Returns (log p (B,) float64, NFE, divergence used). The model
    runs in its own parameter dtype (float32 for trained networks) on z's device (put z on
    the model's device); samples of the batch must not interact inside the model (true for
    every phasediff network).
    """
    process = _check_process(process)
    z = _check_batch(z, "z", 3)
    if z.shape[1] != process.k:
        raise ValueError(
            f"z must be shaped (batch, k = {process.k}, *data_shape), got {tuple(z.shape)}."
        )
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    state_dim = math.prod(z.shape[1:])
    method = _resolve_divergence(divergence, state_dim)
    dtype = _model_dtype(model, z.dtype)
    device = z.device
    z = z.detach().to(dtype)
    dynamics = ModelDynamics(model, process, device=device, dtype=dtype)
    velocity = dynamics.flow  # the PF-ODE field β[Az − hDŝ], the samplers' own
    probe = None
    if method == "hutchinson":
        bits = torch.randint(0, 2, z.shape, generator=generator, dtype=torch.int64)
        probe = (2 * bits - 1).to(device=device, dtype=dtype)

    def rhs(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        zt = state[0].detach().requires_grad_(True)
        with torch.enable_grad():
            out = velocity(float(t), zt)
            if method == "exact":
                div = _exact_divergence(out, zt)
            else:
                div = _hutchinson_divergence(out, zt, probe)
        return out.detach(), div.detach()

    times = torch.tensor([process.t_min, process.T], dtype=dtype, device=device)
    start = (z, torch.zeros(z.shape[0], dtype=dtype, device=device))
    with torch.no_grad():
        z_path, div_path = dopri5_solve(
            rhs, start, times, rtol=rtol, atol=atol, what="the likelihood ODE",
            advice="the model's field is not integrable at this tolerance; loosen rtol/atol",
        )  # fmt: skip
    z_T, integral = z_path[-1], div_path[-1]
    logp = process.prior_logp(z_T.to(torch.float64)).to(torch.float64)
    return logp + integral.to(torch.float64), dynamics.nfe, method


# ---------------------------------------------------------------------------- NLL


def auxiliary_law(process: LinearProcess) -> tuple[torch.Tensor, torch.Tensor]:
    """(e_a, Σ_q): q(a | x) = N(e_a x, Σ_q ⊗ I), the law of the auxiliaries at t_min given x₀ = x.

    From the exact kernel z_{t_min} | x₀ ~ N(e x₀, Σ_{t_min} ⊗ I): e_a = e[1:] ((k−1,)),
    Σ_q = Σ_{t_min}[1:, 1:] ((k−1)×(k−1)), both float64. Raises ValueError when Σ_q is
    singular (q would have no density; increase t_min or use auxiliaries with an initial law).
    """
    process = _check_process(process)
    if process.k < 2:
        raise ValueError(f"process '{process.name}' has k = 1: it has no auxiliary variables.")
    E, sigma = process.kernel(torch.tensor(process.t_min, dtype=torch.float64))
    e_a, cov = E[1:, 0].clone(), sigma[1:, 1:].clone()
    evals = torch.linalg.eigvalsh(cov)
    if float(evals.min()) <= 1e-300 or float(evals.min()) <= 1e-14 * float(evals.max()):
        raise ValueError(
            f"the auxiliaries of process '{process.name}' have a singular law at t_min = "
            f"{process.t_min:g} (smallest variance {float(evals.min()):.3g}); the augmented "
            "likelihood bound needs a non-degenerate q(aux | x): increase t_min."
        )
    return e_a, cov


def negative_log_likelihood(
    model,
    process: LinearProcess,
    x: torch.Tensor,
    *,
    n_aux: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    divergence: str = "auto",
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """−log p_θ(x) per sample (k = 1) or its augmented upper bound (k ≥ 2), in nats.

    k ≥ 2: for each of ``n_aux`` draws a ~ q(· | x) (``auxiliary_law``) the value
    −log p_θ(x, a) + log q(a | x) is averaged; its expectation is E_q[−log p_θ(x, a)] − H(q),
    an upper bound on −log p_θ(x) (Jensen; docs/evaluation.md). ``x``: (B, *data_shape);
    solved in chunks of ``batch_size`` (the adaptive step is shared within a chunk).
    ``generator`` drives the auxiliary draws and Hutchinson probes.
    """
    process = _check_process(process)
    x = _check_batch(x, "x")
    n_aux = check_int(n_aux, "n_aux")
    batch_size = check_int(batch_size, "batch_size")
    _resolve_divergence(divergence, 1)
    d = math.prod(x.shape[1:])
    k = process.k
    law = auxiliary_law(process) if k > 1 else None
    device = _model_device(model, x.device)
    nlls, nfe, method = [], 0, "exact"
    for start in range(0, x.shape[0], batch_size):
        # Auxiliary draws and log q in float64 on the CPU; the ODE on the model's device.
        xb = x[start : start + batch_size].to(device="cpu", dtype=torch.float64)
        if law is None:
            logp, calls, method = ode_log_density(
                model,
                process,
                xb[:, None].to(device),
                rtol=rtol,
                atol=atol,
                divergence=divergence,
                generator=generator,
            )
            nlls.append(-logp.cpu())
            nfe += calls
            continue
        e_a, cov = law
        chol = torch.linalg.cholesky(cov)
        cov_inv = torch.cholesky_inverse(chol)
        logdet = 2.0 * float(torch.log(torch.diagonal(chol)).sum())
        total = torch.zeros(xb.shape[0], dtype=torch.float64)
        for _ in range(n_aux):
            eps = torch.randn(
                (xb.shape[0], k - 1, *xb.shape[1:]), generator=generator, dtype=torch.float64
            )
            flat_eps = eps.reshape(xb.shape[0], k - 1, -1)
            noise = torch.einsum("ij,bjd->bid", chol, flat_eps)
            aux = e_a[None, :, None] * xb.reshape(xb.shape[0], 1, -1) + noise
            z = torch.cat((xb.reshape(xb.shape[0], 1, -1), aux), dim=1)
            z = z.reshape(xb.shape[0], k, *xb.shape[1:]).to(device)
            logp, calls, method = ode_log_density(
                model, process, z, rtol=rtol, atol=atol, divergence=divergence, generator=generator
            )
            # log q(a | x): Gaussian with covariance Σ_q per coordinate, a − mean = noise.
            quad = torch.einsum("bid,ij,bjd->b", noise, cov_inv, noise)
            logq = -0.5 * quad - 0.5 * d * ((k - 1) * math.log(2 * math.pi) + logdet)
            total += -logp.cpu() + logq
            nfe += calls
        nlls.append(total / n_aux)
    nll = torch.cat([v.cpu() for v in nlls])
    return LikelihoodResult(
        nll=nll,
        nll_per_dim=nll / d,
        nfe=nfe,
        divergence=method,
        d=d,
        exact_marginal=k == 1,
    )


# ---------------------------------------------------------------------------- images


def _grid(levels: object, data_range: object) -> tuple[int, float, float, float]:
    levels = check_int(levels, "levels", 2)
    try:
        lo, hi = (float(v) for v in data_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be finite with low < high, got {data_range!r}.")
    return levels, lo, hi, (hi - lo) / (levels - 1)


def dequantize(
    x: torch.Tensor,
    *,
    levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform dequantisation y = x + Δ(u − ½), u ~ U[0, 1)^d, Δ = (high − low)/(levels − 1).

    ``x`` must lie on the grid low + jΔ, j = 0…levels−1 (e.g. 256 levels in [−1, 1]: the
    pixels 2i/255 − 1; the digits: 17 levels, i/8 − 1); each value owns the cell of width Δ
    centred on it, so P(x) = ∫_cell p(y) dy ≥ Δ^d exp E_u[log p(y)] (``bits_per_dim``).
    """
    x = _check_batch(x, "x")
    levels, lo, hi, delta = _grid(levels, data_range)
    j = (x.to(torch.float64) - lo) / delta
    off = float((j - j.round()).abs().max())
    if off > 1e-3 or float(j.min()) < -1e-3 or float(j.max()) > levels - 1 + 1e-3:
        raise ValueError(
            f"x is not quantised to {levels} levels in [{lo:g}, {hi:g}] (a value is {off:.3g} "
            f"grid steps off the grid or outside the range); pass the levels and data_range "
            "of the data."
        )
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    return (x.to(torch.float64) + delta * (u - 0.5)).to(x.dtype)


def bits_per_dim(
    nll_per_dim: torch.Tensor | float,
    *,
    levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor | float:
    """Discrete bits/dim from the continuous NLL of dequantised data: (nll/d − ln Δ)/ln 2.

    From −log P(x) ≤ E_u[−log p(x + Δ(u − ½))] − d ln Δ (Jensen on the cell integral).
    [−1, 1] with 256 levels: Δ = 2/255, offset log2(127.5) = 6.994 bits (the common
    convention with cells i/256 in [0, 1] gives 7; docs/evaluation.md).
    """
    _, _, _, delta = _grid(levels, data_range)
    return (nll_per_dim - math.log(delta)) / math.log(2.0)


def image_bits_per_dim(
    model,
    process: LinearProcess,
    x: torch.Tensor,
    *,
    levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    n_aux: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    divergence: str = "auto",
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """NLL (bound) of uniformly dequantised images x, with ``bits_per_dim`` filled in."""
    y = dequantize(x, levels=levels, data_range=data_range, generator=generator)
    result = negative_log_likelihood(
        model,
        process,
        y,
        n_aux=n_aux,
        rtol=rtol,
        atol=atol,
        divergence=divergence,
        batch_size=batch_size,
        generator=generator,
    )
    result.bits_per_dim = bits_per_dim(result.nll_per_dim, levels=levels, data_range=data_range)
    return result
