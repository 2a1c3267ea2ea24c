"""The linear phase-space process  dz = β(t)(A⊗I)z dt + sqrt(2β(t))(G⊗I)dW,  GGᵀ = D.

State tensors are shaped (batch, k, *data_shape): block j is the j-th phase-space variable
(x, v, a, …). Because A⊗I acts identically on every coordinate, every computation here is a
k×k problem applied along axis 1; no (kd)×(kd) matrix is ever formed (docs/design.md §1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from phasediff.processes._validate import (
    MATRIX_RTOL,
    as_matrix,
    as_time,
    check_psd,
    check_skew,
    check_spd,
)
from phasediff.processes.kernels import LinearFlow
from phasediff.processes.linalg import psd_factor
from phasediff.processes.schedules import BetaSchedule

# Below this many data coordinates per block, one shared j×k matrix is applied with einsum
# (one (B·d, k) × (k, j) product); torch.matmul would broadcast it into B tiny products, 2–7×
# slower on vector data. Images (d in the thousands) keep matmul, which is faster there.
_EINSUM_MAX_DATA = 512


def apply_blocks(M: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(M ⊗ I) z along the block axis: M is j×k or (batch, j, k), z is (batch, k, *data);
    the result is (batch, j, *data)."""
    B, k = z.shape[0], z.shape[1]
    flat = z.reshape(B, k, -1)
    M = M.to(dtype=z.dtype, device=z.device)
    if M.ndim == 2 and flat.shape[2] < _EINSUM_MAX_DATA:
        out = torch.einsum("jk,bkd->bjd", M, flat)
    else:
        out = torch.matmul(M, flat)
    return out.reshape(B, M.shape[-2], *z.shape[2:])


class LinearProcess:
    """A linear augmented-state diffusion with exact Gaussian transition kernels.

    Built either from the *complete recipe* (D ⪰ 0, Q = −Qᵀ, S ≻ 0, A = −(D+Q)S⁻¹; N(0, S⊗I)
    is then stationary) or, for processes without a stationary law (VE, zero-force
    Hamiltonian flow), from (A, D) directly; use the presets in `phasediff.processes` or
    `recipe(...)` rather than this constructor.

    Args:
        D: k×k diffusion matrix (psd); the Brownian motion enters through G with GGᵀ = D.
        schedule: the time change β(t).
        Q, S: skew and spd k×k matrices of the complete recipe (both or neither).
        A: drift matrix, only when S is not given.
        aux_init_cov: (k−1)×(k−1) covariance of the auxiliaries at t = 0 (e.g. CLD's γM);
            zero means they start at 0.
        t_min, T: the time interval used for training and sampling.
        noise_damping: c ≥ 0 multiplies the diffusion by (1 − exp(−c·B(0, t))) — sub-VP uses
            c = 2; the kernel stays closed-form (see docs/processes.md).
        prior_cov: k×k covariance of the prior N(0, P⊗I); defaults to S, or for processes
            without S to the marginal covariance at T of the point mass x₀ = 0.
        name: label used in reports.
        block_names: names of the k blocks (x, v, a, …).
    """

    def __init__(
        self,
        D,
        schedule: BetaSchedule,
        *,
        Q=None,
        S=None,
        A=None,
        aux_init_cov=None,
        t_min: float = 1e-5,
        T: float = 1.0,
        noise_damping: float = 0.0,
        prior_cov=None,
        name: str = "custom",
        block_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(schedule, BetaSchedule):
            raise ValueError(
                f"schedule must be a BetaSchedule (ConstantBeta, LinearBeta, "
                f"GeometricVarianceBeta), got {type(schedule).__name__}."
            )
        D = as_matrix(D, "D")
        k = D.shape[0]
        check_psd(D, "D")
        if S is not None:
            if Q is None:
                Q = torch.zeros(k, k, dtype=torch.float64)
            Q = as_matrix(Q, "Q", k)
            S = as_matrix(S, "S", k)
            check_skew(Q, "Q")
            check_spd(S, "S")
            if A is not None:
                raise ValueError("give either A or the recipe (Q, S), not both.")
            A = -(D + Q) @ torch.linalg.inv(S)
        else:
            if A is None:
                raise ValueError("a process needs either the recipe (Q, S) or a drift matrix A.")
            if Q is not None:
                raise ValueError("Q is only meaningful together with S (the complete recipe).")
            A = as_matrix(A, "A", k)
        self.k = k
        self.A = A
        self.D = 0.5 * (D + D.T)
        self.Q = Q
        self.S = S
        self.schedule = schedule
        self.name = name
        self.block_names = tuple(block_names) if block_names else _default_block_names(k)
        if len(self.block_names) != k:
            raise ValueError(f"block_names must have {k} entries, got {len(self.block_names)}.")

        for value, label in ((t_min, "t_min"), (T, "T")):
            if not math.isfinite(float(value)):
                raise ValueError(f"{label} must be finite, got {value}.")
        if not 0.0 <= float(t_min) < float(T):
            raise ValueError(f"need 0 ≤ t_min < T, got t_min={t_min}, T={T}.")
        self.t_min, self.T = float(t_min), float(T)
        noise_damping = float(noise_damping)
        if not math.isfinite(noise_damping) or noise_damping < 0:
            raise ValueError(f"noise_damping must be a finite number ≥ 0, got {noise_damping}.")
        self.noise_damping = noise_damping

        sigma0 = torch.zeros(k, k, dtype=torch.float64)
        if aux_init_cov is not None and k > 1:
            aux = as_matrix(aux_init_cov, "aux_init_cov", k - 1)
            check_psd(aux, "aux_init_cov")
            sigma0[1:, 1:] = aux
        elif aux_init_cov is not None and k == 1:
            raise ValueError("aux_init_cov was given but a k = 1 process has no auxiliaries.")
        self.initial_cov = sigma0  # covariance of z_0 given x_0
        self._marginal_memo: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

        diag = torch.diagonal(self.D)
        tol = MATRIX_RTOL * max(1.0, float(self.D.abs().max()))
        horizon = float(schedule.integral(torch.tensor(self.T, dtype=torch.float64)))
        self._flow = LinearFlow(self.A, self.D, horizon)
        self._damped_flow = (
            LinearFlow(
                self.A + 0.5 * noise_damping * torch.eye(k, dtype=torch.float64), self.D, horizon
            )
            if noise_damping > 0
            else None
        )
        self.noisy_blocks = tuple(int(i) for i in torch.nonzero(diag > tol).flatten())
        quiet = [i for i in range(k) if i not in self.noisy_blocks]
        order = quiet + list(self.noisy_blocks)
        self.factor_order = tuple(order)
        self._perm = None if order == list(range(k)) else order
        self._inv_perm = None if self._perm is None else [order.index(i) for i in range(k)]
        self.G = psd_factor(self.D)  # G Gᵀ = D (D may be singular)

        if prior_cov is None:
            if S is not None:
                prior_cov = S
            else:
                # the law of z_T given x₀ = 0: transported initial auxiliaries plus noise
                E, N = self._noise(
                    torch.zeros(1, dtype=torch.float64),
                    torch.full((1,), self.T, dtype=torch.float64),
                )
                prior_cov = E[0] @ self.initial_cov @ E[0].T + N[0]
        self.prior_cov = as_matrix(prior_cov, "prior_cov", k)
        check_psd(self.prior_cov, "prior_cov")
        self._prior_factor, evals = psd_factor(self.prior_cov, return_eigenvalues=True)
        self._prior_singular = bool(evals.min() <= MATRIX_RTOL * max(1.0, float(evals.max())))

    # ------------------------------------------------------------------ schedule
    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """β(t)."""
        return self.schedule.beta(t)

    def beta_integral(
        self, s: torch.Tensor | float, t: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """B(s, t) = ∫_s^t β; with one argument B(0, s)."""
        return self.schedule.integral(s, t)

    @property
    def has_stationary_law(self) -> bool:
        """True for complete-recipe processes (N(0, S⊗I) is stationary)."""
        return self.S is not None

    # ------------------------------------------------------------------ kernels
    def check_time(self, t: torch.Tensor | float, name: str = "t") -> torch.Tensor:
        """Float64 times, checked to lie in [t_min, T]."""
        t = as_time(t, name)
        if t.numel() == 0:
            return t
        lo, hi = float(t.min()), float(t.max())
        # float32 inputs are tolerated up to their rounding (relative 1e-6), then clamped.
        if lo < self.t_min * (1 - 1e-6) or hi > self.T * (1 + 1e-6):
            raise ValueError(
                f"{name} must lie in [t_min, T] = [{self.t_min:g}, {self.T:g}], "
                f"got values in [{lo:g}, {hi:g}]."
            )
        return t.clamp(self.t_min, self.T)

    def batch_times(self, t: torch.Tensor | float, batch: int) -> torch.Tensor:
        """`check_time` for a batch: a scalar is broadcast to (batch,), else t must be (batch,)."""
        t = self.check_time(t)
        t = t.expand(batch) if t.ndim == 0 else t
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}.")
        return t

    def _noise(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, N) from s to t, including the optional noise damping (float64)."""
        b = self.schedule.integral(s, t)
        E, N = self._flow(b)
        if self._damped_flow is not None:
            # ∫ e^{A(B_t−u)} 2D e^{Aᵀ(B_t−u)} e^{−c u} du = e^{−c B_t} · N_{A + c/2}(b)
            _, N2 = self._damped_flow(b)
            weight = torch.exp(-self.noise_damping * self.schedule.integral(t))
            N = N - weight[..., None, None] * N2
        return E, N

    def kernel(
        self, t: torch.Tensor | float, s: torch.Tensor | float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, Σ): k×k float64 mean map and covariance, batched over the shape of t.

        s=None: law of z_t given x₀ with auxiliaries at their initial law, i.e.
        z_t ~ N(E[:, :, 0] x₀, Σ ⊗ I). Otherwise: z_t | z_s ~ N(E z_s, Σ ⊗ I) for s ≤ t.
        """
        t = self.check_time(t)
        if s is None:
            return self._marginal_kernel(t)
        s = as_time(s, "s")
        if float(s.min()) < 0 or bool((s > t).any()):
            raise ValueError("s must satisfy 0 ≤ s ≤ t (forward transitions only).")
        s, t = torch.broadcast_tensors(s, t)
        return self._noise(s, t)

    def _marginal_kernel(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`kernel(t)` for already checked times."""
        E, N = self._noise(torch.zeros_like(t), t)
        sigma = E @ self.initial_cov @ E.transpose(-1, -2) + N
        return E, 0.5 * (sigma + sigma.transpose(-1, -2))

    def marginal(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean coefficient e = E[:, :, 0], Σ, L) with z_t = e x₀ + (L ⊗ I) ε, LLᵀ = Σ.

        L is the Cholesky factor (lower triangular, used by ε-prediction); near t_min where
        Σ is nearly singular a relative jitter of 1e-14·tr Σ is added only when plain Cholesky
        fails, and the failure is reported if even that does not help.

        Batched calls remember their last answer: a training step asks for the marginal of
        the same B times twice (to noise the batch, and for the preconditioning coefficients),
        and the second call then costs one comparison instead of ~1 ms of k×k float64 work
        (docs/benchmarks.md). The returned tensors are shared with that memo: read them, do not
        modify them in place.
        """
        t = self.check_time(t)
        memo = self._marginal_memo
        if (
            memo is not None
            and memo[0].shape == t.shape
            and memo[0].device == t.device
            and torch.equal(memo[0], t)
        ):
            return memo[1]
        E, sigma = self._marginal_kernel(t)  # t is checked once, above
        out = (E[..., :, 0], sigma, self.factor(sigma))
        if t.numel() > 1:  # one-time calls (samplers) are cheap and never repeat
            self._marginal_memo = (t.clone(), out)
        return out

    def factor(self, sigma: torch.Tensor) -> torch.Tensor:
        """L with LLᵀ = Σ, lower triangular in the block order `factor_order`.

        `factor_order` lists the noise-free blocks first and the noisy blocks last, so that
        the score on the noisy blocks, −(L⁻ᵀε)[noisy], depends on ε[noisy] only (docs/design.md §2,
        ε-prediction). For every preset the noisy blocks already come last and L is the
        ordinary Cholesky factor.
        """
        if self._perm is None:
            return cholesky_factor(sigma)
        p = self._perm
        Lp = cholesky_factor(sigma[..., p, :][..., :, p])
        inv = self._inv_perm
        return Lp[..., inv, :][..., :, inv]

    def noisy_score_factor(self, L: torch.Tensor) -> torch.Tensor:
        """U = (L⁻ᵀ)[noisy, noisy] (batch, m, m): the score on the noisy blocks is −U ε[noisy]."""
        n = list(self.noisy_blocks)
        eye = torch.eye(self.k, dtype=L.dtype, device=L.device).expand_as(L)
        Linv = torch.linalg.solve_triangular(
            L if self._perm is None else L[..., self._perm, :][..., :, self._perm],
            eye,
            upper=False,
        )
        if self._perm is not None:
            Linv = Linv[..., self._inv_perm, :][..., :, self._inv_perm]
        return Linv.transpose(-1, -2)[..., n, :][..., :, n]

    def sample_marginal(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | float,
        generator: torch.Generator | None = None,
        return_factor: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Draw z_t | x₀ exactly: returns (z_t, ε) with z_t = m_t + (L_t ⊗ I) ε, ε ~ N(0, I).

        x0: (batch, *data_shape); t: scalar or (batch,). z_t is (batch, k, *data_shape).
        With return_factor=True also returns L_t (batch, k, k) float64 (see `factor`).
        """
        x0 = check_data(x0)
        B = x0.shape[0]
        t = self.batch_times(t, B)
        mean_coef, _, L = self.marginal(t.to(x0.device))
        eps = torch.randn(
            (B, self.k, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype
        )
        z = apply_blocks(L, eps)
        z.view(B, self.k, -1).add_(mean_coef.to(x0.dtype)[:, :, None] * x0.reshape(B, 1, -1))
        return (z, eps, L) if return_factor else (z, eps)

    # ------------------------------------------------------------------ prior
    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """z_T ~ N(0, P ⊗ I) shaped (batch, k, *data_shape) for shape = (batch, *data_shape)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (batch, *data_shape) of positive ints, got {shape}.")
        eps = torch.randn(
            (shape[0], self.k, *shape[1:]), generator=generator, device=device, dtype=dtype
        )
        return apply_blocks(self._prior_factor, eps)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, P ⊗ I) per batch element."""
        z = check_state(z, self.k)
        if self._prior_singular:
            raise ValueError(
                f"the prior of process '{self.name}' has a singular covariance, so it has no "
                f"density; prior_logp is only defined for a non-singular prior."
            )
        P = self.prior_cov
        Pinv = torch.linalg.inv(P)
        flat = z.reshape(z.shape[0], self.k, -1).to(torch.float64)
        d = flat.shape[-1]
        quad = torch.einsum("bid,ij,bjd->b", flat, Pinv.to(flat.device), flat)
        logdet = torch.linalg.slogdet(P)[1]
        out = -0.5 * quad - 0.5 * d * (self.k * math.log(2 * math.pi) + float(logdet))
        return out.to(z.dtype)

    # ------------------------------------------------------------------ SDE view
    def drift(self, z: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Forward drift β(t)(A ⊗ I)z."""
        beta = self.beta(t).to(z.device, z.dtype)
        return beta.reshape(-1, *([1] * (z.ndim - 1))) * apply_blocks(self.A, z)

    def diffusion(self, t: torch.Tensor | float) -> torch.Tensor:
        """The k×k (batched over t) diffusion factor sqrt(2β(t)) G (times noise damping)."""
        t = as_time(t)
        scale = 2.0 * self.beta(t)
        if self.noise_damping > 0:
            scale = scale * (-torch.expm1(-self.noise_damping * self.schedule.integral(t)))
        return scale.sqrt()[..., None, None] * self.G

    def stationary_check(self, atol: float = 1e-9) -> float:
        """Residual max |AS + SAᵀ + 2D|; raises ValueError if above atol (recipe only)."""
        if self.S is None:
            raise ValueError(
                f"process '{self.name}' has no stationary law (no S), so there is nothing to check."
            )
        residual = float((self.A @ self.S + self.S @ self.A.T + 2 * self.D).abs().max())
        if residual > atol:
            raise ValueError(
                f"AS + SAᵀ + 2D should vanish but its largest entry is {residual:.3g} "
                f"(tolerance {atol:g})."
            )
        return residual

    def spectral_gap(self) -> float:
        """min over eigenvalues of −Re λ(A): the asymptotic decay rate per unit β."""
        return float(-torch.linalg.eigvals(self.A).real.max()) + 0.0  # no "-0"

    def describe(self) -> dict:
        """JSON-friendly summary (matrices as nested lists)."""
        out = {
            "name": self.name,
            "k": self.k,
            "A": self.A.tolist(),
            "D": self.D.tolist(),
            "schedule": self.schedule.describe(),
            "t_min": self.t_min,
            "T": self.T,
            "noise_damping": self.noise_damping,
            "initial_cov": self.initial_cov.tolist(),
        }
        if self.S is not None:
            out.update(Q=self.Q.tolist(), S=self.S.tolist())
        return out

    def fingerprint(self) -> tuple | None:
        """Everything the kernels, the prior and the reverse dynamics depend on (A, D, the
        schedule's parameters, the initial and prior covariances, t_min, T, the noise damping),
        as a hashable tuple: two processes with equal fingerprints are the same mathematics,
        so per-grid caches may share results between them. None for a subclass (it may
        override any method) or a schedule without a fingerprint: compare by identity then."""
        schedule = self.schedule.fingerprint()
        if type(self) is not LinearProcess or schedule is None:
            return None
        matrices = (self.A, self.D, self.initial_cov, self.prior_cov)
        return (
            self.k,
            schedule,
            *(m.detach().to(torch.float64).contiguous().numpy().tobytes() for m in matrices),
            self.t_min,
            self.T,
            self.noise_damping,
        )

    def __repr__(self) -> str:
        return f"LinearProcess(name={self.name!r}, k={self.k}, noisy_blocks={self.noisy_blocks})"


def cholesky_factor(sigma: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a batch of k×k covariances, with a tiny fallback jitter."""
    L, info = torch.linalg.cholesky_ex(sigma)
    if bool((info > 0).any()):
        k = sigma.shape[-1]
        eye = torch.eye(k, dtype=sigma.dtype, device=sigma.device)
        scale = torch.diagonal(sigma, dim1=-2, dim2=-1).sum(-1)[..., None, None]
        L, info = torch.linalg.cholesky_ex(sigma + 1e-14 * scale * eye)
        if bool((info > 0).any()):
            raise ValueError(
                "the marginal covariance is numerically singular at some t; increase t_min."
            )
    return L


def check_data(x0: torch.Tensor) -> torch.Tensor:
    """Data batches: a floating tensor (batch, *data_shape) with finite values."""
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0 must be a torch.Tensor shaped (batch, *data_shape), got {type(x0)}.")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}.")
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(
            f"x0 must be shaped (batch, *data_shape) with at least one data axis, "
            f"got shape {tuple(x0.shape)}."
        )
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or Inf; data must be finite.")
    return x0


def check_state(z: torch.Tensor, k: int) -> torch.Tensor:
    """Phase-space states: a floating tensor (batch, k, *data_shape) with finite values."""
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ValueError("z must be a floating-point torch.Tensor shaped (batch, k, *data_shape).")
    if z.ndim < 3 or z.shape[1] != k:
        raise ValueError(f"z must be shaped (batch, {k}, *data_shape), got shape {tuple(z.shape)}.")
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or Inf; states must be finite.")
    return z


def _default_block_names(k: int) -> tuple[str, ...]:
    names = ["x", "v", "a", "j"]
    return tuple(names[i] if i < len(names) else f"z{i}" for i in range(k))
