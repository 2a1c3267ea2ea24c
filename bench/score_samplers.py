"""Score one trained toy run with several samplers and their options (issue "model quality").

    python bench/score_samplers.py RUN ei1c:20 'ei:20:{"grid": "edm"}' em:1000 --seed 1

Each spec is `name:steps` or `name:steps:JSON` (keyword options of the registry call). Every
draw uses the defaults of `TrainedRun.sample` for a score model: the denoising last step with
the run's data box and the x̂₀ guard. `--seed S` seeds both the sample draw and the
evaluation's held-out reference (evaluate_toy's `seed`); `--repeats R` averages the distances
over R references (docs/evaluation.md, "How noisy is one ratio"). One line per spec; `--out`
appends JSON rows. bench/results/best_sampler_20nfe_thin_300k.json was made this way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def draw_and_score(
    model,
    process,
    data,
    box,
    sampler: str,
    steps: int,
    *,
    seed: int,
    num: int,
    repeats: int = 1,
    **options,
):
    """(Samples, evaluate_toy report) of one draw under the trained-run defaults: denoising
    last step on the data box `box`, x̂₀ guard; `seed` seeds the draw and the reference."""
    from phasediff.evaluation import evaluate_toy
    from phasediff.samplers import SAMPLERS

    res = SAMPLERS[sampler](
        model,
        process,
        (num, *data.data_shape),
        steps,
        generator=torch.Generator().manual_seed(seed),
        final="denoise",
        x0_range=(box.low, box.high),
        x0_guard=True,
        **options,
    )
    metrics = evaluate_toy(
        res.x.to(torch.float64),
        lambda n, s: data.held_out(n, seed=s),
        n=num,
        centers=data.mode_centers,
        seed=seed,
        exact_w2_max_n=0,
        repeats=repeats,
    )
    return res, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory or checkpoint .json")
    parser.add_argument("spec", nargs="+", help="name:steps[:JSON options]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from phasediff.data.sanity import run_data_range
    from phasediff.training import load_trained

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run_dir = run.parent.parent if run.is_file() else run  # a checkpoint: its run
    model, process, _, data = load_trained(run)
    box, _ = run_data_range(run_dir, data.data)
    rows = []
    for spec in args.spec:
        name, steps, *options = spec.split(":", 2)
        kw = json.loads(options[0]) if options else {}
        t0 = time.perf_counter()
        res, m = draw_and_score(
            model,
            process,
            data,
            box,
            name,
            int(steps),
            seed=args.seed,
            num=args.num,
            repeats=args.repeats,
            **kw,
        )
        row = {
            "run": str(run),
            "sampler": name,
            "steps": int(steps),
            "options": kw,
            "nfe": res.nfe,
            "sample_seed": args.seed,
            "repeats": args.repeats,
            "mode_sw2_ratio": m["mode_sliced_w2"]["ratio"],
            "sliced_w2_ratio": m["sliced_w2"]["ratio"],
            "guarded": res.guarded,
            "guarded_far": res.guarded_far,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(
            f"{run.name} {name}@{steps} {kw} nfe={res.nfe} mode={row['mode_sw2_ratio']:.3f} "
            f"sw2={row['sliced_w2_ratio']:.3f} guarded={res.guarded}/{res.guarded_far}",
            flush=True,
        )
    if args.out:
        out = Path(args.out)
        old = json.loads(out.read_text()) if out.exists() else []
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(old + rows, indent=1))


if __name__ == "__main__":
    main()
