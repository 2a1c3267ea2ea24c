"""The quality-vs-NFE suites ``toy`` and ``digits``: train every contender on one budget
(``trained``), sample each with every applicable sampler at each NFE budget, score the
samples as ratios to the noise floor (``scoring``), and tabulate and plot them.

Sampled cells already in ``RUNS/SUITE.json`` (same steps, num, seed and tolerance) are not
recomputed; a JSON written with other settings is moved to ``RUNS/SUITE.previous.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import torch

from phasediff.bench import scoring
from phasediff.bench.base import (
    ADAPTIVE_SAMPLERS,
    RESULTS_VERSION,
    SCORE_SAMPLERS,
    VELOCITY_SAMPLERS,
    Suite,
    applicable_samplers,
    check_int,
    parse_list,
    parse_nfe,
    steps_for_nfe,
)
from phasediff.bench.markdown import write_text
from phasediff.bench.plots import plot_grid
from phasediff.bench.render import fmt_float, render_grid
from phasediff.bench.results import load_results
from phasediff.bench.trained import BenchModel, network_label, prepare_model, suite_config

__all__ = ["DEFAULT_NFE", "DIGITS", "SUITE_MODELS", "TOY", "GridSuite"]

DEFAULT_NFE = (10, 20, 50, 100, 200, 1000)


@dataclass(frozen=True)
class GridSuite(Suite):
    """A quality-vs-NFE suite: its contenders, its metrics and how it scores samples."""

    name: str
    title: str  # "## Quality vs NFE: <title>"
    models: tuple[BenchModel, ...]
    metrics: tuple[tuple[str, str], ...]  # (key, label); the first is the primary one
    summaries: tuple[tuple[str, str], ...]  # metrics of the best-sampler tables
    default_num: int
    score: Callable[[torch.Tensor, Any, int], dict[str, Any]]
    reference_sets: Callable[[Any, int, int], Iterator[torch.Tensor]]
    reference_what: str
    floor_text: Callable[[dict[str, Any]], str]

    arguments: ClassVar[dict[str, Any]] = {
        "steps": None,
        "nfe": DEFAULT_NFE,
        "num": None,
        "seed": 0,
        "models": None,
        "samplers": None,
        "dopri_tol": 1e-5,
    }

    def command_options(
        self, results: dict[str, Any], options: dict[str, Any], *, runs: Path
    ) -> dict[str, Any]:
        return {
            "runs": str(runs),
            "steps": results["settings"]["steps"],
            "nfe": parse_nfe(options["nfe"]),
            "num": results["settings"]["num"],
            "seed": options["seed"],
            "models": parse_list(options["models"], "--models"),
            "samplers": parse_list(options["samplers"], "--samplers"),
            "dopri_tol": None if options["dopri_tol"] == 1e-5 else options["dopri_tol"],
        }

    def render(self, results: dict[str, Any], image: str) -> str:
        return render_grid(
            results,
            image,
            title=self.title,
            metrics=self.metrics,
            summaries=self.summaries,
            floor_text=self.floor_text,
            reference_what=self.reference_what,
        )

    def plot(self, results: dict[str, Any], path: Path) -> None:
        metric, label = self.metrics[0]
        plot_grid(results, path, metric=metric, label=label)

    def run(
        self, options: dict[str, Any], *, runs: Path, json_path: Path, threads: int, progress: bool
    ) -> dict[str, Any]:
        return _run_grid(
            self, runs=runs, threads=threads, progress=progress, json_path=json_path, **options
        )


def _check_options(
    suite: GridSuite,
    *,
    steps: int | None,
    nfe: str | Sequence[int],
    num: int | None,
    seed: int,
    models: str | Sequence[str] | None,
    samplers: str | Sequence[str] | None,
    dopri_tol: float,
) -> tuple[list[int], int, list[str], list[str] | None]:
    """(budgets, num, chosen model keys, sampler subset or None), or a one-sentence error."""
    from phasediff.samplers import SAMPLERS

    budgets = parse_nfe(nfe)
    if steps is not None:
        check_int(steps, "--steps", 1)
    num = suite.default_num if num is None else check_int(num, "--num", 2)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 - 2000:
        raise ValueError(f"--seed must be an integer in [0, {2**31 - 2000}), got {seed!r}.")
    if (
        isinstance(dopri_tol, bool)
        or not isinstance(dopri_tol, int | float)
        or not 0 < dopri_tol < 1
    ):
        raise ValueError(f"--dopri-tol must be a number in (0, 1), got {dopri_tol!r}.")
    specs = [m.key for m in suite.models]
    chosen = parse_list(models, "--models") or specs
    unknown = [m for m in chosen if m not in specs]
    if unknown:
        raise ValueError(
            f"unknown model {unknown[0]!r} for suite {suite.name!r}; valid models are: "
            f"{', '.join(specs)}."
        )
    all_samplers = (*SCORE_SAMPLERS, *VELOCITY_SAMPLERS)
    only = parse_list(samplers, "--samplers")
    if only is not None:
        bad = [s for s in only if s not in all_samplers or s not in SAMPLERS]
        if bad:
            raise ValueError(
                f"sampler {bad[0]!r} is not part of the bench grid; valid samplers are: "
                f"{', '.join(all_samplers)}."
            )
    return budgets, num, chosen, only


def _run_grid(
    suite: GridSuite,
    *,
    runs: Path,
    steps: int | None,
    nfe: str | Sequence[int],
    num: int | None,
    seed: int,
    models: str | Sequence[str] | None,
    samplers: str | Sequence[str] | None,
    dopri_tol: float,
    threads: int,
    progress: bool,
    json_path: Path,
) -> dict[str, Any]:
    from tqdm import tqdm

    from phasediff.samplers import SAMPLERS

    budgets, num, chosen, only = _check_options(
        suite,
        steps=steps,
        nfe=nfe,
        num=num,
        seed=seed,
        models=models,
        samplers=samplers,
        dopri_tol=dopri_tol,
    )
    name_of = suite.name
    specs = {m.key: m for m in suite.models}
    keys = [key for key, _ in suite.metrics]
    configs = {key: suite_config(specs[key], name_of, steps, seed, threads) for key in chosen}
    budget = {c.train.steps for c in configs.values()}
    steps = budget.pop()
    if budget:  # the configs disagree and no --steps was given
        raise ValueError("the suite's configs have different train.steps; pass --steps N.")

    settings = {"steps": steps, "num": num, "seed": seed, "dopri_tol": dopri_tol}
    old = load_results(json_path)
    old_settings = (old or {}).get("settings", {})
    reuse = (
        old is not None
        and old.get("suite") == name_of
        and all(old_settings.get(k) == v for k, v in settings.items())
    )
    if old is not None and not reuse:  # other settings: keep the old results beside
        json_path.replace(json_path.with_suffix(".previous.json"))
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "suite": name_of,
        "settings": {**settings, "dataset": configs[chosen[0]].data.name},
        "models": dict(old["models"]) if reuse else {},
        "cells": list(old["cells"]) if reuse else [],
        "skipped": list(old.get("skipped", [])) if reuse else [],
        "exact_reference": old.get("exact_reference") if reuse else None,
        "floors": old.get("floors") if reuse else None,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    base_wall = float(old.get("wall_seconds") or 0.0) if reuse else 0.0  # earlier invocations
    done = {(c["model"], c["sampler"], c["nfe_target"]) for c in results["cells"]}
    skipped = {(s["model"], s["sampler"]) for s in results["skipped"]}
    t_start = time.perf_counter()

    def save() -> None:
        results["wall_seconds"] = round(base_wall + time.perf_counter() - t_start, 1)
        write_text(json_path, json.dumps(results, indent=1, allow_nan=False))

    # 1. train (or reuse) every model
    loaded = {}
    for key in chosen:
        spec = specs[key]
        run_dir = runs / name_of / (f"{key}_{steps}" + (f"_seed{seed}" if seed else ""))
        model, process, data, info = prepare_model(spec, configs[key], run_dir, progress)
        previous = results["models"].get(key, {})
        if info["reused"] and previous.get("train_seconds"):
            info["train_seconds"] = previous["train_seconds"]
        velocity = getattr(model, "parameterization", "eps") == "velocity"
        cfg = configs[key]
        info.update(
            label=spec.label,
            config=spec.config,
            overrides=list(spec.overrides),
            process=process.name,
            k=process.k,
            velocity=velocity,
            network=network_label(cfg),
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            ema_decay=cfg.train.ema_decay,
        )
        results["models"][key] = info
        loaded[key] = (model, process, data)
        save()
    data = loaded[chosen[0]][2]
    if results["exact_reference"] is None:
        sets = suite.reference_sets(data, num, seed)
        results["exact_reference"] = scoring.exact_reference(suite.score, sets, keys, data, seed)
        save()

    # 2. the grid: (model, sampler, NFE)
    jobs = []
    for key in chosen:
        velocity = results["models"][key]["velocity"]
        for name in applicable_samplers(velocity):
            if only is not None and name not in only:
                continue
            targets = [None] if name in ADAPTIVE_SAMPLERS else budgets
            jobs += [(key, name, n) for n in targets]
    bar = tqdm(total=len(jobs), disable=not progress, desc=f"bench {name_of}", dynamic_ncols=True)
    for key, name, target in jobs:
        bar.set_postfix_str(f"{key} {name} NFE {target or 'adaptive'}")
        if (key, name, target) in done or (key, name) in skipped:
            bar.update(1)
            continue
        model, process, data = loaded[key]
        steps_n = 1 if target is None else steps_for_nfe(name, target)
        kwargs = {"rtol": dopri_tol, "atol": dopri_tol} if name in ADAPTIVE_SAMPLERS else {}
        cell: dict[str, Any] = {"model": key, "sampler": name, "nfe_target": target}
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                res = SAMPLERS[name](
                    model,
                    process,
                    (num, *data.data_shape),
                    steps_n,
                    generator=torch.Generator().manual_seed(seed),
                    **kwargs,
                )
        except ValueError as exc:  # e.g. pc on a process with noise-free blocks
            results["skipped"].append({"model": key, "sampler": name, "reason": str(exc)})
            skipped.add((key, name))
            bar.update(1)
            save()
            continue
        x = res.x.detach().cpu()
        cell.update(
            steps=steps_n, nfe=int(res.nfe), sample_seconds=round(time.perf_counter() - t0, 3)
        )
        flat = x.reshape(x.shape[0], -1)
        bad = int((~torch.isfinite(flat)).any(1).sum())
        t1 = time.perf_counter()
        if bad:
            cell.update(metrics=None, error=f"diverged: {bad} of {x.shape[0]} samples not finite")
        else:
            try:
                metrics = suite.score(x, data, seed)
                cell.update(metrics=metrics, error=None)
                if results["floors"] is None:
                    results["floors"] = scoring.floors(metrics, keys)
            except ValueError as exc:
                cell.update(metrics=None, error=str(exc))
        cell["eval_seconds"] = round(time.perf_counter() - t1, 3)
        results["cells"].append(cell)
        done.add((key, name, target))
        bar.update(1)
        save()
    bar.close()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return results


# ---------------------------------------------------------------------------- the two suites

_CRITICAL4 = ("process.preset='critical'", "process.params={ k = 4 }")
_TOY_METRICS = (
    ("mode_sliced_w2", "mode-resolved sliced W2"),
    ("sliced_w2", "sliced W2"),
    ("mode_tvd", "mode TVD"),
)
_DIGITS_METRICS = (("digits_fd", "digits Fréchet distance"),)


def _toy_floor_text(floors: dict[str, Any]) -> str:
    return (
        "Every number is a **ratio to the noise floor**: the distance between the samples "
        "and a held-out set, divided by the same distance between two other held-out sets "
        "of the same size (docs/evaluation.md); an exact sampler scores ≈ 1. Floors: "
        + ", ".join(f"{label} {fmt_float(floors.get(key))}" for key, label in _TOY_METRICS)
        + "."
    )


def _digits_floor_text(floors: dict[str, Any]) -> str:
    return (
        "Every number is the digits Fréchet distance of the samples divided by its noise "
        "floor (held-out half vs held-out half, `fd_with_floor`, docs/evaluation.md); "
        f"floor {fmt_float(floors.get('digits_fd'))}."
    )


TOY = GridSuite(
    name="toy",
    title="multi-Swiss-roll (HOLD Fig. 4)",
    models=(
        BenchModel("vp", "VP", "configs/toy_vp.toml"),
        BenchModel("cld", "CLD", "configs/toy_cld.toml"),
        BenchModel("psld", "PSLD", "configs/toy_psld.toml"),
        BenchModel("hold", "HOLD", "configs/toy_hold.toml"),
        BenchModel("critical4", "critical(4)", "configs/toy_vp.toml", _CRITICAL4),
        BenchModel("ohgf", "Oscillation HGF", "configs/toy_ohgf.toml"),
    ),
    metrics=_TOY_METRICS,
    summaries=(_TOY_METRICS[0], ("sliced_w2", "plain sliced W2")),
    default_num=5000,
    score=scoring.toy_metrics,
    reference_sets=scoring.toy_reference_sets,
    reference_what="fresh held-out sets",
    floor_text=_toy_floor_text,
)

DIGITS = GridSuite(
    name="digits",
    title="scikit-learn digits (8×8)",
    models=(
        BenchModel("vp", "VP", "configs/digits_vp.toml"),
        BenchModel("cld", "CLD", "configs/digits_cld.toml"),
        BenchModel("psld", "PSLD", "configs/digits_vp.toml", ("process.preset='psld'",)),
        BenchModel("hold", "HOLD", "configs/digits_hold.toml"),
        BenchModel("critical4", "critical(4)", "configs/digits_vp.toml", _CRITICAL4),
        BenchModel("ohgf", "Oscillation HGF", "configs/digits_ohgf.toml"),
    ),
    metrics=_DIGITS_METRICS,
    summaries=_DIGITS_METRICS,
    default_num=1200,
    score=scoring.image_metrics,
    reference_sets=scoring.training_reference_sets,
    reference_what="random sets of training digits",
    floor_text=_digits_floor_text,
)

SUITE_MODELS: dict[str, tuple[BenchModel, ...]] = {s.name: s.models for s in (TOY, DIGITS)}
