"""Golden samples: every registered sampler gives, for a fixed seed, the same final state, NFE
and time grid as the code that wrote tests/data/sampler_golden.pt (issue 16: "behaviour and
numbers do not change"). Regenerate the file only for an intended change of numbers, with
tests/data/make_sampler_golden.py, and say why in the commit.

Tolerances. A refactor may reorder the float64 k×k products that build the per-grid step
matrices and the block products of each step; each reordering changes a value by a few ulps,
and the step maps of the stiff phase-space processes amplify such a change by up to ~1e6 on
the last steps near t_min (docs/samplers.md: Ψ and y reach 1e4–1e6). Hence
- float64 cases: rtol 1e-8 and atol 1e-8 · max|z| (1e-16 · 1e6 · margin 100);
- float32 cases: the step matrices are still built in float64 and cast once, so a reordering
  flips at most the last bit of a float32 entry (6e-8 relative), amplified alike: rtol 1e-4,
  atol 1e-4 · max|z|. A real change (another noise draw, grid, coefficient or NFE) moves the
  samples by O(1) relative.
NFE must match exactly; the time grids to 1e-12 (they are float64 and recomputed).
Threads: the file was written with one thread and the test runs with one (batch-16 k×k block
products are fastest, and least disturbed by a busy machine, on one thread). Run with two
threads (tests/conftest.py's default) every case matched the file as well: no sampler's
output here depends on the thread count.
"""

from __future__ import annotations

import pytest
import torch

from tests.data.make_sampler_golden import PATH, cases, run_case

CASES = cases()


@pytest.fixture(scope="module")
def golden() -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch.load(PATH, weights_only=True)
    torch.set_num_threads(before)


def test_the_golden_file_covers_every_registered_sampler(golden):
    from phasediff.samplers import REGISTRY

    assert set(golden) == {c["key"] for c in CASES}
    assert {c["sampler"] for c in CASES} == set(REGISTRY)


def _close(got: torch.Tensor, want: torch.Tensor, what: str, key: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (key, what)
    rtol = 1e-8 if want.dtype == torch.float64 else 1e-4
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale, msg=f"{key}: {what}")


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_sampler_output_matches_the_golden_samples(case, golden):
    want = golden[case["key"]]
    got = run_case(**case)
    assert int(got["nfe"]) == int(want["nfe"]), case["key"]
    torch.testing.assert_close(got["times"], want["times"], rtol=1e-12, atol=0.0)
    _close(got["z"], want["z"], "z", case["key"])
    if "trajectory" in want:
        _close(got["trajectory"], want["trajectory"], "trajectory", case["key"])
