"""Trained runs as input: ``phasediff eval RUN`` and ``phasediff plot snapshots|samples RUN``.

Loading a run needs ``phasediff.training``, which ``phasediff.evaluation`` must not import
(docs/design.md §9); so these functions load the run here and hand the model, process and
data to the training-free functions of ``phasediff.evaluation`` (``evaluate_model``,
``figures.plot_snapshots``, ``figures.plot_samples``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phasediff.evaluation.figures import plot_snapshots as _plot_snapshots
from phasediff.evaluation.report import check_eval_options, evaluate_model
from phasediff.samplers.registry import recommended_sampler
from phasediff.validation import check_int

__all__ = ["evaluate_run", "plot_snapshots", "samples_from_sources"]


def _check_count(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}.")
    return value


def evaluate_run(
    run: str | Path,
    *,
    samples: str | Path | None = None,
    num: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    grid: str | None = None,
    seed: int = 0,
    inception: str | Path | None = None,
    fid: bool = False,
    fid_num: int | None = None,
    nll: bool = False,
    nll_num: int = 256,
    nll_tol: float = 1e-5,
    out: str | Path | None = None,
    ema: bool = True,
    cache: str | Path | None = None,
    progress: bool = False,
    final: str | None = None,
    x0_guard: bool | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Evaluate a trained run; writes ``metrics.json`` and ``samples.png`` into ``out``
    (default ``<run>/eval``) and returns the report (``evaluate_model`` on the run's EMA
    model, or its raw weights with ``ema=False``).

    Samples come from ``samples`` (an .npz with ``x``; the first ``num`` are used) or are drawn
    with ``sampler``/``steps``/``grid`` (``num`` defaults to 2000; ``sampler=None`` is the
    model's recommended sampler, ``steps=None`` its recommended count (50 for a named
    sampler), ``grid=None`` the sampler's default grid). ``nll`` adds the held-out
    NLL (``evaluate_likelihood``, dopri5 at rtol = atol = ``nll_tol``). ``fid``/``fid_num``/
    ``inception``: the Inception metrics (``evaluate_samples``). ``progress`` shows the
    sampler's and the feature pass's tqdm bars. ``final``: the drawn samples' last step
    (default: "denoise" for fixed-step samplers of score models; `phasediff.samplers.final`);
    ``x0_guard`` (default on for score models): the x̂₀ guard on the run's data range.
    ``repeats``: toy distances averaged over that many held-out references (``evaluate_toy``).
    """
    from phasediff.data.sanity import run_data_range
    from phasediff.training import load_trained

    check_eval_options(
        num=num,
        steps=50 if steps is None else steps,
        nll=nll,
        nll_num=nll_num,
        nll_tol=nll_tol,
        inception=inception,
        fid=fid,
        fid_num=fid_num,
    )
    check_int(repeats, "--repeats", 1, 1001)
    run = Path(run)
    if not run.exists():
        raise ValueError(f"run {str(run)!r} does not exist; pass a run directory or checkpoint.")
    model, process, _, data = load_trained(run, ema=ema)
    if sampler is None:  # the registry's recommendation for this model (TrainedRun.sample)
        sampler, recommended_steps = recommended_sampler(model)
        steps = recommended_steps if steps is None else steps
    steps = 50 if steps is None else steps
    out_dir = Path(out) if out is not None else (run if run.is_dir() else run.parent) / "eval"
    return evaluate_model(
        model,
        process,
        data,
        out=out_dir,
        samples=samples,
        num=num,
        sampler=sampler,
        steps=steps,
        grid=grid,
        seed=seed,
        inception=inception,
        fid=fid,
        fid_num=fid_num,
        nll=nll,
        nll_num=nll_num,
        nll_tol=nll_tol,
        cache=cache,
        final=final,
        x0_guard=x0_guard,
        repeats=repeats,
        data_range=run_data_range(run, data.data)[0],
        report={"run": str(run)},
        progress=progress,
    )


def plot_snapshots(
    path: str | Path,
    *,
    run: str | Path | None = None,
    process: str = "hold",
    sampler: str = "lie_trotter",
    steps: int = 50,
    num: int = 2000,
    n_snapshots: int = 6,
    n_points: int = 2000,
    seed: int = 0,
) -> tuple[Path, str]:
    """HOLD Fig. 3 (``phasediff.evaluation.figures.plot_snapshots``) of a trained 2-D toy run
    (a run directory or checkpoint), or without ``run`` of the exact score of the data."""
    options = dict(
        sampler=sampler,
        steps=steps,
        num=num,
        n_snapshots=n_snapshots,
        n_points=n_points,
        seed=seed,
    )
    if run is None:
        return _plot_snapshots(path, process=process, **options)
    from phasediff.samplers import get_sampler
    from phasediff.training import load_trained

    _check_count(steps, "steps")
    _check_count(num, "num")
    _check_count(n_snapshots, "n_snapshots", 2)
    get_sampler(sampler)  # an unknown sampler is refused before the run is loaded
    model, proc, _, data = load_trained(run)
    if data.data_shape != (2,):
        raise ValueError(f"plot snapshots needs a 2-D toy run, got data {data.name!r}.")
    source = f"trained run {str(run)!r} ({proc.name}, data {data.name})"
    return _plot_snapshots(path, model=model, process=proc, source=source, **options)


def samples_from_sources(
    sources: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    sampler: str = "lie_trotter",
    steps: int = 50,
    num: int = 2000,
    seed: int = 0,
    data: str | None = None,
) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor | None]:
    """Samples of each source, a run directory / checkpoint (sampled with ``sampler``) or an
    .npz file with ``x`` (first ``num`` rows); plus reference data (held-out points of the
    first run's dataset, or of ``data`` when given; None for .npz-only input without it).
    Labels default to the run's process name or the file's stem. The panels of
    ``phasediff plot samples`` (``figures.plot_samples``)."""
    from phasediff.samplers import get_sampler

    if not sources:
        raise ValueError("give at least one run directory, checkpoint or .npz file.")
    if labels and len(labels) != len(sources):
        raise ValueError(
            f"give one --label per source: {len(labels)} labels, {len(sources)} sources."
        )
    steps, num = _check_count(steps, "steps"), _check_count(num, "num")
    fn = get_sampler(sampler)
    out: list[tuple[str, torch.Tensor]] = []
    reference_source = None
    for i, src in enumerate(sources):
        src = Path(src)
        if not src.exists():
            raise ValueError(f"source {str(src)!r} does not exist; pass a run directory or .npz.")
        if src.suffix == ".npz":
            with np.load(src, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise ValueError(
                        f"{str(src)!r} has no array 'x'; write it with phasediff sample."
                    )
                x = torch.from_numpy(np.asarray(archive["x"])[:num]).float()
            label = src.stem
        else:
            from phasediff.training import load_trained

            model, process, _, source = load_trained(src)
            res = fn(
                model,
                process,
                (num, *source.data_shape),
                steps,
                generator=torch.Generator().manual_seed(seed),
            )
            x, label = res.x.detach().float(), f"{process.name} ({sampler}, NFE {res.nfe})"
            reference_source = reference_source or source
        if not torch.isfinite(x).all():
            raise ValueError(f"the samples of {str(src)!r} contain NaN or Inf.")
        out.append((labels[i] if labels else label, x))
    if data is not None:
        from phasediff.data import get_data

        reference_source = get_data(data, n_train=10)
    reference = None
    if reference_source is not None:
        size = num if reference_source.kind == "vector" else min(num, 64)
        reference = reference_source.held_out(size, seed=seed + 100)
    return out, reference
