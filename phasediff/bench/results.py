"""The raw results of a suite, ``RUNS/SUITE.json``: reading them back, JSON-safe rows and the
command line recorded with them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from phasediff.bench.base import RESULTS_VERSION

__all__ = ["command_line", "json_safe", "load_results"]


def load_results(path: Path) -> dict[str, Any] | None:
    """The results stored at ``path``, None when there are none, a ValueError when the file is
    not this version's."""
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


def command_line(suite: str, **opts: Any) -> str:
    """``phasediff bench SUITE --opt value …`` (None/False options left out, lists joined)."""
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


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """inf/NaN → strings (JSON has no such numbers)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        out[key] = value
    return out
