"""Mixing analysis: how fast each forward process forgets its data (docs/design.md §1).

For Gaussian data x₀ ~ N(μ, v) per coordinate (a point mass is v = 0) the marginal of z_t is
exactly N(E[:, 0]μ, E Σ₀(v) Eᵀ + N) per coordinate, so the KL divergence and the
2-Wasserstein distance to the prior are closed-form k×k computations (per data dimension;
for d i.i.d. coordinates multiply KL and W2² by d).

Processes are compared on two clocks:
- their own schedule t ∈ [0, T] (what a user of the default preset gets), and
- an *equal noise budget* τ = B(0, t)·tr(D S⁻¹): the noise injected in units of the
  stationary covariance. Since tr(Q S⁻¹) = 0, tr(D S⁻¹) = −tr A, the sum of all decay rates,
  so τ also measures the total contraction a process is allowed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from phasediff.processes import LinearProcess, critical, get_process
from phasediff.processes.linalg import psd_sqrt, symmetric_part
from phasediff.validation import check_positive


@dataclass
class MixingRow:
    """One line of the mixing table (per data dimension)."""

    name: str
    k: int
    gap_per_beta: float  # spectral gap of A (decay rate per unit integrated time b)
    budget_rate: float  # tr(D S⁻¹): noise budget per unit b
    gap_per_budget: float  # asymptotic decay rate per unit of noise budget
    kl_at_T: float  # KL(p_T ‖ prior) for the Gaussian data, own schedule
    w2_at_T: float  # W2(p_T, prior) for the Gaussian data, own schedule
    budget_to_eps_gauss: float  # τ with KL < eps (Gaussian data)
    budget_to_eps_point: float  # τ with KL < eps (point mass)
    time_to_eps_gauss: float  # the same as a time on the preset's own schedule

    def as_dict(self) -> dict:
        return asdict(self)


def gaussian_kl(m1: torch.Tensor, S1: torch.Tensor, m2: torch.Tensor, S2: torch.Tensor):
    """KL(N(m1, S1) ‖ N(m2, S2)) for batches of k-dim Gaussians (float64, stable near 0)."""
    m1, S1, m2, S2 = (torch.as_tensor(x, dtype=torch.float64) for x in (m1, S1, m2, S2))
    L = torch.linalg.cholesky(S2)
    W = torch.linalg.solve_triangular(L, S1, upper=False)
    M = torch.linalg.solve_triangular(L, W.transpose(-1, -2), upper=False)
    mu = torch.linalg.eigvalsh(symmetric_part(M)) - 1.0
    diff = torch.linalg.solve_triangular(L, (m1 - m2).unsqueeze(-1), upper=False).squeeze(-1)
    return 0.5 * (mu - torch.log1p(mu)).sum(-1) + 0.5 * (diff**2).sum(-1)


def gaussian_w2(m1: torch.Tensor, S1: torch.Tensor, m2: torch.Tensor, S2: torch.Tensor):
    """2-Wasserstein distance between batches of Gaussians (closed form, float64)."""
    m1, S1, m2, S2 = (torch.as_tensor(x, dtype=torch.float64) for x in (m1, S1, m2, S2))
    r2 = psd_sqrt(S2)
    cross = psd_sqrt(r2 @ S1 @ r2)
    trace = torch.diagonal(S1 + S2 - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    w2sq = ((m1 - m2) ** 2).sum(-1) + trace.clamp_min(0)
    return w2sq.sqrt()


def marginal_moments(
    process: LinearProcess, b: torch.Tensor, data_mean: float, data_var: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (…, k) and covariance (…, k, k) of z at integrated time b from 0, per coordinate."""
    b = torch.as_tensor(b, dtype=torch.float64)
    E, N = process._flow(b)
    if process._damped_flow is not None:
        _, N2 = process._damped_flow(b)
        N = N - torch.exp(-process.noise_damping * b)[..., None, None] * N2
    sigma0 = process.initial_cov.clone()
    sigma0[0, 0] = data_var
    mean = E[..., :, 0] * data_mean
    cov = E @ sigma0 @ E.transpose(-1, -2) + N
    return mean, 0.5 * (cov + cov.transpose(-1, -2))


def kl_to_prior(process: LinearProcess, b, data_mean: float, data_var: float) -> torch.Tensor:
    """KL(p_b ‖ prior) per data dimension at integrated times b."""
    mean, cov = marginal_moments(process, b, data_mean, data_var)
    prior = process.prior_cov.expand_as(cov)
    return gaussian_kl(mean, cov, torch.zeros_like(mean), prior)


def budget_rate(process: LinearProcess) -> float:
    """tr(D S⁻¹) = −tr A for recipe processes; NaN where there is no stationary law."""
    if process.S is None:
        return math.nan
    return float(torch.trace(process.D @ torch.linalg.inv(process.S)))


def budget_to_eps(
    process: LinearProcess, eps: float, data_mean: float, data_var: float, max_budget: float = 1e4
) -> float:
    """Smallest noise budget τ with KL(p ‖ prior) < eps (KL decreases monotonically in τ).

    Returns inf when not reached by `max_budget`, NaN for processes without a stationary law
    or without noise (D = 0).
    """
    rate = budget_rate(process)
    if not rate > 0:
        return math.nan
    taus = torch.logspace(-4, math.log10(max_budget), 600, dtype=torch.float64)
    kl = kl_to_prior(process, taus / rate, data_mean, data_var)
    below = torch.nonzero(kl < eps).flatten()
    if below.numel() == 0:
        return math.inf
    i = int(below[0])
    if i == 0:
        return float(taus[0])
    lo, hi = float(taus[i - 1]), float(taus[i])
    for _ in range(60):  # bisection to relative precision ~1e-15
        mid = 0.5 * (lo + hi)
        value = float(
            kl_to_prior(
                process, torch.tensor([mid / rate], dtype=torch.float64), data_mean, data_var
            )[0]
        )
        lo, hi = (mid, hi) if value >= eps else (lo, mid)
    return hi


def default_processes() -> list[LinearProcess]:
    """The presets compared by `phasediff analyze mixing`."""
    names = ["vp", "subvp", "ve", "cld", "psld", "hold"]
    return [get_process(n) for n in names] + [critical(4), critical(5), get_process("hamiltonian")]


def mixing_table(
    processes: list[LinearProcess] | None = None,
    *,
    data_var: float = 0.25,
    point_mass: float = 1.0,
    eps: float = 1e-3,
) -> list[MixingRow]:
    """Rows of the mixing comparison for Gaussian data N(0, data_var) and the point mass."""
    check_positive(data_var, "data_var")
    check_positive(eps, "eps")
    if not math.isfinite(point_mass):
        raise ValueError(f"point_mass must be a finite number, got {point_mass}.")
    rows = []
    for p in processes if processes is not None else default_processes():
        bT = p.beta_integral(torch.tensor(p.T, dtype=torch.float64)).reshape(1)
        mean, cov = marginal_moments(p, bT, 0.0, data_var)
        prior = p.prior_cov.expand_as(cov)
        zero = torch.zeros_like(mean)
        try:
            kl_T = float(gaussian_kl(mean, cov, zero, prior)[0])
        except RuntimeError:  # singular prior (zero-force flow): no density
            kl_T = math.nan
        w2_T = float(gaussian_w2(mean, cov, zero, prior)[0])
        rate = budget_rate(p)
        gap = p.spectral_gap() if p.S is not None else math.nan
        tau_g = budget_to_eps(p, eps, 0.0, data_var)
        tau_p = budget_to_eps(p, eps, point_mass, 0.0)
        if math.isfinite(tau_g):
            t_g = float(
                p.schedule.inverse_integral(torch.tensor(tau_g / rate, dtype=torch.float64))
            )
        else:
            t_g = tau_g
        rows.append(
            MixingRow(
                name=p.name,
                k=p.k,
                gap_per_beta=gap,
                budget_rate=rate,
                gap_per_budget=gap / rate if rate > 0 else math.nan,
                kl_at_T=kl_T,
                w2_at_T=w2_T,
                budget_to_eps_gauss=tau_g,
                budget_to_eps_point=tau_p,
                time_to_eps_gauss=t_g,
            )
        )
    return rows


def format_table(rows: list[MixingRow], eps: float) -> str:
    """A plain-text (and Markdown-compatible) table."""
    head = (
        "| process | k | gap/β | tr(DS⁻¹) | gap/budget | KL(p_T‖prior) | W2(p_T,prior) "
        f"| budget to KL<{eps:g} (Gauss) | (point) | own time to KL<{eps:g} |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        cells = [
            r.name,
            str(r.k),
            _fmt(r.gap_per_beta),
            _fmt(r.budget_rate),
            _fmt(r.gap_per_budget),
            _fmt(r.kl_at_T),
            _fmt(r.w2_at_T),
            _fmt(r.budget_to_eps_gauss),
            _fmt(r.budget_to_eps_point),
            _fmt(r.time_to_eps_gauss),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "never"
    return f"{x:.3g}"


def plot_mixing(
    processes: list[LinearProcess],
    path: str,
    *,
    data_var: float = 0.25,
    point_mass: float = 1.0,
    eps: float = 1e-3,
    max_budget: float = 50.0,
) -> None:
    """KL(p_τ ‖ prior) against the noise budget τ, Gaussian data and point mass side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    taus = torch.linspace(1e-3, max_budget, 400, dtype=torch.float64)
    for ax, (mean, var, title) in zip(
        axes,
        [(0.0, data_var, f"Gaussian data N(0, {data_var:g})"), (point_mass, 0.0, "point mass")],
        strict=True,
    ):
        for i, p in enumerate(processes):
            rate = budget_rate(p)
            if not rate > 0:
                continue
            kl = kl_to_prior(p, taus / rate, mean, var).clamp_min(1e-12)  # plot floor
            ax.semilogy(taus.numpy(), kl.numpy(), label=p.name, ls="-" if i % 2 == 0 else "--")
        ax.axhline(eps, color="k", lw=0.8, ls="--")
        ax.set_xlabel("noise budget τ = B(0,t)·tr(D S⁻¹)")
        ax.set_title(f"{title} (x₀ = {mean:g})" if var == 0 else title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("KL(p_τ ‖ prior) per dimension")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
