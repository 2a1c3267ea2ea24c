"""The ``mixing`` suite: the table and figure of ``phasediff analyze mixing`` (closed form, no
training, no sampling)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from phasediff.bench.base import RESULTS_VERSION, Suite
from phasediff.bench.render import render_mixing
from phasediff.bench.results import json_safe

__all__ = ["MIXING", "MixingSuite"]


class MixingSuite(Suite):
    """KL and W2 to the prior of every default process, for Gaussian and point-mass data."""

    name = "mixing"
    data_var, point_mass, eps = 0.25, 1.0, 1e-3

    def run(
        self, options: dict[str, Any], *, runs: Path, json_path: Path, threads: int, progress: bool
    ) -> dict[str, Any]:
        from phasediff.analysis.mixing import mixing_table

        t0 = time.perf_counter()
        rows = mixing_table(data_var=self.data_var, point_mass=self.point_mass, eps=self.eps)
        return {
            "version": RESULTS_VERSION,
            "suite": self.name,
            "settings": {"data_var": self.data_var, "point_mass": self.point_mass, "eps": self.eps},
            "rows": [json_safe(r.as_dict()) for r in rows],
            "wall_seconds": round(time.perf_counter() - t0, 2),
        }

    def render(self, results: dict[str, Any], image: str) -> str:
        return render_mixing(results, image)

    def plot(self, results: dict[str, Any], path: Path) -> None:
        """KL to the prior vs noise budget, recomputed from the stored settings (closed form)."""
        from phasediff.analysis.mixing import default_processes, plot_mixing

        s = results["settings"]
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_mixing(
            default_processes(),
            str(path),
            data_var=s["data_var"],
            point_mass=s["point_mass"],
            eps=s["eps"],
        )


MIXING = MixingSuite()
