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
        col = f"{r['sampler']}@{r['steps']}{_grid(r)}"
        if col not in columns:
            columns.append(col)
        key = (str(r[label]), r.get("final", "integrate"))
        table.setdefault(key, {})[col] = _cell(r, value)
        steps[key] = f"{r.get('train_steps') or '?'}"
    head = f"| {label} | final | train steps | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for key, cells in table.items():
        row = [key[0], key[1], steps[key]] + [cells.get(c, "") for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _cell(r: dict, value: str) -> str:
    """The ratio of one result row, with its blown samples in brackets."""
    ratio = r["mode_sw2_ratio"] if value == "mode" else r["sliced_w2_ratio"]
    cell = "—" if ratio is None else f"{ratio:.2f}"
    return cell + (f" ({r['blown']})" if r["blown"] else "")


def _pivot(rows: list[dict], value: str, key, column, heads: list[str], name) -> str:
    """A Markdown table with one row per key(r) and one column per sorted column(r)."""
    columns = sorted({column(r) for r in rows})
    table: dict[tuple, dict] = {}
    for r in rows:
        table.setdefault(key(r), {})[column(r)] = _cell(r, value)
    lines = ["| " + " | ".join([*heads, *(name(c) for c in columns)]) + " |"]
    lines.append("|" + "---|" * (len(heads) + len(columns)))
    for k, cells in table.items():
        lines.append("| " + " | ".join([*k, *(cells.get(c, "") for c in columns)]) + " |")
    return "\n".join(lines)


def _grid(r: dict) -> str:
    return "" if r["grid"] == "default" else f" ({r['grid']})"


def render_by_steps(rows: list[dict], value: str = "mode", label: str = "variant") -> str:
    """One row per (run, sampler (grid), final), one column per step count."""
    return _pivot(
        rows,
        value,
        lambda r: (str(r[label]), f"{r['sampler']}{_grid(r)}", r.get("final", "integrate")),
        lambda r: int(r["steps"]),
        [label, "sampler", "final"],
        lambda c: f"{c} steps",
    )


def render_by_floor(rows: list[dict], value: str = "mode", label: str = "variant") -> str:
    """One row per (run, sampler@steps (grid)) of the denoise rows, one column per noise
    floor."""
    return _pivot(
        [r for r in rows if r.get("final") == "denoise"],
        value,
        lambda r: (str(r[label]), f"{r['sampler']}@{r['steps']}{_grid(r)}"),
        lambda r: float(r["noise_floor"]),
        [label, "sampler"],
        lambda c: f"floor {c:g}",
    )


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
