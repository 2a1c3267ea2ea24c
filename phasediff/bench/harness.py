"""``run_suite``: run one suite (or redraw it from its JSON) and write its docs block, figure
and raw results. What is measured, rendered and plotted is the suite's (``registry``); the
files, the recorded command and the machine line are the same for every suite."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from phasediff.bench.base import check_int, machine
from phasediff.bench.grid import DEFAULT_NFE
from phasediff.bench.markdown import write_block, write_text
from phasediff.bench.registry import get_suite
from phasediff.bench.results import command_line, load_results

__all__ = ["render_suite", "run_suite"]


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
    """Run one benchmark suite and write its section, figure and JSON (``phasediff.bench``).

    ``toy``/``digits``: ``steps`` training steps per model (default: the configs' 20 000),
    ``nfe`` budgets for the fixed-step samplers (adaptive dopri5 runs once at
    rtol = atol = ``dopri_tol`` and reports its measured NFE), ``num`` samples per cell
    (default 5000 for toy, 1200 for digits), one ``seed`` for training, sampling and held-out
    sets; ``models``/``samplers`` restrict the grid. Options a suite does not take
    (``Suite.arguments``) are ignored. Returns the results dict with the paths written under
    ``"written"``.
    """
    spec = get_suite(suite)
    runs, docs, img_dir = Path(runs), Path(docs), Path(img_dir)
    if runs.exists() and not runs.is_dir():
        raise ValueError(f"--runs {str(runs)!r} is a file; pass a directory.")
    if docs.is_dir():
        raise ValueError(f"--docs {str(docs)!r} is a directory; pass a Markdown file.")
    json_path = runs / f"{suite}.json"
    image = img_dir / f"bench_{suite}.png"
    given = {
        "steps": steps,
        "nfe": nfe,
        "num": num,
        "seed": seed,
        "models": models,
        "samplers": samplers,
        "dopri_tol": dopri_tol,
    }
    options = {name: given[name] for name in spec.arguments}
    if render_only:
        results = load_results(json_path)
        if results is None:
            raise ValueError(
                f"no results file {str(json_path)!r}; run phasediff bench {suite} without "
                "--render-only first."
            )
    else:
        threads = check_int(threads, "--threads", 0)
        if threads:
            torch.set_num_threads(threads)
        results = spec.run(
            options, runs=runs, json_path=json_path, threads=threads, progress=progress
        )
        opts = spec.command_options(results, options, runs=runs)
        opts["threads"] = threads
        if not (docs == Path("docs/benchmarks.md") and img_dir == Path("docs/img")):
            opts.update(docs=str(docs), img_dir=str(img_dir))
        results["command"] = command_line(suite, **opts)
        results["machine"] = machine()
        write_text(json_path, json.dumps(results, indent=1, allow_nan=False))
    body = render_suite(results, image=os.path.relpath(image, docs.parent), image_path=image)
    write_block(docs, suite, body)
    results["written"] = {"docs": str(docs), "image": str(image), "json": str(json_path)}
    return results


def render_suite(results: dict[str, Any], *, image: str, image_path: Path | None = None) -> str:
    """The Markdown block of a suite's results (without the markers), linking ``image``; draws
    the figure to ``image_path`` when given."""
    spec = get_suite(results["suite"])
    if image_path is not None:
        spec.plot(results, image_path)
    return spec.render(results, image)
