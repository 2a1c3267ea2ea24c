"""What every suite shares: the ``Suite`` interface, the results-file version, the machine
line and the parsing of list options."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from phasediff.samplers.registry import SCORE, VELOCITY, sampler_names
from phasediff.samplers.registry import steps_for_nfe as registry_steps_for_nfe
from phasediff.validation import check_int  # re-exported: the suites import it from here

__all__ = [
    "ADAPTIVE_SAMPLERS",
    "RESULTS_VERSION",
    "SCORE_SAMPLERS",
    "VELOCITY_SAMPLERS",
    "Suite",
    "applicable_samplers",
    "check_int",
    "machine",
    "parse_list",
    "parse_nfe",
    "steps_for_nfe",
]

RESULTS_VERSION = 1
SCORE_SAMPLERS = sampler_names(SCORE)  # the grid's samplers per model kind: the registry's
VELOCITY_SAMPLERS = sampler_names(VELOCITY)
ADAPTIVE_SAMPLERS = sampler_names(adaptive=True)


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Sampler steps for an NFE budget, from the sampler registry: 1 NFE per step, except
    heun, hgf_heun and pc (2·steps − 1 NFE: Heun ends with an Euler step, pc skips the last
    correction), which get steps = ⌊(NFE + 1)/2⌋ so that they never exceed the budget. The
    NFE reported is always the one measured by the sampler, never this estimate."""
    return registry_steps_for_nfe(sampler, nfe)


def applicable_samplers(velocity: bool) -> tuple[str, ...]:
    """Samplers of the grid for a score model (ε/score output) or a velocity model (HGF)."""
    return VELOCITY_SAMPLERS if velocity else SCORE_SAMPLERS


class Suite:
    """One benchmark suite of ``phasediff bench`` (registered in ``phasediff.bench.registry``).

    ``name`` is the CLI argument and the name of the docs block, the figure
    (``bench_NAME.png``) and the results file (``RUNS/NAME.json``). ``arguments`` are the
    ``run_suite`` options the suite reads, with their defaults; the others are ignored.
    ``run`` measures and returns the JSON-serialisable results (with ``version``, ``suite``,
    ``settings``); ``command_options`` says which options the recorded command line shows;
    ``render`` writes the Markdown block (without its markers) from the results alone and
    ``plot`` the figure, so that ``--render-only`` redraws both without measuring again.
    """

    name: str
    arguments: ClassVar[dict[str, Any]] = {}

    def run(
        self, options: dict[str, Any], *, runs: Path, json_path: Path, threads: int, progress: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def command_options(
        self, results: dict[str, Any], options: dict[str, Any], *, runs: Path
    ) -> dict[str, Any]:
        """The options of the recorded command (before ``--threads`` and the paths)."""
        return {}

    def render(self, results: dict[str, Any], image: str) -> str:
        raise NotImplementedError

    def plot(self, results: dict[str, Any], path: Path) -> None:
        raise NotImplementedError


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


def parse_nfe(nfe: str | Sequence[int]) -> list[int]:
    """``--nfe "10,20"`` → the sorted distinct budgets [10, 20] (integers ≥ 1)."""
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
