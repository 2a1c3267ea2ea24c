"""Figures of the suites (matplotlib, Agg): quality vs NFE per process for the grid suites,
the overhead bars; the mixing suite draws ``phasediff.analysis.mixing.plot_mixing``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from phasediff.bench.base import SCORE_SAMPLERS, VELOCITY_SAMPLERS
from phasediff.bench.render import best, grid_index
from phasediff.bench.scoring import ratio

__all__ = ["plot_grid", "plot_overhead"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grid(results: dict[str, Any], path: Path, *, metric: str, label: str) -> None:
    """One panel per process (the ratio of ``metric`` vs measured NFE, one line per sampler,
    adaptive samplers as stars) and a last panel with each process's best sampler per
    budget."""
    plt = _pyplot()
    suite = results["suite"]
    cells, budgets, adaptive, models, pairs = grid_index(results)
    info = results["models"]
    panels = len(models) + 1
    cols = min(4, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    reference = [r[metric] for r in results.get("exact_reference") or [] if r.get(metric)]
    cap = 1e3
    order = (*SCORE_SAMPLERS, *VELOCITY_SAMPLERS)
    palette = plt.get_cmap("tab10").colors
    style = {
        name: {"color": palette[i % 10], "ls": "-" if i < 7 else "--", "marker": "o", "ms": 3}
        for i, name in enumerate(order)
    }

    def decorate(ax, title: str) -> None:
        if reference:
            ax.axhspan(min(reference), max(reference), color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.7, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("measured NFE")

    for ax, key in zip(flat, models, strict=False):
        for model_key, name in pairs:
            if model_key != key:
                continue
            pts = [cells.get((key, name, n)) for n in budgets]
            pts = [c for c in pts if c is not None and c.get("metrics") is not None]
            xs = [c["nfe"] for c in pts]
            ys = [min(cap, ratio(c["metrics"], metric) or cap) for c in pts]
            if xs:
                ax.plot(xs, ys, lw=1, label=name, **style[name])
            ad = cells.get((key, name, None))
            if ad is not None and ad.get("metrics") is not None:
                y = min(cap, ratio(ad["metrics"], metric) or cap)
                color = style[name]["color"]
                ax.plot([ad["nfe"]], [y], "*", ms=10, color=color, label=f"{name} (adaptive)")
        decorate(ax, info[key]["label"])
        ax.legend(fontsize=6, ncol=2)
    ax = flat[len(models)]
    for key in models:
        xs, ys = [], []
        for n in budgets:
            found = best(results, metric, key, n)
            if found is not None:
                xs.append(found[2])
                ys.append(min(cap, found[0]))
        ax.plot(xs, ys, marker="o", ms=3, label=info[key]["label"])
    decorate(ax, "best sampler per process")
    ax.legend(fontsize=7)
    for extra in flat[panels:]:
        extra.axis("off")
    for a in axes[:, 0]:
        a.set_ylabel(f"{label} / floor")
    fig.suptitle(
        f"{suite}: {label} ratio to the noise floor (grey band: exact sampler), "
        f"{results['settings']['steps']} training steps, {results['settings']['num']} samples; "
        f"values above {cap:.0f} drawn at {cap:.0f}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overhead(results: dict[str, Any], path: Path) -> None:
    """One bar per sampler: time outside the network ÷ time inside (%)."""
    plt = _pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.2))
    names = [f"{r['sampler']} ({r['process']}, {r['nfe']} NFE)" for r in rows]
    ax.barh(names, [100 * r["overhead"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("time outside the network ÷ time inside (%)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
