"""The ``mild`` suite: annealed Langevin dynamics (ALD) against MILD on trained noise-conditional
(VE) models, in the layout of the MILD poster (seed 002, Table 1): L noise levels × T steps
per level, every sampler at the same L and T, so at equal total NFE (L·T + 1 with the final
denoising step).

Contenders are the toy VE run (``configs/toy_ve.toml``, multi-Swiss-roll) and the digits VE
run (``configs/digits_ve.toml``), trained or reused like the grid suites' (``trained``), in
``RUNS/mild/<model>_<steps>[_seed<seed>]``. Three samplers per (L, T): ALD, MILD as in the
seed's Algorithm 1 (γ = 0.9) and MILD with ``consistent_noise=True`` (γ = 0.7, the value of
the Gaussian table in docs/mild.md). Samples are scored as ratios to the noise floor
(``scoring``: mode-resolved and plain sliced W2 and mode TVD for the toy, the digits Fréchet
distance for digits); each model also gets one reference cell with Euler–Maruyama, so that
a ratio far above the floor can be told apart from a model that is not there yet.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import torch

from phasediff.bench import scoring
from phasediff.bench.base import RESULTS_VERSION, Suite, check_int, parse_list
from phasediff.bench.markdown import write_text
from phasediff.bench.render import fmt_float, fmt_ratio
from phasediff.bench.results import load_results
from phasediff.bench.trained import BenchModel, network_label, prepare_model, suite_config

__all__ = ["MILD", "MildModel", "MildSuite"]

# (key, label, MILD options): the poster's algorithm and the noise-corrected option
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ald", "ALD", {}),
    ("mild", "MILD (γ = 0.9)", {"gamma": 0.9}),
    ("mildc", "MILD-c (γ = 0.7, consistent noise)", {"gamma": 0.7, "consistent_noise": True}),
)


@dataclass(frozen=True)
class MildModel:
    """One trained VE contender: its config, default budget, sample count and scoring."""

    spec: BenchModel
    steps: int | None  # None: the config's train.steps
    num: int
    kind: str  # "toy" | "digits": which metrics
    title: str
    reference: tuple[str, int]  # (registry sampler, steps): the model's own quality


_TOY_METRICS = (
    ("mode_sliced_w2", "mode-resolved sliced W2"),
    ("sliced_w2", "sliced W2"),
    ("mode_tvd", "mode TVD"),
)
_DIGITS_METRICS = (("digits_fd", "digits Fréchet distance"),)


def _metrics(kind: str) -> tuple[tuple[str, str], ...]:
    return _TOY_METRICS if kind == "toy" else _DIGITS_METRICS


def _score(kind: str):
    return scoring.toy_metrics if kind == "toy" else scoring.image_metrics


def _reference_sets(kind: str):
    return scoring.toy_reference_sets if kind == "toy" else scoring.training_reference_sets


@dataclass(frozen=True)
class MildSuite(Suite):
    """ALD vs MILD over ``levels`` × ``steps_per_level`` on each trained VE model."""

    name: str
    models: tuple[MildModel, ...]
    levels: tuple[int, ...] = (10, 50)
    steps_per_level: tuple[int, ...] = (1, 2, 3, 5)
    eps: float = 2e-5

    arguments: ClassVar[dict[str, Any]] = {"steps": None, "num": None, "seed": 0, "models": None}

    def command_options(
        self, results: dict[str, Any], options: dict[str, Any], *, runs: Path
    ) -> dict[str, Any]:
        return {
            "runs": str(runs),
            "steps": options["steps"],
            "num": options["num"],
            "seed": options["seed"],
            "models": parse_list(options["models"], "--models"),
        }

    def run(
        self, options: dict[str, Any], *, runs: Path, json_path: Path, threads: int, progress: bool
    ) -> dict[str, Any]:
        return _run(
            self, runs=runs, json_path=json_path, threads=threads, progress=progress, **options
        )

    def render(self, results: dict[str, Any], image: str) -> str:
        return _render(results, image)

    def plot(self, results: dict[str, Any], path: Path) -> None:
        _plot(results, path)


def _cell_key(c: dict[str, Any]) -> tuple:
    return (c["model"], c["sampler"], c.get("L"), c.get("T"))


def _run(
    suite: MildSuite,
    *,
    runs: Path,
    json_path: Path,
    threads: int,
    progress: bool,
    steps: int | None,
    num: int | None,
    seed: int,
    models: str | None,
) -> dict[str, Any]:
    from tqdm import tqdm

    from phasediff.samplers import get_sampler
    from phasediff.samplers.langevin import sample_ve_model, ve_levels

    if steps is not None:
        check_int(steps, "--steps", 1)
    if num is not None:
        check_int(num, "--num", 2)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 - 2000:
        raise ValueError(f"--seed must be an integer in [0, {2**31 - 2000}), got {seed!r}.")
    by_key = {m.spec.key: m for m in suite.models}
    chosen = parse_list(models, "--models") or list(by_key)
    unknown = [m for m in chosen if m not in by_key]
    if unknown:
        raise ValueError(
            f"unknown model {unknown[0]!r} for suite {suite.name!r}; valid models are: "
            f"{', '.join(by_key)}."
        )
    configs = {
        key: suite_config(by_key[key].spec, suite.name, steps or by_key[key].steps, seed, threads)
        for key in chosen
    }
    nums = {key: num or by_key[key].num for key in chosen}
    settings = {
        "steps": {key: configs[key].train.steps for key in chosen},
        "num": nums,
        "seed": seed,
        "levels": list(suite.levels),
        "steps_per_level": list(suite.steps_per_level),
        "eps": suite.eps,
        "variants": {key: {"label": label, **kw} for key, label, kw in VARIANTS},
        "reference": {key: list(by_key[key].reference) for key in chosen},
    }
    old = load_results(json_path)
    reuse = old is not None and old.get("suite") == suite.name and old.get("settings") == settings
    if old is not None and not reuse:
        json_path.replace(json_path.with_suffix(".previous.json"))
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "suite": suite.name,
        "settings": settings,
        "models": dict(old["models"]) if reuse else {},
        "cells": list(old["cells"]) if reuse else [],
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    base_wall = float(old.get("wall_seconds") or 0.0) if reuse else 0.0
    done = {_cell_key(c) for c in results["cells"]}
    t_start = time.perf_counter()

    def save() -> None:
        results["wall_seconds"] = round(base_wall + time.perf_counter() - t_start, 1)
        write_text(json_path, json.dumps(results, indent=1, allow_nan=False))

    for key in chosen:
        m = by_key[key]
        cfg = configs[key]
        run_dir = (
            runs / suite.name / (f"{key}_{cfg.train.steps}" + (f"_seed{seed}" if seed else ""))
        )
        model, process, data, info = prepare_model(m.spec, cfg, run_dir, progress)
        previous = results["models"].get(key, {})
        if info["reused"] and previous.get("train_seconds"):
            info["train_seconds"] = previous["train_seconds"]
        sigmas = ve_levels(process, 2)  # refuses a process other than VE
        metric_keys = [k for k, _ in _metrics(m.kind)]
        info.update(
            label=m.spec.label,
            title=m.title,
            kind=m.kind,
            config=m.spec.config,
            process=process.name,
            network=network_label(cfg),
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            sigma_max=float(sigmas[0]),
            sigma_min=float(sigmas[-1]),
        )
        info["exact_reference"] = previous.get("exact_reference") if reuse else None
        info["floors"] = previous.get("floors") if reuse else None
        if info["exact_reference"] is None:
            sets = _reference_sets(m.kind)(data, nums[key], seed)
            info["exact_reference"] = scoring.exact_reference(
                _score(m.kind), sets, metric_keys, data, seed
            )
        results["models"][key] = info
        save()

        ref_sampler, ref_steps = m.reference
        jobs: list[tuple[str, int | None, int | None]] = [(ref_sampler, None, None)]
        jobs += [
            (v, L, T) for L in suite.levels for T in suite.steps_per_level for v, _, _ in VARIANTS
        ]
        bar = tqdm(
            total=len(jobs), disable=not progress, desc=f"bench mild {key}", dynamic_ncols=True
        )
        shape = (nums[key], *data.data_shape)
        options = {kw_key: kw for kw_key, _, kw in VARIANTS}
        for name, L, T in jobs:
            bar.update(1)
            if (key, name, L, T) in done:
                continue
            gen = torch.Generator().manual_seed(seed)
            t0 = time.perf_counter()
            with torch.no_grad():
                if L is None:
                    res = get_sampler(name)(model, process, shape, ref_steps, generator=gen)
                else:
                    sampler = "annealed_langevin" if name == "ald" else "mild"
                    res = sample_ve_model(
                        model,
                        process,
                        shape,
                        sampler,
                        levels=L,
                        steps_per_level=T,
                        eps=suite.eps,
                        generator=gen,
                        **options[name],
                    )
            x = res.x.detach().cpu()
            cell: dict[str, Any] = {"model": key, "sampler": name, "L": L, "T": T}
            cell.update(nfe=int(res.nfe), sample_seconds=round(time.perf_counter() - t0, 3))
            bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).sum())
            t1 = time.perf_counter()
            if bad:
                cell.update(metrics=None, error=f"diverged: {bad} of {x.shape[0]} not finite")
            else:
                metrics = _score(m.kind)(x, data, seed)
                cell.update(metrics=metrics, error=None)
                if info["floors"] is None:
                    info["floors"] = scoring.floors(metrics, metric_keys)
            cell["eval_seconds"] = round(time.perf_counter() - t1, 3)
            results["cells"].append(cell)
            done.add((key, name, L, T))
            save()
        bar.close()
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return results


# ---------------------------------------------------------------------------- rendering
def _cell(cells: dict[tuple, dict[str, Any]], key: tuple, metric: str) -> str:
    c = cells.get(key)
    if c is None:
        return ""
    if c.get("metrics") is None:
        return "diverged" if "diverged" in (c.get("error") or "") else "error"
    return fmt_ratio(scoring.ratio(c["metrics"], metric))


def _value(cells: dict[tuple, dict[str, Any]], key: tuple, metric: str) -> float | None:
    c = cells.get(key)
    return None if c is None else scoring.ratio(c.get("metrics"), metric)


def claim_check(results: dict[str, Any], model: str, metric: str) -> list[str]:
    """Per L: ALD at T = 5 against MILD and MILD-c at T = 2 and 3 (the poster's claim: MILD
    with T = 2–3 per level ≈ ALD with T = 5), as ratio values."""
    cells = {_cell_key(c): c for c in results["cells"]}
    s = results["settings"]
    lines = []
    if 5 not in s["steps_per_level"]:
        return lines
    for L in s["levels"]:
        ald5 = _value(cells, (model, "ald", L, 5), metric)
        parts = []
        for v in ("mild", "mildc"):
            for T in (2, 3):
                if T in s["steps_per_level"]:
                    parts.append(
                        f"{'MILD' if v == 'mild' else 'MILD-c'} T = {T}: "
                        f"{fmt_ratio(_value(cells, (model, v, L, T), metric))}"
                    )
        lines.append(f"L = {L}: ALD T = 5: {fmt_ratio(ald5)}; " + ", ".join(parts))
    return lines


def _render(results: dict[str, Any], image: str) -> str:
    s = results["settings"]
    cells = {_cell_key(c): c for c in results["cells"]}
    info = results["models"]
    variants = s["variants"]
    train = ", ".join(f"{info[k]['label']} {info[k].get('train_seconds') or 0:.0f} s" for k in info)
    sample_total = sum(c.get("sample_seconds", 0) for c in results["cells"])
    eval_total = sum(c.get("eval_seconds", 0) for c in results["cells"])
    lines = [
        "## ALD vs MILD on trained VE models (`phasediff bench mild`)",
        "",
        f"Command: `{results.get('command', '?')}`.",
        f"Machine: {results.get('machine', '?')}.",
        "",
        "Models: "
        + "; ".join(
            f"{info[k]['label']}: `{info[k]['config']}` ({info[k]['network']}, "
            f"{s['steps'][k]} training steps, batch {info[k]['batch_size']}, lr {info[k]['lr']}, "
            f"seed {s['seed']}), sampled from the EMA weights with {s['num'][k]} samples per cell"
            for k in info
        )
        + ". One seed, one training run per model.",
        "",
        "Layout of the MILD poster (seed 002, Table 1): L noise levels σ_1 > … > σ_L, geometric "
        "from the prior's σ "
        + "/".join(dict.fromkeys(fmt_float(m["sigma_max"]) for m in info.values()))
        + " to σ_L = "
        + "/".join(dict.fromkeys(fmt_float(m["sigma_min"]) for m in info.values()))
        + ", "
        f"T steps per level with α_i = ε σ_i²/σ_L², ε = {s['eps']:g}, and the final denoising "
        "step: NFE = L·T + 1, the same for the three samplers of a row (docs/mild.md). "
        + "; ".join(f"{v['label']}" for v in variants.values())
        + ". MILD-c is `mild(..., consistent_noise=True)`, not in the seed. Same sampler seed "
        "for every cell. Reference: each model sampled with a registry sampler ("
        + ", ".join(
            f"{info[k]['label']}: {s['reference'][k][0]}, {s['reference'][k][1]} steps"
            for k in info
        )
        + ").",
        "",
        f"Wall time: training {train} (reused runs keep their first time), sampling "
        f"{sample_total:.0f} s, evaluation {eval_total:.0f} s (a shared machine: upper bounds).",
        "",
        "Every number is a **ratio to the noise floor** (samples vs held-out data, divided by "
        "the same distance between real sets; docs/evaluation.md); an exact sampler scores ≈ 1.",
        "",
    ]
    for k, m in info.items():
        metrics = _metrics(m["kind"])
        ref_sampler, ref_steps = s["reference"][k]
        floors = m.get("floors") or {}
        spans = []
        for metric, label in metrics:
            values = [r[metric] for r in m.get("exact_reference") or [] if r.get(metric)]
            if values:
                spans.append(f"{label} {min(values):.2f}–{max(values):.2f}")
        ref_cell = cells.get((k, ref_sampler, None, None))
        ref_text = ", ".join(
            f"{label} {_cell(cells, (k, ref_sampler, None, None), metric)}"
            for metric, label in metrics
        )
        lines += [
            f"### {m['title']}",
            "",
            "Floors: "
            + ", ".join(f"{label} {fmt_float(floors.get(metric))}" for metric, label in metrics)
            + ". Real data scored like samples: "
            + ("; ".join(spans) or "n/a")
            + f". {ref_sampler} at {ref_steps} steps"
            + (f" (NFE {ref_cell['nfe']})" if ref_cell else "")
            + f": {ref_text}.",
            "",
        ]
        for metric, label in metrics:
            lines += [
                f"{label[0].upper() + label[1:]} / floor:",
                "",
                "| L | T | NFE | " + " | ".join(v["label"] for v in variants.values()) + " |",
                "|---|---|---|" + "---|" * len(variants),
            ]
            for L in s["levels"]:
                for T in s["steps_per_level"]:
                    nfe = next(
                        (cells[(k, v, L, T)]["nfe"] for v in variants if (k, v, L, T) in cells),
                        None,
                    )
                    row = [str(L), str(T), "" if nfe is None else str(nfe)]
                    row += [_cell(cells, (k, v, L, T), metric) for v in variants]
                    lines.append("| " + " | ".join(row) + " |")
            lines.append("")
        check = claim_check(results, k, metrics[0][0])
        if check:
            lines += [
                f"Poster's claim ({metrics[0][1]}): " + "; ".join(check) + ".",
                "",
            ]
    lines += [
        "<!-- notes:mild -->",
        "<!-- /notes:mild -->",
        "",
        f"![ALD vs MILD on trained VE models]({image})",
        "",
        f"Raw results: `{_json_name(results)}`.",
    ]
    return "\n".join(lines)


def _json_name(results: dict[str, Any]) -> str:
    import re

    match = re.search(r"--runs (\S+)", results.get("command", ""))
    return f"{match.group(1) if match else 'runs/bench'}/{results['suite']}.json"


def _plot(results: dict[str, Any], path: Path) -> None:
    """One panel per model: the primary ratio vs NFE, one line per (sampler, L)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = results["models"]
    s = results["settings"]
    panels = max(1, len(info))
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), squeeze=False)
    colors = {"ald": "tab:blue", "mild": "tab:red", "mildc": "tab:green"}
    styles = ["-", "--", ":", "-."]
    for ax, (k, m) in zip(axes.flat, info.items(), strict=False):
        metric, label = _metrics(m["kind"])[0]
        for j, L in enumerate(s["levels"]):
            for v, spec in s["variants"].items():
                pts = [
                    (c["nfe"], scoring.ratio(c.get("metrics"), metric))
                    for c in results["cells"]
                    if c["model"] == k and c["sampler"] == v and c.get("L") == L
                ]
                pts = sorted((n, r) for n, r in pts if r is not None)
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        marker="o",
                        ms=3,
                        color=colors.get(v, "k"),
                        ls=styles[j % len(styles)],
                        label=f"{spec['label'].split(' (')[0]}, L = {L}",
                    )
        values = [r[metric] for r in m.get("exact_reference") or [] if r.get(metric)]
        if values:
            ax.axhspan(min(values), max(values), color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.7, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (L·T + 1)")
        ax.set_ylabel(f"{label} / floor")
        ax.set_title(m["title"], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


MILD = MildSuite(
    name="mild",
    models=(
        MildModel(
            BenchModel("toy", "toy VE", "configs/toy_ve.toml"),
            steps=None,
            num=3000,
            kind="toy",
            title="multi-Swiss-roll, VE (configs/toy_ve.toml)",
            reference=("em", 1000),
        ),
        MildModel(
            BenchModel("digits", "digits VE", "configs/digits_ve.toml"),
            steps=3000,
            num=500,
            kind="digits",
            title="scikit-learn digits 8×8, VE (configs/digits_ve.toml)",
            reference=("em", 200),
        ),
    ),
)
