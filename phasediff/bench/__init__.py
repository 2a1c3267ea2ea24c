"""Benchmarks: ``phasediff bench SUITE`` and the helpers of the bench/ scripts (docs/benchmarks.md,
docs/design.md §6).

Suites (``registry``), one ``Suite`` object each:

* ``toy`` — VP, CLD, PSLD, HOLD, critical(4) and the Oscillation HGF trained with the same
  network, data, optimiser, step budget and seed (``configs/toy_*.toml``), each sampled with
  every applicable sampler at each NFE budget and scored as ratios to the noise floor (plain
  sliced W2, mode-resolved sliced W2, mode TVD on the multi-Swiss-roll);
* ``digits`` — the same grid on scikit-learn digits (``configs/digits_*.toml``), scored by
  the digits Fréchet distance ratio;
* ``mixing`` — the table and figure of ``phasediff analyze mixing``;
* ``samplers-overhead`` — time outside the network ÷ time inside it, per sampler.
* ``mild`` — ALD against MILD (the seed's algorithm and the noise-corrected option) on the
  trained toy and digits VE runs, L levels × T steps per level at equal NFE (the MILD
  poster's layout).

Every suite writes its Markdown section into ``docs/benchmarks.md`` between the markers
``<!-- bench:SUITE -->`` and ``<!-- /bench:SUITE -->`` (appending the block when missing;
text between ``<!-- notes:SUITE -->`` and ``<!-- /notes:SUITE -->`` inside an existing block
is kept), its figure to ``docs/img/bench_SUITE.png`` and its raw results to
``RUNS/SUITE.json``, from which ``render_only=True`` redraws table and figure without
sampling. Trained runs live in ``RUNS/SUITE/<model>_<steps>[_seed<seed>]``: a finished
run is reused, an interrupted one resumed, and sampled cells already in the JSON (same
steps, num, seed and tolerance) are not recomputed; a JSON written with other settings is
moved to ``RUNS/SUITE.previous.json``.

One module per concern: ``base`` (the ``Suite`` interface, sampler lists from the sampler
registry, option parsing, the machine line), ``registry`` (the suites by name), ``harness``
(``run_suite``: files, command line), ``trained`` (training reuse), ``scoring``, ``markdown``
(the marker blocks), ``render`` (Markdown), ``plots`` (figures), ``results`` (the JSON), the
suites ``grid``, ``mixing``, ``overhead`` and ``mild``, and ``runs`` (``phasediff eval`` and
``phasediff plot`` on trained runs).

This package sits above ``phasediff.training`` (it trains and loads the models it compares)
and ``phasediff.evaluation`` (it scores them); evaluation imports neither (docs/design.md §9).
"""

from phasediff.bench.base import (
    ADAPTIVE_SAMPLERS,
    SCORE_SAMPLERS,
    VELOCITY_SAMPLERS,
    Suite,
    applicable_samplers,
    machine,
    parse_list,
    steps_for_nfe,
)
from phasediff.bench.grid import DEFAULT_NFE, SUITE_MODELS, GridSuite
from phasediff.bench.harness import render_suite, run_suite
from phasediff.bench.markdown import extract_blocks, keep_bench_blocks, write_block
from phasediff.bench.overhead import sampler_overhead_rows
from phasediff.bench.registry import REGISTRY, SUITES, get_suite
from phasediff.bench.render import format_overhead_table
from phasediff.bench.runs import evaluate_run, plot_snapshots, samples_from_sources
from phasediff.bench.scoring import image_metrics, toy_metrics
from phasediff.bench.trained import BenchModel

__all__ = [
    "ADAPTIVE_SAMPLERS",
    "DEFAULT_NFE",
    "REGISTRY",
    "SCORE_SAMPLERS",
    "SUITES",
    "SUITE_MODELS",
    "VELOCITY_SAMPLERS",
    "BenchModel",
    "GridSuite",
    "Suite",
    "applicable_samplers",
    "evaluate_run",
    "extract_blocks",
    "format_overhead_table",
    "get_suite",
    "image_metrics",
    "keep_bench_blocks",
    "machine",
    "parse_list",
    "plot_snapshots",
    "render_suite",
    "run_suite",
    "sampler_overhead_rows",
    "samples_from_sources",
    "steps_for_nfe",
    "toy_metrics",
    "write_block",
]
