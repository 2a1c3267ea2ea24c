"""`make bench`: speed measurements written to docs/benchmarks.md (ratios from one run).

Timings are medians over repeats after a warm-up, all in one process on one machine, so the
ratios are comparable; absolute numbers depend on the machine (recorded in the output).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from phasediff import processes as P
from phasediff.bench import (
    format_overhead_table,
    keep_bench_blocks,
    machine,
    sampler_overhead_rows,
)
from phasediff.processes.kernels import van_loan


def median_ms(fns: dict[str, Callable[[], object]], repeats: int = 60) -> dict[str, float]:
    """Median wall time of each function in ms, measured round-robin (interleaved) so that
    machine noise affects every contender alike and the ratios stay meaningful."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def bench_sample_marginal() -> list[str]:
    """z_t for HOLD (k = 3) and critical(5) vs VP (k = 1) on the same data and times."""
    shapes = {
        "2-D toy, batch 4096": (4096, 2),
        "digits 8×8, batch 512": (512, 1, 8, 8),
        "CIFAR 3×32×32, batch 128": (128, 3, 32, 32),
    }
    procs = {"vp (k=1)": P.vp(), "hold (k=3)": P.hold(), "critical(5) (k=5)": P.critical(5)}
    gen = torch.Generator().manual_seed(0)
    lines = [
        "| data | process | ms / call | ratio to VP | ratio to VP per block (÷k) |",
        "|---|---|---|---|---|",
    ]
    for label, shape in shapes.items():
        x0 = torch.randn(shape, generator=gen)
        fns = {}
        for name, p in procs.items():
            t = p.t_min + (p.T - p.t_min) * torch.rand(shape[0], generator=gen, dtype=torch.float64)
            fns[name] = lambda p=p, t=t, x0=x0: p.sample_marginal(x0, t, generator=gen)
        ms = median_ms(fns)
        base = ms["vp (k=1)"]
        for name, p in procs.items():
            lines.append(
                f"| {label} | {name} | {ms[name]:.3f} | {ms[name] / base:.2f}× "
                f"| {ms[name] / base / p.k:.2f}× |"
            )
    return lines


def bench_kernel() -> list[str]:
    """Our (E, N) by Taylor + doubling vs torch.linalg.matrix_exp of Van Loan's block."""
    lines = [
        "| process | batch of t | LinearFlow ms | Van Loan matrix_exp ms | speed-up |",
        "|---|---|---|---|---|",
    ]
    for name in ("vp", "cld", "hold"):
        p = P.get_process(name)
        for n in (128, 4096):
            t = torch.linspace(p.t_min, p.T, n, dtype=torch.float64)
            b = p.beta_integral(t)
            ms = median_ms(
                {"ours": lambda p=p, b=b: p._flow(b), "ref": lambda p=p, b=b: van_loan(p.A, p.D, b)}
            )
            ours, ref = ms["ours"], ms["ref"]
            lines.append(f"| {name} | {n} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f}× |")
    return lines


def bench_training() -> list[str]:
    """Trainer step vs a bare PyTorch loop, toy_hold vs toy_vp, batch 512 vs 1024, and the
    step as it was before the marginal memo and fused AdamW, per step (ms)."""
    import tempfile

    from phasediff.objectives import hybrid_score_matching
    from phasediff.training import Trainer, load_config

    common = ["train.tensorboard=false", "train.log_every=1000000", "data.n_train=50000"]
    contenders = {
        "toy_vp": ("toy_vp", 512),
        "toy_hold": ("toy_hold", 512),
        "before": ("toy_hold", 512),
        "toy_hold_1024": ("toy_hold", 1024),
    }
    trainers = {}
    for label, (name, batch) in contenders.items():
        cfg = load_config(f"configs/{name}.toml", [*common, f"train.batch_size={batch}"])
        trainers[label] = Trainer(cfg, tempfile.mkdtemp(prefix="bench_"), progress=False)

    # the step before this change: every marginal recomputed, foreach AdamW
    before = trainers["before"]
    plain_marginal = before.process.marginal

    def marginal_without_memo(t):
        before.process._marginal_memo = None
        return plain_marginal(t)

    before.process.marginal = marginal_without_memo
    before.optimizer = torch.optim.AdamW(
        before.params, lr=before.config.train.lr, betas=before.config.train.betas, foreach=True
    )

    hold = trainers["toy_hold"]
    bare_model = copy.deepcopy(hold.model)
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(0)

    def bare_step() -> float:
        x0 = hold.data.batch(512, gen)
        loss = hybrid_score_matching(bare_model, hold.process, x0, gen)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()
        return float(loss.detach())

    block = 25

    def chunk(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(block):
                fn()

        return run

    ms = median_ms(
        {"bare": chunk(bare_step), **{k: chunk(t.train_step) for k, t in trainers.items()}},
        repeats=12,
    )
    per = {k: v / block for k, v in ms.items()}
    return [
        "| measurement | ms / step | ratio |",
        "|---|---|---|",
        f"| bare PyTorch loop (toy_hold: same data, HSM loss, backward, AdamW) | "
        f"{per['bare']:.3f} | 1.00× |",
        f"| `Trainer.train_step` toy_hold (+ warm-up lr, grad clip, EMA, NaN check) | "
        f"{per['toy_hold']:.3f} | {per['toy_hold'] / per['bare']:.2f}× of bare |",
        f"| `Trainer.train_step` toy_vp (same 4×128 MLP) | {per['toy_vp']:.3f} | "
        f"toy_hold / toy_vp = {per['toy_hold'] / per['toy_vp']:.2f}× |",
        f"| toy_hold as before the marginal memo and fused AdamW | {per['before']:.3f} | "
        f"toy_hold / before = {per['toy_hold'] / per['before']:.2f}× |",
        f"| `Trainer.train_step` toy_hold, batch 1024 (the demo's) | "
        f"{per['toy_hold_1024']:.3f} | "
        f"{per['toy_hold_1024'] / per['toy_hold']:.2f}× of batch 512 |",
    ]


def bench_sampler_overhead() -> list[str]:
    """Time outside the network ÷ time inside it, digits U-Net, batch 128, 20 steps
    (`phasediff.bench.sampler_overhead_rows`, also `phasediff bench
    samplers-overhead`)."""
    return format_overhead_table(sampler_overhead_rows())


def bench_mild() -> list[str]:
    from phasediff.samplers.langevin import format_table, mild_vs_ald_table

    return format_table(mild_vs_ald_table()).splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CI has 2 cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sections = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python bench/run.py --out docs/benchmarks.md`); every "
        "ratio below comes from one run on one machine. Re-run it after touching a hot path.",
        "",
        "The harness is the package `phasediff/bench/`: one `Suite` object per `phasediff "
        "bench SUITE` (toy, digits, mixing, samplers-overhead, mild) in its registry, with "
        "training reuse, scoring, Markdown blocks, rendering and plots in their own modules. "
        "Each block between `<!-- bench:NAME -->` markers below is written by `phasediff bench "
        "NAME` or by "
        "a bench/ script through the same package (`phasediff.bench.write_block`), and `make "
        "bench` keeps those blocks when it regenerates the rest of this file.",
        "",
        f"Machine: {machine()}.",
        "",
        "## Exact sampling of z_t | x₀ (`LinearProcess.sample_marginal`)",
        "",
        "One call draws ε ~ N(0, I) of shape (batch, k, *data) and forms z_t = m_t + (L_t ⊗ I)ε",
        "with the k×k kernel computed for every batch element's own t. The last column divides",
        "by k: the engine's cost per phase-space block relative to VP's single block.",
        "",
        *bench_sample_marginal(),
        "",
        "## k×k kernel computation",
        "",
        "`LinearFlow` (per process: Taylor coefficients and an exact table of (E, N) on a grid of",
        "step Δ, ‖A‖Δ ≤ 2; per call: Taylor series at the remainder and one semigroup step)",
        "against the textbook route, `torch.linalg.matrix_exp` of the 2k×2k Van Loan block.",
        "",
        *bench_kernel(),
        "",
        "## Training step (4×128 MLP, batch 512, multi-Swiss-roll)",
        "",
        "Blocks of 25 steps, interleaved between contenders, median over 12 blocks. The bare",
        "loop is the minimum any trainer must do; the Trainer adds the warm-up learning rate,",
        "gradient clipping (which also yields the logged gradient norm), the EMA update and the",
        "non-finite check. toy_hold vs toy_vp isolates the cost of k = 3 over k = 1. The",
        "shipped recipe (preconditioned model, EDM time density) computes the k×k marginal of",
        "the batch's times for the noise and for the model's coefficients; `before` recomputes",
        "it the second time (no `LinearProcess.marginal` memo) and steps a foreach AdamW, as",
        "the trainer did before the fused one.",
        "",
        *bench_training(),
        "",
        "## Sampler overhead (digits U-Net, HOLD, batch 128, 20 steps)",
        "",
        "Wall time of the whole sampler call against the time spent inside the network.",
        "",
        *bench_sampler_overhead(),
        "",
        "## MILD vs annealed Langevin (exact Gaussian score, VE noise)",
        "",
        "s² = 0.25, σ 50 → 0.01, L = 100 levels, ε = 2e-5, γ = 0.9, final denoising, 2·10⁵",
        "chains; `exact` is the variance computed in closed form for the linear recursion",
        "(docs/mild.md). MILD as specified in docs/design.md §4 settles at ≈ (1 − γ)s², so it is",
        "*less* accurate than ALD for T ≥ 2.",
        "",
        *bench_mild(),
        "",
    ]
    # keep the <!-- bench:SUITE --> blocks written by `phasediff bench` (re-appended at the end)
    old = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(keep_bench_blocks(old, "\n".join(sections)))
    print("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
