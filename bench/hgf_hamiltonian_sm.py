"""Hamiltonian score matching on 8 Gaussians: the discrepancy of known force fields, and the
distance of the trained force to the true score along training (docs/hgf.md).

Trains configs/toy_hamiltonian_sm.toml (any `--set` overrides apply) through the ordinary
Hamiltonian-score-matching trainer (`HamiltonianSMTrainer`) and
prints Markdown tables. The distance is Σ_i w_i‖F(g_i) − ∇log p(g_i)‖² / Σ_i w_i‖∇log p(g_i)‖²
on a 61×61 grid over [−2.5, 2.5]² weighted by the data density w_i ∝ p(g_i). Usage:

    .venv/bin/python bench/hgf_hamiltonian_sm.py --steps 3000
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from phasediff.bench import machine
from phasediff.data.toys import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD  # noqa: E402
from phasediff.objectives.hamiltonian import mixture_score  # noqa: E402
from phasediff.training import load_config  # noqa: E402
from phasediff.training.hamiltonian_sm import (  # noqa: E402
    HamiltonianSMTrainer,
    estimate_discrepancy,
    relative_score_distance,
)

ANGLES = torch.arange(8) * 2 * math.pi / 8
MEANS = EIGHT_GAUSSIANS_RADIUS * torch.stack([ANGLES.cos(), ANGLES.sin()], 1)


def true_score(x: torch.Tensor) -> torch.Tensor:
    return mixture_score(x, MEANS, EIGHT_GAUSSIANS_STD)


def density_grid(n: int = 61, half_width: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    lin = torch.linspace(-half_width, half_width, n)
    gx, gy = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    sq = ((grid[:, None] - MEANS[None]) ** 2).sum(-1)
    return grid, torch.softmax(torch.logsumexp(-0.5 * sq / EIGHT_GAUSSIANS_STD**2, 1), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=500, help="distance report interval")
    ap.add_argument("--fit-iters", type=int, default=3000, help="φ steps per HSD estimate")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(
        "configs/toy_hamiltonian_sm.toml",
        [f"train.steps={args.steps}", "train.threads=1", *args.overrides],
    )
    hc = cfg.hamiltonian_sm
    t0 = time.perf_counter()

    def sample_data(n: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, 8, (n,), generator=g)
        return MEANS[idx] + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=g)

    print(
        f"### Hamiltonian score discrepancy on 8 Gaussians (T = {hc.horizon}, "
        f"{hc.leapfrog_steps} leapfrog steps, a fresh 3×128 φ fitted for {args.fit_iters} "
        "steps, 8192 test trajectories)\n"
    )
    print("| force field F | HSD estimate ± stderr |")
    print("|---|---|")
    fields = {
        "∇log p (true score)": true_score,
        "0.5 ∇log p": lambda x: 0.5 * true_score(x),
        "1.5 ∇log p": lambda x: 1.5 * true_score(x),
        "∇log p + (0.5, 0)": lambda x: true_score(x) + torch.tensor([0.5, 0.0]),
        "0 (zero force)": torch.zeros_like,
    }
    for name, field in fields.items():
        est = estimate_discrepancy(
            field,
            sample_data,
            horizon=hc.horizon,
            steps=hc.leapfrog_steps,
            fit_iters=args.fit_iters,
            hidden=128,
        )
        print(f"| {name} | {est['hsd']:.4f} ± {est['stderr']:.4f} |", flush=True)

    root = args.out or Path(tempfile.mkdtemp(prefix="hgf_hamiltonian_sm_"))
    trainer = HamiltonianSMTrainer(cfg, root, progress=False)
    grid, weights = density_grid()
    print("\n### Hamiltonian score matching training (configs/toy_hamiltonian_sm.toml)\n")
    print("| step | φ loss | discrepancy (θ loss) | distance F_θ | distance EMA | seconds |")
    print("|---|---|---|---|---|---|")
    start = relative_score_distance(trainer.force, true_score, grid, weights)
    print(f"| 0 | | | {start:.3f} | {start:.3f} | 0 |", flush=True)
    t_train = time.perf_counter()
    while trainer.step < args.steps:
        trainer.fit(min(trainer.step + args.every, args.steps))
        recent = trainer.history[-args.every :]
        phi = sum(h[0] for h in recent) / len(recent)
        hsd = sum(h[1] for h in recent) / len(recent)
        dist = relative_score_distance(trainer.force, true_score, grid, weights)
        dist_ema = relative_score_distance(trainer.ema_force(), true_score, grid, weights)
        seconds = time.perf_counter() - t_train
        print(
            f"| {trainer.step} | {phi:.3f} | {hsd:.4f} | {dist:.3f} | {dist_ema:.3f} | "
            f"{seconds:.0f} |",
            flush=True,
        )
    extra = " ".join(f"--set {o}" for o in args.overrides)
    cmd = f"--steps {args.steps} --fit-iters {args.fit_iters} {extra}".strip()
    print(f"\nCommand: `.venv/bin/python bench/hgf_hamiltonian_sm.py {cmd}`; ", end="")
    print(f"{time.perf_counter() - t0:.0f} s in all. Machine: {machine()}.")


if __name__ == "__main__":
    main()
