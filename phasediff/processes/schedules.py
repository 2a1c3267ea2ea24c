"""Time changes β(t) > 0 with closed-form integrals B(s, t) = ∫_s^t β(u) du (docs/design.md §1).

Every process runs on the integrated clock b = B(0, t): the transition kernel from s to t
depends on s and t only through B(s, t). Each schedule therefore gives β, B and the exact
inverse B⁻¹ (t such that B(0, t) = b), all vectorised over tensors of times.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from phasediff.processes._validate import as_time


class BetaSchedule(ABC):
    """A positive time change β(t) on [0, T] with closed-form integral and inverse."""

    @abstractmethod
    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """β(t)."""

    @abstractmethod
    def _integral0(self, t: torch.Tensor) -> torch.Tensor:
        """B(0, t) in float64."""

    @abstractmethod
    def inverse_integral(self, b: torch.Tensor | float) -> torch.Tensor:
        """The time t with B(0, t) = b (exact)."""

    @abstractmethod
    def describe(self) -> dict[str, float | str]:
        """JSON-friendly parameters (used in configs and reports)."""

    _fingerprint_fields: tuple[str, ...] | None = None

    def fingerprint(self) -> tuple | None:
        """Every parameter β(t) depends on, as a hashable tuple, so that equal schedules built
        twice compare equal (per-grid caches use it); None for a schedule class that does not
        declare its fields (a user's subclass included), which is then compared by identity."""
        fields = type(self).__dict__.get("_fingerprint_fields")
        if fields is None:
            return None
        return (type(self).__qualname__, *(float(getattr(self, f)) for f in fields))

    def integral(
        self, s: torch.Tensor | float, t: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """B(s, t) = ∫_s^t β(u) du; with one argument, B(0, s)."""
        if t is None:
            return self._integral0(as_time(s, "t"))
        return self._integral0(as_time(t, "t")) - self._integral0(as_time(s, "s"))


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}.")
    return value


class ConstantBeta(BetaSchedule):
    """β(t) = β (CLD, PSLD, HOLD use a constant time change)."""

    _fingerprint_fields = ("value",)

    def __init__(self, beta: float) -> None:
        self.value = _positive(beta, "beta")

    def beta(self, t):
        t = as_time(t, "t")
        return torch.full_like(t, self.value)

    def _integral0(self, t):
        return self.value * t

    def inverse_integral(self, b):
        return as_time(b, "b") / self.value

    def describe(self):
        return {"kind": "constant", "beta": self.value}


class LinearBeta(BetaSchedule):
    """β(t) = β_min + (β_max − β_min) t / T (the VP / sub-VP schedule of score-SDE)."""

    _fingerprint_fields = ("beta_min", "beta_max", "T")

    def __init__(self, beta_min: float, beta_max: float, T: float = 1.0) -> None:
        self.beta_min = _positive(beta_min, "beta_min")
        self.beta_max = _positive(beta_max, "beta_max")
        self.T = _positive(T, "T")
        self.slope = (self.beta_max - self.beta_min) / self.T

    def beta(self, t):
        return self.beta_min + self.slope * as_time(t, "t")

    def _integral0(self, t):
        return self.beta_min * t + 0.5 * self.slope * t * t

    def inverse_integral(self, b):
        b = as_time(b, "b")
        if self.slope == 0.0:
            return b / self.beta_min
        # Positive root of ½·slope·t² + β_min·t − b = 0, written to avoid cancellation.
        disc = torch.sqrt(self.beta_min**2 + 2.0 * self.slope * b)
        return 2.0 * b / (self.beta_min + disc)

    def describe(self):
        return {"kind": "linear", "beta_min": self.beta_min, "beta_max": self.beta_max}


class GeometricVarianceBeta(BetaSchedule):
    """β(t) = d/dt σ(t)², σ(t) = σ_min (σ_max/σ_min)^(t/T): the VE schedule.

    With D = ½ the added variance over [s, t] is exactly σ(t)² − σ(s)².
    """

    _fingerprint_fields = ("sigma_min", "sigma_max", "T")

    def __init__(self, sigma_min: float, sigma_max: float, T: float = 1.0) -> None:
        self.sigma_min = _positive(sigma_min, "sigma_min")
        self.sigma_max = _positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be larger than sigma_min, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}."
            )
        self.T = _positive(T, "T")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return self.sigma_min * torch.exp(self.log_ratio * as_time(t, "t") / self.T)

    def beta(self, t):
        return 2.0 * self.sigma(t) ** 2 * self.log_ratio / self.T

    def _integral0(self, t):
        return self.sigma(t) ** 2 - self.sigma_min**2

    def inverse_integral(self, b):
        b = as_time(b, "b")
        return self.T * 0.5 * torch.log1p(b / self.sigma_min**2) / self.log_ratio

    def describe(self):
        return {"kind": "geometric", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
