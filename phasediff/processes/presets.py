"""Named processes: each is a few k×k matrices handed to `LinearProcess` (docs/design.md §1).

Conventions: dz = β(t)(A⊗I)z dt + sqrt(2β(t))(G⊗I)dW with GGᵀ = D, and for complete-recipe
processes A = −(D + Q)S⁻¹. Papers that write the SDE with β folded into D and Q (PSLD) are
converted by dividing by β. Defaults and their sources are tabulated in docs/processes.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from phasediff.processes._validate import as_matrix, as_time
from phasediff.processes.critical import critical_chain
from phasediff.processes.linear import LinearProcess
from phasediff.processes.schedules import (
    BetaSchedule,
    ConstantBeta,
    GeometricVarianceBeta,
    LinearBeta,
)


def _t(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def recipe(
    D,
    Q,
    S,
    *,
    beta: float = 1.0,
    aux_init_cov=None,
    t_min: float = 1e-3,
    T: float = 1.0,
    name: str = "recipe",
) -> LinearProcess:
    """Any complete-recipe process (PSLD paper, Thm. 2.1): D ⪰ 0, Q = −Qᵀ, S ≻ 0 constant.

    aux_init_cov defaults to 0.04·S[1:, 1:] (the CLD/PSLD choice γ = 0.04) when k > 1.
    """
    S_ = as_matrix(S, "S")
    if aux_init_cov is None and S_.shape[0] > 1:
        aux_init_cov = 0.04 * S_[1:, 1:]
    return LinearProcess(
        D,
        ConstantBeta(beta),
        Q=Q,
        S=S_,
        aux_init_cov=aux_init_cov,
        t_min=t_min,
        T=T,
        name=name,
    )


def vp(beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-5) -> LinearProcess:
    """VP SDE (Song et al. 2021): dx = −½β x dt + sqrt(β) dW, i.e. A = −½, D = ½, S = 1."""
    return LinearProcess(
        _t([[0.5]]),
        LinearBeta(beta_min, beta_max),
        Q=_t([[0.0]]),
        S=_t([[1.0]]),
        t_min=t_min,
        name="vp",
    )


def subvp(beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-5) -> LinearProcess:
    """sub-VP SDE (Song et al. 2021): VP drift, diffusion sqrt(β(1 − e^{−2∫β})).

    Expressed as VP with noise damping c = 2; the marginal variance is (1 − e^{−B})².
    """
    return LinearProcess(
        _t([[0.5]]),
        LinearBeta(beta_min, beta_max),
        Q=_t([[0.0]]),
        S=_t([[1.0]]),
        noise_damping=2.0,
        t_min=t_min,
        name="subvp",
    )


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, *, t_min: float = 1e-5) -> LinearProcess:
    """VE SDE (Song et al. 2021): dx = sqrt(dσ²/dt) dW with σ(t) = σ_min(σ_max/σ_min)^t.

    A = 0, D = ½ and β = dσ²/dt, so Var(x_t | x₀) = σ(t)² − σ_min². No stationary law; the
    prior is N(0, σ_max² − σ_min²) and kernels use the general (Van Loan) integral.
    """
    return LinearProcess(
        _t([[0.5]]),
        GeometricVarianceBeta(sigma_min, sigma_max),
        A=_t([[0.0]]),
        t_min=t_min,
        name="ve",
    )


def cld(
    M: float = 0.25,
    Gamma: float | None = None,
    gamma: float = 0.04,
    beta: float = 4.0,
    *,
    t_min: float = 1e-5,
) -> LinearProcess:
    """Critically damped Langevin diffusion (Dockhorn et al. 2022).

    dx = β M⁻¹v dt, dv = β(−x − ΓM⁻¹v) dt + sqrt(2Γβ) dW: D = diag(0, Γ),
    Q = [[0, −1], [1, 0]], S = diag(1, M); Γ defaults to 2·sqrt(M) (critical, Γ² = 4M);
    v₀ ~ N(0, γM).
    """
    if Gamma is None:
        Gamma = 2.0 * math.sqrt(M)
    return LinearProcess(
        _t([[0.0, 0.0], [0.0, Gamma]]),
        ConstantBeta(beta),
        Q=_t([[0.0, -1.0], [1.0, 0.0]]),
        S=_t([[1.0, 0.0], [0.0, M]]),
        aux_init_cov=_t([[gamma * M]]),
        t_min=t_min,
        name="cld",
    )


def psld(
    Gamma: float = 0.01,
    nu: float = 4.01,
    M: float = 0.25,
    kappa: float = 0.04,
    beta: float = 8.0,
    *,
    t_min: float = 1e-5,
) -> LinearProcess:
    """Phase-space Langevin diffusion (Pandey & Mandt 2023, complete recipe).

    The paper's D = β/2·diag(Γ, Mν), Q = β/2·[[0, −1], [1, 0]] with β factored out;
    S = diag(1, M) (M⁻¹ = 4 by default); m₀ ~ N(0, κM). Γ = 0 gives a CLD-like process.
    """
    return LinearProcess(
        _t([[0.5 * Gamma, 0.0], [0.0, 0.5 * M * nu]]),
        ConstantBeta(beta),
        Q=_t([[0.0, -0.5], [0.5, 0.0]]),
        S=_t([[1.0, 0.0], [0.0, M]]),
        aux_init_cov=_t([[kappa * M]]),
        t_min=t_min,
        name="psld",
    )


def langevin_chain(
    k: int,
    couplings: float | Sequence[float] = 1.0,
    friction: float = 1.0,
    *,
    masses: Sequence[float] | None = None,
    aux_init: float = 0.04,
    beta: float = 4.0,
    t_min: float = 1e-3,
    T: float = 1.0,
    name: str | None = None,
) -> LinearProcess:
    """k-th order Langevin chain: Hamiltonian couplings z_j ↔ z_{j+1}, OU friction on z_{k−1}.

    In the normalised frame (S = I) the drift has super-diagonal `couplings` c_j, sub-diagonal
    −c_j and −`friction` in the last diagonal entry; `masses` m_1…m_{k−1} give
    S = diag(1, m_1, …) (Q_{j,j+1} = −c_j sqrt(S_j S_{j+1}), D_{kk} = ξ S_{kk}). The
    auxiliaries start at N(0, aux_init·S_aux). k = 2 is CLD, k = 3 is HOLD.
    """
    k = _order(k)
    c = [float(couplings)] * (k - 1) if _is_number(couplings) else [float(x) for x in couplings]
    if len(c) != k - 1:
        raise ValueError(f"couplings must be a number or have k − 1 = {k - 1} entries.")
    if any(not math.isfinite(x) or x <= 0 for x in c):
        raise ValueError(f"couplings must be finite and > 0, got {c}.")
    if not math.isfinite(friction) or friction <= 0:
        raise ValueError(f"friction must be finite and > 0, got {friction}.")
    s = [1.0, *([1.0] * (k - 1) if masses is None else [float(m) for m in masses])]
    if len(s) != k or any(not math.isfinite(m) or m <= 0 for m in s):
        raise ValueError(f"masses must be k − 1 = {k - 1} finite numbers > 0, got {masses}.")
    if not math.isfinite(aux_init) or aux_init < 0:
        raise ValueError(f"aux_init must be a finite number ≥ 0, got {aux_init}.")
    S = torch.diag(_t(s))
    Q = torch.zeros(k, k, dtype=torch.float64)
    for j, cj in enumerate(c):
        q = cj * math.sqrt(s[j] * s[j + 1])
        Q[j, j + 1], Q[j + 1, j] = -q, q
    D = torch.zeros(k, k, dtype=torch.float64)
    D[-1, -1] = friction * s[-1]
    return LinearProcess(
        D,
        ConstantBeta(beta),
        Q=Q,
        S=S,
        aux_init_cov=aux_init * S[1:, 1:] if k > 1 else None,
        t_min=t_min,
        T=T,
        name=name or f"langevin_chain({k})",
    )


def critical(
    k: int,
    rate: float = 2.0,
    *,
    masses: Sequence[float] | None = None,
    aux_init: float = 0.04,
    beta: float = 4.0,
    t_min: float = 1e-3,
    T: float = 1.0,
) -> LinearProcess:
    """Critically damped chain of order k: A has the single eigenvalue −rate (multiplicity k).

    Couplings from the characteristic polynomial (λ + rate)^k (see `critical_chain` and
    docs/processes.md); k = 2 with masses=[M], rate = 1/sqrt(M) is exactly `cld(M)`.
    """
    k = _order(k)
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a finite number > 0, got {rate}.")
    c, xi = critical_chain(k, rate)
    return langevin_chain(
        k,
        c if k > 1 else [],
        xi,
        masses=masses,
        aux_init=aux_init,
        beta=beta,
        t_min=t_min,
        T=T,
        name=f"critical({k})",
    )


# HOLD defaults: the critically damped third-order chain at CLD's time scale (eigenvalue
# −2 per unit β, β = 4). The HOLD paper leaves (L⁻¹, γ, ξ) as hyper-parameters.
_HOLD_C, _HOLD_XI = critical_chain(3, 2.0)


def hold(
    L_inv: float = _HOLD_C[0],
    gamma: float = _HOLD_C[1],
    xi: float = _HOLD_XI,
    *,
    aux_init: float = 0.04,
    beta: float = 4.0,
    t_min: float = 1e-3,
) -> LinearProcess:
    """Third-order Langevin dynamics (HOLD, Shi & Liu 2024): two Hamiltonian couplings and OU.

    dx = β L⁻¹ v dt,  dv = β(−L⁻¹x + γa) dt,  da = β(−γv − ξa) dt + sqrt(2βξ) dW;
    S = I, D = diag(0, 0, ξ); v₀, a₀ ~ N(0, aux_init). Defaults are critically damped
    (A has the triple eigenvalue −2); the paper's own values can be passed explicitly.
    """
    return langevin_chain(
        3,
        [L_inv, gamma],
        xi,
        aux_init=aux_init,
        beta=beta,
        t_min=t_min,
        name="hold",
    )


def hamiltonian(
    K: float = 1.0,
    sigma_v: float = 1.0,
    *,
    T: float | None = None,
    t_min: float = 1e-5,
) -> LinearProcess:
    """Hamiltonian generative flow with linear force −Kx (HGF, Holderrieth et al. 2024).

    x' = v, v' = −Kx, v₀ ~ N(0, σ_v²): D = 0 (no noise after t = 0). For K > 0 this is the
    recipe Q = [[0, −σ_v²], [σ_v², 0]], S = diag(σ_v²/K, σ_v²) and T defaults to a quarter
    period π/(2√K) (Oscillation HGF: x_T = v₀/√K whatever x₀). K = 0 is the zero-force flow
    x_t = x₀ + t v₀ (no stationary law, T = 1).
    """
    if not math.isfinite(K) or K < 0:
        raise ValueError(f"K must be a finite number ≥ 0, got {K}.")
    if not math.isfinite(sigma_v) or sigma_v <= 0:
        raise ValueError(f"sigma_v must be a finite number > 0, got {sigma_v}.")
    var = sigma_v**2
    zero = torch.zeros(2, 2, dtype=torch.float64)
    if K > 0:
        return LinearProcess(
            zero,
            ConstantBeta(1.0),
            Q=_t([[0.0, -var], [var, 0.0]]),
            S=_t([[var / K, 0.0], [0.0, var]]),
            aux_init_cov=_t([[var]]),
            t_min=t_min,
            T=T if T is not None else math.pi / (2 * math.sqrt(K)),
            name="hamiltonian",
        )
    T = T if T is not None else 1.0
    return LinearProcess(
        zero,
        ConstantBeta(1.0),
        A=_t([[0.0, 1.0], [0.0, 0.0]]),
        aux_init_cov=_t([[var]]),
        t_min=t_min,
        T=T,
        # law of z_T = (T v₀, v₀) for x₀ = 0 (singular: x_T and v_T are tied)
        prior_cov=var * _t([[T * T, T], [T, 1.0]]),
        name="hamiltonian(K=0)",
    )


def ohgf(
    alpha: float = 1.0,
    data_std: float = 1.0,
    *,
    t_min: float = 1e-5,
) -> LinearProcess:
    """Oscillation HGF (Holderrieth et al. 2024, §7): force −α²x over a quarter period.

    x' = v, v' = −α²x with v₀ ~ N(0, α²·data_std²), i.e. `hamiltonian(K=α², σ_v=α·data_std)`
    on [t_min, π/(2α)]: x_t = cos(αt) x₀ + sin(αt) v₀/α, so x_T = v₀/α ~ N(0, data_std²)
    whatever x₀. For data of variance data_std² both the network input x_t and the regression
    target v_t keep the variances data_std² and α²·data_std² at every t (docs/hgf.md).
    """
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}.")
    if not math.isfinite(data_std) or data_std <= 0:
        raise ValueError(f"data_std must be a finite number > 0, got {data_std}.")
    process = hamiltonian(K=alpha**2, sigma_v=alpha * data_std, t_min=t_min)
    process.name = "ohgf"
    return process


def zero_force(sigma_v: float = 1.0, T: float = 1.0, *, t_min: float = 1e-5) -> LinearProcess:
    """Zero-force HGF (Holderrieth et al. 2024, §6): x_t = x₀ + t v₀, v₀ ~ N(0, σ_v²).

    `hamiltonian(K=0)` under its own name. Flow matching and VP/VE diffusion are this flow
    after a change of time and scale (docs/hgf.md); its prior N(0, T²σ_v²) ignores x₀, which
    is accurate only when T σ_v ≫ the data scale.
    """
    process = hamiltonian(K=0.0, sigma_v=sigma_v, T=T, t_min=t_min)
    process.name = "zero_force"
    return process


class RectifiedClock(BetaSchedule):
    """β(t) = 1/(1 − t) on [0, 1): B(0, t) = −log(1 − t), B⁻¹(b) = 1 − e^{−b}.

    With A = [[−1, 1], [0, 0]] this clock turns exp(B A) into the straight interpolant
    x_t = (1 − t) x₀ + t v₀ (used by `rectified_flow`).
    """

    def beta(self, t):
        t = as_time(t, "t")
        if bool((t >= 1).any()):
            raise ValueError("the flow-matching clock β(t) = 1/(1 − t) needs t < 1.")
        return 1.0 / (1.0 - t)

    def _integral0(self, t):
        if bool((t >= 1).any()):
            raise ValueError("the flow-matching clock β(t) = 1/(1 − t) needs t < 1.")
        return -torch.log1p(-t)

    def inverse_integral(self, b):
        return -torch.expm1(-as_time(b, "b"))

    def describe(self):
        return {"kind": "rectified"}


def rectified_flow(sigma_v: float = 1.0, T: float = 0.999, *, t_min: float = 1e-5) -> LinearProcess:
    """Flow matching with the straight interpolant (Lipman et al. 2023; Liu et al. 2023) as a
    D = 0 member of the engine: x_t = (1 − t) x₀ + t v₀, v_t = v₀ ~ N(0, σ_v²).

    A = [[−1, 1], [0, 0]] on the clock β(t) = 1/(1 − t), so the x-velocity β(t)(A z_t)₀ =
    v₀ − x₀ is the flow-matching target. T < 1 (B(0, 1) = ∞); at the default T = 0.999 the
    prior N(0, T²σ_v²) ignores the remaining 0.001·x₀.
    """
    if not math.isfinite(sigma_v) or sigma_v <= 0:
        raise ValueError(f"sigma_v must be a finite number > 0, got {sigma_v}.")
    if not math.isfinite(T) or not 0 < T < 1:
        raise ValueError(f"T must lie in (0, 1) for flow matching, got {T}.")
    return LinearProcess(
        torch.zeros(2, 2, dtype=torch.float64),
        RectifiedClock(),
        A=_t([[-1.0, 1.0], [0.0, 0.0]]),
        aux_init_cov=_t([[sigma_v**2]]),
        t_min=t_min,
        T=T,
        prior_cov=sigma_v**2 * _t([[T * T, T], [T, 1.0]]),  # z_T = (T v₀, v₀) for x₀ = 0
        name="rectified_flow",
    )


PRESETS: dict[str, Callable[..., LinearProcess]] = {
    "vp": vp,
    "subvp": subvp,
    "ve": ve,
    "cld": cld,
    "psld": psld,
    "hold": hold,
    "langevin_chain": langevin_chain,
    "critical": critical,
    "hamiltonian": hamiltonian,
    "ohgf": ohgf,
    "zero_force": zero_force,
    "rectified_flow": rectified_flow,
}


def get_process(name: str, **kwargs) -> LinearProcess:
    """Build a preset by name; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown process preset {name!r}; valid presets are: {', '.join(sorted(PRESETS))}."
        )
    try:
        return PRESETS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for preset {name!r}: {exc}.") from exc


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _order(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the order k must be an integer ≥ 1, got {k!r}.")
    return k
