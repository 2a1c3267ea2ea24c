"""Networks for phase-space diffusion: ``model(z, t) → (B, n_out, *data_shape)``.

A state z has shape (B, k, *data_shape); t has shape (B,) (or is a scalar) with times in [0, T],
and each network is built with ``t_scale = T``. Every network carries a ``parameterization``
label ("eps" or "score") that objectives and samplers read. Imports nothing else of phasediff.
"""

from __future__ import annotations

from torch import nn

from phasediff.models.embedding import PARAMETERIZATIONS, SinusoidalEmbedding, TimeEmbedding
from phasediff.models.mlp import TimeMLP
from phasediff.models.unet import UNet


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with requires_grad if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "PARAMETERIZATIONS",
    "SinusoidalEmbedding",
    "TimeEmbedding",
    "TimeMLP",
    "UNet",
    "count_parameters",
]
