"""Shared fixtures: the processes every engine test runs on."""

from __future__ import annotations

import os

import pytest
import torch

from phasediff import processes as P

# CI has 2 cores. One pytest process uses both; under pytest-xdist (`make test` runs one worker
# per core) each worker gets one thread, so the workers do not fight over the cores.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _keep_the_thread_count():
    """A test that trains sets torch's thread count from its config (train.threads = 2 in
    the toy configs); put it back, or every later test in this worker oversubscribes the cores
    (measured: a 4-s sampler test took 54 s behind such a test under pytest-xdist)."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


def engine_processes() -> dict[str, P.LinearProcess]:
    """The acceptance list of issue "Core": vp, ve, cld, psld, hold, langevin_chain(4),
    critical(5), plus sub-VP and both Hamiltonian flows."""
    return {
        "vp": P.vp(),
        "subvp": P.subvp(),
        "ve": P.ve(),
        "cld": P.cld(),
        "psld": P.psld(),
        "hold": P.hold(),
        "langevin_chain4": P.langevin_chain(4, couplings=[1.0, 1.5, 0.7], friction=2.0),
        "critical5": P.critical(5),
        "hamiltonian": P.hamiltonian(K=2.0, sigma_v=0.8),
        "zero_force": P.hamiltonian(K=0.0),
    }


@pytest.fixture(params=list(engine_processes()))
def process(request) -> P.LinearProcess:
    return engine_processes()[request.param]
