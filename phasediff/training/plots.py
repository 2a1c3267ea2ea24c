"""Pictures of samples: scatter for 2-D, histogram for 1-D, a grid for images."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def save_samples(
    x: torch.Tensor, path: str | Path, *, reference: torch.Tensor | None = None, title: str = ""
) -> None:
    """Save samples `x` (B, *data_shape) as a PNG; `reference` data is drawn alongside. Vector
    data with d > 2 coordinates is drawn in its first two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().float().cpu()
    if x.ndim == 2 and x.shape[1] > 2:  # d > 2: the first two coordinates
        x = x[:, :2]
        reference = reference[:, :2] if reference is not None else None
        title = f"{title}, coordinates 0–1" if title else "coordinates 0–1"
    if x.ndim == 2 and x.shape[1] in (1, 2):
        # the title describes how the samples were drawn: it goes on their panel only, so
        # the data panel never reads as if the model had generated the data
        panels = [(f"samples: {title}" if title else "samples", x)] + (
            [("data (held out)", reference.float().cpu())] if reference is not None else []
        )
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
        for ax, (label, pts) in zip(axes[0], panels, strict=True):
            if pts.shape[1] == 2:
                ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5)
                ax.set_aspect("equal")
            else:
                ax.hist(pts[:, 0].numpy(), bins=100, density=True)
            ax.set_title(label)
    elif x.ndim == 4:
        n = min(x.shape[0], 64)
        cols = int(math.ceil(math.sqrt(n)))
        rows = int(math.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                img = ((x[i] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        fig.suptitle(title)
    else:
        raise ValueError(
            f"cannot draw samples shaped {tuple(x.shape)}; expected (B, 1|2) or (B, C, H, W)."
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
