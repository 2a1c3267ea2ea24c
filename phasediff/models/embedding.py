"""Time embeddings, plus the input checks shared by the networks of phasediff.models.

Times live in [0, T]; every embedding is built with ``t_scale = T`` so that it sees the
normalised time t / T ∈ [0, 1], whatever the horizon of the process (1, π/2, …).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from phasediff.validation import check_int, check_positive, is_real

PARAMETERIZATIONS = ("eps", "score")


# --------------------------------------------------------------------------- checks
def check_parameterization(value: object) -> str:
    """One of :data:`PARAMETERIZATIONS`, else one ValueError sentence listing them."""
    if value not in PARAMETERIZATIONS:
        valid = ", ".join(repr(p) for p in PARAMETERIZATIONS)
        raise ValueError(f"parameterization must be one of {valid}, got {value!r}.")
    return str(value)


def broadcast_time(t: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Times as a (batch,) tensor on ``like``'s device; a scalar is broadcast to the batch."""
    if not isinstance(t, torch.Tensor):
        if not is_real(t):
            raise ValueError(f"t must be a number or a tensor of shape ({batch},), got {t!r}.")
        return torch.full((batch,), float(t), device=like.device)
    if t.ndim == 0:
        return t.to(device=like.device).expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"t must be a scalar or a tensor of shape (B,) = ({batch},), got {tuple(t.shape)}."
        )
    return t if t.device == like.device else t.to(like.device)


# ----------------------------------------------------------------------- embeddings
class SinusoidalEmbedding(nn.Module):
    """Transformer/DDPM sinusoidal features of the time: (B,) → (B, dim).

    With ``s = scale · t / t_scale`` (``scale = 1000`` as in DDPM, so that t / T ∈ [0, 1] covers
    the range of the usual integer step index) and ``f_i = max_period^(−i / half)`` for
    ``i < half = dim // 2``, the output is ``[sin(s f_0), …, sin(s f_{half−1}), cos(s f_0), …,
    cos(s f_{half−1})]`` followed by one zero column when ``dim`` is odd. Frequencies and phases
    are precomputed buffers and the whole map is one fused multiply-add and one ``sin``
    (cos x = sin(x + π/2)); they are not saved in the state dict.
    """

    def __init__(
        self,
        dim: int,
        max_period: float = 10_000.0,
        *,
        t_scale: float = 1.0,
        scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", 2)
        self.max_period = check_positive(max_period, "max_period")
        self.t_scale = check_positive(t_scale, "t_scale")
        self.scale = check_positive(scale, "scale")
        half = dim // 2
        exponent = torch.arange(half, dtype=torch.float64) / half
        freqs = torch.exp(-math.log(self.max_period) * exponent) * (self.scale / self.t_scale)
        phase = torch.zeros(dim, dtype=torch.float64)
        phase[half : 2 * half] = math.pi / 2
        full = torch.zeros(dim, dtype=torch.float64)  # an odd dim keeps a zero last column
        full[:half] = freqs
        full[half : 2 * half] = freqs
        self.register_buffer("freqs", full.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("phase", phase.to(torch.get_default_dtype()), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed times ``t`` of shape (B,) into (B, dim)."""
        t = t.to(self.freqs.dtype)
        return torch.sin(torch.addcmul(self.phase, t.unsqueeze(-1), self.freqs))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, t_scale={self.t_scale:g}"


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a small MLP: (B,) → (B, out_dim).

    ``SinusoidalEmbedding(dim) → Linear(dim, hidden) → SiLU → Linear(hidden, out_dim)`` with
    ``out_dim = hidden`` unless given.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        out_dim: int | None = None,
        max_period: float = 10_000.0,
        t_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_int(hidden, "hidden")
        self.out_dim = hidden if out_dim is None else check_int(out_dim, "out_dim")
        self.sinusoidal = SinusoidalEmbedding(dim, max_period, t_scale=t_scale)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, self.out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed times ``t`` of shape (B,) into (B, out_dim)."""
        return self.mlp(self.sinusoidal(t))
