"""Named processes: each is a few k×k matrices handed to `LinearProcess` (docs/design.md §1).

Conventions: dz = β(t)(A⊗I)z dt + sqrt(2β(t))(G⊗I)dW with GGᵀ = D, and for complete-recipe
processes A = −(D + Q)S⁻¹. Papers that write the SDE with β folded into D and Q (PSLD) are
converted by dividing by β. Defaults and their sources are tabulated in docs/processes.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch

from phasediff.processes._validate import as_matrix, as_time, check_psd, check_skew, check_spd
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


class ParameterError(ValueError):
    """A bad preset argument: a `ValueError` whose message is one sentence and whose `param`
    names the keyword argument at fault (a config reports it as `process.params.<param>`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _checked(param: str, check: Callable[[], object]):
    """check() with its ValueError re-raised as a ParameterError naming `param`."""
    try:
        return check()
    except ParameterError:
        raise
    except ValueError as exc:
        raise ParameterError(param, str(exc)) from None


def _recipe_matrix(value, name: str, k: int | None = None) -> torch.Tensor:
    """A finite square float64 matrix; k×k like D when k is given (the mismatch names it)."""
    m = _checked(name, lambda: as_matrix(value, name))
    if k is not None and m.shape[0] != k:
        n = m.shape[0]
        raise ParameterError(name, f"{name} must be {k}×{k} like D, got {n}×{n}.")
    return m


def recipe(
    D,
    Q,
    S,
    *,
    beta: float | None = None,
    beta_min: float | None = None,
    beta_max: float | None = None,
    aux_init: float | None = None,
    aux_init_cov=None,
    t_min: float = 1e-3,
    T: float = 1.0,
    name: str = "recipe",
) -> LinearProcess:
    """Any complete-recipe process (PSLD paper, Thm. 2.1): D ⪰ 0, Q = −Qᵀ, S ≻ 0 constant
    k×k matrices, A = −(D + Q)S⁻¹; block 0 is the data, blocks 1…k−1 the auxiliaries.

    The time change is a constant `beta` (default 1) or the linear schedule `beta_min` →
    `beta_max` over [0, T]. The auxiliaries start at N(0, aux_init_cov) given x₀: a
    (k−1)×(k−1) covariance, or `aux_init`·S[1:, 1:] (default aux_init = 0.04, the CLD/PSLD
    choice γ = 0.04). Every bad argument raises a `ParameterError` (a ValueError) whose
    one-sentence message names the matrix and the property that fails (docs/processes.md §1).
    """
    for param, value in (("t_min", t_min), ("T", T)):
        if not _is_number(value) or not math.isfinite(value):
            raise ParameterError(param, f"{param} must be a finite number, got {value!r}.")
    if not 0 <= t_min < T:
        raise ParameterError("t_min", f"need 0 ≤ t_min < T, got t_min={t_min}, T={T}.")
    D_ = _recipe_matrix(D, "D")
    k = D_.shape[0]
    Q_ = _recipe_matrix(Q, "Q", k)
    S_ = _recipe_matrix(S, "S", k)
    _checked("D", lambda: check_psd(D_, "D"))
    _checked("Q", lambda: check_skew(Q_, "Q"))
    _checked("S", lambda: check_spd(S_, "S"))
    if aux_init is not None and aux_init_cov is not None:
        raise ParameterError(
            "aux_init", "give either aux_init (a multiple of S[1:, 1:]) or aux_init_cov, not both."
        )
    if k == 1 and (aux_init is not None or aux_init_cov is not None):
        which = "aux_init" if aux_init is not None else "aux_init_cov"
        raise ParameterError(which, f"{which} was given but a k = 1 process has no auxiliaries.")
    if aux_init_cov is not None:
        aux = _recipe_matrix(aux_init_cov, "aux_init_cov")
        if aux.shape[0] != k - 1:
            n = aux.shape[0]
            raise ParameterError(
                "aux_init_cov",
                f"aux_init_cov must be {k - 1}×{k - 1} (one row per auxiliary block of the "
                f"k = {k} process), got {n}×{n}.",
            )
        _checked("aux_init_cov", lambda: check_psd(aux, "aux_init_cov"))
    elif k > 1:
        c = 0.04 if aux_init is None else aux_init
        if not _is_number(c) or not math.isfinite(c) or c < 0:
            raise ParameterError("aux_init", f"aux_init must be a finite number ≥ 0, got {c!r}.")
        aux = c * S_[1:, 1:]
    else:
        aux = None
    return LinearProcess(
        D_,
        _recipe_schedule(beta, beta_min, beta_max, T),
        Q=Q_,
        S=S_,
        aux_init_cov=aux,
        t_min=t_min,
        T=T,
        name=name,
    )


def _recipe_schedule(beta, beta_min, beta_max, T) -> BetaSchedule:
    """ConstantBeta(beta), or LinearBeta(beta_min, beta_max) over [0, T]."""
    if beta_min is None and beta_max is None:
        beta = 1.0 if beta is None else beta
        if not _is_number(beta):
            raise ParameterError("beta", f"beta must be a finite number > 0, got {beta!r}.")
        return _checked("beta", lambda: ConstantBeta(beta))
    if beta is not None:
        raise ParameterError(
            "beta", "give either beta (a constant time change) or beta_min and beta_max, not both."
        )
    if beta_min is None or beta_max is None:
        missing = "beta_min" if beta_min is None else "beta_max"
        raise ParameterError(
            missing, f"a linear time change needs both beta_min and beta_max; {missing} is missing."
        )
    for param, value in (("beta_min", beta_min), ("beta_max", beta_max), ("T", T)):
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ParameterError(param, f"{param} must be a finite number > 0, got {value!r}.")
    return LinearBeta(beta_min, beta_max, T)


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
    if _is_number(couplings):
        c = [float(couplings)] * (k - 1)
    else:
        c = _numbers(
            couplings,
            "couplings",
            f"a number or k − 1 = {k - 1} numbers (block j ↔ j + 1); a full coupling matrix "
            f"is the skew Q of preset 'recipe' (D, Q, S)",
        )
    if len(c) != k - 1:
        raise ValueError(f"couplings must be a number or have k − 1 = {k - 1} entries.")
    if any(not math.isfinite(x) or x <= 0 for x in c):
        raise ValueError(f"couplings must be finite and > 0, got {c}.")
    if not math.isfinite(friction) or friction <= 0:
        raise ValueError(f"friction must be finite and > 0, got {friction}.")
    if masses is None:
        s = [1.0] * k
    else:
        s = [1.0, *_numbers(masses, "masses", f"k − 1 = {k - 1} numbers (S = diag(1, masses))")]
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

    _fingerprint_fields = ()

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
    "recipe": recipe,
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


def _numbers(values, name: str, valid: str) -> list[float]:
    """A flat sequence of numbers (list, tuple, array, tensor) as floats; anything else (a
    matrix, a string) is refused with one sentence saying what is `valid`."""
    if hasattr(values, "tolist"):  # numpy arrays, tensors
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be {valid}, got {values!r}.")
    items = list(values)
    if not all(_is_number(x) for x in items):
        nested = any(isinstance(x, Iterable) and not isinstance(x, str | bytes) for x in items)
        raise ValueError(f"{name} must be {valid}, got {'a matrix' if nested else repr(values)}.")
    return [float(x) for x in items]


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _order(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the order k must be an integer ≥ 1, got {k!r}.")
    return k
