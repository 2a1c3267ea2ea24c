"""Input checks shared by the process engine: one clear sentence per failure (docs/design.md §8)."""

from __future__ import annotations

import torch

from phasediff.processes.linalg import symmetric_part

# Relative tolerance for the structural checks (psd / skew / spd) on float64 matrices.
MATRIX_RTOL = 1e-10


def as_time(t: torch.Tensor | float, name: str = "t") -> torch.Tensor:
    """Times as a float64 tensor; rejects NaN/Inf with a message naming the input."""
    if isinstance(t, torch.Tensor):
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be a real tensor, got dtype {t.dtype}.")
        out = t.to(torch.float64)
    else:
        try:
            out = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a number or a tensor of numbers, got {t!r}.") from exc
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got a value containing NaN or Inf.")
    return out


def as_matrix(m, name: str, k: int | None = None) -> torch.Tensor:
    """A finite square float64 matrix (k×k when k is given)."""
    try:
        out = torch.as_tensor(m, dtype=torch.float64).clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a square matrix of numbers, got {m!r}.") from exc
    if out.ndim == 0:
        out = out.reshape(1, 1)
    if out.ndim != 2 or out.shape[0] != out.shape[1]:
        raise ValueError(f"{name} must be a square k×k matrix, got shape {tuple(out.shape)}.")
    if k is not None and out.shape[0] != k:
        raise ValueError(f"{name} must be {k}×{k} to match the other matrices, got {out.shape[0]}.")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got a matrix containing NaN or Inf.")
    return out


def _scale(m: torch.Tensor) -> float:
    return max(1.0, float(m.abs().max()))


def check_symmetric(m: torch.Tensor, name: str) -> None:
    asym = float((m - m.T).abs().max())
    if asym > MATRIX_RTOL * _scale(m):
        raise ValueError(f"{name} must be symmetric, but max |{name} − {name}ᵀ| = {asym:.3g}.")


def check_psd(m: torch.Tensor, name: str) -> None:
    check_symmetric(m, name)
    low = float(torch.linalg.eigvalsh(symmetric_part(m)).min())
    if low < -MATRIX_RTOL * _scale(m):
        raise ValueError(
            f"{name} must be positive semi-definite, but its smallest eigenvalue is {low:.3g}."
        )


def check_spd(m: torch.Tensor, name: str) -> None:
    check_symmetric(m, name)
    low = float(torch.linalg.eigvalsh(symmetric_part(m)).min())
    if low <= MATRIX_RTOL * _scale(m):
        raise ValueError(
            f"{name} must be symmetric positive definite, but its smallest eigenvalue is {low:.3g}."
        )


def check_skew(m: torch.Tensor, name: str) -> None:
    asym = float((m + m.T).abs().max())
    if asym > MATRIX_RTOL * _scale(m):
        raise ValueError(f"{name} must be skew-symmetric, but max |{name} + {name}ᵀ| = {asym:.3g}.")
