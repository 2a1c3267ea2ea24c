"""The loss gap to the exact score on 8 Gaussians, per training step (docs/objectives.md,
"Phase-space scores take longer to learn"; issue "model quality" item 6).

    python bench/loss_gap.py --process vp --process cld --process hold --steps 20000 \
        --every 1000 --out bench/results/loss_gap.json

Each process trains its shipped toy config (`configs/toy_<process>.toml`) on `8gaussians`
with a checkpoint every --every steps. At every checkpoint the EMA network's hybrid-score-
matching loss in ε units (weighting "eps") is estimated at t ∈ --times, together with the
loss of the exact mixture score (the irreducible loss) on the same draws (common random
numbers, so the difference has little Monte-Carlo noise). The gap is
(L_model − L_exact)/L_exact; a process has closed it at the first checkpoint where the gap is
below --tol at every t.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


class ExactEightGaussians(torch.nn.Module):
    """The exact noisy-block score of the `8gaussians` toy through the process's kernel:
    component i is N(e μ_i, Σ_t + s² e eᵀ) (written here from the toy's constants)."""

    parameterization = "score"

    def __init__(self, process) -> None:
        from phasediff.data.toys import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD

        super().__init__()
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        self.means = EIGHT_GAUSSIANS_RADIUS * torch.stack((torch.cos(angle), torch.sin(angle)), 1)
        self.var = EIGHT_GAUSSIANS_STD**2
        self.process = process

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        E, S = self.process.kernel(t.to(torch.float64))
        e = E[:, :, 0]
        Cinv = torch.linalg.inv(S + self.var * e[:, :, None] * e[:, None, :])
        diff = z.to(torch.float64)[:, None] - e[:, None, :, None] * self.means[None, :, None, :]
        sol = torch.einsum("bij,bKjd->bKid", Cinv, diff)
        r = torch.softmax(-0.5 * (diff * sol).sum((2, 3)), dim=1)
        score = -(r[:, :, None, None] * sol).sum(1)
        return score[:, list(self.process.noisy_blocks)].to(z.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--process", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--times", default="0.05,0.1,0.2,0.4")
    parser.add_argument("--num", type=int, default=20000, help="data points per estimate")
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="bench/runs/loss_gap")
    parser.add_argument("--out", default="bench/results/loss_gap.json")
    parser.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args()

    from phasediff.data.toys import sample_toy
    from phasediff.objectives import hybrid_score_matching
    from phasediff.training import load_config, load_trained, train

    torch.set_num_threads(args.threads)
    times = [float(t) for t in args.times.split(",")]
    rows = []
    for name in args.process or ["vp", "cld", "hold"]:
        run = Path(args.runs) / f"{name}_{args.steps}_s{args.seed}"
        over = [
            "data.name=8gaussians",
            f"train.steps={args.steps}",
            f"train.ckpt_every={args.every}",
            f"train.keep_last={args.steps // args.every + 1}",
            f"train.threads={args.threads}",
            "train.tensorboard=false",
            f"seed={args.seed}",
            *args.set,
        ]
        config = load_config(f"configs/toy_{name}.toml", over)
        has = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*.json"))
        t0 = time.perf_counter()
        train(config, run, resume=has, progress=False)
        seconds = time.perf_counter() - t0
        x0 = sample_toy("8gaussians", args.num, seed=12345).to(torch.float64)
        closed = None
        for ckpt in sorted((run / "checkpoints").glob("step_*.json")):
            step = int(ckpt.stem.split("_")[1])
            model, process, _, _ = load_trained(ckpt)
            model = model.double()
            exact = ExactEightGaussians(process)
            gaps = {}
            for t in times:
                kw = {"weighting": "eps", "t": t}
                with torch.no_grad():
                    a = hybrid_score_matching(
                        model, process, x0, torch.Generator().manual_seed(7), **kw
                    )
                    b = hybrid_score_matching(
                        exact, process, x0, torch.Generator().manual_seed(7), **kw
                    )
                gaps[t] = {"model": float(a), "exact": float(b), "gap": float(a / b - 1)}
            ok = all(abs(g["gap"]) <= args.tol for g in gaps.values())
            if ok and closed is None:
                closed = step
            rows.append({"process": name, "step": step, "gaps": gaps, "closed": ok})
            cells = " ".join(f"t={t}: {g['gap']:+.3f}" for t, g in gaps.items())
            print(f"{name:>5} step {step:>6}  {cells}", flush=True)
        rows.append({"process": name, "closed_at": closed, "train_seconds": round(seconds, 1)})
        print(f"{name}: gap within {args.tol:.0%} at every t from step {closed}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
