"""A compact DDPM-style U-Net for phase-space images (B, k, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from phasediff.models.embedding import (
    TimeEmbedding,
    broadcast_time,
    check_parameterization,
)
from phasediff.validation import check_int, is_int, is_real


def group_count(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """Largest number of GroupNorm groups ≤ ``max_groups`` that divides ``channels`` and keeps at
    least ``min_per_group`` channels per group (1 when none does)."""
    for groups in range(min(max_groups, channels // min_per_group), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 → GroupNorm with time scale/shift → SiLU → dropout → conv3×3,
    plus a (1×1-conv when the width changes) skip connection."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(group_count(c_out), c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, c_in, H, W), ``temb`` the SiLU-activated time embedding (B, time_dim)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time(temb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1.0 + scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation followed by a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Compact DDPM-style U-Net on phase-space images.

    ``model(z, t)`` takes z of shape (B, k, C, H, W) (C = ``channels``) and t of shape (B,) or a
    scalar, and returns (B, n_out, C, H, W). The k blocks are stacked as k·C input channels.
    Level i has width ``base · mults[i]`` and ``num_res_blocks`` residual blocks (GroupNorm, SiLU,
    time scale/shift); levels are joined by stride-2 convolutions on the way down and
    nearest-neighbour + conv on the way up, with one skip connection per level and two residual
    blocks in the middle. H and W must be divisible by ``2**(len(mults) - 1)``. The output
    convolution is zero-initialised, so an untrained model returns exactly 0.
    ``parameterization`` ("eps" or "score") only labels what the output means.
    """

    def __init__(
        self,
        k: int,
        channels: int,
        n_out: int,
        *,
        base: int = 32,
        mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        time_dim: int = 128,
        dropout: float = 0.0,
        t_scale: float = 1.0,
        parameterization: str = "eps",
    ) -> None:
        super().__init__()
        self.k = check_int(k, "k")
        self.channels = check_int(channels, "channels")
        self.n_out = check_int(n_out, "n_out")
        self.base = check_int(base, "base")
        self.num_res_blocks = check_int(num_res_blocks, "num_res_blocks")
        self.time_dim = check_int(time_dim, "time_dim", 2)
        self.parameterization = check_parameterization(parameterization)
        if (
            not isinstance(mults, tuple | list)
            or len(mults) == 0
            or any(not is_int(m) or m < 1 for m in mults)
        ):
            raise ValueError(
                f"mults must be a non-empty tuple of integers ≥ 1 such as (1, 2), got {mults!r}."
            )
        if not is_real(dropout):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}.")
        self.mults = tuple(int(m) for m in mults)
        self.factor = 2 ** (len(self.mults) - 1)

        self.time_embed = TimeEmbedding(time_dim, time_dim, t_scale=t_scale)
        self.t_scale = self.time_embed.sinusoidal.t_scale
        widths = [base * m for m in self.mults]
        self.inp = nn.Conv2d(k * channels, widths[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            blocks = [
                ResBlock(c if j == 0 else w, w, time_dim, dropout) for j in range(num_res_blocks)
            ]
            self.down.append(nn.ModuleList(blocks))
            self.downsample.append(Downsample(w) if i < len(widths) - 1 else nn.Identity())
            c = w
        self.mid = nn.ModuleList(
            [ResBlock(c, c, time_dim, dropout), ResBlock(c, c, time_dim, dropout)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w = widths[i]
            blocks = [
                ResBlock(c + w if j == 0 else w, w, time_dim, dropout)
                for j in range(num_res_blocks)
            ]
            self.up.append(nn.ModuleList(blocks))
            self.upsample.append(Upsample(w) if i > 0 else nn.Identity())
            c = w
        self.out_norm = nn.GroupNorm(group_count(c), c)
        self.out = nn.Conv2d(c, n_out * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Network output of shape (B, n_out, C, H, W) for z (B, k, C, H, W) and t (B,)."""
        if (
            not isinstance(z, torch.Tensor)
            or z.ndim != 5
            or z.shape[1] != self.k
            or z.shape[2] != self.channels
        ):
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"z must have shape (B, k={self.k}, C={self.channels}, H, W), got {got}."
            )
        batch, _, _, height, width = z.shape
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"z must have H and W divisible by 2**(len(mults) - 1) = {self.factor} for "
                f"mults={self.mults}, got H={height}, W={width}."
            )
        temb = F.silu(self.time_embed(broadcast_time(t, batch, z)))

        h = self.inp(z.reshape(batch, self.k * self.channels, height, width))
        skips = []
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, temb)
            skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, temb)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            h = torch.cat((h, skips.pop()), dim=1)
            for block in blocks:
                h = block(h, temb)
            h = up(h)
        out = self.out(F.silu(self.out_norm(h)))
        return out.reshape(batch, self.n_out, self.channels, height, width)

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, channels={self.channels}, n_out={self.n_out}, mults={self.mults}, "
            f"parameterization={self.parameterization!r}"
        )
