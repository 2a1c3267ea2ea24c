"""TimeMLP: the small, fast network for toy (low-dimensional) phase-space data."""

from __future__ import annotations

import math

import torch
from torch import nn

from phasediff.models.embedding import (
    SinusoidalEmbedding,
    broadcast_time,
    check_int,
    check_parameterization,
)


class TimeMLP(nn.Module):
    """MLP on the flattened phase-space state and sinusoidal time features.

    ``model(z, t)`` takes z of shape (B, k, *data_shape) with ``prod(data_shape) = data_dim`` and
    t of shape (B,) or a scalar, and returns (B, n_out, *data_shape). The input of the first layer
    is ``[z.flatten(1), SinusoidalEmbedding(time_dim)(t)]``; then ``depth`` hidden layers of width
    ``hidden`` with SiLU, and a linear read-out. ``parameterization`` ("eps" or "score") only
    labels what the output means for objectives and samplers.
    """

    def __init__(
        self,
        k: int,
        data_dim: int,
        n_out: int,
        *,
        hidden: int = 128,
        depth: int = 4,
        time_dim: int = 64,
        t_scale: float = 1.0,
        parameterization: str = "eps",
    ) -> None:
        super().__init__()
        self.k = check_int(k, "k")
        self.data_dim = check_int(data_dim, "data_dim")
        self.n_out = check_int(n_out, "n_out")
        self.hidden = check_int(hidden, "hidden")
        self.depth = check_int(depth, "depth")
        self.time_dim = check_int(time_dim, "time_dim", 2)
        self.parameterization = check_parameterization(parameterization)
        self.embed = SinusoidalEmbedding(time_dim, t_scale=t_scale)
        self.t_scale = self.embed.t_scale
        layers: list[nn.Module] = [nn.Linear(k * data_dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, n_out * data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Network output of shape (B, n_out, *data_shape) for z (B, k, *data_shape), t (B,)."""
        if (
            not isinstance(z, torch.Tensor)
            or z.ndim < 3
            or z.shape[1] != self.k
            or math.prod(z.shape[2:]) != self.data_dim
        ):
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"z must have shape (B, k={self.k}, *data_shape) with {self.data_dim} "
                f"value(s) per block, got {got}."
            )
        batch = z.shape[0]
        emb = self.embed(broadcast_time(t, batch, z))
        h = torch.cat((z.reshape(batch, -1), emb.to(z.dtype)), dim=1)
        return self.net(h).view(batch, self.n_out, *z.shape[2:])

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, data_dim={self.data_dim}, n_out={self.n_out}, "
            f"parameterization={self.parameterization!r}"
        )
