"""Render bench/recipe.py results as a Markdown table in a preserved block of
docs/benchmarks.md (`phasediff.bench.write_block`).

    python bench/recipe_table.py bench/results/budget_5min.json --block budget-5min \
        --intro "5 minutes of training per model, …"

One row per (run, final step), one column per sampler@steps in the order the results list
them; a cell is the mode-resolved sliced-W2 ratio to the noise floor, with the number of blown
samples (non-finite or beyond the bound) in brackets when there are any (they are left out of
the ratio). `--value sliced` shows the plain sliced-W2 ratio instead; `--layout steps` puts
one row per (run, sampler, final) and one column per step count; `--layout floors` one row
per (run, sampler@steps) of the denoising runs and one column per `noise_floor`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def render(rows: list[dict], value: str = "mode", label: str = "variant") -> str:
    columns: list[str] = []
    table: dict[tuple[str, str], dict[str, str]] = {}
    steps: dict[tuple[str, str], str] = {}
    for r in rows:
        grid = "" if r["grid"] == "default" else f" ({r['grid']})"
        col = f"{r['sampler']}@{r['steps']}{grid}"
        if col not in columns:
            columns.append(col)
        key = (str(r[label]), r.get("final", "integrate"))
        ratio = r["mode_sw2_ratio"] if value == "mode" else r["sliced_w2_ratio"]
        cell = "—" if ratio is None else f"{ratio:.2f}"
        if r["blown"]:
            cell += f" ({r['blown']})"
        table.setdefault(key, {})[col] = cell
        steps[key] = f"{r.get('train_steps') or '?'}"
    head = f"| {label} | final | train steps | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for key, cells in table.items():
        row = [key[0], key[1], steps[key]] + [cells.get(c, "") for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_by_steps(rows: list[dict], value: str = "mode", label: str = "variant") -> str:
    """One row per (run, sampler (grid), final), one column per step count."""
    columns: list[int] = sorted({int(r["steps"]) for r in rows})
    table: dict[tuple[str, str, str], dict[int, str]] = {}
    for r in rows:
        grid = "" if r["grid"] == "default" else f" ({r['grid']})"
        key = (str(r[label]), f"{r['sampler']}{grid}", r.get("final", "integrate"))
        ratio = r["mode_sw2_ratio"] if value == "mode" else r["sliced_w2_ratio"]
        cell = "—" if ratio is None else f"{ratio:.2f}"
        cell += f" ({r['blown']})" if r["blown"] else ""
        table.setdefault(key, {})[int(r["steps"])] = cell
    head = f"| {label} | sampler | final | " + " | ".join(f"{c} steps" for c in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for key, cells in table.items():
        lines.append("| " + " | ".join([*key, *(cells.get(c, "") for c in columns)]) + " |")
    return "\n".join(lines)


def render_by_floor(rows: list[dict], value: str = "mode", label: str = "variant") -> str:
    """One row per (run, sampler@steps (grid)) of the denoise rows, one column per noise
    floor."""
    rows = [r for r in rows if r.get("final") == "denoise"]
    columns = sorted({float(r["noise_floor"]) for r in rows})
    table: dict[tuple[str, str], dict[float, str]] = {}
    for r in rows:
        grid = "" if r["grid"] == "default" else f" ({r['grid']})"
        key = (str(r[label]), f"{r['sampler']}@{r['steps']}{grid}")
        ratio = r["mode_sw2_ratio"] if value == "mode" else r["sliced_w2_ratio"]
        cell = "—" if ratio is None else f"{ratio:.2f}"
        cell += f" ({r['blown']})" if r["blown"] else ""
        table.setdefault(key, {})[float(r["noise_floor"])] = cell
    head = f"| {label} | sampler | " + " | ".join(f"floor {c:g}" for c in columns) + " |"
    lines = [head, "|" + "---|" * (2 + len(columns))]
    for key, cells in table.items():
        lines.append("| " + " | ".join([*key, *(cells.get(c, "") for c in columns)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results")
    parser.add_argument("--block", required=True)
    parser.add_argument("--intro", default="")
    parser.add_argument("--value", choices=("mode", "sliced"), default="mode")
    parser.add_argument("--label", default="variant")
    parser.add_argument("--docs", default="docs/benchmarks.md")
    parser.add_argument("--layout", choices=("cells", "steps", "floors"), default="cells")
    args = parser.parse_args()
    from phasediff.bench import write_block

    rows = json.loads(Path(args.results).read_text())
    draw = {"cells": render, "steps": render_by_steps, "floors": render_by_floor}[args.layout]
    body = (args.intro + "\n\n" if args.intro else "") + draw(rows, args.value, args.label)
    print(body)
    write_block(args.docs, args.block, body + "\n")


if __name__ == "__main__":
    main()
