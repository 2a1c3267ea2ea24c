"""The `phasediff` command line: a thin shell over the Python API (docs/design.md §7).

Errors from bad input are printed as one sentence and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from phasediff.samplers.grids import GRIDS
from phasediff.samplers.langevin import LANGEVIN_SAMPLERS
from phasediff.samplers.registry import get_entry, grid_help, sampler_help

INPAINT_DEFAULT = "lie_trotter"
"""Sampler of `phasediff sample --inpaint` when none is named and the recommended one (ei1c)
cannot continue from the state its callback pinned (docs/images.md)."""

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


def _os_error(exc: OSError) -> str:
    """One sentence for an OSError: "<reason>: '<file>'." (or its own sentence)."""
    if exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {str(exc.filename)!r}."
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".") + "."


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
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset",
            help="A preset row to show (repeatable): vp, subvp, ve, cld, psld, hold, "
            "critical4, critical5, hamiltonian. Default: all of them.",
        ),
    ] = None,
    process: Annotated[
        list[Path] | None,
        typer.Option(
            "--process",
            help="An experiment TOML file (repeatable) whose [process] gets a row next to the "
            "presets, labelled by the config's name; e.g. configs/toy_recipe.toml.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where to write the KL-vs-noise-budget plot (PNG).")
    ] = Path("mixing.png"),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the table as JSON to this path.")
    ] = None,
) -> None:
    """Compare how fast each preset, and any process of a config (--process), forgets its
    data, at its own schedule and at an equal noise budget: spectral gap, exact KL and W2 to
    the prior for Gaussian data and a point mass, and the budget/time to reach KL < EPS. See
    docs/processes.md for the definitions and docs/design-your-own-process.md for a designed
    process."""
    from phasediff.analysis.mixing import format_table, mixing_table, plot_mixing

    for name, path in (("--out", out), ("--json", json_out)):
        if path is not None and path.is_dir():
            _fail(f"{name} {str(path)!r} is a directory; pass a file path.")
    try:
        processes = _mixing_processes(preset or [], process or [])
        rows = mixing_table(processes, data_var=data_var, point_mass=point_mass, eps=eps)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(format_table(rows, eps))
    try:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        plot_mixing(processes, str(out), data_var=data_var, point_mass=point_mass, eps=eps)
        if json_out is not None:
            json_out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    except OSError as exc:
        _fail(f"cannot write output ({exc.strerror}: {exc.filename}); choose a writable --out.")
    typer.echo(f"wrote {out}")


def _mixing_processes(presets: list[str], configs: list[Path]) -> list:
    """The rows of `analyze mixing`: the preset rows named by --preset (all when none is
    named), then the process of each --process config, labelled by the config's name."""
    from phasediff.analysis.mixing import default_processes
    from phasediff.training import build_process, load_config

    table = default_processes()
    if presets:
        by_name = {p.name.replace("(", "").replace(")", ""): p for p in table}
        wanted = [name.replace("(", "").replace(")", "") for name in presets]
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise ValueError(
                f"--preset {unknown[0]!r} is not a row of the mixing table; valid presets are: "
                f"{', '.join(by_name)}."
            )
        table = [by_name[name] for name in dict.fromkeys(wanted)]
    for path in configs:
        try:
            config = load_config(path)
        except ValueError as exc:
            message = str(exc)
            raise ValueError(
                message if str(path) in message else f"--process {str(path)!r}: {message}"
            ) from None
        row = build_process(config)
        row.name = config.name
        table.append(row)
    return table


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
    skip_nonfinite: Annotated[
        int | None,
        typer.Option(
            "--skip-nonfinite",
            min=0,
            help="Skip up to N batches with a NaN/Inf loss or gradient (no update) before "
            "stopping; overrides train.skip_nonfinite (default 0: stop at the first).",
        ),
    ] = None,
) -> None:
    """Train a score model. Config sections: process (preset, params), data (name, n_train),
    model (kind mlp|unet, width, parameterization eps|score, or x0 for velocity models),
    objective (name hsm|dsm, weighting eps|score|likelihood|cld) and train (steps,
    batch_size, lr, warmup, grad_clip, ema_decay, log_every, ckpt_every, keep_last,
    sample_every, threads, device, tensorboard).
    objective.name = velocity trains a velocity model (HGF, flow matching) and
    hamiltonian_score_matching a force field (section hamiltonian_sm); see docs/training.md,
    docs/hgf.md.
    Several processes: torchrun --nproc_per_node N -m phasediff.cli train CONFIG --out DIR
    (gloo on CPU, nccl on CUDA; train.batch_size is the global batch; docs/images.md)."""
    from phasediff.training import load_config, train
    from phasediff.training.trainer import NonFiniteLossError

    overrides = list(set_ or [])
    if skip_nonfinite is not None:
        overrides.append(f"train.skip_nonfinite={skip_nonfinite}")
    try:
        cfg = load_config(config, overrides)
        summary = train(cfg, out, resume=resume, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:  # disk full, unwritable run directory: the last checkpoint is kept
        typer.echo(f"error: {_os_error(exc)}", err=True)
        raise typer.Exit(code=1) from None
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun only rank 0 reports
        typer.echo(json.dumps(summary))


@app.command("sample")
def sample_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Run directory (newest valid checkpoint) or checkpoint JSON.")
    ],
    sampler: Annotated[
        str | None,
        typer.Option(
            help="Default: the model's recommended sampler (lie_trotter for ε/score models, "
            f"hgf_heun for velocity models). {sampler_help()} Noise-conditional, VE runs only: "
            "annealed_langevin (ALD), mild (MILD); they use --levels and --steps-per-level, not "
            "--steps or --grid (docs/mild.md)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Number of sampler steps (≥ 1); default 50 (20 for the hgf_heun default)."
        ),
    ] = None,
    num: Annotated[int, typer.Option(help="Number of samples (≥ 1).")] = 2000,
    out: Annotated[
        Path,
        typer.Option(
            help="Output .npz (x, nfe[, trajectory, times]), x in the data's own units (a "
            "standardised points run is mapped back); a PNG goes beside it."
        ),
    ] = Path("samples.npz"),
    seed: Annotated[int, typer.Option(help="Seed of the sampler's generator.")] = 0,
    grid: Annotated[str | None, typer.Option(help=grid_help())] = None,
    levels: Annotated[
        int,
        typer.Option(
            help="annealed_langevin/mild: noise levels L (≥ 2), geometric from the prior's σ "
            "to the schedule's σ_min."
        ),
    ] = 100,
    steps_per_level: Annotated[
        int | None,
        typer.Option(
            help="annealed_langevin/mild: steps T per level (default 5 for ALD, 2 for MILD); "
            "NFE = L·T + 1 (final denoising)."
        ),
    ] = None,
    eps: Annotated[
        float, typer.Option(help="annealed_langevin/mild: step size ε, α_i = ε σ_i²/σ_L².")
    ] = 2e-5,
    gamma: Annotated[
        float | None, typer.Option(help="mild: momentum γ, 0 ≤ γ < 1 (default 0.9).")
    ] = None,
    consistent_noise: Annotated[
        bool,
        typer.Option(
            "--consistent-noise",
            help="mild: noise std sqrt(2α/(1−γ)) instead of the seed's sqrt(2α), which keeps "
            "the per-level variance right (docs/mild.md).",
        ),
    ] = False,
    trajectory: Annotated[
        bool, typer.Option("--trajectory", help="Also store the whole trajectory (steps+1 states).")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA weights.")] = True,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Accept a torch.save .pt/.pth file, read with torch.load(weights_only=True) "
            "(layout in docs/reliability.md). Off by default: pickles can run code.",
        ),
    ] = False,
    inpaint_mask: Annotated[
        Path | None,
        typer.Option(
            "--inpaint",
            help="Inpaint: mask .npy (1 = known pixel) shaped like one sample or the batch; "
            "needs --known (docs/images.md).",
        ),
    ] = None,
    known: Annotated[
        Path | None,
        typer.Option("--known", help="Known pixel values .npy (data range) for --inpaint."),
    ] = None,
    guidance_class: Annotated[
        int | None,
        typer.Option("--guidance-class", help="Classifier guidance towards this class."),
    ] = None,
    guidance_scale: Annotated[
        float, typer.Option("--guidance-scale", help="Guidance weight w (1: p(z | c)).")
    ] = 1.0,
    classifier: Annotated[
        Path | None,
        typer.Option("--classifier", help="Directory written by phasediff train-classifier."),
    ] = None,
    compile_network: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the network first (a one-off compile, then faster calls; "
            "worth it for long runs on a GPU).",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the sampler's tqdm bar.")
    ] = True,
    final: Annotated[
        str | None,
        typer.Option(
            help="Last step of a score sampler: 'denoise' (the default for the fixed-step "
            "samplers of score models) jumps from the last grid time to the denoiser "
            "x̂₀ = E[x₀ | z], projected onto the training data's recorded range; 'integrate' "
            "(the default for dopri5 and velocity models) takes the sampler's own step to "
            't_min (docs/samplers.md, "The final step").'
        ),
    ] = None,
    noise_floor: Annotated[
        float | None,
        typer.Option(
            help="With the denoising final step: never jump from below the time where the "
            "Gaussian reference's posterior std of x₀ is this fraction of σ_data (default "
            "min(0.05, max(0.01, 5/N²)) for N steps; 0 = jump from the last grid time; "
            "docs/samplers.md, "
            '"The noise floor").'
        ),
    ] = None,
    x0_guard: Annotated[
        bool | None,
        typer.Option(
            "--x0-guard/--no-x0-guard",
            help="Project the denoiser x̂₀ of every network call onto the training data's "
            "recorded range (default: on for score models; the JSON line's 'guarded' counts "
            'the samples it moved; docs/samplers.md, "The x̂₀ guard").',
        ),
    ] = None,
    drop_bad: Annotated[
        bool,
        typer.Option(
            "--drop-bad",
            help="Leave samples that are not finite or lie far outside the training data's "
            "range out of the .npz (default: keep them, marked by its 'ok' mask, and warn).",
        ),
    ] = False,
) -> None:
    """Sample a trained model with any sampler; NFE is counted, not inferred. --inpaint/--known
    fix known pixels (replacement through the exact kernel); --guidance-class with --classifier
    adds classifier guidance (docs/images.md). Samples that are not finite or lie far outside
    the training data's range are counted in the .npz and the JSON line, with a one-line
    warning (docs/samplers.md, "Sample sanity")."""
    import numpy as np
    import torch

    from phasediff.data.sanity import check_samples, run_data_range
    from phasediff.samplers.final import final_step_options
    from phasediff.samplers.registry import get_sampler, recommended_sampler, resolve
    from phasediff.training import load_trained
    from phasediff.training.plots import save_samples

    try:
        conditional = (inpaint_mask, known, guidance_class, classifier) != (None,) * 4
        if sampler is not None:
            fn = _langevin_sampler(
                sampler, levels, steps_per_level, eps, gamma, consistent_noise, grid, conditional
            ) or get_sampler(sampler)
        _check_grid(grid)
        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be ≥ 1, got {steps}.")
        if num < 1:
            raise ValueError(f"--num must be ≥ 1, got {num}.")
        if out.suffix != ".npz":
            raise ValueError(f"--out must end in .npz, got {str(out)!r}.")
        model, process, _, data = load_trained(checkpoint, ema=ema, allow_pickle=allow_pickle)
        if sampler is None:  # the registry's recommendation for this model (TrainedRun.sample)
            sampler, default_steps = recommended_sampler(model)
            if (inpaint_mask is not None or known is not None) and not get_entry(sampler).inpaint:
                sampler = INPAINT_DEFAULT  # ei1c's corrector cannot continue from an edited state
            fn = get_sampler(sampler)
            steps = default_steps if steps is None else steps
        steps = 50 if steps is None else steps
        if compile_network:  # attributes (parameterization, …) stay visible through the wrapper
            model = torch.compile(model)
        gen = torch.Generator().manual_seed(seed)
        shape = (num, *data.data_shape)
        if guidance_class is not None or classifier is not None:
            model = _guided_model(model, process, classifier, guidance_class, guidance_scale)
        data_range, source = run_data_range(checkpoint, data.data)  # the model's units
        last = {}  # final step and x̂₀ box of registry samplers (samplers.final)
        if sampler in LANGEVIN_SAMPLERS and (final, noise_floor, x0_guard) != (None,) * 3:
            raise ValueError(
                f"--final, --noise-floor and --x0-guard apply to the registry's samplers; "
                f"{sampler} ends with its own denoising step (docs/mild.md)."
            )
        if sampler not in LANGEVIN_SAMPLERS:
            adaptive = resolve(sampler, model).adaptive
            last = final_step_options(
                final,
                model,
                (data_range.low, data_range.high),
                adaptive=adaptive,
                noise_floor=noise_floor,
                x0_guard=x0_guard,
            )
        if sampler in LANGEVIN_SAMPLERS:  # no time grid; not registry entries
            pass
        elif grid is None:  # the sampler's own default; `ei` on a velocity model: hgf_ei's
            grid = resolve(sampler, model).default_grid
        else:
            resolve(sampler, model)  # refuses a sampler that does not take this model kind
        if inpaint_mask is not None or known is not None:
            from phasediff.samplers.conditional import inpaint, load_condition

            known_b, mask_b = load_condition(known, inpaint_mask, shape)
            res = inpaint(
                model,
                process,
                known_b,
                mask_b,
                steps,
                sampler=sampler,
                grid=grid,
                generator=gen,
                return_trajectory=trajectory,
                progress=progress,
                **last,
            )
        else:
            res = fn(
                model,
                process,
                shape,
                steps,
                grid=grid,
                generator=gen,
                return_trajectory=trajectory,
                progress=progress,
                **last,
            )
        raw = res.x if res.unprojected is None else res.unprojected  # before the projection
        check = check_samples(raw, data_range, source=source)
        if data.standardization is not None:  # back to the units of the user's file
            res.x = data.standardization.decode(res.x)
        rows = check.ok if drop_bad else slice(None)
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"x": res.x[rows].numpy(), "nfe": np.array(res.nfe), "times": res.times.numpy()}
        arrays.update(non_finite=np.array(check.non_finite), far=np.array(check.far))
        if not drop_bad:
            arrays["ok"] = check.ok.numpy()
        if trajectory:
            arrays["trajectory"] = torch.stack(res.trajectory)[:, rows].numpy()
        np.savez(out, **arrays)
        if check.bad:
            kept = (
                f"they are kept in {out} (its 'ok' mask is False for them; --drop-bad drops them)"
            )
            dropped = f"they are left out of {out} (--drop-bad)"
            typer.echo(f"warning: {check.message(dropped if drop_bad else kept)}", err=True)
        shown = check.ok if bool(check.ok.any()) else check.finite  # the sane ones, if any
        if bool(shown.any()):
            reference = data.held_out(min(num, 5000)) if data.kind == "vector" else None
            if reference is not None and data.standardization is not None:
                reference = data.standardization.decode(reference)
            save_samples(
                res.x[shown],
                out.with_suffix(".png"),
                reference=reference,
                title=f"{sampler} {steps} steps",
            )
    except ValueError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write output ({exc.strerror}: {exc.filename}); choose a writable --out.")
    report = {"out": str(out), "sampler": sampler, "steps": steps, "nfe": res.nfe, "num": num}
    report["grid"] = grid
    if last:
        report.update(final=last["final"], projected=res.projected)
        report.update(guarded=res.guarded, guarded_far=res.guarded_far)
        if last["final"] == "denoise":  # where the jump was made from (the noise floor)
            report["jump_t"] = float(res.times[-2]) if len(res.times) > 1 else None
    report.update(non_finite=check.non_finite, far=check.far)
    if drop_bad:
        report["written"] = num - check.bad
    typer.echo(json.dumps(report))


def _langevin_sampler(
    sampler: str,
    levels: int,
    steps_per_level: int | None,
    eps: float,
    gamma: float | None,
    consistent_noise: bool,
    grid: str | None,
    conditional: bool,
):
    """ALD or MILD behind the registry's call signature, or None for any other name. They take
    (score, shape, sigmas) instead of (model, process, shape, steps), so they are not sampler
    registry entries; `sample_ve_model` runs them on a VE run and refuses any other run."""
    if sampler not in LANGEVIN_SAMPLERS:
        return None
    if grid is not None:
        raise ValueError(
            f"--grid does not apply to {sampler}: its noise levels come from --levels."
        )
    if conditional:
        raise ValueError(
            f"{sampler} supports neither --inpaint nor guidance; use e.g. em for those."
        )
    from phasediff.samplers.langevin import sample_ve_model

    def fn(model, process, shape, steps, *, grid, **options):
        return sample_ve_model(
            model,
            process,
            shape,
            sampler,
            levels=levels,
            steps_per_level=steps_per_level,
            eps=eps,
            gamma=gamma,
            consistent_noise=consistent_noise,
            **options,
        )

    return fn


def _check_grid(grid: str | None) -> None:
    """Refuse an unknown --grid before anything is loaded (None: the sampler's default)."""
    if grid is not None and grid not in GRIDS:
        raise ValueError(f"unknown time grid {grid!r}; valid grids are: {', '.join(GRIDS)}.")


def _guided_model(model, process, classifier: Path | None, target: int | None, scale: float):
    """The model with classifier guidance (--guidance-class, --classifier, --guidance-scale)."""
    from phasediff.samplers.conditional import ClassifierGuidance
    from phasediff.training.classifier import load_classifier

    if classifier is None or target is None:
        raise ValueError(
            "classifier guidance needs both --guidance-class C and --classifier DIR "
            "(a directory written by phasediff train-classifier)."
        )
    net, meta = load_classifier(classifier, process)
    n_classes = int(meta["architecture"]["n_classes"])
    if not 0 <= target < n_classes:
        raise ValueError(
            f"--guidance-class must be one of the classifier's classes 0…{n_classes - 1}, "
            f"got {target}."
        )
    return ClassifierGuidance(model, process, net, target, scale)


@app.command("train-classifier")
def train_classifier_command(
    source: Annotated[
        Path, typer.Argument(help="Run directory (its config.json) or experiment TOML file.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory for the classifier.")],
    steps: Annotated[int, typer.Option(help="Training steps (≥ 1).")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Batch size (≥ 1).")] = 128,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    width: Annotated[int, typer.Option(help="Channels of the first layer (≥ 1).")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batches.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads; 0 keeps the default.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key of SOURCE (e.g. data.path=DIR)."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train a noise-aware classifier log p(c | z_t, t) on the full state z_t of SOURCE's
    process and labelled dataset, for `phasediff sample --guidance-class C --classifier OUT`
    (docs/images.md)."""
    from phasediff.training.classifier import train_classifier
    from phasediff.training.errors import NonFiniteLossError

    try:
        summary = train_classifier(
            source,
            out,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            width=width,
            seed=seed,
            threads=threads,
            overrides=list(set_ or []),
            progress=progress,
        )
    except ValueError as exc:
        _fail(str(exc))
    except NonFiniteLossError as exc:  # as in `train`: one sentence, status 1
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(summary))


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo"),
    steps: Annotated[int, typer.Option(help="Training steps for toy_hold (≥ 1).")] = 24_000,
    batch_size: Annotated[int, typer.Option(help="Training batch (≥ 1).")] = 1024,
    sampler: Annotated[
        str, typer.Option(help="Sampler of the demo's samples (a registry name).")
    ] = "ei1c",
    sampler_steps: Annotated[int, typer.Option(help="Sampler steps.")] = 50,
    num: Annotated[int, typer.Option(help="Samples drawn and evaluated (≥ 2).")] = 20_000,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train HOLD on the multi-Swiss-roll, sample it (ei1c at 50 NFE with the denoising last
    step by default), write demo/samples.png, demo/trajectories.png and demo/metrics.json
    (distances with their noise floors, NFE)."""
    from phasediff.demo import run_demo

    try:
        for option, value in (
            ("--steps", steps),
            ("--batch-size", batch_size),
            ("--sampler-steps", sampler_steps),
        ):
            if value < 1:
                raise ValueError(f"{option} must be ≥ 1, got {value}.")
        if num < 2:
            raise ValueError(f"--num must be ≥ 2, got {num}.")
        report = run_demo(
            out,
            steps=steps,
            batch_size=batch_size,
            sampler=sampler,
            sampler_steps=sampler_steps,
            num=num,
            progress=progress,
        )
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({k: report[k] for k in ("nfe", "train_seconds", "sample_seconds")}))
    typer.echo(f"wrote {out}/samples.png, {out}/trajectories.png, {out}/metrics.json")


# ---------------------------------------------------------------------------- eval and plot


@app.command("eval")
def eval_command(
    run: Annotated[Path, typer.Argument(help="Run directory (newest valid checkpoint) or JSON.")],
    samples: Annotated[
        Path | None,
        typer.Option(help="Evaluate these samples (.npz with x, from phasediff sample)."),
    ] = None,
    num: Annotated[
        int | None, typer.Option(help="Samples to draw (default 2000) or to use from --samples.")
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            help=f"When drawing samples (default: the model's recommended sampler, ei1c at 50 "
            f"steps for score models, hgf_heun at 20 for velocity models). {sampler_help()}"
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Sampler steps (≥ 1; default: the recommended count, else 50)."),
    ] = None,
    grid: Annotated[str | None, typer.Option(help=grid_help())] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and the held-out sets.")] = 0,
    fid: Annotated[
        bool,
        typer.Option(
            "--fid",
            help="Inception FID, KID, precision/recall (images) with the network of the "
            "phasediff[fid] extra.",
        ),
    ] = False,
    fid_num: Annotated[
        int | None,
        typer.Option(help="Held-out images of --fid/--inception (default: the dataset's set)."),
    ] = None,
    inception: Annotated[
        Path | None,
        typer.Option(help="TorchScript inception-2015-12-05.pt: the --fid metrics with it."),
    ] = None,
    nll: Annotated[
        bool, typer.Option("--nll", help="Also the held-out NLL (bits/dim for images).")
    ] = False,
    nll_num: Annotated[int, typer.Option(help="Held-out examples for --nll.")] = 256,
    nll_tol: Annotated[float, typer.Option(help="rtol = atol of the dopri5 NLL solve.")] = 1e-5,
    out: Annotated[Path | None, typer.Option(help="Output directory (default RUN/eval).")] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA weights.")] = True,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the sampler's tqdm bar.")
    ] = True,
    final: Annotated[
        str | None,
        typer.Option(
            help="Last step when drawing: 'denoise' (default for fixed-step samplers of score "
            "models) or 'integrate', as phasediff sample --final."
        ),
    ] = None,
    x0_guard: Annotated[
        bool | None,
        typer.Option(
            "--x0-guard/--no-x0-guard",
            help="When drawing: the x̂₀ guard on the run's data range, as phasediff sample "
            "(default: on for score models).",
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            help="Toys: average sliced W2 and the mode metrics over this many held-out "
            "references (1–1000); one reference moves the ratio by ±15 % "
            "(docs/evaluation.md).",
        ),
    ] = 1,
) -> None:
    """Evaluate a run: toys get W2 (exact, sliced), MMD, energy and mode metrics, digits the
    digits Fréchet distance, images with --fid Inception FID, KID, precision and recall, each
    with its noise floor; writes OUT/metrics.json and OUT/samples.png (samples vs held-out
    data). See docs/evaluation.md."""
    from phasediff.bench.runs import evaluate_run

    try:
        _check_grid(grid)
        if sampler is not None:
            get_entry(sampler)  # an unknown name is refused before the run is loaded
        report = evaluate_run(
            run,
            samples=samples,
            num=num,
            sampler=sampler,
            steps=steps,
            grid=grid,  # None: the sampler's own (resolved for the model); unused with --samples
            seed=seed,
            inception=inception,
            fid=fid,
            fid_num=fid_num,
            nll=nll,
            nll_num=nll_num,
            nll_tol=nll_tol,
            out=out,
            ema=ema,
            progress=progress,
            final=final,
            x0_guard=x0_guard,
            repeats=repeats,
        )
    except ValueError as exc:
        _fail(str(exc))
    metrics = report["metrics"]
    headline = {
        k: metrics["toy"][k]
        for k in ("sliced_w2", "mode_tvd", "mode_sliced_w2")
        if k in metrics.get("toy", {})
    }
    keys = ("digits_fd", "inception_fid", "inception_kid", "inception_precision_recall")
    headline.update({k: metrics[k] for k in keys if k in metrics})
    if "nll" in report:
        headline["nll"] = report["nll"]
    typer.echo(json.dumps(headline))
    if "inception_fid" in metrics:
        fd, kd, pr = (metrics[k] for k in keys[1:])
        typer.echo(
            f"Inception FID {fd['value']:.4g} (floor {fd['floor']:.4g}), "
            f"KID {kd['value']:.3g} ± {kd['se']:.2g} (floor {kd['floor']:.3g} ± "
            f"{kd['floor_se']:.2g}), precision {pr['precision']['value']:.3f} (floor "
            f"{pr['precision']['floor']:.3f}), recall {pr['recall']['value']:.3f} (floor "
            f"{pr['recall']['floor']:.3f}), {metrics['inception_network']['num_held_out']} "
            "held-out images"
        )
    typer.echo(f"wrote {report['out']}/metrics.json and {report['out']}/samples.png")


@app.command("bench")
def bench_command(
    suite: Annotated[str, typer.Argument(help="toy, digits, mixing, samplers-overhead or mild.")],
    runs: Annotated[
        Path, typer.Option(help="Trained runs and RUNS/SUITE.json (raw results) live here.")
    ] = Path("runs/bench"),
    steps: Annotated[
        int | None, typer.Option(help="Training steps per model (default: the configs').")
    ] = None,
    nfe: Annotated[
        str, typer.Option(help="Comma-separated NFE budgets of the fixed-step samplers.")
    ] = "10,20,50,100,200,1000",
    num: Annotated[
        int | None, typer.Option(help="Samples per cell (default 5000 toy, 1200 digits).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of training, sampling and held-out sets.")] = 0,
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset: vp, cld, psld, hold, critical4, ohgf."),
    ] = None,
    samplers: Annotated[
        str | None, typer.Option(help="Comma-separated subset of the samplers of the grid.")
    ] = None,
    dopri_tol: Annotated[float, typer.Option(help="rtol = atol of dopri5 / hgf_dopri5.")] = 1e-5,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 1,
    docs: Annotated[
        Path, typer.Option(help="Markdown file that receives the <!-- bench:SUITE --> block.")
    ] = Path("docs/benchmarks.md"),
    img_dir: Annotated[Path, typer.Option(help="Directory of bench_SUITE.png.")] = Path("docs/img"),
    render_only: Annotated[
        bool,
        typer.Option("--render-only", help="Redraw table and figure from RUNS/SUITE.json."),
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Benchmarks (docs/benchmarks.md): toy and digits train VP, CLD, PSLD, HOLD, critical(4)
    and the Oscillation HGF on one budget and tabulate quality vs NFE for every applicable
    sampler; mixing wraps `analyze mixing`; samplers-overhead times each sampler outside the
    network. Writes the block in DOCS, IMG_DIR/bench_SUITE.png and RUNS/SUITE.json."""
    from phasediff.bench import run_suite

    try:
        result = run_suite(
            suite,
            runs=runs,
            steps=steps,
            nfe=nfe,
            num=num,
            seed=seed,
            models=models,
            samplers=samplers,
            dopri_tol=dopri_tol,
            threads=threads,
            docs=docs,
            img_dir=img_dir,
            render_only=render_only,
            progress=progress,
        )
    except ValueError as exc:
        _fail(str(exc))
    written = result["written"]
    typer.echo(f"wrote {written['docs']} (bench:{suite}), {written['image']}, {written['json']}")


plot_app = typer.Typer(
    help="Figures like the HOLD paper's (docs/evaluation.md).", no_args_is_help=True
)
app.add_typer(plot_app, name="plot")


@plot_app.command("paths")
def plot_paths_command(
    out: Annotated[Path, typer.Option(help="Output image.")] = Path("paths.png"),
    processes: Annotated[
        str, typer.Option(help="Comma-separated presets, one panel each.")
    ] = "vp,cld,hold",
    n_paths: Annotated[int, typer.Option(help="Paths per panel.")] = 12,
    steps: Annotated[int, typer.Option(help="Time points per path (≥ 2).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of data and noise.")] = 0,
) -> None:
    """HOLD Fig. 1: forward noising paths of 1-D mixture data (white) per process."""
    from phasediff.evaluation.figures import plot_paths

    try:
        names = [p.strip() for p in processes.split(",") if p.strip()]
        path = plot_paths(out, names, n_paths=n_paths, steps=steps, seed=seed)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


@plot_app.command("phases")
def plot_phases_command(
    out: Annotated[Path, typer.Option(help="Output image.")] = Path("phases.png"),
    process: Annotated[str, typer.Option(help="Preset whose blocks are drawn.")] = "hold",
    n_paths: Annotated[int, typer.Option(help="Paths per panel.")] = 10,
    sampler: Annotated[str, typer.Option(help="Sampler of the generation row.")] = "lie_trotter",
    steps: Annotated[int, typer.Option(help="Time points of the forward paths (≥ 2).")] = 300,
    sampler_steps: Annotated[int, typer.Option(help="Steps of the generation row.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of data and noise.")] = 0,
) -> None:
    """HOLD Fig. 2: x/v/a paths, forward and in generation (exact mixture score)."""
    from phasediff.evaluation.figures import plot_phases

    try:
        path = plot_phases(
            out,
            process,
            n_paths=n_paths,
            steps=steps,
            sampler=sampler,
            sampler_steps=sampler_steps,
            seed=seed,
        )
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


@plot_app.command("snapshots")
def plot_snapshots_command(
    run: Annotated[
        Path | None,
        typer.Argument(help="Trained 2-D toy run; omitted: exact score of the data."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output image.")] = Path("snapshots.png"),
    process: Annotated[str, typer.Option(help="Preset when no run is given.")] = "hold",
    sampler: Annotated[str, typer.Option(help="Sampler.")] = "lie_trotter",
    steps: Annotated[int, typer.Option(help="Sampler steps (≥ 1).")] = 50,
    num: Annotated[int, typer.Option(help="Number of samples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """HOLD Fig. 3: multi-Swiss-roll samples at several sampler steps."""
    from phasediff.bench.runs import plot_snapshots  # loads RUN, then evaluation.figures

    try:
        path, source = plot_snapshots(
            out, run=run, process=process, sampler=sampler, steps=steps, num=num, seed=seed
        )
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path} (model: {source})")


@plot_app.command("samples")
def plot_samples_command(
    sources: Annotated[list[Path], typer.Argument(help="Run directories or .npz sample files.")],
    out: Annotated[Path, typer.Option(help="Output image.")] = Path("samples.png"),
    label: Annotated[
        list[str] | None, typer.Option(help="Panel label per source (repeatable).")
    ] = None,
    sampler: Annotated[str, typer.Option(help="Sampler for run directories.")] = "lie_trotter",
    steps: Annotated[int, typer.Option(help="Sampler steps (≥ 1).")] = 50,
    num: Annotated[int, typer.Option(help="Samples per panel.")] = 2000,
    data: Annotated[
        str | None, typer.Option(help="Dataset of the reference panel (default: the run's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """HOLD Fig. 4: samples of several runs side by side, with the data."""
    from phasediff.bench.runs import samples_from_sources  # loads the runs
    from phasediff.evaluation.figures import plot_samples

    try:
        panels, reference = samples_from_sources(
            sources, labels=label, sampler=sampler, steps=steps, num=num, seed=seed, data=data
        )
        if title is None and any(s.suffix != ".npz" for s in sources):
            title = f"{num} samples per run: {sampler}, {steps} steps"
        path = plot_samples(out, panels, reference=reference, title=title or "")
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


def main() -> None:
    """Console-script entry point: bad input is one sentence and exit status 2, a failure at
    run time (I/O, an unexpected error) one sentence and status 1, Ctrl-C status 130; never a
    traceback unless PHASEDIFF_DEBUG=1 (docs/reliability.md)."""
    import os
    import warnings

    debug = os.environ.get("PHASEDIFF_DEBUG", "") not in ("", "0")
    if not debug:  # "warning: <message>" instead of "<file>:<line>: UserWarning: ..."
        warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        app()
    except ValueError as exc:  # a last guard: bad input never shows a traceback
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted; a training run continues from its last checkpoint with --resume.",
            err=True,
        )
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, OSError):
            typer.echo(f"error: {_os_error(exc)}", err=True)
        elif isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
            typer.echo(
                "error: out of memory; reduce the batch size, the number of samples or the "
                "network size.",
                err=True,
            )
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            typer.echo(
                f"error: unexpected {type(exc).__name__}: {first.rstrip('.')}. "
                f"Rerun with PHASEDIFF_DEBUG=1 for the traceback and please report it.",
                err=True,
            )
        sys.exit(1)


if __name__ == "__main__":
    main()
