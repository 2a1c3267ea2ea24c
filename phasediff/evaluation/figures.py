"""Figures in the style of the HOLD paper (Figs. 1–4), drawn with matplotlib (Agg).

* ``plot_paths``: forward noising paths of 1-D data, x against t, one panel per process
  (HOLD Fig. 1), over the exact density of x_t (white paths on a heat map).
* ``plot_phases``: the x, v, a, … paths of one process, forward (noising) and backward
  (generation with the exact score of the data mixture) (HOLD Fig. 2).
* ``plot_snapshots``: multi-Swiss-roll samples at several steps of a sampler (HOLD Fig. 3);
  from a given model or, without one, from the exact score of the smoothed training set.
* ``plot_samples``: samples of several models side by side, plus the data (HOLD Fig. 4).
* ``compare_samples``: samples next to held-out data (used by ``phasediff eval``).

Everything here takes loaded models or sample tensors; the commands that start from a trained
run directory (``phasediff plot snapshots RUN``, ``phasediff plot samples RUN …``) load it in
``phasediff.bench.runs`` (evaluation does not import training, docs/design.md §9).

Marginal densities come from the exact kernel: for data Σ_i w_i N(μ_i, s_i²), block j of z_t
is Σ_i w_i N(e_j(t) μ_i, e_j(t)² s_i² + Σ_jj(t)). Forward paths chain the exact transition
kernels z_{t'} = E z_t + N^{1/2} ε on the time grid, so they are exact samples of the SDE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from phasediff.processes import LinearProcess, apply_blocks, get_process
from phasediff.processes.linalg import psd_sqrt
from phasediff.validation import check_int

__all__ = [
    "compare_samples",
    "forward_paths",
    "gmm1d_mixture",
    "plot_paths",
    "plot_phases",
    "plot_samples",
    "plot_snapshots",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_process(process: str | LinearProcess) -> LinearProcess:
    return process if isinstance(process, LinearProcess) else get_process(process)


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"figure path must end in .png, .pdf or .svg, got {str(path)!r}.")
    if path.is_dir():
        raise ValueError(f"figure path {str(path)!r} is a directory; pass a file path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


# ---------------------------------------------------------------------------- 1-D data


def gmm1d_mixture() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, means, stds) of the ``gmm1d`` toy, float64."""
    from phasediff.data.toys import GMM1D_MEANS, GMM1D_STDS, GMM1D_WEIGHTS

    f = torch.float64
    return (
        torch.tensor(GMM1D_WEIGHTS, dtype=f),
        torch.tensor(GMM1D_MEANS, dtype=f),
        torch.tensor(GMM1D_STDS, dtype=f),
    )


def forward_paths(
    process: LinearProcess, x0: torch.Tensor, times: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Exact forward paths: states (len(times), B, k, *data) at ``times`` (increasing, from 0).

    z_0 = (x0, a₀) with a₀ from the initial auxiliary law; then z_{t'} = E z_t + N^{1/2} ε with
    (E, N) = ``process.kernel(t', t)``: exact samples of the SDE on the grid.
    """
    times = torch.as_tensor(times, dtype=torch.float64)
    B = x0.shape[0]
    eps = torch.randn((B, process.k, *x0.shape[1:]), generator=generator, dtype=torch.float64)
    z = apply_blocks(psd_sqrt(process.initial_cov), eps)
    z[:, 0] += x0.to(torch.float64)
    states = [z]
    for s, t in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        E, N = process.kernel(torch.tensor(t, dtype=torch.float64), torch.tensor(s))
        eps = torch.randn(z.shape, generator=generator, dtype=torch.float64)
        z = apply_blocks(E, z) + apply_blocks(psd_sqrt(N), eps)
        states.append(z)
    return torch.stack(states)


def _block_density(
    process: LinearProcess, times: torch.Tensor, grid: np.ndarray, block: int
) -> np.ndarray:
    """Exact density of block ``block`` of z_t for gmm1d data on ``grid``: (len(grid), len(t))."""
    w, mu, sd = gmm1d_mixture()
    E, S = process.kernel(times.clamp(min=process.t_min))
    e = E[:, block, 0]  # (T,)
    var = e[:, None] ** 2 * sd[None] ** 2 + S[:, block, block][:, None]  # (T, K)
    mean = e[:, None] * mu[None]
    y = torch.as_tensor(grid, dtype=torch.float64)[:, None, None]
    dens = (w * torch.exp(-0.5 * (y - mean) ** 2 / var) / torch.sqrt(2 * math.pi * var)).sum(-1)
    return dens.numpy()


def _density_panel(ax, process, times, block, paths, ylim, path_times=None, cmap="magma") -> None:
    grid = np.linspace(ylim[0], ylim[1], 240)
    dens = _block_density(process, times, grid, block)
    extent = (float(times[0]), float(times[-1]), ylim[0], ylim[1])
    # Square-root colour scale: the narrow early density and the wide late one both show.
    ax.imshow(np.sqrt(dens), origin="lower", aspect="auto", extent=extent, cmap=cmap)
    x_axis = times.numpy() if path_times is None else path_times
    ax.plot(x_axis, paths, color="white", lw=0.7, alpha=0.85)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(*ylim)


def plot_paths(
    path: str | Path,
    processes: Sequence[str | LinearProcess] = ("vp", "cld", "hold"),
    *,
    n_paths: int = 12,
    steps: int = 300,
    seed: int = 0,
) -> Path:
    """HOLD Fig. 1: forward paths of x (white) for 1-D mixture data (``gmm1d``), one panel
    per process, over the exact density of x_t (square-root colour scale)."""
    from phasediff.data import sample_toy

    n_paths, steps = check_int(n_paths, "n_paths"), check_int(steps, "steps", 2)
    procs = [_as_process(p) for p in processes]
    if not procs:
        raise ValueError("processes must name at least one process.")
    plt = _plt()
    fig, axes = plt.subplots(1, len(procs), figsize=(4.2 * len(procs), 3.4), squeeze=False)
    x0 = sample_toy("gmm1d", n_paths, seed=seed).to(torch.float64)
    for ax, process in zip(axes[0], procs, strict=True):
        times = torch.cat(
            (torch.zeros(1, dtype=torch.float64), torch.linspace(process.t_min, process.T, steps))
        )
        states = forward_paths(process, x0, times, torch.Generator().manual_seed(seed + 1))
        _density_panel(ax, process, times, 0, states[:, :, 0, 0].numpy(), (-4.0, 4.0))
        ax.set_title(f"{process.name} (k = {process.k}): x")
        ax.set_xlabel("t")
    axes[0][0].set_ylabel("x")
    fig.suptitle("Forward noising paths of 1-D mixture data (white) over the density of x_t")
    fig.tight_layout()
    return _save(fig, path)


def plot_phases(
    path: str | Path,
    process: str | LinearProcess = "hold",
    *,
    n_paths: int = 10,
    steps: int = 300,
    sampler: str = "lie_trotter",
    sampler_steps: int = 200,
    seed: int = 0,
) -> Path:
    """HOLD Fig. 2: the x, v, a, … paths of one process for 1-D mixture data.

    Top row: forward (noising) paths over the exact density of each block. Bottom row:
    generation paths of ``sampler`` driven by the exact score of the data mixture
    (``MixtureScore``), drawn against the same time axis (generation runs from T to t_min).
    """
    from phasediff.data import sample_toy
    from phasediff.evaluation.exact import MixtureScore
    from phasediff.samplers import get_sampler

    n_paths, steps = check_int(n_paths, "n_paths"), check_int(steps, "steps", 2)
    sampler_steps = check_int(sampler_steps, "sampler_steps")
    process = _as_process(process)
    fn = get_sampler(sampler)
    k = process.k
    plt = _plt()
    fig, axes = plt.subplots(2, k, figsize=(4.0 * k, 6.4), squeeze=False)
    x0 = sample_toy("gmm1d", n_paths, seed=seed).to(torch.float64)
    times = torch.cat(
        (torch.zeros(1, dtype=torch.float64), torch.linspace(process.t_min, process.T, steps))
    )
    forward = forward_paths(process, x0, times, torch.Generator().manual_seed(seed + 1))
    w, mu, sd = gmm1d_mixture()
    model = MixtureScore(process, mu[:, None], sd, w)
    res = fn(
        model,
        process,
        (n_paths, 1),
        sampler_steps,
        generator=torch.Generator().manual_seed(seed + 2),
        return_trajectory=True,
        dtype=torch.float64,
    )
    backward = torch.stack(res.trajectory)[:, :, :, 0]  # (steps+1, B, k)
    back_t = res.times.numpy()
    limits = []
    for j in range(k):
        span = float(forward[:, :, j].abs().max().clamp(min=1.0)) * 1.15
        limits.append((-max(span, 3.0), max(span, 3.0)))
    for j in range(k):
        name = process.block_names[j]
        _density_panel(axes[0][j], process, times, j, forward[:, :, j, 0].numpy(), limits[j])
        axes[0][j].set_title(f"forward: {name}")
        _density_panel(axes[1][j], process, times, j, backward[:, :, j].numpy(), limits[j], back_t)
        axes[1][j].set_title(f"generation ({sampler}, {sampler_steps} steps): {name}")
        axes[1][j].set_xlabel("t")
    fig.suptitle(
        f"{process.name}: paths of every block (white) over its exact marginal density; "
        "generation uses the exact mixture score"
    )
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- 2-D


def _scatter(ax, pts: torch.Tensor, title: str, lim: float | None = None) -> None:
    pts = pts.detach().float().cpu()
    if pts.ndim == 2 and pts.shape[1] > 2:  # d > 2: the first two coordinates
        pts, title = pts[:, :2], f"{title} (coordinates 0–1)"
    if pts.ndim == 2 and pts.shape[1] == 2:
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.5, linewidths=0)
        ax.set_aspect("equal")
        if lim is not None:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
    elif pts.ndim == 2 and pts.shape[1] == 1:
        ax.hist(pts[:, 0].numpy(), bins=100, density=True)
    elif pts.ndim == 4:
        n = min(pts.shape[0], 64)
        cols = int(math.ceil(math.sqrt(n)))
        rows = int(math.ceil(n / cols))
        c, h, w = pts.shape[1:]
        canvas = torch.ones(c, rows * (h + 1), cols * (w + 1))
        for i in range(n):
            r, q = divmod(i, cols)
            img = ((pts[i] + 1) / 2).clamp(0, 1)
            canvas[:, r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = img
        shown = canvas[0] if c == 1 else canvas.permute(1, 2, 0)
        ax.imshow(shown.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    else:
        raise ValueError(
            f"cannot draw samples shaped {tuple(pts.shape)}; expected (N, 1|2) or (N, C, H, W)."
        )
    ax.set_title(title)


def plot_samples(
    path: str | Path,
    samples: Sequence[tuple[str, torch.Tensor]],
    *,
    reference: torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """HOLD Fig. 4: samples of several models side by side (``samples`` = [(label, x)]), with
    ``reference`` data as the last panel."""
    panels = list(samples) + ([("data", reference)] if reference is not None else [])
    if not panels:
        raise ValueError("plot_samples needs at least one (label, samples) pair.")
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    lim = _common_limit([x for _, x in panels])
    for ax, (label, x) in zip(axes[0], panels, strict=True):
        _scatter(ax, x, label, lim)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _common_limit(arrays: Sequence[torch.Tensor]) -> float | None:
    if not all(a.ndim == 2 and a.shape[1] >= 2 for a in arrays):
        return None
    ref = arrays[-1][:, :2].detach().abs().float()
    return float(torch.quantile(ref.flatten(), 0.999)) * 1.25 + 1e-3


def compare_samples(
    path: str | Path, samples: torch.Tensor, reference: torch.Tensor, *, title: str = ""
) -> Path:
    """Samples next to held-out data (the figure ``phasediff eval`` writes)."""
    return plot_samples(path, [("samples", samples)], reference=reference, title=title)


def plot_snapshots(
    path: str | Path,
    *,
    model=None,
    process: str | LinearProcess = "hold",
    sampler: str = "lie_trotter",
    steps: int = 50,
    num: int = 2000,
    n_snapshots: int = 6,
    n_points: int = 2000,
    seed: int = 0,
    source: str | None = None,
) -> tuple[Path, str]:
    """HOLD Fig. 3: multi-Swiss-roll samples at ``n_snapshots`` steps of a sampler (times
    geometric from T to 0.04·T, then the last step).

    With ``model`` (a score model of 2-D data, e.g. a trained run's: ``phasediff.bench.runs.
    plot_snapshots`` loads one) it is sampled under ``process``; otherwise the exact score
    (``MixtureScore``) of ``n_points`` training points smoothed by the data's own noise
    (std 0.01) under ``process``. Returns (path, description of the model used: ``source``
    when given).
    """
    from phasediff.samplers import get_sampler

    steps, num = check_int(steps, "steps"), check_int(num, "num")
    n_snapshots = check_int(n_snapshots, "n_snapshots", 2)
    fn = get_sampler(sampler)
    if model is not None:
        proc = _as_process(process)
        source = source or f"the given model ({proc.name})"
    else:
        from phasediff.data import sample_toy
        from phasediff.data.toys import MULTI_SWISS_ROLL_NOISE
        from phasediff.evaluation.exact import MixtureScore

        proc = _as_process(process)
        pts = sample_toy("multi_swiss_roll", check_int(n_points, "n_points"), seed=seed)
        model = MixtureScore(proc, pts, MULTI_SWISS_ROLL_NOISE)
        source = source or (
            f"exact score of {n_points} multi-Swiss-roll points smoothed by N(0, 0.01²) "
            f"under {proc.name}"
        )
    res = fn(
        model,
        proc,
        (num, 2),
        steps,
        generator=torch.Generator().manual_seed(seed + 1),
        return_trajectory=True,
    )
    traj = res.trajectory
    # Structure appears late in generation: snapshot times geometric from T to 0.04·T, then
    # the final step (each mapped to the nearest step of the grid).
    targets = np.geomspace(proc.T, 0.04 * proc.T, n_snapshots - 1)
    grid_t = res.times.numpy()
    picks = sorted({int(np.abs(grid_t - t).argmin()) for t in targets} | {len(traj) - 1})
    plt = _plt()
    fig, axes = plt.subplots(1, len(picks), figsize=(2.8 * len(picks), 3.1), squeeze=False)
    for ax, i in zip(axes[0], picks, strict=True):
        t = float(res.times[i]) if i < len(res.times) else float(res.times[-1])
        _scatter(ax, traj[i][:, 0], f"step {i}, t = {t:.3g}", 2.2)
    fig.suptitle(f"{proc.name}, {sampler} with {steps} steps (NFE {res.nfe}): x over the steps")
    fig.tight_layout()
    return _save(fig, path), source
