"""EMA length on one training trajectory (issue "model quality"): every decay sees the same run.

    python bench/ema_sweep.py --config configs/toy_hold.toml --minutes 5 --seed 0 \
        --decays 0.999,0.9995,0.9998,0.9999 --out bench/results/ema_sweep.json

The run trains with the config's own EMA (train.ema_decay); alongside it the trainer keeps one
more average per --decays entry (same warm-up rule, docs/training.md "EMA"), saved next to the
run as `ema_sweep.safetensors`. Each average is then sampled with every (sampler, NFE) of --plan
(default last step and grid, x̂₀ guard on as in `TrainedRun.sample`) and scored like
bench/recipe.py (mode-resolved sliced-W2 ratio to the noise floor). Because all decays share
the trajectory, their differences carry no seed-to-seed training noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decays", default="0.999,0.9995,0.9998,0.9999")
    parser.add_argument("--plan", default="ei1c:20,ei1c:50,em:1000")
    parser.add_argument("--num", type=int, default=20000)
    parser.add_argument("--runs", default="bench/runs/ema_sweep")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--name", default=None, help="run directory name (default: from --set)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="held-out references per score (evaluate_toy)"
    )
    parser.add_argument(
        "--draws", type=int, default=1, help="sample draws per cell (seeds seed, seed+1000, …)"
    )
    parser.add_argument("--out", default="bench/results/ema_sweep.json")
    args = parser.parse_args()

    from safetensors.torch import load_file, save_file
    from score_samplers import draw_and_score  # bench/ is on sys.path when run as a script

    from phasediff.data.sanity import run_data_range
    from phasediff.training import Trainer, load_config, load_trained

    torch.set_num_threads(args.threads)
    decays = [float(d) for d in args.decays.split(",")]
    name = args.name or (
        f"{Path(args.config).stem}_{'_'.join(s.split('=')[-1] for s in args.set) or 'base'}"
    )
    run = Path(args.runs) / f"{name}_{args.minutes:g}min_s{args.seed}"
    sweep_file = run / "ema_sweep.safetensors"
    if not sweep_file.exists():
        over = [
            f"train.steps={args.steps}",
            f"seed={args.seed}",
            "train.tensorboard=false",
            "train.ckpt_every=1000000",
            f"train.threads={args.threads}",
            f"train.time_limit={args.minutes}",
            *args.set,
        ]
        config = load_config(args.config, over)

        class SweepTrainer(Trainer):
            def track_ema(self, named) -> None:
                super().track_ema(named)
                self.extra = {d: [p.detach().clone() for _, p in named] for d in decays}

            def update_ema(self) -> None:
                super().update_ema()
                n = self.step + 1
                with torch.no_grad():
                    params = [p.detach() for _, p in self._ema_params]
                    for d, avg in self.extra.items():
                        rate = 1.0 - min(d, (1.0 + n) / (10.0 + n))
                        torch._foreach_lerp_(avg, params, rate)

        trainer = SweepTrainer(config, run, progress=False)
        try:
            trainer.fit()
        finally:
            trainer.close()
        names = [n for n, _ in trainer._ema_params]
        tensors = {
            f"{d}.{n}": t.contiguous()
            for d, avg in trainer.extra.items()
            for n, t in zip(names, avg, strict=True)
        }
        save_file(tensors, str(sweep_file))
    extra = load_file(str(sweep_file))
    model, process, config, data = load_trained(run)
    steps_done = int((run / "metrics.csv").read_text().strip().splitlines()[-1].split(",")[0])
    box, _ = run_data_range(run, data.data)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else []
    for d in decays:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(extra[f"{d}.{n}"])
        for item in args.plan.split(","):
            sampler, nfe = item.split(":")
            t0 = time.perf_counter()
            ratios, sw2, guarded = [], [], 0
            for draw in range(args.draws):
                res, m = draw_and_score(
                    model,
                    process,
                    data,
                    box,
                    sampler,
                    int(nfe),
                    seed=args.seed + 1000 * draw,
                    num=args.num,
                    repeats=args.repeats,
                )
                ratios.append(m["mode_sliced_w2"]["ratio"])
                sw2.append(m["sliced_w2"]["ratio"])
                guarded += res.guarded
            row = {
                "config": args.config,
                "set": args.set,
                "seed": args.seed,
                "minutes": args.minutes,
                "train_steps": steps_done,
                "ema_decay": d,
                "sampler": sampler,
                "steps": int(nfe),
                "guarded": guarded,
                "repeats": args.repeats,
                "draw_ratios": ratios,
                "mode_sw2_ratio": sum(ratios) / len(ratios),
                "sliced_w2_ratio": sum(sw2) / len(sw2),
                "sample_seconds": round(time.perf_counter() - t0, 2),
            }
            results.append(row)
            print(
                f"{name} s{args.seed} ema={d} {sampler}@{nfe}: mode={row['mode_sw2_ratio']:.3f} "
                f"sw2={row['sliced_w2_ratio']:.3f} guarded={guarded} "
                f"draws={[round(r, 3) for r in ratios]}",
                flush=True,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
