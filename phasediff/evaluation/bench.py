"""`phasediff bench SUITE`: quality-vs-NFE tables, mixing and sampler-overhead tables
(docs/design.md §6).

Suites:

* ``toy`` — VP, CLD, PSLD, HOLD, critical(4) and the Oscillation HGF trained with the same
  network, data, optimiser, step budget and seed (``configs/toy_*.toml``), each sampled with
  every applicable sampler at each NFE budget and scored by ``evaluate_toy`` as ratios to the
  noise floor (plain sliced W2, mode-resolved sliced W2, mode TVD on the multi-Swiss-roll).
* ``digits`` — the same grid on scikit-learn digits (``configs/digits_*.toml``), scored by
  the digits Fréchet distance ratio (``fid.fd_with_floor``).
* ``mixing`` — the table and figure of ``phasediff analyze mixing``.
* ``samplers-overhead`` — time outside the network ÷ time inside it, per sampler.

Every suite writes its Markdown section into ``docs/benchmarks.md`` between the markers
``<!-- bench:SUITE -->`` and ``<!-- /bench:SUITE -->`` (appending the block when missing;
text between ``<!-- notes:SUITE -->`` and ``<!-- /notes:SUITE -->`` inside an existing block
is kept), its figure to ``docs/img/bench_SUITE.png`` and its raw results to
``RUNS/SUITE.json``, from which ``render_only=True`` redraws table and figure without
sampling. Trained runs live in ``RUNS/SUITE/<model>_<steps>[_seed<seed>]``: a finished
run is reused, an interrupted one resumed, and sampled cells already in the JSON (same
steps, num, seed and tolerance) are not recomputed; a JSON written with other settings is
moved to ``RUNS/SUITE.previous.json``.

The harness sits above training (it trains the models it compares), so ``phasediff.training``
is imported inside the functions that need it, as in ``report.py``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from phasediff.samplers.registry import SCORE, VELOCITY, sampler_names
from phasediff.samplers.registry import steps_for_nfe as registry_steps_for_nfe

__all__ = [
    "ADAPTIVE_SAMPLERS",
    "DEFAULT_NFE",
    "SUITES",
    "SUITE_MODELS",
    "BenchModel",
    "applicable_samplers",
    "extract_blocks",
    "format_overhead_table",
    "keep_bench_blocks",
    "machine",
    "parse_list",
    "render_suite",
    "run_suite",
    "sampler_overhead_rows",
    "steps_for_nfe",
    "write_block",
]

SUITES = ("toy", "digits", "mixing", "samplers-overhead")
DEFAULT_NFE = (10, 20, 50, 100, 200, 1000)
SCORE_SAMPLERS = sampler_names(SCORE)  # the grid's samplers per model kind: the registry's
VELOCITY_SAMPLERS = sampler_names(VELOCITY)
ADAPTIVE_SAMPLERS = sampler_names(adaptive=True)
DEFAULT_NUM = {"toy": 5000, "digits": 1200}
EXACT_REFERENCE_SETS = 5  # fresh data sets scored like samples: the ratio of an exact sampler
RESULTS_VERSION = 1

_BLOCK_RE = re.compile(
    r"<!-- bench:(?P<name>[A-Za-z0-9_-]+) -->.*?<!-- /bench:(?P=name) -->", re.DOTALL
)


@dataclass(frozen=True)
class BenchModel:
    """One contender: a config file plus ``--set`` overrides (on top of the shared budget)."""

    key: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()


_CRITICAL4 = ("process.preset='critical'", "process.params={ k = 4 }")
SUITE_MODELS: dict[str, tuple[BenchModel, ...]] = {
    "toy": (
        BenchModel("vp", "VP", "configs/toy_vp.toml"),
        BenchModel("cld", "CLD", "configs/toy_cld.toml"),
        BenchModel("psld", "PSLD", "configs/toy_psld.toml"),
        BenchModel("hold", "HOLD", "configs/toy_hold.toml"),
        BenchModel("critical4", "critical(4)", "configs/toy_vp.toml", _CRITICAL4),
        BenchModel("ohgf", "Oscillation HGF", "configs/toy_ohgf.toml"),
    ),
    "digits": (
        BenchModel("vp", "VP", "configs/digits_vp.toml"),
        BenchModel("cld", "CLD", "configs/digits_cld.toml"),
        BenchModel("psld", "PSLD", "configs/digits_vp.toml", ("process.preset='psld'",)),
        BenchModel("hold", "HOLD", "configs/digits_hold.toml"),
        BenchModel("critical4", "critical(4)", "configs/digits_vp.toml", _CRITICAL4),
        BenchModel("ohgf", "Oscillation HGF", "configs/digits_ohgf.toml"),
    ),
}

# train.* keys that do not change what is learned (ignored when a stored run is reused)
_NEUTRAL_TRAIN_KEYS = ("threads", "tensorboard", "device", "log_every", "ckpt_every", "keep_last")


# ---------------------------------------------------------------------------- small helpers


def machine() -> str:
    """CPU model, core count, torch version and threads, Python version (one line)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; Python {platform.python_version()}"
    )


def parse_list(text: str | Sequence[Any] | None, name: str) -> list[str] | None:
    """``"a,b"`` (or a sequence) → ["a", "b"]; None stays None; empty entries are refused."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    items = [t.strip() for t in items]
    if not items or any(not t for t in items):
        raise ValueError(
            f"{name} must be a comma-separated list without empty entries, got {text!r}."
        )
    return items


def _parse_nfe(nfe: str | Sequence[int]) -> list[int]:
    items = parse_list(nfe, "--nfe") or []
    try:
        values = [int(v) for v in items]
    except ValueError:
        raise ValueError(
            f"--nfe must be a comma-separated list of integers ≥ 1, got {nfe!r}."
        ) from None
    if any(v < 1 for v in values):
        raise ValueError(f"--nfe must be a comma-separated list of integers ≥ 1, got {nfe!r}.")
    return sorted(set(values))


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Sampler steps for an NFE budget, from the sampler registry: 1 NFE per step, except
    heun, hgf_heun and pc (2·steps − 1 NFE: Heun ends with an Euler step, pc skips the last
    correction), which get steps = ⌊(NFE + 1)/2⌋ so that they never exceed the budget. The
    NFE reported is always the one measured by the sampler, never this estimate."""
    return registry_steps_for_nfe(sampler, nfe)


def applicable_samplers(velocity: bool) -> tuple[str, ...]:
    """Samplers of the grid for a score model (ε/score output) or a velocity model (HGF)."""
    return VELOCITY_SAMPLERS if velocity else SCORE_SAMPLERS


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _config_path(config: str) -> Path:
    """A config file relative to the working directory, else to the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / config).is_file():
            return base / config
    raise ValueError(
        f"config file {config!r} was found neither in {str(Path.cwd())!r} nor next to the "
        "phasediff package; run phasediff bench from the repository root."
    )


# ---------------------------------------------------------------------------- marker blocks


def extract_blocks(text: str) -> dict[str, str]:
    """Every ``<!-- bench:NAME -->…<!-- /bench:NAME -->`` block of a Markdown text, by NAME
    (markers included, in order of appearance)."""
    return {m.group("name"): m.group(0) for m in _BLOCK_RE.finditer(text)}


def keep_bench_blocks(old_text: str, new_text: str) -> str:
    """``new_text`` with every bench block of ``old_text`` that ``new_text`` lacks appended at
    the end: what ``make bench`` (bench/run.py) uses so that regenerating docs/benchmarks.md
    from scratch does not lose the sections written by ``phasediff bench``."""
    present = extract_blocks(new_text)
    missing = [block for name, block in extract_blocks(old_text).items() if name not in present]
    if not missing:
        return new_text
    return new_text.rstrip("\n") + "\n\n" + "\n\n".join(missing) + "\n"


def _notes_re(suite: str) -> re.Pattern[str]:
    s = re.escape(suite)
    return re.compile(rf"<!-- notes:{s} -->.*?<!-- /notes:{s} -->", re.DOTALL)


def write_block(path: str | Path, suite: str, body: str) -> Path:
    """Put ``body`` between the markers of ``suite`` in the Markdown file ``path`` (created if
    missing; the block is appended at the end when it is not there yet). Hand-written notes
    between ``<!-- notes:SUITE -->`` and ``<!-- /notes:SUITE -->`` in the old block replace the
    (empty) notes placeholder of the new one. Everything outside the block is left as is."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"<!-- bench:{suite} -->\n{body.strip()}\n<!-- /bench:{suite} -->"
    previous = extract_blocks(old).get(suite)
    if previous is not None:
        notes = _notes_re(suite).search(previous)
        if notes is not None and _notes_re(suite).search(block):
            block = _notes_re(suite).sub(lambda _: notes.group(0), block, count=1)
        start = old.index(previous)
        text = old[:start] + block + old[start + len(previous) :]
    else:
        text = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block + "\n"
    _write_text(path, text)
    return path


# ---------------------------------------------------------------------------- training


def _suite_config(spec: BenchModel, suite: str, steps: int | None, seed: int, threads: int):
    from phasediff.training import load_config

    overrides = [
        *spec.overrides,
        f"name='bench-{suite}-{spec.key}'",
        f"seed={seed}",
        f"train.threads={threads}",
        "train.tensorboard=false",
        "train.sample_every=0",
    ]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    return load_config(_config_path(spec.config), overrides)


def _comparable(config: dict) -> dict:
    """A config as a dict with defaults filled in (a checkpoint written before a field was
    added still compares equal) and without the keys that do not change what is learned."""
    from phasediff.training.config import config_from_dict

    config = config_from_dict(config).model_dump()
    for key in _NEUTRAL_TRAIN_KEYS:
        config.get("train", {}).pop(key, None)
    config.get("train", {}).pop("steps", None)
    return config


def _prepare_model(
    spec: BenchModel, config, run_dir: Path, progress: bool
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Train (or resume, or reuse) ``config`` in ``run_dir``; returns (EMA model, process,
    data, info) with info = {run_dir, trained_steps, train_seconds (this call), reused}."""
    from phasediff.training import Trainer, load_checkpoint, load_trained
    from phasediff.training.checkpoint import list_checkpoints

    steps = config.train.steps
    done = 0
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir() and list_checkpoints(ckpt_dir):
        meta, _ = load_checkpoint(run_dir)
        done = int(meta["step"])
        if _comparable(meta["config"]) != _comparable(config.model_dump()):
            raise ValueError(
                f"run {str(run_dir)!r} was trained with another config than {spec.config} "
                "with the bench settings; delete it or pass another --runs directory."
            )
        if done > steps:
            raise ValueError(
                f"run {str(run_dir)!r} holds step {done}, beyond --steps {steps}; "
                "pass another --runs directory."
            )
    seconds = 0.0
    if done < steps:
        trainer = Trainer(config, run_dir, resume=done > 0, progress=progress)
        seconds = float(trainer.fit()["seconds"])
        del trainer
    model, process, _, data = load_trained(run_dir)
    info = {
        "run_dir": str(run_dir),
        "trained_steps": steps,
        "train_seconds": round(seconds, 1),
        "reused": done == steps,
    }
    return model, process, data, info


# ---------------------------------------------------------------------------- evaluation


def _toy_metrics(x: torch.Tensor, data, seed: int) -> dict[str, Any]:
    """``evaluate_toy`` against held-out sets seed, seed+1, seed+2 (no exact W2: ≈ 3 s per
    cell at 3000 points, and at this n it is dominated by the mode counts like plain SW2)."""
    from phasediff.evaluation.metrics import evaluate_toy
    from phasediff.evaluation.report import mode_centers

    def held_out(n: int, s: int) -> torch.Tensor:
        return data.held_out(n, seed=s)

    return evaluate_toy(
        x.to(torch.float64),
        held_out,
        centers=mode_centers(data.name),
        seed=seed,
        exact_w2_max_n=0,
    )


def _digits_metrics(x: torch.Tensor, data, seed: int) -> dict[str, Any]:
    from phasediff.evaluation.report import evaluate_samples

    return evaluate_samples(x.to(torch.float32), data, seed=seed)


def _exact_reference(suite: str, data, num: int, seed: int) -> list[dict[str, Any]]:
    """Scores of fresh real data treated as samples: what an exact sampler would get."""
    out = []
    for i in range(EXACT_REFERENCE_SETS):
        if suite == "toy":
            x = data.held_out(num, seed=seed + 1000 + i)
            out.append(_ratios(suite, _toy_metrics(x, data, seed)))
        else:  # digits: training digits (the held-out split is the reference itself)
            gen = torch.Generator().manual_seed(seed + 1000 + i)
            n = data.data.shape[0]
            idx = (
                torch.randperm(n, generator=gen)[:num]
                if num <= n
                else torch.randint(0, n, (num,), generator=gen)
            )
            out.append(_ratios(suite, _digits_metrics(data.data[idx], data, seed)))
    return out


METRICS = {
    "toy": (
        ("mode_sliced_w2", "mode-resolved sliced W2"),
        ("sliced_w2", "sliced W2"),
        ("mode_tvd", "mode TVD"),
    ),
    "digits": (("digits_fd", "digits Fréchet distance"),),
}


def _ratios(suite: str, metrics: dict[str, Any] | None) -> dict[str, float | None]:
    if metrics is None:
        return {key: None for key, _ in METRICS[suite]}
    return {key: (metrics.get(key) or {}).get("ratio") for key, _ in METRICS[suite]}


def _floors(suite: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {key: (metrics.get(key) or {}).get("floor") for key, _ in METRICS[suite]}


# ---------------------------------------------------------------------------- the grid


def _load_results(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(
            f"results file {str(path)!r} is not readable JSON; delete it to start over."
        ) from None
    if not isinstance(results, dict) or results.get("version") != RESULTS_VERSION:
        raise ValueError(
            f"results file {str(path)!r} was not written by this version of phasediff bench; "
            "delete it to start over."
        )
    return results


def _command(suite: str, **opts: Any) -> str:
    parts = ["phasediff", "bench", suite]
    for name, value in opts.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list | tuple):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return " ".join(parts)


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}.")
    return value


def run_suite(
    suite: str,
    *,
    runs: str | Path = "runs/bench",
    steps: int | None = None,
    nfe: str | Sequence[int] = DEFAULT_NFE,
    num: int | None = None,
    seed: int = 0,
    models: str | Sequence[str] | None = None,
    samplers: str | Sequence[str] | None = None,
    dopri_tol: float = 1e-5,
    threads: int = 1,
    docs: str | Path = "docs/benchmarks.md",
    img_dir: str | Path = "docs/img",
    render_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one benchmark suite and write its section, figure and JSON (module docstring).

    ``toy``/``digits``: ``steps`` training steps per model (default: the configs' 20 000),
    ``nfe`` budgets for the fixed-step samplers (adaptive dopri5 runs once at
    rtol = atol = ``dopri_tol`` and reports its measured NFE), ``num`` samples per cell
    (default 5000 for toy, 1200 for digits), one ``seed`` for training, sampling and held-out
    sets; ``models``/``samplers`` restrict the grid. Returns the results dict with the paths
    written under ``"written"``.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown bench suite {suite!r}; valid suites are: {', '.join(SUITES)}.")
    runs, docs, img_dir = Path(runs), Path(docs), Path(img_dir)
    if runs.exists() and not runs.is_dir():
        raise ValueError(f"--runs {str(runs)!r} is a file; pass a directory.")
    if docs.is_dir():
        raise ValueError(f"--docs {str(docs)!r} is a directory; pass a Markdown file.")
    json_path = runs / f"{suite}.json"
    image = img_dir / f"bench_{suite}.png"
    if render_only:
        results = _load_results(json_path)
        if results is None:
            raise ValueError(
                f"no results file {str(json_path)!r}; run phasediff bench {suite} without "
                "--render-only first."
            )
    else:
        threads = _check_int(threads, "--threads", 0)
        if threads:
            torch.set_num_threads(threads)
        if suite == "mixing":
            results = _run_mixing(image)
        elif suite == "samplers-overhead":
            results = _run_overhead()
        else:
            results = _run_grid(
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
                progress=progress,
                json_path=json_path,
            )
        default_paths = docs == Path("docs/benchmarks.md") and img_dir == Path("docs/img")
        opts: dict[str, Any] = {"runs": str(runs)} if suite in ("toy", "digits") else {}
        if suite in ("toy", "digits"):
            opts.update(
                steps=results["settings"]["steps"],
                nfe=_parse_nfe(nfe),
                num=results["settings"]["num"],
                seed=seed,
                models=parse_list(models, "--models"),
                samplers=parse_list(samplers, "--samplers"),
                dopri_tol=None if dopri_tol == 1e-5 else dopri_tol,
            )
        opts["threads"] = threads
        if not default_paths:
            opts.update(docs=str(docs), img_dir=str(img_dir))
        results["command"] = _command(suite, **opts)
        results["machine"] = machine()
        _write_text(json_path, json.dumps(results, indent=1, allow_nan=False))
    relative_image = os.path.relpath(image, docs.parent)
    body = render_suite(results, image=relative_image, image_path=image)
    write_block(docs, suite, body)
    results["written"] = {"docs": str(docs), "image": str(image), "json": str(json_path)}
    return results


def _run_grid(
    suite: str,
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

    budgets = _parse_nfe(nfe)
    if steps is not None:
        _check_int(steps, "--steps", 1)
    num = DEFAULT_NUM[suite] if num is None else _check_int(num, "--num", 2)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 - 2000:
        raise ValueError(f"--seed must be an integer in [0, {2**31 - 2000}), got {seed!r}.")
    if (
        isinstance(dopri_tol, bool)
        or not isinstance(dopri_tol, int | float)
        or not 0 < dopri_tol < 1
    ):
        raise ValueError(f"--dopri-tol must be a number in (0, 1), got {dopri_tol!r}.")
    specs = {m.key: m for m in SUITE_MODELS[suite]}
    chosen = parse_list(models, "--models") or list(specs)
    unknown = [m for m in chosen if m not in specs]
    if unknown:
        raise ValueError(
            f"unknown model {unknown[0]!r} for suite {suite!r}; valid models are: "
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
    configs = {key: _suite_config(specs[key], suite, steps, seed, threads) for key in chosen}
    budget = {c.train.steps for c in configs.values()}
    steps = budget.pop()
    if budget:  # the configs disagree and no --steps was given
        raise ValueError("the suite's configs have different train.steps; pass --steps N.")

    settings = {"steps": steps, "num": num, "seed": seed, "dopri_tol": dopri_tol}
    old = _load_results(json_path)
    old_settings = (old or {}).get("settings", {})
    reuse = (
        old is not None
        and old.get("suite") == suite
        and all(old_settings.get(k) == v for k, v in settings.items())
    )
    if old is not None and not reuse:  # other settings: keep the old results beside
        json_path.replace(json_path.with_suffix(".previous.json"))
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "suite": suite,
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
        _write_text(json_path, json.dumps(results, indent=1, allow_nan=False))

    # 1. train (or reuse) every model
    loaded = {}
    for key in chosen:
        spec = specs[key]
        run_dir = runs / suite / (f"{key}_{steps}" + (f"_seed{seed}" if seed else ""))
        model, process, data, info = _prepare_model(spec, configs[key], run_dir, progress)
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
            network=_network_label(cfg),
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            ema_decay=cfg.train.ema_decay,
        )
        results["models"][key] = info
        loaded[key] = (model, process, data)
        save()
    data = loaded[chosen[0]][2]
    score = _toy_metrics if suite == "toy" else _digits_metrics
    if results["exact_reference"] is None:
        results["exact_reference"] = _exact_reference(suite, data, num, seed)
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
    bar = tqdm(total=len(jobs), disable=not progress, desc=f"bench {suite}", dynamic_ncols=True)
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
                metrics = score(x, data, seed)
                cell.update(metrics=metrics, error=None)
                if results["floors"] is None:
                    results["floors"] = _floors(suite, metrics)
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


def _network_label(config) -> str:
    m = config.model
    if m.kind == "mlp":
        return f"{m.depth}×{m.hidden} TimeMLP"
    return f"U-Net (base {m.base}, mults {list(m.mults)})"


# ---------------------------------------------------------------------------- other suites


def _run_mixing(image: Path) -> dict[str, Any]:
    from phasediff.analysis.mixing import default_processes, mixing_table, plot_mixing

    data_var, point_mass, eps = 0.25, 1.0, 1e-3
    t0 = time.perf_counter()
    rows = mixing_table(data_var=data_var, point_mass=point_mass, eps=eps)
    image.parent.mkdir(parents=True, exist_ok=True)
    plot_mixing(default_processes(), str(image), data_var=data_var, point_mass=point_mass, eps=eps)
    return {
        "version": RESULTS_VERSION,
        "suite": "mixing",
        "settings": {"data_var": data_var, "point_mass": point_mass, "eps": eps},
        "rows": [_json_safe(r.as_dict()) for r in rows],
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """inf/NaN → strings (JSON has no such numbers)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        out[key] = value
    return out


def sampler_overhead_rows(batch: int = 128, steps: int = 20) -> list[dict[str, Any]]:
    """Time outside the network ÷ time inside it for every sampler on the digits U-Net
    (untrained, zero-init head perturbed by 1e-3 noise), HOLD (pc: VP, which it needs; hgf_*:
    a position-only U-Net on the Oscillation HGF), a
    batch of ``batch`` 8×8 images and ``steps`` steps (dopri5: rtol = atol = 1e-3, its own
    steps). Each sampler runs twice: the first (cold) call includes one-off per-grid
    precomputation (cached by ``ei``); the overhead is the warm call's."""
    from phasediff import processes as P
    from phasediff.models import UNet
    from phasediff.samplers import SAMPLERS

    class Timed(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, parameterization: str) -> None:
            super().__init__()
            self.net, self.inside = net, 0.0
            self.parameterization = parameterization

        def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = self.net(z, t)
            self.inside += time.perf_counter() - t0
            return out

    rows = []
    nets: dict[str, torch.nn.Module] = {}
    for name, fn in SAMPLERS.items():
        velocity = name in VELOCITY_SAMPLERS  # position-only velocity models (docs/hgf.md)
        process = P.ohgf() if velocity else P.vp() if name == "pc" else P.hold()
        if process.name not in nets:  # pc needs every block noisy; hgf_* an HGF
            torch.manual_seed(0)
            k_in, n_out = (1, 1) if velocity else (process.k, len(process.noisy_blocks))
            net = UNet(k_in, 1, n_out).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(1e-3 * torch.randn_like(p))
            nets[process.name] = net
        net = nets[process.name]
        kwargs = {"rtol": 1e-3, "atol": 1e-3} if name in ADAPTIVE_SAMPLERS else {}
        timings = []
        for _ in range(2):
            model = Timed(net, "velocity" if velocity else "eps")
            gen = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            out = fn(model, process, (batch, 1, 8, 8), steps, generator=gen, **kwargs)
            timings.append((time.perf_counter() - t0, model.inside))
        (cold, cold_in), (warm, warm_in) = timings
        rows.append(
            {
                "sampler": name,
                "process": process.name,
                "nfe": int(out.nfe),
                "network_seconds": warm_in,
                "total_seconds": warm,
                "overhead": (warm - warm_in) / warm_in,
                "cold_extra_seconds": (cold - cold_in) - (warm - warm_in),
            }
        )
    return rows


def format_overhead_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of ``sampler_overhead_rows``."""
    lines = [
        "| sampler | process | NFE | network s | overhead, warm (outside ÷ inside) "
        "| cold call extra s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['process']} | {r['nfe']} | {r['network_seconds']:.3f} "
            f"| {100 * r['overhead']:.1f} % | {r['cold_extra_seconds']:.3f} |"
        )
    return lines


def _run_overhead() -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = sampler_overhead_rows()
    return {
        "version": RESULTS_VERSION,
        "suite": "samplers-overhead",
        "settings": {"batch": 128, "steps": 20, "data": "digits 8×8", "network": "UNet"},
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }


# ---------------------------------------------------------------------------- rendering


def _fmt_ratio(value: float | None) -> str:
    """3 significant digits up to 999, then 1.2e3 (no '+', no padding)."""
    if value is None:
        return "n/a"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    if value < 1000:
        return f"{value:.0f}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _fmt_tol(value: float) -> str:
    mantissa, _, exponent = f"{value:g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def _cell_text(cell: dict[str, Any] | None, suite: str, metric: str) -> str:
    if cell is None:
        return ""
    if cell.get("metrics") is None:
        return f"diverged ({cell['nfe']})" if "diverged" in (cell.get("error") or "") else "error"
    return f"{_fmt_ratio(_ratios(suite, cell['metrics'])[metric])} ({cell['nfe']})"


def _grid_index(results: dict[str, Any]):
    cells = {(c["model"], c["sampler"], c["nfe_target"]): c for c in results["cells"]}
    budgets = sorted({c["nfe_target"] for c in results["cells"] if c["nfe_target"] is not None})
    adaptive = any(c["nfe_target"] is None for c in results["cells"])
    models = [k for k in results["models"] if any(c["model"] == k for c in results["cells"])]
    pairs = []
    order = (*SCORE_SAMPLERS, *VELOCITY_SAMPLERS)
    for key in models:
        names = {c["sampler"] for c in results["cells"] if c["model"] == key}
        pairs += [(key, s) for s in order if s in names]
    return cells, budgets, adaptive, models, pairs


def _best(results: dict[str, Any], suite: str, metric: str, key: str, target: int):
    """(ratio, sampler, nfe) of the best fixed-step sampler of ``key`` at budget ``target``."""
    best = None
    for c in results["cells"]:
        if c["model"] != key or c["nfe_target"] != target or c.get("metrics") is None:
            continue
        r = _ratios(suite, c["metrics"])[metric]
        if r is not None and (best is None or r < best[0]):
            best = (r, c["sampler"], c["nfe"])
    return best


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min"


def render_suite(results: dict[str, Any], *, image: str, image_path: Path | None = None) -> str:
    """The Markdown section of a suite's results (without the markers); draws the figure to
    ``image_path`` when given (grid and overhead suites; mixing draws it while running)."""
    suite = results["suite"]
    if suite == "mixing":
        return _render_mixing(results, image)
    if suite == "samplers-overhead":
        if image_path is not None:
            _plot_overhead(results, image_path)
        return _render_overhead(results, image)
    if image_path is not None:
        _plot_grid(results, image_path)
    return _render_grid(results, image)


def _header(results: dict[str, Any]) -> list[str]:
    return [
        f"Command: `{results.get('command', '?')}`.",
        f"Machine: {results.get('machine', '?')}.",
    ]


def _render_grid(results: dict[str, Any], image: str) -> str:
    suite = results["suite"]
    settings = results["settings"]
    cells, budgets, adaptive, models, pairs = _grid_index(results)
    info = results["models"]
    first = info[models[0]] if models else {}
    title = "multi-Swiss-roll (HOLD Fig. 4)" if suite == "toy" else "scikit-learn digits (8×8)"
    train_total = sum(info[k].get("train_seconds") or 0 for k in models)
    sample_total = sum(c.get("sample_seconds", 0) for c in results["cells"])
    eval_total = sum(c.get("eval_seconds", 0) for c in results["cells"])
    per_model = ", ".join(
        f"{info[k]['label']} {_seconds(info[k].get('train_seconds') or 0)}" for k in models
    )
    reused = [info[k]["label"] for k in models if info[k].get("reused")]
    lines = [
        f"## Quality vs NFE: {title}",
        "",
        *_header(results),
        "",
        f"Models ({len(models)}): {', '.join(info[k]['label'] for k in models)}; each a "
        f"{first.get('network', '?')} trained for **{settings['steps']} steps** (batch "
        f"{first.get('batch_size', '?')}, AdamW lr {first.get('lr', '?')}, EMA "
        f"{first.get('ema_decay', '?')}, seed {settings['seed']}) from its config ("
        + "; ".join(_config_text(info[k]) for k in models)
        + "); sampled from the EMA weights with "
        f"{settings['num']} samples per cell, sampler seed {settings['seed']}. One seed, one "
        "training run per model: differences of a few tens of percent are within run-to-run "
        "noise.",
        "",
        f"Wall time: training {_seconds(train_total)} ({per_model}"
        f"{'; reused from an earlier invocation: ' + ', '.join(reused) if reused else ''}), "
        f"sampling {_seconds(sample_total)}, evaluation {_seconds(eval_total)}"
        f"{', total ' + _seconds(results['wall_seconds']) if results.get('wall_seconds') else ''}"
        " (summed over the invocations that filled the JSON; the machine was shared with "
        "other jobs, so these are upper bounds).",
        "",
    ]
    metrics = METRICS[suite]
    floors = results.get("floors") or {}
    reference = results.get("exact_reference") or []
    if suite == "toy":
        lines += [
            "Every number is a **ratio to the noise floor**: the distance between the samples "
            "and a held-out set, divided by the same distance between two other held-out sets "
            "of the same size (docs/evaluation.md); an exact sampler scores ≈ 1. Floors: "
            + ", ".join(f"{label} {_fmt_float(floors.get(key))}" for key, label in metrics)
            + ".",
        ]
    else:
        lines += [
            "Every number is the digits Fréchet distance of the samples divided by its noise "
            "floor (held-out half vs held-out half, `fd_with_floor`, docs/evaluation.md); "
            f"floor {_fmt_float(floors.get('digits_fd'))}.",
        ]
    if reference:
        spans = []
        for key, label in metrics:
            values = [r[key] for r in reference if r.get(key) is not None]
            if values:
                spans.append(f"{label} {min(values):.2f}–{max(values):.2f}")
        what = "fresh held-out sets" if suite == "toy" else "random sets of training digits"
        lines += [
            f"Scored like samples, {len(reference)} {what} (an exact sampler) give: "
            + "; ".join(spans)
            + ". Ratios inside these ranges are at the floor.",
        ]
    lines += [
        "Cells: ratio (measured NFE). Fixed-step samplers get steps = NFE (heun, hgf_heun and "
        "pc: ⌊(NFE+1)/2⌋ steps = NFE − 1 calls for even NFE); dopri5 / hgf_dopri5 are adaptive "
        f"(rtol = atol = {_fmt_tol(settings['dopri_tol'])}) and appear once with the NFE they "
        "used. Each sampler uses its default time grid (`ei*`: `optimal`, `hgf_ei`: "
        "`quadratic`, others: `uniform`) and its final denoising step.",
        "",
    ]
    primary, primary_label = metrics[0]
    lines += [f"### Best sampler per process ({primary_label} ratio)", ""]
    lines += _summary_table(results, suite, primary, models, budgets)
    if suite == "toy":
        lines += ["", "### Best sampler per process (plain sliced W2 ratio)", ""]
        lines += _summary_table(results, suite, "sliced_w2", models, budgets)
    lines += ["", f"<!-- notes:{suite} -->", f"<!-- /notes:{suite} -->", ""]
    lines += [f"![quality vs NFE, {suite}]({image})", ""]
    for key, label in metrics:
        lines += [f"### {label[0].upper() + label[1:]} / floor", ""]
        head = "| process | sampler | " + " | ".join(f"NFE {n}" for n in budgets)
        head += " | adaptive |" if adaptive else " |"
        lines += [head, "|" + "---|" * (2 + len(budgets) + int(adaptive))]
        for model_key, name in pairs:
            row = [info[model_key]["label"], name]
            row += [_cell_text(cells.get((model_key, name, n)), suite, key) for n in budgets]
            if adaptive:
                row.append(_cell_text(cells.get((model_key, name, None)), suite, key))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    skipped = results.get("skipped") or []
    if skipped:
        by_sampler: dict[str, list[str]] = {}
        for s in skipped:
            by_sampler.setdefault(s["sampler"], []).append(
                info.get(s["model"], {}).get("label", s["model"])
            )
        lines += [
            "Not applicable (the sampler refused the process): "
            + "; ".join(f"{name} on {', '.join(labels)}" for name, labels in by_sampler.items())
            + ".",
            "",
        ]
    errors = [c for c in results["cells"] if c.get("error") and "diverged" not in c["error"]]
    if errors:
        lines += [
            "Errors: "
            + "; ".join(
                f"{c['model']} {c['sampler']} NFE {c['nfe_target']}: {c['error']}" for c in errors
            )
            + ".",
            "",
        ]
    lines.append(f"Raw results (every metric of every cell, timings): `{_json_name(results)}`.")
    return "\n".join(lines)


def _config_text(info: dict[str, Any]) -> str:
    extra = f" with `{', '.join(info['overrides'])}`" if info.get("overrides") else ""
    return f"{info['label']}: `{info['config']}`{extra}"


def _json_name(results: dict[str, Any]) -> str:
    command = results.get("command", "")
    match = re.search(r"--runs (\S+)", command)
    return f"{match.group(1) if match else 'runs/bench'}/{results['suite']}.json"


def _fmt_float(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _summary_table(
    results: dict[str, Any], suite: str, metric: str, models: list[str], budgets: list[int]
) -> list[str]:
    info = results["models"]
    lines = [
        "| process | " + " | ".join(f"NFE {n}" for n in budgets) + " | adaptive |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key in models:
        row = [info[key]["label"]]
        for n in budgets:
            best = _best(results, suite, metric, key, n)
            row.append("" if best is None else f"{_fmt_ratio(best[0])} {best[1]} ({best[2]})")
        adaptive = [
            c
            for c in results["cells"]
            if c["model"] == key and c["nfe_target"] is None and c.get("metrics") is not None
        ]
        row.append(
            ", ".join(
                f"{_fmt_ratio(_ratios(suite, c['metrics'])[metric])} ({c['nfe']})" for c in adaptive
            )
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _render_mixing(results: dict[str, Any], image: str) -> str:
    from phasediff.analysis.mixing import MixingRow, format_table

    s = results["settings"]
    special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    rows = [
        MixingRow(**{k: v if k == "name" else special.get(v, v) for k, v in r.items()})
        for r in results["rows"]
    ]
    return "\n".join(
        [
            "## Mixing of the forward processes (`phasediff analyze mixing`)",
            "",
            *_header(results),
            "",
            f"Exact (closed-form, per data dimension) KL and W2 to the prior for Gaussian data "
            f"N(0, {s['data_var']:g}) and a point mass at {s['point_mass']:g}; definitions in "
            "docs/processes.md. No training, no sampling.",
            "",
            format_table(rows, s["eps"]),
            "",
            f"![KL to the prior vs noise budget]({image})",
        ]
    )


def _render_overhead(results: dict[str, Any], image: str) -> str:
    s = results["settings"]
    return "\n".join(
        [
            f"## Sampler overhead (`phasediff bench samplers-overhead`: {s['data']} "
            f"{s['network']}, batch {s['batch']}, {s['steps']} steps)",
            "",
            *_header(results),
            "",
            "Wall time of the whole sampler call against the time spent inside the network "
            "(HOLD; pc on VP; hgf_* on the Oscillation HGF). The cold call includes one-off "
            "per-grid work (cached by `ei`).",
            "",
            *format_overhead_table(results["rows"]),
            "",
            f"![sampler overhead]({image})",
        ]
    )


# ---------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_grid(results: dict[str, Any], path: Path) -> None:
    """One panel per process (primary ratio vs measured NFE, one line per sampler, adaptive
    samplers as stars) and a last panel with each process's best sampler per budget."""
    plt = _pyplot()
    suite = results["suite"]
    metric, label = METRICS[suite][0]
    cells, budgets, adaptive, models, pairs = _grid_index(results)
    info = results["models"]
    panels = len(models) + 1
    cols = min(4, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    reference = [r[metric] for r in results.get("exact_reference") or [] if r.get(metric)]
    cap = 1e3
    order = (*SCORE_SAMPLERS, *VELOCITY_SAMPLERS)
    palette = plt.get_cmap("tab10").colors
    style = {
        name: {"color": palette[i % 10], "ls": "-" if i < 7 else "--", "marker": "o", "ms": 3}
        for i, name in enumerate(order)
    }

    def decorate(ax, title: str) -> None:
        if reference:
            ax.axhspan(min(reference), max(reference), color="0.85", zorder=0)
        ax.axhline(1.0, color="k", lw=0.7, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("measured NFE")

    for ax, key in zip(flat, models, strict=False):
        for model_key, name in pairs:
            if model_key != key:
                continue
            pts = [cells.get((key, name, n)) for n in budgets]
            pts = [c for c in pts if c is not None and c.get("metrics") is not None]
            xs = [c["nfe"] for c in pts]
            ys = [min(cap, _ratios(suite, c["metrics"])[metric] or cap) for c in pts]
            if xs:
                ax.plot(xs, ys, lw=1, label=name, **style[name])
            ad = cells.get((key, name, None))
            if ad is not None and ad.get("metrics") is not None:
                y = min(cap, _ratios(suite, ad["metrics"])[metric] or cap)
                color = style[name]["color"]
                ax.plot([ad["nfe"]], [y], "*", ms=10, color=color, label=f"{name} (adaptive)")
        decorate(ax, info[key]["label"])
        ax.legend(fontsize=6, ncol=2)
    ax = flat[len(models)]
    for key in models:
        xs, ys = [], []
        for n in budgets:
            best = _best(results, suite, metric, key, n)
            if best is not None:
                xs.append(best[2])
                ys.append(min(cap, best[0]))
        ax.plot(xs, ys, marker="o", ms=3, label=info[key]["label"])
    decorate(ax, "best sampler per process")
    ax.legend(fontsize=7)
    for extra in flat[panels:]:
        extra.axis("off")
    for a in axes[:, 0]:
        a.set_ylabel(f"{label} / floor")
    fig.suptitle(
        f"{suite}: {label} ratio to the noise floor (grey band: exact sampler), "
        f"{results['settings']['steps']} training steps, {results['settings']['num']} samples; "
        f"values above {cap:.0f} drawn at {cap:.0f}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_overhead(results: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(rows) + 1.2))
    names = [f"{r['sampler']} ({r['process']}, {r['nfe']} NFE)" for r in rows]
    ax.barh(names, [100 * r["overhead"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("time outside the network ÷ time inside (%)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
