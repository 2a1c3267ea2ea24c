"""The `phasediff` command line: a thin shell over the Python API (SPEC §7).

Errors from bad input are printed as one sentence and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="phasediff",
    help="Exact phase-space diffusion models: VP/VE, CLD, PSLD, HOLD, critical(k), HGF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
analyze_app = typer.Typer(
    help="Analyses of the forward processes (no training needed).", no_args_is_help=True
)
app.add_typer(analyze_app, name="analyze")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@analyze_app.command("mixing")
def analyze_mixing(
    data_var: Annotated[
        float,
        typer.Option(help="Variance per coordinate of the Gaussian data N(0, V); must be > 0."),
    ] = 0.25,
    eps: Annotated[
        float, typer.Option(help="KL threshold (nats per dimension) for the time-to-ε column.")
    ] = 1e-3,
    point_mass: Annotated[
        float, typer.Option(help="Location x₀ of the point-mass data used in the second column.")
    ] = 1.0,
    out: Annotated[
        Path, typer.Option(help="Where to write the KL-vs-noise-budget plot (PNG).")
    ] = Path("mixing.png"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the table as JSON to this path.")
    ] = None,
) -> None:
    """Compare how fast each preset forgets its data, at its own schedule and at an equal
    noise budget: spectral gap, exact KL and W2 to the prior for Gaussian data and a point
    mass, and the budget/time to reach KL < EPS. See docs/processes.md for the definitions."""
    from phasediff.analysis.mixing import default_processes, format_table, mixing_table, plot_mixing

    try:
        rows = mixing_table(data_var=data_var, point_mass=point_mass, eps=eps)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(format_table(rows, eps))
    try:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        plot_mixing(
            default_processes(), str(out), data_var=data_var, point_mass=point_mass, eps=eps
        )
        if json_out is not None:
            json_out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    except OSError as exc:
        _fail(f"cannot write output ({exc.strerror}: {exc.filename}); choose a writable --out.")
    typer.echo(f"wrote {out}")


@app.command("train")
def train_command(
    config: Annotated[
        Path, typer.Argument(help="Experiment TOML file, e.g. configs/toy_hold.toml.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Run directory: checkpoints/, metrics.csv, tb/ (TensorBoard), config.json.",
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config key, TOML syntax: --set train.steps=2000 "
            "--set process.params.beta=8.0 (repeatable).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run in --out from its newest valid checkpoint."
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the tqdm progress bar.")
    ] = True,
) -> None:
    """Train a score model. Config sections: process (preset, params), data (name, n_train),
    model (kind mlp|unet, width, parameterization eps|score), objective (name hsm|dsm,
    weighting eps|score|likelihood|cld) and train (steps, batch_size, lr, warmup, grad_clip,
    ema_decay, log_every, ckpt_every, keep_last, sample_every, threads, device, tensorboard).
    See docs/training.md."""
    from phasediff.training import load_config, train
    from phasediff.training.trainer import NonFiniteLossError

    try:
        cfg = load_config(config, set_ or [])
        summary = train(cfg, out, resume=resume, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(summary))


@app.command("sample")
def sample_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Run directory (newest valid checkpoint) or checkpoint JSON.")
    ],
    sampler: Annotated[
        str,
        typer.Option(help="em, euler, heun, dopri5, lie_trotter or strang."),
    ] = "lie_trotter",
    steps: Annotated[int, typer.Option(help="Number of sampler steps (≥ 1).")] = 50,
    num: Annotated[int, typer.Option(help="Number of samples (≥ 1).")] = 2000,
    out: Annotated[
        Path, typer.Option(help="Output .npz (x, nfe[, trajectory, times]); a PNG goes beside it.")
    ] = Path("samples.npz"),
    seed: Annotated[int, typer.Option(help="Seed of the sampler's generator.")] = 0,
    grid: Annotated[str, typer.Option(help="Time grid: uniform, quadratic or edm.")] = "uniform",
    trajectory: Annotated[
        bool, typer.Option("--trajectory", help="Also store the whole trajectory (steps+1 states).")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA weights.")] = True,
) -> None:
    """Sample a trained model with any sampler; NFE is counted, not inferred."""
    import numpy as np
    import torch

    from phasediff.samplers import get_sampler
    from phasediff.training import load_trained
    from phasediff.training.plots import save_samples

    try:
        fn = get_sampler(sampler)
        if steps < 1 or num < 1:
            raise ValueError(f"--steps and --num must be ≥ 1, got steps={steps}, num={num}.")
        if out.suffix != ".npz":
            raise ValueError(f"--out must end in .npz, got {str(out)!r}.")
        model, process, _, data = load_trained(checkpoint, ema=ema)
        gen = torch.Generator().manual_seed(seed)
        res = fn(
            model,
            process,
            (num, *data.data_shape),
            steps,
            grid=grid,
            generator=gen,
            return_trajectory=trajectory,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"x": res.x.numpy(), "nfe": np.array(res.nfe), "times": res.times.numpy()}
        if trajectory:
            arrays["trajectory"] = torch.stack(res.trajectory).numpy()
        np.savez(out, **arrays)
        save_samples(
            res.x,
            out.with_suffix(".png"),
            reference=data.held_out(min(num, 5000)) if data.kind == "vector" else None,
            title=f"{sampler} {steps} steps",
        )
    except ValueError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write output ({exc.strerror}: {exc.filename}); choose a writable --out.")
    typer.echo(json.dumps({"out": str(out), "nfe": res.nfe, "num": num}))


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo"),
    steps: Annotated[int, typer.Option(help="Training steps for toy_hold (≥ 1).")] = 60_000,
    sampler_steps: Annotated[int, typer.Option(help="Lie–Trotter steps.")] = 50,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train HOLD on the multi-Swiss-roll, sample with Lie–Trotter, write demo/samples.png,
    demo/trajectories.png and demo/metrics.json (distances with their noise floors, NFE)."""
    from phasediff.demo import run_demo

    try:
        if steps < 1 or sampler_steps < 1:
            raise ValueError("--steps and --sampler-steps must be ≥ 1.")
        report = run_demo(out, steps=steps, sampler_steps=sampler_steps, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({k: report[k] for k in ("nfe", "train_seconds", "sample_seconds")}))
    typer.echo(f"wrote {out}/samples.png, {out}/trajectories.png, {out}/metrics.json")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ValueError as exc:  # a last guard: bad input never shows a traceback
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
