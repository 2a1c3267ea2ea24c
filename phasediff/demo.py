"""`make demo` / `phasediff demo`: train HOLD on the multi-Swiss-roll, sample it with the
Lie–Trotter splitting sampler, and write pictures and metrics (docs/design.md §7)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from phasediff.data import MULTI_SWISS_ROLL_CENTERS
from phasediff.evaluation import evaluate_toy
from phasediff.samplers import lie_trotter
from phasediff.training import load_config, load_trained, train
from phasediff.training.plots import save_samples

DEMO_STEPS = 30_000
"""Training steps of `make demo` (about 3 minutes on 2 cores; docs/benchmarks.md)."""


def plot_trajectories(samples, path: Path, block_names, n_paths: int = 24) -> None:
    """x, v, a, … paths of the first coordinate against time, as HOLD's Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = torch.stack(samples.trajectory)[:, :n_paths, :, 0].cpu()  # (steps+1, n, k)
    times = samples.times.cpu().numpy()
    k = traj.shape[-1]
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.6), squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.plot(times, traj[:, :, j].numpy(), lw=0.8, alpha=0.8)
        ax.invert_xaxis()
        ax.set_xlabel("t (generation runs right to left → 0)")
        ax.set_title(f"{block_names[j]} (first coordinate)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    out: str | Path = "demo",
    *,
    steps: int = DEMO_STEPS,
    sampler_steps: int = 50,
    num: int = 20_000,
    grid: str = "quadratic",
    progress: bool = True,
) -> dict:
    """Train configs/toy_hold.toml (the preconditioned recipe, docs/objectives.md) for `steps`
    steps (resuming a previous demo run if there is one), sample `num` points with Lie–Trotter
    at `sampler_steps` on `grid` (quadratic: small steps near t_min, where the score of thin
    data is steep), write demo/*.png and demo/metrics.json; returns the metrics."""
    out = Path(out)
    run = out / "run"
    config = load_config(
        Path(__file__).resolve().parent.parent / "configs" / "toy_hold.toml",
        [f"train.steps={steps}", "train.tensorboard=false", "train.ckpt_every=5000"],
    )
    t0 = time.perf_counter()
    has_run = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*.json"))
    train(config, run, resume=has_run, progress=progress)
    train_seconds = time.perf_counter() - t0
    model, process, _, data = load_trained(run)
    gen = torch.Generator().manual_seed(0)
    t1 = time.perf_counter()
    samples = lie_trotter(
        model, process, (num, 2), sampler_steps, grid=grid, generator=gen, return_trajectory=True
    )
    sample_seconds = time.perf_counter() - t1
    save_samples(
        samples.x,
        out / "samples.png",
        reference=data.held_out(num),
        title=f"HOLD, Lie–Trotter {sampler_steps} steps ({grid} grid)",
    )
    plot_trajectories(samples, out / "trajectories.png", process.block_names)
    metrics = evaluate_toy(
        samples.x,
        lambda n, seed: data.held_out(n, seed=seed),
        n=num,
        centers=MULTI_SWISS_ROLL_CENTERS,
    )
    report = {
        "process": process.name,
        "sampler": "lie_trotter",
        "grid": grid,
        "steps": sampler_steps,
        "nfe": samples.nfe,
        "train_steps": steps,
        "train_seconds": round(train_seconds, 1),
        "sample_seconds": round(sample_seconds, 2),
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    return report
