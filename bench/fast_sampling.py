"""Quality vs NFE of every score sampler on trained toy runs (issue "fast sampling").

    python bench/fast_sampling.py runs/toy_hold runs/toy_cld runs/toy_vp [--num 5000]
    python bench/fast_sampling.py --render-only bench/results/fast_sampling.json

Each run is sampled with em, lie_trotter, strang, heun, ei, ei1, eic and ei1c at 5 / 10 / 20 /
50 NFE (heun: 2 NFE per step, the measured NFE is reported) and with em at 1000 steps as the
reference; every number is a ratio to the noise floor (the same distance between two fresh
data sets of the same size; `phasediff.bench.toy_metrics`, the scoring of `phasediff bench
toy`): plain sliced W2 and the mode-resolved sliced W2 of the multi-Swiss-roll. One seed (0),
1 torch thread. The table is written into docs/benchmarks.md between
`<!-- bench:fast-sampling -->` markers (`phasediff.bench.write_block`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SAMPLER_NAMES = ("em", "lie_trotter", "strang", "heun", "ei", "ei1", "eic", "ei1c")
NFES = (5, 10, 20, 50)


def measure(runs: list[str], num: int) -> list[list]:
    """Rows [run, sampler, nfe, metric 1, metric 2]: toys — plain and mode-resolved sliced-W2
    ratios; digits — the digits Fréchet distance ratio and None."""
    from phasediff.samplers import SAMPLERS
    from phasediff.samplers.registry import steps_for_nfe
    from phasediff.training import load_trained

    rows = []
    for run in runs:
        model, process, _, data = load_trained(run)
        if data.kind == "image":  # digits: Fréchet distance in the digits classifier's features
            from phasediff.data.digits import N_TEST
            from phasediff.evaluation.fid import digits_features, fd_with_floor

            held = digits_features(data.held_out(N_TEST, seed=1))

            def score(x: torch.Tensor) -> tuple[float, None]:
                return fd_with_floor(digits_features(x), held)["ratio"], None  # noqa: B023

        else:

            def score(x: torch.Tensor) -> tuple[float, float]:
                return _toy_score(x, data)  # noqa: B023

        plan = [(name, nfe) for name in SAMPLER_NAMES for nfe in NFES] + [("em", 1000)]
        for name, nfe in plan:
            steps = steps_for_nfe(name, nfe)  # heun: 2·steps − 1 ≤ nfe
            gen = torch.Generator().manual_seed(0)
            out = SAMPLERS[name](model, process, (num, *data.data_shape), steps, generator=gen)
            rows.append([run, name, out.nfe, *score(out.x)])
            print(*rows[-1], flush=True)
    return rows


def _toy_score(x: torch.Tensor, data) -> tuple[float, float]:
    """Plain and mode-resolved sliced-W2 ratios (``phasediff bench``'s toy scoring, seed 0,
    against as many held-out points as there are samples)."""
    from phasediff.bench import toy_metrics

    m = toy_metrics(x, data, 0)
    return m["sliced_w2"]["ratio"], m["mode_sliced_w2"]["ratio"]


def render_digits(rows: list[list]) -> str:
    """The `fast-sampling-digits` block (without its markers): one Fréchet-distance ratio per
    cell."""
    lines = [
        "## Quality vs NFE on the trained digits models (`bench/fast_sampling.py`)",
        "",
        "`python bench/fast_sampling.py runs/digits_hold runs/digits_vp --num 1000 --json",
        "bench/results/fast_sampling_digits.json --block fast-sampling-digits` (U-Nets trained",
        "6000 steps from configs/digits_{hold,vp}.toml, seed 0; 1000 samples, one seed). Each",
        "cell: digits Fréchet distance / its noise floor (held-out half vs held-out half,",
        "`fd_with_floor`; ≈ 0.8–0.9 is what real training digits score, docs/benchmarks.md",
        "digits block). `diverged`: ratio > 1000.",
        "",
    ]
    lines += _tables(rows)
    lines += [
        "Findings (one seed; the metric saturates near 0.85): on digits_hold `ei1c` is the only",
        "sampler usable at 10 NFE (1.37; Strang 5.5, Lie–Trotter 11, every other",
        "deterministic sampler ≥ 13) and reaches the 1000-step EM reference within 10 % at",
        "20 NFE (1.01 vs 0.91; `eic` 1.04, Lie–Trotter 1.22, Strang 1.42, `ei` 1.65). PF-ODE",
        "Heun fails on HOLD at every budget. On digits_vp Heun and `eic` are best at 10 NFE",
        "(0.91, 0.97). HOLD still trails VP at ≤ 10 NFE.",
    ]
    return "\n".join(lines)


def fmt(v: float) -> str:
    return "diverged" if not v < 1e3 else f"{v:.2f}"


def _cell(row: list) -> str:
    """One metric (digits) or "plain / mode-resolved" (toys)."""
    return fmt(row[3]) if row[4] is None else f"{fmt(row[3])} / {fmt(row[4])}"


def _tables(rows: list[list]) -> list[str]:
    """One table per run: every sampler at ~5/10/20/50 NFE, headed by the em@1000 reference."""
    lines = []
    for run in dict.fromkeys(r[0] for r in rows):
        sub = [r for r in rows if r[0] == run]
        ref = next(r for r in sub if r[1] == "em" and r[2] == 1000)
        lines += [
            f"**{Path(run).name}** — reference em, 1000 NFE: {_cell(ref)}",
            "",
            "| sampler | ~5 NFE | ~10 NFE | ~20 NFE | ~50 NFE |",
            "|---|---|---|---|---|",
        ]
        for name in SAMPLER_NAMES:
            cells = [_cell(r) for r in sub if r[1] == name and r[2] < 1000]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render(rows: list[list]) -> str:
    """The `fast-sampling` block (without its markers): plain / mode-resolved ratios."""
    lines = [
        "## Quality vs NFE on the trained toy models (`bench/fast_sampling.py`)",
        "",
        "`python bench/fast_sampling.py runs/toy_hold runs/toy_cld runs/toy_vp` (toy_hold and",
        "toy_cld trained 60k steps, toy_vp 20k, configs/toy_*.toml, seed 0; 5000 samples, one",
        "seed). Each cell: plain sliced-W2 ratio / mode-resolved sliced-W2 ratio to the noise",
        "floor (1 = indistinguishable from fresh data at this n). `diverged`: ratio > 1000.",
        "",
    ]
    lines += _tables(rows)
    lines += [
        "Findings (these numbers, one seed): at ~20 NFE the exponential integrators are the",
        "best samplers on all three models (mode-resolved ratio 1.4–3.2 against 4.0–10.2 for",
        "Lie–Trotter, Strang and EM). **On toy_hold, `ei1c` (order 1 + the implicit corrector)",
        "at 20 NFE reaches 1.46 / 1.44 against em at 1000 NFE 1.25 / 1.40: 17 % short on plain",
        "sliced W2 and 3 % on the mode-resolved distance**; plain `ei` gave 1.38 / 2.65 (10 % and",
        "1.9× short). On toy_cld `ei1c` at 20 NFE (1.06 / 1.87) matches em at 1000 (1.02 /",
        "1.70) within 4 % / 10 %. The order-2 `eic`, the most accurate with the exact score",
        "(docs/samplers.md), is unstable on the trained HOLD model at 20 NFE (132): its",
        "extrapolation weights amplify network error, which order 1 + corrector does not. At",
        "≤ 10 NFE every deterministic sampler, and EM, diverges on the k ≥ 2 models (`ei1c`",
        "stays finite on HOLD, 13.6 / 18.4) — network error is amplified by the large gains of",
        "the noisy blocks near t_min — while the splitting samplers stay finite but poor; for",
        "VP, `ei` at 10 NFE is already at 1.72 / 2.87.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--render-only", type=Path)
    parser.add_argument("--json", type=Path, default=Path("runs/fast_sampling.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--block",
        default="fast-sampling",
        choices=("fast-sampling", "fast-sampling-digits"),
        help="the docs block to write: toy runs or digits runs",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.render_only:
        rows = json.loads(args.render_only.read_text())
    else:
        rows = measure(args.runs, args.num)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows))
    from phasediff.bench import write_block

    text = render_digits(rows) if args.block == "fast-sampling-digits" else render(rows)
    write_block(args.out, args.block, text)


if __name__ == "__main__":
    main()
