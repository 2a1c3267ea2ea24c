"""Markdown of a suite's results (the block between its markers, without them): the
quality-vs-NFE tables of the grid suites, the mixing table and the sampler-overhead table.
Everything is rendered from the results dict alone, so ``--render-only`` gives the same
block as the run that wrote the JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from phasediff.bench.base import SCORE_SAMPLERS, VELOCITY_SAMPLERS
from phasediff.bench.scoring import ratio

__all__ = [
    "best",
    "fmt_float",
    "fmt_ratio",
    "format_overhead_table",
    "grid_index",
    "render_grid",
    "render_mixing",
    "render_overhead",
]

Metrics = Sequence[tuple[str, str]]  # (key in the metrics dict, label)


def fmt_ratio(value: float | None) -> str:
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


def fmt_tol(value: float) -> str:
    mantissa, _, exponent = f"{value:g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def fmt_float(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min"


def _cell_text(cell: dict[str, Any] | None, metric: str) -> str:
    if cell is None:
        return ""
    if cell.get("metrics") is None:
        return f"diverged ({cell['nfe']})" if "diverged" in (cell.get("error") or "") else "error"
    return f"{fmt_ratio(ratio(cell['metrics'], metric))} ({cell['nfe']})"


def grid_index(results: dict[str, Any]):
    """(cells by (model, sampler, target), budgets, any adaptive cell, models with cells,
    (model, sampler) pairs in registry order)."""
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


def best(results: dict[str, Any], metric: str, key: str, target: int):
    """(ratio, sampler, nfe) of the best fixed-step sampler of ``key`` at budget ``target``."""
    found = None
    for c in results["cells"]:
        if c["model"] != key or c["nfe_target"] != target or c.get("metrics") is None:
            continue
        r = ratio(c["metrics"], metric)
        if r is not None and (found is None or r < found[0]):
            found = (r, c["sampler"], c["nfe"])
    return found


def _header(results: dict[str, Any]) -> list[str]:
    return [
        f"Command: `{results.get('command', '?')}`.",
        f"Machine: {results.get('machine', '?')}.",
    ]


def render_grid(
    results: dict[str, Any],
    image: str,
    *,
    title: str,
    metrics: Metrics,
    summaries: Metrics,
    floor_text: Callable[[dict[str, Any]], str],
    reference_what: str,
) -> str:
    """The block of a quality-vs-NFE suite: ``metrics`` are its ratios (the first one the
    primary: figure and first summary), ``summaries`` the metrics of the best-sampler tables,
    ``floor_text(floors)`` the sentence that explains the ratios, ``reference_what`` what
    the exact reference scored ("fresh held-out sets")."""
    suite = results["suite"]
    settings = results["settings"]
    cells, budgets, adaptive, models, pairs = grid_index(results)
    info = results["models"]
    first = info[models[0]] if models else {}
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
    reference = results.get("exact_reference") or []
    lines.append(floor_text(results.get("floors") or {}))
    if reference:
        spans = []
        for key, label in metrics:
            values = [r[key] for r in reference if r.get(key) is not None]
            if values:
                spans.append(f"{label} {min(values):.2f}–{max(values):.2f}")
        lines += [
            f"Scored like samples, {len(reference)} {reference_what} (an exact sampler) give: "
            + "; ".join(spans)
            + ". Ratios inside these ranges are at the floor.",
        ]
    lines += [
        "Cells: ratio (measured NFE). Fixed-step samplers get steps = NFE (heun, hgf_heun and "
        "pc: ⌊(NFE+1)/2⌋ steps = NFE − 1 calls for even NFE); dopri5 / hgf_dopri5 are adaptive "
        f"(rtol = atol = {fmt_tol(settings['dopri_tol'])}) and appear once with the NFE they "
        "used. Each sampler uses its default time grid (`ei*`: `optimal`, `hgf_ei`: "
        "`quadratic`, others: `uniform`) and its final denoising step.",
        "",
    ]
    for i, (key, label) in enumerate(summaries):
        if i:
            lines.append("")
        lines += [f"### Best sampler per process ({label} ratio)", ""]
        lines += _summary_table(results, key, models, budgets)
    lines += ["", f"<!-- notes:{suite} -->", f"<!-- /notes:{suite} -->", ""]
    lines += [f"![quality vs NFE, {suite}]({image})", ""]
    for key, label in metrics:
        lines += [f"### {label[0].upper() + label[1:]} / floor", ""]
        head = "| process | sampler | " + " | ".join(f"NFE {n}" for n in budgets)
        head += " | adaptive |" if adaptive else " |"
        lines += [head, "|" + "---|" * (2 + len(budgets) + int(adaptive))]
        for model_key, name in pairs:
            row = [info[model_key]["label"], name]
            row += [_cell_text(cells.get((model_key, name, n)), key) for n in budgets]
            if adaptive:
                row.append(_cell_text(cells.get((model_key, name, None)), key))
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


def _summary_table(
    results: dict[str, Any], metric: str, models: list[str], budgets: list[int]
) -> list[str]:
    info = results["models"]
    lines = [
        "| process | " + " | ".join(f"NFE {n}" for n in budgets) + " | adaptive |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key in models:
        row = [info[key]["label"]]
        for n in budgets:
            found = best(results, metric, key, n)
            row.append("" if found is None else f"{fmt_ratio(found[0])} {found[1]} ({found[2]})")
        adaptive = [
            c
            for c in results["cells"]
            if c["model"] == key and c["nfe_target"] is None and c.get("metrics") is not None
        ]
        row.append(
            ", ".join(f"{fmt_ratio(ratio(c['metrics'], metric))} ({c['nfe']})" for c in adaptive)
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_mixing(results: dict[str, Any], image: str) -> str:
    """The block of the mixing suite: ``phasediff analyze mixing``'s table."""
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


def render_overhead(results: dict[str, Any], image: str) -> str:
    """The block of the samplers-overhead suite."""
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
