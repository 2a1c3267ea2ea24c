"""The suites of ``phasediff bench``, one ``Suite`` object each, by name. A new suite is one
more ``Suite`` here: the CLI's argument, the docs block, the figure and the results file
follow from its name."""

from __future__ import annotations

from phasediff.bench.base import Suite
from phasediff.bench.grid import DIGITS, TOY
from phasediff.bench.mild import MILD
from phasediff.bench.mixing import MIXING
from phasediff.bench.overhead import OVERHEAD

__all__ = ["REGISTRY", "SUITES", "get_suite"]

REGISTRY: dict[str, Suite] = {s.name: s for s in (TOY, DIGITS, MIXING, OVERHEAD, MILD)}
SUITES: tuple[str, ...] = tuple(REGISTRY)


def get_suite(name: str) -> Suite:
    """The suite called ``name``; an unknown name is one sentence listing the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown bench suite {name!r}; valid suites are: {', '.join(SUITES)}.")
    return REGISTRY[name]
