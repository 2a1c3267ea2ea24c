"""The reverse-time dynamics of a linear process, as k×k matrices (docs/design.md §2, §4).

Written in forward time and integrated from T down to t_min, the reverse-time family with
λ = η² is

    dz = β[A z − (1 + λ) h D ∇log p_t(z)] dt + η √(2βh) G dW̄,

η = 0 the probability-flow ODE, η = 1 the reverse SDE, and h(t) = 1 − exp(−c B(0, t)) the
noise damping (sub-VP; h ≡ 1 when c = 0). Only D∇log p enters, and D vanishes outside the
noisy blocks n, so a score s on those blocks suffices: the drift is F z − K s with F = βA
(k×k) and K = (1 + λ)βh D[:, n] (k×m). Every method takes a batch of float64 times (or
integrated times) and returns float64 k×k (k×m, m×m) matrices, one per time: samplers build
their per-step matrices once per grid and cast them once. No (kd)×(kd) matrix is formed.

This module knows the process only; binding a model (ε or score output, NFE counting) is
`phasediff.samplers.dynamics.ModelDynamics`.
"""

from __future__ import annotations

import torch

from phasediff.processes.kernels import LinearFlow
from phasediff.processes.linalg import psd_factor
from phasediff.processes.linear import LinearProcess


def noise_damping(process: LinearProcess, b: torch.Tensor) -> torch.Tensor:
    """h = 1 − exp(−c b) on the integrated clock b = B(0, t) (ones without damping, c = 0)."""
    b = torch.as_tensor(b, dtype=torch.float64)
    if process.noise_damping > 0:
        return -torch.expm1(-process.noise_damping * b)
    return torch.ones_like(b)


class ReverseDynamics:
    """The reverse-time family of `process` (module docstring) as per-time k×k matrices."""

    def __init__(self, process: LinearProcess) -> None:
        if not isinstance(process, LinearProcess):
            raise ValueError(f"process must be a LinearProcess, got {type(process).__name__}.")
        self.process = process
        self.noisy = list(process.noisy_blocks)

    def _times(self, t: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64)

    def damping(self, t: torch.Tensor | float) -> torch.Tensor:
        """h(t) = 1 − exp(−c B(0, t))."""
        return noise_damping(self.process, self.process.beta_integral(self._times(t)))

    def drift(self, t: torch.Tensor | float, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, K): the reverse drift at t is F z − K s for the noisy-block score s, with
        F = βA (…, k, k) and K = (1 + η²)βh D[:, n] (…, k, m)."""
        t = self._times(t)
        p = self.process
        beta = p.beta(t)[..., None, None]
        K = (1.0 + float(eta) ** 2) * (beta * self.damping(t)[..., None, None]) * p.D[:, self.noisy]
        return beta * p.A, K

    def diffusion(self, t: torch.Tensor | float, eta: float = 1.0) -> torch.Tensor:
        """η √(2βh) G (…, k, k): the diffusion factor of the reverse-time family."""
        G = self.process.diffusion(self._times(t))
        return G if eta == 1.0 else float(eta) * G

    def score_factor(self, t: torch.Tensor | float) -> torch.Tensor:
        """U(t) = (L_t⁻ᵀ)_nn (…, m, m): an ε-prediction gives the score s = −U ε."""
        _, _, L = self.process.marginal(self._times(t))
        return self.process.noisy_score_factor(L)

    def output_to_score(self, t: torch.Tensor | float, parameterization: str) -> torch.Tensor:
        """S(t) (…, m, m) with s = S out for a model output on the noisy blocks: −U for "eps",
        the identity for "score". The one place an ε-output becomes a score."""
        if parameterization == "eps":
            return -self.score_factor(t)
        if parameterization != "score":
            raise ValueError(
                f"the reverse dynamics take ε or score outputs, got parameterization "
                f"{parameterization!r}."
            )
        t = self._times(t)
        m = len(self.noisy)
        return torch.eye(m, dtype=torch.float64).expand(*t.shape, m, m).clone()

    def denoiser_readout(
        self, t: float, parameterization: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, c) float64 of Tweedie's read-out x̂₀ = aᵀz + cᵀ·out at the scalar time t:
        w = (Σ⁻¹e)_n / ‖(Σ⁻¹e)_n‖², a = w Σ⁻¹_{n,:} (k), c = S(t)ᵀw (m), S = `output_to_score`
        (exact for one noisy block, the least-squares read-out for several)."""
        n, tt = list(self.noisy), torch.tensor([float(t)], dtype=torch.float64)
        E, Sigma = self.process.kernel(tt)
        Sinv = torch.linalg.inv(Sigma[0])
        g = (Sinv @ E[0, :, 0])[n]
        w = g / (g @ g)
        return w @ Sinv[n, :], self.output_to_score(tt, parameterization)[0].T @ w

    def euler_maruyama(
        self, times: torch.Tensor, eta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-step matrices of an Euler–Maruyama step from times[i] to times[i + 1]:
        z ← Mz z + Ms s(z, times[i]) + Gh ξ with Mz = I − ΔF, Ms = ΔK, Gh = √Δ η√(2βh)G
        (Δ = times[i] − times[i + 1] > 0). Shapes (S, k, k), (S, k, m), (S, k, k)."""
        starts = times[:-1]
        dt = (times[:-1] - times[1:])[:, None, None]
        F, K = self.drift(starts, eta)
        eye = torch.eye(self.process.k, dtype=torch.float64)
        return eye - dt * F, dt * K, dt.sqrt() * self.diffusion(starts, eta)

    def clock(self, b: torch.Tensor, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """On the integrated clock b = B(0, t) (db = β dt) the family reads
        dz = [A z − K ∇log p] db + noise of covariance rate N: returns (K, N) (…, k, k) with
        K = (1 + η²) h D and N = 2η² h D (the exponential integrator's M, f and noise)."""
        h = noise_damping(self.process, b)[..., None, None]
        lam = float(eta) ** 2
        D = self.process.D
        return (1.0 + lam) * h * D, 2.0 * lam * h * D

    def splitting(
        self, times: torch.Tensor, midpoint: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-step matrices of the splitting samplers (docs/samplers.md). On the clock b the
        reverse SDE is dz = [A_r z + 2D(s + P⁻¹z)] db + √2 G dW with A_r = −A − 2D P⁻¹ (P the
        prior covariance): an exactly solvable linear flow (`LinearFlow(A_r, D)`) and a score
        kick on the noisy blocks. Returns (E, R, Mz, Ms, kick_times): the flow E, R (RRᵀ = N)
        over the step (Lie–Trotter) or its half (``midpoint``: Strang), and the kick folded
        with the flow after it, z ← Mz z + Ms s(z, kick_times[i]) (+ R ξ)."""
        p = self.process
        if p.noise_damping > 0:
            raise ValueError(
                f"splitting samplers need a constant diffusion; process '{p.name}' has noise "
                f"damping (sub-VP), so use the 'em', 'euler' or 'heun' samplers."
            )
        Pinv = torch.linalg.pinv(p.prior_cov)
        flow = LinearFlow(-p.A - 2.0 * p.D @ Pinv, p.D)
        B = p.beta_integral(times)  # B(0, t_i), decreasing
        b = B[:-1] - B[1:]  # integrated length of each step
        n = self.noisy
        if midpoint:  # Strang: half flow, kick at the midpoint of the integrated clock
            E, N = flow(b / 2)
            kick_times = p.schedule.inverse_integral(B[:-1] - b / 2).clamp(p.t_min, p.T)
        else:  # Lie–Trotter: kick at t_i, then the flow over b
            E, N = flow(b)
            kick_times = times[:-1]
        # kick z ← z + b·K(s + P⁻¹_n z), K = 2D[:, n], folded with the flow that follows it
        bK = b[:, None, None] * (2.0 * p.D[:, n])
        Mz = E @ (torch.eye(p.k, dtype=torch.float64) + bK @ Pinv[n]) if n else E
        return E, psd_factor(N), Mz, E @ bK, kick_times


__all__ = ["ReverseDynamics", "noise_damping"]
