"""Training-recipe ablation for score processes (issue "model quality"): one lever at a time.

    python bench/recipe.py --config configs/toy_cld.toml --steps 20000 \
        --variant base --variant "pre:model.precondition=true" \
        --variant "pre_den:model.precondition=true,objective.weighting=denoiser" \
        --out bench/results/recipe_cld.json

Each variant is `name:key=value,key=value` (config overrides, as `phasediff train --set`);
every variant trains the same number of steps from the same seed (equal wall time up to the
preconditioner's k×k coefficients, whose cost is reported), or, with --minutes M, for the same
M minutes of wall time (train.time_limit; --steps is then only a cap). Then every (sampler,
NFE) of --plan, with each last step of --final ("integrate": the sampler's own step to t_min;
"denoise": the denoiser jump, x̂₀ projected onto the training data's range;
phasediff/samplers/final.py), draws --num samples, counted as blown when non-finite or beyond
--bound in any coordinate, and scored as ratios to the noise floor (plain and mode-resolved
sliced W2). --x0-guard samples with the x̂₀ guard (phasediff/samplers/guard.py): rows then
count in `guarded` the samples whose x̂₀ it moved, and `blown` only what escaped it. --run DIR
(repeatable) scores existing runs (or one checkpoint's .json) instead of training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch

DEFAULT_PLAN = (
    "em:1000,em:100,lie_trotter:20,lie_trotter:50,strang:20,strang:50,ei1c:20,eic:20,ei:10,ei:20"
)


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    return name, [item for item in rest.split(",") if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--run", action="append", default=[], help="score this run, no training")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--minutes", type=float, default=0.0, help="equal wall-time budget")
    parser.add_argument("--final", default="integrate,denoise")
    parser.add_argument(
        "--noise-floor",
        default="",
        help="comma list of noise_floor values for the denoising jump (default: the library's)",
    )
    parser.add_argument(
        "--x0-guard",
        action="store_true",
        help="project x̂₀ of every network call onto the data's box (phasediff.samplers.guard)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--plan", default=DEFAULT_PLAN)
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--bound", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="bench/runs/recipe")
    parser.add_argument("--out", default="bench/results/recipe.json")
    parser.add_argument("--set", action="append", default=[], help="override for every variant")
    args = parser.parse_args()

    from phasediff.data.sanity import run_data_range
    from phasediff.evaluation import evaluate_toy
    from phasediff.samplers import SAMPLERS
    from phasediff.samplers.final import default_noise_floor
    from phasediff.training import load_config, load_trained, train

    torch.set_num_threads(args.threads)
    plan = []  # name:steps[:grid]
    for item in args.plan.split(","):
        name, steps, *grid = item.split(":")
        plan.append((name, int(steps), grid[0] if grid else None))
    floors = [float(f) for f in args.noise_floor.split(",") if f] or [None]
    finals = [
        (f, fl) for f in args.final.split(",") if f for fl in (floors if f == "denoise" else [None])
    ]
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else []
    jobs = [("run", str(r), []) for r in args.run]
    if args.config:
        jobs += [("train", *_variant(text)) for text in args.variant or ["base"]]
    for how, name, overrides in jobs:
        budget = f"{args.minutes:g}min" if args.minutes else str(args.steps)
        train_s, train_steps = None, None
        if how == "run":
            run, config_name = Path(name), name
            name = run.name
        else:
            config_name = args.config
            run = Path(args.runs) / f"{Path(args.config).stem}_{name}_{budget}_s{args.seed}"
            over = [
                f"train.steps={args.steps}",
                f"seed={args.seed}",
                "train.tensorboard=false",
                "train.ckpt_every=100000",
                f"train.threads={args.threads}",
                f"train.time_limit={args.minutes}",
                *args.set,
                *overrides,
            ]
            config = load_config(args.config, over)
            t0 = time.perf_counter()
            has = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*.json"))
            if not (has and args.minutes):  # a finished time-budget run is not extended
                train(config, run, resume=has, progress=False)
            train_s = time.perf_counter() - t0
        model, process, _, data = load_trained(run)
        run_dir = run.parent.parent if run.is_file() else run  # a checkpoint: its run
        rows = (run_dir / "metrics.csv").read_text().strip().splitlines()[1:]
        if run.is_file():  # the checkpoint's step and the training time up to it
            name = f"{run_dir.name}@{run.stem}"
            step = int(run.stem.split("_")[1])
            rows = [r for r in rows if int(r.split(",")[0]) <= step]
        train_steps = int(rows[-1].split(",")[0]) if rows else None
        train_s = float(rows[-1].split(",")[-2]) if rows else train_s
        box, _ = run_data_range(run_dir, data.data)
        centers = data.mode_centers
        for (sampler, steps, grid), (final, floor) in [(p, f) for p in plan for f in finals]:
            kw = {"grid": grid} if grid else {}
            if final == "denoise":
                kw.update(final="denoise", x0_range=(box.low, box.high), noise_floor=floor)
            if args.x0_guard:
                kw.update(x0_range=(box.low, box.high), x0_guard=True)
            gen = torch.Generator().manual_seed(args.seed)
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the stability warning: counted below instead
                res = SAMPLERS[sampler](
                    model, process, (args.num, *data.data_shape), steps, generator=gen, **kw
                )
            sample_s = time.perf_counter() - t1
            x = res.x.to(torch.float64)
            raw = x if res.unprojected is None else res.unprojected.to(torch.float64)
            # blown is judged before any x0_range projection (which would hide it by
            # construction); the ratio is that of the returned samples of the others
            ok = torch.isfinite(raw).all(1) & (raw.abs() <= args.bound).all(1)
            blown = int((~ok).sum())
            if int(ok.sum()) < 2:
                metrics = {"sliced_w2": {"ratio": None}}
            else:
                metrics = evaluate_toy(
                    x[ok],
                    lambda n, s: data.held_out(n, seed=s),  # noqa: B023
                    n=args.num,
                    centers=centers,
                    seed=args.seed,
                    exact_w2_max_n=0,
                )
            row = {
                "config": config_name,
                "variant": name,
                "overrides": overrides + args.set,
                "budget": budget,
                "train_steps": train_steps,
                "seed": args.seed,
                "train_seconds": round(train_s, 1),
                "sampler": sampler,
                "steps": steps,
                "grid": grid or "default",
                "final": final,
                "noise_floor": (
                    default_noise_floor(steps) if final == "denoise" and floor is None else floor
                ),
                "jump_t": float(res.times[-2]) if final == "denoise" else None,
                "projected": res.projected,
                "nfe": res.nfe,
                "blown": blown,
                "x0_guard": args.x0_guard,
                "guarded": res.guarded,
                "guarded_far": res.guarded_far,
                "sliced_w2_ratio": metrics["sliced_w2"]["ratio"],
                "mode_sw2_ratio": (metrics.get("mode_sliced_w2") or {}).get("ratio"),
                "max_abs": float(raw[torch.isfinite(raw).all(1)].abs().max()) if blown else None,
                "sample_seconds": round(sample_s, 2),
            }
            results.append(row)
            print(
                f"{name:>12} {sampler:>12}@{steps:<4}{grid or '':>9} {final:>9} "
                f"{'' if row['noise_floor'] is None else row['noise_floor']:<6} nfe={res.nfe:<5} "
                f"blown={blown:<5} "
                f"{'' if res.guarded is None else f'guarded={res.guarded}/{res.guarded_far} '}"
                f"sw2={row['sliced_w2_ratio'] or math.nan:.3f} "
                f"mode={row['mode_sw2_ratio'] or math.nan:.3f}",
                flush=True,
            )
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
