"""TimeMLP: the small, fast network for toy (low-dimensional) phase-space data."""

from __future__ import annotations

import math

import torch
from torch import nn

from phasediff.models.embedding import (
    SinusoidalEmbedding,
    broadcast_time,
    check_parameterization,
)
from phasediff.validation import check_int, check_positive

INITS = ("kaiming", "torch")
"""`TimeMLP` weight initialisations (its docstring)."""


class TimeMLP(nn.Module):
    """MLP on the flattened phase-space state and sinusoidal time features.

    ``model(z, t)`` takes z of shape (B, k, *data_shape) with ``prod(data_shape) = data_dim`` and
    t of shape (B,) or a scalar, and returns (B, n_out, *data_shape). The input of the first layer
    is ``[z.flatten(1), SinusoidalEmbedding(time_dim)(t)]``; then ``depth`` hidden layers of width
    ``hidden`` with SiLU, and a linear read-out. ``parameterization`` ("eps" or "score") only
    labels what the output means for objectives and samplers. ``fourier_features`` = F > 0
    appends sin and cos of F random projections z·W, W ~ N(0, fourier_scale²) fixed (seeded by
    ``fourier_seed``): MLPs learn high-frequency functions of their input slowly (spectral
    bias), and the score of thin data is such a function.

    ``residual`` True makes the hidden layers after the first pre-norm residual layers,
    h ← h + SiLU(W · LayerNorm(h)), with a LayerNorm before the read-out (docs/objectives.md,
    "Also tried at the demo's recipe, not adopted").

    ``init`` "kaiming" (default) draws the hidden layers' weights from N(0, 2/fan_in) with zero
    biases (He et al. 2015), so the signal of z keeps its scale through the SiLU stack; the
    read-out keeps PyTorch's default. "torch" is PyTorch's default everywhere
    (U(±1/√fan_in): each layer shrinks the signal ~√3-fold, the 4-layer network starts almost
    constant in z, and training sits on a loss plateau for thousands of steps: 5000 on
    8 Gaussians, against < 750 with "kaiming"; docs/objectives.md, "The loss plateau").
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
        fourier_features: int = 0,
        fourier_scale: float = 8.0,
        fourier_seed: int = 0,
        init: str = "kaiming",
        residual: bool = False,
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
        self.fourier_features = check_int(fourier_features, "fourier_features", 0)
        self.fourier_scale = check_positive(fourier_scale, "fourier_scale")
        if self.fourier_features:
            # Random Fourier features of the state (Tancik et al. 2020): a fixed Gaussian
            # matrix, saved with the weights so a reloaded network is the same function.
            gen = torch.Generator().manual_seed(check_int(fourier_seed, "fourier_seed", 0))
            freqs = torch.randn(k * data_dim, fourier_features, generator=gen) * fourier_scale
            self.register_buffer("fourier_freqs", freqs.to(torch.get_default_dtype()))
        width = k * data_dim + 2 * self.fourier_features + time_dim
        self.residual = bool(residual)
        layers: list[nn.Module] = [nn.Linear(width, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            if self.residual:
                layers.append(PreNormResidual(hidden))
            else:
                layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        if self.residual:
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.Linear(hidden, n_out * data_dim))
        self.net = nn.Sequential(*layers)
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}.")
        self.init = init
        if init == "kaiming":
            readout = layers[-1]
            for layer in self.net.modules():
                if isinstance(layer, nn.Linear) and layer is not readout:
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)

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
        flat = z.reshape(batch, -1)
        parts = [flat]
        if self.fourier_features:
            proj = flat @ self.fourier_freqs.to(flat.dtype)
            parts += [torch.sin(proj), torch.cos(proj)]
        h = torch.cat((*parts, emb.to(z.dtype)), dim=1)
        return self.net(h).view(batch, self.n_out, *z.shape[2:])

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, data_dim={self.data_dim}, n_out={self.n_out}, "
            f"parameterization={self.parameterization!r}, residual={self.residual}"
        )


class PreNormResidual(nn.Module):
    """h + SiLU(W · LayerNorm(h)): a pre-norm residual layer of `TimeMLP(residual=True)`. The
    skip keeps the signal of z and t through the stack whatever the weights, and the norm keeps
    every layer's input at unit scale."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.nn.functional.silu(self.linear(self.norm(h)))
