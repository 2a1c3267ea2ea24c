"""`make demo` / `phasediff demo`: train HOLD on the multi-Swiss-roll, sample it with the
exponential integrator and its denoising last step, and write pictures and metrics
(docs/design.md §7)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from phasediff.data import MULTI_SWISS_ROLL_CENTERS
from phasediff.data.sanity import run_data_range
from phasediff.evaluation import evaluate_toy
from phasediff.samplers.final import final_step_options
from phasediff.samplers.registry import get_entry, get_sampler
from phasediff.training import load_config, load_trained, train
from phasediff.training.config import SHIPPED_CONFIGS
from phasediff.training.plots import save_samples

DEMO_STEPS = 24_000
"""Training steps of `make demo` (about 4 minutes on 2 cores; docs/objectives.md, "The demo")."""
DEMO_BATCH = 1024
"""The demo's batch: on 2 threads a step of 1024 points costs 1.33× one of 512 (the 512 step
leaves the second core idle), so at equal time the demo sees 1.5× the data
(docs/objectives.md, "Batch size, EMA length, width and learning rate")."""
DEMO_REPEATS = 16
"""References the demo's distances are averaged over (evaluate_toy's `repeats`): one held-out
reference moves the mode-resolved ratio of the same samples by ±15 % (docs/evaluation.md)."""
DEMO_SAMPLER, DEMO_SAMPLER_STEPS = "ei1c", 50
"""The demo's sampler: on the demo's HOLD model, ei1c at 50 NFE with the denoising last step
reaches the model's own Euler–Maruyama@1000 (mode-resolved ratio 1.41 vs 1.42; Lie–Trotter
at 50 on its quadratic grid: 1.72; docs/samplers.md)."""


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
    batch_size: int = DEMO_BATCH,
    sampler: str = DEMO_SAMPLER,
    sampler_steps: int = DEMO_SAMPLER_STEPS,
    num: int = 20_000,
    grid: str | None = None,
    progress: bool = True,
) -> dict:
    """Train configs/toy_hold.toml (the preconditioned recipe, docs/objectives.md) for `steps`
    steps (resuming a previous demo run if there is one), sample `num` points with `sampler`
    at `sampler_steps` on `grid` (default: the sampler's own) ending with the denoising last
    step (docs/samplers.md, "The final step"), write demo/*.png and demo/metrics.json;
    returns the metrics."""
    out = Path(out)
    run = out / "run"
    config = load_config(
        SHIPPED_CONFIGS / "toy_hold.toml",
        [
            f"train.steps={steps}",
            f"train.batch_size={batch_size}",
            "train.tensorboard=false",
            "train.ckpt_every=5000",
        ],
    )
    entry = get_entry(sampler)
    grid = entry.default_grid if grid is None else grid
    t0 = time.perf_counter()
    has_run = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*.json"))
    train(config, run, resume=has_run, progress=progress)
    train_seconds = time.perf_counter() - t0
    model, process, _, data = load_trained(run)
    box, _ = run_data_range(run, data.data)
    last = final_step_options(None, model, (box.low, box.high), adaptive=entry.adaptive)
    gen = torch.Generator().manual_seed(0)
    t1 = time.perf_counter()
    samples = get_sampler(sampler, model)(
        model,
        process,
        (num, 2),
        sampler_steps,
        grid=grid,
        generator=gen,
        return_trajectory=True,
        **last,
    )
    sample_seconds = time.perf_counter() - t1
    save_samples(
        samples.x,
        out / "samples.png",
        reference=data.held_out(num),
        title=f"HOLD, {sampler} {samples.nfe} NFE ({grid} grid)",
    )
    plot_trajectories(samples, out / "trajectories.png", process.block_names)
    metrics = evaluate_toy(
        samples.x,
        lambda n, seed: data.held_out(n, seed=seed),
        n=num,
        centers=MULTI_SWISS_ROLL_CENTERS,
        repeats=DEMO_REPEATS,
    )
    report = {
        "process": process.name,
        "sampler": sampler,
        "grid": grid,
        "final": last["final"],
        "steps": sampler_steps,
        "nfe": samples.nfe,
        "projected": samples.projected,
        "guarded": samples.guarded,
        "guarded_far": samples.guarded_far,
        "train_steps": steps,
        "batch_size": batch_size,
        "train_seconds": round(train_seconds, 1),
        "sample_seconds": round(sample_seconds, 2),
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    return report
