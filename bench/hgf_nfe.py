"""Quality vs NFE: Oscillation HGF vs VP probability-flow ODE vs flow matching on a 2-D toy.

Trains three models with the same network (TimeMLP), data, batch, steps and seed through the
ordinary Trainer — `ohgf` and `rectified_flow` (flow matching) with the velocity objective,
`vp` with hybrid score matching (ε-prediction) — then samples each with Euler and Heun at a
range of NFE budgets and prints a Markdown table of sliced W2 to held-out data, next to the
data-vs-data noise floor. Steps per budget come from the sampler registry
(`steps_for_nfe`: the most steps within the budget, so Heun runs 2·steps − 1 ≤ NFE; the
tables in docs/hgf.md were made with ⌈(NFE + 1)/2⌉ Heun steps, one NFE over an even budget,
and their cells give the measured NFE). Usage (the tables came from the default arguments):

    .venv/bin/python bench/hgf_nfe.py --steps 6000 --out /tmp/hgf_nfe
    .venv/bin/python bench/hgf_nfe.py --data digits --steps 3000 --num 1000   # U-Nets, digits FD
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from phasediff.bench import machine, steps_for_nfe
from phasediff.data import get_data
from phasediff.data.digits import N_TEST
from phasediff.evaluation import sliced_w2
from phasediff.evaluation.fid import digits_features, fd_with_floor
from phasediff.samplers import SAMPLERS
from phasediff.training import Trainer, load_config


def models(rms: float, images: bool) -> dict[str, tuple[str, list[str]]]:
    """name → (config, overrides); every model shares data, network and optimiser settings.
    `rms` is the data's root-mean-square per coordinate (Oscillation HGF's scale)."""
    ohgf, vp = (
        ("configs/digits_ohgf.toml", "configs/digits_vp.toml")
        if images
        else (
            "configs/toy_ohgf.toml",
            "configs/toy_vp.toml",
        )
    )
    out = {
        "Oscillation HGF, data_std = RMS, x̂₀ network": (
            ohgf,
            [
                f"process.params={{ alpha = 1.0, data_std = {rms:.6g} }}",
                "model.parameterization='x0'",
            ],
        ),
        "Oscillation HGF, data_std = RMS, velocity network": (
            ohgf,
            [f"process.params={{ alpha = 1.0, data_std = {rms:.6g} }}"],
        ),
    }
    if not images:
        out["Oscillation HGF, data_std = RMS/2, velocity network"] = (
            ohgf,
            [f"process.params={{ alpha = 1.0, data_std = {rms / 2:.6g} }}"],
        )
    out["flow matching (rectified_flow), velocity network"] = (
        ohgf,
        ["process.preset='rectified_flow'", "process.params={}"],
    )
    out["VP (PF-ODE, hsm/ε)"] = (vp, [])
    return out


SAMPLER_PAIRS = {
    # model kind → {label: (sampler, grid)}
    "velocity": {
        "Euler": ("hgf_euler", "uniform"),
        "Heun": ("hgf_heun", "uniform"),
        "Heun, quadratic grid": ("hgf_heun", "quadratic"),
        "EI order 2 (hgf_ei), quadratic grid": ("hgf_ei", "quadratic"),
    },
    "eps": {
        "Euler": ("euler", "uniform"),
        "Heun": ("heun", "uniform"),
        "Euler, EDM grid": ("euler", "edm"),
        "Heun, EDM grid": ("heun", "edm"),
        "EI order 2 (ei), optimal grid": ("ei", "optimal"),
    },
}
BUDGETS = (4, 8, 16, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6000, help="training steps per model")
    ap.add_argument("--data", default="8gaussians", help="2-D toy dataset, or digits")
    ap.add_argument("--num", type=int, default=5000, help="samples per evaluation")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: temp)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="hgf_nfe_"))
    images = args.data == "digits"
    common = [
        f"train.steps={args.steps}",
        "train.ckpt_every=100000",
        "train.tensorboard=false",
        f"train.threads={args.threads}",
        f"train.ema_decay={args.ema}",
    ]
    if not images:
        common += [
            f"data.name='{args.data}'",
            "train.batch_size=512",
            "train.lr=2e-3",
            "model.hidden=128",
            "model.depth=4",
        ]
    data0 = get_data(args.data, n_train=50_000, seed=0)
    rms = float(data0.data.pow(2).mean().sqrt())
    if images:  # digits: Fréchet distance in the digits classifier's features, with floor
        held = digits_features(data0.held_out(N_TEST, seed=1))  # the whole held-out split

        def score(x: torch.Tensor) -> float:
            return fd_with_floor(digits_features(x), held)["ratio"]

        floor_note = (
            "Cells: digits Fréchet distance / its noise floor (held-out half vs held-out half, "
            "`fd_with_floor`; 1 = indistinguishable from real digits at this sample size)"
        )
    else:
        ref = data0.held_out(args.num, seed=1)
        # data-vs-data SW2 of equal-size sets fluctuates a lot: report mean ± std of 8
        floors = torch.tensor(
            [sliced_w2(data0.held_out(args.num, seed=s), ref) for s in range(2, 10)]
        )

        def score(x: torch.Tensor) -> float:
            return sliced_w2(x, ref)

        floor_note = (
            f"Noise floor (8 other held-out sets vs the same reference): SW2 = "
            f"{floors.mean():.3f} ± {floors.std():.3f} (min {floors.min():.3f}). Cells: sliced W2"
        )
    rows: list[str] = []
    t_all = time.perf_counter()
    for i, (label, (path, extra)) in enumerate(models(rms, images).items()):
        cfg = load_config(path, [*common, *extra])
        run = root / f"{i}_{cfg.process.preset}"
        t0 = time.perf_counter()
        trainer = Trainer(cfg, run, progress=False)
        trainer.fit()
        train_s = time.perf_counter() - t0
        model, process = trainer.ema_model(), trainer.process
        shape = (args.num, *trainer.data.data_shape)
        kind = getattr(model, "parameterization", "eps")
        kind = "velocity" if kind == "velocity" else "eps"
        for s_label, (name, grid) in SAMPLER_PAIRS[kind].items():
            cells = []
            for nfe in BUDGETS:
                steps = steps_for_nfe(name, nfe)  # heun: 2·steps − 1 ≤ nfe
                gen = torch.Generator().manual_seed(0)
                out = SAMPLERS[name](model, process, shape, steps, grid=grid, generator=gen)
                cells.append(f"{score(out.x):.3f} ({out.nfe})")
            dopri = ""
            if s_label == "Euler":
                out = SAMPLERS["hgf_dopri5" if kind == "velocity" else "dopri5"](
                    model, process, shape, 2, generator=torch.Generator().manual_seed(0)
                )
                dopri = f"{score(out.x):.3f} ({out.nfe})"
            rows.append(f"| {label} | {s_label} | " + " | ".join(cells) + f" | {dopri} |")
        print(f"trained {label} in {train_s:.0f} s", file=sys.stderr, flush=True)
    head = " | ".join(f"NFE≈{n}" for n in BUDGETS)
    net = "U-Net (configs/digits_*.toml)" if images else "4×128 TimeMLP, batch 512, lr 2e-3"
    print(
        f"Data: {args.data} (RMS per coordinate {rms:.3f}); {args.num} samples per cell. "
        f"Training: {args.steps} steps, {net}, EMA {args.ema}, seed 0 for every model."
    )
    print(f"{floor_note} (measured NFE).\n")
    print(f"| model | sampler | {head} | dopri5 (rtol = atol = 1e-5) |")
    print("|---|---|" + "---|" * (len(BUDGETS) + 1))
    print("\n".join(rows))
    cmd = f"--steps {args.steps} --data {args.data} --num {args.num} --ema {args.ema}"
    print(f"\nCommand: `.venv/bin/python bench/hgf_nfe.py {cmd}`; ", end="")
    print(f"{time.perf_counter() - t_all:.0f} s in all. Machine: {machine()}.")


if __name__ == "__main__":
    main()
