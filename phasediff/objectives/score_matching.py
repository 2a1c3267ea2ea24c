"""Score-matching objectives on the noisy blocks (docs/design.md §2; derivations in
docs/objectives.md).

Every objective is a plain function `(model, process, x0, generator) -> loss` and sees the
network only through the model contract: `model(z, t)` returns a tensor shaped
(B, m, *data_shape) on the m = len(process.noisy_blocks) noisy blocks, holding either ε
(`model.parameterization == "eps"`) or the score (`"score"`).

With z_t = m_t + (L ⊗ I)ε and L lower triangular in `process.factor_order` (noisy blocks
last), the conditional score on the noisy blocks is s* = −U ε_n with U = (L⁻ᵀ)_nn, so an
ε-prediction ε̂ maps to the score ŝ = −U ε̂. All losses are E_t E[(ŝ − s*)ᵀ W(t) (ŝ − s*)]
per data coordinate for a weighting W:

- "eps":         W = U⁻ᵀU⁻¹ — the residual in ε units, ‖ε̂ − ε_n‖² (uniform-in-ε);
- "score":       W = I (plain score-space residual);
- "likelihood":  W = β(t) D_nn (the weighting that turns the loss into the ELBO gap);
- "cld":         W = I / ℓ_t² with ℓ_t² = tr(UUᵀ)/m — CLD's λ(t) = ℓ_t⁻², which coincides
                 with "eps" when one block is noisy (CLD, HOLD, VP);
- "denoiser":    for preconditioned models only (objectives/preconditioning.py): the ε
                 residual divided by ‖g(t)‖²/m, i.e. EDM's unit-variance loss ‖F − F*‖² on
                 the standardised x₀ residual.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.objectives.preconditioning import denoiser_gain
from phasediff.processes import LinearProcess, apply_blocks
from phasediff.processes.linalg import psd_factor

WEIGHTINGS = ("eps", "score", "likelihood", "cld", "denoiser")
PARAMETERIZATIONS = ("eps", "score")


def _check(process: LinearProcess, weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"unknown weighting {weighting!r}; valid weightings are: {', '.join(WEIGHTINGS)}."
        )
    if not process.noisy_blocks:
        raise ValueError(
            f"process '{process.name}' has no noisy blocks (D = 0), so it has no score to "
            f"match; train it with the Hamiltonian velocity objective instead."
        )


def sample_times(
    process: LinearProcess, batch: int, generator: torch.Generator | None, device=None
) -> torch.Tensor:
    """t ~ U[t_min, T] in float64."""
    u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
    return process.t_min + (process.T - process.t_min) * u


def initial_state(
    process: LinearProcess, x0: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """z₀ = (x₀, aux₀), (B, k, *data): the auxiliaries drawn from the process's initial law
    N(0, Σ₀[1:, 1:] ⊗ I) (one draw of B·(k − 1)·d normals; none when k = 1)."""
    B, k = x0.shape[0], process.k
    z0 = torch.zeros((B, k, *x0.shape[1:]), dtype=x0.dtype, device=x0.device)
    z0[:, 0] = x0
    if k > 1:
        root = psd_factor(process.initial_cov[1:, 1:])
        noise = torch.randn(
            (B, k - 1, *x0.shape[1:]), generator=generator, dtype=x0.dtype, device=x0.device
        )
        z0[:, 1:] = apply_blocks(root.expand(B, k - 1, k - 1), noise)
    return z0


def parameterization_of(model) -> str:
    """The model's declared output ("eps" unless it says otherwise)."""
    kind = getattr(model, "parameterization", "eps")
    if kind not in PARAMETERIZATIONS:
        raise ValueError(
            f"model.parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {kind!r}."
        )
    return kind


def _perturb(process: LinearProcess, x0: torch.Tensor, t: torch.Tensor, generator, hybrid: bool):
    """(z_t, ε, L): hybrid → auxiliaries marginalised through the kernel (HSM); otherwise
    sampled once at t = 0 and conditioned on (plain DSM)."""
    if hybrid:
        return process.sample_marginal(x0, t, generator=generator, return_factor=True)
    E, N = process.kernel(t, s=torch.zeros_like(t))
    L = process.factor(N)
    z0 = initial_state(process, x0, generator)
    eps = torch.randn(z0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    z = apply_blocks(E, z0) + apply_blocks(L, eps)
    return z, eps, L


def _loss(
    model,
    process: LinearProcess,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    weighting: str,
    t: torch.Tensor | None,
    hybrid: bool,
    reduce: bool,
    time_sampler: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    _check(process, weighting)
    kind = parameterization_of(model)
    B = x0.shape[0]
    if t is None and time_sampler is not None:  # e.g. preconditioning.NoiseLevelDensity
        t = time_sampler(B, generator, device=x0.device)
    elif t is None:
        t = sample_times(process, B, generator, device=x0.device)
    else:
        t = process.batch_times(t, B).to(x0.device)
    # the batch is noised at exactly the times the model is told (rounded to the data's dtype),
    # so the model's own marginal of t is the perturbation's (LinearProcess.marginal's memo)
    t = t.to(x0.dtype)
    z, eps, L = _perturb(process, x0, t, generator, hybrid)
    n = list(process.noisy_blocks)
    m = len(n)
    eps_n = eps[:, n]
    out = model(z, t)
    expected = (B, m, *x0.shape[1:])
    if tuple(out.shape) != expected:
        raise ValueError(
            f"model output must have shape {expected} (batch, noisy blocks, *data_shape), "
            f"got {tuple(out.shape)}."
        )
    if weighting in ("eps", "denoiser"):
        if kind == "eps":
            resid = out - eps_n
        else:  # ε-space residual of a score model: U⁻¹(ŝ − s*) = U⁻¹ŝ + ε_n
            U = process.noisy_score_factor(L)
            resid = apply_blocks(torch.linalg.inv(U), out) + eps_n
        per = resid.pow(2)
        if weighting == "denoiser":  # ‖ε̂ − ε_n‖² = ‖g‖²·‖F − F*‖² (preconditioning.py)
            gain = denoiser_gain(model, process, t).to(per) / m
            per = per / gain.reshape(B, *([1] * (per.ndim - 1)))
    else:
        U = process.noisy_score_factor(L)
        s_hat = -apply_blocks(U, out) if kind == "eps" else out
        resid = s_hat + apply_blocks(U, eps_n)  # ŝ − s*, s* = −U ε_n
        if weighting == "score":
            per = resid.pow(2)
        elif weighting == "cld":
            ell2 = U.pow(2).sum((-1, -2)) / m
            per = resid.pow(2) / ell2.to(resid.dtype).reshape(B, *([1] * (resid.ndim - 1)))
        else:  # likelihood: β(t) rᵀ D_nn r
            W = process.D[n][:, n].to(resid) * process.beta(t).to(resid)[:, None, None]
            per = resid * apply_blocks(W, resid)
    per_sample = per.reshape(B, -1).mean(1)
    return per_sample.mean() if reduce else per_sample


def hybrid_score_matching(
    model,
    process: LinearProcess,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    weighting: str = "eps",
    t: torch.Tensor | None = None,
    reduce: bool = True,
    time_sampler: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Hybrid score matching (CLD, PSLD): auxiliaries marginalised exactly through the kernel,
    block-coordinate on the noisy blocks (HOLD's BCSM is this loss for HOLD). `t` fixes the
    times (else t ~ U[t_min, T], or `time_sampler(batch, generator, device)`); `reduce=False`
    returns the per-sample losses."""
    return _loss(model, process, x0, generator, weighting, t, True, reduce, time_sampler)


def denoising_score_matching(
    model,
    process: LinearProcess,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    weighting: str = "eps",
    t: torch.Tensor | None = None,
    reduce: bool = True,
    time_sampler: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Plain DSM: the auxiliaries at t = 0 are sampled and conditioned on, so the target is the
    score of z_t | (x₀, aux₀) — higher variance than HSM, kept for comparison."""
    return _loss(model, process, x0, generator, weighting, t, False, reduce, time_sampler)


block_coordinate_score_matching = hybrid_score_matching

OBJECTIVES: dict[str, Callable[..., torch.Tensor]] = {
    "hsm": hybrid_score_matching,
    "dsm": denoising_score_matching,
}


def get_objective(name: str) -> Callable[..., torch.Tensor]:
    """Objective by name; unknown names list the valid ones."""
    if name not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {name!r}; valid objectives are: {', '.join(sorted(OBJECTIVES))}."
        )
    return OBJECTIVES[name]


def score_from_output(process: LinearProcess, model, z, t, out: torch.Tensor) -> torch.Tensor:
    """Convert a model output on the noisy blocks to the score there (ε-models: ŝ = −U ε̂)."""
    if parameterization_of(model) == "score":
        return out
    _, _, L = process.marginal(t)
    return -apply_blocks(process.noisy_score_factor(L), out)
