"""The ``samplers-overhead`` suite: time outside the network ÷ time inside it, per sampler
(also a section of ``make bench``, bench/run.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from phasediff.bench.base import ADAPTIVE_SAMPLERS, RESULTS_VERSION, VELOCITY_SAMPLERS, Suite
from phasediff.bench.plots import plot_overhead
from phasediff.bench.render import render_overhead

__all__ = ["OVERHEAD", "OverheadSuite", "sampler_overhead_rows"]

GUARDED = ("lie_trotter", "ei1c")  # also timed with the x̂₀ guard


def sampler_overhead_rows(batch: int = 128, steps: int = 20) -> list[dict[str, Any]]:
    """Time outside the network ÷ time inside it for every sampler on the digits U-Net
    (untrained, zero-init head perturbed by 1e-3 noise), HOLD (pc: VP, which it needs; hgf_*:
    a position-only U-Net on the Oscillation HGF), a
    batch of ``batch`` 8×8 images and ``steps`` steps (dopri5: rtol = atol = 1e-3, its own
    steps). Each sampler runs twice: the first (cold) call includes one-off per-grid
    precomputation (cached by ``ei``); the overhead is the warm call's. Two more rows run
    lie_trotter and ei1c with the x̂₀ guard (box ±1; `phasediff.samplers.guard`), whose
    read-out and projection count as overhead."""
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
    guarded = [(f"{n} + x0_guard", n, {"x0_range": (-1.0, 1.0), "x0_guard": True}) for n in GUARDED]
    for label, name, extra in [(n, n, {}) for n in SAMPLERS] + guarded:
        fn = SAMPLERS[name]
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
        kwargs.update(extra)
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
                "sampler": label,
                "process": process.name,
                "nfe": int(out.nfe),
                "network_seconds": warm_in,
                "total_seconds": warm,
                "overhead": (warm - warm_in) / warm_in,
                "cold_extra_seconds": (cold - cold_in) - (warm - warm_in),
            }
        )
    return rows


class OverheadSuite(Suite):
    """Every sampler of the registry on the digits U-Net, batch 128, 20 steps."""

    name = "samplers-overhead"
    batch, steps = 128, 20

    def run(
        self, options: dict[str, Any], *, runs: Path, json_path: Path, threads: int, progress: bool
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = sampler_overhead_rows(self.batch, self.steps)
        return {
            "version": RESULTS_VERSION,
            "suite": self.name,
            "settings": {
                "batch": self.batch,
                "steps": self.steps,
                "data": "digits 8×8",
                "network": "UNet",
            },
            "rows": rows,
            "wall_seconds": round(time.perf_counter() - t0, 2),
        }

    def render(self, results: dict[str, Any], image: str) -> str:
        return render_overhead(results, image)

    def plot(self, results: dict[str, Any], path: Path) -> None:
        plot_overhead(results, path)


OVERHEAD = OverheadSuite()
